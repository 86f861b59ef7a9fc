"""refimpl.ssm.hippo (see README.md in this folder)."""
