"""What compact storage costs in quality: final losses and loss curves.

Two problems, each trained from the same weights on the same mini-batches
with Adam in every storage mode:

* ``digits``: the demo's MLP (64 -> 128 ReLU -> 10 softmax, fastopt.demo) on
  scikit-learn's digits, 40 epochs of batches of 32 (1 360 steps), learning
  rate 1e-3; the loss is the cross-entropy over the whole training set.
* ``teacher``: a longer one, a student MLP (32 -> 256 -> 256 -> 1, tanh,
  74 k params) fitting a fixed random teacher network of the same shape on
  fresh Gaussian inputs, 8 000 steps of batches of 256, learning rate 1e-3
  decaying to 0 along a cosine (fastopt.schedules.CosineDecay); the loss is
  the mean squared error on 8 192 held-out inputs.  The decay is where
  round-to-nearest bfloat16 weights stall: an update below half a unit in the
  last place of a weight is lost, every step.

Modes: float32 (the baseline), bfloat16 state, int8 state (blocks of 256,
tensors under 4 096 elements in float32, as bitsandbytes), bfloat16 weights
with float32 state rounded stochastically or to nearest, bfloat16 weights
and state (the defaults for bfloat16 params), and bfloat16 weights with int8
state and a float32 master copy.  The models compute in float32: a bfloat16
weight is widened for the forward pass and the float32 grads are handed to
the optimizer, as a mixed-precision trainer does.

    python bench/compact_quality.py [--out DIR] [--quick]

Writes ``compact_quality.md`` (the table) and ``compact_quality.png`` (the
loss curves) to ``--out`` (default bench/results).
"""
import argparse
import math
import os
import sys
import time

import numpy as np

import fastopt as fo
from fastopt import demo, schedules

HERE = os.path.dirname(os.path.abspath(__file__))

#: label -> (weights in bfloat16, fastopt keywords)
MODES = {
    "float32": (False, {}),
    "bf16 state": (False, {"state_dtype": "bfloat16"}),
    "int8 state": (False, {"state_dtype": "int8"}),
    "bf16 weights, stochastic": (True, {"state_dtype": "float32", "rounding": "stochastic"}),
    "bf16 weights, nearest": (True, {"state_dtype": "float32", "rounding": "nearest"}),
    "bf16 weights + bf16 state": (True, {}),
    "bf16 weights + int8 state + f32 master": (True, {"state_dtype": "int8",
                                                     "master_weights": True}),
}
#: the targets: a mode's final loss at most this much above float32's
TARGETS = {"bf16 state": 0.01, "int8 state": 0.02, "bf16 weights, stochastic": 0.02}


def _bf16():
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)


class Stored:
    """A model's float32 params, held by the optimizer in float32 or bfloat16."""

    def __init__(self, params, bf16):
        self.model_params = params
        self.held = [p.astype(_bf16()) for p in params] if bf16 else params

    def sync(self):
        """Widen the held bfloat16 weights into the model's float32 arrays."""
        if self.held is not self.model_params:
            for p, h in zip(self.model_params, self.held):
                p[...] = h


def digits(mode, quick):
    bf16, kw = MODES[mode]
    Xtr, ytr, _, _ = demo.load_digits_split(seed=0)
    model = demo.MLP(64, 128, 10, seed=0)
    stored = Stored(model.params, bf16)
    opt = fo.Adam(stored.held, learning_rate=1e-3, **kw)
    rng = np.random.default_rng(1)
    epochs = 3 if quick else 40
    curve = []
    for _ in range(epochs):
        order = rng.permutation(len(ytr))
        for b in range(0, len(order) - 31, 32):
            idx = order[b:b + 32]
            stored.sync()
            model.loss_and_grads(Xtr[idx], ytr[idx])
            opt.step(model.grads)
        stored.sync()
        curve.append(model.evaluate(Xtr, ytr)[0])
    return curve


