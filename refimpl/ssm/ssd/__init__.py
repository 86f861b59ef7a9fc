"""refimpl.ssm.ssd (see README.md in this folder)."""
