"""The ``refimpl`` command line.

Subcommands live in :mod:`refimpl.commands`: every module there with a
``register(subparsers)`` function adds one (``report`` is the main job).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    from refimpl import commands

    parser = argparse.ArgumentParser(
        prog="refimpl",
        description="Reference implementations and oracles for SSMs and attention.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"refimpl.commands.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
