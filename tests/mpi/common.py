"""Shared by the MPI rank scripts and tests/test_distributed.py: a small MLP,
its data, the optimizer cases and the single-process references.

Gradients of a rank are means over that rank's part of the global batch.  The
"rank-order" reference averages the per-part gradients exactly as an MPI sum
of two ranks does ((g0 + g1) / 2), so data-parallel runs must match it bit
for bit; the "global" reference takes the gradient of the whole batch at once
(another summation order), which they match to rounding.
"""
import json
import os

import numpy as np

import fastopt as fo
from fastopt import schedules
from fastopt.distributed import flat_arrays

D_IN, HIDDEN, D_OUT = 6, 10, 3
SHAPES = [(D_IN, HIDDEN), (HIDDEN,), (HIDDEN, D_OUT), (D_OUT,)]
BATCH = 32          # global batch
STEPS = 12


def data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((STEPS, BATCH, D_IN))
    W = rng.standard_normal((D_IN, D_OUT))
    Y = np.tanh(X @ W) + 0.1 * rng.standard_normal((STEPS, BATCH, D_OUT))
    return X, Y


def init(dtypes, flat=False, seed=1):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) * 0.5 for s in SHAPES]
    if flat:
        assert len(set(dtypes)) == 1
        out = flat_arrays(SHAPES, dtypes[0])
        for p, v in zip(out, values):
            p[...] = v
        return out
    return [v.astype(d) for v, d in zip(values, dtypes)]


def loss_and_grads(params, X, Y, out=None):
    """Mean squared error of a tanh MLP and its gradients (in the params' dtypes)."""
    W1, b1, W2, b2 = (np.asarray(p, dtype=np.float64) for p in params)
    H = np.tanh(X @ W1 + b1)
    P = H @ W2 + b2
    n = X.shape[0]
    E = P - Y
    loss = float(np.sum(E * E) / (n * D_OUT))
    dP = 2.0 * E / (n * D_OUT)
    gW2 = H.T @ dP
    gb2 = dP.sum(axis=0)
    dH = (dP @ W2.T) * (1.0 - H * H)
    gW1 = X.T @ dH
    gb1 = dH.sum(axis=0)
    grads = [gW1, gb1, gW2, gb2]
    if out is None:
        return loss, [g.astype(p.dtype) for g, p in zip(grads, params)]
    for o, g in zip(out, grads):
        o[...] = g
    return loss, out


def part(X, rank, world):
    n = X.shape[0] // world
    return X[rank * n:(rank + 1) * n]


F8 = ["float64"] * 4
F4 = ["float32"] * 4
MIXED = ["float32", "float64", "float32", "float64"]

# name -> (class, kwargs, dtypes, options); options: groups, none (skip
# params[1] on some steps), flat (params and grads from flat_arrays), edit (the
# user rescales params[0] between two steps), pairs (apply_gradients)
CASES = {
    "sgd_keras_nesterov": (fo.SGD, dict(learning_rate=0.05, momentum=0.9, nesterov=True), F8,
                           {"pairs": True}),
    "sgd_torch_none": (fo.SGD, dict(convention="torch", learning_rate=0.05, momentum=0.9,
                                    dampening=0.1, weight_decay=1e-3), F8, {"none": True}),
    "adam_keras_amsgrad": (fo.Adam, dict(learning_rate=0.02, amsgrad=True), F8, {"edit": True}),
    "adam_torch_groups_none": (fo.Adam, dict(convention="torch", learning_rate=0.02), F8,
                               {"groups": True, "none": True}),
    "adamw_torch_schedule_f32": (fo.AdamW, dict(
        convention="torch", learning_rate=schedules.ExponentialDecay(0.02, 4, 0.5),
        clipvalue=0.5), F4, {}),
    "adamw_keras_mixed": (fo.AdamW, dict(learning_rate=0.02, weight_decay=0.01), MIXED, {}),
    "adam_keras_flat": (fo.Adam, dict(learning_rate=0.02), F8, {"flat": True, "edit": True}),
    # sharded by whole tensors (factored state): the two matrices on different ranks
    "adafactor_torch_whole": (fo.Adafactor, dict(convention="torch", learning_rate=0.02,
                                                 weight_decay=0.01), F8, {"none": True}),
}

# A model large enough that the shard alignment is negligible: state bytes per rank.
MEMORY_SHAPES = [(1000, 1000), (1000,), (1000, 10), (10,)]


def edit(params, step, options):
    """What a user may do between steps (on every rank): change the weights."""
    if options.get("edit") and step == 6:
        params[0] *= 0.5


def apply(opt, grads, params, options):
    if options.get("pairs"):
        opt.apply_gradients(zip(grads, params))
    else:
        opt.step(grads)


def params_arg(params, options):
    if options.get("groups"):
        return [{"params": params[:2]}, {"params": params[2:], "learning_rate": 0.005}]
    return params


def grads_for(params, X, Y, step, options, out=None):
    loss, grads = loss_and_grads(params, X, Y, out)
    grads = list(grads)
    if options.get("none") and step % 3 == 1:
        grads[1] = None
    return loss, grads


def run_reference(name, world, mode):
    """Final params of a single process.  mode "rank-order": the gradient is
    the sum of the per-rank gradients in rank order divided by ``world``;
    "global": the gradient of the whole batch.  Returns (params, losses)."""
    cls, kwargs, dtypes, options = CASES[name]
    X, Y = data()
    params = init(dtypes)
    opt = cls(params_arg(params, options), **kwargs)
    losses = []
    for t in range(STEPS):
        edit(params, t, options)
        if mode == "global":
            loss, grads = grads_for(params, X[t], Y[t], t, options)
        else:
            parts = [grads_for(params, part(X[t], r, world), part(Y[t], r, world), t, options)
                     for r in range(world)]
            loss = sum(p[0] for p in parts) / world
            grads = []
            for i in range(len(params)):
                if parts[0][1][i] is None:
                    grads.append(None)
                    continue
                acc = parts[0][1][i].copy()
                for r in range(1, world):
                    acc += parts[r][1][i]
                grads.append(acc / world)
        losses.append(loss)
        apply(opt, grads, params, options)
    return params, losses


def state_bytes(opt):
    return int(sum(a.nbytes for s in opt.state for a in s.values()))


def report(directory, rank, obj):
    """Write one rank's findings as JSON (not to stdout, where the launcher may
    interleave the ranks' long lines)."""
    with open(os.path.join(directory, f"result.rank{rank}.json"), "w") as f:
        json.dump(obj, f)


def rank_order_mean(parts):
    """Per tensor, the ranks' gradients ``parts[r][i]`` summed in rank order
    and divided by the number of ranks, as the sharded step reduces them."""
    out = []
    for i in range(len(parts[0])):
        acc = parts[0][i].copy()
        for p in parts[1:]:
            acc += p[i]
        out.append(acc / len(parts))
    return out
