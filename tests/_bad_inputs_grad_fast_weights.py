"""Bad-input contracts of the fast weight memory's backward pass (``refimpl.attention.fast_weights.backward``,
``fast_weight_memory_vjp``): both view functions and every registered (view, backend) pair; the cotangents ``dy``
and ``d_final_state`` are checked like inputs; ``sigma`` must be None (the identity)."""
from _bad_inputs import Arr, Contract, Opt

_FW = "refimpl.attention.fast_weights"
_FWB = "refimpl.attention.fast_weights.backward"


def _pairs():
    from refimpl._dispatch import registered

    return [(f"{_FW}:fast_weight_memory_vjp", dict(view=Opt(view), backend=Opt(backend)))
            for view, backend in registered()["refimpl.attention.fast_weight_memory_vjp"].pairs()]


def contracts():
    sizes = dict(b=2, l=4, h=2, n=3, p=2)
    args = dict(a=Arr("b l h p"), b_vec=Arr("b l h n"), x_read=Arr("b l h n"), dy=Arr("b l h p"),
                d_final_state=Arr("b h p n", optional=True), initial_state=Arr("b h p n", optional=True))
    targets = [f"{_FWB}:recurrent_vjp", f"{_FWB}:quadratic_vjp", f"{_FWB}:validate_fast_weights_vjp"] + _pairs()
    return [Contract(targets, args, sizes=sizes, positional=3, empty=("b", "l", "h", "n", "p"))]
