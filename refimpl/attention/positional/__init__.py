"""refimpl.attention.positional (see README.md in this folder)."""
