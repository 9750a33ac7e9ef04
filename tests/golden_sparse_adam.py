"""Writes tests/data/sparse_adam_golden.json: known answers of
torch.optim.SparseAdam, recorded from torch itself (float64, torch's default
single-process CPU path), for the tests that run without torch.

    PYTHONPATH=tests python tests/golden_sparse_adam.py          # print a diff
    PYTHONPATH=tests python tests/golden_sparse_adam.py --write  # record

* ``optim_db``: rows ``(kwargs, None, w)`` for tests/optim_db.py's golden
  problem (``GOLDEN_W0``, three steps of ``GOLDEN_GRADS``), each gradient given
  to torch as a sparse tensor naming every element.
* ``rows``: row-gradient trajectories on a 12 x 3 table: 30 steps, each naming
  some rows (repeats included, in any order, sometimes none), a learning rate
  that changes every step; the table and both moments after the last step.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

import optim_db

OUT = Path(__file__).resolve().parent / "data" / "sparse_adam_golden.json"
ROWS, DIM, STEPS = 12, 3, 30
ROW_CASES = [
    {},
    {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3, "maximize": True},
]


def lr_at(step):
    return 0.05 * (0.9 ** step) * (1.0 + 0.5 * (step % 3))


def row_problem():
    """The table and, per step, (indices, values): fixed by a seed."""
    rng = np.random.default_rng(2026)
    w0 = rng.standard_normal((ROWS, DIM))
    steps = []
    for step in range(STEPS):
        n = 0 if step == 7 else int(rng.integers(1, 2 * ROWS))
        idx = rng.integers(0, ROWS, n)
        steps.append((idx.tolist(), (rng.standard_normal((n, DIM)) * 0.5).tolist()))
    return w0, steps


def _torch_opt(params, kwargs, lr):
    betas = (kwargs.get("beta_1", 0.9), kwargs.get("beta_2", 0.999))
    return torch.optim.SparseAdam(params, lr=lr, betas=betas, eps=kwargs.get("epsilon", 1e-8),
                                  maximize=kwargs.get("maximize", False))


def record():
    torch.set_default_dtype(torch.float64)
    rows = []
    for kwargs in ROW_CASES[:1] + [{"learning_rate": 0.1, "beta_1": 0.5, "beta_2": 0.9},
                                   {"learning_rate": 0.05, "maximize": True}]:
        w = torch.tensor(optim_db.GOLDEN_W0)
        opt = _torch_opt([w], kwargs, kwargs.get("learning_rate", 1e-3))
        for g in optim_db.GOLDEN_GRADS:
            w.grad = torch.sparse_coo_tensor(torch.arange(len(g))[None], torch.tensor(g),
                                             (len(g),))      # zeros included
            opt.step()
        rows.append([kwargs, None, w.tolist()])
    w0, steps = row_problem()
    trajectories = []
    for kwargs in ROW_CASES:
        w = torch.tensor(w0)
        opt = _torch_opt([w], kwargs, lr_at(0))
        for step, (idx, vals) in enumerate(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            w.grad = torch.sparse_coo_tensor(torch.tensor([idx], dtype=torch.int64),
                                             torch.tensor(vals).reshape(len(idx), DIM),
                                             (ROWS, DIM))
            opt.step()
        st = opt.state[w]
        trajectories.append({"kwargs": kwargs, "w": w.tolist(), "m": st["exp_avg"].tolist(),
                             "v": st["exp_avg_sq"].tolist(), "steps": int(st["step"])})
    return {"generator": "tests/golden_sparse_adam.py", "torch": torch.__version__,
            "dtype": "float64", "optim_db": rows,
            "rows": {"w0": w0.tolist(), "steps": steps, "trajectories": trajectories}}


def main():
    data = record()
    text = json.dumps(data, indent=1) + "\n"
    if "--write" in sys.argv:
        OUT.write_text(text)
        print(f"wrote {OUT}")
    else:
        old = OUT.read_text() if OUT.exists() else ""
        print("unchanged" if old == text else f"differs from {OUT} (run with --write)")


if __name__ == "__main__":
    main()
