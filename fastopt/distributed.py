r"""Data-parallel training over MPI: gradient averaging and a sharded optimizer.

Install with ``pip install "fastopt[mpi]"`` (mpi4py and the MPICH runtime
from PyPI), or install mpi4py built against your cluster's MPI.  Launch one
process per rank, e.g. ``mpiexec -n 4 python train.py``; every rank builds
the same model, computes the gradient of its part of the global batch and
calls one of:

* :func:`allreduce_gradients` — plain data parallelism.  The gradients are
  averaged in place over all ranks (``Allreduce(SUM)`` then ``/ world_size``)
  in a few large messages per dtype (small tensors are packed into buckets),
  and every rank then steps its own full optimizer.
* :class:`ShardedOptimizer` — ZeRO stage 1.  Each rank keeps optimizer state
  only for its contiguous shard of the flattened parameters (about
  ``1/world_size`` of the state), reduce-scatters the gradients, updates its
  shard with the normal C kernels and all-gathers the parameters.

With the same gradients both give bit-identical parameters on every rank:
an elementwise kernel on a shard computes exactly what it computes on the
whole array, and the summation of two ranks' contributions is one rounding
either way.  With more than two ranks the MPI library's reduction order
(Allreduce vs Reduce_scatter algorithms) may differ, and the results agree
to rounding.  Against a single process that computes the gradient of the
whole global batch the results agree to rounding (the batch sum is split
into per-rank partial sums), typically within 1e-12 relative in float64.

Gradients are checked on every rank and the verdict is agreed with one small
collective before any collective that could hang: a rank given a wrong
gradient makes every rank raise the same ``ValueError`` naming that rank and
index, and nothing changes anywhere.

Sharded checkpoints (:meth:`ShardedOptimizer.save`) are one atomic
``<path>.rank<k>.npz`` per rank plus an atomic ``<path>.manifest.json`` written
last by rank 0; :func:`consolidate` (or ``python -m fastopt.distributed
consolidate <path> <out.npz>``) turns them into a single-process checkpoint
that :func:`fastopt.load` accepts.
"""
import functools
import hashlib
import json
import math
import os
import sys
import threading
import uuid

import numpy as np

from . import _core
from . import checkpoint as _checkpoint
from .optimizers import REGISTRY, Optimizer, _check_counter, _live_optimizers

__all__ = ["allreduce_gradients", "ShardedOptimizer", "flat_arrays", "consolidate"]

#: Byte alignment of flat buffers and of shard boundaries (one cache line).
ALIGN = 64

#: Default size of one packed message of :func:`allreduce_gradients`.
BUCKET_BYTES = 32 << 20

MANIFEST_FORMAT = "fastopt-sharded-checkpoint"
MANIFEST_VERSION = 1

# Options whose value depends on whole tensors (a norm, a trust ratio) or on
# the whole gradient (a global norm, a finite check): a rank holding a shard
# cannot compute them alone.
_NON_ELEMENTWISE_OPTIONS = {
    "clipnorm": "clips each tensor by its own norm",
    "global_clipnorm": "clips by the norm of the whole gradient",
    "skip_nonfinite": "skips a step when any gradient element is not finite",
}
_PER_TENSOR_CLASSES = {
    "Lamb": "scales each tensor's update by its trust ratio ||w|| / ||update||",
    "Lars": "scales each tensor's update by its trust ratio ||w|| / ||g||",
    "Adafactor": "factors each matrix's second moment over its rows and columns",
}


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            "fastopt.distributed needs mpi4py and an MPI library: pip install "
            "'fastopt[mpi]' (mpi4py and the MPICH runtime from PyPI), or install mpi4py "
            "built against your cluster's MPI") from e
    return MPI


def _mpi_type(MPI, dtype):
    return MPI.DOUBLE if dtype == np.float64 else MPI.FLOAT


def _hash64(text):
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


# ---- flat buffers ------------------------------------------------------------

def _aligned_empty(n, dtype):
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + ALIGN, dtype=np.uint8)
    skip = (-raw.ctypes.data) % ALIGN
    return raw[skip:skip + n * dtype.itemsize].view(dtype)


def flat_arrays(shapes, dtype=np.float32):
    """Arrays of the given shapes as consecutive views of one aligned buffer.

    Parameters
    ----------
    shapes : sequence of tuple of int
        One shape per array.
    dtype : {numpy.float32, numpy.float64}
        The dtype of every array.

    Returns
    -------
    list of ndarray
        Zero-filled, C-contiguous, writeable views; their memory is one
        contiguous, 64-byte aligned block in the given order.

    Notes
    -----
    Parameters (or gradients) allocated this way let
    :class:`ShardedOptimizer` and :func:`allreduce_gradients` hand the whole
    block to MPI directly: no packing into a send buffer, and for parameters
    no master copy (the all-gather writes straight into the user's arrays).
    Keep using the returned arrays themselves (assign with ``w[...] = x``,
    not ``w = x``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastopt.distributed import flat_arrays
    >>> W, b = flat_arrays([(3, 2), (2,)], np.float64)
    >>> W.shape, b.shape, W.ctypes.data + W.nbytes == b.ctypes.data
    ((3, 2), (2,), True)
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    shapes = [tuple(int(d) for d in np.atleast_1d(s)) if np.ndim(s) else (int(s),)
              for s in shapes]
    sizes = [math.prod(s) for s in shapes]
    flat = _aligned_empty(sum(sizes), dtype)
    flat[...] = 0
    out, at = [], 0
    for shape, n in zip(shapes, sizes):
        out.append(flat[at:at + n].reshape(shape))
        at += n
    return out


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _flat_view(arrays, dtype):
    """A 1-D view covering ``arrays`` if they are consecutive C-contiguous
    views of one ndarray (as :func:`flat_arrays` makes them), else None."""
    if not arrays:
        return None
    root = _root(arrays[0])
    if not root.flags.c_contiguous:
        return None
    start = addr = arrays[0].__array_interface__["data"][0]
    for a in arrays:
        if (a.dtype != dtype or not a.flags.c_contiguous or not a.flags.writeable
                or a.__array_interface__["data"][0] != addr or _root(a) is not root):
            return None
        addr += a.nbytes
    base = root.__array_interface__["data"][0]
    if start < base or addr > base + root.nbytes:
        return None
    raw = root.reshape(-1).view(np.uint8)
    return raw[start - base:addr - base].view(dtype)


# ---- error agreement -------------------------------------------------------

def _agree(comm, code, message, what):
    """Exchange each rank's verdict (``code``: small int64 vector whose first
    entry is 0 when the rank's input is fine) in one small Allgather.  Raise
    the same ``ValueError`` on every rank if any rank failed.  Returns the
    (world, len(code)) table for further consistency checks."""
    MPI = _mpi()
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


def _mismatch(comm, table, column, local, describe, what):
    """Raise on every rank if column ``column`` of ``table`` differs between
    ranks; ``local`` is this rank's full value, compared by ``describe``."""
    if (table[:, column] == table[0, column]).all():
        return
    values = comm.allgather(local)
    raise ValueError(f"{what} refused on every rank; nothing was changed.\n" +
                     describe(values))


