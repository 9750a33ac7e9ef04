"""Sharded checkpoints: :meth:`ShardedOptimizer.save`, ``load`` and
``load_consolidated``, and :func:`consolidate`, which merges the rank files
into one single-process checkpoint.  The file format and its checks are in
``_manifest.py``.

Every collective here checks its input on every rank and agrees on the
verdict before anything changes: a file one rank cannot read or apply makes
every rank raise the same ``ValueError``.
"""
import functools
import glob
import math
import os
import uuid

import numpy as np

from .. import checkpoint as _checkpoint
from ._agree import agree, describe
from ._layout import make_buckets, param_dtype, piece_entries, piece_shape, pieces_of
from ._manifest import (MANIFEST_FORMAT, MANIFEST_VERSION, PIECE_EXTRAS, check_rank_file,
                        check_shard_meta, extra_dtype, file_digest, full_state_like, holders,
                        is_layout, layout_str, rank_file, read_manifest, state_span,
                        verify_rank_file, write_json_atomic)


# ---- save ------------------------------------------------------------------------

def _rank_name(prefix, rank, iterations, save_id):
    """``<prefix>.rank<k>.s<iterations>-<id>.npz``: every save writes new rank
    files, so the set the manifest names stays whole until the new manifest
    replaces it."""
    return f"{os.path.basename(prefix)}.rank{rank}.s{iterations}-{save_id[:12]}.npz"


def _manifest(sharded, save_id, prefix, files):
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "save_id": save_id,
        "world_size": sharded.world_size,
        "class": type(sharded.optimizer).__name__,
        "config": sharded.get_config(),
        "iterations": int(sharded.optimizer.iterations),
        "shapes": [list(s) for s in sharded._shapes],
        "dtypes": list(sharded._dtypes),
        "group_sizes": list(sharded._group_sizes),
        "row_params": list(sharded._tables),
        "whole_tensors": sharded._whole,
        "buckets": [b.manifest_entry() for b in sharded._buckets],
        "ranks": [f["name"] for f in files],
        "rank_files": [{"iterations": f["iterations"], "bytes": f["bytes"],
                        "sha256": f["sha256"]} for f in files],
    }


def save(sharded, path):
    """:meth:`ShardedOptimizer.save`: new rank files, then the manifest that
    names them (the commit), then the files no manifest names any more.

    A process killed at any point leaves the manifest of the previous save
    and all of its files (the new ones are named by no manifest), or the new
    manifest and all of its files: never a mix of two saves."""
    prefix = os.fspath(path)
    comm, rank = sharded.comm, sharded.rank
    save_id = comm.bcast(uuid.uuid4().hex if rank == 0 else None, root=0)
    error, message, mine = 0, None, None
    try:
        inner = sharded.optimizer
        with inner.lock:
            sd = _flat_pieces(inner.state_dict(), sharded._whole)
            sd["shard"] = {"save_id": save_id, "rank": rank,
                           "world_size": sharded.world_size,
                           "pieces": piece_entries(sharded._pieces)}
            sd["params"] = [p.reshape(-1).copy() for p in inner.params]
        name = _rank_name(prefix, rank, sd["iterations"], save_id)
        file = os.path.join(os.path.dirname(os.path.abspath(prefix)), name)
        _checkpoint.write(file, sd)
        mine = {"name": name, "iterations": int(sd["iterations"]),
                **file_digest(file)}
    except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks
        error, message = 1, f"writing the file of rank {rank} of {prefix} failed: {e}"
    agree(comm, [error], message, "ShardedOptimizer.save")
    files = comm.gather(mine, root=0)
    error, message = 0, None
    if rank == 0:
        try:
            write_json_atomic(f"{prefix}.manifest.json",
                              _manifest(sharded, save_id, prefix, files))
        except Exception as e:  # noqa: BLE001
            error, message = 1, f"writing {prefix}.manifest.json failed: {e}"
    agree(comm, [error], message, "ShardedOptimizer.save")
    # committed: this rank's files of earlier (or interrupted) saves go
    pattern = glob.escape(os.path.join(os.path.dirname(os.path.abspath(prefix)),
                                       f"{os.path.basename(prefix)}.rank{rank}.s"))
    for old in glob.glob(pattern + "*-*.npz"):
        if os.path.basename(old) != mine["name"]:
            try:
                os.unlink(old)
            except OSError:
                pass


