"""refimpl.attention.delta (see README.md in this folder)."""
