"""fastopt benchmark: python bench/run.py [--smoke] [--threshold] [--name NAME].

Times, side by side in one process, fastopt, a NumPy in-place ufunc
implementation, torch.optim (for-loop, foreach and fused=True, when torch is
installed) and a C memory-traffic probe with the same bytes per element as
the kernel, for every optimizer both libraries have, at several sizes and for
the ResNet-50 parameter list, at 1 and 2 threads.  Every implementation is
warmed up, then timed in rounds whose order rotates; figures are medians over
the rounds, and ratios are between medians of the same run.

Writes NAME.md (tables and the speed targets with met/gap), NAME.json (all
figures and the machine) and, when matplotlib is installed, NAME.png
(ns/element against size, log-log) into --out (default bench/results/).
``--smoke`` runs tiny sizes in a few seconds (used by the test suite);
``--threshold`` measures, per kernel, the size from which two threads beat one.
``--fixed-cost`` prints only the per-step fixed cost table (bench/fixed_cost.py);
``--matrix`` only the large-matrix optimizers beside torch (bench/matrix.py).
``--in-loop`` times the step inside NumPy and torch training loops, beside BLAS
and torch threads and a second process (bench/in_loop.py).
``--rows`` prints only the embedding-table comparison (bench/rows.py): a
1e6 x 64 float32 table, 1% and 0.1% of its rows per step, fastopt with row
gradients against its dense step, torch.optim.SparseAdam and the floor of a
row update on the machine (bench/floor.c).
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fastopt as fo  # noqa: E402
from fastopt import _core  # noqa: E402

import compact as compact_bench  # noqa: E402
import fixed_cost  # noqa: E402
import in_loop  # noqa: E402
import matrix  # noqa: E402
import impls as I  # noqa: E402
import resnet50  # noqa: E402
import rows as rows_bench  # noqa: E402

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000, 16_000_000)
SMOKE_SIZES = (1_000, 4_096)
IMPL_ORDER = ("floor", "fastopt", "fastopt_keras", "numpy", "torch_loop", "torch_foreach",
              "torch_fused")
IMPL_LABEL = {"floor": "traffic floor", "fastopt": "fastopt", "fastopt_keras": "fastopt (keras)",
              "numpy": "NumPy in-place", "torch_loop": "torch for-loop",
              "torch_foreach": "torch foreach", "torch_fused": "torch fused"}


# ---- cases ------------------------------------------------------------------------

def size_label(n):
    e = int(math.floor(math.log10(n)))
    m = n / 10 ** e
    return f"{m:g}e{e}" if n % 10 ** max(e - 1, 0) == 0 else str(n)


def cases(sizes, resnet, smoke):
    out = [(size_label(n), [(n,)]) for n in sizes]
    if resnet:
        if smoke:
            out.append(("resnet50[:12]", resnet50.SHAPES[:12]))
        else:
            out.append(("resnet50", resnet50.SHAPES))
    return out


def make_data(shapes, dtype):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [(rng.standard_normal(s) * 1e-2).astype(dtype) for s in shapes]
    return params, grads


# ---- timing -----------------------------------------------------------------------

def measure(built, reps, batch_s, pause_s):
    """Median seconds per step of each built implementation: warm-up, a batch
    size per implementation so a batch lasts about ``batch_s``, then ``reps``
    rounds in rotating order."""
    names = list(built)
    inner = {}
    for name in names:
        b = built[name]
        b.run(1)                                   # first call: lazy set-up
        t = b.run(1)
        inner[name] = max(1, min(100_000, int(batch_s / max(t, 1e-9))))
        b.run(inner[name])                         # warm-up at the batch size
    samples = {name: [] for name in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if pause_s:
                # lets spinning OpenMP workers of the previous implementation
                # (torch and fastopt use separate runtimes) go idle first
                time.sleep(pause_s)
            samples[name].append(built[name].run(inner[name]))
    out = {}
    for name in names:
        s = np.array(samples[name])
        out[name] = {"median_s": float(np.median(s)), "q1_s": float(np.percentile(s, 25)),
                     "q3_s": float(np.percentile(s, 75)), "rounds": len(s),
                     "steps_per_round": inner[name]}
    return out


def run_suite(args, impl_list, floor, log):
    results = []
    dtype = np.dtype(args.dtype)
    for opt_name in args.optimizers:
        spec = I.SPECS[opt_name]
        names = [i for i in impl_list if i != "fastopt_keras" or opt_name == "adam"]
        I.check_agreement(spec, names)
        for label, shapes in cases(args.sizes, args.resnet, args.smoke):
            params0, grads = make_data(shapes, dtype)
            nelem = sum(p.size for p in params0)
            for threads in args.threads:
                built = {name: I.build(name, spec, params0, grads, threads, floor)
                         for name in names}
                res = measure(built, args.reps, args.batch_ms * 1e-3, args.pause_ms * 1e-3)
                del built
                for name, r in res.items():
                    r.update(optimizer=opt_name, case=label, elements=nelem,
                             tensors=len(shapes), threads=threads, impl=name,
                             ns_per_element=r["median_s"] * 1e9 / nelem,
                             bytes_per_element=spec.bytes_per_element(dtype.itemsize))
                    results.append(r)
                log(f"{opt_name:6s} {label:>14s} {threads}T  " + "  ".join(
                    f"{n}={res[n]['median_s'] * 1e9 / nelem:.3g}" for n in names) + " ns/elem")
            del params0, grads
    return results


def threshold_sweep(args, log):
    """Per kernel: fastopt at 1 and 2 threads with the serial threshold
    disabled, over sizes 2^9..2^18 (2^9..2^12 in smoke mode), interleaved.  The crossover is the
    smallest size from which 2 threads are faster at every larger size."""
    old = _core.parallel_threshold()
    _core.set_parallel_threshold(0)
    out = {}
    try:
        for opt_name in args.optimizers:
            spec = I.SPECS[opt_name]
            rows = []
            for e in range(9, 13 if args.smoke else 19):
                n = 2 ** e
                params0, grads = make_data([(n,)], np.dtype(args.dtype))
                built = {f"{t}T": I.build("fastopt", spec, params0, grads, t) for t in (1, 2)}
                res = measure(built, args.reps, args.batch_ms * 1e-3, 0)
                t1, t2 = res["1T"]["median_s"], res["2T"]["median_s"]
                rows.append({"elements": n, "one_thread_s": t1, "two_threads_s": t2,
                             "speedup": t1 / t2})
                log(f"threshold {opt_name:6s} {n:>7d}: 1T {t1 * 1e6:.2f} us  2T {t2 * 1e6:.2f} us"
                    f"  x{t1 / t2:.2f}")
            cross = None
            for k in range(len(rows)):
                if all(r["speedup"] > 1.0 for r in rows[k:]):
                    cross = rows[k]["elements"]
                    break
            out[opt_name] = {"rows": rows, "crossover": cross}
    finally:
        _core.set_parallel_threshold(old)
    return out


# ---- the machine -----------------------------------------------------------------

def _first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(floor):
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "fastopt": fo.__version__,
            "fastopt_simd": _core.get_simd(), "fastopt_openmp": _core.openmp(),
            "fastopt_parallel_threshold": _core.parallel_threshold(),
            "logical_cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            info["memory_gib"] = round(kb / 2 ** 20, 1)
    except OSError:
        info["cpu"] = platform.processor()
    lscpu = _first_line(["sh", "-c", "lscpu | grep -E '^(L2|L3) cache' | tr -s ' ' | paste -sd ';'"])
    if lscpu:
        info["caches"] = lscpu
    info["cc"] = _first_line([floor.compiler, "--version"]) if floor else ""
    info["floor_flags"] = floor.flags if floor else ""
    if I.torch_available():
        import torch
        info["torch"] = torch.__version__
    return info


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


# ---- reporting --------------------------------------------------------------------

def index(results):
    return {(r["optimizer"], r["case"], r["threads"], r["impl"]): r for r in results}


def targets(results, sizes_done):
    """The speed targets of DESIGN.md section 6 (2 threads, float32), each with
    its measured value; targets whose case or implementation was not run are
    left out."""
    ix = index(results)
    out = []

    def get(opt, case, impl, key="median_s"):
        r = ix.get((opt, case, 2, impl))
        return None if r is None else r[key]

    def add(case, what, value, ok, fmt):
        if value is not None:
            out.append({"case": case, "target": what, "measured": fmt.format(value),
                        "value": value, "met": bool(ok(value))})

    for impl, conv in (("fastopt", "torch"), ("fastopt_keras", "keras")):
        v = get("adam", "1e3", impl)
        add("Adam 1e3", f"<= 3 us per step ({conv} convention)",
            None if v is None else v * 1e6, lambda x: x <= 3.0, "{:.2f} us")

    def speedup(case, other, need, label):
        a, b = get("adam", case, other), get("adam", case, "fastopt")
        add(f"Adam {label}", f">= {need:g}x faster than {IMPL_LABEL[other]}",
            None if a is None or b is None else a / b, lambda x: x >= need, "{:.2f}x")

    speedup("1e3", "torch_fused", 10, "1e3")
    speedup("1e5", "torch_fused", 2.5, "1e5")
    f, fl = get("adam", "1.6e7", "fastopt"), get("adam", "1.6e7", "floor")
    add("Adam 1.6e7", "<= 1.10x the 28 B/element traffic floor",
        None if f is None or fl is None else f / fl, lambda x: x <= 1.10, "{:.3f}x")
    speedup("1.6e7", "torch_fused", 1.10, "1.6e7")
    speedup("resnet50", "torch_fused", 1.15, "ResNet-50 list")
    speedup("1e6", "numpy", 10, "1e6")
    for opt in sorted({r["optimizer"] for r in results} - {"adam"}):
        f, fl = get(opt, "1.6e7", "fastopt"), get(opt, "1.6e7", "floor")
        nb = next((r["bytes_per_element"] for r in results if r["optimizer"] == opt), 0)
        add(f"{I.SPECS[opt].name} 1.6e7", f"<= 1.15x its {nb} B/element traffic floor",
            None if f is None or fl is None else f / fl, lambda x: x <= 1.15, "{:.3f}x")
    return out


def markdown(meta, results, tgts, thresh):
    lines = [f"# fastopt benchmark: {meta['name']}", ""]
    m = meta["machine"]
    lines += [f"- date: {meta['date']}", f"- command: `{meta['command']}`",
              f"- CPU: {m.get('cpu', '?')}, {m.get('logical_cpus')} logical CPUs"
              + (f" ({m['caches']})" if m.get("caches") else "")
              + f", {m.get('memory_gib', '?')} GiB memory",
              f"- {m['platform']}; Python {m['python']}, NumPy {m['numpy']}"
              + (f", torch {m['torch']}" if "torch" in m else ", torch not installed"),
              f"- fastopt {m['fastopt']}: SIMD {m['fastopt_simd']}, OpenMP "
              f"{m['fastopt_openmp']}, parallel threshold {m['fastopt_parallel_threshold']}",
              f"- floor probe: {m.get('cc', '')} {m.get('floor_flags', '')}",
              f"- load average (1/5/15 min) before: {meta['load_before']}, after: "
              f"{meta['load_after']}",
              f"- {meta['reps']} rotating rounds per case, batches of about "
              f"{meta['batch_ms']} ms; medians; dtype {meta['dtype']}", ""]
    busy = max((meta["load_before"] or [0])[0], (meta["load_after"] or [0])[0])
    if busy > 0.5 * (m.get("logical_cpus") or 1):
        lines += [f"**Warning: load average {busy} on {m.get('logical_cpus')} CPUs: other "
                  f"processes competed for the CPUs during this run.  Multi-thread figures "
                  f"(a parallel region waits for every thread to be scheduled) are not "
                  f"representative; rerun on a quiet machine.**", ""]
    if tgts:
        lines += ["## Targets (2 threads, float32 Adam unless named)", "",
                  "| case | target | measured | |", "|---|---|---|---|"]
        for t in tgts:
            lines.append(f"| {t['case']} | {t['target']} | {t['measured']} | "
                         f"{'met' if t['met'] else 'GAP'} |")
        lines.append("")
    ix = index(results)
    impls_run = [i for i in IMPL_ORDER if any(r["impl"] == i for r in results)]
    for opt in dict.fromkeys(r["optimizer"] for r in results):
        rs = [r for r in results if r["optimizer"] == opt]
        nb = rs[0]["bytes_per_element"]
        lines += [f"## {opt} ({nb} B/element), ns per element per step (lower is better)", ""]
        cols = [i for i in impls_run if any(r["impl"] == i for r in rs)]
        head = (["case", "threads"] + [IMPL_LABEL[c] for c in cols]
                + ["fastopt us/step", "fastopt / floor"]
                + (["fused / fastopt"] if "torch_fused" in cols else [])
                + (["NumPy / fastopt"] if "numpy" in cols else []))
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for case in dict.fromkeys(r["case"] for r in rs):
            for th in sorted({r["threads"] for r in rs if r["case"] == case}):
                row = [case, str(th)]
                for c in cols:
                    r = ix.get((opt, case, th, c))
                    row.append("" if r is None else f"{r['ns_per_element']:.3g}")
                f = ix[(opt, case, th, "fastopt")]
                row.append(f"{f['median_s'] * 1e6:.3g}")
                fl = ix.get((opt, case, th, "floor"))
                row.append(f"{f['median_s'] / fl['median_s']:.2f}" if fl else "")
                for other in ("torch_fused", "numpy"):
                    if other in cols:
                        o = ix.get((opt, case, th, other))
                        row.append(f"{o['median_s'] / f['median_s']:.2f}x" if o else "")
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if thresh:
        lines += ["## Parallel threshold: fastopt 1 thread / 2 threads time (>1: 2 threads "
                  "faster)", ""]
        opts = list(thresh)
        lines += ["| elements | " + " | ".join(opts) + " |", "|---|" + "---|" * len(opts)]
        for k, row in enumerate(thresh[opts[0]]["rows"]):
            lines.append(f"| {row['elements']} | " + " | ".join(
                f"{thresh[o]['rows'][k]['speedup']:.2f}" for o in opts) + " |")
        lines.append("| crossover | " + " | ".join(str(thresh[o]["crossover"]) for o in opts)
                     + " |")
        lines.append("")
    return "\n".join(lines)


def plot(path, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    opts = list(dict.fromkeys(r["optimizer"] for r in results))
    threads = sorted({r["threads"] for r in results})
    fig, axes = plt.subplots(len(opts), len(threads), figsize=(5.5 * len(threads),
                                                               4.2 * len(opts)),
                             squeeze=False, sharex=True)
    styles = {"floor": dict(color="black", ls="--"), "fastopt": dict(color="C3", lw=2.2),
              "fastopt_keras": dict(color="C3", ls=":"), "numpy": dict(color="C0"),
              "torch_loop": dict(color="C2", ls="-."), "torch_foreach": dict(color="C8"),
              "torch_fused": dict(color="C1", lw=1.8)}
    for i, opt in enumerate(opts):
        for j, th in enumerate(threads):
            ax = axes[i][j]
            for impl in IMPL_ORDER:
                rs = [r for r in results if r["optimizer"] == opt and r["threads"] == th
                      and r["impl"] == impl]
                single = sorted((r for r in rs if r["tensors"] == 1),
                                key=lambda r: r["elements"])
                many = [r for r in rs if r["tensors"] > 1]
                st = styles[impl]
                if single:
                    ax.plot([r["elements"] for r in single],
                            [r["ns_per_element"] for r in single], marker="o", ms=3.5,
                            label=IMPL_LABEL[impl], **st)
                for r in many:
                    ax.plot([r["elements"]], [r["ns_per_element"]], marker="D", ms=6,
                            mfc="none", color=st["color"], ls="none")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{opt}, {th} thread{'s' if th > 1 else ''} "
                         f"(diamonds: ResNet-50 list)", fontsize=10)
            ax.set_ylabel("ns per element per step")
            if i == len(opts) - 1:
                ax.set_xlabel("elements")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- main -----------------------------------------------------------------------

def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="latest", help="base name of the output files")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder")
    ap.add_argument("--optimizers", default=",".join(I.SPECS),
                    help=f"comma-separated subset of {','.join(I.SPECS)}")
    ap.add_argument("--sizes", default=None, help="comma-separated element counts")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--no-resnet", dest="resnet", action="store_false",
                    help="skip the ResNet-50 parameter list")
    ap.add_argument("--no-torch", action="store_true", help="leave torch out even if installed")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--reps", type=int, default=None, help="rotating rounds per case")
    ap.add_argument("--batch-ms", type=float, default=None, help="target length of one batch")
    ap.add_argument("--pause-ms", type=float, default=None,
                    help="idle time before each batch (OpenMP spin-down)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes and few rounds: checks the bench runs, measures nothing")
    ap.add_argument("--threshold", action="store_true",
                    help="also measure where 2 threads start to beat 1, per kernel")
    ap.add_argument("--threshold-only", action="store_true",
                    help="only the threshold sweep")
    ap.add_argument("--fixed-cost", action="store_true",
                    help="only the fixed cost of a step (1e3 elements, options, schedules, "
                         "100 tensors), at the largest --threads")
    ap.add_argument("--in-loop", action="store_true",
                    help="only the step inside training loops beside BLAS/torch threads and a "
                         "second process, with the step-only figures (bench/in_loop.py)")
    ap.add_argument("--rows", action="store_true",
                    help="only the embedding-table comparison (bench/rows.py), at the largest "
                         "--threads")
    ap.add_argument("--rows-table", default=None,
                    help="ROWSxDIM of the --rows table (default 1000000x64; 20000x64 with "
                         "--smoke)")
    ap.add_argument("--matrix", action="store_true",
                    help="only the optimizers that work on whole matrices (Adafactor, Muon), at "
                         "--matrix-rows x --matrix-cols, beside torch.optim, at the largest --threads")
    ap.add_argument("--matrix-rows", type=int, default=2048, help="rows of the --matrix case")
    ap.add_argument("--matrix-cols", type=int, default=2048, help="columns of the --matrix case")
    ap.add_argument("--compact", action="store_true",
                    help="Adam with bfloat16/int8 state and bfloat16 params beside float32, "
                         "torch fused and the AdamW8bit of bitsandbytes and torchao (bench/compact.py)")
    ap.add_argument("--compact-size", type=float, default=None,
                    help="elements of the --compact problem (1.6e7; smoke 1e5)")
    args = ap.parse_args(argv)
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    for o in args.optimizers:
        if o not in I.SPECS:
            ap.error(f"--optimizers: unknown {o!r}; known: {', '.join(I.SPECS)}")
    if args.sizes is None:
        args.sizes = SMOKE_SIZES if args.smoke else DEFAULT_SIZES
    else:
        args.sizes = tuple(int(float(s)) for s in args.sizes.split(",") if s)
    args.threads = tuple(int(t) for t in args.threads.split(",") if t)
    if args.reps is None:
        args.reps = 3 if args.smoke else 15
    if args.batch_ms is None:
        args.batch_ms = 0.5 if args.smoke else 8.0
    if args.pause_ms is None:
        args.pause_ms = 0.0 if args.smoke else 2.0
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.in_loop:
        text, _ = in_loop.run(smoke=args.smoke, torch=not args.no_torch, log=log)
        log(text)
        return 0
    if args.fixed_cost:
        threads = max(args.threads)
        number, repeat = (200, 2) if args.smoke else (20000, 5)
        rows = fixed_cost.measure(threads, number, repeat, log)
        log("")
        log(fixed_cost.markdown(rows, threads, number, repeat))
        return 0
    if args.matrix:
        threads = max(args.threads)
        number, repeat = (1, 2) if args.smoke else (5, 5)
        torch_ok = not args.no_torch and I.torch_available()
        rows = matrix.measure(args.matrix_rows, args.matrix_cols, threads, number, repeat, torch_ok, log)
        log("")
        log(matrix.markdown(rows, args.matrix_rows, args.matrix_cols, threads, number, repeat))
        return 0
    load_before = loadavg()
    log(f"load average before: {load_before}")
    if args.compact:
        n = int(args.compact_size or (1e5 if args.smoke else 1.6e7))
        threads = max(args.threads)
        torch_ok = not args.no_torch and I.torch_available()
        floor = I.FloorProbe()
        try:
            results = compact_bench.run(n, threads, measure, args.reps, args.batch_ms * 1e-3,
                                        args.pause_ms * 1e-3, floor, torch_ok, log)
        finally:
            floor.close()
        log("")
        log(compact_bench.markdown(results, n, threads))
        log(f"load average after: {loadavg()}")
        return 0
    if args.rows:
        spec = args.rows_table or ("20000x64" if args.smoke else "1000000x64")
        nrows, dim = (int(float(x)) for x in spec.lower().split("x"))
        threads = max(args.threads)
        torch_ok = not args.no_torch and I.torch_available()
        floor = I.FloorProbe()
        try:
            results = rows_bench.run(nrows, dim, threads, measure, args.reps,
                                     args.batch_ms * 1e-3, args.pause_ms * 1e-3, torch_ok, log,
                                     floor)
        finally:
            floor.close()
        log("")
        log(rows_bench.markdown(results, nrows, dim, threads))
        log(f"load average after: {loadavg()}")
        return 0
    impl_list = ["fastopt", "fastopt_keras", "numpy"]
    if not args.no_torch and I.torch_available():
        impl_list += list(I.TORCH_VARIANTS)
    floor = I.FloorProbe()
    try:
        if not floor.openmp and max(args.threads) > 1:
            log("floor probe built without OpenMP: its multi-thread figures are serial")
        impl_list.insert(0, "floor")
        results = [] if args.threshold_only else run_suite(args, impl_list, floor, log)
        thresh = threshold_sweep(args, log) if (args.threshold or args.threshold_only) else None
        meta = {"name": args.name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None
                                                                else argv),
                "machine": machine(floor), "load_before": load_before,
                "load_after": loadavg(), "reps": args.reps, "batch_ms": args.batch_ms,
                "pause_ms": args.pause_ms, "dtype": args.dtype, "smoke": args.smoke,
                "implementations": impl_list}
    finally:
        floor.close()
    tgts = targets(results, args.sizes)
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, args.name)
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "targets": tgts, "results": results, "threshold": thresh},
                  f, indent=1)
    md = markdown(meta, results, tgts, thresh)
    with open(base + ".md", "w") as f:
        f.write(md + "\n")
    wrote = [base + ".md", base + ".json"]
    if results and not args.no_plot and plot(base + ".png", results):
        wrote.append(base + ".png")
    log("")
    log(md)
    log("wrote " + ", ".join(wrote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
