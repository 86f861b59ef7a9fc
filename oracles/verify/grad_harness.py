r"""``verify(..., grad=True)``: the candidate's backward pass against finite differences of an independent forward.

For an op with a :class:`~oracles.verify.registry.GradSpec` (``refimpl ops`` says "gradient: wrt (...)"), every
gradient case (``GradSpec.cases`` -- small golden/edge cases -- plus a few seeded random small cases) runs in each
requested dtype:

1. the canonical inputs are cast to the dtype (as the forward cases are) and cast back up losslessly for the oracle;
2. a seeded standard-normal cotangent ``w`` is drawn for every output (complex for a complex output), rounded to
   the dtype (so the candidate and the oracle pair with the *same* ``w``);
3. the oracle: :func:`oracles.gradients.fd_vjp` of ``GradSpec.forward`` (a float64 forward from ``oracles/``, never
   a backward) at the upcast inputs -- Richardson-extrapolated central differences with an elementwise error bound;
   computed once per (case, dtype, cotangent) and cached for the process (mutant runs reuse it);
4. the candidate's gradient of ``L = Re sum conj(w) y`` with respect to every ``wrt`` input that the case gives:

   * **torch** (``framework="torch[:device]"``): the arrays the adapter passes are leaf tensors with
     ``requires_grad=True``; the candidate runs inside the autograd graph; ``torch.autograd.grad(L, leaves,
     allow_unused=True)``; each leaf's gradient is pulled back through the adapter's layout
     (:meth:`~oracles.verify.adapters.Adapter.pull_back`) to the canonical input.  ``None`` (the candidate treats
     the input as a constant) is reported as "no gradient flows to X" and compared as zeros.
   * **JAX** (``framework="jax"``): ``jax.grad`` of the same loss as a function of the leaves; JAX's gradient of a
     complex input is the conjugate of ours (``dL/da - i dL/db``), so it is conjugated back.
   * **an explicit backward** (``grad_fn=``, any framework incl. numpy): ``grad_fn(*canonical inputs in op order,
     *cotangents in output order) -> {input: grad}`` or a tuple in ``GradSpec.wrt`` order (canonical layout; an
     input or cotangent not present is ``None``).
   * numpy without ``grad_fn``: a clear error (NumPy has no autograd).

5. each gradient is compared with :func:`oracles.tolerance.compare` under ``Bound(fd error) + GradSpec.bounds``
   (float64/float32: the derived rounding bound of a backward in that dtype), or in float16/bfloat16 under the
   same-dtype baseline rule (:func:`oracles.tolerance.baseline_bound`, its factor, the float32 bound as the
   magnitude) applied to **our backward run in that dtype**, plus the fd error.  "Run in that dtype" is the
   forward baseline's kernel model (store in the dtype, accumulate in float32): when ``GradSpec.reference_vjp``
   takes ``lowp=``, the harness calls it with ``lowp="float16"``/``"bfloat16"`` and the op's adapter runs our
   backward in float32 arithmetic on the dtype's inputs and cotangents **with every stored intermediate rounded to
   the dtype** (softmax attention: the recomputed ``P``, ``dS`` and the saved output ``O``; a scan: the forward
   state and the adjoint state at every step; each adapter says where); its gradients are then rounded to the
   dtype.  The storing path is checked before it is used: with ``lowp="float32"`` (rounding to float32 is the
   identity) it must pass the float32 bound on the case, as our plain float32 backward must; a case where either
   fails is skipped, never judged.  An adapter without ``lowp`` gives the older baseline (float32 arithmetic, only
   the final gradient rounded);
6. a failing gradient is diagnosed (:mod:`oracles.verify.grad_diagnosis`): which input, and where (everywhere,
   the initial state, only the first/last position, from a chunk boundary on, a constant factor, the conjugate,
   the sign).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import zlib
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from oracles.gradients import FDGrad, fd_vjp
from oracles.tolerance import Bound, baseline_bound, compare
from oracles.verify.frameworks import lowp_dtype, to_framework, to_numpy
from oracles.verify.registry import Case, GradSpec, OpSpec, infer_dims
from oracles.verify.report import CaseResult, OutputResult

__all__ = ["grad_cases", "run_grad_case", "candidate_grads", "fd_oracle", "GradUnavailable", "N_RANDOM_GRAD",
           "clear_cache"]

#: seeded random small gradient cases per run, on top of ``GradSpec.cases``
N_RANDOM_GRAD = 2
LOWP = ("float16", "bfloat16")


class GradUnavailable(ValueError):
    """The candidate's gradient cannot be obtained (a framework without autograd and no ``grad_fn``)."""


class _Skip(Exception):
    pass


# -- cases -------------------------------------------------------------------------------------------------

