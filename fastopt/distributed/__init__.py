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

With two ranks both give bit-identical parameters on every rank: an
elementwise kernel on a shard computes exactly what it computes on the whole
array, and the summation of two ranks' contributions is one rounding either
way.  :class:`ShardedOptimizer` is, at any world size and with every option
(norm clipping, ``skip_nonfinite``, Lamb's trust ratios), bit for bit one
process given the ranks' gradients summed in rank order; with more than two
ranks :func:`allreduce_gradients` follows the MPI library's reduction order
and agrees with it to rounding.  Against a single process that computes the
gradient of the whole global batch the results agree to rounding (the batch
sum is split into per-rank partial sums), typically within 1e-12 relative in
float64.

Gradients are checked on every rank and the verdict is agreed with one small
collective before any collective that could hang: a rank given a wrong
gradient makes every rank raise the same ``ValueError`` naming that rank and
index, and nothing changes anywhere.

Sharded checkpoints (:meth:`ShardedOptimizer.save`) are one new
``<path>.rank<k>.s<step>-<id>.npz`` per rank plus an atomic
``<path>.manifest.json`` written last by rank 0, naming each rank file with
its step, size and SHA-256; :func:`consolidate` (or ``python -m fastopt.distributed
consolidate <path> <out.npz>``) turns them into a single-process checkpoint
that :func:`fastopt.load` accepts.
"""
# ALIGN, BUCKET_BYTES, MANIFEST_* and read_manifest are public too, outside __all__
from ._layout import ALIGN, flat_arrays  # noqa: F401
from ._manifest import MANIFEST_FORMAT, MANIFEST_VERSION, read_manifest  # noqa: F401
from .allreduce import BUCKET_BYTES, allreduce_gradients  # noqa: F401
from .checkpoint import consolidate
from .sharded import ShardedOptimizer

__all__ = ["allreduce_gradients", "ShardedOptimizer", "flat_arrays", "consolidate"]
