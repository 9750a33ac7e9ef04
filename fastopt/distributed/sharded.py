"""ZeRO stage 1: :class:`ShardedOptimizer`, optimizer state sharded over the ranks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional, Tuple

import numpy as np

from .. import _compact, _core
from .._core import RowGrad
from .._hyper import split_param_groups
from . import checkpoint as _checkpoint
from ._agree import agree, first_difference, hash64, hash_arrays, mismatch, mpi, mpi_type
from ._inputs import (check_disjoint, check_grads, check_row_params, pairs_to_grads,
                      shardable_class, whole_tensors)
from ._layout import (aligned_empty, flat_view, make_buckets, param_dtype, piece_shape,
                      pieces_of, sum_dtype)
from ._reduce import ShardReducer, reduce_scatter_ordered
from .allreduce import gather_every_rows

if TYPE_CHECKING:
    from .._types import Array, Grads, Params
    from ..optimizer import Optimizer


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
    row_params : sequence of int, optional
        Indices of the 2-D parameters (embedding tables) that may be given a
        :class:`fastopt.RowGrad`: their shards are cut at whole rows (see
        "Row gradients" below).  Other parameters get dense grads only.
    **kwargs
        Passed to ``opt_class`` unchanged (convention, learning rate,
        schedules, weight decay, ...).

    Notes
    -----
    The parameters of each dtype are concatenated in order into one flat
    index space of :math:`N` elements, split into :math:`R` contiguous
    shards :math:`[b_r, b_{r+1})` that are balanced to within 4096 elements
    and whose boundaries fall on the C engine's chunk grid of each tensor
    (a tensor's start, or a multiple of 4096 elements from it).  Rank
    :math:`r` builds an ordinary ``opt_class`` over the
    pieces of the tensors that fall into its shard (views, so the C kernels
    run unchanged) and keeps only their state: about
    :math:`\text{state bytes} / R` per rank.  One step is

    .. math::

        \hat g_{[b_r, b_{r+1})} &= \Big(\big((g^{(0)} + g^{(1)}) + g^{(2)}\big) + \dots
            \Big)_{[b_r, b_{r+1})} / R \qquad \text{(reduce-scatter, rank order)} \\
        w_{[b_r, b_{r+1})} &\leftarrow \text{opt\_class update with } \hat g \\
        w &\leftarrow \text{Allgatherv of all shards}

    which is, bit for bit and for any :math:`R`, the step of one
    ``opt_class`` given the mean of the same :math:`R` gradients summed in
    rank order (with one or two ranks that is MPI's own ``Reduce_scatter``,
    one addition either way; with more, an ``Alltoallv`` of the shards'
    segments and the additions in rank order).  Per-tensor hyper-parameters,
    param groups, ``None`` gradients and torch's per-parameter step counts
    carry over, because each piece is a parameter of the inner optimizer
    with its tensor's group and step count.

    **Whole-tensor reductions.**  ``clipnorm``, ``global_clipnorm`` and
    per-tensor trust ratios (Lamb) need norms of whole tensors; one process
    computes a tensor's sum of squares per 4096-element chunk and adds the
    chunks in order.  Since a shard boundary never cuts a chunk, each rank
    computes those same per-chunk sums for its pieces, and one
    ``Allgatherv`` of a small vector per reduction (one value per tensor a
    rank holds whole, the chunk sums of the at most two tensors it shares
    with its neighbours) lets every rank add them in the same order: the
    norms, and so the whole trajectory, are bit for bit those of one
    process.  ``skip_nonfinite`` costs one 1-byte ``Allreduce``: every rank
    skips when any rank's shard holds a NaN or an infinity.

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
    :func:`flat_arrays`.  With more than two ranks a step also allocates a
    transient receive buffer of at most 8 MiB for the rank-order sum.
    :meth:`state_nbytes` and :meth:`buffer_nbytes` report the rest.
    Allocate with :func:`flat_arrays` to get the saving.

    **Agreement.**  Construction checks that every rank passed the same
    class, options, parameter layout and initial values; every step first
    exchanges 32 bytes per rank (one Allgather) so that all ranks agree
    their gradients are valid, ``None`` at the same places, and that
    hyper-parameters and step counts match.  Any disagreement raises the
    same ``ValueError`` on every rank before data moves.

    **Whole tensors.**  An optimizer whose update of an element depends on
    other elements of its tensor beyond per-tensor sums (Adafactor's
    factored rows and columns) is sharded by whole tensors: the boundaries
    lie only at tensor starts, so each tensor, with its state in the shape
    the optimizer keeps it, lives on one rank; the shards are balanced to
    within a tensor.  Everything else (reductions, ``None`` grads,
    checkpoints) is as for pieces.

    **Methods that rewrite the parameters.**  The inner optimizer's methods
    that rewrite the parameters elementwise from its state (its class's
    ``param_methods``: ``swap_averages()``, schedule-free's ``eval()`` and
    ``train()``, ASGD's ``use_averaged_params()``) are methods of the sharded
    optimizer too: every rank runs it on its shard, then the shards are
    gathered.  Collective: call them on every rank.

    **Row gradients.**  A parameter of ``row_params`` may be given a
    :class:`fastopt.RowGrad` (on every rank, with any number of rows) where
    another gets a dense gradient.  Every rank's rows are gathered in rank
    order, as :func:`allreduce_gradients` gathers them (the values divided by
    :math:`R`), and each rank applies the rows that fall into its shard: a
    table's shard boundaries lie on multiples of ``lcm(4096, width)``
    elements from its start, so every piece is whole rows.  The result is,
    bit for bit, the step of one ``opt_class`` given ``RowGrad(concat_r
    indices^(r), concat_r values^(r) / R)``: untouched rows and their state
    stay as they are.  The rows of the table still travel in the shard
    all-gather that follows the step (the whole table, as a dense step
    sends it), and in the reduce-scatter as zeros when other parameters of
    its dtype get dense grads.  Options that reduce over whole tensors
    (``clipnorm``, ``global_clipnorm``, ``skip_nonfinite``) are refused for a
    step with RowGrads.

    **Compact storage.**  ``state_dtype`` (bfloat16, float16, int8 blocks)
    and 16-bit params (bfloat16, float16; ``rounding``, ``master_weights``,
    ``seed``) are taken: each piece is blocked, sized and rounded as its
    whole param is by one process (the rounding draws follow each element's
    index in its whole param).  The grads of a 16-bit param (its dtype or
    float32) are widened to float32 and summed in float32, the params travel
    in the all-gather as their 16 bits, and each rank keeps the float32
    master copies of its pieces (in its rank file; :func:`consolidate`
    joins them).  The step is, bit for bit, that of one process given the
    float32 mean of the ranks' grads.  A table of ``row_params`` must keep
    full-precision storage (RowGrads update float32/float64 rows).

    Attributes
    ----------
    optimizer : Optimizer
        This rank's inner optimizer (its params are the shard pieces).
    buckets : list of dict
        Per dtype: ``dtype``, ``tensors`` (indices), ``offsets`` (where
        each starts in the dtype's flat index space), ``total`` (elements)
        and ``bounds`` (the shard boundaries, ``world_size + 1`` ints).

    Examples
    --------
    Run with ``mpiexec -n 2 python script.py``::

        from mpi4py import MPI
        import fastopt as fo
        from fastopt.distributed import ShardedOptimizer
        opt = ShardedOptimizer(fo.Adam, [W, b], MPI.COMM_WORLD, learning_rate=1e-3)
        opt.step([gW, gb])        # this rank's gradients; averaged over ranks
    """

    def __init__(self, opt_class: type[Optimizer], params: Params, comm: Any, *,
                 row_params: Iterable[int] = (), **kwargs: Any) -> None:
        self._MPI = mpi()
        self.comm = comm
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        # Build locally, then agree: a rank that fails (or holds different
        # parameters) must not leave the others waiting in a collective.
        failure, signature, values = None, 0, 0
        try:
            self._build(opt_class, params, row_params, kwargs)
            signature = hash64(repr(self._signature()))
            values = hash_arrays(self._params)
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks know
            failure = e
        try:
            table = agree(comm, [failure is not None, signature, values],
                          None if failure is None else f"{type(failure).__name__}: {failure}",
                          "ShardedOptimizer()")
        except ValueError:
            if failure is not None:
                raise failure from None
            raise
        mismatch(comm, table, 1, self._signature(),
                 lambda v: first_difference(v, None),
                 "ShardedOptimizer(): ranks passed different parameters or options;")
        mismatch(comm, table, 2, None,
                 lambda v: "the parameter values differ between ranks; give every rank the "
                           "same initial weights (same seed, or comm.Bcast(w, root=0) for "
                           "each w) before building the optimizer",
                 "ShardedOptimizer():")

    def _signature(self):
        """What must be equal on every rank: class, parameter layout, options
        (threads may differ)."""
        cfg = {k: v for k, v in self.get_config().items() if k != "num_threads"}
        params = [f"params[{i}] {param_dtype(d)} {s}" for i, (s, d) in
                  enumerate(zip(self._shapes, self._dtypes))]
        return [f"class {type(self.optimizer).__name__}", f"{len(params)} params",
                *params, f"group sizes {self._group_sizes}", f"row_params {self._tables}",
                f"whole tensors {self._whole}",
                *(f"{k}={v!r}" for k, v in sorted(cfg.items()))]

    def _build(self, opt_class, params, row_params, kwargs):
        opt_class = shardable_class(opt_class)
        groups = split_param_groups(params)
        flat = [p for plist, _ in groups for p in plist]
        for i, p in enumerate(flat):
            _core.check_param(p, i)
        # master_weights and rounding act on the 16-bit params of the whole model:
        # a rank whose pieces are all float32 takes them too
        _compact.check_param_options(opt_class, kwargs.get("master_weights", False),
                                     kwargs.get("rounding"), flat)
        check_disjoint(flat)
        self._params = flat
        self._shapes = [tuple(int(d) for d in p.shape) for p in flat]
        self._dtypes = [p.dtype.str for p in flat]
        self._group_sizes = [len(plist) for plist, _ in groups]
        self._tables = check_row_params(row_params, self._shapes)
        self._whole = whole_tensors(opt_class)
        if self._tables and self._whole:
            raise ValueError(f"row_params: {opt_class.__name__} is sharded by whole tensors "
                             f"(its update of an element depends on other elements of the "
                             f"tensor) and takes no RowGrads; leave row_params out")
        self._buckets = make_buckets(self._shapes, self._dtypes, self.world_size, self._tables,
                                     self._whole)
        self.buckets = [b.as_dict() for b in self._buckets]
        self._allocate_buffers()
        self._pieces = pieces_of(self._buckets, self._shapes, self.rank)
        piece_params, self._piece_grads = self._piece_views()
        if len(groups) == 1 and not groups[0][1] and piece_params:
            inner_params = piece_params
        # (a rank holding no piece builds its optimizer over empty groups, which
        # an optimizer takes, where it refuses an empty parameter list)
        else:
            group_of = [gi for gi, (plist, _) in enumerate(groups) for _ in plist]
            inner_params = [dict(over, params=[q for q, piece in zip(piece_params, self._pieces)
                                               if group_of[piece.tensor] == gi])
                            for gi, (_, over) in enumerate(groups)]
        # each piece's rounding and int8 blocks follow the whole param's elements
        layout = ([p.tensor for p in self._pieces], [p.start for p in self._pieces],
                  [int(np.prod(self._shapes[p.tensor])) for p in self._pieces])
        self.optimizer = opt_class(inner_params, _layout=layout, **kwargs)
        for piece, formats in zip(self._pieces, self.optimizer._formats):
            i = piece.tensor
            if i in self._tables and (_compact.half_name(flat[i].dtype) or
                                      any(f != _core.FMT_NATIVE for f in formats)):
                raise ValueError(f"row_params: params[{i}] has compact storage (16-bit, or "
                                 f"state_dtype), and RowGrads update rows of float32/float64 "
                                 f"params with full-precision state; leave it out of "
                                 f"row_params, or keep its state in full precision")
        self._reducer = ShardReducer(self._MPI, self.comm, self._buckets, self._shapes)
        self._reduces = self._needs_reducer(kwargs)
        if self._reduces:
            self.optimizer._stepper.set_reducer(self._reducer)

    def _needs_reducer(self, kwargs):
        """Whether a step reduces over whole tensors (a norm, a finite check)."""
        return (not type(self.optimizer).elementwise or
                any(kwargs.get(k) not in (None, False)
                    for k in ("clipnorm", "global_clipnorm", "skip_nonfinite")))

    def _allocate_buffers(self):
        """Per bucket: the flat parameters (a view of your arrays, or a master
        copy of them), whether it is a copy, the gradient send buffer
        (allocated on first need) and the received gradient shard."""
        self._flat, self._master, self._send, self._recv = [], [], [], []
        for b in self._buckets:
            dtype = param_dtype(b.dtype)
            view = flat_view([self._params[i] for i in b.tensors], dtype)
            self._master.append(view is None)
            if view is None:
                view = aligned_empty(b.total, dtype)
                for i, off, n in b.spans(self._shapes):
                    view[off:off + n] = self._params[i].reshape(-1)
            self._flat.append(view)
            self._send.append(None)
            lo, hi = b.shard(self.rank)
            self._recv.append(aligned_empty(hi - lo, sum_dtype(dtype)))

    def _piece_views(self):
        """Views of every piece in the flat parameters and in the received
        gradient shard (a piece of a table as its rows)."""
        offset_of = {i: off for b in self._buckets for i, off in zip(b.tensors, b.offsets)}
        params, grads = [], []
        for piece in self._pieces:
            at = offset_of[piece.tensor] + piece.start
            lo, _ = self._buckets[piece.bucket].shard(self.rank)
            shape = piece_shape(piece, self._shapes, self._tables, self._whole)
            params.append(self._flat[piece.bucket][at:at + piece.length].reshape(shape))
            grads.append(self._recv[piece.bucket][at - lo:at - lo + piece.length].reshape(shape))
        return params, grads

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
        return int(sum(a.nbytes for s in self.optimizer.state_arrays() for a in s))

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

    def __getattr__(self, name):
        # the inner optimizer's methods that rewrite the parameters from the
        # state, elementwise (swap_averages, eval/train, use_averaged_params):
        # every rank runs it on its shard, then the shards are gathered
        inner = self.__dict__.get("optimizer")
        if inner is None or name not in type(inner).param_methods:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        method = getattr(inner, name)

        def collective():
            with self.optimizer.lock:
                for bi, master in enumerate(self._master):
                    if master:
                        self._pull_shard(bi)
                result = method()
                self._gather_params()
            return result
        collective.__name__ = name
        collective.__doc__ = (f"{type(self.optimizer).__name__}.{name} on every rank's "
                              f"shard, then the shards gathered (collective: call it on every "
                              f"rank).\n\n{method.__doc__ or ''}")
        return collective

    def __repr__(self):
        return (f"ShardedOptimizer({type(self.optimizer).__name__}, rank {self.rank} of "
                f"{self.world_size}, {len(self._params)} params, {len(self._pieces)} pieces, "
                f"state {self.state_nbytes()} bytes, iterations={self.iterations})")

    # ---- the step ---------------------------------------------------------------

    def step(self, grads: Grads) -> None:
        """One update of every parameter from this rank's gradients.

        ``grads[i]`` is this rank's gradient of ``params[i]`` (its mean over
        this rank's part of the batch); the update uses the mean over ranks.
        ``None`` skips a parameter and must be ``None`` on every rank.  Every
        rank checks its gradients and the verdict is agreed before any data
        moves: on any error every rank raises and nothing changes.
        """
        if isinstance(grads, np.ndarray):
            raise TypeError("grads must be a list of arrays; got a single ndarray: pass [g]")
        self._step(list(grads))

    def apply_gradients(self, grads_and_vars: Iterable[Tuple[Optional[Array], Array]]) -> None:
        """Keras-style: ``opt.apply_gradients(zip(grads, params))``, pairs matched
        to the parameters by identity; unpaired parameters get ``None``.  A pair
        that names an unknown parameter, or a parameter named twice, is refused
        on every rank as a bad gradient is."""
        grads, refused = pairs_to_grads(grads_and_vars, self._params)
        self._step(grads, refused)

    def _step(self, grads, refused=None):
        with self.optimizer.lock:
            self._agree_step(grads, refused)
            self._reducer.active = any(g is not None for g in grads)
            rows = gather_every_rows(self.comm, self._MPI, {
                i: g for i, g in enumerate(grads) if isinstance(g, RowGrad)})
            for bi, b in enumerate(self._buckets):
                # a bucket of RowGrads and Nones alone has no dense grad to reduce
                if not rows or any(isinstance(grads[i], np.ndarray) for i in b.tensors):
                    self._reduce_scatter(bi, grads)
            self.optimizer.step([self._rows_of_piece(rows[p.tensor], p, g.shape[0])
                                 if p.tensor in rows else
                                 None if grads[p.tensor] is None else g
                                 for p, g in zip(self._pieces, self._piece_grads)])
            self._gather_params()

    def _rows_of_piece(self, g, piece, nrows):
        """The rows of ``g`` (all ranks' rows of a table) that fall into
        ``piece`` (``nrows`` whole rows), renumbered from its first row, in the
        order gathered (so repeated rows are summed as by one process)."""
        first = piece.start // self._shapes[piece.tensor][1]
        keep = (g.indices >= first) & (g.indices < first + nrows)
        return RowGrad(g.indices[keep] - first, np.ascontiguousarray(g.values[keep]))

    def _agree_step(self, grads, refused):
        """Agree with every rank that all grads are valid, ``None`` at the same
        places, and that step counts and hyper-parameters match; otherwise
        raise the same ``ValueError`` on every rank.  ``refused``: this rank's
        reason to refuse the step found before, if any."""
        error, message = (1, refused) if refused else check_grads(
            grads, self._params, self._tables, self._reduces)
        # None, dense or rows: the same kind at every place on every rank
        mask = ([0 if g is None else 2 if isinstance(g, RowGrad) else 1 for g in grads]
                if not error else [])
        hp = None
        if not error:
            try:
                hp = [self.optimizer.hyperparameters(k)
                      for k in range(len(self.optimizer.param_groups))]
            except (ValueError, TypeError) as e:
                error, message = len(grads) + 1, f"hyper-parameters: {e}"
        code = [error, hash64(repr(mask)) if any(m != 1 for m in mask) else 0,
                hash64(repr(hp)), self.optimizer.iterations]
        table = agree(self.comm, code, message, "ShardedOptimizer.step")
        mismatch(self.comm, table, 1,
                 ([i for i, m in enumerate(mask) if m == 0],
                  [i for i, m in enumerate(mask) if m == 2]),
                 lambda v: "\n".join(f"rank {r}: grads are None at indices {x[0]}, RowGrads at "
                                     f"{x[1]}" for r, x in enumerate(v)) +
                 "\nNone and RowGrads must be at the same places on every rank",
                 "ShardedOptimizer.step: ranks skip different parameters or give rows for "
                 "different ones;")
        mismatch(self.comm, table, 3, self.optimizer.iterations,
                 lambda v: f"iterations per rank: {v}",
                 "ShardedOptimizer.step: ranks are at different steps;")
        mismatch(self.comm, table, 2, hp,
                 lambda v: "\n".join(f"rank {r}: {x}" for r, x in enumerate(v)),
                 "ShardedOptimizer.step: ranks have different hyper-parameters;")

    def _reduce_scatter(self, bi, grads):
        """This rank's shard of bucket ``bi``'s gradient, summed over the ranks
        and divided by their number, into the received gradient shard (the
        inner optimizer's grads)."""
        MPI, b, recv = self._MPI, self._buckets[bi], self._recv[bi]
        mpitype = mpi_type(MPI, recv.dtype)
        send = self._send_buffer(bi, grads)
        if self.world_size <= 2:
            # one addition per element: the same in any order
            self.comm.Reduce_scatter([send, mpitype], [recv, mpitype], recvcounts=b.counts(),
                                     op=MPI.SUM)
        else:
            reduce_scatter_ordered(MPI, self.comm, send, recv, b.bounds, mpitype)
        np.divide(recv, self.world_size, out=recv)
        if self._master[bi]:
            self._pull_shard(bi)

    def _send_buffer(self, bi, grads):
        """Bucket ``bi``'s gradients as one flat array of the dtype they are
        summed in: a view of them if they are consecutive views of one buffer,
        else packed into the send buffer (a ``None`` gradient or a RowGrad as
        zeros; 16-bit gradients widened to float32)."""
        b, dtype = self._buckets[bi], self._recv[bi].dtype
        tensors = [g if isinstance(g, np.ndarray) else None for g in (grads[i] for i in b.tensors)]
        if not any(g is None for g in tensors):
            send = flat_view(tensors, dtype)
            if send is not None:
                return send
        if self._send[bi] is None:
            self._send[bi] = aligned_empty(b.total, dtype)
        send = self._send[bi]
        for (_, off, n), g in zip(b.spans(self._shapes), tensors):
            if g is None:
                send[off:off + n] = 0
            else:
                send[off:off + n].reshape(g.shape)[...] = g
        return send

    def _pull_shard(self, bi):
        """Copy this rank's shard of your arrays into the master copy, so edits
        made to the weights between steps are what gets updated."""
        b = self._buckets[bi]
        lo, hi = b.shard(self.rank)
        flat = self._flat[bi]
        for i, off, n in b.spans(self._shapes):
            a, z = max(off, lo), min(off + n, hi)
            if a < z:
                flat[a:z] = self._params[i].reshape(-1)[a - off:z - off]

    def _gather_params(self):
        """Every rank's shard into the flat parameters of every rank (and from a
        master copy into your arrays)."""
        MPI = self._MPI
        for b, flat, master in zip(self._buckets, self._flat, self._master):
            bits = flat.view(np.uint16) if flat.dtype.itemsize == 2 else flat
            self.comm.Allgatherv(MPI.IN_PLACE, [bits, (b.counts(), list(b.bounds[:-1])),
                                                mpi_type(MPI, bits.dtype)])
            if master:
                for i, off, n in b.spans(self._shapes):
                    self._params[i].reshape(-1)[...] = flat[off:off + n]

    # ---- checkpoints (fastopt/distributed/checkpoint.py) ------------------------

    def save(self, path):
        """Write a sharded checkpoint: every rank writes a new
        ``<path>.rank<k>.s<step>-<id>.npz`` (its state and its shard of the
        parameters), then rank 0 writes ``<path>.manifest.json`` atomically,
        naming each rank file with its step, size and SHA-256, then every
        rank removes its files of earlier saves.  Collective: call it on every
        rank with the same ``path`` on a file system all ranks share.

        The manifest is the commit: a process killed during a save leaves the
        previous manifest and every file it names, so :meth:`load` restores
        the previous save; a rank file that is missing, cut short, replaced or
        of another save is refused (naming it), never loaded as a mix.
        """
        _checkpoint.save(self, path)

    def load(self, path):
        """Restore a checkpoint written by :meth:`save` with the same world size
        and parameter layout.  Collective.  Every rank validates the manifest
        and its own file first; on any error every rank raises and nothing
        changes."""
        _checkpoint.load(self, path)

    def load_consolidated(self, path):
        """Restore a single-process checkpoint (:func:`fastopt.save` of a plain
        optimizer, or the output of :func:`consolidate`) into this sharded
        optimizer, at any world size: every rank reads the file and keeps its
        pieces.  Collective; on any error every rank raises and nothing changes."""
        _checkpoint.load_consolidated(self, path)

