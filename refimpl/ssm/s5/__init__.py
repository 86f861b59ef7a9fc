"""refimpl.ssm.s5 (see README.md in this folder)."""
