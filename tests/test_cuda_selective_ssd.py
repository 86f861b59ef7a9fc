"""The numba.cuda twins of the selective scan (S6) and SSD, under the CUDA simulator in CI (small shapes), or on a
real GPU with ``REFIMPL_REAL_GPU=1`` (the ``gpu`` tests).

Oracles: the float64 banded solves :func:`oracles.selective.s6_solve` / :func:`~oracles.selective.ssd_solve`.
Bounds: S6 -- :func:`oracles.selective.s6_bound` with ``view="scan"`` (the kernel's in-chunk combination is the
scan view's log-space operator; see :mod:`refimpl.ssm.selective.cuda`, "Rounding"); SSD --
:func:`oracles.selective.ssd_bound` with ``view="chunked"`` and the kernel's chunk.
"""
import os

import numpy as np
import pytest

from oracles import selective as O
from oracles.tolerance import assert_within
from refimpl.ssm.selective import selective_scan
from refimpl.ssm.ssd import ssd_scan

cuda = pytest.importorskip("numba.cuda")

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
WHERE = "simulator" if SIM else "device"


def _s6_case(rng, *, b, l, d, n, cplx, B_layout, C_layout, dtype, options=True, g=2):
    cdt = np.result_type(dtype, np.complex64)
    A = -np.exp(rng.standard_normal((d, n)))
    if cplx:
        A = A + 1j * np.pi * rng.standard_normal((d, n))
    shapes = {"fixed": (d, n), "variable": (b, l, n), "grouped": (b, l, g, n)}

    def bc(layout):
        X = rng.standard_normal(shapes[layout])
        if cplx:
            X = X + 1j * rng.standard_normal(shapes[layout])
        return X.astype(cdt if cplx else dtype)

    u = rng.standard_normal((b, l, d)).astype(dtype)
    if options:
        delta = (rng.standard_normal((b, l, d)) - 1.0).astype(dtype)
        D, z = rng.standard_normal(d).astype(dtype), rng.standard_normal((b, l, d)).astype(dtype)
        h0 = rng.standard_normal((b, d, n)) + (1j * rng.standard_normal((b, d, n)) if cplx else 0)
        kw = dict(delta_bias=rng.standard_normal(d).astype(dtype), delta_softplus=True,
                  initial_state=h0.astype(cdt if cplx else dtype))
    else:
        delta = np.abs(rng.standard_normal((b, l, d))).astype(dtype)
        D = z = None
        kw = {}
    return [u, delta, A.astype(cdt if cplx else dtype), bc(B_layout), bc(C_layout), D, z], kw


S6_CASES = [  # (cplx, discretization, B layout, C layout, L, chunk, dtype, options)
    (False, "mamba", "fixed", "variable", 7, 4, np.float32, True),
    (True, "zoh", "grouped", "fixed", 9, 4, np.float64, True),
    (False, "zoh", "variable", "grouped", 1, 2, np.float64, True),
    (True, "mamba", "variable", "grouped", 5, 8, np.float32, False),
]


@pytest.mark.parametrize("case", S6_CASES, ids=lambda c: f"{WHERE}-{'complex' if c[0] else 'real'}-{c[1]}-B_{c[2]}"
                         f"-C_{c[3]}-L{c[4]}-chunk{c[5]}-{np.dtype(c[6]).name}")
def test_cuda_s6_matches_the_oracle_within_the_scan_bound(case):
    """Under the simulator in CI: out and the final state vs the float64 banded solve, within the derived bound."""
    cplx, disc, Bl, Cl, L, chunk, dtype, options = case
    rng = np.random.default_rng(L + 10 * cplx)
    args, kw = _s6_case(rng, b=2, l=L, d=2, n=3, cplx=cplx, B_layout=Bl, C_layout=Cl, dtype=dtype, options=options)
    out, last = selective_scan(*args, **kw, discretization=disc, view="chunked", backend="cuda", chunk=chunk,
                               return_final_state=True)
    assert out.dtype == np.dtype(dtype) and out.shape == args[0].shape
    assert last.dtype == np.result_type(dtype, np.complex64 if cplx else dtype)
    y, h = O.s6_solve(*args, **kw, discretization=disc)
    bo, bs = O.s6_bound(*args, **kw, discretization=disc, dtype=dtype, view="scan")
    assert_within(out, y, bo, context=f"cuda S6 out [{WHERE}]")
    assert_within(last, h, bs, context=f"cuda S6 final state [{WHERE}]")


