"""Rank script: sharded checkpoints.  Trains common.CASES[argv[2]] for SPLIT
steps, saves to <argv[1]>/ckpt, trains to the end (trajectory A); then a fresh
ShardedOptimizer loads the checkpoint and trains the same steps (B); then one
that loads the consolidated checkpoint (C).  Also checks that a rank file from
another save is refused on every rank.  Rank 0 writes A/B/C to
<argv[1]>/result.npz; every rank reports to <argv[1]>/result.rank<k>.json.

Then loads that must be refused on every rank although only one rank's input
is bad (a file that fails only load_state_dict's checks, a read-only param)
or that name a file outside the checkpoint's directory; each must change
nothing, and the ranks must step on together afterwards."""
import json
import os
import shutil
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from fastopt.distributed import ShardedOptimizer, consolidate  # noqa: E402
from fastopt.distributed._manifest import file_digest  # noqa: E402

SPLIT = 5
comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
directory, name = sys.argv[1], sys.argv[2]
cls, kwargs, dtypes, options = common.CASES[name]
X, Y = common.data()
prefix = os.path.join(directory, "ckpt")


def train(opt, params, start, stop, save_at=None):
    for t in range(start, stop):
        if t == save_at:
            opt.save(prefix)
        xs, ys = common.part(X[t], rank, world), common.part(Y[t], rank, world)
        _, grads = common.grads_for(params, xs, ys, t, options)
        opt.step(grads)


def fresh():
    params = common.init(dtypes, seed=99)     # different values: load must overwrite them
    return params, ShardedOptimizer(cls, common.params_arg(params, options), comm, **kwargs)


params_a = common.init(dtypes)
opt_a = ShardedOptimizer(cls, common.params_arg(params_a, options), comm, **kwargs)
train(opt_a, params_a, 0, common.STEPS, save_at=SPLIT)
opt_a.save(os.path.join(directory, "later"))

params_b, opt_b = fresh()
opt_b.load(prefix)
assert opt_b.iterations == SPLIT
train(opt_b, params_b, SPLIT, common.STEPS)

if rank == 0:
    consolidate(prefix, os.path.join(directory, "consolidated.npz"))
comm.Barrier()
params_c, opt_c = fresh()
opt_c.load_consolidated(os.path.join(directory, "consolidated.npz"))
train(opt_c, params_c, SPLIT, common.STEPS)

def manifest_of(p):
    with open(p + ".manifest.json") as f:
        return json.load(f)


def copy_set(dst, rank1_from=None, edit=None):
    """Copy the checkpoint to ``dst`` (a directory): the manifest, rank 0's file,
    and rank 1's file from ``rank1_from`` (a file), edited by ``edit``, with
    the manifest's record of it (size, SHA-256) made to match."""
    os.makedirs(dst, exist_ok=True)
    manifest = manifest_of(prefix)
    names = manifest["ranks"]
    shutil.copy(os.path.join(directory, names[0]), os.path.join(dst, names[0]))
    target = os.path.join(dst, names[1])
    src = rank1_from or os.path.join(directory, names[1])
    if edit is None:
        shutil.copy(src, target)
    else:
        tamper(src, target, edit)
    manifest["rank_files"][1].update(file_digest(target))
    with open(os.path.join(dst, "ckpt.manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


def tamper(src, dst, edit):
    """Copy the checkpoint ``src`` to ``dst`` with its metadata edited."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("__fastopt_meta__").tobytes())
    edit(meta)
    arrays["__fastopt_meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)


# A manifest with a rank file from another save (a torn save, its size and
# checksum recorded as if it belonged): refused everywhere by its save id.
mixed = os.path.join(directory, "mixed")
if rank == 0:
    later = manifest_of(os.path.join(directory, "later"))["ranks"][1]
    copy_set(mixed, rank1_from=os.path.join(directory, later))
comm.Barrier()
params_d, opt_d = fresh()
before = [p.copy() for p in params_d]
try:
    opt_d.load(os.path.join(mixed, "ckpt"))
    torn = None
except ValueError as e:
    torn = str(e)
torn_unchanged = all(np.array_equal(p, q) for p, q in zip(params_d, before)) and \
    opt_d.iterations == 0

out = {"state_nbytes": opt_a.state_nbytes(), "torn_error": torn,
       "torn_unchanged": torn_unchanged}


def bad_counter(meta):
    meta.setdefault("extra", {})["micro_steps"] = -1


bad = os.path.join(directory, "bad")
consolidated = os.path.join(directory, "consolidated.npz")
if rank == 0:
    copy_set(bad, edit=bad_counter)
    tamper(consolidated, os.path.join(bad, "consolidated.npz"), bad_counter)
    manifest = manifest_of(prefix)
    manifest["ranks"][1] = "../" + manifest["ranks"][1]    # the real file of rank 1, one level up
    with open(os.path.join(bad, "escape.manifest.json"), "w") as f:
        json.dump(manifest, f)
comm.Barrier()

params_e, opt_e = fresh()
train(opt_e, params_e, 0, 3)


def image():
    return ([p.tobytes() for p in params_e] +
            [a.tobytes() for s in opt_e.optimizer.state_arrays() for a in s] +
            [opt_e.iterations])


def refused(case, load):
    before = image()
    try:
        load()
        error = None
    except ValueError as e:
        error = str(e)
    out[case] = {"error": error, "unchanged": image() == before}


refused("extra", lambda: opt_e.load(os.path.join(bad, "ckpt") if rank == 1 else prefix))
refused("consolidated", lambda: opt_e.load_consolidated(
    os.path.join(bad, "consolidated.npz") if rank == 1 else consolidated))
refused("escape", lambda: opt_e.load(os.path.join(bad, "escape")))
if rank == 1:
    params_e[1].flags.writeable = False
refused("readonly", lambda: opt_e.load(prefix))
params_e[1].flags.writeable = True
after = opt_e.iterations
train(opt_e, params_e, 3, 4)
out["after_refusals"] = [after, opt_e.iterations]
common.report(directory, rank, out)
gathered = comm.gather([[p.copy() for p in ps] for ps in (params_a, params_b, params_c)], root=0)
if rank == 0:
    arrays = {}
    for r, runs in enumerate(gathered):
        for label, ps in zip("ABC", runs):
            for i, p in enumerate(ps):
                arrays[f"rank{r}/{label}/p{i}"] = p
    np.savez(os.path.join(directory, "result.npz"), **arrays)
