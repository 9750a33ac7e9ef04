"""No memory grows with use: resident set size over 10^5 steps, 10^4 refused
steps and repeated checkpoint round trips stays flat (Linux /proc), and the C
heap's bytes in use are the same after every optimizer's whole life cycle."""
import gc
import os
import platform
import sys

import numpy as np
import pytest

import fastopt as fo

import optim_db
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
    params = [rng.standard_normal(optim_db.param_shape(name, s)).astype(dt) for s, dt in
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
    # per optimizer, in the shape it takes (optim_db.param_shape)
    params = {name: [rng.standard_normal(optim_db.param_shape(name, 3000)) for _ in range(5)]
              for name in NAMES}

    def run(frac):
        for k in range(int(3000 * frac)):
            name = NAMES[k % len(NAMES)]
            opt = build(name, params[name])
            opt.step([np.ones_like(p) for p in params[name]])
            del opt

    _flat(run, "construction")


# ---- an allocation counter: C heap bytes in use (glibc mallinfo2) ----------------------
# RSS moves in pages and arenas; the C heap's count of bytes in use does not move
# at all over a cycle that frees what it allocates, so a leak of one small block
# per optimizer (an engine's scratch array, 48 bytes) shows as 300 blocks.

def _heap_in_use():
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL(None)
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = MallInfo2

    def used():
        info = fn()
        return info.uordblks + info.hblkhd
    return used


HEAP = _heap_in_use()
OPTION_MIXES = [{}, {"use_ema": True, "gradient_accumulation_steps": 2, "clipnorm": 0.5},
                {"global_clipnorm": 1.0, "skip_nonfinite": True}]


def test_heap_flat_over_every_optimizer_life_cycle(tmp_path):
    """Build, step (fast path and every option mix), refuse, save, load,
    rebuild from config and drop each optimizer: the C heap ends where it began."""
    if HEAP is None:
        assert not sys.platform.startswith("linux") or "glibc" not in platform.libc_ver()[0], (
            "glibc without mallinfo2 (< 2.33): the allocation counter cannot run")
        pytest.skip("no glibc mallinfo2 on this platform")
    rng = np.random.default_rng(34)
    params = [rng.standard_normal(n) for n in (7, 300, 3000)]
    grads = [np.ones_like(p) for p in params]
    path = tmp_path / "ck.npz"

    def cycle(reps):
        for _ in range(reps):
            for name in NAMES:
                for mix in OPTION_MIXES:
                    try:
                        opt = build(name, params, **mix)
                    except ValueError:          # an option this optimizer refuses
                        continue
                    opt.step(grads)
                    opt.step([None, grads[1], grads[2]])
                    try:
                        opt.step(grads[:2])
                    except ValueError:
                        pass
                    fo.save(path, opt)
                    fo.load(path, opt)
                    clone = type(opt).from_config(opt.get_config(), params)
                    clone.load_state_dict(opt.state_dict())
                    del opt, clone
        gc.collect()

    cycle(1)                                   # caches, first-use allocations
    growth = []
    for _ in range(3):
        before = HEAP()
        cycle(2)
        growth.append(HEAP() - before)
    TALLY["heap_growth_bytes"] += min(growth)
    # a leak grows the heap in every round (a 48-byte block per optimizer is
    # 2 x 3 x len(NAMES) blocks, > 3 KiB); a cache that fills once grows it in one
    assert min(growth) <= 1024, f"C heap grew by {growth} bytes in rounds of 2 life cycles"
