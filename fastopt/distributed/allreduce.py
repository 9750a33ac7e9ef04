"""Plain data parallelism: gradients averaged in place over all ranks."""
from __future__ import annotations

import threading
from typing import Any, Iterable, Optional

import numpy as np
import numpy.typing as npt

from .._core import RowGrad
from ._agree import agree, describe, first_difference, hash64, mismatch, mpi, mpi_type
from ._layout import aligned_empty, flat_view

#: Default size of one packed message of :func:`allreduce_gradients`.
BUCKET_BYTES = 32 << 20

# One reused packing buffer per dtype, grown to the largest bucket seen.
_buffers: "dict[str, np.ndarray]" = {}
_buffers_lock = threading.Lock()


def _bucket_buffer(dtype, n):
    key = np.dtype(dtype).str
    buf = _buffers.get(key)
    if buf is None or buf.size < n:
        buf = aligned_empty(n, dtype)
        _buffers[key] = buf
    return buf[:n]


def _check_rows(i, g):
    """The message for a RowGrad whose arrays cannot be gathered, or None (the
    optimizer checks the rest against its parameter at the step)."""
    idx, vals = g.indices, g.values
    if (not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype.kind != "i"
            or idx.dtype.itemsize not in (4, 8)):
        return (f"grads[{i}].indices: expected a 1-D int32 or int64 ndarray; got "
                f"{describe(idx)}")
    if (not isinstance(vals, np.ndarray) or vals.ndim != 2
            or vals.dtype not in (np.float32, np.float64) or len(vals) != len(idx)):
        return (f"grads[{i}].values: expected a float32 or float64 ndarray of shape "
                f"({len(idx)}, dim); got {describe(vals)}")
    return None


def _layout(g):
    """What must be equal on every rank: a RowGrad's row count may differ."""
    if isinstance(g, RowGrad) and isinstance(g.values, np.ndarray) and g.values.ndim == 2:
        return f"RowGrad {g.values.dtype} (*, {g.values.shape[1]})"
    return describe(g)


def _check_grads(grads):
    """``(0, None)`` if every entry is None, a writeable float ndarray or a
    RowGrad of arrays, else ``(index + 1, message)`` for the first one that is not."""
    for i, g in enumerate(grads):
        if g is None:
            continue
        if isinstance(g, RowGrad):
            message = _check_rows(i, g)
            if message is not None:
                return i + 1, message
            continue
        if not isinstance(g, np.ndarray) or g.dtype not in (np.float32, np.float64):
            return i + 1, (f"grads[{i}]: expected a float32 or float64 ndarray; "
                           f"got {describe(g)}")
        if not g.flags.writeable:
            return i + 1, (f"grads[{i}]: the array is read-only; gradients are "
                           f"averaged in place. Pass a writeable array")
    return 0, None


