"""The optimizer step inside a training loop that also runs BLAS or torch threads.

``python bench/run.py --in-loop`` (or ``python bench/in_loop.py``) times, on
this machine's cores:

* a NumPy MLP 784-1024-1024-10 (1.86M float32 params, batch 128, Adam),
  forward and backward through NumPy's BLAS, with BLAS at 1 and 2 threads and
  fastopt at its defaults (libgomp's own wait, the team measured per
  optimizer), at 1 thread, with ``OMP_WAIT_POLICY=passive``, with a bounded
  spin (``FASTOPT_SPINCOUNT=10000``, fastopt's previous default) and with
  every step on OpenMP's whole team (``fixed team``: fastopt before it
  measured its team), and torch's fused AdamW through the same loop when
  torch is installed;
* the same MLP in torch (forward and backward on torch's intra-op threads),
  stepped by fastopt through zero-copy views, or by torch's fused AdamW;
* two processes running the NumPy loop at once on the same cores: at the
  defaults, with fastopt at 1 thread (BLAS at its default), and with every
  library at 1 thread;
* the step alone (float32 Adam at 1e5, 1e6 and 1.6e7 elements, back to back)
  at the default, with the fixed team, the bounded spin and passive.

Each configuration runs in a fresh process (libgomp reads its wait policy
once, when it loads), in rounds whose order rotates; figures are medians of
the per-run medians.  The targets: at the defaults, each loop within 5% of the
best configuration of the same run; two processes at the defaults no slower
than with every library at 1 thread; the step alone no slower than before.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (environment, fastopt threads: None for the default, "all" for OpenMP's
# whole default team on every step)
FASTOPT_CONFIGS = {
    "default": ({}, None),
    "1 thread": ({}, 1),
    "passive": ({"OMP_WAIT_POLICY": "passive"}, None),
    "bounded spin": ({"FASTOPT_SPINCOUNT": "10000"}, None),
    "fixed team": ({}, "all"),
}
#: the configuration that was fastopt's behaviour before the measured team
BEFORE = "fixed team"
STEP_SIZES = (100_000, 1_000_000, 16_000_000)
STEP_CONFIGS = ("default", BEFORE, "bounded spin", "passive")
SMOKE_STEP_SIZES = (10_000,)


def _have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---- worker: one configuration, one process ---------------------------------------

def _mlp_numpy(np, rng, dims, batch):
    ws = [(rng.standard_normal((a, b)) * (2.0 / a) ** 0.5).astype(np.float32)
          for a, b in zip(dims[:-1], dims[1:])]
    bs = [np.zeros(b, np.float32) for b in dims[1:]]
    x = rng.standard_normal((batch, dims[0])).astype(np.float32)
    y = rng.integers(0, dims[-1], batch)
    params = [a for pair in zip(ws, bs) for a in pair]
    grads = [np.zeros_like(p) for p in params]

    def forward_backward():
        acts = [x]
        for i, (w, b) in enumerate(zip(ws, bs)):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0) if i < len(ws) - 1 else z)
        z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(batch), y] -= 1
        d = p / batch
        for i in range(len(ws) - 1, -1, -1):
            np.matmul(acts[i].T, d, out=grads[2 * i])
            d.sum(axis=0, out=grads[2 * i + 1])
            if i:
                d = (d @ ws[i].T) * (acts[i] > 0)

    return params, grads, forward_backward


def _mlp_torch(torch, dims, batch):
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    x = torch.randn(batch, dims[0])
    y = torch.randint(0, dims[-1], (batch,))
    params = list(model.parameters())

    def forward_backward():
        for p in params:
            if p.grad is not None:
                p.grad.zero_()
        torch.nn.functional.cross_entropy(model(x), y).backward()

    forward_backward()                     # creates the grads once; zeroed in place after
    return params, forward_backward


def _timed_loop(forward_backward, step, iters, warmup):
    per_iter, per_step = [], []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        forward_backward()
        t1 = time.perf_counter()
        step()
        t2 = time.perf_counter()
        if i >= warmup:
            per_iter.append(t2 - t0)
            per_step.append(t2 - t1)
    return statistics.median(per_iter), statistics.median(per_step)


def worker(cfg):
    """Run one configuration in this process; return its figures."""
    import numpy as np

    import fastopt as fo
    if cfg.get("fastopt_threads") == "all":
        fo.set_num_threads(fo.get_num_threads())
    elif cfg.get("fastopt_threads"):
        fo.set_num_threads(cfg["fastopt_threads"])
    dims, batch = tuple(cfg["dims"]), cfg["batch"]
    out = {"wait": fo.config()["omp_wait"]}
    kind = cfg["kind"]
    if kind == "numpy-mlp":
        rng = np.random.default_rng(0)
        params, grads, fb = _mlp_numpy(np, rng, dims, batch)
        if cfg["impl"] == "torch fused":
            import torch
            tp = [torch.from_numpy(p) for p in params]
            for p, g in zip(tp, grads):
                p.grad = torch.from_numpy(g)
            opt = torch.optim.AdamW(tp, lr=1e-3, weight_decay=0.0, fused=True)
            step = opt.step
        else:
            opt = fo.Adam(params, learning_rate=1e-3)
            step = lambda: opt.step(grads)  # noqa: E731
        out["iter_s"], out["step_s"] = _timed_loop(fb, step, cfg["iters"], cfg["warmup"])
    elif kind == "torch-mlp":
        import torch
        params, fb = _mlp_torch(torch, dims, batch)
        if cfg["impl"] == "torch fused":
            opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
            step = opt.step
        else:
            views = [p.detach().numpy() for p in params]
            grads = [p.grad.numpy() for p in params]
            opt = fo.Adam(views, learning_rate=1e-3)
            step = lambda: opt.step(grads)  # noqa: E731
        out["iter_s"], out["step_s"] = _timed_loop(fb, step, cfg["iters"], cfg["warmup"])
        out["torch_threads"] = torch.get_num_threads()
    elif kind == "step":
        n = cfg["size"]
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n).astype(np.float32)
        g = (rng.standard_normal(n) * 1e-2).astype(np.float32)
        opt = fo.Adam([p], learning_rate=1e-3)
        inner = max(1, 2_000_000 // n)
        times = []
        for r in range(cfg["warmup"] + cfg["iters"]):
            t0 = time.perf_counter()
            for _ in range(inner):
                opt.step([g])
            if r >= cfg["warmup"]:
                times.append((time.perf_counter() - t0) / inner)
        out["step_s"] = statistics.median(times)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return out


# ---- parent: configurations in fresh processes, rotating rounds --------------------

def _env(extra, blas_threads):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FASTOPT_SPINCOUNT")}
    if blas_threads is not None:
        for k in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
            env[k] = str(blas_threads)
    env.update(extra)
    return env


def _launch(cfg, env):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
                            env=env, stdout=subprocess.PIPE, text=True)


def _collect(proc):
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"worker failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def _run_rounds(jobs, rounds, log):
    """jobs: {key: (cfg, env, copies)}; returns {key: [result dicts per round]}."""
    keys = list(jobs)
    results = {k: [] for k in keys}
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            cfg, env, copies = jobs[k]
            procs = [_launch(cfg, env) for _ in range(copies)]
            outs = [_collect(p) for p in procs]
            res = {"iter_s": statistics.mean(o.get("iter_s", 0.0) for o in outs),
                   "step_s": statistics.mean(o["step_s"] for o in outs), "wait": outs[0]["wait"]}
            results[k].append(res)
        log(f"  round {r + 1}/{rounds} done")
    return results


def _median(results, key, field):
    return statistics.median(r[field] for r in results[key])


def run(smoke=False, rounds=None, log=print, torch=True):
    torch_ok = torch and _have_torch()
    dims = (784, 64, 64, 10) if smoke else (784, 1024, 1024, 10)
    base = {"dims": dims, "batch": 16 if smoke else 128,
            "iters": 5 if smoke else 120, "warmup": 2 if smoke else 15}
    rounds = rounds or (1 if smoke else 3)
    jobs = {}
    impls = list(FASTOPT_CONFIGS) + (["torch fused"] if torch_ok else [])
    for blas in (1, 2):
        for name in impls:
            extra, threads = FASTOPT_CONFIGS.get(name, ({}, None))
            cfg = dict(base, kind="numpy-mlp", impl=name, fastopt_threads=threads)
            jobs[("numpy", blas, name)] = (cfg, _env(extra, blas), 1)
    if torch_ok:
        for name in impls:
            extra, threads = FASTOPT_CONFIGS.get(name, ({}, None))
            cfg = dict(base, kind="torch-mlp", impl=name, fastopt_threads=threads)
            jobs[("torch", None, name)] = (cfg, _env(extra, None), 1)
    for name, (extra, threads, blas) in (("default", ({}, None, None)),
                                         ("fastopt 1 thread", ({}, 1, None)),
                                         ("1 thread", ({"OMP_NUM_THREADS": "1"}, 1, 1))):
        cfg = dict(base, kind="numpy-mlp", impl=name, fastopt_threads=threads)
        jobs[("two processes", blas, name)] = (cfg, _env(extra, blas), 2)
    for n in (SMOKE_STEP_SIZES if smoke else STEP_SIZES):
        for name in STEP_CONFIGS:
            extra, threads = FASTOPT_CONFIGS[name]
            cfg = {"kind": "step", "size": n, "dims": dims, "batch": 1, "fastopt_threads": threads,
                   "iters": 5 if smoke else 15, "warmup": 1 if smoke else 3}
            jobs[("step", n, name)] = (cfg, _env(extra, None), 1)
    log(f"in-loop benchmark: {len(jobs)} configurations x {rounds} rounds, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    results = _run_rounds(jobs, rounds, log)
    return report(results, jobs, torch_ok, smoke)


def report(results, jobs, torch_ok, smoke):
    lines, targets = [], []
    med = lambda k, f: _median(results, k, f)  # noqa: E731

    def within(label, key_default, keys, limit=1.05):
        best = min(med(k, "iter_s") for k in keys)
        ratio = med(key_default, "iter_s") / best
        targets.append((label, ratio, ratio <= limit))

    for blas in (1, 2):
        keys = [k for k in jobs if k[0] == "numpy" and k[1] == blas]
        lines.append(f"\nNumPy MLP {jobs[keys[0]][0]['dims']}, BLAS {blas} thread(s): "
                     f"ms per iteration (ms in step)")
        for k in keys:
            lines.append(f"  {k[2]:<16} {med(k, 'iter_s') * 1e3:8.2f} ({med(k, 'step_s') * 1e3:.2f})")
        within(f"NumPy loop, BLAS {blas}: default vs best", ("numpy", blas, "default"),
               [k for k in keys if k[2] != "torch fused"])
    if torch_ok:
        keys = [k for k in jobs if k[0] == "torch"]
        lines.append("\ntorch MLP (torch's intra-op threads), step by fastopt through views or "
                     "torch fused: ms per iteration (ms in step)")
        for k in keys:
            lines.append(f"  {k[2]:<16} {med(k, 'iter_s') * 1e3:8.2f} ({med(k, 'step_s') * 1e3:.2f})")
        within("torch loop: fastopt default vs best fastopt configuration", ("torch", None, "default"),
               [k for k in keys if k[2] != "torch fused"])
    keys = [k for k in jobs if k[0] == "two processes"]
    lines.append("\nTwo processes, NumPy MLP loop each, at once: ms per iteration (ms in step), "
                 "mean of both")
    for k in keys:
        lines.append(f"  {k[2]:<16} {med(k, 'iter_s') * 1e3:8.2f} ({med(k, 'step_s') * 1e3:.2f})")
    ratio = med(("two processes", None, "default"), "iter_s") / \
        med(("two processes", 1, "1 thread"), "iter_s")
    targets.append(("two processes: defaults vs every library at 1 thread", ratio, ratio <= 1.05))
    sizes = sorted({k[1] for k in jobs if k[0] == "step"})
    lines.append("\nStep alone, float32 Adam, back to back: us per step")
    lines.append("  " + f"{'elements':>10}" + "".join(f"{n:>14}" for n in STEP_CONFIGS))
    for n in sizes:
        row = "".join(f"{med(('step', n, c), 'step_s') * 1e6:14.1f}" for c in STEP_CONFIGS)
        lines.append(f"  {n:>10}{row}")
        ratio = med(("step", n, "default"), "step_s") / med(("step", n, BEFORE), "step_s")
        targets.append((f"step alone at {n}: default vs {BEFORE}", ratio, ratio <= 1.05))
    waits = sorted({r["wait"] for rs in results.values() for r in rs})
    lines.append("\nOpenMP wait seen by the workers: " + " | ".join(waits))
    lines.append("\nTargets (ratio, limit 1.05):")
    for label, ratio, ok in targets:
        lines.append(f"  {'met ' if ok else 'MISS'} {ratio:6.3f}  {label}")
    if smoke:
        lines.append("(smoke sizes: the figures say nothing about speed)")
    return "\n".join(lines), targets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one round (for the tests)")
    ap.add_argument("--rounds", type=int, default=None, help="rotating rounds (default 3)")
    ap.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    text, _ = run(smoke=args.smoke, rounds=args.rounds, torch=not args.no_torch,
                  log=lambda m: print(m, file=sys.stderr))
    print(text)


if __name__ == "__main__":
    main()
