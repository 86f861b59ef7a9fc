"""Arrays to and from the candidate's framework.

NumPy always works.  ``torch``, ``jax`` and ``cupy`` (optionally with a device,
``"torch:cuda"``) are imported **only** when the caller names them: the harness
never imports a framework the user did not ask for.  NumPy -> torch goes through
DLPack (``torch.from_dlpack``, then ``.to(device)``); NumPy -> JAX through
``jnp.asarray`` (JAX reads ml_dtypes' bfloat16 natively), then ``device_put``;
NumPy -> CuPy through ``cp.asarray`` (a host-to-device copy).  Outputs coming
back are recognised by their type's module name (``type(t).__module__``) without
importing anything, and converted to NumPy (torch: after ``.cpu()``; cupy:
``.get()``; anything else with ``__dlpack__``: ``np.from_dlpack``).

bfloat16 has no NumPy DLPack code; to and from torch it travels as its bit
pattern (an ``int16`` view), which is exact.  Only torch (CPU) conversions are
exercised by the tests here; JAX and CuPy are not installed on the CI machines.

Precision: JAX computes in float32 unless ``jax_enable_x64`` is set, silently turning
float64 inputs into float32.  :func:`precision_scope` enables x64 for a float64 run of a JAX
candidate (and restores the setting after), and says so; :func:`precision_note` names an output
that came back in lower precision than the dtype asked for, whatever the framework.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np

__all__ = ["FRAMEWORKS", "parse_framework", "to_framework", "to_numpy", "lowp_dtype", "precision_scope",
           "precision_note", "mantissa_bits"]

FRAMEWORKS = ("numpy", "torch", "jax", "cupy")


def lowp_dtype(name: str) -> np.dtype:
    """NumPy dtype for a dtype name (bfloat16 through ml_dtypes, imported only when asked)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def parse_framework(spec: Optional[str]) -> Tuple[str, Optional[str]]:
    """``"torch:cuda"`` -> ``("torch", "cuda")``; ``None`` -> ``("numpy", None)``."""
    if spec is None:
        return "numpy", None
    name, _, device = str(spec).partition(":")
    if name not in FRAMEWORKS:
        raise ValueError(f"framework: expected one of {', '.join(FRAMEWORKS)} (optionally ':device'), got {spec!r}")
    return name, device or None


def _is_bf16(a: np.ndarray) -> bool:
    return a.dtype.name == "bfloat16"


def to_framework(a: Any, framework: str, device: Optional[str] = None) -> Any:
    """Convert a NumPy array (or None / Python scalar) to ``framework``'s array type."""
    if a is None or not isinstance(a, np.ndarray):
        return a
    if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-d array into shape (1,))
        a = a.copy(order="C")
    if framework == "numpy":
        return a
    if framework == "torch":
        torch = importlib.import_module("torch")
        if _is_bf16(a):
            t = torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_dlpack(a.copy())
        return t.to(device) if device else t
    if framework == "jax":
        jnp = importlib.import_module("jax.numpy")
        jax = importlib.import_module("jax")
        out = jnp.asarray(a)  # jax understands ml_dtypes' bfloat16 natively
        if device:
            out = jax.device_put(out, jax.devices(device)[0])
        return out
    if framework == "cupy":
        cp = importlib.import_module("cupy")
        if _is_bf16(a):
            raise TypeError("cupy has no bfloat16 dtype; verify cupy candidates in float16/float32/float64")
        return cp.asarray(a)
    raise ValueError(f"framework: unknown {framework!r}")


def to_numpy(x: Any) -> Any:
    """Bring a candidate's output back to NumPy (torch/jax/cupy/anything with ``__dlpack__``)."""
    if x is None or isinstance(x, np.ndarray):
        return x
    if isinstance(x, (bool, int, float, complex, np.generic)):
        return np.asarray(x)
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        torch = sys.modules["torch"]  # already imported by the candidate that returned it
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        if t.is_complex() and t.is_conj():
            t = t.resolve_conj()
        return t.contiguous().numpy().copy()
    if mod in ("jax", "jaxlib"):
        return np.asarray(x).copy()
    if mod == "cupy":
        return x.get()
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x).copy()
        except (TypeError, BufferError, RuntimeError):
            pass
    return np.asarray(x)


# -- precision ------------------------------------------------------------------------------------------------

def mantissa_bits(dtype: Any) -> Optional[int]:
    """The significand precision of a floating or complex dtype (float64: 53, bfloat16: 8); None otherwise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    if dt.name == "bfloat16":
        return 8
    if dt.kind not in "fc":
        return None
    return int(np.finfo(dt).nmant) + 1


def precision_note(returned: Any, asked: str) -> Optional[str]:
    """A sentence when ``returned`` (a dtype) carries fewer significand bits than ``asked`` (a dtype name)."""
    got, want = mantissa_bits(returned), mantissa_bits(lowp_dtype(asked))
    if got is None or want is None or got >= want:
        return None
    return f"came back in {np.dtype(returned).name}, lower precision than the {asked} asked for"


def _jax_x64(jax) -> bool:
    cfg = jax.config
    for read in (lambda: cfg.jax_enable_x64, lambda: cfg.read("jax_enable_x64"),
                 lambda: cfg.values["jax_enable_x64"]):
        try:
            return bool(read())
        except (AttributeError, KeyError, TypeError):
            continue
    return False


@contextlib.contextmanager
def precision_scope(framework: str, dtype: str) -> Iterator[List[str]]:
    """Run a candidate of ``framework`` in ``dtype``: for JAX in float64, ``jax_enable_x64`` is turned on.

    Yields the list of notes for the report (what was changed); the previous setting is restored on exit.
    Other frameworks keep the dtype of the arrays they are given: nothing to do.
    """
    notes: List[str] = []
    if framework != "jax" or dtype != "float64":
        yield notes
        return
    jax = importlib.import_module("jax")
    was = _jax_x64(jax)
    if not was:
        jax.config.update("jax_enable_x64", True)
        notes.append("float64: jax_enable_x64 was off; it was enabled for the float64 run (JAX computes in float32 "
                     "without it) and restored afterwards")
    try:
        yield notes
    finally:
        if not was:
            jax.config.update("jax_enable_x64", False)
