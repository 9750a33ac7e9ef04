import numpy as np
import pytest

import fastopt as fo
from fastopt import _core


@pytest.fixture(autouse=True)
def _restore_runtime():
    """Tests may force a SIMD variant, thread count or threshold; put them back."""
    simd = _core.get_simd()
    threshold = _core.parallel_threshold()
    yield
    _core.set_simd(simd)
    _core.set_parallel_threshold(threshold)
    fo.set_num_threads(None)


SIMD_VARIANTS = _core.simd_supported()


def expected_team(threads):
    """The team a step asked for ``threads`` must run with once its work is
    above the threshold: the request, capped by the machine (a serial build
    runs everything on one thread, and CI refuses such a build)."""
    return min(threads, _core.max_team()) if _core.openmp() else 1


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def pytest_addoption(parser):
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the long soak tests (tests/test_faults.py)")
    parser.addoption("--soak-steps", type=int, default=100000,
                     help="steps per optimizer of the long soak (default 100000)")


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: long soak test, run with --soak")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long soak: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
