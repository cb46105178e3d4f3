#!/usr/bin/env bash
# The GPU path in one call: CUDA seen by torch, rapids-singlecell's QC and scrublet, and timings of
# RPE1-size preprocessing and training steps. Never part of CI (CI has no GPU).
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # here, once: Python 3.12 wheels of what a GPU image
#                                                 # without internet lacks, into .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (with .whl/ beside it, if any)
#   bash benchmarks/gpu_check.sh --quick          # the default screen instead of RPE1 size (minutes)
#
# Prints each check as "ok" or "FAILED" with its reason, then the timings; exits 1 when a check
# failed. Without a GPU it says so and still times the CPU path, so the script can be tried
# anywhere: PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --quick --no-preprocess
set -uo pipefail
cd "$(dirname "$0")/.."

# Packages the GPU image (torch, cupy, numpy, scipy, pandas, h5py, scikit-learn, lightning) lacks.
WHEELS=(anndata scanpy pot scrublet rapids-singlecell session-info2 legacy-api-wrap natsort
        array-api-compat zarr numcodecs donfig crc32c annoy pynndescent umap-learn)
PRESET=rpe1
PREPROCESS=1
for arg in "$@"; do
  case "$arg" in
    --fetch-wheels)
      mkdir -p .whl
      grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
      python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${WHEELS[@]}" || exit 1
      du -sh .whl
      exit 0 ;;
    --quick) PRESET=default ;;
    --no-preprocess) PREPROCESS=0 ;;
    *) echo "unknown option $arg (see the head of $0)"; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpo_site .whl/*.whl \
    && export PYTHONPATH=/tmp/gpo_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1

failed=0
check() {  # check NAME PYTHON-CODE: one line, ok or FAILED with the last line of its error
  local out
  if out=$($PY -c "$2" 2>&1); then echo "ok      $1: ${out##*$'\n'}"; else echo "FAILED  $1: ${out##*$'\n'}"; failed=1; fi
}

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi: no GPU here"
check "torch sees CUDA" "import torch; assert torch.cuda.is_available(), 'torch.cuda.is_available() is False'; print(torch.__version__, torch.cuda.get_device_name(0))"
check "rapids-singlecell" "from gpo_vae.preprocessing.qc import rapids_available, resolve_backend; assert rapids_available(), 'rapids-singlecell, cupy or a CUDA device is missing'; print('QC backend', resolve_backend('auto'))"
check "QC metrics on the GPU equal the CPU's" "
import numpy as np, scipy.sparse as sp, anndata as ad, pandas as pd
from gpo_vae.preprocessing.qc import compute_qc_metrics
X = sp.random(3000, 500, density=0.2, format='csr', random_state=0, dtype=np.float32); X.data = np.ceil(X.data * 9)
a = ad.AnnData(X=X, var=pd.DataFrame(index=[f'MT-{i}' if i < 5 else f'G{i}' for i in range(500)]))
gpu, cpu = compute_qc_metrics(a, backend='rapids'), compute_qc_metrics(a, backend='cpu')
np.testing.assert_allclose(gpu.to_numpy(), cpu.to_numpy(), rtol=1e-5); print('3,000 cells, max |diff|', float(np.nanmax(abs(gpu.to_numpy() - cpu.to_numpy()))))"

echo "== training steps at RPE1 shape (benchmarks/train_step.py)"
$PY benchmarks/train_step.py --steps 20 || failed=1
if $PY -c "import torch; raise SystemExit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  $PY benchmarks/train_step.py --steps 20 --dtype bf16 || failed=1
fi

if [ "$PREPROCESS" = 1 ]; then
  echo "== preprocessing, $PRESET screen (benchmarks/preprocess.py; QC backend auto: rapids where it works)"
  data=${TMPDIR:-/tmp}/gpo_gpu_check_$PRESET
  $PY benchmarks/preprocess.py --preset "$PRESET" --data "$data" || failed=1
fi

[ "$failed" = 0 ] && echo "== all checks ok" || echo "== some checks FAILED (above)"
exit "$failed"