def grad_cases(spec: OpSpec, gspec: GradSpec, conv: Dict[str, Any], seed: int = 0,
               n_random: int = N_RANDOM_GRAD) -> List[Case]:
    """``GradSpec.cases(conv)`` and ``n_random`` seeded random small cases (``GradSpec.sample`` or the op's sampler
    with every size keyword it has drawn small)."""
    out: List[Case] = list(gspec.cases(conv)) if gspec.cases is not None else []
    sampler = gspec.sample
    for i in range(n_random):
        rng = np.random.default_rng([seed, 4099, i])
        try:
            inp = sampler(rng, conv) if sampler is not None else spec.sample(rng, conv)
        except Exception:  # a sampler that cannot draw under these conventions: the listed cases still run
            continue
        if sum(int(np.size(v)) for v in inp.values() if v is not None and np.ndim(v) > 0) > 1500:
            continue  # elementwise differences cost ~6 forwards per element: keep random cases small
        out.append(Case(spec.name, f"grad-random-{i}", "random", inp, dict(conv), seed=seed,
                        note="random small case (grad)"))
    return out


def cotangents_for(case: Case, outputs: Mapping[str, np.ndarray], dtype: str, seed: int) -> Dict[str, np.ndarray]:
    """Seeded standard-normal cotangents, one per output (complex for complex outputs), rounded to ``dtype`` and
    returned upcast (the values the candidate and the oracle both pair with)."""
    key = zlib.crc32(case.case_id.encode())
    rng = np.random.default_rng([seed, 7877, key])
    dt = lowp_dtype(dtype)
    w = {}
    for name in sorted(outputs):
        shape = np.shape(outputs[name])
        if np.iscomplexobj(outputs[name]):
            z = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
            cdt = np.complex64 if dtype in ("float32",) + LOWP else np.complex128
            w[name] = z.astype(cdt).astype(np.complex128)
        else:
            w[name] = rng.standard_normal(shape).astype(dt).astype(np.float64)
    return w


# -- the oracle (cached) ------------------------------------------------------------------------------------

_CACHE: "OrderedDict[str, Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], FDGrad]]" = OrderedDict()
_CACHE_SIZE = 512


def clear_cache() -> None:
    _CACHE.clear()


def _digest(op: str, conv: Mapping[str, Any], inputs: Mapping[str, Any], extra: str) -> str:
    h = hashlib.sha1()
    h.update(op.encode())
    h.update(repr(sorted((k, repr(v)) for k, v in conv.items())).encode())
    h.update(extra.encode())
    for k in sorted(inputs):
        v = inputs[k]
        h.update(k.encode())
        if v is None:
            h.update(b"None")
            continue
        a = np.ascontiguousarray(np.asarray(v))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fd_oracle(spec: OpSpec, gspec: GradSpec, case: Case, x_up: Mapping[str, Any], conv: Dict[str, Any],
              dtype: str, seed: int):
    """``(oracle outputs, cotangents, FDGrad)`` for one case in one dtype (cached by the inputs' bytes)."""
    key = _digest(spec.name, conv, x_up, f"{dtype}|{seed}|{case.case_id}")
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    fwd = lambda inp: gspec.forward(dict(inp), conv)  # noqa: E731
    out = {k: np.asarray(v) for k, v in fwd(x_up).items() if v is not None}
    if gspec.outputs is not None:
        out = {k: v for k, v in out.items() if k in gspec.outputs}
    w = cotangents_for(case, out, dtype, seed)
    wrt = [n for n in gspec.wrt if x_up.get(n) is not None]
    fe = None if gspec.forward_error is None else (lambda y0: gspec.forward_error(dict(x_up), conv))
    fd = fd_vjp(fwd, x_up, w, wrt, forward_error=fe)
    _CACHE[key] = (out, w, fd)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return _CACHE[key]


# -- the candidate's gradient ------------------------------------------------------------------------------
#
# The adapter maps canonical inputs to the candidate's arguments and the candidate's return value to canonical
# outputs with NumPy code of its own (declarative patterns, or a subclass's build_call/read_outputs).  Both maps are
# layout maps (permutations, reshapes, copies, complex <-> interleaved real), found here by *index codes*: each
# entry of a canonical input is replaced by a distinct negative number (-1, -2, ...; a complex entry's imaginary
# part by the same number - 1/2), the adapter's own build_call is run, and each argument entry that holds a code
# names its source.  The gradient w.r.t. an argument then pulls back exactly (dL/dX_j = sum of dL/dA over the
# entries that copy X_j; an interleaved imaginary part contributes i dL/dA).  An argument entry that changes with
# X but holds no code comes from an elementwise map (e.g. alpha -> log alpha): its derivative is taken by the
# complex step, column by column (exact to rounding for real-analytic maps).  The outputs the same way: each
# entry of the returned arrays gets a code, the adapter's read_outputs runs on them, and a canonical cotangent
# entry is sent to the returned entry whose code arrives there.


