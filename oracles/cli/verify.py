"""``refimpl verify MODULE:FUNCTION --op OP``: verify a third-party function against the op's oracle.

Exit status 0 only if every case and probe conforms; 1 if anything does not; 2 on a usage error.
"""
from __future__ import annotations

import ast
import json
import math
import os
import sys

# Python's and JSON's spellings (case-sensitive: `key_norm=none` is the string 'none')
_WORDS = {"True": True, "False": False, "None": None, "true": True, "false": False, "null": None,
          "inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "Infinity": math.inf, "-Infinity": -math.inf,
          "nan": math.nan, "NaN": math.nan}


def parse_value(text: str):
    """A convention value as ``refimpl ops`` prints it, or as JSON.

    ``True``/``true``, ``False``/``false``, ``None``/``null``, numbers (``0.5``, ``1e-3``, ``inf``, ``-inf``,
    ``nan``), quoted strings (``'zoh'``), lists and tuples (``[1, 2]``, ``(0.0, inf)``) -- Python's ``repr`` and
    JSON both; anything else is the bare string (``method=zoh``).  Lists come back as tuples.
    """
    v = text.strip()
    if v in _WORDS:
        return _WORDS[v]
    for parse in (json.loads, _python_literal):
        try:
            val = parse(v)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return _tuples(val)
    return v


