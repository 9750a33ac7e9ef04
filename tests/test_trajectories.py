"""Every trajectory of the pinned grid (tests/trajectory_grid.py) is bit-for-bit
what was recorded: a change of the Python layer, the engine or a kernel that
moves a single bit of params or state fails here, in every SIMD variant."""
import json

import pytest

import trajectory_grid
from conftest import SIMD_VARIANTS
from fastopt import _core


@pytest.mark.parametrize("simd", SIMD_VARIANTS)
def test_trajectories_match_the_record(simd):
    with open(trajectory_grid.DATA) as f:
        expected = json.load(f)
    _core.set_simd(simd)
    got = trajectory_grid.compute()
    assert set(got) == set(expected), "the grid changed: regenerate it with --write"
    differ = sorted(k for k in expected if got[k] != expected[k])
    assert not differ, f"{len(differ)} of {len(expected)} trajectories moved: {differ[:20]}"
