"""Rank script: sharded checkpoints of optimizers whose state dict has an
``extra`` beyond the state arrays (Nadam's momentum products per group or
per parameter, moving averages, gradient accumulators saved between two
micro-steps, skipped-step counters).  For each case: train, save, consolidate
(rank 0), then (a) fo.load the consolidated file into one process and
compare its whole state dict with one process trained alike, and (b)
load_consolidated it into a fresh ShardedOptimizer, train on, and compare
with that process trained on.  Reports the differences to
<argv[1]>/result.rank<k>.json."""
import os
import sys

import numpy as np
from mpi4py import MPI

import fastopt as fo
from fastopt.distributed import ShardedOptimizer, consolidate

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

SHAPES = [(60, 100), (7,), (3000,)]
CASES = {
    "nadam_keras_groups_ema": (fo.Nadam, dict(learning_rate=0.01, use_ema=True), True),
    "nadam_torch": (fo.Nadam, dict(convention="torch", learning_rate=0.01), False),
    "sgd_accumulation_skip": (fo.SGD, dict(learning_rate=0.01, momentum=0.9,
                                           gradient_accumulation_steps=3,
                                           skip_nonfinite=True), False),
}
SAVE_AT, STEPS = 4, 7
comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
directory = sys.argv[1]


def grads(t, r, nan):
    rng = np.random.default_rng([t, r])
    g = [rng.standard_normal(s) for s in SHAPES]
    if nan and t == 2 and r == 0:
        g[2][1] = np.nan                     # a step skip_nonfinite skips
    return g


def mean(t, nan):
    parts = [grads(t, r, nan) for r in range(world)]
    out = []
    for i in range(len(SHAPES)):
        acc = parts[0][i].copy()
        for r in range(1, world):
            acc += parts[r][i]
        out.append(acc / world)
    return out


def init():
    rng = np.random.default_rng(5)
    return [rng.standard_normal(s) for s in SHAPES]


def arg(params, groups):
    if groups:
        return [{"params": params[:1]}, {"params": params[1:], "learning_rate": 0.003}]
    return params


def differences(a, b, where=""):
    """Paths at which two state dicts (nested dicts, lists, arrays) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only on one side" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += differences(a[k], b[k], f"{where}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        same = a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
        return [] if same else [f"{where}: arrays differ"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


problems = {}
for name, (cls, kwargs, groups) in CASES.items():
    bad = []
    nan = bool(kwargs.get("skip_nonfinite"))
    params, ref_params = init(), init()
    sharded = ShardedOptimizer(cls, arg(params, groups), comm, **kwargs)
    ref = cls(arg(ref_params, groups), **kwargs)
    for t in range(SAVE_AT):
        sharded.step(grads(t, rank, nan))
        ref.step(mean(t, nan))
    prefix = os.path.join(directory, name)
    sharded.save(prefix)
    out = prefix + ".single.npz"
    if rank == 0:
        consolidate(prefix, out)
        plain_params = [np.zeros(s) for s in SHAPES]
        plain = cls(arg(plain_params, groups), **kwargs)
        fo.load(out, plain)
        bad += differences(plain.state_dict(), ref.state_dict(), "fo.load(consolidated)")
        bad += [f"params[{i}]" for i, (p, q) in enumerate(zip(plain_params, ref_params))
                if not np.array_equal(p, q)]
    comm.Barrier()
    fresh = [np.zeros(s) for s in SHAPES]
    again = ShardedOptimizer(cls, arg(fresh, groups), comm, **kwargs)
    again.load_consolidated(out)
    for t in range(SAVE_AT, STEPS):
        again.step(grads(t, rank, nan))
        ref.step(mean(t, nan))
    bad += [f"load_consolidated, then trained: params[{i}]"
            for i, (p, q) in enumerate(zip(fresh, ref_params)) if not np.array_equal(p, q)]
    if nan and ref.skipped_steps != 1:
        bad.append("the reference did not skip the step with a NaN")
    for attr in ("iterations", "micro_steps", "skipped_steps"):
        if getattr(again.optimizer, attr) != getattr(ref, attr):
            bad.append(f"load_consolidated, then trained: {attr}")
    problems[name] = bad
common.report(directory, rank, problems)
