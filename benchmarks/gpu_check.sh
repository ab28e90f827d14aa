#!/usr/bin/env bash
# One short GPU check (about 6 minutes on an H200): the core's CUDA tests, then the training-step
# benchmark eager vs compiled vs CUDA graphs (torch.compile mode "reduce-overhead") with peak memory.
# Needs a python3 with torch, scipy, pytest and tqdm (the device image has them); writes its report
# to ${OUT:-.}/gpu-benchmark.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-.}"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/cuda_checks.py tests/test_decoders.py tests/test_ranking.py 2>&1 | tee "$out/gpu-tests.txt"
python3 benchmarks/step_benchmark.py --device cuda --threads 8 --iters 20 40 --rounds 3 --steps 3 \
    --impls eager compiled cuda-graphs --out "$out/gpu-benchmark.md" --json "$out/gpu-benchmark.json"
