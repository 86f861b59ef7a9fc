"""refimpl.attention.memory (see README.md in this folder)."""
