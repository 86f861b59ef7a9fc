#!/usr/bin/env bash
# One prepared GPU check for a session that is lent a device (issue 15; see DEVELOPERS.md, "The GPU machine").
# Under 10 minutes; everything goes under $OUT:
#   nvidia-smi.txt, env.txt            the card and the software
#   gpu_tests.log, gpu_tests.xml       the numba.cuda tests on real arrays (REFIMPL_REAL_GPU=1, -m gpu):
#                                      tests/test_ssm_cuda.py and every tests/test_cuda_*.py / property_tests/test_cuda_*
#   gpu_bench.json, gpu_bench.txt      bench/gpu_bench.py: each kernel vs its CuPy/PyTorch alternative, as fractions
#                                      of the memory bandwidth and fp32 rate measured in the same run
#   verify_torch_cuda.txt              refimpl verify --framework torch:cuda (torch SDPA adapter)
#   verify_cupy.txt                    refimpl verify --framework cupy (our CUDA LTI scan on CuPy arrays)
#   report_cuda.txt, report_cuda.json  the cuda/... rows of refimpl report, on the device
#   summary.txt                        the exit status of each step
# Usage (device machine, repository root):  bash bench/device_check.sh        (--dry-run: the simulator, no CuPy)
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if [[ $DRY == 1 ]]; then
  export NUMBA_ENABLE_CUDASIM=1
  unset REFIMPL_REAL_GPU
else
  export REFIMPL_REAL_GPU=1 CUPY_TF32=0
  unset NUMBA_ENABLE_CUDASIM
fi
: > "$OUT/summary.txt"
step() {  # step NAME TIMEOUT_S CMD...: run with a time limit, log the exit status (a failing step never stops the rest)
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$OUT/summary.txt"
}
{ nvidia-smi || echo "no nvidia-smi"; } > "$OUT/nvidia-smi.txt" 2>&1
{ $PY -c "import sys, numpy, numba; print(sys.version); print('numpy', numpy.__version__, 'numba', numba.__version__)"
  $PY -c "import cupy; print('cupy', cupy.__version__)" 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1
  $PY -c "from oracles.checks._cuda import cuda_status; print('cuda_status', cuda_status())" 2>&1; } > "$OUT/env.txt"
if ! $PY -c "import refimpl" 2>/dev/null; then
  $PY -m pip install -q --no-deps -e . > "$OUT/install.log" 2>&1 || true
fi
GPU_TESTS=$(ls tests/test_ssm_cuda.py tests/test_cuda_*.py property_tests/test_cuda_*.py 2>/dev/null)
step gpu_tests 200 $PY -m pytest -q -m gpu $GPU_TESTS -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" \
  > "$OUT/gpu_tests.log" 2>&1
BENCH_ARGS=(--out "$OUT")
[[ $DRY == 1 ]] && BENCH_ARGS+=(--dry-run)
step gpu_bench 150 $PY bench/gpu_bench.py "${BENCH_ARGS[@]}" > "$OUT/gpu_bench.log" 2>&1
if [[ $DRY == 0 ]]; then
  step verify_torch_cuda 45 $PY -m oracles verify attention.softmax torch.nn.functional:scaled_dot_product_attention \
    --adapter torch.sdpa --framework torch:cuda --dtype float32 --max-examples 5 > "$OUT/verify_torch_cuda.txt" 2>&1
  step verify_cupy 45 $PY -m oracles verify ssm.lti bench.cuda_candidates:lti_scan_cuda --conv diagonal=True \
    --framework cupy --dtype float32,float64 --max-examples 5 > "$OUT/verify_cupy.txt" 2>&1
fi
# the report's cuda/... rows alone (refimpl report runs every check; these are the ones that need the device)
step report_cuda 90 $PY -m oracles.checks._cuda --all --json "$OUT/report_cuda.json" > "$OUT/report_cuda.txt" 2>&1
cat "$OUT/summary.txt"