def test_cuda_s6_empty_sequence_and_direct_call():
    """L = 0 returns the initial state without a launch; the kernel's own name gives the entry point's answer."""
    from refimpl.ssm.selective.cuda import selective_scan_cuda

    rng = np.random.default_rng(3)
    args, kw = _s6_case(rng, b=1, l=0, d=2, n=2, cplx=False, B_layout="variable", C_layout="fixed",
                        dtype=np.float64)
    out, last = selective_scan(*args, **kw, view="chunked", backend="cuda", return_final_state=True)
    assert out.shape == (1, 0, 2)
    np.testing.assert_array_equal(last, kw["initial_state"])
    args, kw = _s6_case(rng, b=1, l=3, d=1, n=2, cplx=False, B_layout="fixed", C_layout="variable",
                        dtype=np.float64)
    a = selective_scan(*args, **kw, view="chunked", backend="cuda", chunk=2)
    np.testing.assert_array_equal(selective_scan_cuda(*args, **kw, chunk=2), a)
    # n = 0 (no state): out = (D u) silu(z), no launch
    args, kw = _s6_case(rng, b=1, l=3, d=2, n=0, cplx=False, B_layout="variable", C_layout="fixed",
                        dtype=np.float64)
    out = selective_scan(*args, **kw, view="chunked", backend="cuda")
    bo, _ = O.s6_bound(*args, **kw, dtype=np.float64, view="scan")
    assert_within(out, O.s6_solve(*args, **kw)[0], bo, context="cuda S6 with n = 0")


def test_cuda_s6_refuses_bad_launch_sizes_and_inputs():
    rng = np.random.default_rng(4)
    args, _ = _s6_case(rng, b=1, l=2, d=1, n=2, cplx=False, B_layout="fixed", C_layout="fixed", dtype=np.float64,
                       options=False)
    with pytest.raises(ValueError, match=r"chunk: the block has n \* chunk threads, expected n \* chunk <= 1024, "
                                         r"got 2 \* 1024 = 2048"):
        selective_scan(*args, view="chunked", backend="cuda", chunk=1024)
    with pytest.raises(ValueError, match="chunk: expected"):
        selective_scan(*args, view="chunked", backend="cuda", chunk=0)
    with pytest.raises(TypeError, match="u: "):
        selective_scan(args[0].astype(np.float16), *args[1:], view="chunked", backend="cuda")
    with pytest.raises(ValueError, match="A: expected Re\\(A\\) <= 0"):
        selective_scan(*args[:2], -args[2], *args[3:], view="chunked", backend="cuda")
    with pytest.raises(ValueError, match="delta: expected the step Delta"):
        selective_scan(args[0], -args[1] - 1, *args[2:], view="chunked", backend="cuda")


# ---------------------------------------------------------------------------------------------------- SSD

