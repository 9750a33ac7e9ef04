"""fastopt.torch against torch.optim on torch models (CPU):

    python bench/torch_models.py [--threads 2] [--rounds 30] [--epochs 3] [--smoke]

1. The optimizer step alone on a 404-tensor MLP (Linear(64, 32), 200 x
   Linear(32, 32), Linear(32, 10), with biases): fastopt.torch.AdamW against
   torch.optim.AdamW with fused=True and foreach=True.  Each step gets new
   gradient tensors (as after ``zero_grad()`` and ``backward()``), assigned
   outside the timed call; figures are medians of single steps over rounds
   whose order rotates.  fastopt.torch binds each step's grads in its C++
   binder (when it built; the header line says) and, in a second row, in
   Python (``FASTOPT_TORCH_BINDER=0``'s path).  A last row, fastopt's NumPy
   API over views made once, is the kernels alone: the difference is what the
   torch layer costs per step (hooks, reading ``p.grad``, checking and binding
   it).
2. Training end to end, the same initial weights and batches for each
   optimizer, with fastopt's threads as a ported loop has them (its default,
   the measured team, when ``--threads`` is the whole machine; else that
   many): a digits-like MLP (64-256-256-10, 85k parameters, 1797 8x8
   images synthesized from ten noisy templates: no download) and a small CNN
   (two 3x3 convolutions on 16x16 images synthesized the same way).  Wall time
   per epoch (forward, backward, step), and the largest difference between
   the per-epoch mean losses of fastopt and torch (float32: equal to
   rounding, not bit for bit).

Ratios are between figures of the same run.
"""
import argparse
import copy
import statistics
import sys
import time

import numpy as np
import torch

import fastopt as fo
import fastopt.torch as ft


def many_tensor_model():
    layers = [torch.nn.Linear(64, 32)] + [torch.nn.Linear(32, 32) for _ in range(200)]
    return torch.nn.Sequential(*layers, torch.nn.Linear(32, 10))


class NumpyBridge:
    """fastopt's NumPy API over ``.numpy()`` views of the parameters and of
    gradient buffers that are made once and reused (``zero_grad(set_to_none=
    False)``): the kernels without the torch layer's per-step binding."""

    def __init__(self, params):
        self.params = params
        self.opt = fo.AdamW([p.detach().numpy() for p in params], learning_rate=1e-3,
                            convention="torch")
        self.views = None

    def step(self):
        if self.views is None:
            self.views = [p.grad.numpy() for p in self.params]
        self.opt.step(self.views)


def python_bound(params):
    """fastopt.torch.AdamW with its grads bound in Python, as without the binder."""
    opt = ft.AdamW(params, lr=1e-3)
    for b in opt._bound:
        b.binder = None
    return opt


MAKERS = {
    "fastopt.torch.AdamW": lambda ps: ft.AdamW(ps, lr=1e-3),
    "fastopt.torch.AdamW, binding in Python": python_bound,
    "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
    "torch AdamW foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
    "fastopt NumPy API, grads bound once": NumpyBridge,
}


def bench_step(rounds, steps):
    torch.manual_seed(0)
    model = many_tensor_model()
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(1)
    grad_sets = [[torch.randn(p.shape, generator=gen) * 1e-2 for p in params]
                 for _ in range(4)]
    results = {name: [] for name in MAKERS}
    # each optimizer gets its own copy of the weights
    copies = {name: [p.detach().clone().requires_grad_() for p in params] for name in results}
    opts = {name: MAKERS[name](copies[name]) for name in results}
    names = list(results)
    for r in range(rounds + 2):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            opt, ps = opts[name], copies[name]
            times = []
            for s in range(steps):
                grads = grad_sets[s % len(grad_sets)]
                if isinstance(opt, NumpyBridge) and opt.views is not None:
                    for v, g in zip(opt.views, grads):
                        np.copyto(v, g.numpy())  # the same buffers, new values
                else:
                    for p, g in zip(ps, grads):
                        p.grad = g.clone()       # a new tensor each step, as backward makes
                t0 = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - t0)
            if r >= 2:                       # two warm-up rounds
                results[name].append(statistics.median(times))
    return len(params), {n: statistics.median(v) for n, v in results.items()}


