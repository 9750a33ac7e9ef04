"""Reductions of a sharded step, bit for bit those of one process.

One process reduces a tensor chunk by chunk (``FO_CHUNK`` elements, the C
work list): each chunk's sum of squares (Lamb: two sums) is a fixed function
of its elements, and a tensor's sum is its chunks' sums added in chunk order,
starting from zero.  Shard boundaries fall on that chunk grid
(:func:`._layout.shard_bounds`), so a rank's piece of a tensor is cut into the
same chunks, and the rank computes the same per-chunk sums.  One
``Allgatherv`` per reduction hands every rank every tensor's sums: one value
per tensor a rank holds whole, the per-chunk sums of a tensor that spans
ranks, which every rank then adds in chunk order as one process does.

The gradient itself is summed over the ranks in rank order
(:func:`reduce_scatter_ordered`), so the step of ``world`` ranks is the step of
one process given the same ``world`` gradients summed in that order.
"""
import math

import numpy as np

from ._layout import CHUNK, pieces_of

#: Bytes of the receive buffer of the ordered reduce-scatter, per round.
ORDERED_BUFFER_BYTES = 8 << 20


def _chunks(n):
    return -(-n // CHUNK)


class ShardReducer:
    """What the inner optimizer's Stepper hands its reductions to
    (:meth:`fastopt._core.Stepper.set_reducer`): a collective per call, made
    by every rank in the same order."""

    def __init__(self, MPI, comm, buckets, shapes):
        self.MPI, self.comm = MPI, comm
        self.rank, self.world = comm.Get_rank(), comm.Get_size()
        self.active = False
        sizes = [math.prod(s) for s in shapes]
        self.ntensors = len(shapes)
        every = [pieces_of(buckets, shapes, r) for r in range(self.world)]
        self.mine = every[self.rank]
        self.tensor_of = np.array([p.tensor for p in self.mine], dtype=np.intp)
        # The gathered vector: rank by rank, piece by piece, one slot for a
        # tensor held whole, its per-chunk sums for a piece of a split tensor.
        whole_t, whole_at, split, counts, at = [], [], {}, [], 0
        for pieces in every:
            first = at
            for p in pieces:
                if p.length == sizes[p.tensor]:
                    whole_t.append(p.tensor)
                    whole_at.append(at)
                    at += 1
                else:
                    split.setdefault(p.tensor, []).extend(range(at, at + _chunks(p.length)))
                    at += _chunks(p.length)
            counts.append(at - first)
        self.whole_t = np.array(whole_t, dtype=np.intp)
        self.whole_at = np.array(whole_at, dtype=np.intp)
        self.split = [(t, np.array(ix, dtype=np.intp)) for t, ix in sorted(split.items())]
        self.counts = counts
        self.displs = [sum(counts[:r]) for r in range(self.world)]
        self.slots = at
        # where this rank's slots come from: its per-tensor sums or its chunk sums
        self.send_from, chunk = [], 0
        for i, p in enumerate(self.mine):
            k = _chunks(p.length)
            whole = p.length == sizes[p.tensor]
            self.send_from.append((i, whole, chunk, k))
            chunk += k

    # ---- the Stepper's calls ----------------------------------------------------

    def any(self, flag):
        """True on every rank if ``flag`` is true on any (one 1-byte all-reduce)."""
        mine = np.array([1 if flag else 0], dtype=np.uint8)
        out = np.empty(1, dtype=np.uint8)
        self.comm.Allreduce(mine, out, op=self.MPI.MAX)
        return bool(out[0])

    def sums(self, sums, chunks, width):
        """Replace this rank's per-piece sums by those of the whole tensors;
        return every whole tensor's sums (``ntensors * width`` float64)."""
        S, C = sums.reshape(-1, width), chunks.reshape(-1, width)
        send = np.empty((self.counts[self.rank], width), dtype=np.float64)
        j = 0
        for i, whole, c, k in self.send_from:
            if whole:
                send[j] = S[i]
                j += 1
            else:
                send[j:j + k] = C[c:c + k]
                j += k
        recv = np.empty((self.slots, width), dtype=np.float64)
        self.comm.Allgatherv(send, [recv, ([c * width for c in self.counts],
                                           [d * width for d in self.displs]),
                                    self.MPI.DOUBLE])
        total = np.zeros((self.ntensors, width), dtype=np.float64)
        total[self.whole_t] = recv[self.whole_at]
        for t, ix in self.split:
            # in chunk order from zero, one addition at a time, as fo_sumsq adds
            # them (accumulate is sequential: each partial sum is the previous one
            # plus the next chunk's)
            terms = np.concatenate([np.zeros((1, width)), recv[ix]])
            total[t] = np.add.accumulate(terms, axis=0)[-1]
        S[...] = total[self.tensor_of]
        return total.reshape(-1)

    def norms(self, grads, whole):
        """Norms where a sum of squares overflowed, as ``fo_norm_scaled``
        computes them for a whole tensor (its largest magnitude, then the
        scaled squares added in element order): ``(per piece, per tensor)``.
        Rare (float64 gradients near 1e154), so the element order is kept
        with one broadcast per rank."""
        whole = np.asarray(whole, dtype=np.float64)
        need = {t for t in range(self.ntensors) if whole[t] == np.inf}
        peak = {}
        for p, g in zip(self.mine, grads):
            if p.tensor in need and g is not None and g.size:
                a = np.abs(g.reshape(-1).astype(np.float64))
                peak[p.tensor] = [*peak.get(p.tensor, []), float(np.max(a))]
        m = {}
        for part in self.comm.allgather(peak):
            for t, values in part.items():
                m[t] = [*m.get(t, []), *values]
        m = {t: (math.nan if any(math.isnan(v) for v in vs) else max(vs))
             for t, vs in m.items()}
        carry = {}
        for r in range(self.world):
            if r == self.rank:
                for p, g in zip(self.mine, grads):
                    t = p.tensor
                    if t in need and g is not None and 0 < m.get(t, 0) <= np.finfo(float).max:
                        x = g.reshape(-1).astype(np.float64) / m[t]
                        terms = np.concatenate([[carry.get(t, 0.0)], x * x])
                        carry[t] = float(np.add.accumulate(terms)[-1])
            carry = self.comm.bcast(carry, root=r)
        per_tensor = [math.sqrt(s) for s in whole]
        for t in need:
            mt = m.get(t, 0.0)
            if mt == 0 or not mt <= np.finfo(float).max:
                per_tensor[t] = mt
            else:
                per_tensor[t] = mt * math.sqrt(carry[t])
        return [per_tensor[p.tensor] for p in self.mine], per_tensor


def reduce_scatter_ordered(MPI, comm, send, recv, bounds, mpitype):
    """``recv`` = this rank's shard of the sum of every rank's ``send``, added
    in rank order (``((g0 + g1) + g2) + ...``), whatever the MPI library's
    reduction algorithm.  An ``Alltoallv`` per round moves each shard's
    segment to its owner (the traffic of a pairwise reduce-scatter); the
    receive buffer holds ``world`` segments of at most
    :data:`ORDERED_BUFFER_BYTES` in all."""
    rank, world = comm.Get_rank(), comm.Get_size()
    sizes = np.diff(bounds)
    seg = max(CHUNK, ORDERED_BUFFER_BYTES // (send.itemsize * world))
    rounds = -(-int(sizes.max()) // seg) if len(sizes) else 0
    tmp = np.empty(world * seg, dtype=send.dtype)
    for j in range(rounds):
        lo = [min(j * seg, int(n)) for n in sizes]
        counts = [min(seg, int(n) - a) for a, n in zip(lo, sizes)]
        sdispls = [int(b) + a for b, a in zip(bounds[:-1], lo)]
        mine = counts[rank]
        rcounts = [mine] * world
        rdispls = [q * seg for q in range(world)]
        comm.Alltoallv([send, (counts, sdispls), mpitype], [tmp, (rcounts, rdispls), mpitype])
        if mine:
            out = recv[lo[rank]:lo[rank] + mine]
            out[...] = tmp[:mine]
            for q in range(1, world):
                out += tmp[q * seg:q * seg + mine]
