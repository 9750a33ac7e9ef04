"""``python -m fastopt.demo``: fastopt's optimizers and schedules on a real task.

A small NumPy MLP (64 -> 128 ReLU -> 10 softmax) learns scikit-learn's bundled
handwritten digits (1797 8x8 images, no download) once with each optimizer
of the seed -- SGD, Momentum, NAG, AdaGrad, RMSProp, Adam, Adamax, Nadam --
and once with each of its five schedules (SGD with momentum 0.9 driven by
PowerDecay, ExponentialDecay, PiecewiseConstant, ReduceOnPlateau, OneCycle).

Every run starts from the same weights and sees the same mini-batches.  Beside
each fastopt optimizer a plain-NumPy in-place implementation of the same
update (``fastopt._numpy_ref``) is stepped with the same gradients on a copy
of the weights, so the table can show the time spent in optimizer steps by
both, and how far apart the two sets of weights end up (float32 rounding
only).

Writes to ``--out`` (default ``./fastopt-demo``): ``results.md`` (the table
printed at the end), ``curves_optimizers.png``, ``curves_schedules.png``,
``schedules.png`` (the learning rate every step of the schedule runs
actually used) and ``paths_rosenbrock.png`` (each optimizer's path on the
Rosenbrock function).

Needs the ``demo`` extra: ``pip install ".[demo]"`` (scikit-learn,
matplotlib and tqdm; without tqdm a plain progress line is printed).
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time

import numpy as np

import fastopt as fo
from fastopt import schedules
from fastopt._numpy_ref import NumpyOptimizer

INSTALL_HINT = 'pip install ".[demo]"'

# (label, fastopt class name, hyper-parameters).  Learning rates are each
# optimizer's usual default or a value that trains this model well in a few
# epochs; the same dict builds the NumPy twin.
OPTIMIZERS = [
    ("SGD", "SGD", {"learning_rate": 0.05}),
    ("Momentum", "SGD", {"learning_rate": 0.01, "momentum": 0.9}),
    ("NAG", "SGD", {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True}),
    ("AdaGrad", "Adagrad", {"learning_rate": 0.02}),
    ("RMSProp", "RMSprop", {"learning_rate": 1e-3}),
    ("Adam", "Adam", {"learning_rate": 1e-3}),
    ("Adamax", "Adamax", {"learning_rate": 2e-3}),
    ("Nadam", "Nadam", {"learning_rate": 1e-3}),
]

# Learning rates for the 2-D paths (Rosenbrock's gradients are in the hundreds).
PATH_OPTIMIZERS = [
    ("SGD", "SGD", {"learning_rate": 1e-3}),
    ("Momentum", "SGD", {"learning_rate": 3e-4, "momentum": 0.9}),
    ("NAG", "SGD", {"learning_rate": 3e-4, "momentum": 0.9, "nesterov": True}),
    ("AdaGrad", "Adagrad", {"learning_rate": 0.5}),
    ("RMSProp", "RMSprop", {"learning_rate": 0.01}),
    ("Adam", "Adam", {"learning_rate": 0.02}),
    ("Adamax", "Adamax", {"learning_rate": 0.1}),
    ("Nadam", "Nadam", {"learning_rate": 0.05}),
]

SCHEDULE_BASE_LR = 0.05
ROSENBROCK_START = (-1.5, 2.0)


def _require(module, package):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(
            f"python -m fastopt.demo needs {package}, which is not installed.\n"
            f"Install the demo extra from the fastopt source directory:\n"
            f"    {INSTALL_HINT}\n"
            f"(or: pip install scikit-learn matplotlib tqdm)") from None


# ---------------------------------------------------------------------------
# data and model
# ---------------------------------------------------------------------------

def load_digits_split(seed=0, dtype=np.float32):
    """scikit-learn's 8x8 digits, split 75/25 stratified, standardized with
    the training statistics.  Returns ``(X_train, y_train, X_val, y_val)``."""
    datasets = _require("sklearn.datasets", "scikit-learn")
    model_selection = _require("sklearn.model_selection", "scikit-learn")
    X, y = datasets.load_digits(return_X_y=True)
    Xtr, Xva, ytr, yva = model_selection.train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=seed)
    mean = Xtr.mean(axis=0)
    std = Xtr.std(axis=0)
    std[std == 0] = 1.0   # always-blank border pixels
    Xtr = ((Xtr - mean) / std).astype(dtype)
    Xva = ((Xva - mean) / std).astype(dtype)
    return Xtr, ytr.astype(np.int64), Xva, yva.astype(np.int64)


class MLP:
    """``softmax(relu(X @ W1 + b1) @ W2 + b2)`` with mean cross-entropy loss.

    ``params`` and ``grads`` are lists of C-contiguous arrays in the order
    ``W1, b1, W2, b2``; :meth:`loss_and_grads` overwrites ``grads`` in place.
    """

    def __init__(self, n_in, n_hidden, n_out, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.W1 = (rng.standard_normal((n_in, n_hidden)) * math.sqrt(2.0 / n_in)).astype(dtype)
        self.b1 = np.zeros(n_hidden, dtype=dtype)
        self.W2 = (rng.standard_normal((n_hidden, n_out)) * math.sqrt(2.0 / n_hidden)).astype(dtype)
        self.b2 = np.zeros(n_out, dtype=dtype)
        self.params = [self.W1, self.b1, self.W2, self.b2]
        self.grads = [np.zeros_like(p) for p in self.params]

    def copy(self):
        other = object.__new__(MLP)
        other.W1, other.b1, other.W2, other.b2 = (p.copy() for p in self.params)
        other.params = [other.W1, other.b1, other.W2, other.b2]
        other.grads = [np.zeros_like(p) for p in other.params]
        return other

    def _forward(self, X):
        h = X @ self.W1
        h += self.b1
        np.maximum(h, 0, out=h)
        z = h @ self.W2
        z += self.b2
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return h, z

    def evaluate(self, X, y):
        """``(mean cross-entropy, accuracy)`` on ``X, y``."""
        _, prob = self._forward(X)
        picked = prob[np.arange(len(y)), y]
        loss = float(-np.mean(np.log(np.maximum(picked, 1e-12))))
        return loss, float(np.mean(prob.argmax(axis=1) == y))

    def loss_and_grads(self, X, y):
        """Mean cross-entropy of the batch; writes d loss / d params into ``grads``."""
        h, prob = self._forward(X)
        n = len(y)
        rows = np.arange(n)
        loss = float(-np.mean(np.log(np.maximum(prob[rows, y], 1e-12))))
        dz = prob
        dz[rows, y] -= 1
        dz /= n
        gW1, gb1, gW2, gb2 = self.grads
        np.matmul(h.T, dz, out=gW2)
        np.sum(dz, axis=0, out=gb2)
        dh = dz @ self.W2.T
        dh *= h > 0
        np.matmul(X.T, dh, out=gW1)
        np.sum(dh, axis=0, out=gb1)
        return loss


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------

class _Progress:
    """tqdm when installed; otherwise one line per finished run on stderr."""

    def __init__(self, total, disable=False):
        self.total, self.n, self.disable = total, 0, disable
        self.bar = None
        if not disable:
            try:
                tqdm = importlib.import_module("tqdm.auto").tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="epoch", dynamic_ncols=True, file=sys.stderr)
        self.t0 = time.perf_counter()

    def update(self, label, done_run, info):
        self.n += 1
        if self.disable:
            return
        if self.bar is not None:
            self.bar.set_description(f"{label:>16}")
            self.bar.set_postfix_str(info, refresh=False)
            self.bar.update(1)
        elif done_run:
            pct = 100.0 * self.n / self.total
            print(f"[{pct:5.1f}%] {label:>16}: {info} ({time.perf_counter() - self.t0:.1f}s)",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Run:
    """The outcome of training one configuration."""

    def __init__(self, label, kind):
        self.label, self.kind = label, kind
        self.train_loss, self.train_acc, self.val_loss, self.val_acc = [], [], [], []
        self.lr, self.momentum = [], []
        self.reductions = []
        self.wall = 0.0
        self.t_fast = []       # seconds per step() call
        self.t_numpy = []
        self.steps = 0
        self.max_diff = 0.0


def _hyper_of(opt):
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def train(label, kind, make_optimizer, data, model0, epochs, batch_size, seed, progress,
          plateau=None):
    """Train a copy of ``model0`` with ``make_optimizer(params)``.

    A :class:`fastopt._numpy_ref.NumpyOptimizer` with the same
    hyper-parameters steps a second copy with the same gradients; both
    step times are summed.  ``plateau`` (a ReduceOnPlateau) is told the
    validation loss after every epoch.
    """
    Xtr, ytr, Xva, yva = data
    model = model0.copy()
    shadow = [p.copy() for p in model0.params]
    opt = make_optimizer(model.params)
    ref = NumpyOptimizer(type(opt).__name__.lower(), shadow, _hyper_of(opt))
    lr_sched = opt.param_groups[0]["learning_rate"]
    mom_sched = opt.param_groups[0].get("momentum")
    run = Run(label, kind)
    rng = np.random.default_rng(seed)   # the same batches for every run
    n = len(ytr)
    grads = model.grads
    perf = time.perf_counter
    t_fast, t_numpy = run.t_fast, run.t_numpy
    t_start = perf()
    for epoch in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            model.loss_and_grads(Xtr[idx], ytr[idx])
            if callable(lr_sched):
                it = opt.iterations
                run.lr.append(float(lr_sched(it)))
                if callable(mom_sched):
                    run.momentum.append(float(mom_sched(it)))
            t0 = perf()
            opt.step(grads)
            t1 = perf()
            ref.step(grads)
            t2 = perf()
            t_fast.append(t1 - t0)
            t_numpy.append(t2 - t1)
        tl, ta = model.evaluate(Xtr, ytr)
        vl, va = model.evaluate(Xva, yva)
        run.train_loss.append(tl)
        run.train_acc.append(ta)
        run.val_loss.append(vl)
        run.val_acc.append(va)
        if plateau is not None and plateau.report(vl, step=opt.iterations):
            run.reductions.append(opt.iterations)
        progress.update(label, epoch == epochs - 1, f"val acc {va:.3f}")
    run.wall = perf() - t_start - sum(t_numpy)
    run.steps = opt.iterations
    run.max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(model.params, shadow))
    return run


def schedule_set(total_steps, steps_per_epoch, lr0=SCHEDULE_BASE_LR):
    """The five schedules of the demo, sized for ``total_steps`` updates.

    Returns ``[(label, learning_rate, momentum, plateau)]``: ``momentum`` is
    ``0.9`` or, for 1cycle, its momentum schedule; ``plateau`` is the
    schedule to :meth:`~fastopt.schedules.ReduceOnPlateau.report` to (or None).
    """
    total_steps = max(int(total_steps), 1)
    plateau = schedules.ReduceOnPlateau(lr0, factor=0.5, patience=3, min_delta=1e-3,
                                         min_lr=lr0 / 100)
    one = schedules.OneCycle(max_lr=2 * lr0, total_steps=total_steps)
    b1, b2 = max(total_steps // 2, 1), max(3 * total_steps // 4, 1)
    if b2 <= b1:
        b2 = b1 + 1
    return [
        ("PowerDecay", schedules.PowerDecay(lr0, decay_steps=max(total_steps / 8, 1.0)),
         0.9, None),
        ("ExponentialDecay", schedules.ExponentialDecay(lr0, decay_steps=total_steps,
                                                        decay_rate=0.05), 0.9, None),
        ("PiecewiseConstant", schedules.PiecewiseConstant([b1, b2], [lr0, lr0 / 5, lr0 / 25]),
         0.9, None),
        ("ReduceOnPlateau", plateau, 0.9, plateau),
        ("OneCycle", one, one.momentum, None),
    ]


def simulate_schedules(total_steps, steps_per_epoch, val_loss):
    """Learning rates of :func:`schedule_set` without training.

    ``val_loss[e]`` is reported to ReduceOnPlateau after epoch ``e``.
    Returns ``(series, momentum, marks)`` as :func:`plot_schedules` takes them.
    """
    series, momentum, marks = {}, {}, {}
    for label, lr, mom, plateau in schedule_set(total_steps, steps_per_epoch):
        ys, ms, red = [], [], []
        for step in range(total_steps):
            ys.append(float(lr(step)))
            if callable(mom):
                ms.append(float(mom(step)))
            if plateau is not None and (step + 1) % steps_per_epoch == 0:
                epoch = (step + 1) // steps_per_epoch - 1
                if epoch < len(val_loss) and plateau.report(val_loss[epoch], step=step + 1):
                    red.append(step + 1)
        series[label] = ys
        if ms:
            momentum[label] = ms
        if red:
            marks[label] = red
    return series, momentum, marks


def _optimizer_class(name):
    return getattr(fo, name, None)


def run_all(epochs, batch_size=32, seed=0, hidden=128, quiet=False, on_start=None):
    """Train every optimizer and every schedule; returns ``(opt_runs, sched_runs, info)``.

    ``on_start(info)`` is called once the data is loaded, before training.
    """
    data = load_digits_split(seed)
    Xtr = data[0]
    model0 = MLP(Xtr.shape[1], hidden, 10, seed=seed)
    available = [(label, cls, hp) for label, cls, hp in OPTIMIZERS if _optimizer_class(cls)]
    missing = [label for label, cls, _ in OPTIMIZERS if not _optimizer_class(cls)]
    steps_per_epoch = -(-len(data[1]) // batch_size)
    total_steps = steps_per_epoch * epochs
    sched = schedule_set(total_steps, steps_per_epoch)
    info = {"n_train": len(data[1]), "n_val": len(data[3]), "features": Xtr.shape[1],
            "hidden": hidden, "n_params": sum(p.size for p in model0.params),
            "batch_size": batch_size, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
            "missing": missing}
    if on_start is not None:
        on_start(info)
    progress = _Progress(epochs * (len(available) + len(sched)), disable=quiet)
    opt_runs, sched_runs = [], []
    try:
        for label, cls, hp in available:
            make = (lambda params, c=_optimizer_class(cls), h=hp: c(params, **h))
            opt_runs.append(train(label, "optimizer", make, data, model0, epochs, batch_size,
                                  seed, progress))
        for label, lr, mom, plateau in sched:
            make = (lambda params, lr=lr, mom=mom: fo.SGD(params, learning_rate=lr,
                                                           momentum=mom))
            sched_runs.append(train(label, "schedule", make, data, model0, epochs, batch_size,
                                    seed, progress, plateau=plateau))
    finally:
        progress.close()
    return opt_runs, sched_runs, info


# ---------------------------------------------------------------------------
# 2-D paths
# ---------------------------------------------------------------------------

def rosenbrock(x, y):
    """``(1 - x)^2 + 100 (y - x^2)^2``: minimum 0 at (1, 1), a long curved valley."""
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_paths(steps, start=ROSENBROCK_START):
    """Each optimizer's path from ``start``; ``{label: (steps+1, 2) array}``."""
    paths = {}
    for label, cls_name, hp in PATH_OPTIMIZERS:
        cls = _optimizer_class(cls_name)
        if cls is None:
            continue
        w = np.array(start, dtype=np.float64)
        g = np.empty(2)
        opt = cls([w], **hp)
        path = np.empty((steps + 1, 2))
        path[0] = w
        for k in range(steps):
            x, y = w
            g[0] = -2 * (1 - x) - 400 * x * (y - x * x)
            g[1] = 200 * (y - x * x)
            opt.step([g])
            path[k + 1] = w
            if not np.all(np.isfinite(w)):
                path = path[:k + 2]
                break
        paths[label] = path
    return paths


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------

