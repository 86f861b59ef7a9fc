"""refimpl.ssm.selective (see README.md in this folder)."""
