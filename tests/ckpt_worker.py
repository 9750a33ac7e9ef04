"""Checkpoint scenarios shared by tests/test_checkpoint.py and the separate
processes it starts (run as a script: ``python ckpt_worker.py MODE ...``).

* ``resume DIR K``: every configuration of :func:`configurations` runs K
  steps of :func:`run` and is saved to ``DIR/<id>.npz``; the test loads each
  in ITS process and continues.
* ``writer PATH N``: saves an optimizer over N float32 elements again and again
  (after each step ``w == iterations``), printing each completed version; the
  test kills it with SIGKILL at random moments.
"""
import os
import sys

import numpy as np

import fastopt as fo
from fastopt import schedules
from fastopt.optimizers import REGISTRY
import optim_db
from robust_util import accepts, conventions, stateful_kwargs

SHAPES = [(5, 3), (7,), (2, 2, 2)]
NSTEPS = 12


def configurations():
    """``{id: (class name, convention, variant)}`` for every registered optimizer,
    each convention it has and each schedule variant (plus EMA where available)."""
    out = {}
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        for conv in conventions(cls):
            variants = ["const", "plateau", "onecycle", "groups"]
            if accepts(cls, conv, use_ema=True):
                variants.append("ema")
            for v in variants:
                out[f"{name}-{conv}-{v}"] = (name, conv, v)
    return out


def build(name, conv, variant):
    """A fresh optimizer for one configuration over fresh params (the same
    initial values in every process) and the schedule that needs reports."""
    cls = REGISTRY[name]
    hyper = cls.defaults(conv)
    rng = np.random.default_rng(2024)
    params = [rng.standard_normal(optim_db.param_shape(name, s)).astype(
        np.float32 if k % 2 else np.float64) for k, s in enumerate(SHAPES)]
    kw = stateful_kwargs(cls, conv)
    plateau = None
    base_lr = 0.01
    if variant == "plateau":
        plateau = schedules.ReduceOnPlateau(base=schedules.ExponentialDecay(base_lr, 5, 0.9),
                                            factor=0.5, patience=1, convention=conv)
        kw["learning_rate"] = plateau
    elif variant == "onecycle":
        oc = schedules.OneCycle(0.05, NSTEPS)
        kw["learning_rate"] = oc
        for key in ("momentum", "beta_1"):
            if key in hyper:
                kw[key] = oc.momentum
                break
    elif variant == "ema":
        kw.update(use_ema=True, learning_rate=base_lr)
    else:
        kw["learning_rate"] = base_lr
    if variant == "groups":
        return cls([{"params": params[:1]}, {"params": params[1:], "learning_rate": 0.003}],
                   convention=conv, **kw), params, plateau
    return cls(params, convention=conv, **kw), params, plateau


def grads_at(step, params):
    """The grads of a step (None skips params[1] on step 3, so torch's per-param
    counts diverge from the global one)."""
    rng = np.random.default_rng(1000 + step)
    g = [(rng.standard_normal(p.shape) * 0.5).astype(p.dtype) for p in params]
    if step == 3:
        g[1] = None
    return g


def run(opt, params, plateau, start, stop):
    for step in range(start, stop):
        opt.step(grads_at(step, params))
        if plateau is not None:
            # a deterministic metric that stops improving now and then
            plateau.report(float(sum(np.sum(p.astype(np.float64) ** 2) for p in params))
                           % 3.0 + (step % 4 == 0))


def _resume(directory, k):
    for cid, cfg in configurations().items():
        opt, params, plateau = build(*cfg)
        run(opt, params, plateau, 0, k)
        fo.save(os.path.join(directory, cid + ".npz"), opt)
    print("saved", len(configurations()), flush=True)


def _writer(path, n):
    w = np.zeros(n, dtype=np.float32)
    opt = fo.SGD([w], learning_rate=1.0)
    minus_one = np.full(n, -1.0, dtype=np.float32)
    while True:
        opt.step([minus_one])
        fo.save(path, opt)
        print(opt.iterations, flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "resume":
        _resume(sys.argv[2], int(sys.argv[3]))
    elif mode == "writer":
        _writer(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {mode!r}")
