"""``python -m fastopt``: build facts and a short timing of one Adam step.

Side-by-side comparisons (NumPy, torch.optim, the memory-traffic floor) live
in the source tree's benchmark: ``python bench/run.py``.
"""
import time

import numpy as np

import fastopt as fo


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def timing(sizes=(1_000, 100_000, 1_000_000), repeat=30):
    """Median seconds per float32 Adam step (a full ``opt.step([g])`` call)."""
    rows = []
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
        rows.append((n, _median_time(steps, repeat) / inner))
    return rows


def main():
    fo.show_config()
    print("\nAdam step, float32, median of repeated runs:")
    print(f"{'elements':>10} {'per step':>12} {'per element':>12}")
    for n, t in timing():
        print(f"{n:>10} {t * 1e6:>10.2f}us {t * 1e9 / n:>10.3f}ns")
    print("\nFor comparisons with NumPy, torch.optim and the memory-traffic floor, run "
          "python bench/run.py from a source checkout.")


if __name__ == "__main__":
    main()
