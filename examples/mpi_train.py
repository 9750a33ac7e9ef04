"""Data-parallel training of a small MLP over MPI, checked against one process.

    mpiexec -n 2 python examples/mpi_train.py            # ShardedOptimizer (ZeRO-1)
    mpiexec -n 2 python examples/mpi_train.py --plain    # allreduce_gradients + fo.Adam
    python examples/mpi_train.py                         # one rank

Data: the scikit-learn digits (8x8 images, 10 classes; bundled with
scikit-learn, no download) when scikit-learn is installed, with a 64-64-10 tanh
MLP and softmax cross-entropy.  Without scikit-learn, a synthetic NumPy
regression (32 features, a random tanh teacher plus noise) with a 32-64-1 MLP
and mean squared error, so the example runs with only ``pip install
"fastopt[mpi]"``.

Every step takes a global batch of ``--batch`` samples (the same on every
rank); rank ``r`` computes the mean gradient of its contiguous part of it, and
the optimizer averages over ranks.  After training, rank 0 repeats the run in
one process with the gradient of the whole global batch and prints both final
losses: they agree to rounding (float64: ~1e-15 relative; the batch sum is
split into per-rank partial sums, so the last bits may differ).
"""
import argparse
import time

import numpy as np
from mpi4py import MPI

import fastopt as fo
from fastopt.distributed import ShardedOptimizer, allreduce_gradients, flat_arrays


def load_data():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((2048, 32))
        teacher = rng.standard_normal((32, 1)) / np.sqrt(32)
        y = np.tanh(X @ teacher) + 0.05 * rng.standard_normal((2048, 1))
        return X, y, "synthetic regression (2048 samples, 32 features)", "mse"
    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1e-8)
    return X, y, "scikit-learn digits (1797 samples, 64 features, 10 classes)", "xent"


def forward(params, X, y, task):
    """Loss and gradients (means over the rows of X) of a one-hidden-layer MLP."""
    W1, b1, W2, b2 = params
    H = np.tanh(X @ W1 + b1)
    Z = H @ W2 + b2
    n = X.shape[0]
    if task == "xent":
        Z = Z - Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(P[np.arange(n), y]))
        dZ = P
        dZ[np.arange(n), y] -= 1.0
        dZ /= n
    else:
        E = Z - y
        loss = np.mean(E * E)
        dZ = 2.0 * E / E.size
    gW2 = H.T @ dZ
    gb2 = dZ.sum(axis=0)
    dH = (dZ @ W2.T) * (1.0 - H * H)
    return float(loss), [X.T @ dH, dH.sum(axis=0), gW2, gb2]


def init_values(d_in, d_out, hidden=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((d_in, hidden)) / np.sqrt(d_in), np.zeros(hidden),
            rng.standard_normal((hidden, d_out)) / np.sqrt(hidden), np.zeros(d_out)]


def batches(n, batch, steps, seed=1):
    """Global batch indices per step: the same sequence on every rank."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * batch // n) + 1)])
    return [order[t * batch:(t + 1) * batch] for t in range(steps)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64, help="global batch size")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--plain", action="store_true",
                        help="allreduce_gradients + a full Adam per rank instead of "
                             "ShardedOptimizer")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the {world} ranks")

    X, y, what, task = load_data()
    d_out = 10 if task == "xent" else 1
    values = init_values(X.shape[1], d_out)
    steps = batches(len(X), args.batch, args.steps)
    part = args.batch // world

    # Parameters as views of one buffer: the all-gather writes into them directly.
    params = flat_arrays([v.shape for v in values], np.float64)
    for p, v in zip(params, values):
        p[...] = v
    if args.plain:
        opt = fo.Adam(params, learning_rate=args.lr)
    else:
        opt = ShardedOptimizer(fo.Adam, params, comm, learning_rate=args.lr)
    comm.Barrier()
    t0 = time.perf_counter()
    for idx in steps:
        mine = idx[rank * part:(rank + 1) * part]
        _, grads = forward(params, X[mine], y[mine], task)
        if args.plain:
            allreduce_gradients(grads, comm)
        opt.step(grads)
    elapsed = time.perf_counter() - t0
    loss = forward(params, X, y, task)[0]
    state = opt.state_nbytes() if not args.plain else \
        sum(a.nbytes for s in opt.state for a in s.values())
    states = comm.gather(state, root=0)

    if rank != 0:
        return
    single = [v.copy() for v in values]
    ref = fo.Adam(single, learning_rate=args.lr)
    for idx in steps:
        ref.step(forward(single, X[idx], y[idx], task)[1])
    ref_loss = forward(single, X, y, task)[0]
    full = sum(a.nbytes for s in ref.state for a in s.values())
    name = "allreduce_gradients + Adam" if args.plain else "ShardedOptimizer(Adam)"
    print(f"data: {what}; MLP {X.shape[1]}-64-{d_out}, float64, global batch {args.batch}, "
          f"{args.steps} steps")
    print(f"{world} rank(s), {name}: final loss {loss:.12g}  ({elapsed:.2f} s)")
    print(f"1 process, same global batch:   final loss {ref_loss:.12g}  "
          f"(relative difference {abs(loss - ref_loss) / abs(ref_loss):.1e})")
    print(f"optimizer state per rank (bytes): {states}; one process holds {full}")


if __name__ == "__main__":
    main()
