"""Rank script: every case of common.CASES trained with plain data parallelism
(allreduce_gradients + a plain optimizer) and with ShardedOptimizer.  Rank 0
writes every rank's final params, losses and state sizes to argv[2] (.npz),
with the state bytes per rank of Adam over common.MEMORY_SHAPES."""
import json
import os
import sys

import numpy as np
from mpi4py import MPI

import fastopt as fo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from fastopt.distributed import ShardedOptimizer, allreduce_gradients, flat_arrays  # noqa: E402

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
X, Y = common.data()
out = {}
meta = {}
for name, (cls, kwargs, dtypes, options) in common.CASES.items():
    for mode in ("dp", "sharded"):
        params = common.init(dtypes, flat=options.get("flat", False))
        arg = common.params_arg(params, options)
        if mode == "dp":
            opt = cls(arg, **kwargs)
        else:
            opt = ShardedOptimizer(cls, arg, comm, **kwargs)
        gbuf = flat_arrays(common.SHAPES, dtypes[0]) if options.get("flat") else None
        losses = []
        for t in range(common.STEPS):
            common.edit(params, t, options)
            xs, ys = common.part(X[t], rank, world), common.part(Y[t], rank, world)
            loss, grads = common.grads_for(params, xs, ys, t, options, out=gbuf)
            losses.append(comm.allreduce(loss) / world)
            if mode == "dp":
                allreduce_gradients(grads, comm)
            common.apply(opt, grads, params, options)
        entry = {f"p{i}": p.copy() for i, p in enumerate(params)}
        entry["losses"] = np.array(losses)
        gathered = comm.gather(entry, root=0)
        if mode == "sharded":
            info = {"state_nbytes": opt.state_nbytes(), "buffer_nbytes": opt.buffer_nbytes(),
                    "iterations": opt.iterations,
                    "bounds": [b["bounds"] for b in opt.buckets]}
        else:
            info = {"state_nbytes": common.state_bytes(opt), "iterations": opt.iterations}
        infos = comm.gather(info, root=0)
        if rank == 0:
            for r, e in enumerate(gathered):
                for k, v in e.items():
                    out[f"{name}/{mode}/rank{r}/{k}"] = v
            meta[f"{name}/{mode}"] = infos
big = [np.zeros(s, dtype=np.float32) for s in common.MEMORY_SHAPES]
sharded = ShardedOptimizer(fo.Adam, big, comm)
infos = comm.gather({"state_nbytes": sharded.state_nbytes(),
                     "buffer_nbytes": sharded.buffer_nbytes()}, root=0)
if rank == 0:
    meta["memory/sharded"] = infos
    meta["memory/plain"] = common.state_bytes(fo.Adam(big))
if rank == 0:
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(sys.argv[2], **out)
    print(f"ok: {len(common.CASES)} cases x 2 modes on {world} ranks")
