"""Benchmarks: our kernels side by side with what users would pick instead.

Run ``python -m bench`` from the repository root (``pip install -e '.[bench]'`` for the
alternatives).  Every time is a median of interleaved runs in one process after
warm-up; every candidate's result is checked against our reference before its
time counts; the table reports ratios (ours / alternative) and each kernel's
fraction of the machine's own limits (measured in the same run).
"""
