"""refimpl.ssm.s4d (see README.md in this folder)."""
