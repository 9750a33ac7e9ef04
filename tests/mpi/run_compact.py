"""Rank script: compact state (bfloat16, float16, int8 blocks) and 16-bit
params (stochastic and nearest rounding, float32 master copies) on a
ShardedOptimizer against one process stepped with the ranks' gradients summed
in rank order (in float32): params, state and master copies bit for bit after
each step (the shards' blocks, rounding draws and min_8bit_size follow the
whole params), through a save, consolidate and load into a plain optimizer,
and through load_consolidated (and the rank files' own load) and more steps.  Each rank writes
<argv[1]>/result.rank<k>.json."""
import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from ml_dtypes import bfloat16  # noqa: E402

import fastopt as fo  # noqa: E402
from fastopt.distributed import ShardedOptimizer, consolidate  # noqa: E402

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
# float32 tensors the shards cut at multiples of 4096 elements; (37,) is under
# min_8bit_size, so its int8 state stays float32 on every layout
SHAPES = [(90, 100), (37,), (60, 130), (5000,)]


def grads(t, r, dtypes):
    rng = np.random.default_rng([t, r])
    return [(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 20.0], size=s)).astype(d)
            for s, d in zip(SHAPES, dtypes)]


def mean(t, dtypes):
    """What the ranks' gradients reduce to: widened to float32 (16-bit ones),
    summed in rank order, divided by the number of ranks."""
    return common.rank_order_mean([[g.astype(np.float32) if g.itemsize == 2 else g
                                    for g in grads(t, r, dtypes)] for r in range(world)])


def same(a, b):
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b))


def states(opt):
    return [a for s in opt.state_arrays() for a in s] + [
        m for m in opt.master_params if m is not None]


CASES = [
    ("Adam int8", fo.Adam, {"state_dtype": "int8", "seed": 3}),
    ("AdamW bfloat16 amsgrad", fo.AdamW, {"state_dtype": "bfloat16", "amsgrad": True,
                                          "convention": "torch"}),
    ("RMSprop float16 centered", fo.RMSprop, {"state_dtype": "float16", "centered": True,
                                              "momentum": 0.5}),
    ("Adam groups", fo.Adam, {"groups": True}),
    # 16-bit params: params[i] in dtypes[i], the grads of the ranks in gdtypes[i]
    ("AdamW bfloat16 params", fo.AdamW, {"seed": 7, "dtypes": [bfloat16] * 4}),
    # norms over whole tensors from the shards' float32 grads (one Allgatherv of chunk sums)
    ("Adam bfloat16 params global_clipnorm", fo.Adam, {
        "global_clipnorm": 50.0, "skip_nonfinite": True, "dtypes": [bfloat16] * 4}),
    ("SGD bfloat16 master weights", fo.SGD, {"momentum": 0.9, "master_weights": True,
                                             "dtypes": [bfloat16, np.float32, bfloat16,
                                                        np.float32]}),
    ("Adam float16 params int8 state", fo.Adam, {
        "rounding": "nearest", "state_dtype": "int8", "seed": 2,
        "dtypes": [np.float16, np.float16, np.float32, np.float16],
        "gdtypes": [np.float32, np.float16, bfloat16, np.float16]}),
]
results = {}
for name, cls, kw in CASES:
    kw = dict(kw)
    dtypes = kw.pop("dtypes", [np.float32] * len(SHAPES))
    gdtypes = kw.pop("gdtypes", dtypes)
    rng = np.random.default_rng(5)
    init = [(rng.standard_normal(s) * 0.5).astype(d) for s, d in zip(SHAPES, dtypes)]
    params, ref_params = [p.copy() for p in init], [p.copy() for p in init]

    def arg(ps):
        if not kw.get("groups"):
            return ps
        return [{"params": ps[:2], "state_dtype": "int8"},
                {"params": ps[2:], "state_dtype": "bfloat16"}]
    opts = {k: v for k, v in kw.items() if k != "groups"}
    sharded = ShardedOptimizer(cls, arg(params), comm, learning_rate=0.01, **opts)
    ref = cls(arg(ref_params), learning_rate=0.01, **opts)
    report = {}
    for t in range(4):
        sharded.step(grads(t, rank, gdtypes))
        ref.step(mean(t, gdtypes))
    report["stepped"] = same(params, ref_params)
    prefix = os.path.join(sys.argv[1], name.replace(" ", "_"))
    sharded.save(prefix)
    comm.Barrier()
    loaded = None
    if rank == 0:
        try:
            consolidate(prefix, prefix + ".npz")
            plain = cls(arg([p.copy() for p in init]), learning_rate=0.01, **opts)
            fo.load(prefix + ".npz", plain)
            loaded = (same(states(plain), states(ref)) and same(plain.params, ref.params)
                      and [a.dtype for a in states(plain)] == [a.dtype for a in states(ref)])
        except Exception as e:   # noqa: BLE001 - reported, not left to hang the other ranks
            loaded = f"{type(e).__name__}: {e}"
    comm.Barrier()
    report["consolidated"] = comm.bcast(loaded, root=0)
    # a new sharded optimizer from the consolidated file, stepping on
    again_params = [p.copy() for p in init]
    again = ShardedOptimizer(cls, arg(again_params), comm, learning_rate=0.01, **opts)
    again.load_consolidated(prefix + ".npz")
    # and one resumed from the rank files themselves
    resumed_params = [p.copy() for p in init]
    resumed = ShardedOptimizer(cls, arg(resumed_params), comm, learning_rate=0.01, **opts)
    resumed.load(prefix)
    for t in range(4, 7):
        g = grads(t, rank, gdtypes)
        sharded.step(g)
        again.step(g)
        resumed.step(g)
        ref.step(mean(t, gdtypes))
    report["stepped_on"] = same(params, ref_params) and same(again_params, ref_params)
    report["resumed"] = same(resumed_params, ref_params) and same(
        states(resumed.optimizer), states(sharded.optimizer))
    results[name] = report
common.report(sys.argv[1], rank, results)
