"""Rank script: row gradients under data parallelism.  Every rank draws its own
RowGrads (repeats included) of one table; allreduce_gradients gathers them and
a plain optimizer applies them.  Each rank also steps a twin optimizer with
what one process would be given (all ranks' rows in rank order, values / R,
and the dense grad's mean) and reports whether the two are bit-identical.
The same for ShardedOptimizer with row_params (tables cut between the ranks,
at whole rows): its params, and its state through a save, consolidate and
load into a plain optimizer, against the one-process twin; then
load_consolidated and more steps.  Refusals (a RowGrad for a table not in
row_params, with clipnorm, RowGrad on one rank and dense on the other) must
change nothing.  Each rank writes <argv[1]>/result.rank<k>.json."""
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



def draw(t, shapes, dtype, empty_at=None, dense_at=None):
    """This rank's grads at step t: RowGrads (repeats included; none at all
    on rank 1 at step ``empty_at``) for the two tables (dense at step
    ``dense_at``), dense for the rest."""
    rng = np.random.default_rng(1000 * t + rank)
    out = []
    for k, shape in enumerate(shapes):
        if k < 2 and t != dense_at:
            n = 0 if (t == empty_at and rank == 1) else int(rng.integers(1, 40))
            idx = rng.integers(0, shape[0], n)
            if k == 0 and n > 1:
                idx[-1] = shape[0] - 1 - rank            # rows on both sides of the cut
            out.append(fo.RowGrad(idx.astype(np.int32 if rank else np.int64),
                                  rng.standard_normal((n, shape[1])).astype(dtype)))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def one_process(every, dtype):
    """What one process is given: every rank's rows in rank order (values / R)
    and the dense grads summed in rank order, then / R."""
    grads = []
    for k, g in enumerate(every[0]):
        if isinstance(g, fo.RowGrad):
            grads.append(fo.RowGrad(
                np.concatenate([e[k].indices for e in every]).astype(np.int64),
                np.concatenate([e[k].values for e in every]) / dtype(world)))
        else:
            dense = every[0][k]
            for e in every[1:]:
                dense = dense + e[k]
            grads.append(dense / dtype(world))
    return grads


# (12000, 6): two ranks cut it at row 10240 (61440 elements, a multiple of
# lcm(4096, 6) = 12288); (700, 64): whole rows every 4096 elements; then dense
# params of both kinds
SHAPES = [(12000, 6), (700, 64), (5,), (30, 7)]
for name, cls, dtype, kw in [
        ("sharded SparseAdam", fo.SparseAdam, np.float32, {}),
        ("sharded Adam", fo.Adam, np.float64, {"weight_decay": 0.01, "convention": "torch"}),
        ("sharded SGD", fo.SGD, np.float32, {"momentum": 0.9, "convention": "keras"}),
        ("sharded Adagrad", fo.Adagrad, np.float64, {"use_ema": True})]:
    init = np.random.default_rng(0)
    params = [init.standard_normal(s).astype(dtype) for s in SHAPES]
    twin_params = [p.copy() for p in params]
    sharded = ShardedOptimizer(cls, params, comm, row_params=[0, 1], learning_rate=0.01, **kw)
    twin = cls(twin_params, learning_rate=0.01, **kw)
    pieces = [(p.tensor, p.start, p.length) for p in sharded._pieces]
    for t in range(5):
        grads = draw(t, SHAPES, dtype, empty_at=2)
        every = comm.allgather(grads)
        sharded.step(grads)
        twin.step(one_process(every, dtype))
    same = all(a.tobytes() == b.tobytes() for a, b in zip(params, twin_params))
    prefix = os.path.join(sys.argv[1], name.replace(" ", "_"))
    sharded.save(prefix)
    comm.Barrier()
    same_state = None
    if rank == 0:
        from fastopt.distributed import consolidate
        consolidate(prefix, prefix + ".npz")
        plain = cls([p.copy() for p in params], learning_rate=0.01, **kw)
        fo.load(prefix + ".npz", plain)
        same_state = all(a.tobytes() == b.tobytes() for x, y in
                         zip(plain.state_arrays(), twin.state_arrays()) for a, b in zip(x, y))
    comm.Barrier()
    # a new sharded optimizer from the consolidated file continues as the twin
    again = ShardedOptimizer(cls, params, comm, row_params=[0, 1], learning_rate=0.01, **kw)
    again.load_consolidated(prefix + ".npz")
    for t in range(5, 8):
        grads = draw(t, SHAPES, dtype, dense_at=6)       # a table's dense grad too
        every = comm.allgather(grads)
        again.step(grads)
        twin.step(one_process(every, dtype))
    results[name] = {
        "same": same, "same_state": same_state, "pieces": pieces,
        "same_after_load": all(a.tobytes() == b.tobytes() for a, b in zip(params, twin_params)),
    }

# refusals: nothing changes, on every rank
params = [np.ones((8, 3)), np.ones(4)]
refusals = {}
for case, kw, grads in [
        ("not a table", {}, [fo.RowGrad(np.array([rank]), np.ones((1, 3))), np.ones(4)]),
        ("clipnorm", {"row_params": [0], "clipnorm": 1.0},
         [fo.RowGrad(np.array([rank]), np.ones((1, 3))), np.ones(4)]),
        ("kinds differ", {"row_params": [0]},
         [fo.RowGrad(np.array([1]), np.ones((1, 3))) if rank == 0 else np.ones((8, 3)),
          np.ones(4)]),
        ("row out of range", {"row_params": [0]},
         [fo.RowGrad(np.array([8 if rank else 0]), np.ones((1, 3))), np.ones(4)]),
        ("bad width", {"row_params": [0]},
         [fo.RowGrad(np.array([0]), np.ones((1, 2))), np.ones(4)])]:
    sharded = ShardedOptimizer(fo.Adam, params, comm, **kw)
    before = [p.copy() for p in params]
    try:
        sharded.step(grads)
        refusals[case] = None
    except ValueError as e:
        refusals[case] = str(e)
    refusals[case + " unchanged"] = (all((p == b).all() for p, b in zip(params, before))
                                     and sharded.iterations == 0)
try:
    ShardedOptimizer(fo.Adam, params, comm, row_params=[1])
    refusals["1-D table"] = None
except ValueError as e:
    refusals["1-D table"] = str(e)
results["refusals"] = refusals
common.report(sys.argv[1], rank, results)
