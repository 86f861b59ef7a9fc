"""refimpl.attention.softmax (see README.md in this folder)."""