def _flat_pieces(sd, whole):
    """A rank file holds every piece flat (a piece of a table is its rows in
    the inner optimizer): the files do not depend on how a piece is held.
    Whole tensors keep their state arrays as the optimizer keeps them (not
    all of the param's shape: Adafactor's rows and columns)."""
    sd = dict(sd)
    if not whole:
        sd["state"] = [[a.reshape(-1) for a in arrays] for arrays in sd["state"]]
    sd["shapes"] = [[math.prod(s)] for s in sd["shapes"]]
    extra = sd.get("extra")
    if isinstance(extra, dict):
        sd["extra"] = dict(extra)
        for key in PIECE_EXTRAS:
            if isinstance(extra.get(key), list):
                sd["extra"][key] = [a.reshape(-1) for a in extra[key]]
    return sd


def _shaped_pieces(sd, shapes, dtypes, state_shapes):
    """The inverse of :func:`_flat_pieces` for the inner optimizer's pieces of
    ``shapes`` and ``dtypes`` and state arrays of ``state_shapes`` (arrays
    already checked to be of the right sizes)."""
    sd = dict(sd)
    sd["state"] = [[a.reshape(s) for a, s in zip(arrays, ss)]
                   for arrays, ss in zip(sd["state"], state_shapes)]
    sd["shapes"] = [list(s) for s in shapes]
    extra = sd.get("extra")
    if isinstance(extra, dict):
        sd["extra"] = dict(extra)
        for key in PIECE_EXTRAS:
            arrays, mine = extra.get(key), [shapes[j] for j in holders(key, range(len(shapes)),
                                                                        dtypes)]
            if isinstance(arrays, list) and len(arrays) == len(mine) and all(
                    isinstance(a, np.ndarray) and a.size == math.prod(s)
                    for a, s in zip(arrays, mine)):
                sd["extra"][key] = [a.reshape(s) for a, s in zip(arrays, mine)]
    return sd


# ---- load ------------------------------------------------------------------------

def load(sharded, path):
    """:meth:`ShardedOptimizer.load`: every rank checks the manifest and its
    own file completely, the ranks agree, then every rank applies its file."""
    prefix = os.fspath(path)
    error, message, ready = 0, None, None
    try:
        manifest = read_manifest(prefix)
        ready = _check_shard_file(sharded, prefix, manifest)
    except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks
        error, message = 1, f"{type(e).__name__}: {e}"
    agree(sharded.comm, [error], message, "ShardedOptimizer.load")
    _restore(sharded, *ready)


def load_consolidated(sharded, path):
    """:meth:`ShardedOptimizer.load_consolidated`: every rank reads the
    single-process checkpoint and keeps its pieces."""
    file = os.fspath(path)
    error, message, ready = 0, None, None
    try:
        _check_writeable(sharded)
        check = functools.partial(_split_full_state, sharded, file)
        # shapes are checked on the headers first: no data is read from a file that does not fit
        ready = check(_checkpoint.read(file, expect=check))
    except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks
        error, message = 1, f"{type(e).__name__}: {e}"
    agree(sharded.comm, [error], message, "ShardedOptimizer.load_consolidated")
    _restore(sharded, *ready)


def _restore(sharded, apply, params):
    """Apply a state and params that every rank has checked (nothing here can fail)."""
    inner = sharded.optimizer
    with inner.lock:
        apply()
        for q, v in zip(inner.params, params):
            np.copyto(q, v)
        sharded._gather_params()


