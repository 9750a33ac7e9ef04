"""Memory layout: flat buffers, and how the parameters are split into shards.

The parameters of each dtype are concatenated in order into one flat index
space, a :class:`Bucket`, which is split into ``world_size`` contiguous
shards whose boundaries fall on the C engine's chunk grid of each tensor
(:func:`shard_bounds`).  The part of one tensor that
falls into one rank's shard is a :class:`Piece`.
"""
import bisect
import itertools
import math
from typing import Any, Iterable, NamedTuple, Tuple

import numpy as np
import numpy.typing as npt

from .._compact import param_dtype  # noqa: F401 - the dtype of a bucket's str

#: Byte alignment of flat buffers (one cache line).
ALIGN = 64


# ---- flat buffers ------------------------------------------------------------

def aligned_empty(n, dtype):
    """An uninitialised 1-D array of ``n`` elements starting on an ALIGN-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + ALIGN, dtype=np.uint8)
    skip = (-raw.ctypes.data) % ALIGN
    return raw[skip:skip + n * dtype.itemsize].view(dtype)


def flat_arrays(shapes: Iterable[Any],
                dtype: npt.DTypeLike = np.float32) -> list[npt.NDArray[Any]]:
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
    flat = aligned_empty(sum(sizes), dtype)
    flat[...] = 0
    out, at = [], 0
    for shape, n in zip(shapes, sizes):
        out.append(flat[at:at + n].reshape(shape))
        at += n
    return out


def sum_dtype(dtype):
    """The dtype gradients of params of ``dtype`` are summed over ranks in:
    float32 for 16-bit floats (MPI has no 16-bit float sum, and a sum of
    16-bit values would round at every addition), else their own."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize == 2 else np.dtype(dtype)


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def flat_view(arrays, dtype):
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


# ---- the shard layout ----------------------------------------------------------

class Bucket(NamedTuple):
    """The parameters of one dtype as one flat index space ``[0, total)``."""
    dtype: str                   #: the dtype's ``str`` (``"<f4"``, ``"<f8"``)
    tensors: Tuple[int, ...]     #: indices of its parameters, in order
    offsets: Tuple[int, ...]     #: where each of them starts in the flat space
    total: int                   #: elements in all
    bounds: Tuple[int, ...]      #: ``world_size + 1`` shard boundaries

    def shard(self, rank):
        """``(lo, hi)``: the flat range held by ``rank``."""
        return self.bounds[rank], self.bounds[rank + 1]

    def counts(self):
        """The number of elements of every rank's shard (a list of ints)."""
        return np.diff(self.bounds).tolist()

    def spans(self, shapes):
        """``(tensor, offset, size)`` for every parameter of the bucket."""
        return [(i, off, math.prod(shapes[i])) for i, off in zip(self.tensors, self.offsets)]

    def manifest_entry(self):
        """The bucket as a checkpoint manifest records it."""
        return {"dtype": self.dtype, "tensors": list(self.tensors),
                "bounds": list(self.bounds)}

    def as_dict(self):
        """Every field, with lists for the tuples."""
        return {"dtype": self.dtype, "tensors": list(self.tensors),
                "offsets": list(self.offsets), "total": self.total,
                "bounds": list(self.bounds)}


class Piece(NamedTuple):
    """The part of parameter ``tensor`` that one rank holds: ``length``
    elements from flat index ``start`` of the tensor, in bucket ``bucket``."""
    tensor: int
    bucket: int
    start: int
    length: int


#: Elements per chunk of the C work list (``FO_CHUNK`` in csrc/fastopt.h):
#: norms are summed per chunk, then the chunks in order.
CHUNK = 4096


def grid_of(shape, table):
    """Elements between the allowed shard boundaries of a tensor of ``shape``:
    :data:`CHUNK`, and for a table (a 2-D tensor that may get
    :class:`fastopt.RowGrad` s) the least multiple of CHUNK that is also one
    of whole rows, so that every piece of a table is whole rows."""
    if table and shape[1] > 0:
        return math.lcm(CHUNK, int(shape[1]))
    return CHUNK


def piece_shape(piece, shapes, tables, whole=False):
    """The shape of ``piece`` as the inner optimizer holds it: the tensor's
    own with ``whole`` (every piece a whole tensor), rows for a piece of a
    table (``piece.tensor in tables``), else flat."""
    shape = shapes[piece.tensor]
    if whole:
        return tuple(shape)
    if piece.tensor in tables and shape[1] > 0:
        return (piece.length // shape[1], shape[1])
    return (piece.length,)


def shard_bounds(sizes, world, grids=None):
    """``world + 1`` boundaries splitting the concatenation of tensors of
    ``sizes`` elements into contiguous, balanced shards.

    A boundary lies at a tensor's start or at a multiple of its grid
    (``grids[i]``, :data:`CHUNK` by default; see :func:`grid_of`) elements
    from it, so that every piece of a tensor is cut into the same chunks as
    the whole tensor: the per-chunk sums of squares a rank computes are
    those one process computes, and combined in order they give its norm
    bit for bit.  Each boundary is the allowed position nearest the balanced
    one (ties to the lower), so a shard is within a grid of ``total / world``.
    """
    sizes = [int(n) for n in sizes]
    grids = [CHUNK] * len(sizes) if grids is None else [int(g) for g in grids]
    total = sum(sizes)
    starts = list(itertools.accumulate(sizes, initial=0))[:-1]
    bounds = [0]
    for k in range(1, world):
        target = k * total // world
        # the tensor holding the target, and the chunk starts around it
        i = max(bisect.bisect_right(starts, target) - 1, 0)
        lo = starts[i] + (target - starts[i]) // grids[i] * grids[i]
        hi = min(lo + grids[i], starts[i] + sizes[i])
        b = hi if hi - target < target - lo else lo
        bounds.append(max(b, bounds[-1]))
    bounds.append(total)
    return bounds


def make_buckets(shapes, dtypes, world, tables=(), whole=False):
    """One :class:`Bucket` per dtype (in order of first appearance), tensors in
    order; ``tables``: the indices of the tensors cut at whole rows; ``whole``:
    no tensor is cut (each is held by one rank, the shards balanced by size)."""
    buckets = []
    for dt in dict.fromkeys(dtypes):
        tensors = [i for i, d in enumerate(dtypes) if d == dt]
        sizes = [math.prod(shapes[i]) for i in tensors]
        offsets = list(itertools.accumulate(sizes, initial=0))
        total = offsets.pop()
        grids = ([max(n, 1) for n in sizes] if whole else
                 [grid_of(shapes[i], i in tables) for i in tensors])
        buckets.append(Bucket(dt, tuple(tensors), tuple(offsets), total,
                              tuple(shard_bounds(sizes, world, grids))))
    return buckets


def pieces_of(buckets, shapes, rank):
    """The :class:`Piece` of every tensor held by ``rank``, in tensor order.
    A zero-size tensor is held (empty) by rank 0 so that its step count has
    an owner."""
    out = []
    for bi, b in enumerate(buckets):
        lo, hi = b.shard(rank)
        for i, off, n in b.spans(shapes):
            if n == 0:
                if rank == 0:
                    out.append(Piece(i, bi, 0, 0))
                continue
            a, z = max(off, lo), min(off + n, hi)
            if a < z:
                out.append(Piece(i, bi, a - off, z - a))
    out.sort()
    return out


def piece_entries(pieces):
    """``[[tensor, start, length], ...]``: the pieces as a rank file records them."""
    return [[p.tensor, p.start, p.length] for p in pieces]