COLUMNS = ("run", "train loss", "train acc", "val loss", "val acc", "wall s",
           "in step() ms: fastopt / NumPy", "µs per step: fastopt / NumPy", "speed-up",
           "max Δw vs NumPy")


def table_rows(runs):
    """One row of formatted cells per run (see :data:`COLUMNS`)."""
    rows = []
    for r in runs:
        med_fast = float(np.median(r.t_fast)) * 1e6
        med_np = float(np.median(r.t_numpy)) * 1e6
        rows.append((r.label, f"{r.train_loss[-1]:.4f}", f"{r.train_acc[-1]:.3f}",
                     f"{r.val_loss[-1]:.4f}", f"{r.val_acc[-1]:.3f}", f"{r.wall:.2f}",
                     f"{sum(r.t_fast) * 1e3:.0f} / {sum(r.t_numpy) * 1e3:.0f}",
                     f"{med_fast:.1f} / {med_np:.1f}",
                     f"{med_np / med_fast:.1f}x" if med_fast > 0 else "-",
                     f"{r.max_diff:.1e}"))
    return rows


def format_table(opt_runs, sched_runs):
    """The results as a Markdown table (also readable as plain text)."""
    body = table_rows(opt_runs)
    body += [(f"SGD+{r[0]}",) + r[1:] for r in table_rows(sched_runs)]
    widths = [max(len(COLUMNS[i]), *(len(row[i]) for row in body)) for i in range(len(COLUMNS))]

    def line(cells):
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            out.append(c.ljust(w) if i == 0 else c.rjust(w))
        return "| " + " | ".join(out) + " |"

    lines = [line(COLUMNS),
             "|" + "|".join(("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1))
                            for i, w in enumerate(widths)) + "|"]
    lines.extend(line(row) for row in body)
    return "\n".join(lines)


def _pyplot():
    matplotlib = _require("matplotlib", "matplotlib")
    matplotlib.use("Agg")   # files only; works without a display
    return importlib.import_module("matplotlib.pyplot")


def plot_curves(runs, title, path):
    """Validation (solid) and training (dashed) loss and validation accuracy per epoch."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, r in enumerate(runs):
        color = f"C{k % 10}"
        ep = np.arange(1, len(r.val_loss) + 1)
        ax1.plot(ep, r.val_loss, color=color, label=r.label)
        ax1.plot(ep, r.train_loss, color=color, ls="--", lw=0.9)
        ax2.plot(ep, r.val_acc, color=color, label=r.label)
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy (solid: validation, dashed: train)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy")
    ax2.legend(fontsize=8, loc="lower right")
    lo = min(min(r.val_acc) for r in runs)
    ax2.set_ylim(max(0.0, min(lo, 0.9) - 0.02), 1.0)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_schedules(series, path, title="Learning-rate schedules", momentum=None,
                   marks=None, steps_per_epoch=None):
    """The learning rate per step for each schedule; 1cycle's momentum below.

    Parameters
    ----------
    series : dict label -> sequence of float
        Learning rate used at each step.
    momentum : dict label -> sequence of float, optional
        Momentum per step, drawn in a second panel.
    marks : dict label -> list of int, optional
        Steps to mark (e.g. ReduceOnPlateau's reductions).
    steps_per_epoch : int, optional
        Adds an epoch axis on top.
    """
    plt = _pyplot()
    panels = 2 if momentum else 1
    fig, axes = plt.subplots(panels, 1, figsize=(9, 5.5 if panels == 2 else 4),
                             sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1][:panels]})
    ax = axes[0][0]
    for k, (label, ys) in enumerate(series.items()):
        ax.plot(np.arange(len(ys)), ys, color=f"C{k}", label=label)
        for s in (marks or {}).get(label, []):
            if 0 <= s < len(ys):
                ax.plot([s], [ys[s]], "v", color=f"C{k}", ms=6)
    ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title)
    if steps_per_epoch:
        top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch,
                                                   lambda e: e * steps_per_epoch))
        top.set_xlabel("epoch")
    if momentum:
        axm = axes[1][0]
        for label, ys in momentum.items():
            k = list(series).index(label) if label in series else 0
            axm.plot(np.arange(len(ys)), ys, color=f"C{k}", label=f"{label} momentum")
        axm.set_ylabel("momentum")
        axm.grid(alpha=0.3)
        axm.legend(fontsize=8)
    axes[-1][0].set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_paths(paths, path):
    """Each optimizer's path over the contours of the Rosenbrock function, one panel each."""
    plt = _pyplot()
    n = max(len(paths), 1)
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.0 * nrows + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    xs = np.linspace(-2.0, 2.0, 240)
    ys = np.linspace(-1.0, 3.0, 240)
    X, Y = np.meshgrid(xs, ys)
    Z = np.log10(rosenbrock(X, Y) + 1e-3)
    for ax in axes.flat:
        ax.set_visible(False)
    for k, (label, p) in enumerate(paths.items()):
        ax = axes.flat[k]
        ax.set_visible(True)
        ax.contourf(X, Y, Z, levels=20, cmap="Greys", alpha=0.45)
        ax.plot(p[:, 0], p[:, 1], color=f"C{k}", lw=1.3)
        every = max(1, (len(p) - 1) // 30)
        ax.plot(p[::every, 0], p[::every, 1], ".", color=f"C{k}", ms=3)
        ax.plot(*ROSENBROCK_START, "ko", ms=4)
        ax.plot(1, 1, "k*", ms=10)
        last = p[-1]
        final = rosenbrock(*last) if np.all(np.isfinite(last)) else float("nan")
        ax.set_title(f"{label}: f = {final:.2g}", fontsize=9)
        ax.set_xlim(-2, 2)
        ax.set_ylim(-1, 3)
    steps = max(len(p) for p in paths.values()) - 1 if paths else 0
    fig.suptitle(f"{steps} steps on Rosenbrock (1-x)² + 100(y-x²)² from "
                 f"{ROSENBROCK_START}; minimum ★ at (1, 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastopt.demo",
        description="Train a NumPy MLP on scikit-learn's digits with each of fastopt's "
                    "optimizers and schedules; print a table and write figures.")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default 30; 2 with --quick)")
    parser.add_argument("--out", default="fastopt-demo",
                        help="directory for the figures and results.md (default ./fastopt-demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds' smoke run: 2 epochs, short 2-D paths")
    parser.add_argument("--seed", type=int, default=0, help="data split, weights and batches")
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 30)
    if epochs < 1:
        parser.error(f"--epochs must be >= 1; got {epochs}")
    _require("sklearn", "scikit-learn")
    _pyplot()
    os.makedirs(args.out, exist_ok=True)

    t0 = time.perf_counter()
    cfg = fo.config()
    print(f"fastopt {fo.__version__}: SIMD {cfg['simd']}, OpenMP "
          f"{'on' if cfg['openmp'] else 'off'}, {fo.get_num_threads()} threads")

    def announce(info):
        print(f"digits: {info['n_train']} train / {info['n_val']} validation images, "
              f"{info['features']} features; MLP {info['features']}-{info['hidden']}-10 "
              f"({info['n_params']} float32 parameters); batch {info['batch_size']}, "
              f"{info['epochs']} epochs x {info['steps_per_epoch']} steps", flush=True)
        if info["missing"]:
            print(f"not in this fastopt build, skipped: {', '.join(info['missing'])}",
                  flush=True)

    opt_runs, sched_runs, info = run_all(epochs, seed=args.seed, on_start=announce)
    table = format_table(opt_runs, sched_runs)
    print()
    print(table)
    print()
    print(f"wall s: training time with fastopt (the NumPy twin's steps excluded). in step(): "
          f"total time\nof all {info['epochs'] * info['steps_per_epoch']} updates; µs per "
          f"step: medians; speed-up: NumPy median / fastopt median.\nmax Δw vs NumPy: largest "
          f"difference between fastopt's weights and the NumPy twin's after training.")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")

    paths = rosenbrock_paths(300 if args.quick else 3000)
    figures = {
        "curves_optimizers.png": lambda p: plot_curves(
            opt_runs, "Digits MLP: optimizers (Keras convention, constant learning rate)", p),
        "curves_schedules.png": lambda p: plot_curves(
            sched_runs, f"Digits MLP: SGD momentum 0.9 with each schedule "
                        f"(base lr {SCHEDULE_BASE_LR})", p),
        "schedules.png": lambda p: plot_schedules(
            {r.label: r.lr for r in sched_runs}, p,
            title="Learning rate used at each step of the schedule runs",
            momentum={r.label: r.momentum for r in sched_runs if r.momentum},
            marks={r.label: r.reductions for r in sched_runs if r.reductions},
            steps_per_epoch=info["steps_per_epoch"]),
        "paths_rosenbrock.png": lambda p: plot_paths(paths, p),
    }
    for name, draw in figures.items():
        draw(os.path.join(args.out, name))
    print(f"\nwrote {', '.join(['results.md', *figures])} to {os.path.abspath(args.out)} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
