"""refimpl.attention.linear (see README.md in this folder)."""
