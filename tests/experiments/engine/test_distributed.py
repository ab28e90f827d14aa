import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_two_process_data_parallel_training_on_cpu(tmp_path):
    """`torchrun --nproc_per_node 2` runs the unchanged experiment; rank 0 alone writes the files and
    the replicas stay identical (the engine checks parameter checksums at every checkpoint)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to the interpreter")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "idspn_experiments",
        "train",
        "numbering-smoke",
        "--out",
        str(out),
        "--no-progress",
        "model.name=idspn",
        "data.augment=true",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 6 and result["test"] is not None
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]  # written once, by rank 0
