"""The scripts in examples/ run as written, at their --smoke sizes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--smoke", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_variable_size_sets(tmp_path):
    out = _run("variable_size_sets.py", tmp_path, "--plot", "sets.png")
    assert re.search(r"held-out sets: loss \d+\.\d+, size right \d+\.\d%", out), out
    assert (tmp_path / "sets.png").stat().st_size > 10_000


def test_image_to_set(tmp_path):
    out = _run("image_to_set.py", tmp_path, "--data", "clevr")
    assert re.search(r"validation AP: AP_inf \d+\.\d, AP_1 \d+\.\d, AP_0.5 .* AP_0.125 \d+\.\d", out), out
    assert re.search(r"validation accuracy: count \d+\.\d%, material .* all \d+\.\d%", out), out
    assert len(list((tmp_path / "clevr" / "CLEVR_v1.0" / "images" / "train").glob("*.png"))) == 8


def test_own_encoder(tmp_path):
    out = _run("own_encoder.py", tmp_path)
    assert "attention encoder and fspool pooling: exclusively multiset-equivariant" in out, out
    assert "attention encoder and sum pooling: set-equivariant" in out, out
    assert "gradcheck of backward='unroll' through 4 inner steps: passed" in out, out
    assert re.search(r"backward='approx': cosine similarity .* 0\.9\d\d", out), out
