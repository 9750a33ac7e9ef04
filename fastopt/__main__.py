"""``python -m fastopt``: build facts and a short Adam timing beside NumPy."""
import time

import numpy as np

import fastopt as fo
from fastopt._numpy_ref import numpy_adam


def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def timing(sizes=(1_000, 1_000_000), repeat=30):
    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        opt = fo.Adam([p])
        inner = max(1, 200_000 // n)

        def fast():
            for _ in range(inner):
                opt.step([g])

        q = p.copy()
        m, v, tmp = np.zeros_like(q), np.zeros_like(q), np.empty_like(q)

        def slow():
            for k in range(inner):
                numpy_adam(q, g, m, v, k + 1, tmp=tmp)

        fast(), slow()
        tf = _median_time(fast, repeat) / inner
        tn = _median_time(slow, repeat) / inner
        rows.append((n, tf, tn))
    return rows


def main():
    fo.show_config()
    print("\nAdam step, float32, median of repeated runs:")
    print(f"{'elements':>10} {'fastopt':>12} {'NumPy in-place':>15} {'speed-up':>9}")
    for n, tf, tn in timing():
        print(f"{n:>10} {tf * 1e6:>10.2f}us {tn * 1e6:>13.2f}us {tn / tf:>8.1f}x")


if __name__ == "__main__":
    main()
