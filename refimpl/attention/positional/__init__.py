"""refimpl.attention.positional: sinusoidal positional encodings (see README.md in this folder)."""
from refimpl.attention.positional.reference import sinusoidal_positions

__all__ = ["sinusoidal_positions"]