def allreduce_gradients(grads: Any, comm: Any, *,
                        bucket_bytes: int = BUCKET_BYTES) -> list[Any]:
    r"""Average gradients over all ranks of ``comm``, in place.

    Parameters
    ----------
    grads : list of ndarray, RowGrad or None
        This rank's gradients (float32/float64, writeable).  Every rank must
        pass the same number, shapes and dtypes, with ``None`` at the same
        places; ``None`` entries are skipped.  A :class:`fastopt.RowGrad`
        (the same dtype and width on every rank, any number of rows) is
        replaced in ``grads`` by the RowGrad of every rank's rows.
    comm : mpi4py.MPI.Comm
        The communicator, e.g. ``MPI.COMM_WORLD``.
    bucket_bytes : int
        Largest packed message.  Tensors smaller than this are copied into a
        reused buffer of up to ``bucket_bytes`` per dtype and reduced together;
        larger contiguous tensors are reduced where they are.

    Notes
    -----
    Each element becomes

    .. math:: g \leftarrow \Big(\sum_{r=0}^{R-1} g^{(r)}\Big) / R

    with one ``MPI_Allreduce(MPI_IN_PLACE, SUM)`` per bucket.  When the
    gradients of one dtype are consecutive views of one buffer (see
    :func:`flat_arrays`), that buffer is reduced directly with no copy, in
    one message per dtype.  The count, dtypes and shapes are checked on every
    rank and compared across ranks in one small collective first: a mismatch
    raises the same ``ValueError`` on every rank (naming rank and index)
    instead of hanging or corrupting memory.

    A RowGrad becomes ``RowGrad(concat_r indices^(r), concat_r values^(r) / R)``
    on every rank (ranks in order, two ``Allgatherv``): the step then sums the
    repeated rows in that fixed order and applies them once, bit for bit as
    one process given those rows would.  Its arrays cannot grow in place, so
    the entry of ``grads`` (when it is a list) is replaced.  Returns ``grads``
    (a list of the averaged gradients when ``grads`` was not a list).
    """
    MPI = mpi()
    if isinstance(grads, np.ndarray):
        raise TypeError("grads must be a list of arrays; got a single ndarray: pass [g]")
    given = grads if isinstance(grads, list) else None
    grads = list(grads)
    error, message = _check_grads(grads)
    layout = [_layout(g) for g in grads]
    table = agree(comm, [error, hash64(repr(layout))], message, "allreduce_gradients")
    mismatch(comm, table, 1, layout, lambda v: first_difference(v, "grads"),
             "allreduce_gradients: ranks passed different gradients;")
    world = comm.Get_size()
    by_dtype: dict[str, list[Any]] = {}
    for g in grads:
        if isinstance(g, np.ndarray) and g.size:
            by_dtype.setdefault(g.dtype.str, []).append(g)
    for key, arrays in by_dtype.items():
        dtype = np.dtype(key)
        mpitype = mpi_type(MPI, dtype)
        flat = flat_view(arrays, dtype)
        if flat is not None:
            _allreduce_mean(comm, MPI, flat, mpitype, world)
            continue
        cap = max(1, int(bucket_bytes) // dtype.itemsize)
        with _buffers_lock:
            pending: list[Any] = []
            used = 0
            for g in arrays:
                if g.size >= cap and g.flags.c_contiguous:
                    _allreduce_mean(comm, MPI, g.reshape(-1), mpitype, world)
                    continue
                if used + g.size > cap and pending:
                    _reduce_packed(comm, MPI, pending, used, dtype, mpitype, world)
                    pending, used = [], 0
                pending.append(g)
                used += g.size
            if pending:
                _reduce_packed(comm, MPI, pending, used, dtype, mpitype, world)
    rows = gather_every_rows(comm, MPI, {i: g for i, g in enumerate(grads)
                                         if isinstance(g, RowGrad)})
    for i, g in rows.items():
        grads[i] = g
        if given is not None:
            given[i] = g
    return grads if given is None else given


def gather_every_rows(comm, MPI, rows):
    """``{index: RowGrad}`` of this rank -> ``{index: every rank's rows}`` (one
    ``Allgather`` of the row counts, then two ``Allgatherv`` per RowGrad)."""
    if not rows:
        return rows
    keys = sorted(rows)
    world = comm.Get_size()
    counts = np.array([len(rows[i].indices) for i in keys], dtype=np.int64)
    table = np.empty((world, len(keys)), dtype=np.int64)
    comm.Allgather([counts, MPI.INT64_T], [table, MPI.INT64_T])
    return {i: _gather_rows(comm, MPI, rows[i], table[:, k], world) for k, i in enumerate(keys)}


def _gather_rows(comm, MPI, g, counts, world):
    """Every rank's rows of one RowGrad, in rank order, the values averaged."""
    vals = np.ascontiguousarray(g.values)
    dim, dtype = vals.shape[1], vals.dtype
    total = int(counts.sum())
    idx = np.empty(total, dtype=np.int64)
    comm.Allgatherv([np.ascontiguousarray(g.indices, dtype=np.int64), MPI.INT64_T],
                    [idx, (counts, None), MPI.INT64_T])
    out = np.empty((total, dim), dtype=dtype)
    comm.Allgatherv([vals, mpi_type(MPI, dtype)],
                    [out, (counts * dim, None), mpi_type(MPI, dtype)])
    np.divide(out, world, out=out)
    return RowGrad(idx, out)


def _allreduce_mean(comm, MPI, flat, mpitype, world):
    """``flat`` (1-D, contiguous) becomes its mean over the ranks."""
    comm.Allreduce(MPI.IN_PLACE, [flat, mpitype], op=MPI.SUM)
    np.divide(flat, world, out=flat)


def _reduce_packed(comm, MPI, arrays, n, dtype, mpitype, world):
    """Average ``arrays`` (``n`` elements in all) as one message: packed into
    the reused buffer, reduced, and copied back."""
    buf = _bucket_buffer(dtype, n)
    at = 0
    for g in arrays:
        buf[at:at + g.size].reshape(g.shape)[...] = g
        at += g.size
    _allreduce_mean(comm, MPI, buf, mpitype, world)
    at = 0
    for g in arrays:
        g[...] = buf[at:at + g.size].reshape(g.shape)
        at += g.size
