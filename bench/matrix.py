"""Optimizers whose step works on whole matrices, at large sizes, beside torch.optim.

    python bench/run.py --matrix [--threads 2] [--matrix-rows 2048 --matrix-cols 2048]

Adafactor (factored second moment) on one float32 matrix: fastopt in both
conventions, torch.optim.Adafactor with foreach=False (torch's default, the
for-loop) and foreach=True, all with torch's defaults.  Each figure is the
median of ``repeat`` timed runs of ``number`` steps, in nanoseconds per
element per step; ratios are taken within one run (the machine may be
shared: compare ratios, not absolute figures).
"""
import statistics
import time

import numpy as np

import fastopt as fo


def _time(step, number, repeat):
    step()      # warm: first-step work and caches
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            step()
        runs.append((time.perf_counter() - t0) / number)
    return statistics.median(runs)


def _problem(rows, cols, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, cols)).astype(np.float32),
            (rng.standard_normal((rows, cols)) * 1e-3).astype(np.float32))


def cases(rows, cols, torch_ok):
    """(label, build) pairs; build() returns a step function."""
    def fastopt(convention):
        def build():
            w, g = _problem(rows, cols)
            opt = fo.Adafactor([w], convention=convention)
            return lambda: opt.step([g])
        return build

    def torch_adafactor(foreach):
        def build():
            import torch
            w, g = _problem(rows, cols)
            p = torch.tensor(w)
            p.grad = torch.tensor(g)
            opt = torch.optim.Adafactor([p], foreach=foreach)
            return opt.step
        return build

    out = [("fastopt Adafactor (torch convention)", fastopt("torch")),
           ("fastopt Adafactor (keras convention)", fastopt("keras"))]
    if torch_ok:
        out += [("torch Adafactor, for-loop", torch_adafactor(False)),
                ("torch Adafactor, foreach", torch_adafactor(True))]
    return out


def measure(rows, cols, threads=2, number=5, repeat=5, torch_ok=True, log=print):
    """Rows of (label, ns per element per step)."""
    fo.set_num_threads(threads)
    if torch_ok:
        import torch
        torch.set_num_threads(threads)
    out = []
    try:
        for label, build in cases(rows, cols, torch_ok):
            s = _time(build(), number, repeat)
            out.append((label, s / (rows * cols) * 1e9))
            log(f"  {label:<40s} {out[-1][1]:8.2f} ns/element")
    finally:
        fo.set_num_threads(None)
    return out


def markdown(results, rows, cols, threads, number, repeat):
    base = results[0][1]
    lines = [f"Adafactor, one float32 {rows}x{cols} matrix, {threads} threads, median of "
             f"{repeat} x {number} steps (one run; ratios to fastopt's torch convention):", "",
             "| implementation | ns per element | ratio |", "|---|---:|---:|"]
    lines += [f"| {label} | {ns:.2f} | {ns / base:.2f}x |" for label, ns in results]
    return "\n".join(lines)