def _python_literal(v: str):
    # repr spells infinities as inf, which is not a literal: name them so literal_eval can read (0.0, inf)
    tree = ast.parse(v, mode="eval")

    class Inf(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in _WORDS:
                return ast.copy_location(ast.Constant(_WORDS[node.id]), node)
            raise ValueError(f"not a literal: {node.id}")

    return ast.literal_eval(ast.fix_missing_locations(Inf().visit(tree)))


def _tuples(val):
    if isinstance(val, list):
        return tuple(_tuples(x) for x in val)
    if isinstance(val, tuple):
        return tuple(_tuples(x) for x in val)
    return val


def parse_convention(text: str):
    """``NAME=VALUE`` -> ``(name, value)`` with :func:`parse_value` reading the value."""
    if "=" not in text:
        raise ValueError(f"--conv: expected NAME=VALUE, got {text!r}")
    k, _, v = text.partition("=")
    if not k.strip():
        raise ValueError(f"--conv: expected NAME=VALUE, got {text!r} (no name)")
    return k.strip(), parse_value(v)


def parse_conventions(texts, op=None) -> dict:
    """``--conv`` arguments -> ``{name: value}``.  With the op known, a value that is not one of a convention's
    choices while its text is (a string choice spelled like a number or a word) is taken as that text."""
    out = {}
    spec = None
    if op is not None:
        from oracles.verify import get_op

        try:
            spec = get_op(op)
        except ValueError:
            spec = None  # an unknown op is reported by verify itself
    for text in texts:
        k, v = parse_convention(text)
        raw = text.partition("=")[2].strip()
        if spec is not None:
            choices = next((c.choices for c in spec.conventions if c.name == k), None)
            if choices is not None and v not in choices and raw in choices:
                v = raw
        out[k] = v
    return out


def parse_domain(texts) -> dict:
    """``--domain`` arguments -> ``{name: value}`` (values read as :func:`parse_value` reads them:
    ``min_length=1`` is the integer 1, ``value_dim=query_dim`` the name of another size)."""
    out = {}
    for text in texts:
        k, sep, v = text.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise ValueError(f"--domain: expected NAME=VALUE, got {text!r}")
        out[k.strip()] = parse_value(v)
    return out


def candidate_path() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does, so that
    ``refimpl verify mymod:fn`` finds ``./mymod.py`` when run through the console script."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.insert(0, cwd)


def positive_seconds(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        t = math.nan
    if not (t > 0 and math.isfinite(t)):
        import argparse

        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return t


def register(sub) -> None:
    p = sub.add_parser("verify", help="verify a function against an op's oracle (exit 0 only if it conforms)",
                       description="Verify MODULE:FUNCTION against the oracle of --op with derived tolerances.")
    p.add_argument("candidate", metavar="[OP] MODULE:FUNCTION", nargs="+",
                   help="the function under test (module:attr[.attr]); the op may come first instead of --op")
    p.add_argument("--op", default=None, help="the op spec (see `refimpl ops`)")
    p.add_argument("--adapter", default=None, help="a layout adapter of the op (default: its canonical signature)")
    p.add_argument("--conv", action="append", default=[], metavar="NAME=VALUE",
                   help="a convention the function implements (repeatable), e.g. --conv method=bilinear; values as "
                        "`refimpl ops` prints them (True, None, 0.5, 'zoh', (0.0, inf)) or JSON")
    p.add_argument("--domain", action="append", default=[], metavar="NAME=VALUE",
                   help="an input the function legitimately refuses (repeatable), by the op's domain entries "
                        "(`refimpl ops OP` lists them): --domain min_length=1 (no empty sequences), "
                        "--domain length_multiple=8, --domain value_dim=query_dim; cases outside are not run")
    p.add_argument("--dtype", action="append", default=None,
                   help="float64, float32, float16, bfloat16 (repeatable or comma-separated; default float64)")
    p.add_argument("--framework", default=None, help="numpy (default), torch, torch:cuda, jax, cupy")
    p.add_argument("--profile", default="ci", choices=["ci", "thorough"], help="how many random cases (ci 10, thorough 200)")
    p.add_argument("--max-examples", type=int, default=None, help="the number of random cases (overrides --profile)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cases")
    p.add_argument("--cases", default="golden,edge,random", metavar="KINDS",
                   help="which cases: a comma-separated subset of golden, edge, random (default: all)")
    p.add_argument("--report", default="text", choices=["text", "json", "junit"], help="report format on stdout")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--save-failures", default=None, metavar="DIR", help="save each failing case (.npz + rerun script)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write one PNG heatmap of err/bound over (channel, time) per failing case into DIR "
                        "(needs matplotlib: pip install 'refimpl[plot]')")
    p.add_argument("--verbose", "-v", action="store_true", help="text report: show passing cases too")
    p.add_argument("--timeout", type=positive_seconds, default=60.0, metavar="SECONDS",
                   help="time limit of each call of the candidate (default 60); a call past it is reported with its "
                        "case and abandoned, and the run goes on")
    p.add_argument("--grad", action="store_true",
                   help="also verify the backward pass: each input's gradient of <outputs, cotangents> (torch "
                        "autograd, jax.grad, or --grad-fn) against finite differences of an independent forward")
    p.add_argument("--grad-fn", default=None, metavar="MODULE:FUNCTION",
                   help="an explicit backward grad_fn(*canonical inputs, *cotangents in output order) -> {input: grad} "
                        "or a tuple in the op's wrt order (implies --grad)")
    p.set_defaults(func=run)


def run(args) -> int:
    from oracles.verify import resolve_candidate, verify

    candidate_path()
    try:
        pos = list(args.candidate)
        if len(pos) == 2:
            if args.op is not None and args.op != pos[0]:
                raise ValueError(f"op: given twice ({pos[0]!r} and --op {args.op!r})")
            args.op, args.candidate = pos
        elif len(pos) == 1:
            args.candidate = pos[0]
        else:
            raise ValueError(f"expected [OP] MODULE:FUNCTION, got {' '.join(pos)!r}")
        if args.op is None:
            raise ValueError("op: expected --op OP or `refimpl verify OP MODULE:FUNCTION`")
        fn = resolve_candidate(args.candidate)
        grad_fn = resolve_candidate(args.grad_fn) if args.grad_fn else None
        conv = parse_conventions(args.conv, args.op)
        dtypes = []
        for d in args.dtype or ["float64"]:
            dtypes.extend(x.strip() for x in d.split(",") if x.strip())
        kinds = tuple(k.strip() for k in args.cases.split(",") if k.strip())
        bad = sorted(set(kinds) - {"golden", "edge", "random"})
        if bad or not kinds:
            raise ValueError(f"--cases: expected a subset of golden, edge, random, got {args.cases!r}")
        report = verify(args.op, fn, adapter=args.adapter, conventions=conv, dtype=dtypes, framework=args.framework,
                        profile=args.profile, max_examples=args.max_examples, seed=args.seed, kinds=kinds,
                        save_failures=args.save_failures, candidate_name=args.candidate, timeout=args.timeout,
                        plots=args.plots, domain=parse_domain(args.domain), grad=args.grad or grad_fn is not None,
                        grad_fn=grad_fn)
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"refimpl verify: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    text = report.render(args.report, verbose=args.verbose)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
        print(report.summary())
    else:
        print(text)
    return 0 if report.passed else 1