def _ssd_case(rng, *, b, l, h, p, g, n, dtype, seq=True, D_hp=True, options=True):
    x = rng.standard_normal((b, l, h, p)).astype(dtype)
    dt = (rng.standard_normal((b, l, h)) - 1.0).astype(dtype)
    A = (-np.exp(rng.standard_normal(h))).astype(dtype)
    B = rng.standard_normal((b, l, g, n)).astype(dtype)
    C = rng.standard_normal((b, l, g, n)).astype(dtype)
    D = rng.standard_normal((h, p) if D_hp else h).astype(dtype)
    z = rng.standard_normal((b, l, h, p)).astype(dtype)
    kw = dict(dt_bias=rng.standard_normal(h).astype(dtype), dt_softplus=True,
              initial_state=rng.standard_normal((b, h, p, n)).astype(dtype))
    if options:
        kw["dt_limit"] = (0.01, 2.0)
    if seq and l > 3:
        s = np.zeros((b, l), dtype=np.int64)
        s[0, l // 3:] = 1
        s[0, (2 * l) // 3:] = 2
        kw["seq_idx"] = s
    return [x, dt, A, B, C, D, z if options else None], kw


SSD_CASES = [  # (L, chunk, dtype, g, seq_idx, D (h, p), clamp and z)
    (9, 4, np.float32, 2, True, True, True),
    (5, 8, np.float64, 1, False, False, False),
    (1, 2, np.float64, 2, False, True, True),
    (6, 3, np.float64, 1, True, False, True),
]


@pytest.mark.parametrize("case", SSD_CASES, ids=lambda c: f"{WHERE}-L{c[0]}-chunk{c[1]}-{np.dtype(c[2]).name}-g{c[3]}"
                         f"{'-seq_idx' if c[4] else ''}-D{'hp' if c[5] else 'h'}{'-clamp-z' if c[6] else ''}")
def test_cuda_ssd_matches_the_oracle_within_the_chunked_bound(case):
    """Under the simulator in CI: y and the final state vs the float64 banded solve, within the derived bound."""
    L, chunk, dtype, g, seq, D_hp, options = case
    rng = np.random.default_rng(100 + L)
    args, kw = _ssd_case(rng, b=2, l=L, h=2, p=2, g=g, n=3, dtype=dtype, seq=seq, D_hp=D_hp, options=options)
    y, S = ssd_scan(*args, **kw, view="chunked", backend="cuda", chunk=chunk, return_final_state=True)
    assert y.dtype == np.dtype(dtype) and S.dtype == np.dtype(dtype)
    yo, So = O.ssd_solve(*args, **kw)
    by, bs = O.ssd_bound(*args, **kw, dtype=dtype, view="chunked", chunk=chunk)
    assert_within(y, yo, by, context=f"cuda SSD y [{WHERE}]")
    assert_within(S, So, bs, context=f"cuda SSD final state [{WHERE}]")


def test_cuda_ssd_head_groups_with_an_idle_head():
    """Under the simulator: 3 heads in blocks of 2 (the second block's second head idle); same bound."""
    from refimpl.ssm.ssd.cuda import ssd_chunked_cuda

    rng = np.random.default_rng(8)
    args, kw = _ssd_case(rng, b=1, l=5, h=3, p=2, g=3, n=2, dtype=np.float64)
    y, S = ssd_chunked_cuda(*args, **kw, chunk=2, state_threads=2, heads_per_block=2, return_final_state=True)
    yo, So = O.ssd_solve(*args, **kw)
    by, bs = O.ssd_bound(*args, **kw, dtype=np.float64, view="chunked", chunk=2)
    assert_within(y, yo, by, context=f"cuda SSD y, head groups [{WHERE}]")
    assert_within(S, So, bs, context=f"cuda SSD final state, head groups [{WHERE}]")
    with pytest.raises(ValueError, match="heads_per_block: expected"):
        ssd_chunked_cuda(*args, **kw, heads_per_block=0)


def test_cuda_ssd_empty_sequence_and_bad_sizes():
    from refimpl.ssm.ssd.cuda import ssd_chunked_cuda

    rng = np.random.default_rng(7)
    args, kw = _ssd_case(rng, b=1, l=0, h=2, p=2, g=1, n=2, dtype=np.float64)
    y, S = ssd_scan(*args, **kw, backend="cuda", return_final_state=True)
    assert y.shape == (1, 0, 2, 2)
    np.testing.assert_array_equal(S, kw["initial_state"])
    args, kw = _ssd_case(rng, b=1, l=3, h=1, p=1, g=1, n=2, dtype=np.float64)
    with pytest.raises(ValueError, match="chunk: expected 1 <= chunk <= 1024, got 2048"):
        ssd_scan(*args, **kw, backend="cuda", chunk=2048)
    with pytest.raises(TypeError, match="state_threads: expected an int"):
        ssd_chunked_cuda(*args, **kw, state_threads=2.0)
    with pytest.raises(TypeError, match="x: "):
        ssd_scan(args[0].astype(np.float16), *args[1:], **kw, backend="cuda")
    with pytest.raises(ValueError, match="dt_limit: expected 0 <= lo <= hi"):
        ssd_scan(*args, **dict(kw, dt_limit=(1.0, 0.5)), backend="cuda")


# ---------------------------------------------------------------------------------------------------- real GPU

def _real_gpu():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        import cupy  # noqa: F401

        return cuda.is_available()
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu(), reason="needs CuPy and a real CUDA device (REFIMPL_REAL_GPU=1)")
def test_cuda_s6_and_ssd_on_cupy_arrays_stay_on_device():
    import cupy as cp

    rng = np.random.default_rng(11)
    args, kw = _s6_case(rng, b=2, l=300, d=8, n=16, cplx=True, B_layout="variable", C_layout="grouped",
                        dtype=np.float32)
    dev = [None if a is None else cp.asarray(a) for a in args]
    dkw = {k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    out, last = selective_scan(*dev, **dkw, view="chunked", backend="cuda", chunk=64, return_final_state=True)
    assert isinstance(out, cp.ndarray) and isinstance(last, cp.ndarray)
    y, h = O.s6_solve(*args, **kw)
    bo, bs = O.s6_bound(*args, **kw, dtype=np.float32, view="scan")
    assert_within(cp.asnumpy(out), y, bo, context="cuda S6 on CuPy")
    assert_within(cp.asnumpy(last), h, bs, context="cuda S6 final state on CuPy")
    args, kw = _ssd_case(rng, b=2, l=300, h=4, p=8, g=2, n=16, dtype=np.float32)
    dev = [None if a is None else cp.asarray(a) for a in args]
    dkw = {k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    y, S = ssd_scan(*dev, **dkw, backend="cuda", chunk=64, return_final_state=True)
    assert isinstance(y, cp.ndarray) and isinstance(S, cp.ndarray)
    yo, So = O.ssd_solve(*args, **kw)
    by, bs = O.ssd_bound(*args, **kw, dtype=np.float32, view="chunked", chunk=64)
    assert_within(cp.asnumpy(y), yo, by, context="cuda SSD on CuPy")
    assert_within(cp.asnumpy(S), So, bs, context="cuda SSD final state on CuPy")


# ---------------------------------------------------------------------------------------------------- PTX

_PTX_SCRIPT = r'''
import os
os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
import numpy as np
from numba import cuda, types, from_dtype
from numba.cuda.cudadrv import nvvm
try:
    nvvm.NVVM()
except Exception as exc:
    print("NO-NVVM", exc)
    raise SystemExit(0)
import numba.cuda.dispatcher as _disp, numba.cuda.compiler as _comp
class _Dev:  # no device here: compile for an H100/H200 (cc 9.0) without a context
    compute_capability = (9, 0)
_disp.get_current_device = _comp.get_current_device = lambda: _Dev()
from refimpl.ssm.selective import cuda as S
from refimpl.ssm.ssd import cuda as D
A = lambda dt, nd: types.Array(from_dtype(np.dtype(dt)), nd, "C")
for rn, sn, zoh in (("float32", "complex64", True), ("float64", "float64", False)):
    bc = sn
    k = S._make_s6(8, 4, rn, sn, zoh, True, True)
    cuda.compile_ptx(k.py_func, (A(rn, 3), A(rn, 3), A(rn, 1), A(sn, 2), A(bc, 4), A(bc, 4), A(rn, 1), A(rn, 3),
                                 A(sn, 3), A(rn, 3), A(sn, 3)), cc=(9, 0))
rn = "float32"
r = from_dtype(np.dtype(rn))
kernels = [(D._make_decay(8, 4, rn, True, True), (A(rn, 3), A(rn, 1), A(rn, 1), A("int64", 2), r, r, A(rn, 3), A(rn, 3),
                                               A(rn, 3))),
           (D._make_chunk_state(8, 32, 4), (A(rn, 4), A(rn, 3), A(rn, 4), A(rn, 3), A(rn, 5))),
           (D._make_state_passing(), (A(rn, 5), A(rn, 3), A(rn, 4), A(rn, 5), A(rn, 4), types.int64)),
           (D._make_chunk_scan(8, 4, rn, True), (A(rn, 4), A(rn, 3), A(rn, 1), A(rn, 4), A(rn, 4), A(rn, 2), A(rn, 4),
                                              A("int64", 2), A(rn, 3), A(rn, 5), A(rn, 4)))]
for k, sig in kernels:
    cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
print("PTX-OK")
'''


def test_cuda_kernels_compile_to_ptx_for_a_real_device():
    """Not the simulator: the S6 and SSD kernels type and compile with numba-cuda's NVVM for cc 9.0 (no GPU needed;
    skipped where libNVVM is missing) -- the simulator alone would accept Python a device cannot compile."""
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    proc = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    if "NO-NVVM" in proc.stdout:
        pytest.skip("libNVVM not available: " + proc.stdout.strip())
    assert proc.returncode == 0 and "PTX-OK" in proc.stdout, proc.stderr[-3000:]
