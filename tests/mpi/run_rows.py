"""Rank script: row gradients under data parallelism.  Every rank draws its own
RowGrads (repeats included) of one table; allreduce_gradients gathers them and
a plain optimizer applies them.  Each rank also steps a twin optimizer with
what one process would be given (all ranks' rows in rank order, values / R,
and the dense grad's mean) and reports whether the two are bit-identical;
ShardedOptimizer must refuse a RowGrad on every rank, changing nothing.
Each rank writes <argv[1]>/result.rank<k>.json."""
import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import fastopt as fo  # noqa: E402
from fastopt.distributed import ShardedOptimizer, allreduce_gradients  # noqa: E402

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
results = {}
for name, cls, dtype in [("SparseAdam", fo.SparseAdam, np.float32), ("Adam", fo.Adam, np.float64),
                         ("SGD", fo.SGD, np.float32)]:
    init = np.random.default_rng(0)
    params = [init.standard_normal((40, 6)).astype(dtype), init.standard_normal(5).astype(dtype)]
    twin_params = [p.copy() for p in params]
    kw = {"momentum": 0.9} if name == "SGD" else {}
    opt, twin = cls(params, **kw), cls(twin_params, **kw)
    for t in range(6):
        rng = np.random.default_rng(100 * t + rank)
        n = 0 if (t == 2 and rank == 1) else int(rng.integers(1, 30))
        idx = rng.integers(0, 40, n).astype(np.int32 if rank else np.int64)
        grads = [fo.RowGrad(idx, rng.standard_normal((n, 6)).astype(dtype)),
                 rng.standard_normal(5).astype(dtype)]
        every = comm.allgather((grads[0].indices.copy(), grads[0].values.copy(),
                                grads[1].copy()))
        returned = allreduce_gradients(grads, comm)
        opt.step(grads)
        dense = every[0][2]
        for e in every[1:]:
            dense = dense + e[2]
        twin.step([fo.RowGrad(np.concatenate([e[0] for e in every]).astype(np.int64),
                              np.concatenate([e[1] for e in every]) / dtype(world)),
                   dense / dtype(world)])
    results[name] = {
        "same": all(a.tobytes() == b.tobytes() for a, b in zip(params, twin_params)),
        "same_state": all(a.tobytes() == b.tobytes() for x, y in
                          zip(opt.state_arrays(), twin.state_arrays()) for a, b in zip(x, y)),
        "replaced": returned is grads and isinstance(grads[0], fo.RowGrad),
        "table": params[0].tolist(),
    }

params = [np.ones((8, 3))]
sharded = ShardedOptimizer(fo.Adam, params, comm)
before = params[0].copy()
try:
    sharded.step([fo.RowGrad(np.array([rank]), np.ones((1, 3)))])
    results["sharded"] = None
except ValueError as e:
    results["sharded"] = str(e)
results["sharded_unchanged"] = bool((params[0] == before).all())
common.report(sys.argv[1], rank, results)
