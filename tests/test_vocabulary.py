"""One vocabulary: no public function of refimpl takes an old or upstream argument name."""
import importlib
import inspect
import pkgutil

import refimpl

# the names the vocabulary replaced (docs/glossary.md): initial_state, return_final_state, state_layout, view, backend
FORBIDDEN = {"h0", "S0", "W0", "u0", "s0", "c0", "initial_states", "init_state", "return_state", "return_last_state",
             "return_final_states", "output_final_state", "layout", "is_causal"}


def _public_callables():
    seen = {}
    for mod in pkgutil.walk_packages(refimpl.__path__, prefix="refimpl."):
        leaf = mod.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or leaf == "cuda":
            continue
        module = importlib.import_module(mod.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if callable(obj) and not isinstance(obj, type):
                seen[f"{module.__name__}.{name}"] = obj
    return seen


def test_no_public_function_takes_an_old_argument_name():
    fns = _public_callables()
    assert len(fns) > 100, len(fns)
    bad = {}
    for qual, fn in fns.items():
        try:
            params = set(inspect.signature(fn).parameters)
        except (TypeError, ValueError):  # a compiled kernel without a Python signature
            continue
        if params & FORBIDDEN:
            bad[qual] = sorted(params & FORBIDDEN)
    assert not bad, bad


def test_entry_points_take_view_and_backend():
    import refimpl.ssm as ssm
    import refimpl.attention as att

    for name, impl in refimpl._dispatch.registered().items():
        pkg, fname = name.rsplit(".", 1)
        fn = getattr(ssm if pkg == "refimpl.ssm" else att, fname)
        params = inspect.signature(fn).parameters
        assert "backend" in params, name
        if len(impl.views) > 1:  # the table's views are chosen by view= (discretize: method=, feature_map: kind=)
            assert "view" in params or name.endswith(("discretize", "feature_map", "discretize_vjp", "feature_map_vjp")), name