def _check_writeable(sharded):
    # the all-gather after a load writes every parameter
    for i, p in enumerate(sharded._params):
        if not p.flags.writeable:
            raise ValueError(f"params[{i}] is read-only, so a checkpoint cannot restore "
                             f"it; make it writeable (flags.writeable = True) and load "
                             f"again")


def _check_shard_file(sharded, prefix, manifest):
    """Check this rank's file of a sharded checkpoint completely (everything
    ``load`` will apply); returns ``(apply, params)`` and changes nothing."""
    name = type(sharded.optimizer).__name__
    if manifest["world_size"] != sharded.world_size:
        raise ValueError(f"{prefix}: saved by {manifest['world_size']} ranks; this run has "
                         f"{sharded.world_size}. To resume with a different world size, "
                         f"consolidate it (python -m fastopt.distributed consolidate) "
                         f"and use load_consolidated")
    if manifest["class"] != name:
        raise ValueError(f"{prefix}: checkpoint of a {manifest['class']} optimizer; this "
                         f"is a {name}")
    if ([tuple(s) for s in manifest["shapes"]] != sharded._shapes or
            manifest["dtypes"] != sharded._dtypes):
        raise ValueError(f"{prefix}: the checkpoint's parameters "
                         f"({layout_str(manifest['shapes'], manifest['dtypes'])}) differ "
                         f"from this optimizer's "
                         f"({layout_str(sharded._shapes, sharded._dtypes)})")
    if bool(manifest.get("whole_tensors", False)) != sharded._whole:
        raise ValueError(f"{prefix}: its shards are "
                         f"{'whole tensors' if manifest.get('whole_tensors') else 'pieces'}; "
                         f"this optimizer's are "
                         f"{'whole tensors' if sharded._whole else 'pieces'}")
    if manifest.get("row_params", []) != list(sharded._tables):
        raise ValueError(f"{prefix}: saved with row_params={manifest.get('row_params', [])}; "
                         f"this optimizer has row_params={list(sharded._tables)}, so its "
                         f"shards are cut otherwise. Build it with the same row_params, or "
                         f"consolidate the checkpoint and use load_consolidated")
    if [b["bounds"] for b in manifest["buckets"]] != [list(b.bounds) for b in sharded._buckets]:
        raise ValueError(f"{prefix}: shard boundaries differ from this optimizer's")
    _check_writeable(sharded)
    file = rank_file(prefix, manifest, sharded.rank)
    verify_rank_file(prefix, manifest, sharded.rank, file)
    check = functools.partial(_check_pieces_state, sharded, file, manifest)
    # shapes are checked on the headers first: no data is read from a file that does not fit
    return check(_checkpoint.read(file, expect=check))


def _check_pieces_state(sharded, file, manifest, sd):
    """Check the rank file ``sd`` against this rank's pieces and inner
    optimizer; returns ``(apply, params)``."""
    inner = sharded.optimizer
    sd = dict(sd)
    params = sd.pop("params", None)
    shard = sd.pop("shard", None)
    check_shard_meta(file, shard, manifest, sharded.rank)
    if shard.get("pieces") != piece_entries(sharded._pieces):
        raise ValueError(f"{file}: its pieces differ from this optimizer's layout")
    if sd.get("class") != type(inner).__name__:
        raise ValueError(f"{file}: state of a {sd.get('class')} optimizer")
    mine = inner.state_arrays()
    state = sd.get("state")
    if not (isinstance(state, list) and isinstance(params, list)
            and len(state) == len(params) == len(mine)):
        raise ValueError(f"{file}: does not hold the {len(mine)} pieces this rank keeps")
    for j, (a, b) in enumerate(zip(mine, state)):
        if not isinstance(b, list) or len(a) != len(b):
            raise ValueError(f"{file}: piece {j} does not have the {len(a)} state arrays this "
                             f"optimizer keeps (were the optimizer options the same?)")
        for x, y in zip(a, b):
            x = x if sharded._whole else x.reshape(-1)
            if describe(y) != describe(x):
                raise ValueError(f"{file}: piece {j} state is {describe(y)}; expected "
                                 f"{describe(x)}")
    for j, (q, v) in enumerate(zip(inner.params, params)):
        if describe(v) != describe(q.reshape(-1)):
            raise ValueError(f"{file}: piece {j} params are {describe(v)}; expected "
                             f"{describe(q.reshape(-1))}")
    shapes = [q.shape for q in inner.params]
    sd = _shaped_pieces(sd, shapes, [q.dtype.str for q in inner.params],
                        [[a.shape for a in arrays] for arrays in mine])
    try:
        return inner.check_state_dict(sd), [v.reshape(s) for v, s in zip(params, shapes)]
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from e


