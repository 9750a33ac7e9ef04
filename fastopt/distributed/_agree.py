"""MPI access and the error-agreement protocol.

Every collective operation first checks its input on every rank and agrees
on the verdict with one small ``Allgather`` (:func:`agree`): a rank given bad
input makes every rank raise the same ``ValueError``, naming the rank, before
any collective that could hang or move data.  :func:`mismatch` compares a
value that must be equal on every rank (hashed into the agreed table).
"""
import hashlib

import numpy as np


def mpi():
    """The ``mpi4py.MPI`` module, or an ImportError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            "fastopt.distributed needs mpi4py and an MPI library: pip install "
            "'fastopt[mpi]' (mpi4py and the MPICH runtime from PyPI), or install mpi4py "
            "built against your cluster's MPI") from e
    return MPI


def mpi_type(MPI, dtype):
    """The MPI datatype of a float32 or float64 dtype, or of uint16 (16-bit
    float params travel as their bits, never summed)."""
    if dtype == np.uint16:
        return MPI.UINT16_T
    return MPI.DOUBLE if dtype == np.float64 else MPI.FLOAT


def hash64(text):
    """A signed 64-bit hash of ``text`` (equal on every rank for equal text)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def hash_arrays(arrays):
    """A signed 64-bit hash of the bytes of ``arrays``."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return int.from_bytes(h.digest(), "little", signed=True)


def describe(a):
    """``"float64 (3, 2)"`` for an array; the type name for anything else."""
    if a is None:
        return "None"
    if isinstance(a, np.ndarray):
        return f"{a.dtype} {tuple(a.shape)}"
    return type(a).__name__


def agree(comm, code, message, what):
    """Exchange each rank's verdict (``code``: small int64 vector whose first
    entry is 0 when the rank's input is fine) in one small Allgather.  Raise
    the same ``ValueError`` on every rank if any rank failed.  Returns the
    (world, len(code)) table for further consistency checks."""
    MPI = mpi()
    mine = np.asarray(code, dtype=np.int64)
    table = np.empty((comm.Get_size(), mine.size), dtype=np.int64)
    comm.Allgather([mine, MPI.INT64_T], [table, MPI.INT64_T])
    if table[:, 0].any():
        # Every rank knows that some rank failed, so every rank takes part in
        # this second collective: no rank can be left waiting.
        messages = comm.allgather(message)
        lines = [f"rank {r}: {m}" for r, m in enumerate(messages) if table[r, 0]]
        raise ValueError(f"{what} refused on every rank; nothing was changed.\n" +
                         "\n".join(lines))
    return table


def mismatch(comm, table, column, local, explain, what):
    """Raise on every rank if column ``column`` of ``table`` differs between
    ranks; ``local`` is this rank's full value, and ``explain`` turns the list
    of every rank's value into the message."""
    if (table[:, column] == table[0, column]).all():
        return
    values = comm.allgather(local)
    raise ValueError(f"{what} refused on every rank; nothing was changed.\n" +
                     explain(values))


def first_difference(values, label):
    """Lines naming, for each rank whose value differs from rank 0's, the first
    entry that differs (``label[i]`` of a list, or the whole value)."""
    ref = values[0]
    lines = []
    for r, v in enumerate(values[1:], start=1):
        if v == ref:
            continue
        if isinstance(v, (list, tuple)) and isinstance(ref, (list, tuple)):
            if len(v) != len(ref):
                lines.append(f"rank {r} passed {len(v)} {label}; rank 0 passed {len(ref)}")
                continue
            i = next(k for k, (a, b) in enumerate(zip(v, ref)) if a != b)
            if label is None:
                lines.append(f"rank {r}: {v[i]}; on rank 0: {ref[i]}")
            else:
                lines.append(f"rank {r}: {label}[{i}] is {v[i]}; on rank 0 it is {ref[i]}")
        else:
            lines.append(f"rank {r}: {v}; on rank 0: {ref}")
    return "\n".join(lines)
