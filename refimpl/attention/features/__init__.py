"""refimpl.attention.features (see README.md in this folder)."""
