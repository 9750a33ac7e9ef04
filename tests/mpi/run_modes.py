"""Rank script: the optimizers' methods that rewrite the parameters from the
state (schedule-free's eval/train, ASGD's use_averaged_params, swap_averages
of SWA), run on a ShardedOptimizer, against one process stepped with the
ranks' gradients summed in rank order: the params after each call, and the
state, averages and kept parameters through a save in that mode,
consolidate and a load into a plain optimizer, bit for bit.  Each rank
writes <argv[1]>/result.rank<k>.json."""
import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import fastopt as fo  # noqa: E402
from fastopt.distributed import ShardedOptimizer, consolidate  # noqa: E402

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
# tensors the shards cut (several 4096-element chunks), in two dtypes
SHAPES = [(90, 100), (37,), (60, 130)]
DTYPES = [np.float64, np.float64, np.float32]


def grads(t, r):
    rng = np.random.default_rng([t, r])
    return [rng.standard_normal(s).astype(d) for s, d in zip(SHAPES, DTYPES)]


def mean(t):
    return common.rank_order_mean([grads(t, r) for r in range(world)])


def same(a, b):
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b))


def save_and_compare(sharded, ref, cls, kw, init, name):
    """Save, consolidate, load into a plain optimizer (rank 0): its state,
    params, mode, kept y and SWA averages equal to ref's."""
    loaded = None
    prefix = os.path.join(sys.argv[1], name.replace(" ", "_"))
    sharded.save(prefix)
    comm.Barrier()
    if rank == 0:
        try:
            consolidate(prefix, prefix + ".npz")
            plain = cls([p.copy() for p in init], learning_rate=0.01, **kw)
            fo.load(prefix + ".npz", plain)
            mine, theirs = plain.state_dict(), ref.state_dict()
            ex, tex = mine["extra"], theirs["extra"]
            loaded = (same([a for s in mine["state"] for a in s],
                           [a for s in theirs["state"] for a in s])
                      and same(plain.params, ref.params)
                      and str(ex.get("mode")) == str(tex.get("mode"))
                      and same(ex.get("train_params", []), tex.get("train_params", []))
                      and same(ex.get("swa", []), tex.get("swa", [])))
        except Exception as e:   # noqa: BLE001 - reported, not left to hang the other ranks
            loaded = f"{type(e).__name__}: {e}"
    comm.Barrier()
    return comm.bcast(loaded, root=0)


results = {}
CASES = [
    ("ScheduleFreeAdamW", fo.ScheduleFreeAdamW, {"convention": "torch", "warmup_steps": 2,
                                                  "weight_decay": 0.01}, ["eval"], ["train"], True),
    ("ScheduleFreeSGD", fo.ScheduleFreeSGD, {"convention": "torch"}, ["eval"], ["train"], True),
    ("ScheduleFreeAdamW keras", fo.ScheduleFreeAdamW, {}, ["eval"], ["train"], True),
    ("ASGD", fo.ASGD, {"t0": 1.0, "lambd": 0.01}, ["use_averaged_params"], [], True),
    # a state is saved unswapped (state_dict refuses while swapped)
    ("SGD swa", fo.SGD, {"momentum": 0.9, "use_swa": True, "swa_start": 1},
     ["swap_averages"], ["swap_averages"], False),
]
for name, cls, kw, calls, back, save_in_mode in CASES:
    rng = np.random.default_rng(5)
    init = [(rng.standard_normal(s) * 0.5).astype(d) for s, d in zip(SHAPES, DTYPES)]
    params, ref_params = [p.copy() for p in init], [p.copy() for p in init]
    sharded = ShardedOptimizer(cls, params, comm, learning_rate=0.01, **kw)
    ref = cls(ref_params, learning_rate=0.01, **kw)
    for t in range(4):
        sharded.step(grads(t, rank))
        ref.step(mean(t))
    report = {"stepped": same(params, ref_params)}
    for c in calls:
        getattr(sharded, c)()
        getattr(ref, c)()
    report["called"] = same(params, ref_params)
    if save_in_mode:
        report["loaded"] = save_and_compare(sharded, ref, cls, kw, init, name)
    for c in back:
        getattr(sharded, c)()
        getattr(ref, c)()
    report["back"] = same(params, ref_params)
    if not save_in_mode:
        report["loaded"] = save_and_compare(sharded, ref, cls, kw, init, name)
    if name != "ASGD":          # ASGD's params now hold the averages: stepping on is the user's call
        for t in range(4, 6):
            sharded.step(grads(t, rank))
            ref.step(mean(t))
        report["stepped_again"] = same(params, ref_params)
    results[name] = report
try:
    getattr(ShardedOptimizer(fo.Adam, [np.ones(3)], comm), "eval")
    results["no eval"] = None
except AttributeError as e:
    results["no eval"] = str(e)
common.report(sys.argv[1], rank, results)
