"""Optimizers whose step works on whole matrices, at large sizes, beside torch.optim.

    python bench/run.py --matrix [--threads 2] [--matrix-rows 2048 --matrix-cols 2048]

Adafactor (factored second moment) on one float32 matrix: fastopt in both
conventions, torch.optim.Adafactor with foreach=False (torch's default, the
for-loop) and foreach=True, all with torch's defaults.  Muon on the same
matrix: fastopt in both conventions (Newton-Schulz in float32 through
NumPy's BLAS) and torch.optim.Muon (its iteration in bfloat16), with the
share of fastopt's step spent in the Newton-Schulz iteration, measured as
``1 - t(ns_steps=0) / t(ns_steps=5)`` (the momentum and update passes, the
norm and the scaling are what ns_steps=0 keeps).  Each figure is the median
of ``repeat`` timed runs of ``number`` steps, in nanoseconds per element per
step; ratios are taken within one run (the machine may be shared: compare
ratios, not absolute figures).
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

    def fastopt_muon(convention, ns_steps=5):
        def build():
            w, g = _problem(rows, cols)
            opt = fo.Muon([w], convention=convention, ns_steps=ns_steps)
            return lambda: opt.step([g])
        return build

    def torch_muon(dtype=None):
        def build():
            import torch
            w, g = _problem(rows, cols)
            p = torch.tensor(w)
            p.grad = torch.tensor(g)
            step = torch.optim.Muon([p]).step
            if dtype is None:
                return step
            iteration = _torch_newton_schulz_in(dtype)

            def patched():
                import torch.optim._muon as muon
                saved, muon._zeropower_via_newtonschulz = muon._zeropower_via_newtonschulz, iteration
                try:
                    step()
                finally:
                    muon._zeropower_via_newtonschulz = saved
            return patched
        return build

    out = [("fastopt Adafactor (torch convention)", fastopt("torch")),
           ("fastopt Adafactor (keras convention)", fastopt("keras"))]
    if torch_ok:
        out += [("torch Adafactor, for-loop", torch_adafactor(False)),
                ("torch Adafactor, foreach", torch_adafactor(True))]
    out += [("fastopt Muon (torch convention)", fastopt_muon("torch")),
            ("fastopt Muon (keras convention)", fastopt_muon("keras")),
            (MUON_NO_NS, fastopt_muon("torch", ns_steps=0))]
    if torch_ok:
        out += [("torch Muon (bf16 Newton-Schulz)", torch_muon()),
                ("torch Muon, Newton-Schulz made float32", torch_muon("float32"))]
    return out


def _torch_newton_schulz_in(dtype):
    """torch's own Newton-Schulz function with its bfloat16 cast made ``dtype``
    (a copy, as the cast is): the iteration fastopt runs, in torch's matmul."""
    import inspect

    import torch.optim._muon as muon
    source = inspect.getsource(muon._zeropower_via_newtonschulz)
    assert source.count("grad.bfloat16()") == 1, "torch's Newton-Schulz changed: read it again"
    scope = dict(vars(muon))
    exec(source.replace("grad.bfloat16()", f"grad.to(torch.{dtype}, copy=True)"), scope)
    return scope["_zeropower_via_newtonschulz"]


MUON_NO_NS = "fastopt Muon (torch convention), ns_steps=0"


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
    lines = [f"One float32 {rows}x{cols} matrix, {threads} threads, median of "
             f"{repeat} x {number} steps (one run; ratios to fastopt's torch convention of "
             f"the same optimizer):", "",
             "| implementation | ns per element | ratio |", "|---|---:|---:|"]
    for name in ("Adafactor", "Muon"):
        mine = [(label, ns) for label, ns in results if f" {name}" in label]
        base = mine[0][1]
        lines += [f"| {label} | {ns:.2f} | {ns / base:.2f}x |" for label, ns in mine]
    ns = dict(results)
    lines += ["", f"Muon: share of fastopt's step in the Newton-Schulz iteration "
                  f"(1 - ns_steps=0 / ns_steps=5): "
                  f"{1 - ns[MUON_NO_NS] / ns['fastopt Muon (torch convention)']:.1%}"]
    return "\n".join(lines)
