"""Rank script: bad input on one rank must make every rank raise the same
clear ValueError (no hang) and change nothing.  Each rank writes what it saw
to <argv[1]>/result.rank<k>.json."""
import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import fastopt as fo  # noqa: E402
from fastopt.distributed import ShardedOptimizer, allreduce_gradients  # noqa: E402

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
X, Y = common.data()
xs, ys = common.part(X[0], rank, 2), common.part(Y[0], rank, 2)
results = {}


def attempt(name, fn, watched):
    """Run fn; record the error message (or None) and whether ``watched``
    arrays kept their values."""
    before = [a.copy() for a in watched]
    try:
        fn()
        message = None
    except ValueError as e:
        message = str(e)
    unchanged = all(np.array_equal(a, b) for a, b in zip(watched, before))
    results[name] = {"error": message, "unchanged": unchanged}


params = common.init(common.MIXED)
opt = ShardedOptimizer(fo.Adam, params, comm, learning_rate=0.01)
_, grads = common.loss_and_grads(params, xs, ys)
opt.step(grads)
state = [a for s in opt.optimizer.state_arrays() for a in s]
watched = params + state

bad = list(grads)
if rank == 1:
    bad[2] = np.zeros((3, 3), dtype=bad[2].dtype)
attempt("sharded_shape", lambda: opt.step(bad), watched)

bad = list(grads)
if rank == 0:
    bad[1] = bad[1].astype(np.float32)
attempt("sharded_dtype", lambda: opt.step(bad), watched)

attempt("sharded_count", lambda: opt.step(grads if rank == 0 else grads[:3]), watched)

bad = list(grads)
if rank == 0:
    bad[3] = None
attempt("sharded_none_mismatch", lambda: opt.step(bad), watched)

if rank == 1:
    opt.learning_rate = 0.5
attempt("sharded_hyper_mismatch", lambda: opt.step(grads), watched)
opt.learning_rate = 0.01

pairs = list(zip(grads, params))
attempt("sharded_pair_twice",
        lambda: opt.apply_gradients(pairs + pairs[:1] if rank == 1 else pairs), watched)
attempt("sharded_pair_unknown",
        lambda: opt.apply_gradients([(grads[0], params[0].copy())] if rank == 0 else pairs),
        watched)

iterations_after_errors = opt.iterations
attempt("sharded_ok_after_errors", lambda: opt.step(grads), [])
results["iterations"] = [iterations_after_errors, opt.iterations]

g = [a.copy() for a in grads]
if rank == 1:
    g[1] = np.zeros(7, dtype=g[1].dtype)
attempt("allreduce_shape", lambda: allreduce_gradients(g, comm), g)

g = [a.copy() for a in grads]
if rank == 0:
    g[0] = g[0].astype(np.float64)
attempt("allreduce_dtype", lambda: allreduce_gradients(g, comm), g)

g = [a.copy() for a in grads]
if rank == 1:
    g[2].flags.writeable = False
attempt("allreduce_readonly", lambda: allreduce_gradients(g, comm), g)

g = [a.copy() for a in grads]
attempt("allreduce_ok_after_errors", lambda: allreduce_gradients(g, comm), [])

def build(name, params, **kwargs):
    try:
        ShardedOptimizer(fo.Adam, params, comm, **kwargs)
        results[name] = None
    except (ValueError, TypeError) as e:
        results[name] = f"{type(e).__name__}: {e}"


wrong_shape = common.init(common.F8)
if rank == 1:
    wrong_shape[1] = np.zeros(11)
build("build_shape", wrong_shape)
other_values = common.init(common.F8, seed=1 + rank)
build("build_values", other_values)
build("build_option", common.init(common.F8), **({"beta_1": 0.8} if rank == 1 else {}))
build("build_bad_kwarg", common.init(common.F8), **({"bogus": 1.0} if rank == 0 else {}))
build("build_threads_may_differ", common.init(common.F8), num_threads=1 + rank)


common.report(sys.argv[1], rank, results)
