"""No memory grows with use: resident set size over 10^5 steps, 10^4 refused
steps and repeated checkpoint round trips stays flat (Linux /proc)."""
import gc
import os

import numpy as np
import pytest

import fastopt as fo

from robust_util import NAMES, TALLY, build

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="RSS is read from /proc/self/statm")

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STEPS = 100_000
# Allocator noise (arenas, numpy's small-array cache) is well under this; a leak of
# even 8 bytes per step would be 800 kB over 10^5 steps and 16 bytes 1.6 MB.
BOUND = 512 * 1024


def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _flat(run, what, warm=0.1):
    """Run ``run(fraction)`` once for warm-up, then measure the growth over the rest."""
    run(warm)
    before = rss()
    run(1.0 - warm)
    grown = rss() - before
    TALLY["rss_growth_bytes"] += max(grown, 0)
    assert grown < BOUND, f"{what}: RSS grew by {grown} bytes"
    return grown


@pytest.mark.parametrize("name", NAMES)
def test_rss_flat_over_1e5_steps(name):
    rng = np.random.default_rng(31)
    params = [rng.standard_normal(s).astype(dt) for s, dt in
              [((4, 4), np.float32), ((7,), np.float64), ((), np.float32)]]
    # a schedule and a None grad keep the per-step Python paths busy
    opt = build(name, params, learning_rate=lambda step: 1e-3 / (1 + step * 1e-5))
    grads = [np.asarray(rng.standard_normal(p.shape) * 1e-3, dtype=p.dtype) for p in params]
    skip = [grads[0], None, grads[2]]

    def run(frac):
        for k in range(int(STEPS * frac)):
            opt.step(grads if k % 7 else skip)

    _flat(run, name)
    assert opt.iterations == STEPS
    TALLY["steps_measured"] += opt.iterations


def test_rss_flat_over_refused_steps_and_checkpoints(tmp_path):
    rng = np.random.default_rng(32)
    params = [rng.standard_normal((8, 8)), rng.standard_normal(5).astype(np.float32)]
    opt = fo.Adam(params)
    bad = [
        [params[0].astype(np.float32), np.zeros(5, np.float32)],      # dtype
        [np.zeros((8, 9)), np.zeros(5, np.float32)],                   # shape
        [params[0], np.zeros(5, np.float32)],                          # alias
        [np.zeros((8, 8)).T, np.zeros(5, np.float32)],                 # strides
        [np.zeros((8, 8))],                                            # count
    ]

    def refused(frac):
        for k in range(int(10_000 * frac)):
            try:
                opt.step(bad[k % len(bad)])
            except (TypeError, ValueError):
                TALLY["inputs_tried"] += 1
                TALLY["failures_survived"] += 1
            else:
                raise AssertionError("bad input accepted")

    _flat(refused, "refused steps")
    path = tmp_path / "ck.npz"

    def roundtrips(frac):
        for _ in range(int(150 * frac)):
            fo.save(path, opt)
            fo.load(path, opt)

    _flat(roundtrips, "save/load")
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_rss_flat_over_optimizer_construction():
    """Building and dropping optimizers (engines allocate C work lists) frees everything."""
    rng = np.random.default_rng(33)
    params = [rng.standard_normal(3000) for _ in range(5)]

    def run(frac):
        for k in range(int(3000 * frac)):
            opt = build(NAMES[k % len(NAMES)], params)
            opt.step([np.ones(3000)] * 5)
            del opt

    _flat(run, "construction")
