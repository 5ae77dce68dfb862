#!/usr/bin/env bash
# GPU check (docs/benchmarks.md, "GPUs"): installs Keras and this package from wheels carried in
# .whl/, then runs tools/gpu_check.py: fixture parity and tests/test_grouped_ops.py on JAX and
# PyTorch, applications/benchmark.py on both (batch 64/128, float32 and mixed_bfloat16), and
# timm's resnext50_32x4d/resnet50 on the same GPU. For a machine with CUDA JAX, CUDA PyTorch and
# timm but no TensorFlow and no package index (the device tool's nvidia-h200).
#
# Prepare, once, on a machine with the package index, in the repository root:
#   echo /.whl/ >> .git/info/exclude
#   tools/gpu_check.sh --download        # keras + its pure-Python needs + this package's wheel
# Run on the GPU machine (device tool: carry [".whl"]), e.g. in two calls that fit its limits:
#   tools/gpu_check.sh "$OUT" parity torch timm      # ~5-8 min
#   tools/gpu_check.sh "$OUT" jax                    # ~5-8 min (XLA compiles dominate)
# Check the same code here first, on a CPU, tiny sizes:
#   tools/gpu_check.sh /tmp/gpu_smoke --cpu-smoke
# Results (at most 4 files): $OUT/gpu_check.md, gpu_check.json, benchmarks.md, gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."

# Keras 3's own pure-Python requirements missing from the GPU image (it has numpy, h5py,
# ml-dtypes, rich, packaging, absl-py): pinned to what this package is tested with here.
WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0)

if [[ "${1:-}" == "--download" ]]; then
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
  python3 -m pip wheel --no-deps -w .whl .
  ls -l .whl
  exit 0
fi

OUT="${1:?usage: tools/gpu_check.sh OUT_DIR [STAGE...|--cpu-smoke] (or --download)}"
shift
mkdir -p "$OUT"
if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
# The working tree first: the package under test is this checkout (its wheel is the fallback).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# JAX takes GPU memory as it needs it: PyTorch and JAX children may share the GPU in one run.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"
  python3 -c "import sys; print(sys.version)"
  KERAS_BACKEND=jax python3 -c "import keras, jax, torch; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices(), 'torch', torch.__version__)" 2>&1 | tail -1 || true
  CMD=(python3 tools/gpu_check.py --out "$OUT")
  STAGES=()
  for a in "$@"; do
    if [[ "$a" == --* ]]; then CMD+=("$a"); else STAGES+=("$a"); fi
  done
  if (( ${#STAGES[@]} )); then CMD+=(--stages "${STAGES[@]}"); fi
  "${CMD[@]}"
} 2>&1 | tee "$OUT/gpu_check.log"
