import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs_as_written():
    # The first python block of the README, executed verbatim: it must decode, match and backprop.
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert namespace["pred"].shape == (32, 16, 8)
    grads = [p.grad for p in namespace["encoder"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_guide_equivariance_check_runs_as_written(capsys):
    # The user guide's python block (checking a decoder's equivariance), executed verbatim.
    guide = README.parent / "docs" / "guide.md"
    (block,) = re.findall(r"```python\n(.*?)```", guide.read_text(), re.S)
    exec(compile(block, str(guide), "exec"), {})
    assert capsys.readouterr().out.strip() == "Equivariance.EXCLUSIVELY_MULTISET"
