"""``python -m fastopt``: build facts and a short timing of one Adam step.

Side-by-side comparisons (NumPy, torch.optim, the memory-traffic floor) live
in the source tree's benchmark: ``python bench/run.py``.
"""
import os
import time

import numpy as np

import fastopt as fo


def _times(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def contention(load, cores, spreads):
    """Why the timing may not be this machine's own speed: a list of lines
    (empty when it looks clean).  ``load``: 1-minute load average before the
    timing; ``spreads``: median/min time ratio of each size."""
    notes = []
    if load is not None and load >= cores:
        notes.append(f"the load average is {load:.2f} on {cores} usable cores: other processes "
                     f"share them, so these timings are inflated (and OpenMP threads that spin "
                     f"while waiting make it worse; README, 'Threads')")
    if spreads and max(spreads) > 2.0:
        notes.append(f"repeated timings varied by up to {max(spreads):.1f}x (median/min): the "
                     f"cores were contended during the run; rerun on an idle machine")
    return notes


def timing(sizes=(1_000, 100_000, 1_000_000), repeat=30):
    """Median seconds per float32 Adam step (a full ``opt.step([g])`` call)."""
    rows, spreads = [], []
    for n in sizes:
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        opt = fo.Adam([p])
        inner = max(1, 200_000 // n)

        def steps():
            for _ in range(inner):
                opt.step([g])

        steps()
        times = _times(steps, repeat)
        rows.append((n, float(np.median(times)) / inner))
        spreads.append(float(np.median(times)) / max(min(times), 1e-12))
    timing.spreads = spreads
    return rows


def main():
    fo.show_config()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    print("\nAdam step, float32, median of repeated runs:")
    print(f"{'elements':>10} {'per step':>12} {'per element':>12}")
    for n, t in timing():
        print(f"{n:>10} {t * 1e6:>10.2f}us {t * 1e9 / n:>10.3f}ns")
    for note in contention(load, _cores(), timing.spreads):
        print(f"warning: {note}")
    print("\nFor comparisons with NumPy, torch.optim and the memory-traffic floor, run "
          "python bench/run.py from a source checkout.")


if __name__ == "__main__":
    main()
