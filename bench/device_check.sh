#!/usr/bin/env bash
# One prepared GPU check for a session that is lent a device (see DEVELOPERS.md, "The GPU machine").
# Runs the numba.cuda tests on the real GPU (not the simulator) and a small GPU timing, writing under $OUT.
# Usage on the device machine, from the repository root:  bash bench/device_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/device_out}
mkdir -p "$OUT"
export REFIMPL_REAL_GPU=1 PYTHONUNBUFFERED=1
unset NUMBA_ENABLE_CUDASIM
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -m pip install -q --no-deps -e . > "$OUT/install.log" 2>&1 || true
python3 -m pytest -q -m gpu tests/test_ssm_cuda.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log"
python3 - <<'PY' 2>&1 | tee "$OUT/gpu_bench.txt"
import json, os, time
import numpy as np
import cupy as cp
from refimpl.ssm.lti_cuda import recurrent_diag
rng = np.random.default_rng(0)
h, n, L, b = 1024, 16, 4096, 4
A_bar = (np.exp(-rng.uniform(0.001, 0.1, (h, n)) + 1j * rng.uniform(0, 1, (h, n)))).astype(np.complex64)
B_bar = (rng.standard_normal((h, n, 1)) * 0.1).astype(np.complex64)
C = rng.standard_normal((h, 1, n)).astype(np.complex64)
x = rng.standard_normal((b, L, h, 1)).astype(np.complex64)
dev = [cp.asarray(a) for a in (A_bar, B_bar, C, x)]
recurrent_diag(dev[0], dev[1], dev[2], None, dev[3]); cp.cuda.Device().synchronize()
ts = []
for _ in range(5):
    t0 = time.perf_counter(); recurrent_diag(dev[0], dev[1], dev[2], None, dev[3]); cp.cuda.Device().synchronize()
    ts.append(time.perf_counter() - t0)
print(json.dumps({"workload": "numba.cuda diagonal LTI recurrence", "shape": dict(b=b, h=h, n=n, L=L),
                  "dtype": "complex64", "median_s": sorted(ts)[2], "device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode()}))
PY
