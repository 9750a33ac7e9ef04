"""Embedding tables: a step that touches a few rows of a large table.

A float32 table of ``rows x dim`` (default 1e6 x 64) and, per step, row
gradients for a fraction of its rows (1% and 0.1%), drawn at random with one
index in ten a repeat of an earlier one (as an embedding lookup of a batch
gives).  Timed side by side in one process, in rotating rounds, medians:

* fastopt ``SparseAdam`` and ``Adam`` with a :class:`fastopt.RowGrad` (lazy:
  only the rows given move), coalescing included;
* fastopt ``Adam`` with the dense gradient of the same rows (every row and its
  state read and written), the dense array built beforehand;
* ``torch.optim.SparseAdam`` with the same rows as an uncoalesced sparse
  gradient (as ``nn.Embedding(sparse=True)`` gives), when torch is installed.
* the floor of any lazy row update (bench/floor.c): the distinct rows of each
  step, their gradients already summed, read and written with trivial
  arithmetic in a table and two state arrays of their own, split between the
  threads as fastopt splits its rows.  No coalescing, no checks: what the
  cache misses of the rows alone cost on this machine.

    python bench/run.py --rows [--rows-table 1000000x64] [--threads 2]

The fastopt implementations share one table (the figures are times, and
every update keeps it finite); torch has its own copy.
"""
import time

import numpy as np

import fastopt as fo

DENSITIES = (0.01, 0.001)
NGRADS = 8          # distinct row gradients cycled through


def make_grads(rows, dim, density, seed):
    """NGRADS (indices, values) pairs with repeats present."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(rows * density)))
    out = []
    for _ in range(NGRADS):
        idx = rng.integers(0, rows, n)
        rep = np.arange(10, n, 10)
        idx[rep] = idx[rng.integers(0, 10, len(rep)) + rep - 10]     # one in ten a repeat
        out.append((idx, (rng.standard_normal((n, dim)) * 1e-2).astype(np.float32)))
    return out


def _touch(opt):
    """Write the fresh state arrays once: np.zeros maps pages lazily, and the
    first write to each page is a page fault that a long run pays only once
    (torch fills its state when it allocates it)."""
    for arrays in opt.state_arrays():
        for a in arrays:
            a.fill(0)


class _Timed:
    def run(self, k):
        t0 = time.perf_counter()
        for j in range(k):
            self.step(self.i % NGRADS)
            self.i += 1
        return (time.perf_counter() - t0) / k


class FastoptRows(_Timed):
    def __init__(self, cls, table, grads, threads):
        self.opt = cls([table], num_threads=threads)
        _touch(self.opt)
        self.grads = [[fo.RowGrad(idx, vals)] for idx, vals in grads]
        self.i = 0

    def step(self, j):
        self.opt.step(self.grads[j])


class FastoptDense(_Timed):
    """The dense step over the whole table: one dense gradient (built once per
    distinct row gradient would take NGRADS tables; one is enough, the step
    reads all of it whatever it holds)."""

    def __init__(self, table, grads, threads):
        self.opt = fo.Adam([table], num_threads=threads)
        _touch(self.opt)
        self.g = np.zeros_like(table)
        idx, vals = grads[0]
        np.add.at(self.g, idx, vals)
        self.i = 0

    def step(self, j):
        self.opt.step([self.g])


class TorchSparseAdam(_Timed):
    def __init__(self, table, grads, threads):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        self.p = torch.nn.Parameter(torch.from_numpy(table.copy()))
        self.opt = torch.optim.SparseAdam([self.p], lr=1e-3)
        shape = tuple(table.shape)
        self.grads = [torch.sparse_coo_tensor(torch.from_numpy(idx)[None],
                                              torch.from_numpy(vals), shape,
                                              check_invariants=False)
                      for idx, vals in grads]
        self.i = 0

    def step(self, j):
        self.p.grad = self.grads[j]
        self.opt.step()


class RowFloor(_Timed):
    """The floor probe over each step's distinct rows (Adam's two state arrays)."""

    def __init__(self, probe, table, grads, threads):
        import ctypes
        self.lib, self.threads = probe.lib, threads
        self.p = table.copy()
        self.states = [np.zeros_like(table) for _ in range(2)]
        self.arr = (ctypes.c_void_p * 2)(*[a.ctypes.data for a in self.states])
        self.sets = []
        for idx, vals in grads:
            rows, inverse = np.unique(idx, return_inverse=True)
            summed = np.zeros((len(rows), table.shape[1]), table.dtype)
            np.add.at(summed, inverse, vals)
            self.sets.append((rows.astype(np.int64), summed))
        self.i = 0

    def run(self, k):
        t = 0.0
        for _ in range(k):
            rows, g = self.sets[self.i % NGRADS]
            t += self.lib.floor_rows_probe(self.p.ctypes.data, g.ctypes.data, self.arr, 2,
                                           rows.ctypes.data, len(rows), g.shape[1], 0,
                                           self.threads)
            self.i += 1
        return t * 1e-9 / k


def run(rows, dim, threads, measure, reps, batch_s, pause_s, torch_ok, log, floor=None):
    """Medians per density; returns result rows for the table."""
    table = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    results = []
    for density in DENSITIES:
        grads = make_grads(rows, dim, density, seed=int(density * 1e6))
        built = {
            "fastopt SparseAdam (RowGrad)": FastoptRows(fo.SparseAdam, table, grads, threads),
            "fastopt Adam (RowGrad)": FastoptRows(fo.Adam, table, grads, threads),
            "fastopt Adam (dense step)": FastoptDense(table, grads, threads),
        }
        if torch_ok:
            built["torch.optim.SparseAdam"] = TorchSparseAdam(table, grads, threads)
        if floor is not None:
            built["row-update floor (bench/floor.c)"] = RowFloor(floor, table, grads, threads)
        res = measure(built, reps, batch_s, pause_s)
        del built
        n = len(grads[0][0])
        for name, r in res.items():
            r.update(impl=name, density=density, indices=n,
                     distinct=len(np.unique(grads[0][0])), rows=rows, dim=dim, threads=threads)
            results.append(r)
        log(f"{density:.1%} of rows ({n} indices): " + "  ".join(
            f"{k}={v['median_s'] * 1e3:.3g} ms" for k, v in res.items()))
    return results


def markdown(results, rows, dim, threads):
    """The table: ms per step and the ratios the targets name."""
    out = [f"Embedding table {rows} x {dim} float32, {threads} thread(s), ms per step "
           f"(median; ratio = that implementation's time / fastopt Adam (RowGrad)'s):", "",
           "| rows per step | implementation | ms/step | ratio |", "|---|---|---:|---:|"]
    for density in DENSITIES:
        rs = [r for r in results if r["density"] == density]
        base = next(r for r in rs if r["impl"] == "fastopt Adam (RowGrad)")["median_s"]
        for r in rs:
            out.append(f"| {density:.1%} ({r['indices']} indices, {r['distinct']} distinct) "
                       f"| {r['impl']} | {r['median_s'] * 1e3:.3f} | "
                       f"{r['median_s'] / base:.1f}x |")
    return "\n".join(out)
