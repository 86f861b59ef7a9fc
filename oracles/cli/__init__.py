"""The ``refimpl`` command line (``refimpl COMMAND`` or ``python -m oracles COMMAND``).

The command line is part of the conformance layer: it runs ``refimpl``'s code against the
oracles, so it lives here and ``refimpl`` itself imports nothing from ``oracles``.
Every module of this package with a ``register(subparsers)`` function adds one subcommand:

* ``report``  -- every algorithm, view and backend against its oracle (:mod:`oracles.checks`);
* ``verify``  -- a third-party function against an op's oracle (:mod:`oracles.verify`);
* ``ops``     -- the op specs the verify harness knows;
* ``vectors`` -- golden test vectors for ports (export, check).
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refimpl",
        description="Reference implementations and oracles for SSMs and attention.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (``refimpl ops | head``): stop quietly, as ``cat`` does.

    Python would otherwise print a ``BrokenPipeError`` traceback, and a second one when it
    flushes stdout at exit; pointing stdout at ``/dev/null`` makes that last flush harmless.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured in a test)
        pass
    return 141  # 128 + SIGPIPE: what a shell reports for a command stopped by a closed pipe


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        return _quiet_broken_pipe()
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
