"""refimpl.ssm.lti (see README.md in this folder)."""
