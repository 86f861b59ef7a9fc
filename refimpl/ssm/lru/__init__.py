"""refimpl.ssm.lru (see README.md in this folder)."""
