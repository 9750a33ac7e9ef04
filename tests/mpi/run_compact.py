"""Rank script: compact state (bfloat16, float16, int8 blocks) on a
ShardedOptimizer against one process stepped with the ranks' gradients summed
in rank order: params and state bit for bit after each step (the shards'
blocks, rounding draws and min_8bit_size follow the whole params), through a
save, consolidate and load into a plain optimizer, and through
load_consolidated and more steps.  Each rank writes <argv[1]>/result.rank<k>.json."""
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
# float32 tensors the shards cut at multiples of 4096 elements; (37,) is under
# min_8bit_size, so its int8 state stays float32 on every layout
SHAPES = [(90, 100), (37,), (60, 130), (5000,)]


def grads(t, r):
    rng = np.random.default_rng([t, r])
    return [(rng.standard_normal(s) * rng.choice([1e-3, 1.0, 20.0], size=s)).astype(np.float32)
            for s in SHAPES]


def mean(t):
    return common.rank_order_mean([grads(t, r) for r in range(world)])


def same(a, b):
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(a, b))


def states(opt):
    return [a for s in opt.state_arrays() for a in s]


CASES = [
    ("Adam int8", fo.Adam, {"state_dtype": "int8", "seed": 3}),
    ("AdamW bfloat16 amsgrad", fo.AdamW, {"state_dtype": "bfloat16", "amsgrad": True,
                                          "convention": "torch"}),
    ("RMSprop float16 centered", fo.RMSprop, {"state_dtype": "float16", "centered": True,
                                              "momentum": 0.5}),
    ("Adam groups", fo.Adam, {"groups": True}),
]
results = {}
for name, cls, kw in CASES:
    kw = dict(kw)
    rng = np.random.default_rng(5)
    init = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in SHAPES]
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
        sharded.step(grads(t, rank))
        ref.step(mean(t))
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
    for t in range(4, 7):
        g = grads(t, rank)
        sharded.step(g)
        again.step(g)
        ref.step(mean(t))
    report["stepped_on"] = same(params, ref_params) and same(again_params, ref_params)
    results[name] = report
common.report(sys.argv[1], rank, results)
