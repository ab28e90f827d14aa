"""Run the README's usage example in an environment holding only the core install of the wheel.

Fails if a dependency of the suite (the `experiments` extra) is installed, if importing the library
imports the suite, if the example does not decode, match and backpropagate, or if the `idspn`
command does not name the missing extra.
"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

SUITE_DEPENDENCIES = ("tqdm", "matplotlib", "PIL", "torchvision")

present = [name for name in SUITE_DEPENDENCIES if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"core-only install also provides {present}")
readme = Path(sys.argv[1]).read_text()
block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
namespace: dict = {}
exec(compile(block, "README.md", "exec"), namespace)
assert tuple(namespace["pred"].shape) == (32, 16, 8), namespace["pred"].shape
assert all(p.grad is not None for p in namespace["encoder"].parameters())
import idspn  # noqa: E402

suite = sorted(name for name in sys.modules if name.startswith("idspn_experiments"))
if suite:
    sys.exit(f"importing idspn imported the suite: {suite}")
command = Path(sys.executable).with_name("idspn")
answer = subprocess.run([str(command), "list"], capture_output=True, text=True)
if answer.returncode != 2 or not answer.stderr.startswith("idspn: error:") or "idspn[experiments]" not in answer.stderr:
    sys.exit(f"`idspn list` without the experiments extra: exit {answer.returncode}, {answer.stderr!r}")
print(f"core-only wheel idspn {idspn.__version__} from {Path(idspn.__file__).parent}: README example ran")
