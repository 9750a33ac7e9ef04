"""Rank script: every optimizer of tests/optim_db.py in each of its
conventions, with each option set of OPTIONS, as a ShardedOptimizer on this
launch's ranks and as one plain optimizer stepped with the same gradients
summed in rank order ((g0 + g1) + g2 ...) / world.  Every rank compares its
params (all of them), its pieces' state, moving averages and counters with
the single process's, bit for bit, and reports the cases that differ and its
state bytes to <argv[1]>/result.rank<k>.json.

The layout has tensors of several 4096-element chunks that the shards cut
(at 1, 2 and 3 ranks), a float64 bucket and a float32 one, and a small tensor
that per-tensor clipping leaves alone."""
import os
import sys

import numpy as np
from mpi4py import MPI

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import common  # noqa: E402
import optim_db  # noqa: E402
from fastopt.distributed import ShardedOptimizer  # noqa: E402

SHAPES = [(50, 200), (37,), (70, 130), (3, 3), (90, 100)]
DTYPES = [np.float64, np.float64, np.float32, np.float32, np.float32]
STEPS = 6

# name -> (options, what the gradients do): "nonfinite" puts a NaN and an inf
# into one rank's gradients on two steps; "none" skips params[1] every third step
OPTIONS = {
    "plain": ({}, ()),
    "clipnorm": ({"clipnorm": 5.0}, ()),
    "global_clipnorm": ({"global_clipnorm": 100.0}, ("none",)),
    "skip_nonfinite": ({"skip_nonfinite": True}, ("nonfinite",)),
    "clipnorm_skip_accum": ({"clipnorm": 5.0, "skip_nonfinite": True,
                             "gradient_accumulation_steps": 2}, ("nonfinite",)),
    "global_ema_groups": ({"global_clipnorm": 100.0, "use_ema": True}, ("groups",)),
    # float64 gradients near 1e160: the sums of squares overflow, and the norms
    # are recomputed with scaling (fo_norm_scaled) across the shards
    "clipnorm_overflow": ({"clipnorm": 5.0}, ("huge",)),
    "global_clipnorm_overflow": ({"global_clipnorm": 100.0}, ("huge",)),
}


def cases():
    for entry in sorted(optim_db.optim_db, key=lambda e: e.name):
        for conv in entry.conventions:
            for oname in OPTIONS:
                yield entry, conv, oname


def shapes(name):
    """SHAPES as optimizer ``name`` takes them (Muon: matrices)."""
    return [optim_db.param_shape(name, s) for s in SHAPES]


def init(name):
    rng = np.random.default_rng(3)
    return [(rng.standard_normal(s) * 0.5).astype(d) for s, d in zip(shapes(name), DTYPES)]


def rank_grads(step, rank, world, what, name):
    rng = np.random.default_rng([step, rank, world])
    grads = [rng.standard_normal(s).astype(d) for s, d in zip(shapes(name), DTYPES)]
    if "nonfinite" in what and rank == world - 1:
        if step == 2:
            grads[4].reshape(-1)[7000] = np.nan      # in the last shard at 3 ranks
        if step == 4:
            grads[0].reshape(-1)[5] = np.inf         # in the first shard
    if "none" in what and step % 3 == 1:
        grads[1] = None
    if "huge" in what:
        grads[0] *= 1e160
        grads[1] *= 1e160
    return grads


def mean_grads(step, world, what, name):
    parts = [rank_grads(step, r, world, what, name) for r in range(world)]
    out = []
    for i in range(len(SHAPES)):
        if parts[0][i] is None:
            out.append(None)
            continue
        acc = parts[0][i].copy()
        for r in range(1, world):
            acc += parts[r][i]
        out.append(acc / world)
    return out


def arg(params, what):
    if "groups" in what:
        return [{"params": params[:2]}, {"params": params[2:], "learning_rate": 0.002}]
    return params


def run():
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    bad, count, state_bytes, whole = [], 0, {}, {}
    for entry, conv, oname in cases():
        options, what = OPTIONS[oname]
        kwargs = dict(entry.stateful, convention=conv, learning_rate=0.01, **options)
        case = f"{entry.name}/{conv}/{oname}"
        count += 1
        params, ref_params = init(entry.name), init(entry.name)
        sharded = ShardedOptimizer(entry.cls, arg(params, what), comm, **kwargs)
        ref = entry.cls(arg(ref_params, what), **kwargs)
        for t in range(STEPS):
            sharded.step(rank_grads(t, rank, world, what, entry.name))
            ref.step(mean_grads(t, world, what, entry.name))
        problems = []
        for i, (p, q) in enumerate(zip(params, ref_params)):
            if not np.array_equal(p, q):
                problems.append(f"params[{i}]")
        inner = sharded.optimizer
        for k, piece in enumerate(sharded._pieces):
            # a piece's state is the cut of the tensor's; whole tensors (a
            # factored state's rows and columns) are compared whole
            cut = (slice(None) if sharded._whole else
                   slice(piece.start, piece.start + piece.length))
            for j, (a, b) in enumerate(zip(inner.state_arrays()[k],
                                           ref.state_arrays()[piece.tensor])):
                if not np.array_equal(a.reshape(-1), b.reshape(-1)[cut]):
                    problems.append(f"state {j} of params[{piece.tensor}][{piece.start}:]")
            if options.get("use_ema") and not np.array_equal(
                    inner.averages[k].reshape(-1), ref.averages[piece.tensor].reshape(-1)[cut]):
                problems.append(f"average of params[{piece.tensor}]")
        for attr in ("iterations", "skipped_steps", "micro_steps"):
            if getattr(inner, attr) != getattr(ref, attr):
                problems.append(f"{attr} {getattr(inner, attr)} != {getattr(ref, attr)}")
        if "nonfinite" in what and ref.skipped_steps == 0:
            problems.append("the reference skipped no step")
        if problems:
            bad.append(f"{case}: {', '.join(problems)}")
        if oname == "plain":
            state_bytes[f"{entry.name}/{conv}"] = [sharded.state_nbytes(),
                                                   common.state_bytes(ref)]
            if sharded._whole:
                whole[entry.name] = [[p.tensor, p.start, p.length] for p in sharded._pieces]
    common.report(sys.argv[1], rank, {"cases": count, "bad": bad, "state_bytes": state_bytes,
                                      "bounds": [b["bounds"] for b in sharded.buckets],
                                      "whole": whole})


run()
