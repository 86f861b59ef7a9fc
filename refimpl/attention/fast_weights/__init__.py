"""refimpl.attention.fast_weights (see README.md in this folder)."""