def _split_full_state(sharded, file, sd):
    """Check a single-process checkpoint ``sd`` completely and cut out this
    rank's pieces; returns ``(apply, params)`` and changes nothing."""
    inner = sharded.optimizer
    name = type(inner).__name__
    sd = dict(sd)
    full_params = sd.pop("params", None)
    if sd.get("format_version") != 1:
        raise ValueError(f"{file}: not a fastopt optimizer state")
    if sd.get("class") != name:
        raise ValueError(f"{file}: checkpoint of a {sd.get('class')} optimizer; this is a "
                         f"{name}")
    if full_params is None:
        raise ValueError(f"{file}: saved without parameters (include_params=False); a "
                         f"sharded optimizer needs them to rebuild its shard")
    shapes, dtypes = sd.get("shapes"), sd.get("dtypes")
    if not is_layout(shapes, dtypes):
        raise ValueError(f"{file}: corrupt checkpoint (bad shapes or dtypes entry)")
    shapes = [tuple(s) for s in shapes]
    if shapes != sharded._shapes or dtypes != sharded._dtypes:
        raise ValueError(f"{file}: the checkpoint's parameters "
                         f"({layout_str(shapes, dtypes)}) differ from this "
                         f"optimizer's ({layout_str(sharded._shapes, sharded._dtypes)})")
    state, steps = sd.get("state"), sd.get("steps")
    if not (isinstance(state, list) and isinstance(full_params, list)
            and len(state) == len(full_params) == len(shapes)
            and describe(steps) == f"int64 {(len(shapes),)}"):
        raise ValueError(f"{file}: does not hold state, step counts and params for the "
                         f"{len(shapes)} params of this optimizer")
    pieces_state, pieces_params = [], []
    for piece, mine in zip(sharded._pieces, inner.state_arrays()):
        i, start, n = piece.tensor, piece.start, piece.length
        want = f"{param_dtype(sharded._dtypes[i])} {shapes[i]}"
        if not isinstance(state[i], list) or len(state[i]) != len(mine):
            raise ValueError(f"{file}: params[{i}] does not have the {len(mine)} state "
                             f"arrays this optimizer keeps (were the optimizer options "
                             f"the same?)")
        for a, b in zip(state[i], mine):
            expected = describe(b if sharded._whole else full_state_like(b, shapes[i]))
            if describe(a) != expected:
                raise ValueError(f"{file}: params[{i}] state is {describe(a)}; "
                                 f"expected {expected}")
        shape = piece_shape(piece, shapes, sharded._tables, sharded._whole)
        if sharded._whole:          # the piece is the tensor: its state as it is
            pieces_state.append(list(state[i]))
        else:
            pieces_state.append([a.reshape(-1)[slice(*state_span(a, start, n))].reshape(b.shape)
                                 for a, b in zip(state[i], mine)])
        p = full_params[i]
        if describe(p) != want:
            raise ValueError(f"{file}: params[{i}] is {describe(p)}; expected {want}")
        pieces_params.append(p.reshape(-1)[start:start + n].reshape(shape))
    sd["state"] = pieces_state
    sd["extra"] = _split_extra(inner, sharded._pieces, sd.get("extra", {}), shapes,
                               sharded._dtypes, file, sharded._tables, sharded._whole)
    sd["steps"] = steps[[piece.tensor for piece in sharded._pieces]]
    sd["shapes"] = [list(piece_shape(piece, shapes, sharded._tables, sharded._whole))
                    for piece in sharded._pieces]
    sd["dtypes"] = [sharded._dtypes[piece.tensor] for piece in sharded._pieces]
    try:
        return inner.check_state_dict(sd), pieces_params
    except ValueError as e:
        raise ValueError(f"{file}: {e}") from e


