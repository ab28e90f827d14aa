#!/usr/bin/env bash
# One short GPU check (it prints its duration; see docs/benchmarks.md, "On a GPU"): the
# core's CUDA tests, then the training-step benchmark eager vs compiled vs CUDA graphs (torch.compile
# mode "reduce-overhead") at 20 inner iterations, iDSPN (approx) and DSPN (unroll), with peak memory.
# A failing test does not stop the benchmark; the script exits with the tests' status. Needs a python3
# with torch, scipy, pytest and tqdm; writes its reports to ${OUT:-.}: gpu-tests.txt, gpu-benchmark.md,
# gpu-benchmark.json and the benchmark's progress log gpu-benchmark.log.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-.}"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" || exit 1
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/cuda_checks.py 2>&1 | tee "$out/gpu-tests.txt"
tests=${PIPESTATUS[0]}
python3 benchmarks/step_benchmark.py --device cuda --threads 8 --iters 20 --backwards approx unroll \
    --rounds 3 --steps 3 --impls eager compiled cuda-graphs \
    --out "$out/gpu-benchmark.md" --json "$out/gpu-benchmark.json" 2> >(tee "$out/gpu-benchmark.log" >&2) || exit $?
echo "gpu_check: tests exited $tests, ${SECONDS} s in all"
exit "$tests"