def templates_data(n, side, seed=0):
    """``n`` images of ``side x side`` pixels in ten classes: a fixed random
    template per class, shifted by a pixel at random, plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, side + 2, side + 2)) ** 3 * 16
    y = rng.integers(0, 10, n)
    dx, dy = rng.integers(0, 3, n), rng.integers(0, 3, n)
    X = np.stack([templates[c, a:a + side, b:b + side] for c, a, b in zip(y, dx, dy)])
    X = X + rng.normal(0, 2.0, X.shape)
    X = (X - X.mean()) / X.std()
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y)


def mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 10))


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 10))


def train(make_model, make_opt, X, y, epochs, batch):
    torch.manual_seed(0)
    model = make_model()
    opt = make_opt(model.parameters())
    order = np.random.default_rng(0)
    perms = [torch.tensor(order.permutation(len(y))) for _ in range(epochs)]
    lossf = torch.nn.CrossEntropyLoss()
    losses, times = [], []
    for e in range(epochs):
        total, t0 = 0.0, time.perf_counter()
        for k in range(0, len(y), batch):
            idx = perms[e][k:k + batch]
            opt.zero_grad()
            loss = lossf(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        times.append(time.perf_counter() - t0)
        losses.append(total / len(y))
    return losses, times


def bench_train(epochs, batch, repeats, smoke):
    n = 64 if smoke else 1797
    cases = {"digits-like MLP (85k params)": (mlp, templates_data(n, 8)),
             "small CNN (16x16 images)": (cnn, (templates_data(n, 16)[0][:, None],
                                                templates_data(n, 16)[1]))}
    makers = {
        "fastopt.torch.AdamW": lambda ps: ft.AdamW(ps, lr=1e-3),
        "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
    }
    out = {}
    for case, (make_model, (X, y)) in cases.items():
        res = {name: ([], []) for name in makers}
        for r in range(repeats):
            for name in (list(makers) if r % 2 == 0 else list(makers)[::-1]):
                losses, times = train(make_model, makers[name], X, y, epochs, batch)
                res[name][0].append(losses)
                res[name][1].extend(times[1:] if epochs > 1 else times)   # first epoch warms up
        a, b = (res[name] for name in makers)
        out[case] = {
            "epoch_s": {name: statistics.median(res[name][1]) for name in makers},
            "losses": {name: res[name][0][0] for name in makers},
            "max_rel_loss_diff": max(abs(u - v) / abs(v) for u, v in zip(a[0][0], b[0][0])),
        }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny, for the test suite")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.epochs, args.repeats = 1, 2, 1
    torch.set_num_threads(args.threads)
    fo.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, fastopt {fo.__version__}, {args.threads} threads "
          f"(torch and fastopt), python {sys.version.split()[0]}, fastopt.torch's binder: "
          f"{ft.binder()}")
    ntensors, step = bench_step(args.rounds, 3 if args.smoke else 20)
    base = step["torch AdamW fused"]
    print(f"\n## Optimizer step, {ntensors}-tensor MLP (median of single steps)\n")
    print("| optimizer | step (us) | torch fused / this |")
    print("|---|---:|---:|")
    for name, t in step.items():
        print(f"| {name} | {t * 1e6:.0f} | {base / t:.1f}x |")
    # training as a ported loop runs it: fastopt at its default (the measured
    # team) when N is the whole machine, else a fixed count of N
    fo.set_num_threads(None)
    measured = args.threads >= fo.get_num_threads()
    fo.set_num_threads(None if measured else args.threads)
    train_res = bench_train(args.epochs, 32, args.repeats, args.smoke)
    threads = (f"default, a measured team of up to {fo.get_num_threads()}" if measured
               else args.threads)
    print(f"\n## Training end to end (AdamW, batch 32, median epoch wall time; fastopt's "
          f"threads: {threads})\n")
    print("| model | fastopt.torch (ms/epoch) | torch fused (ms/epoch) | speed-up | "
          "max rel. loss difference |")
    print("|---|---:|---:|---:|---:|")
    for case, r in train_res.items():
        a, b = r["epoch_s"].values()
        print(f"| {case} | {a * 1e3:.1f} | {b * 1e3:.1f} | {b / a:.2f}x | "
              f"{r['max_rel_loss_diff']:.1e} |")
    worst = max(r["max_rel_loss_diff"] for r in train_res.values())
    print(f"\nlargest relative difference of the loss curves: {worst:.1e}")
    for case, r in train_res.items():
        print(f"\n{case}: per-epoch mean loss")
        for name, losses in r["losses"].items():
            print(f"  {name:22s} " + " ".join(f"{v:.6f}" for v in losses))
    return step, train_res


if __name__ == "__main__":
    main()
