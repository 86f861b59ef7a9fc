"""Session-wide test configuration: Hypothesis profiles and Numba warm-up."""
import os

# No GPU in CI: numba.cuda kernels run under the CUDA simulator unless REFIMPL_REAL_GPU=1
# (the device check script sets it).  Must happen before numba is imported.
if os.environ.get("REFIMPL_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import pytest
from hypothesis import HealthCheck, settings

# ci: derandomized, no deadline, a bounded number of examples (the CI budget).
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# dev: random, no deadline, fewer examples for a quick local loop.
settings.register_profile("dev", deadline=None, max_examples=15, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
# thorough: many examples, for a night run before a release.
settings.register_profile("thorough", deadline=None, max_examples=500, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    """In the controlling process (a plain run, or pytest-xdist's controller before its workers start): compile
    every Numba kernel into the on-disk cache once, in parallel subprocesses (refimpl._numba.warm_all), so that the
    xdist workers load the cache instead of each compiling everything again."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has warmed the cache
        return
    if config.getoption("collectonly", False):
        return
    from refimpl._numba import warm_all

    warm_all()


@pytest.fixture(scope="session", autouse=True)
def _warm_numba_kernels():
    """Every Numba kernel compiled (or loaded from the on-disk cache) once per process, before any test, so JIT time
    never trips a deadline."""
    from refimpl._numba import warm_all

    warm_all(processes=1)
    yield
