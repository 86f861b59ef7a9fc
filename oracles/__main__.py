"""``python -m oracles COMMAND``: the ``refimpl`` command line (:mod:`oracles.cli`)."""
import sys

from oracles.cli import main

sys.exit(main())