def _aux_per_param(class_name, config):
    """The name of the kernel's host values in ``extra`` and whether there is one
    per parameter (torch's per-parameter steps) rather than one per group (one
    clock for the optimizer: schedule-free's, in every convention)."""
    from .._hyper import CONVENTIONS
    from ..optimizers import REGISTRY
    cls = REGISTRY.get(class_name)
    conv = CONVENTIONS.get(config.get("convention", "keras")) if isinstance(config, dict) else None
    if cls is None or cls.aux_state is None or conv is None:
        return None, False
    return cls.aux_state, conv.per_param_steps and not cls.shared_clock


def _split_extra(inner, pieces, extra, shapes, dtypes, file, tables, whole):
    """A single-process checkpoint's ``extra`` cut to this rank's pieces:
    per-parameter arrays (moving averages, accumulators) and per-parameter host
    values; counters and per-group values as they are."""
    if not isinstance(extra, dict):
        return extra            # refused by the inner optimizer's check, naming it
    extra = dict(extra)
    for key in PIECE_EXTRAS:
        arrays, tensors = extra.get(key), holders(key, range(len(shapes)), dtypes)
        if isinstance(arrays, list) and len(arrays) == len(tensors):
            for k, (i, a) in enumerate(zip(tensors, arrays)):
                if not isinstance(a, np.ndarray) or a.shape != tuple(shapes[i]):
                    raise ValueError(f"{file}: extra.{key}[{k}] is {describe(a)}; expected "
                                     f"an array of shape {tuple(shapes[i])}")
            of = dict(zip(tensors, arrays))
            extra[key] = [of[p.tensor].reshape(-1)[p.start:p.start + p.length]
                          .reshape(piece_shape(p, shapes, tables, whole))
                          for p in holders(key, pieces, dtypes)]
            if key == "masters" and not extra[key]:
                del extra[key]          # this rank holds no 16-bit piece: no master copy
    key, per_param = _aux_per_param(type(inner).__name__, inner.get_config())
    if key is not None and per_param and key in extra:
        values = extra[key]
        if np.shape(values) != (len(shapes),):
            raise ValueError(f"{file}: extra.{key}: expected {len(shapes)} values; got shape "
                             f"{np.shape(values)}")
        extra[key] = np.asarray(values, dtype=np.float64)[[p.tensor for p in pieces]]
    return extra


