"""refimpl.ssm.discretization (see README.md in this folder)."""
