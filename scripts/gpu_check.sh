#!/usr/bin/env bash
# The prepared GPU checks, in one command on a lent GPU. Parts, in the order given (default:
# all four, in this order):
#   tests  the gpu-marked Pallas kernel tests, tests/kernels/test_pallas_attention.py -m gpu
#          (≤ 150 s);
#   bench  the GPU attention benchmark, experiments/benchmarks/attention_gpu.py, sized for a
#          short lease (≤ 330 s): bfloat16 then float32, n = 32768 first, then 8192 and 65536;
#          the torch rows get 90 s and the JAX rows 170 s, and what does not fit in that time
#          is noted as not measured in the report;
#   bert   `launch.py bench bert` on the GPU: JAX vs PyTorch BERT-base (12 layers) at batch
#          32 × 160, float32 and bfloat16, with peak device memory (≤ 90 s);
#   gan    the GAN architectures on CelebA 64×64 at a budget where faces form: the seed's
#          WGAN-div (dcgan trunk, BN) and SELF-MOD, two seeds each, SWD against steps
#          (`python -m experiments.gan.sweep architectures ... --curve`, ≤ 300 s); the
#          workdirs come back in gan.tar.gz, from which the same command, run again here,
#          writes the table without training.
# `quick` runs tests and a quick attention benchmark (a dry run on any machine).
# Results go to $OUT (the device tool's output folder; runs/gpu_check elsewhere), at most
# eight files a call: env.txt, then per part its log and tables (gpu_tests.log; bench.log,
# attention_gpu.md/.jsonl; bert.log, bert.md/.jsonl; gan.log, gan.tar.gz).
#
# Once per session, here, before the first device call (nothing is fetched on the device):
#   scripts/fetch_device_wheels.sh     # .whl/: ml-collections, tensorboardX, datasets, ...
#   (for gan) mkdir -p .gpu_data && cp -r ../shared/data/gan_faces/celeba_align_10k .gpu_data/
#             (40 MB; .gpu_data/ is ignored through .git/info/exclude)
# The device calls (the tool `run`), two of them so each stays well inside its limit:
#   command: bash scripts/gpu_check.sh tests bench     carry: [".whl"]   timeout_s: 500
#   command: bash scripts/gpu_check.sh bert gan        carry: [".whl", ".gpu_data"]
#                                                      timeout_s: 420
# then `give_back`. `make bench-gpu` runs all four parts on any GPU machine.
#
# Python setup there, with no virtual environment (the device README): the image's python3
# (3.12, with jax, flax, optax, orbax, torch, transformers), the carried wheels installed with
# pip --target into /tmp/site, and PYTHONPATH=/tmp/site:<repo root>, so `experiments` and
# `kernels` import from the working tree.
set -uo pipefail
cd "$(dirname "$0")/.."

PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(tests bench bert gan)
PYTHON="${PYTHON:-python3}"  # the image's python3 there; e.g. .venv/bin/python for a dry run here
OUT="${OUT:-runs/gpu_check}"
TESTS_TIMEOUT_S=150
BENCH_TIMEOUT_S=330
BENCH_BUDGET_S=170
TORCH_BUDGET_S=90
BERT_TIMEOUT_S="${BERT_TIMEOUT_S:-90}"
GAN_TIMEOUT_S="${GAN_TIMEOUT_S:-300}"
GAN_STEPS="${GAN_STEPS:-2000}"
GAN_DATA="${GAN_DATA:-}"
if [ -z "$GAN_DATA" ]; then
  GAN_DATA=../shared/data/gan_faces/celeba_align_10k
  [ -d .gpu_data/celeba_align_10k ] && GAN_DATA=.gpu_data/celeba_align_10k
fi
for part in "${PARTS[@]}"; do
  case "$part" in
    tests|bench|bert|gan|quick) ;;
    *) echo "usage: $0 [tests|bench|bert|gan|quick]..." >&2; exit 2 ;;
  esac
done
wants() {  # wants PART: whether PART (or quick, for tests and bench) was asked for
  local part
  for part in "${PARTS[@]}"; do
    [ "$part" = "$1" ] && return 0
    [ "$part" = quick ] && { [ "$1" = tests ] || [ "$1" = bench ]; } && return 0
  done
  return 1
}
QUICK=0
for part in "${PARTS[@]}"; do [ "$part" = quick ] && QUICK=1; done
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
if wants tests; then
  echo "== gpu-marked Pallas attention tests (at most ${TESTS_TIMEOUT_S} s)"
  timeout -k 10 "$TESTS_TIMEOUT_S" "$PYTHON" -m pytest tests/kernels/test_pallas_attention.py \
    -m gpu -q -p no:cacheprovider --timeout 120 2>&1 | tee "$OUT/gpu_tests.log"
  code=${PIPESTATUS[0]}
  echo "tests: exit status $code (124: stopped at ${TESTS_TIMEOUT_S} s)"
  [ "$code" -ne 0 ] && status=1
fi
if wants bench; then
  if [ "$QUICK" = 1 ]; then
    sizes=(--quick --repeats 1)
  else
    sizes=(--lengths 8192 32768 65536 --dtypes bfloat16 float32 --repeats 5
           --budget-s "$BENCH_BUDGET_S" --torch-budget-s "$TORCH_BUDGET_S")
  fi
  echo "== GPU attention benchmark (at most ${BENCH_TIMEOUT_S} s)"
  timeout -k 10 "$BENCH_TIMEOUT_S" "$PYTHON" -m experiments.benchmarks.attention_gpu \
    "${sizes[@]}" --out "$OUT" 2>&1 | tee "$OUT/bench.log"
  code=${PIPESTATUS[0]}
  echo "benchmark: exit status $code (124: stopped at ${BENCH_TIMEOUT_S} s)"
  [ "$code" -ne 0 ] && status=1
fi
if wants bert; then
  echo "== BERT encoder benchmark, JAX vs PyTorch (at most ${BERT_TIMEOUT_S} s)"
  timeout -k 10 "$BERT_TIMEOUT_S" "$PYTHON" launch.py bench bert --out "$OUT" 2>&1 \
    | tee "$OUT/bert.log"
  code=${PIPESTATUS[0]}
  echo "bert: exit status $code (124: stopped at ${BERT_TIMEOUT_S} s)"
  [ "$code" -ne 0 ] && status=1
fi
if wants gan; then
  echo "== GAN architectures on $GAN_DATA, ${GAN_STEPS} steps (at most ${GAN_TIMEOUT_S} s)"
  workdir=/tmp/gan_gpu
  timeout -k 10 "$GAN_TIMEOUT_S" "$PYTHON" -m experiments.gan.sweep architectures \
    --cells dcgan:bn dcgan:self_mod --seeds 0,1 --steps "$GAN_STEPS" --eval-every 500 \
    --curve --data "$GAN_DATA" --workdir "$workdir" --out "$workdir/architectures_gpu.md" \
    2>&1 | tee "$OUT/gan.log"
  code=${PIPESTATUS[0]}
  echo "gan: exit status $code (124: stopped at ${GAN_TIMEOUT_S} s)"
  [ "$code" -ne 0 ] && status=1
  # Everything but checkpoints and the decoded-image cache: summaries, metrics, configs,
  # sample grids and the table.
  tar -czf "$OUT/gan.tar.gz" -C /tmp --exclude=checkpoints --exclude=cache \
    --exclude=tensorboard gan_gpu 2>/dev/null || true
fi
exit "$status"
