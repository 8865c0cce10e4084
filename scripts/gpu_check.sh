#!/usr/bin/env bash
# The prepared GPU check of the Pallas attention kernels, in one command on a lent GPU:
#   (1) the gpu-marked kernel tests, tests/kernels/test_pallas_attention.py -m gpu (≤ 150 s);
#   (2) the GPU attention benchmark, experiments/benchmarks/attention_gpu.py, sized for a
#       short lease (≤ 330 s): bfloat16 then float32, n = 32768 first, then 8192 and 65536;
#       the torch rows get 90 s and the JAX rows 170 s, and what does not fit in that time is
#       noted as not measured in the report. Progress is printed row by row.
# Results go to $OUT (the device tool's output folder; runs/gpu_check elsewhere):
# env.txt, gpu_tests.log, bench.log, attention_gpu.md (the table and the findings) and
# attention_gpu.jsonl (every row and finding).
#
# Once per session, here, before the first device call (nothing is fetched on the device):
#   scripts/fetch_device_wheels.sh     # .whl/: ml-collections, tensorboardX, datasets, ...
# The device call (the tool `run`; about 8 minutes at most, plus the machine's start):
#   command:   bash scripts/gpu_check.sh
#   carry:     [".whl"]
#   timeout_s: 560
# then `give_back`, unless rerunning at once. A part alone: `bash scripts/gpu_check.sh tests`
# or `... bench`; `... quick` runs the tests and a quick benchmark (a dry run on any machine).
#
# Python setup there, with no virtual environment (the device README): the image's python3
# (3.12, with jax, flax, optax, orbax, torch), the carried wheels installed with pip --target
# into /tmp/site, and PYTHONPATH=/tmp/site:<repo root>, so `experiments` and `kernels` import
# from the working tree.
set -uo pipefail
cd "$(dirname "$0")/.."

PART="${1:-all}"
PYTHON="${PYTHON:-python3}"  # the image's python3 there; e.g. .venv/bin/python for a dry run here
OUT="${OUT:-runs/gpu_check}"
TESTS_TIMEOUT_S=150
BENCH_TIMEOUT_S=330
BENCH_BUDGET_S=170
TORCH_BUDGET_S=90
case "$PART" in
  all|tests|bench|quick) ;;
  *) echo "usage: $0 [all|tests|bench|quick]" >&2; exit 2 ;;
esac
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX takes device memory as it needs it instead of 75% at start: the torch rows run in a
# subprocess beside it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader \
    2>&1 || true
  "$PYTHON" - <<'EOF' 2>&1
import sys
print("python", sys.version.split()[0])
import jax
print("jax", jax.__version__, jax.devices())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError as error:
    print("torch:", error)
import ml_collections  # the carried wheels are in place
print("ml_collections", ml_collections.__name__, "ok")
EOF
} | tee "$OUT/env.txt"

status=0
if [ "$PART" = all ] || [ "$PART" = tests ] || [ "$PART" = quick ]; then
  echo "== (1) gpu-marked Pallas attention tests (at most ${TESTS_TIMEOUT_S} s)"
  timeout -k 10 "$TESTS_TIMEOUT_S" "$PYTHON" -m pytest tests/kernels/test_pallas_attention.py \
    -m gpu -q -p no:cacheprovider --timeout 120 2>&1 | tee "$OUT/gpu_tests.log"
  code=${PIPESTATUS[0]}
  echo "tests: exit status $code (124: stopped at ${TESTS_TIMEOUT_S} s)"
  [ "$code" -ne 0 ] && status=1
fi
if [ "$PART" = all ] || [ "$PART" = bench ] || [ "$PART" = quick ]; then
  if [ "$PART" = quick ]; then
    sizes=(--quick --repeats 1)
  else
    sizes=(--lengths 8192 32768 65536 --dtypes bfloat16 float32 --repeats 5
           --budget-s "$BENCH_BUDGET_S" --torch-budget-s "$TORCH_BUDGET_S")
  fi
  echo "== (2) GPU attention benchmark (at most ${BENCH_TIMEOUT_S} s)"
  timeout -k 10 "$BENCH_TIMEOUT_S" "$PYTHON" -m experiments.benchmarks.attention_gpu \
    "${sizes[@]}" --out "$OUT" 2>&1 | tee "$OUT/bench.log"
  code=${PIPESTATUS[0]}
  echo "benchmark: exit status $code (124: stopped at ${BENCH_TIMEOUT_S} s)"
  [ "$code" -ne 0 ] && status=1
fi
exit "$status"
