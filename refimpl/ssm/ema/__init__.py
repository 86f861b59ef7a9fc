"""refimpl.ssm.ema (see README.md in this folder)."""