# ---- consolidate -----------------------------------------------------------------

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
    whole = bool(manifest.get("whole_tensors", False))
    buckets = make_buckets(shapes, dtypes, world, manifest.get("row_params", []), whole)
    files = [rank_file(prefix, manifest, rank) for rank in range(world)]
    pieces = [pieces_of(buckets, shapes, rank) for rank in range(world)]
    # The metadata and array headers of every rank file first: the full-size
    # arrays below are allocated only once the rank files are known to hold
    # every piece the manifest's shapes describe, with the same number of
    # state arrays for each piece of a tensor.
    nstate = {}
    for rank, file in enumerate(files):
        verify_rank_file(prefix, manifest, rank, file)
        sd = _checkpoint.read_headers(file)
        check_rank_file(file, sd, manifest, rank, pieces[rank])
        for piece, states in zip(pieces[rank], sd["state"]):
            i = piece.tensor
            if nstate.setdefault(i, len(states)) != len(states):
                raise ValueError(f"{file}: holds {len(states)} state arrays for its piece of "
                                 f"params[{i}]; another rank file holds {nstate[i]}")
    n = len(shapes)
    aux_key, aux_per_param = _aux_per_param(manifest["class"], manifest["config"])
    full_params = [np.empty(s, dtype=param_dtype(d)) for s, d in zip(shapes, dtypes)]
    full_state = [None] * n
    steps = [None] * n
    filled = [0] * n
    first = None
    extra, aux, present = {}, [None] * n, {}
    for rank, file in enumerate(files):
        sd = _checkpoint.read(file, expect=lambda sd: check_rank_file(
            file, sd, manifest, rank, pieces[rank]))
        check_rank_file(file, sd, manifest, rank, pieces[rank])
        if first is None:
            first = sd
            extra = {k: v for k, v in sd.get("extra", {}).items() if k not in PIECE_EXTRAS}
        elif sd["iterations"] != first["iterations"]:
            raise ValueError(f"{file}: at iteration {sd['iterations']}; rank 0 is at "
                             f"{first['iterations']}")
        theirs = sd.get("extra", {})
        for key in ("micro_steps", "skipped_steps"):
            if theirs.get(key) != first.get("extra", {}).get(key):
                raise ValueError(f"{file}: extra.{key} is {theirs.get(key)!r}; rank 0's is "
                                 f"{first.get('extra', {}).get(key)!r}")
        for key in PIECE_EXTRAS:
            # a file whose pieces hold no such array (no piece at all, or no
            # 16-bit piece for master copies) says nothing about the others
            has = theirs.get(key) is not None
            if not holders(key, pieces[rank], dtypes):
                continue
            if key not in present:
                present[key] = (has, file)
                if has:
                    extra[key] = {i: np.zeros(shapes[i], dtype=extra_dtype(key, dtypes[i]))
                                  for i in holders(key, range(n), dtypes)}
            elif present[key][0] != has:
                raise ValueError(f"{file}: {'has' if has else 'lacks'} extra.{key}, unlike "
                                 f"{present[key][1]}")
        if aux_per_param and aux_key in theirs:
            values = np.asarray(theirs[aux_key], dtype=np.float64).reshape(-1)
            if values.shape != (len(pieces[rank]),):
                raise ValueError(f"{file}: extra.{aux_key} does not hold one value per piece")
            for piece, v in zip(pieces[rank], values.tolist()):
                aux[piece.tensor] = v
        for piece, q, states, k in zip(pieces[rank], sd["params"], sd["state"], sd["steps"]):
            i, start, m = piece.tensor, piece.start, piece.length
            full_params[i].reshape(-1)[start:start + m] = q
            if whole:       # the piece is the tensor: its state arrays as they are
                full_state[i], steps[i] = [np.array(b) for b in states], int(k)
                filled[i] += m
                continue
            if full_state[i] is None:
                full_state[i] = [full_state_like(b, shapes[i]) for b in states]
                steps[i] = int(k)
            if (len(states) != len(full_state[i]) or int(k) != steps[i]
                    or any(a.dtype != b.dtype for a, b in zip(full_state[i], states))):
                raise ValueError(f"{file}: pieces of params[{i}] disagree on their state "
                                 f"(count, dtype or step)")
            for a, b in zip(full_state[i], states):
                a.reshape(-1)[slice(*state_span(a, start, m))] = b
            filled[i] += m
        for key in PIECE_EXTRAS:
            if key in extra:
                for piece, b in zip(holders(key, pieces[rank], dtypes), theirs[key]):
                    extra[key][piece.tensor].reshape(-1)[piece.start:piece.start + piece.length] = b
    for i in range(n):
        if filled[i] != math.prod(shapes[i]) or full_state[i] is None:
            raise ValueError(f"{prefix}: params[{i}] is not fully covered by the rank files")
    for key in PIECE_EXTRAS:
        if key in extra:
            extra[key] = list(extra[key].values())
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
        "extra": extra,
        "params": full_params,
    }
    if aux_per_param and aux_key in extra:
        extra[aux_key] = np.array([1.0 if v is None else v for v in aux], dtype=np.float64)
    _checkpoint.write(out, sd)
