"""Rank script: a rank killed (SIGKILL) in the middle of a sharded save.

Trains 3 steps and saves <argv[1]>/ckpt (save A; rank 0 then consolidates it
into <argv[1]>/reference.npz), trains 2 more steps and saves again (save B),
during which the rank named by the kill point argv[2] kills itself at that
point of the write.  The launch therefore fails; the test then checks that
<argv[1]>/ckpt still loads as save A, bit for bit.  With argv[2] "none" the
second save completes (the control run)."""
import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import fastopt as fo
from fastopt.distributed import ShardedOptimizer, consolidate
from fastopt.distributed import checkpoint as dist_checkpoint

SHAPES = [(3000,), (5000,), (7,)]
comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
directory, point = sys.argv[1], sys.argv[2]
prefix = os.path.join(directory, "ckpt")


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def grads(t):
    rng = np.random.default_rng([t, rank])
    return [rng.standard_normal(s) for s in SHAPES]


# where the victim dies: (rank, what to replace)
real_replace, real_savez = os.replace, np.savez


def replace_then(kind):
    def replace(src, dst):
        if str(dst).endswith(kind):
            die()
        return real_replace(src, dst)
    return replace


def partial_savez(f, **arrays):
    real_savez(f, **arrays)
    f.flush()
    f.truncate(f.tell() // 2)            # half the file is on disk
    die()


POINTS = {
    # before its rank file is opened
    "before_write": (1, lambda: setattr(dist_checkpoint._checkpoint, "write",
                                        lambda *a, **k: die())),
    # half of its rank file written to the temporary file
    "mid_write": (1, lambda: setattr(np, "savez", partial_savez)),
    # its rank file complete, not yet renamed into place
    "before_rename": (1, lambda: setattr(os, "replace", replace_then(".npz"))),
    # its rank file in place, before it is hashed for the manifest
    "after_rename": (1, lambda: setattr(dist_checkpoint, "file_digest", lambda f: die())),
    # every rank file in place; rank 0 dies before writing the manifest
    "before_manifest": (0, lambda: setattr(dist_checkpoint, "write_json_atomic",
                                           lambda *a: die())),
    # the new manifest written to its temporary file, not renamed into place
    "mid_manifest": (0, lambda: setattr(os, "replace", replace_then(".manifest.json"))),
}

params = [np.linspace(-1, 1, int(np.prod(s))).reshape(s) for s in SHAPES]
opt = ShardedOptimizer(fo.Adam, params, comm, learning_rate=0.01)
for t in range(3):
    opt.step(grads(t))
opt.save(prefix)
comm.Barrier()
if rank == 0:
    consolidate(prefix, os.path.join(directory, "reference.npz"))
comm.Barrier()
for t in range(3, 5):
    opt.step(grads(t))
if point != "none":
    victim, arm = POINTS[point]
    if rank == victim:
        arm()
opt.save(prefix)
with open(os.path.join(directory, f"result.rank{rank}.json"), "w") as f:
    f.write('{"completed": true}')
