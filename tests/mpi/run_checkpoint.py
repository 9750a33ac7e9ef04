"""Rank script: sharded checkpoints.  Trains common.CASES[argv[2]] for SPLIT
steps, saves to <argv[1]>/ckpt, trains to the end (trajectory A); then a fresh
ShardedOptimizer loads the checkpoint and trains the same steps (B); then one
that loads the consolidated checkpoint (C).  Also checks that a rank file from
another save is refused on every rank.  Rank 0 writes A/B/C to
<argv[1]>/result.npz; every rank reports to <argv[1]>/result.rank<k>.json."""
import os
import shutil
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from fastopt.distributed import ShardedOptimizer, consolidate  # noqa: E402

SPLIT = 5
comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
directory, name = sys.argv[1], sys.argv[2]
cls, kwargs, dtypes, options = common.CASES[name]
X, Y = common.data()
prefix = os.path.join(directory, "ckpt")


def train(opt, params, start, stop, save_at=None):
    for t in range(start, stop):
        if t == save_at:
            opt.save(prefix)
        xs, ys = common.part(X[t], rank, world), common.part(Y[t], rank, world)
        _, grads = common.grads_for(params, xs, ys, t, options)
        opt.step(grads)


def fresh():
    params = common.init(dtypes, seed=99)     # different values: load must overwrite them
    return params, ShardedOptimizer(cls, common.params_arg(params, options), comm, **kwargs)


params_a = common.init(dtypes)
opt_a = ShardedOptimizer(cls, common.params_arg(params_a, options), comm, **kwargs)
train(opt_a, params_a, 0, common.STEPS, save_at=SPLIT)
opt_a.save(os.path.join(directory, "later"))

params_b, opt_b = fresh()
opt_b.load(prefix)
assert opt_b.iterations == SPLIT
train(opt_b, params_b, SPLIT, common.STEPS)

if rank == 0:
    consolidate(prefix, os.path.join(directory, "consolidated.npz"))
comm.Barrier()
params_c, opt_c = fresh()
opt_c.load_consolidated(os.path.join(directory, "consolidated.npz"))
train(opt_c, params_c, SPLIT, common.STEPS)

# A manifest with a rank file from another save (a torn save): refused everywhere.
mixed = os.path.join(directory, "mixed")
if rank == 0:
    os.makedirs(mixed, exist_ok=True)
    shutil.copy(prefix + ".manifest.json", os.path.join(mixed, "ckpt.manifest.json"))
    shutil.copy(prefix + ".rank0.npz", os.path.join(mixed, "ckpt.rank0.npz"))
    shutil.copy(os.path.join(directory, "later.rank1.npz"), os.path.join(mixed, "ckpt.rank1.npz"))
comm.Barrier()
params_d, opt_d = fresh()
before = [p.copy() for p in params_d]
try:
    opt_d.load(os.path.join(mixed, "ckpt"))
    torn = None
except ValueError as e:
    torn = str(e)
torn_unchanged = all(np.array_equal(p, q) for p, q in zip(params_d, before)) and \
    opt_d.iterations == 0

out = {"state_nbytes": opt_a.state_nbytes(), "torn_error": torn,
       "torn_unchanged": torn_unchanged}
common.report(directory, rank, out)
gathered = comm.gather([[p.copy() for p in ps] for ps in (params_a, params_b, params_c)], root=0)
if rank == 0:
    arrays = {}
    for r, runs in enumerate(gathered):
        for label, ps in zip("ABC", runs):
            for i, p in enumerate(ps):
                arrays[f"rank{r}/{label}/p{i}"] = p
    np.savez(os.path.join(directory, "result.npz"), **arrays)
