"""The fixed cost of one ``opt.step(grads)``: Python, validation and dispatch.

Every case steps float32 parameters small enough that the arithmetic is a
small part of the time (one tensor of 1e3 elements, or 100 of 100), so the
figures are what a step costs beyond its memory traffic.  Each figure is the
minimum over ``repeat`` runs of ``number`` timed calls, in microseconds per
step (the minimum is the least disturbed run on a shared machine).

    python bench/run.py --fixed-cost [--threads 2]
"""
import timeit

import numpy as np

import fastopt as fo
from fastopt import schedules
from fastopt.optimizers import REGISTRY

SIZE = 1_000

# Options measured on Adam: each row adds one to a plain step.
OPTIONS = {
    "clipvalue": {"clipvalue": 1.0},
    "clipnorm": {"clipnorm": 1.0},
    "global_clipnorm": {"global_clipnorm": 1.0},
    "weight_decay": {"weight_decay": 0.01},
    "maximize": {"maximize": True},
    "EMA": {"use_ema": True},
    "gradient accumulation": {"gradient_accumulation_steps": 2},
    "skip_nonfinite": {"skip_nonfinite": True},
}


#: Optimizers that take matrices only (their rows are on a 32x31 matrix).
MATRIX_ONLY = {"Muon"}


def _arrays(n, count=1, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32) for _ in range(count)]
    grads = [(rng.standard_normal(n) * 1e-3).astype(np.float32) for _ in range(count)]
    return params, grads


def cases():
    """(label, build) pairs; build() returns (optimizer, grads)."""
    def plain(cls):
        def build():
            params, grads = _arrays(SIZE)
            return cls(params, learning_rate=1e-4), grads
        return build

    def adam_with(options):
        def build():
            params, grads = _arrays(SIZE)
            return fo.Adam(params, learning_rate=1e-4, **options), grads
        return build

    def scheduled():
        params, grads = _arrays(SIZE)
        lr = schedules.ExponentialDecay(1e-4, decay_steps=1000, decay_rate=0.96)
        return fo.Adam(params, learning_rate=lr), grads

    def one_cycle():
        params, grads = _arrays(SIZE)
        cycle = schedules.OneCycle(1e-3, 10**9)
        return fo.SGD(params, learning_rate=cycle, momentum=cycle.momentum), grads

    def many_tensors():
        params, grads = _arrays(100, count=100)
        return fo.Adam(params, learning_rate=1e-4), grads

    def multi():
        params, grads = _arrays(SIZE // 2, count=2)
        routed = [{"params": [params[0]], "optimizer": "adam"},
                  {"params": [params[1]], "optimizer": "sgd"}]
        return fo.MultiOptimizer(routed, {
            "adam": lambda p: fo.Adam(p, learning_rate=1e-4),
            "sgd": lambda p: fo.SGD(p, learning_rate=1e-4, momentum=0.9)}), grads

    def factored(cls):
        def build():
            params, grads = _arrays(SIZE)
            params, grads = [params[0][:992].reshape(32, 31)], [grads[0][:992].reshape(32, 31)]
            return cls(params, learning_rate=1e-4), grads
        return build

    out = [(f"{name} plain", plain(cls)) for name, cls in REGISTRY.items()
           if name not in MATRIX_ONLY]
    out += [("MultiOptimizer (Adam + SGD, 2 x 500)", multi),
            ("Adafactor, 32x31 matrix (factored)", factored(fo.Adafactor)),
            ("Muon, 32x31 matrix (keras)", factored(fo.Muon)),
            ("Muon, 32x31 matrix (torch)", factored(
                lambda p, **kw: fo.Muon(p, convention="torch", **kw)))]
    out += [(f"Adam + {label}", adam_with(opts)) for label, opts in OPTIONS.items()]
    out += [("Adam + schedule on lr (ExponentialDecay)", scheduled),
            ("SGD + OneCycle on lr and momentum", one_cycle),
            ("Adam, 100 tensors of 100", many_tensors)]
    return out


def measure(threads=2, number=20000, repeat=5, log=print):
    """Rows of (label, microseconds per step)."""
    fo.set_num_threads(threads)
    rows = []
    try:
        for label, build in cases():
            opt, grads = build()
            step = opt.step
            step(grads)     # warm: first-step work and caches
            best = min(timeit.repeat(lambda: step(grads), number=number, repeat=repeat))
            rows.append((label, best / number * 1e6))
            log(f"  {label:<44s} {rows[-1][1]:7.2f} us")
    finally:
        fo.set_num_threads(None)
    return rows


def markdown(rows, threads, number, repeat):
    lines = [f"Fixed cost of `opt.step(grads)`, float32, {threads} threads, min of "
             f"{repeat} x {number} calls (us per step):", "",
             "| case | us per step |", "|---|---:|"]
    lines += [f"| {label} | {us:.2f} |" for label, us in rows]
    return "\n".join(lines)