def _first_difference(values, label):
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


def _describe(g):
    if g is None:
        return "None"
    if isinstance(g, np.ndarray):
        return f"{g.dtype} {tuple(g.shape)}"
    return type(g).__name__


# ---- plain data parallelism ---------------------------------------------------

_buffers: "dict[str, np.ndarray]" = {}
_buffers_lock = threading.Lock()


def _bucket_buffer(dtype, n):
    key = np.dtype(dtype).str
    buf = _buffers.get(key)
    if buf is None or buf.size < n:
        buf = _aligned_empty(n, dtype)
        _buffers[key] = buf
    return buf[:n]


def allreduce_gradients(grads, comm, *, bucket_bytes=BUCKET_BYTES):
    r"""Average gradients over all ranks of ``comm``, in place.

    Parameters
    ----------
    grads : list of ndarray or None
        This rank's gradients (float32/float64, writeable).  Every rank must
        pass the same number, shapes and dtypes, with ``None`` at the same
        places; ``None`` entries are skipped.
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
    """
    MPI = _mpi()
    if isinstance(grads, np.ndarray):
        raise TypeError("grads must be a list of arrays; got a single ndarray: pass [g]")
    grads = list(grads)
    error, message = 0, None
    for i, g in enumerate(grads):
        if g is None:
            continue
        if not isinstance(g, np.ndarray) or g.dtype not in (np.float32, np.float64):
            error, message = i + 1, (f"grads[{i}]: expected a float32 or float64 ndarray; "
                                     f"got {_describe(g)}")
            break
        if not g.flags.writeable:
            error, message = i + 1, (f"grads[{i}]: the array is read-only; gradients are "
                                     f"averaged in place. Pass a writeable array")
            break
    layout = [_describe(g) for g in grads]
    table = _agree(comm, [error, _hash64(repr(layout))], message, "allreduce_gradients")
    _mismatch(comm, table, 1, layout, lambda v: _first_difference(v, "grads"),
              "allreduce_gradients: ranks passed different gradients;")
    world = comm.Get_size()
    by_dtype = {}
    for g in grads:
        if g is not None and g.size:
            by_dtype.setdefault(g.dtype.str, []).append(g)
    for key, arrays in by_dtype.items():
        dtype = np.dtype(key)
        mpitype = _mpi_type(MPI, dtype)
        flat = _flat_view(arrays, dtype)
        if flat is not None:
            comm.Allreduce(MPI.IN_PLACE, [flat, mpitype], op=MPI.SUM)
            np.divide(flat, world, out=flat)
            continue
        cap = max(1, int(bucket_bytes) // dtype.itemsize)
        with _buffers_lock:
            pending, used = [], 0
            for g in arrays:
                if g.size >= cap and g.flags.c_contiguous:
                    view = g.reshape(-1)
                    comm.Allreduce(MPI.IN_PLACE, [view, mpitype], op=MPI.SUM)
                    np.divide(view, world, out=view)
                    continue
                if used + g.size > cap and pending:
                    _reduce_bucket(comm, MPI, pending, used, dtype, mpitype, world)
                    pending, used = [], 0
                pending.append(g)
                used += g.size
            if pending:
                _reduce_bucket(comm, MPI, pending, used, dtype, mpitype, world)


def _reduce_bucket(comm, MPI, arrays, n, dtype, mpitype, world):
    buf = _bucket_buffer(dtype, n)
    at = 0
    for g in arrays:
        buf[at:at + g.size].reshape(g.shape)[...] = g
        at += g.size
    comm.Allreduce(MPI.IN_PLACE, [buf, mpitype], op=MPI.SUM)
    np.divide(buf, world, out=buf)
    at = 0
    for g in arrays:
        g[...] = buf[at:at + g.size].reshape(g.shape)
        at += g.size


# ---- the shard layout ----------------------------------------------------------

def _shard_bounds(total, world, itemsize):
    """``world + 1`` boundaries splitting ``[0, total)`` into contiguous,
    balanced shards whose starts are multiples of ALIGN bytes."""
    unit = max(1, ALIGN // itemsize)
    units = -(-total // unit)
    return [min(total, (k * units // world) * unit) for k in range(world + 1)]


def _layout(shapes, dtypes, world):
    """Buckets (one per dtype, tensors in order) and their shard boundaries."""
    buckets = []
    index = {}
    for i, dt in enumerate(dtypes):
        if dt not in index:
            index[dt] = len(buckets)
            buckets.append({"dtype": dt, "tensors": [], "offsets": [], "total": 0})
        b = buckets[index[dt]]
        b["tensors"].append(i)
        b["offsets"].append(b["total"])
        b["total"] += math.prod(shapes[i])
    for b in buckets:
        b["bounds"] = _shard_bounds(b["total"], world, np.dtype(b["dtype"]).itemsize)
    return buckets


def _pieces(buckets, shapes, rank):
    """``(tensor, bucket, start, length)`` for every piece of a tensor held by
    ``rank``, in tensor order.  A zero-size tensor is held (empty) by rank 0 so
    that its step count has an owner."""
    out = []
    for bi, b in enumerate(buckets):
        lo, hi = b["bounds"][rank], b["bounds"][rank + 1]
        for i, off in zip(b["tensors"], b["offsets"]):
            n = math.prod(shapes[i])
            if n == 0:
                if rank == 0:
                    out.append((i, bi, 0, 0))
                continue
            a, z = max(off, lo), min(off + n, hi)
            if a < z:
                out.append((i, bi, a - off, z - a))
    out.sort()
    return out


# ---- the sharded optimizer ----------------------------------------------------

class ShardedOptimizer:
    r"""ZeRO stage 1: optimizer state sharded over the ranks of an MPI communicator.

    Parameters
    ----------
    opt_class : Optimizer subclass or str
        Any class of :data:`fastopt.optimizers.REGISTRY` (or its name).
    params : list of ndarray, or list of dict
        The same parameters on every rank (same order, shapes, dtypes and
        values), as for ``opt_class``; param groups with their own
        hyper-parameters are supported.
    comm : mpi4py.MPI.Comm
        The communicator, e.g. ``MPI.COMM_WORLD``.
    **kwargs
        Passed to ``opt_class`` unchanged (convention, learning rate,
        schedules, weight decay, ...).

    Notes
    -----
    The parameters of each dtype are concatenated in order into one flat
    index space of :math:`N` elements, split into :math:`R` contiguous
    shards :math:`[b_r, b_{r+1})` that are balanced and start on 64-byte
    boundaries.  Rank :math:`r` builds an ordinary ``opt_class`` over the
    pieces of the tensors that fall into its shard (views, so the C kernels
    run unchanged) and keeps only their state: about
    :math:`\text{state bytes} / R` per rank.  One step is

    .. math::

        \hat g_{[b_r, b_{r+1})} &= \Big(\sum_{q} g^{(q)}\Big)_{[b_r, b_{r+1})} / R
            \qquad \text{(Reduce\_scatter, SUM)} \\
        w_{[b_r, b_{r+1})} &\leftarrow \text{opt\_class update with } \hat g \\
        w &\leftarrow \text{Allgatherv of all shards}

    which is :func:`allreduce_gradients` followed by a plain ``opt_class``
    step, bit for bit with two ranks (one addition either way) and to
    rounding otherwise.  Per-tensor hyper-parameters, param groups, ``None``
    gradients and torch's per-parameter step counts carry over, because each
    piece is a parameter of the inner optimizer with its tensor's group and
    step count.  Options whose math needs a whole tensor or the whole
    gradient (``clipnorm``, ``global_clipnorm``, ``skip_nonfinite``) and
    classes with per-tensor trust ratios are refused.

    **Parameter memory.**  If the parameters of a dtype are consecutive views
    of one buffer (:func:`flat_arrays`), the all-gather writes straight into
    them.  Otherwise a flat master copy is kept: before each step this
    rank's shard is copied from your arrays into it (so edits you make to
    the weights between steps are kept), and after the all-gather the whole
    copy is written back into your arrays (one extra pass over the
    parameters per step).  Gradients are likewise packed into a flat send
    buffer unless they are views of one buffer.  Your arrays are always the
    objects that hold the result.

    **Memory per rank** for :math:`N` parameter elements of :math:`s`
    bytes and :math:`k` state arrays (Adam: 2): state :math:`kNs/R` (plain
    data parallelism: :math:`kNs`), plus the received gradient shard
    :math:`Ns/R`, plus :math:`Ns` for the master copy and :math:`Ns` for the
    gradient send buffer unless parameters and gradients come from
    :func:`flat_arrays`.  :meth:`state_nbytes` and :meth:`buffer_nbytes`
    report both.  Allocate with :func:`flat_arrays` to get the saving.

    **Agreement.**  Construction checks that every rank passed the same
    class, options, parameter layout and initial values; every step first
    exchanges 32 bytes per rank (one Allgather) so that all ranks agree
    their gradients are valid, ``None`` at the same places, and that
    hyper-parameters and step counts match.  Any disagreement raises the
    same ``ValueError`` on every rank before data moves.

    Attributes
    ----------
    optimizer : Optimizer
        This rank's inner optimizer (its params are the shard pieces).
    buckets : list of dict
        Per dtype: ``dtype``, ``tensors`` (indices), ``bounds`` (the shard
        boundaries, ``world_size + 1`` ints).

    Examples
    --------
    Run with ``mpiexec -n 2 python script.py``::

        from mpi4py import MPI
        import fastopt as fo
        from fastopt.distributed import ShardedOptimizer
        opt = ShardedOptimizer(fo.Adam, [W, b], MPI.COMM_WORLD, learning_rate=1e-3)
        opt.step([gW, gb])        # this rank's gradients; averaged over ranks
    """

    def __init__(self, opt_class, params, comm, **kwargs):
        self._MPI = _mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        self._lock = threading.RLock()
        _live_optimizers.add(self)     # a forked child gets a fresh lock
        # Build locally, then agree: a rank that fails (or holds different
        # parameters) must not leave the others waiting in a collective.
        failure, signature, values = None, 0, 0
        try:
            self._build(opt_class, params, kwargs)
            signature = _hash64(repr(self._signature()))
            values = _hash_arrays(self._params)
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks know
            failure = e
        try:
            table = _agree(comm, [failure is not None, signature, values],
                           None if failure is None else f"{type(failure).__name__}: {failure}",
                           "ShardedOptimizer()")
        except ValueError:
            if failure is not None:
                raise failure from None
            raise
        _mismatch(comm, table, 1, self._signature(),
                  lambda v: _first_difference(v, None),
                  "ShardedOptimizer(): ranks passed different parameters or options;")
        _mismatch(comm, table, 2, None,
                  lambda v: "the parameter values differ between ranks; give every rank the "
                            "same initial weights (same seed, or comm.Bcast(w, root=0) for "
                            "each w) before building the optimizer",
                  "ShardedOptimizer():")

    def _signature(self):
        """What must be equal on every rank: class, parameter layout, options
        (threads may differ)."""
        cfg = {k: v for k, v in self.get_config().items() if k != "num_threads"}
        params = [f"params[{i}] {np.dtype(d)} {s}" for i, (s, d) in
                  enumerate(zip(self._shapes, self._dtypes))]
        return [f"class {type(self.optimizer).__name__}", f"{len(params)} params",
                *params, f"group sizes {self._group_sizes}",
                *(f"{k}={v!r}" for k, v in sorted(cfg.items()))]

    def _build(self, opt_class, params, kwargs):
        if isinstance(opt_class, str):
            if opt_class not in REGISTRY:
                raise ValueError(f"unknown optimizer {opt_class!r}; known: "
                                 f"{', '.join(sorted(REGISTRY))}")
            opt_class = REGISTRY[opt_class]
        if not (isinstance(opt_class, type) and issubclass(opt_class, Optimizer)):
            raise TypeError(f"opt_class must be a fastopt optimizer class (e.g. fastopt.Adam); "
                            f"got {opt_class!r}")
        if opt_class.__name__ in _PER_TENSOR_CLASSES:
            raise ValueError(f"ShardedOptimizer cannot shard {opt_class.__name__}: it "
                             f"{_PER_TENSOR_CLASSES[opt_class.__name__]}, which needs whole "
                             f"tensors; use allreduce_gradients with a plain "
                             f"{opt_class.__name__} instead")
        for key, why in _NON_ELEMENTWISE_OPTIONS.items():
            if kwargs.get(key) not in (None, False):
                raise ValueError(f"ShardedOptimizer does not support {key}: it {why}, but a "
                                 f"rank holds only a shard of each gradient. Use clipvalue, "
                                 f"or allreduce_gradients with a plain optimizer")

        groups = Optimizer._split_groups(params)
        flat = []
        for plist, _ in groups:
            flat.extend(plist)
        for i, p in enumerate(flat):
            _core.check_param(p, i)
        _check_disjoint(flat)
        self._params = flat
        self._shapes = [tuple(int(d) for d in p.shape) for p in flat]
        self._dtypes = [p.dtype.str for p in flat]
        group_of = []
        for gi, (plist, _) in enumerate(groups):
            group_of.extend([gi] * len(plist))
        self._group_sizes = [len(plist) for plist, _ in groups]

        self.buckets = _layout(self._shapes, self._dtypes, self.world_size)
        self._flat, self._master, self._send, self._recv = [], [], [], []
        offset_of = {}
        for bi, b in enumerate(self.buckets):
            dtype = np.dtype(b["dtype"])
            tensors = [flat[i] for i in b["tensors"]]
            view = _flat_view(tensors, dtype)
            master = view is None
            if master:
                view = _aligned_empty(b["total"], dtype)
                for i, off in zip(b["tensors"], b["offsets"]):
                    view[off:off + flat[i].size] = flat[i].reshape(-1)
            offset_of.update(zip(b["tensors"], b["offsets"]))
            self._flat.append(view)
            self._master.append(master)
            self._send.append(None)
            lo, hi = b["bounds"][self.rank], b["bounds"][self.rank + 1]
            self._recv.append(_aligned_empty(hi - lo, dtype))

        self._pieces = _pieces(self.buckets, self._shapes, self.rank)
        piece_params, piece_grads = [], []
        for i, bi, start, n in self._pieces:
            at = offset_of[i] + start
            lo = self.buckets[bi]["bounds"][self.rank]
            piece_params.append(self._flat[bi][at:at + n])
            piece_grads.append(self._recv[bi][at - lo:at - lo + n])
        self._piece_grads = piece_grads
        self._piece_tensor = [piece[0] for piece in self._pieces]
        if len(groups) == 1 and not groups[0][1]:
            inner_params = piece_params
        else:
            inner_params = [dict(over, params=[q for q, piece in zip(piece_params, self._pieces)
                                               if group_of[piece[0]] == gi])
                            for gi, (_, over) in enumerate(groups)]
        self.optimizer = opt_class(inner_params, **kwargs)

    # ---- attributes ----------------------------------------------------------

    @property
    def params(self):
        """The parameters (your arrays), in the order their grads are expected."""
        return list(self._params)

    @property
    def iterations(self):
        """Updates applied so far (the same on every rank)."""
        return self.optimizer.iterations

    @property
    def learning_rate(self):
        """The optimizer-wide learning rate; set it to the same value on every rank."""
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.optimizer.learning_rate = value

    lr = learning_rate

    @property
    def convention(self):
        return self.optimizer.convention

    def state_nbytes(self):
        """Bytes of optimizer state held by this rank (the sharded part)."""
        return int(sum(a.nbytes for s in self.optimizer._state for a in s))

    def buffer_nbytes(self):
        """Bytes of the communication buffers this rank holds: flat gradient
        send buffers, the received gradient shard and, for parameters not
        allocated with :func:`flat_arrays`, the flat master copy."""
        n = sum(a.nbytes for a in self._send if a is not None)
        n += sum(a.nbytes for a in self._recv)
        return int(n + sum(f.nbytes for f, m in zip(self._flat, self._master) if m))

    def get_config(self):
        """The configuration of the equivalent single-process optimizer."""
        cfg = self.optimizer.get_config()
        if "param_groups" in cfg:
            cfg["param_groups"] = [dict(g, size=n) for g, n in
                                   zip(cfg["param_groups"], self._group_sizes)]
        return cfg

    def __repr__(self):
        return (f"ShardedOptimizer({type(self.optimizer).__name__}, rank {self.rank} of "
                f"{self.world_size}, {len(self._params)} params, {len(self._pieces)} pieces, "
                f"state {self.state_nbytes()} bytes, iterations={self.iterations})")

    # ---- the step ---------------------------------------------------------------

    def _check_grads(self, grads):
        if len(grads) != len(self._params):
            return 1, (f"expected {len(self._params)} grads (one per parameter, in order; "
                       f"None skips one); got {len(grads)}")
        for i, (g, p) in enumerate(zip(grads, self._params)):
            if g is None:
                continue
            if not isinstance(g, np.ndarray):
                return i + 1, (f"grads[{i}]: expected a numpy.ndarray of dtype {p.dtype} and "
                               f"shape {p.shape}; got {type(g).__name__}")
            if g.dtype != p.dtype:
                return i + 1, (f"grads[{i}]: expected dtype {p.dtype} (the dtype of "
                               f"params[{i}]); got {g.dtype}. Cast it with g.astype(p.dtype)")
            if g.shape != p.shape:
                return i + 1, (f"grads[{i}]: expected shape {p.shape} (the shape of "
                               f"params[{i}]); got {g.shape}")
        return 0, None

    def step(self, grads):
        """One update of every parameter from this rank's gradients.

        ``grads[i]`` is this rank's gradient of ``params[i]`` (its mean over
        this rank's part of the batch); the update uses the mean over ranks.
        ``None`` skips a parameter and must be ``None`` on every rank.  Every
        rank checks its gradients and the verdict is agreed before any data
        moves: on any error every rank raises and nothing changes.
        """
        if isinstance(grads, np.ndarray):
            raise TypeError("grads must be a list of arrays; got a single ndarray: pass [g]")
        grads = list(grads)
        MPI = self._MPI
        with self._lock:
            error, message = self._check_grads(grads)
            mask = [g is None for g in grads] if not error else []
            hp = None
            if not error:
                try:
                    hp = [self.optimizer.current_hyperparameters(k)
                          for k in range(len(self.optimizer.param_groups))]
                except (ValueError, TypeError) as e:
                    error, message = len(grads) + 1, f"hyper-parameters: {e}"
            code = [error, _hash64(repr(mask)) if any(mask) else 0,
                    _hash64(repr(hp)), self.optimizer.iterations]
            table = _agree(self.comm, code, message, "ShardedOptimizer.step")
            _mismatch(self.comm, table, 1, [i for i, m in enumerate(mask) if m],
                      lambda v: "\n".join(f"rank {r}: grads are None at indices {x}"
                                          for r, x in enumerate(v)) +
                      "\nNone must be at the same places on every rank",
                      "ShardedOptimizer.step: ranks skip different parameters;")
            _mismatch(self.comm, table, 3, self.optimizer.iterations,
                      lambda v: f"iterations per rank: {v}",
                      "ShardedOptimizer.step: ranks are at different steps;")
            _mismatch(self.comm, table, 2, hp,
                      lambda v: "\n".join(f"rank {r}: {x}" for r, x in enumerate(v)),
                      "ShardedOptimizer.step: ranks have different hyper-parameters;")

            world = self.world_size
            for bi, b in enumerate(self.buckets):
                dtype = np.dtype(b["dtype"])
                mpitype = _mpi_type(MPI, dtype)
                tensors = [grads[i] for i in b["tensors"]]
                send = None
                if not any(g is None for g in tensors):
                    send = _flat_view(tensors, dtype)
                if send is None:
                    if self._send[bi] is None:
                        self._send[bi] = _aligned_empty(b["total"], dtype)
                    send = self._send[bi]
                    for i, off, g in zip(b["tensors"], b["offsets"], tensors):
                        n = math.prod(self._shapes[i])
                        if g is None:
                            send[off:off + n] = 0
                        else:
                            send[off:off + n].reshape(g.shape)[...] = g
                counts = np.diff(b["bounds"])
                recv = self._recv[bi]
                self.comm.Reduce_scatter([send, mpitype], [recv, mpitype],
                                         recvcounts=counts.tolist(), op=MPI.SUM)
                np.divide(recv, world, out=recv)
                if self._master[bi]:
                    self._pull_shard(bi)
            inner = [None if grads[t] is None else g
                     for t, g in zip(self._piece_tensor, self._piece_grads)]
            self.optimizer.step(inner)
            self._gather_params()

    def apply_gradients(self, grads_and_vars):
        """Keras-style: ``opt.apply_gradients(zip(grads, params))``, pairs matched
        to the parameters by identity; unpaired parameters get ``None``."""
        index = {id(p): i for i, p in enumerate(self._params)}
        grads = [None] * len(self._params)
        for k, (g, p) in enumerate(grads_and_vars):
            i = index.get(id(p))
            if i is None:
                raise ValueError(f"apply_gradients: pair {k} names a parameter this optimizer "
                                 f"was not built with; pass the same array objects")
            grads[i] = g
        self.step(grads)

    def _pull_shard(self, bi):
        """Copy this rank's shard of your arrays into the master copy, so edits
        made to the weights between steps are what gets updated."""
        b = self.buckets[bi]
        lo, hi = b["bounds"][self.rank], b["bounds"][self.rank + 1]
        flat = self._flat[bi]
        for i, off in zip(b["tensors"], b["offsets"]):
            n = self._params[i].size
            a, z = max(off, lo), min(off + n, hi)
            if a < z:
                flat[a:z] = self._params[i].reshape(-1)[a - off:z - off]

    def _gather_params(self):
        MPI = self._MPI
        for bi, b in enumerate(self.buckets):
            flat = self._flat[bi]
            counts = np.diff(b["bounds"]).tolist()
            displs = b["bounds"][:-1]
            self.comm.Allgatherv(MPI.IN_PLACE,
                                 [flat, (counts, displs), _mpi_type(MPI, flat.dtype)])
            if self._master[bi]:
                for i, off in zip(b["tensors"], b["offsets"]):
                    p = self._params[i]
                    p.reshape(-1)[...] = flat[off:off + p.size]

    # ---- checkpoints -------------------------------------------------------------

    def _manifest(self, save_id, prefix):
        base = os.path.basename(prefix)
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "save_id": save_id,
            "world_size": self.world_size,
            "class": type(self.optimizer).__name__,
            "config": self.get_config(),
            "iterations": int(self.optimizer.iterations),
            "shapes": [list(s) for s in self._shapes],
            "dtypes": list(self._dtypes),
            "group_sizes": list(self._group_sizes),
            "buckets": [{"dtype": b["dtype"], "tensors": b["tensors"], "bounds": b["bounds"]}
                        for b in self.buckets],
            "ranks": [f"{base}.rank{r}.npz" for r in range(self.world_size)],
        }

    def save(self, path):
        """Write a sharded checkpoint: every rank writes ``<path>.rank<k>.npz``
        (its state and its shard of the parameters) atomically, then rank 0
        writes ``<path>.manifest.json`` atomically.  Collective: call it on
        every rank with the same ``path`` on a file system all ranks share.

        The manifest is written last and names a save id that every rank file
        carries, so a crash during a save leaves a checkpoint that
        :meth:`load` and :func:`consolidate` refuse (naming the stale file),
        never a silently mixed one.  Rank files are replaced in place, so to
        always keep one loadable checkpoint alternate between two paths.
        """
        prefix = os.fspath(path)
        save_id = self.comm.bcast(uuid.uuid4().hex if self.rank == 0 else None, root=0)
        error, message = 0, None
        try:
            with self._lock:
                sd = self.optimizer.state_dict()
                sd["shard"] = {"save_id": save_id, "rank": self.rank,
                               "world_size": self.world_size,
                               "pieces": [[i, s, n] for i, _, s, n in self._pieces]}
                sd["params"] = [p.copy() for p in self.optimizer.params]
                _checkpoint.write(f"{prefix}.rank{self.rank}.npz", sd)
        except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks
            error, message = 1, f"writing {prefix}.rank{self.rank}.npz failed: {e}"
        _agree(self.comm, [error], message, "ShardedOptimizer.save")
        error, message = 0, None
        if self.rank == 0:
            try:
                _write_json_atomic(f"{prefix}.manifest.json", self._manifest(save_id, prefix))
            except Exception as e:  # noqa: BLE001
                error, message = 1, f"writing {prefix}.manifest.json failed: {e}"
        _agree(self.comm, [error], message, "ShardedOptimizer.save")

    def load(self, path):
        """Restore a checkpoint written by :meth:`save` with the same world size
        and parameter layout.  Collective.  Every rank validates the manifest
        and its own file first; on any error every rank raises and nothing
        changes."""
        prefix = os.fspath(path)
        error, message, ready = 0, None, None
        try:
            manifest = read_manifest(prefix)
            ready = self._check_shard_file(prefix, manifest)
        except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks
            error, message = 1, f"{type(e).__name__}: {e}"
        _agree(self.comm, [error], message, "ShardedOptimizer.load")
        self._restore(*ready)

    def _restore(self, apply, params):
        """Apply a state and params that every rank has checked (nothing here can fail)."""
        with self._lock:
            with self.optimizer._lock:
                apply()
                for q, v in zip(self.optimizer.params, params):
                    np.copyto(q, v)
            self._gather_params()

    def _check_writeable(self):
        # the all-gather after a load writes every parameter
        for i, p in enumerate(self._params):
            if not p.flags.writeable:
                raise ValueError(f"params[{i}] is read-only, so a checkpoint cannot restore "
                                 f"it; make it writeable (flags.writeable = True) and load "
                                 f"again")

    def _check_shard_file(self, prefix, manifest):
        """Check this rank's file completely (everything ``load`` will apply);
        returns ``(apply, params)`` and changes nothing."""
        if manifest["world_size"] != self.world_size:
            raise ValueError(f"{prefix}: saved by {manifest['world_size']} ranks; this run has "
                             f"{self.world_size}. To resume with a different world size, "
                             f"consolidate it (python -m fastopt.distributed consolidate) "
                             f"and use load_consolidated")
        if manifest["class"] != type(self.optimizer).__name__:
            raise ValueError(f"{prefix}: checkpoint of a {manifest['class']} optimizer; this "
                             f"is a {type(self.optimizer).__name__}")
        if ([tuple(s) for s in manifest["shapes"]] != self._shapes or
                manifest["dtypes"] != self._dtypes):
            raise ValueError(f"{prefix}: the checkpoint's parameters "
                             f"({_layout_str(manifest['shapes'], manifest['dtypes'])}) differ "
                             f"from this optimizer's "
                             f"({_layout_str(self._shapes, self._dtypes)})")
        if [b["bounds"] for b in manifest["buckets"]] != [b["bounds"] for b in self.buckets]:
            raise ValueError(f"{prefix}: shard boundaries differ from this optimizer's")
        self._check_writeable()
        file = _rank_file(prefix, manifest, self.rank)

        def check(sd):
            sd = dict(sd)
            params = sd.pop("params", None)
            shard = sd.pop("shard", None)
            _check_shard_meta(file, shard, manifest, self.rank)
            if shard.get("pieces") != [[i, s, n] for i, _, s, n in self._pieces]:
                raise ValueError(f"{file}: its pieces differ from this optimizer's layout")
            if sd.get("class") != type(self.optimizer).__name__:
                raise ValueError(f"{file}: state of a {sd.get('class')} optimizer")
            mine = self.optimizer._state
            state = sd.get("state")
            if not (isinstance(state, list) and isinstance(params, list)
                    and len(state) == len(params) == len(mine)):
                raise ValueError(f"{file}: does not hold the {len(mine)} pieces this rank "
                                 f"keeps")
            for j, (a, b) in enumerate(zip(mine, state)):
                if not isinstance(b, list) or len(a) != len(b):
                    raise ValueError(f"{file}: piece {j} does not have the {len(a)} state "
                                     f"arrays this optimizer keeps (were the optimizer options "
                                     f"the same?)")
                for x, y in zip(a, b):
                    if _describe(y) != _describe(x):
                        raise ValueError(f"{file}: piece {j} state is {_describe(y)}; "
                                         f"expected {_describe(x)}")
            for j, (q, v) in enumerate(zip(self.optimizer.params, params)):
                if _describe(v) != _describe(q):
                    raise ValueError(f"{file}: piece {j} params are {_describe(v)}; "
                                     f"expected {_describe(q)}")
            try:
                return self.optimizer._check_state_dict(sd), params
            except ValueError as e:
                raise ValueError(f"{file}: {e}") from e

        # shapes are checked on the headers first: no data is read from a file that does not fit
        return check(_checkpoint.read(file, expect=check))


    def load_consolidated(self, path):
        """Restore a single-process checkpoint (:func:`fastopt.save` of a plain
        optimizer, or the output of :func:`consolidate`) into this sharded
        optimizer, at any world size: every rank reads the file and keeps its
        pieces.  Collective; on any error every rank raises and nothing changes."""
        file = os.fspath(path)
        error, message, ready = 0, None, None
        try:
            ready = self._check_full_file(file)
        except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks
            error, message = 1, f"{type(e).__name__}: {e}"
        _agree(self.comm, [error], message, "ShardedOptimizer.load_consolidated")
        self._restore(*ready)

    def _check_full_file(self, file):
        """Check a single-process checkpoint completely and cut out this rank's
        pieces; returns ``(apply, params)`` and changes nothing."""
        self._check_writeable()
        check = functools.partial(self._split, file)
        # shapes are checked on the headers first: no data is read from a file that does not fit
        return check(_checkpoint.read(file, expect=check))

    def _split(self, file, sd):
        sd = dict(sd)
        full_params = sd.pop("params", None)
        if sd.get("format_version") != 1:
            raise ValueError(f"{file}: not a fastopt optimizer state")
        if sd.get("class") != type(self.optimizer).__name__:
            raise ValueError(f"{file}: checkpoint of a {sd.get('class')} optimizer; this is a "
                             f"{type(self.optimizer).__name__}")
        if full_params is None:
            raise ValueError(f"{file}: saved without parameters (include_params=False); a "
                             f"sharded optimizer needs them to rebuild its shard")
        shapes, dtypes = sd.get("shapes"), sd.get("dtypes")
        if not _is_layout(shapes, dtypes):
            raise ValueError(f"{file}: corrupt checkpoint (bad shapes or dtypes entry)")
        shapes = [tuple(s) for s in shapes]
        if shapes != self._shapes or dtypes != self._dtypes:
            raise ValueError(f"{file}: the checkpoint's parameters "
                             f"({_layout_str(shapes, dtypes)}) differ from this "
                             f"optimizer's ({_layout_str(self._shapes, self._dtypes)})")
        state, steps = sd.get("state"), sd.get("steps")
        if not (isinstance(state, list) and isinstance(full_params, list)
                and len(state) == len(full_params) == len(shapes)
                and _describe(steps) == f"int64 {(len(shapes),)}"):
            raise ValueError(f"{file}: does not hold state, step counts and params for the "
                             f"{len(shapes)} params of this optimizer")
        pieces_state, pieces_params = [], []
        for j, (i, _, start, n) in enumerate(self._pieces):
            mine = self.optimizer._state[j]
            want = f"{np.dtype(self._dtypes[i])} {shapes[i]}"
            if not isinstance(state[i], list) or len(state[i]) != len(mine):
                raise ValueError(f"{file}: params[{i}] does not have the {len(mine)} state "
                                 f"arrays this optimizer keeps (were the optimizer options "
                                 f"the same?)")
            for a in state[i]:
                if _describe(a) != want:
                    raise ValueError(f"{file}: params[{i}] state is {_describe(a)}; "
                                     f"expected {want}")
            pieces_state.append([a.reshape(-1)[start:start + n] for a in state[i]])
            p = full_params[i]
            if _describe(p) != want:
                raise ValueError(f"{file}: params[{i}] is {_describe(p)}; expected {want}")
            pieces_params.append(p.reshape(-1)[start:start + n])
        sd["state"] = pieces_state
        sd["steps"] = steps[[i for i, _, _, _ in self._pieces]]
        sd["shapes"] = [[n] for _, _, _, n in self._pieces]
        sd["dtypes"] = [self._dtypes[i] for i, _, _, _ in self._pieces]
        try:
            return self.optimizer._check_state_dict(sd), pieces_params
        except ValueError as e:
            raise ValueError(f"{file}: {e}") from e


def _hash_arrays(arrays):
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return int.from_bytes(h.digest(), "little", signed=True)


def _check_disjoint(params):
    spans = sorted((p.__array_interface__["data"][0], p.nbytes, i)
                   for i, p in enumerate(params) if p.nbytes)
    for (a, n, i), (b, _, j) in zip(spans, spans[1:]):
        if a + n > b:
            i, j = sorted((i, j))
            raise ValueError(f"params[{i}] and params[{j}] share memory; each parameter must "
                             f"be its own array")


def _layout_str(shapes, dtypes):
    return ", ".join(f"{np.dtype(d)} {tuple(s)}" for s, d in zip(shapes, dtypes))


def _check_shard_meta(file, shard, manifest, rank):
    if not isinstance(shard, dict):
        raise ValueError(f"{file}: not a shard of a sharded checkpoint (no shard entry)")
    if shard.get("save_id") != manifest["save_id"]:
        raise ValueError(f"{file}: belongs to a different save than the manifest (save id "
                         f"{shard.get('save_id')} vs {manifest['save_id']}); a save was "
                         f"interrupted or files were mixed")
    if shard.get("rank") != rank or shard.get("world_size") != manifest["world_size"]:
        raise ValueError(f"{file}: written by rank {shard.get('rank')} of "
                         f"{shard.get('world_size')}; expected rank {rank} of "
                         f"{manifest['world_size']}")


def _write_json_atomic(path, obj):
    _checkpoint.write_atomic(path, "w", lambda f: json.dump(obj, f, indent=1))


_DTYPES = (np.dtype(np.float32).str, np.dtype(np.float64).str)


def _is_count(x):
    return type(x) is int and 0 <= x < 2 ** 63


def _is_layout(shapes, dtypes):
    """True for what fastopt writes: one list of ints >= 0 and one float dtype per parameter."""
    return (isinstance(shapes, list) and isinstance(dtypes, list) and len(shapes) == len(dtypes)
            and all(isinstance(s, list) and all(_is_count(d) for d in s) for s in shapes)
            and all(d in _DTYPES for d in dtypes))


def _rank_file(prefix, manifest, rank):
    """The file of ``rank``: the manifest names it, in the manifest's directory."""
    name = manifest["ranks"][rank]
    # a name with a directory part could make a crafted manifest read any file
    if (not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", "..")
            or "\0" in name):
        raise ValueError(f"{prefix}.manifest.json: the file of rank {rank} is named "
                         f"{name!r:.80}; a rank file is named without a directory and lies "
                         f"next to the manifest, so this manifest was not written by "
                         f"ShardedOptimizer.save (or was edited)")
    return os.path.join(os.path.dirname(os.path.abspath(prefix)), name)


def read_manifest(path):
    """The manifest of the sharded checkpoint ``path`` (a dict), validated."""
    file = f"{os.fspath(path)}.manifest.json"
    try:
        with open(file) as f:
            manifest = json.load(f)
    except (ValueError, RecursionError) as e:     # bad UTF-8 or JSON, too deep, huge ints
        raise ValueError(f"{file}: corrupt manifest ({type(e).__name__}: {e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{file}: not a fastopt sharded-checkpoint manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{file}: manifest version {manifest.get('version')!r}; this fastopt "
                         f"reads version {MANIFEST_VERSION}")
    keys = ("save_id", "world_size", "class", "config", "iterations", "shapes", "dtypes",
            "group_sizes", "buckets", "ranks")
    missing = [k for k in keys if k not in manifest]
    if missing:
        raise ValueError(f"{file}: manifest lacks {', '.join(missing)}")
    world, ranks, buckets = manifest["world_size"], manifest["ranks"], manifest["buckets"]
    bad = [k for k, ok in (
        ("save_id", isinstance(manifest["save_id"], str)),
        ("world_size", _is_count(world) and world >= 1),
        ("class", isinstance(manifest["class"], str)),
        ("config", isinstance(manifest["config"], dict)),
        ("iterations", _is_count(manifest["iterations"])),
        ("shapes or dtypes", _is_layout(manifest["shapes"], manifest["dtypes"])),
        ("group_sizes", isinstance(manifest["group_sizes"], list)
         and all(_is_count(n) for n in manifest["group_sizes"])),
        ("buckets", isinstance(buckets, list) and all(isinstance(b, dict) for b in buckets)),
        ("ranks", isinstance(ranks, list))) if not ok]
    if bad:
        raise ValueError(f"{file}: corrupt manifest (bad {bad[0]} entry); it was not written "
                         f"by ShardedOptimizer.save (or was edited)")
    if len(ranks) != world:
        raise ValueError(f"{file}: names {len(ranks)} rank files for world size {world}")
    for rank in range(world):
        _rank_file(path, manifest, rank)
    shapes = [tuple(s) for s in manifest["shapes"]]
    expected = _layout(shapes, manifest["dtypes"], world)
    if [b.get("bounds") for b in buckets] != [b["bounds"] for b in expected]:
        raise ValueError(f"{file}: shard boundaries do not match the parameter layout")
    return manifest


def _check_rank_file(file, sd, manifest, rank, pieces):
    """Refuse a rank file that does not hold exactly ``pieces`` (``(tensor,
    start, length)`` of the manifest's layout): their params, state arrays
    and step counts, with the manifest's dtypes."""
    shard = sd.get("shard")
    _check_shard_meta(file, shard, manifest, rank)
    if shard.get("pieces") != [list(p) for p in pieces]:
        raise ValueError(f"{file}: its pieces do not match the manifest's layout")
    params, state, steps = sd.get("params"), sd.get("state"), sd.get("steps")
    n = len(pieces)
    if not (isinstance(params, list) and isinstance(state, list) and len(params) == n
            and len(state) == n and _describe(steps) == f"int64 {(n,)}"):
        raise ValueError(f"{file}: does not hold the params, state and step counts of the {n} "
                         f"pieces the manifest gives rank {rank}")
    _check_counter(sd.get("iterations"), f"{file}: iterations")
    if n and steps.min() < 0:
        raise ValueError(f"{file}: step counts must be >= 0")
    for (i, _, m), q, states in zip(pieces, params, state):
        want = f"{np.dtype(manifest['dtypes'][i])} {(m,)}"
        if _describe(q) != want:
            raise ValueError(f"{file}: piece of params[{i}] is {_describe(q)}; expected {want}")
        if not isinstance(states, list) or any(_describe(b) != want for b in states):
            raise ValueError(f"{file}: the state of the piece of params[{i}] is not a list of "
                             f"{want} arrays")


def consolidate(path, out):
    """Merge the sharded checkpoint ``path`` into one single-process checkpoint.

    Parameters
    ----------
    path : str
        The prefix given to :meth:`ShardedOptimizer.save` (the files
        ``<path>.manifest.json`` and ``<path>.rank<k>.npz``).
    out : str
        Where to write the ``.npz`` checkpoint (atomically).  Load it with
        ``fastopt.load(out, opt)`` into a plain optimizer of the same class over
        parameters of the same shapes, or into a :class:`ShardedOptimizer` of
        any world size with :meth:`ShardedOptimizer.load_consolidated`.

    Runs in one process, without MPI; it holds the whole state in memory.
    """
    prefix = os.fspath(path)
    manifest = read_manifest(prefix)
    shapes = [tuple(s) for s in manifest["shapes"]]
    dtypes = manifest["dtypes"]
    world = manifest["world_size"]
    buckets = _layout(shapes, dtypes, world)
    files = [_rank_file(prefix, manifest, rank) for rank in range(world)]
    pieces = [[(i, s, m) for i, _, s, m in _pieces(buckets, shapes, rank)]
              for rank in range(world)]
    # The metadata and array headers of every rank file first: the full-size
    # arrays below are allocated only once the rank files are known to hold
    # every piece the manifest's shapes describe, with the same number of
    # state arrays for each piece of a tensor.
    nstate = {}
    for rank, file in enumerate(files):
        sd = _checkpoint.read_headers(file)
        _check_rank_file(file, sd, manifest, rank, pieces[rank])
        for (i, _, _), states in zip(pieces[rank], sd["state"]):
            if nstate.setdefault(i, len(states)) != len(states):
                raise ValueError(f"{file}: holds {len(states)} state arrays for its piece of "
                                 f"params[{i}]; another rank file holds {nstate[i]}")
    n = len(shapes)
    full_params = [np.empty(s, dtype=d) for s, d in zip(shapes, dtypes)]
    full_state = [None] * n
    steps = [None] * n
    filled = [0] * n
    first = None
    for rank, file in enumerate(files):
        sd = _checkpoint.read(file, expect=lambda sd: _check_rank_file(
            file, sd, manifest, rank, pieces[rank]))
        _check_rank_file(file, sd, manifest, rank, pieces[rank])
        if first is None:
            first = sd
        elif sd["iterations"] != first["iterations"]:
            raise ValueError(f"{file}: at iteration {sd['iterations']}; rank 0 is at "
                             f"{first['iterations']}")
        for (i, start, m), q, states, k in zip(pieces[rank], sd["params"], sd["state"],
                                                sd["steps"]):
            full_params[i].reshape(-1)[start:start + m] = q
            if full_state[i] is None:
                full_state[i] = [np.zeros(shapes[i], dtype=dtypes[i]) for _ in states]
                steps[i] = int(k)
            if len(states) != len(full_state[i]) or int(k) != steps[i]:
                raise ValueError(f"{file}: pieces of params[{i}] disagree on their state "
                                 f"(count or step)")
            for a, b in zip(full_state[i], states):
                a.reshape(-1)[start:start + m] = b
            filled[i] += m
    for i in range(n):
        if filled[i] != math.prod(shapes[i]) or full_state[i] is None:
            raise ValueError(f"{prefix}: params[{i}] is not fully covered by the rank files")
    sd = {
        "format_version": 1,
        "class": manifest["class"],
        "config": manifest["config"],
        "iterations": int(first["iterations"]),
        "steps": np.array(steps, dtype=np.int64),
        "shapes": [list(s) for s in shapes],
        "dtypes": list(dtypes),
        "state": full_state,
        "schedules": first.get("schedules", {}),
    }
    sd["params"] = full_params
    _checkpoint.write(out, sd)


def _main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        prog="python -m fastopt.distributed",
        description="Tools for sharded fastopt checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consolidate", help="merge <path>.rank*.npz into one checkpoint "
                                           "that fastopt.load accepts")
    c.add_argument("path", help="the prefix given to ShardedOptimizer.save")
    c.add_argument("out", help="the single-process checkpoint to write (.npz)")
    args = parser.parse_args(argv)
    try:
        consolidate(args.path, args.out)
        manifest = read_manifest(args.path)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"error: the state of {args.path} does not fit in memory; consolidate it on a "
              f"machine with more", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {manifest['class']}, {len(manifest['shapes'])} params, "
          f"iteration {manifest['iterations']}, merged from {manifest['world_size']} ranks")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