def _slots(obj, out: list, path=()):
    """Every NumPy array inside ``obj`` (lists, tuples, dicts), in a fixed order: ``[(path, array)]``."""
    if isinstance(obj, np.ndarray):
        out.append((path, obj))
    elif isinstance(obj, (list, tuple)):
        for i, o in enumerate(obj):
            _slots(o, out, path + (i,))
    elif isinstance(obj, dict):
        for k in obj:
            _slots(obj[k], out, path + (k,))
    return out


def _replace(obj, table: Mapping[tuple, Any], path=()):
    if path in table:
        return table[path]
    if isinstance(obj, list):
        return [_replace(o, table, path + (i,)) for i, o in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_replace(o, table, path + (i,)) for i, o in enumerate(obj))
    if isinstance(obj, dict):
        return {k: _replace(v, table, path + (k,)) for k, v in obj.items()}
    return obj


def _codes(n: int, offset: int, complex_: bool) -> np.ndarray:
    c = -(np.arange(n, dtype=np.float64) + 1.0 + offset)
    return c + 1j * (c - 0.5) if complex_ else c


def _decode(v: np.ndarray, n: int, offset: int):
    """``(source index or -1, part)`` per entry of ``v``: part 0 real, 1 imaginary, 2 a complex copy."""
    v = np.asarray(v)
    if v.dtype.kind == "c":
        re, im = v.real.astype(np.float64), v.imag.astype(np.float64)
    else:
        re, im = v.astype(np.float64) if v.dtype.kind in "fiu" else np.full(v.shape, np.nan), None
    src = np.full(v.shape, -1, dtype=np.int64)
    part = np.zeros(v.shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        k = -re - 1.0 - offset
        is_re = np.isfinite(k) & (k == np.round(k)) & (k >= 0) & (k < n)
        k2 = -re - 1.5 - offset  # an imaginary part's code
        is_im = np.isfinite(k2) & (k2 == np.round(k2)) & (k2 >= 0) & (k2 < n)
    if im is None:
        src[is_re] = k[is_re].astype(np.int64)
        src[is_im] = k2[is_im].astype(np.int64)
        part[is_im] = 1
    else:
        with np.errstate(invalid="ignore"):
            whole = is_re & (im == re - 0.5)
            real_only = is_re & (im == 0)
        src[whole] = k[whole].astype(np.int64)
        part[whole] = 2
        src[real_only] = k[real_only].astype(np.int64)
    return src, part


@dataclasses.dataclass
class _InputMap:
    """How canonical input ``name`` reaches the argument slots: code maps and complex-step columns."""

    name: str
    shape: tuple
    complex_: bool
    codes: List[Tuple[int, np.ndarray, np.ndarray]]  # (slot, source index per entry, part per entry)
    columns: List[Tuple[int, np.ndarray]]  # (slot, (n, slot size) derivative matrix) for elementwise maps


def _input_maps(call, x: Mapping[str, Any], wrt: Sequence[str], dims) -> Tuple[Any, Any, list, List[_InputMap]]:
    spec, ad = call.spec, call.adapter
    args, kwargs = ad.build_call(spec, x, call.conv, dims)
    slots = _slots([args, kwargs], [])
    base_in = {k: (None if v is None else (np.asarray(v).astype(np.complex128) if np.iscomplexobj(v) else
                                          (np.asarray(v).astype(np.float64) if _is_float_array(np.asarray(v))
                                           else np.asarray(v)))) for k, v in x.items()}
    a0, k0 = ad.build_call(spec, base_in, call.conv, dims)
    base_slots = _slots([a0, k0], [])
    maps = []
    for name in wrt:
        X = np.asarray(base_in[name])
        n = X.size
        cx = np.iscomplexobj(X)
        coded = dict(base_in)
        coded[name] = _codes(n, 0, cx).reshape(X.shape)
        ac, kc = ad.build_call(spec, coded, call.conv, dims)
        cslots = _slots([ac, kc], [])
        if len(cslots) != len(base_slots):
            raise ValueError(f"the adapter's call changes structure with the values of {name}: its gradient "
                             "cannot be pulled back")
        codes, columns, elementwise = [], [], []
        for i, ((_, b), (_, c)) in enumerate(zip(base_slots, cslots)):
            b, c = np.asarray(b), np.asarray(c)
            if b.shape != c.shape:
                raise ValueError(f"the adapter's call changes shape with the values of {name}")
            with np.errstate(invalid="ignore"):
                changed = ~((b == c) | (np.isnan(b.astype(np.complex128)) & np.isnan(c.astype(np.complex128))))
            if not changed.any():
                continue
            src, part = _decode(c, n, 0)
            if np.any(changed & (src < 0)):
                elementwise.append(i)
            else:
                codes.append((i, src, part))
        if elementwise:
            if cx:
                raise ValueError(f"the adapter maps the complex input {name} by an elementwise function: its "
                                 "gradient cannot be pulled back")
            cols = {i: np.zeros((n, np.asarray(base_slots[i][1]).size)) for i in elementwise}
            t = 1e-30
            for j in range(n):
                pert = dict(base_in)
                Xj = X.astype(np.complex128).copy()
                Xj.reshape(-1)[j] += 1j * t
                pert[name] = Xj
                with np.errstate(all="ignore"):
                    ap, kp = ad.build_call(spec, pert, call.conv, dims)
                ps = _slots([ap, kp], [])
                for i in elementwise:
                    cols[i][j] = np.imag(np.asarray(ps[i][1], dtype=np.complex128)).reshape(-1) / t
            columns = list(cols.items())
        maps.append(_InputMap(name, X.shape, cx, codes, columns))
    return args, kwargs, slots, maps


def _pull_back(m: _InputMap, slot_grads: Mapping[int, Optional[np.ndarray]]) -> Optional[np.ndarray]:
    n = int(np.prod(m.shape)) if m.shape else 1
    g = np.zeros(n, dtype=np.complex128 if m.complex_ else np.float64)
    any_grad = False
    for i, src, part in m.codes:
        G = slot_grads.get(i)
        if G is None:
            continue
        any_grad = True
        G = np.asarray(G)
        G = G.astype(np.complex128) if np.iscomplexobj(G) else G.astype(np.float64)
        sel = src >= 0
        s, p, Gs = src[sel], part[sel], G[sel]
        if m.complex_:
            np.add.at(g, s[p == 0], np.real(Gs[p == 0]))
            np.add.at(g, s[p == 1], 1j * np.real(Gs[p == 1]))
            np.add.at(g, s[p == 2], Gs[p == 2])
        else:
            np.add.at(g, s, np.real(Gs))
    for i, D in m.columns:
        G = slot_grads.get(i)
        if G is None:
            continue
        any_grad = True
        g = g + D @ np.real(np.asarray(G, dtype=np.complex128)).reshape(-1)
    return g.reshape(m.shape) if any_grad else None


def _output_cotangents(call, ret_np: Any, w: Mapping[str, np.ndarray], dims) -> Dict[tuple, np.ndarray]:
    """The cotangent of each returned array (``{path: w in the candidate's layout}``) from the canonical ones."""
    spec, ad = call.spec, call.adapter
    rslots = _slots(ret_np if isinstance(ret_np, (list, tuple, dict)) else [ret_np], [])
    single = not isinstance(ret_np, (list, tuple, dict))
    offset, table, info = 0, {}, []
    for path, a in rslots:
        a = np.asarray(a)
        cx = np.iscomplexobj(a)
        table[path] = _codes(a.size, offset, cx).reshape(a.shape)
        info.append((path, a, offset, cx))
        offset += a.size
    coded_ret = table[(0,)] if single and rslots else _replace(ret_np, table)
    canon = ad.read_outputs(spec, coded_ret, dims, to_numpy, call.conv)
    wr = {path: np.zeros(a.shape, dtype=np.complex128 if cx else np.float64) for path, a, _, cx in info}
    for name, wk in w.items():
        if name not in canon:
            none = getattr(canon, "returned_none", set())
            why = "came back None" if name in none else "was not returned"
            raise ValueError(f"output {name} {why}: its cotangent cannot enter the loss")
        cv = np.asarray(canon[name])
        if cv.shape != wk.shape:
            raise ValueError(f"output {name}: the candidate returned shape {cv.shape}, expected {wk.shape}")
        for path, a, off, cx in info:
            src, part = _decode(cv, a.size, off)
            sel = src >= 0
            if not sel.any():
                continue
            flat = wr[path].reshape(-1)
            s, p, ws = src[sel], part[sel], np.asarray(wk)[sel]
            if cx:
                np.add.at(flat, s[p == 2], ws[p == 2])
            else:
                np.add.at(flat, s[p == 0], np.real(ws[p == 0]))
                np.add.at(flat, s[p == 1], np.imag(ws[p == 1]))  # Re conj(w) y pairs w.im with y.im
        # (an output entry holding no code is not a layout copy of what was returned: the check below says so)
        all_src = np.zeros(cv.shape, dtype=bool)
        for path, a, off, cx in info:
            all_src |= _decode(cv, a.size, off)[0] >= 0
        if cv.size and not all_src.all():
            raise ValueError(f"output {name}: the adapter's read_outputs is not a layout map of the returned arrays "
                             "(the gradient's cotangent cannot be sent back through it)")
    return wr


def _is_float_array(v: np.ndarray) -> bool:
    return v.dtype.kind in "fcV" or v.dtype.name in LOWP


def _framework_grads(call, x, w, wrt):
    """torch / JAX: leaves at the argument slots the ``wrt`` inputs reach, the loss ``sum Re conj(w) y`` over the
    returned arrays (cotangents sent through the adapter's read map), gradients pulled back to canonical."""
    spec = call.spec
    dims = infer_dims(spec.inputs, x)
    args, kwargs, slots, maps = _input_maps(call, x, wrt, dims)
    leaf_ids = sorted({i for m in maps for i, *_ in m.codes} | {i for m in maps for i, _ in m.columns})
    leaf_ids = [i for i in leaf_ids if _is_float_array(np.asarray(slots[i][1]))]
    fw = call.framework
    conv_ = lambda a: to_framework(a, fw, call.device)  # noqa: E731
    table = {path: conv_(np.asarray(a)) for path, a in slots}
    if fw == "torch":
        torch = importlib.import_module("torch")
        leaves = []
        for i in leaf_ids:
            t = table[slots[i][0]].detach().requires_grad_(True)
            table[slots[i][0]] = t
            leaves.append(t)
        full = _replace([list(args), dict(kwargs)], table)
        a2, k2 = full[0], full[1]
        if call.rewrite is not None:
            a2, k2 = call.rewrite(a2, k2)
        ret = call.candidate(*a2, **k2)
        ret_np = _to_numpy_tree(ret)
        wr = _output_cotangents(call, ret_np, w, dims)
        rslots = _raw_slots(ret)
        loss = None
        for path, raw in rslots:
            if path not in wr:
                continue
            if not isinstance(raw, torch.Tensor):
                raise TypeError(f"framework torch: a returned value is {type(raw).__name__}, not a torch.Tensor")
            wk = wr[path]
            if not np.any(wk):
                continue
            if raw.is_complex():
                wt = torch.from_numpy(wk.astype(np.complex128)).to(raw.device)
                term = (torch.conj(wt) * raw.to(torch.complex128)).real.sum()
            else:
                wt = torch.from_numpy(np.real(wk).astype(np.float64)).to(raw.device)
                term = (wt * raw.to(torch.float64)).sum()
            loss = term if loss is None else loss + term
        if loss is None or not loss.requires_grad or not leaves:
            gs = [None] * len(leaves)
        else:
            gs = torch.autograd.grad(loss, leaves, allow_unused=True)
        slot_grads = {i: (None if g is None else to_numpy(g)) for i, g in zip(leaf_ids, gs)}
    else:
        jax = importlib.import_module("jax")
        jnp = importlib.import_module("jax.numpy")
        holder: Dict[str, Any] = {}

        def loss_fn(*vals):
            tab = dict(table)
            for i, v in zip(leaf_ids, vals):
                tab[slots[i][0]] = v
            full = _replace([list(args), dict(kwargs)], tab)
            a2, k2 = full[0], full[1]
            if call.rewrite is not None:
                a2, k2 = call.rewrite(a2, k2)
            ret = call.candidate(*a2, **k2)
            wr = holder.get("wr")
            if wr is None:
                raise RuntimeError("internal: cotangents not prepared")
            total = 0.0
            for path, raw in _raw_slots(ret):
                if path not in wr or not np.any(wr[path]):
                    continue
                if jnp.iscomplexobj(raw):
                    total = total + jnp.sum(jnp.real(jnp.conj(jnp.asarray(wr[path])) * raw))
                else:
                    total = total + jnp.sum(jnp.asarray(np.real(wr[path])) * raw.astype(jnp.float64 if
                                            raw.dtype == jnp.float64 else jnp.float32))
            return jnp.real(total)

        # the returned layout, from one plain call (the cotangents are laid out before differentiating)
        full = _replace([list(args), dict(kwargs)], table)
        a2, k2 = full[0], full[1]
        if call.rewrite is not None:
            a2, k2 = call.rewrite(a2, k2)
        holder["wr"] = _output_cotangents(call, _to_numpy_tree(call.candidate(*a2, **k2)), w, dims)
        if leaf_ids:
            gs = jax.grad(loss_fn, argnums=tuple(range(len(leaf_ids))))(*[table[slots[i][0]] for i in leaf_ids])
            # JAX's gradient of a real loss w.r.t. a complex input is dL/da - i dL/db: conjugated to ours
            slot_grads = {i: np.conj(np.asarray(g)) if np.iscomplexobj(np.asarray(g)) else np.asarray(g)
                          for i, g in zip(leaf_ids, gs)}
        else:
            slot_grads = {}
    out = {}
    for m in maps:
        g = _pull_back(m, slot_grads)
        out[m.name] = g
    for n in wrt:
        out.setdefault(n, None)
    return out


def _raw_slots(ret) -> List[Tuple[tuple, Any]]:
    """The returned arrays (any framework) with their paths, in :func:`_slots` order."""
    out: List[Tuple[tuple, Any]] = []

    def walk(o, path):
        if isinstance(o, (list, tuple)):
            for i, v in enumerate(o):
                walk(v, path + (i,))
        elif isinstance(o, dict):
            for k in o:
                walk(o[k], path + (k,))
        elif o is not None and hasattr(o, "shape"):
            out.append((path, o))

    walk(ret if isinstance(ret, (list, tuple, dict)) else [ret], ())
    return out


def _to_numpy_tree(ret):
    if isinstance(ret, list):
        return [_to_numpy_tree(o) for o in ret]
    if isinstance(ret, tuple):
        return tuple(_to_numpy_tree(o) for o in ret)
    if isinstance(ret, dict):
        return {k: _to_numpy_tree(v) for k, v in ret.items()}
    if ret is None or not hasattr(ret, "shape"):
        return ret
    a = np.asarray(to_numpy(ret))
    if a.dtype.name in LOWP or a.dtype.kind == "V":
        a = a.astype(np.float32)
    return a


def _grad_fn_grads(call, grad_fn, x, w, wrt, gspec: GradSpec):
    spec = call.spec
    conv_ = lambda a: to_framework(None if a is None else np.asarray(a), call.framework, call.device)  # noqa: E731
    args = [conv_(x.get(a.name)) for a in spec.inputs] + [conv_(w.get(o.name)) for o in spec.outputs]
    ret = grad_fn(*args)
    if isinstance(ret, Mapping):
        unknown = sorted(set(ret) - {a.name for a in spec.inputs})
        if unknown:
            raise ValueError(f"grad_fn returned gradients for {unknown}, which are not inputs of {spec.name} "
                             f"(inputs: {[a.name for a in spec.inputs]})")
        got = {k: (None if v is None else to_numpy(v)) for k, v in ret.items()}
    elif isinstance(ret, (tuple, list)):
        present = [n for n in gspec.wrt if x.get(n) is not None]
        if len(ret) == len(gspec.wrt):
            names = list(gspec.wrt)
        elif len(ret) == len(present):
            names = present
        else:
            raise ValueError(f"grad_fn returned {len(ret)} gradients; expected {len(gspec.wrt)} (wrt {gspec.wrt}) "
                             f"or {len(present)} (the inputs given: {present})")
        got = {n: (None if v is None else to_numpy(v)) for n, v in zip(names, ret)}
    else:
        raise TypeError(f"grad_fn: expected a dict {{input: grad}} or a tuple in wrt order {gspec.wrt}, got "
                        f"{type(ret).__name__}")
    return {n: got.get(n) for n in wrt}


def candidate_grads(call, x: Mapping[str, Any], w: Mapping[str, np.ndarray], wrt: Sequence[str],
                    gspec: GradSpec, grad_fn: Optional[Callable] = None) -> Dict[str, Optional[np.ndarray]]:
    """The candidate's ``J^T w`` for each name in ``wrt`` (``None``: no gradient flows), canonical layout."""
    dt_w = {k: v for k, v in w.items()}
    if grad_fn is not None:
        return _grad_fn_grads(call, grad_fn, x, dt_w, list(wrt), gspec)
    if call.adapter.vectorize is not None:
        return _vectorized(call, x, dt_w, list(wrt), gspec)
    if call.framework in ("torch", "jax"):
        return _framework_grads(call, x, dt_w, list(wrt))
    raise GradUnavailable(f"framework {call.framework}: no autograd to differentiate the candidate; pass an explicit "
                          "backward (--grad-fn MODULE:FUNCTION, grad_fn=) or verify it as --framework torch / jax")


def _vectorized(call, x, w, wrt, gspec):
    """An unbatched candidate (``adapter.vectorize``): the gradient slice by slice, stacked along the axis (inputs
    without it: summed)."""
    spec = call.spec
    ax = call.adapter.vectorize
    dims = infer_dims(spec.inputs, x)
    size = dims[ax]
    inner = dataclasses.replace(call, adapter=dataclasses.replace(call.adapter, vectorize=None))
    pats = {a.name: a.pattern_for(np.ndim(x[a.name])) for a in spec.inputs if x.get(a.name) is not None}
    opats = {o.name: o for o in spec.outputs}
    acc: Dict[str, List[Optional[np.ndarray]]] = {n: [] for n in wrt}
    for i in range(size):
        xi = {k: (None if v is None else (np.take(v, i, axis=pats[k].index(ax)) if pats.get(k) and ax in pats[k]
                                          else v)) for k, v in x.items()}
        wi = {}
        for k, v in w.items():
            pat = opats[k].pattern_for(np.ndim(v)) if k in opats else None
            wi[k] = np.take(v, i, axis=pat.index(ax)) if pat and ax in pat else v
        g = candidate_grads(inner, xi, wi, wrt, gspec)
        for n in wrt:
            acc[n].append(g.get(n))
    out = {}
    for n in wrt:
        gs = acc[n]
        if all(g is None for g in gs):
            out[n] = None
            continue
        pat = pats.get(n)
        if pat and ax in pat:
            shape = np.take(x[n], 0, axis=pat.index(ax)).shape
            out[n] = np.stack([np.zeros(shape) if g is None else g for g in gs], axis=pat.index(ax))
        else:
            out[n] = sum(np.zeros(np.shape(x[n])) if g is None else g for g in gs)
    return out


# -- bounds and comparison ---------------------------------------------------------------------------------

def _call_bounds(gspec: GradSpec, x_up, fd: FDGrad, conv, dtype, w):
    """``GradSpec.bounds`` with the cotangents when it takes them (``cotangents=``)."""
    import inspect

    try:
        takes = "cotangents" in inspect.signature(gspec.bounds).parameters
    except (TypeError, ValueError):
        takes = False
    args = (dict(x_up), dict(fd.grad), conv, dtype, dict(fd.magnitude))
    return gspec.bounds(*args, cotangents=dict(w)) if takes else gspec.bounds(*args)


def takes_lowp(fn) -> bool:
    """Whether a ``GradSpec.reference_vjp`` takes the ``lowp=`` keyword (the storing backward of the baseline)."""
    import inspect

    try:
        return "lowp" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _grad_bounds(gspec: GradSpec, x_up, fd: FDGrad, conv, dtype: str, w) -> Tuple[Dict[str, Bound], Dict[str, Any]]:
    """Each gradient's bound: the fd error + the derived bound of a backward in ``dtype`` (or the baseline rule)."""
    names = list(fd.grad)
    fd_b = {n: Bound(fd.error[n], "the finite differences' own error (Richardson truncation estimate + rounding "
                                  "of the difference quotient, oracles.gradients)") for n in names}
    if gspec.bounds is None:
        raise _Skip(f"op {gspec.op}: its GradSpec has no bounds")
    def call_bounds(d):
        return _call_bounds(gspec, x_up, fd, conv, d, w)

    if dtype not in LOWP:
        b = call_bounds(np.dtype(dtype))
        return {n: fd_b[n] + b[n] for n in names}, {}
    if gspec.reference_vjp is None:
        raise _Skip(f"op {gspec.op} has no reference VJP for the low-precision baseline")
    ref_in = {k: (None if v is None else (np.asarray(v).astype(np.float32) if np.asarray(v).dtype.kind == "f" else
                                          (np.asarray(v).astype(np.complex64) if np.iscomplexobj(v) else v)))
              for k, v in x_up.items()}
    w32 = {k: v.astype(np.complex64 if np.iscomplexobj(v) else np.float32) for k, v in w.items()}
    storing = takes_lowp(gspec.reference_vjp)
    try:
        ref = gspec.reference_vjp(ref_in, conv, w32)
        # the storing backward, checked on its own path first: with lowp="float32" its rounding is the identity
        # (float32 values stored in float32), so it must pass the float32 bound like our plain backward
        ref_path = gspec.reference_vjp(ref_in, conv, w32, lowp="float32") if storing else None
        ref_low = gspec.reference_vjp(ref_in, conv, w32, lowp=dtype) if storing else ref
    except Exception as exc:
        raise _Skip(f"our reference VJP cannot run this case for the low-precision baseline "
                    f"({type(exc).__name__}: {exc})") from None
    b32 = call_bounds(np.dtype(np.float32))
    dt = lowp_dtype(dtype)
    out, base = {}, {}
    for n in names:
        r = np.asarray(ref[n])
        own = compare(r, fd.grad[n], fd_b[n] + b32[n], dtype=np.float32)
        if not own.passed:
            raise _Skip(f"our reference VJP exceeds its own float32 bound on this case (grad {n}: {own.summary()}), "
                        "so it cannot be the low-precision baseline")
        if ref_path is not None:
            own = compare(np.asarray(ref_path[n]), fd.grad[n], fd_b[n] + b32[n], dtype=np.float32)
            if not own.passed:
                raise _Skip(f"the storing path of our reference VJP (lowp='float32', no rounding) exceeds its float32 "
                            f"bound on this case (grad {n}: {own.summary()}), so it cannot be the baseline")
        r = np.asarray(ref_low[n])
        r_low = r.astype(dt) if not np.iscomplexobj(r) else r
        M = np.asarray(b32[n].values, dtype=np.float64)
        M = M if (M.ndim > 0 and np.all(M > 0)) else None
        out[n] = fd_b[n] + baseline_bound(r_low, fd.grad[n], dt, magnitude=M)
        base[n] = float(np.max(np.abs(np.asarray(r_low).astype(np.float64) - fd.grad[n]))) if r.size else 0.0
    return out, base


def run_grad_case(spec: OpSpec, gspec: GradSpec, call, case: Case, dtype: str, conv: Dict[str, Any], seed: int,
                  grad_fn: Optional[Callable], cast_inputs: Callable, upcast: Callable, error_text: Callable,
                  raised_where: Callable, diagnose: bool = True, save_failures: Optional[str] = None,
                  meta: Optional[dict] = None) -> CaseResult:
    """One gradient case in one dtype -> a :class:`CaseResult` whose outputs are ``grad <input>``."""
    from oracles.verify import grad_diagnosis
    from oracles.verify.report import save_case

    res = CaseResult(case.case_id, case.kind, dtype, dict(conv), case.shapes(), case.seed, note=case.note)
    try:
        x = cast_inputs(spec, case.inputs, dtype)
    except Exception as s:  # the forward harness's _Skip (complex in low precision)
        res.skipped = str(s)
        return res
    x_up = upcast(x)
    try:
        out, w_up, fd = fd_oracle(spec, gspec, case, x_up, conv, dtype, seed)
    except Exception as exc:
        res.skipped = f"the gradient oracle cannot evaluate this case ({type(exc).__name__}: {exc})"
        return res
    wrt = list(fd.grad)
    if not wrt:
        res.skipped = f"none of the differentiable inputs {gspec.wrt} is given in this case"
        return res
    dt = lowp_dtype(dtype)
    w_cand = {k: (v.astype(np.complex64 if dtype == "float32" else np.complex128) if np.iscomplexobj(v)
                  else v.astype(dt)) for k, v in w_up.items()}
    try:
        bounds, base = _grad_bounds(gspec, x_up, fd, conv, dtype, w_up)
    except _Skip as s:
        res.skipped = str(s)
        return res
    cand: Dict[str, Optional[np.ndarray]] = {}
    try:
        cand = call_with_limit(call, lambda: candidate_grads(call, x, w_cand, wrt, gspec, grad_fn))
    except GradUnavailable:
        raise
    except Exception as exc:
        res.error = "the candidate's backward failed: " + error_text(exc)
        res.raised = raised_where(exc)
    if res.error is None:
        notes = []
        for n in wrt:
            o = fd.grad[n]
            g = cand.get(n)
            flows = g is not None
            if g is None:
                g = np.zeros(np.shape(o), dtype=o.dtype)
                if np.size(o):  # (an empty input has nothing to flow to)
                    notes.append(f"no gradient flows to {n} (the candidate treats it as a constant): compared as "
                                 "zeros")
                else:
                    flows = True
            g = np.asarray(g)
            g_cmp = g.astype(np.float64) if (g.dtype.name in LOWP or g.dtype.kind == "V") else g
            cmp = compare(g_cmp, o, bounds[n], dtype=dt)
            cmp.dtype = dtype
            if not flows:
                cmp.message = f"no gradient flows to {n}" + (f"; {cmp.message}" if cmp.message else "")
            r = OutputResult(f"grad {n}", cmp, returned_dtype=(g.dtype.name if flows else None))
            if n in base:
                r.baseline_err = base[n]
                r.baseline_multiple = (cmp.max_abs_err / base[n]) if base[n] > 0 else (0.0 if cmp.max_abs_err == 0
                                                                                       else float("inf"))
            res.outputs.append(r)
        res.warnings.extend(notes)
        if not res.passed and diagnose:
            res.diagnosis = grad_diagnosis.diagnose(spec, gspec, conv, x_up, fd, cand, bounds, res.outputs)
    if not res.passed and save_failures:
        res.repro = save_case(save_failures, dict(meta or {}, grad=True), case.case_id + "-grad", dtype, x, conv,
                              {f"grad_{k}": v for k, v in fd.grad.items()},
                              {f"grad_{k}": v for k, v in cand.items() if v is not None})
    return res


def call_with_limit(call, fn):
    from oracles.verify.harness import _call_with_time_limit

    return _call_with_time_limit(fn, call.timeout)