class Teacher:
    """``tanh(tanh(X W1 + b1) W2 + b2) w3 + b3`` with mean squared error."""

    def __init__(self, seed, scale=1.0):
        rng = np.random.default_rng(seed)
        shapes = [(32, 256), (256,), (256, 256), (256,), (256, 1), (1,)]
        self.params = [(rng.standard_normal(s) * (scale / math.sqrt(s[0]) if len(s) > 1
                                                   else 0.1)).astype(np.float32)
                       for s in shapes]

    def forward(self, X):
        W1, b1, W2, b2, w3, b3 = self.params
        h1 = np.tanh(X @ W1 + b1)
        h2 = np.tanh(h1 @ W2 + b2)
        return h1, h2, h2 @ w3 + b3

    def loss_and_grads(self, X, y):
        W1, b1, W2, b2, w3, b3 = self.params
        h1, h2, out = self.forward(X)
        n = len(X)
        d = (out - y) * (2.0 / n)
        g3 = h2.T @ d
        gb3 = d.sum(axis=0)
        d2 = (d @ w3.T) * (1 - h2 * h2)
        g2 = h1.T @ d2
        gb2 = d2.sum(axis=0)
        d1 = (d2 @ W2.T) * (1 - h1 * h1)
        g1 = X.T @ d1
        gb1 = d1.sum(axis=0)
        return [a.astype(np.float32) for a in (g1, gb1, g2, gb2, g3, gb3)]

    def mse(self, X, y):
        return float(np.mean((self.forward(X)[2] - y) ** 2))


def teacher(mode, quick):
    bf16, kw = MODES[mode]
    steps = 400 if quick else 8000
    target = Teacher(seed=100, scale=2.0)
    student = Teacher(seed=0)
    stored = Stored(student.params, bf16)
    lr = schedules.CosineDecay(1e-3, decay_steps=steps)
    opt = fo.Adam(stored.held, learning_rate=lr, **kw)
    rng = np.random.default_rng(1)
    Xval = rng.standard_normal((8192, 32)).astype(np.float32)
    yval = target.forward(Xval)[2]
    curve = []
    for step in range(steps):
        X = rng.standard_normal((256, 32)).astype(np.float32)
        stored.sync()
        opt.step(student.loss_and_grads(X, target.forward(X)[2]))
        if (step + 1) % (steps // 40) == 0:
            stored.sync()
            curve.append(student.mse(Xval, yval))
    return curve


PROBLEMS = {"digits (demo MLP)": digits, "teacher MLP, cosine decay": teacher}


def run(quick, log):
    out = {}
    for problem, fn in PROBLEMS.items():
        out[problem] = {}
        for mode in MODES:
            t0 = time.perf_counter()
            out[problem][mode] = fn(mode, quick)
            log(f"{problem} / {mode}: final loss {out[problem][mode][-1]:.5g} "
                f"({time.perf_counter() - t0:.1f} s)")
    return out


def markdown(results):
    lines = ["| problem | mode | final loss | vs float32 | target |", "|---|---|---:|---:|---|"]
    for problem, modes in results.items():
        base = modes["float32"][-1]
        for mode, curve in modes.items():
            rel = curve[-1] / base - 1
            tgt = TARGETS.get(mode)
            verdict = "" if tgt is None else (f"<= +{tgt:.0%}: "
                                              f"{'met' if rel <= tgt else 'MISSED'}")
            lines.append(f"| {problem} | {mode} | {curve[-1]:.5g} | {rel:+.2%} | {verdict} |")
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.5))
    for ax, (problem, modes) in zip(np.atleast_1d(axes), results.items()):
        for mode, curve in modes.items():
            style = dict(lw=2.2, color="black") if mode == "float32" else {}
            if "nearest" in mode:
                style = dict(lw=2.0, color="C3", ls="--")
            ax.plot(np.arange(1, len(curve) + 1), curve, label=mode, **style)
        ax.set_yscale("log")
        ax.set_title(problem)
        ax.set_xlabel("epoch" if problem.startswith("digits") else "evaluation (every 2.5% of steps)")
        ax.set_ylabel("loss")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Adam with compact storage (fastopt): loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    args = ap.parse_args(argv)
    results = run(args.quick, lambda s: print(s, flush=True))
    md = markdown(results)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compact_quality.md"), "w") as f:
        f.write(md + "\n")
    drawn = plot(results, os.path.join(args.out, "compact_quality.png"))
    print()
    print(md)
    if drawn:
        print(f"wrote {os.path.join(args.out, 'compact_quality.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
