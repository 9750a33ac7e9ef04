"""The files of a sharded checkpoint: the manifest and the rank files, and
the checks that every reader applies to them before trusting them.

``<prefix>.manifest.json`` (written last, by rank 0) records the format,
a save id, the world size, the optimizer's class and config, the parameter
layout and the shard boundaries, and names one rank file per rank
(``<prefix>.rank<k>.s<step>-<id>.npz``) with its step, size and SHA-256.
A rank file is a :func:`fastopt.checkpoint.write` state dict of the rank's
inner optimizer plus a ``shard`` entry (save id, rank, world size and
its pieces as ``[tensor, start, length]``) and the pieces of the parameters.
"""
import hashlib
import json
import math
import os

import numpy as np

from .. import _core
from .. import checkpoint as _checkpoint
from .._statedict import COUNTER_MAX, check_counter
from ._agree import describe
from .._compact import half_name
from ._layout import make_buckets, param_dtype, piece_entries

MANIFEST_FORMAT = "fastopt-sharded-checkpoint"
#: Version 2 names a new set of rank files per save and records each file's
#: iteration, size and SHA-256; version 1 manifests are still read.
MANIFEST_VERSION = 2
_READABLE_VERSIONS = (1, 2)

#: float32, float64, float16 and bfloat16 (whose ``str`` is ``'<V2'``)
_DTYPES = tuple(np.dtype(t).str for t in (np.float32, np.float64, np.float16)) + ("<V2",)


def write_json_atomic(path, obj):
    """Create or replace the JSON file ``path`` atomically."""
    _checkpoint.write_atomic(path, "w", lambda f: json.dump(obj, f, indent=1))


def _is_count(x):
    return type(x) is int and 0 <= x <= COUNTER_MAX


def is_layout(shapes, dtypes):
    """True for what fastopt writes: one list of ints >= 0 and one float dtype per parameter."""
    return (isinstance(shapes, list) and isinstance(dtypes, list) and len(shapes) == len(dtypes)
            and all(isinstance(s, list) and all(_is_count(d) for d in s) for s in shapes)
            and all(d in _DTYPES for d in dtypes))


def layout_str(shapes, dtypes):
    """``"float64 (3, 2), float32 (4,)"``."""
    return ", ".join(f"{param_dtype(d)} {tuple(s)}" for s, d in zip(shapes, dtypes))


def rank_file(prefix, manifest, rank):
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
    if manifest.get("version") not in _READABLE_VERSIONS or \
            type(manifest.get("version")) is not int:
        raise ValueError(f"{file}: manifest version {manifest.get('version')!r:.40}; this "
                         f"fastopt reads versions {', '.join(map(str, _READABLE_VERSIONS))}")
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
        ("shapes or dtypes", is_layout(manifest["shapes"], manifest["dtypes"])),
        ("group_sizes", isinstance(manifest["group_sizes"], list)
         and all(_is_count(n) for n in manifest["group_sizes"])),
        ("buckets", isinstance(buckets, list) and all(isinstance(b, dict) for b in buckets)),
        ("ranks", isinstance(ranks, list))) if not ok]
    if bad:
        raise ValueError(f"{file}: corrupt manifest (bad {bad[0]} entry); it was not written "
                         f"by ShardedOptimizer.save (or was edited)")
    if len(ranks) != world:
        raise ValueError(f"{file}: names {len(ranks)} rank files for world size {world}")
    if manifest["version"] >= 2:
        records = manifest.get("rank_files")
        if not (isinstance(records, list) and len(records) == world and all(
                isinstance(r, dict) and _is_count(r.get("iterations"))
                and _is_count(r.get("bytes")) and isinstance(r.get("sha256"), str)
                and len(r["sha256"]) == 64 for r in records)):
            raise ValueError(f"{file}: corrupt manifest (bad rank_files entry: one "
                             f"{{iterations, bytes, sha256}} per rank expected)")
        if any(r["iterations"] != manifest["iterations"] for r in records):
            raise ValueError(f"{file}: its rank files are of iterations "
                             f"{[r['iterations'] for r in records]}, not all "
                             f"{manifest['iterations']}: a mix of two saves")
    for rank in range(world):
        rank_file(path, manifest, rank)
    shapes = [tuple(s) for s in manifest["shapes"]]
    tables = manifest.get("row_params", [])
    if not (isinstance(tables, list) and all(_is_count(i) and i < len(shapes)
                                             and len(shapes[i]) == 2 for i in tables)):
        raise ValueError(f"{file}: corrupt manifest (bad row_params entry)")
    whole = manifest.get("whole_tensors", False)
    if not isinstance(whole, bool):
        raise ValueError(f"{file}: corrupt manifest (bad whole_tensors entry)")
    expected = make_buckets(shapes, manifest["dtypes"], world, tables, whole)
    if [b.get("bounds") for b in buckets] != [list(b.bounds) for b in expected]:
        raise ValueError(f"{file}: shard boundaries do not match the parameter layout")
    return manifest


#: The entries of a state dict's ``extra`` that hold one array of the
#: parameter's shape per parameter (a rank file: one per piece): the moving
#: averages, accumulated grads, SWA's averages, schedule-free's kept y; and
#: the float32 master copies, one per 16-bit parameter (:func:`holders`).
PIECE_EXTRAS = ("ema", "accumulators", "swa", "train_params", "masters")


def holders(key, items, dtypes):
    """Those of ``items`` (pieces, or tensor indices) whose parameter has an
    array in ``extra[key]``, in order: every one, or for ``masters`` those of
    16-bit parameters (``dtypes``: every parameter's dtype str)."""
    if key != "masters":
        return list(items)
    return [x for x in items
            if half_name(param_dtype(dtypes[getattr(x, "tensor", x)])) is not None]


def extra_dtype(key, dtype):
    """The dtype of ``extra[key]``'s array for a parameter of ``dtype``."""
    return np.dtype(np.float32) if key == "masters" else param_dtype(dtype)


def file_digest(path):
    """``{"bytes": size, "sha256": hex digest}`` of the file ``path``."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


def verify_rank_file(prefix, manifest, rank, file):
    """Refuse ``rank``'s file unless its size and SHA-256 are the ones the
    manifest records (a version 2 manifest): a file missing, cut short,
    overwritten or from another save is refused before it is parsed."""
    if manifest["version"] < 2:
        return
    want = manifest["rank_files"][rank]
    try:
        size = os.stat(file).st_size
    except FileNotFoundError:
        raise ValueError(f"{file}: missing; the manifest {prefix}.manifest.json names it as "
                         f"the file of rank {rank} (an incomplete checkpoint)") from None
    if size != want["bytes"]:
        raise ValueError(f"{file}: {size} bytes; the manifest records {want['bytes']} (a "
                         f"truncated or replaced rank file)")
    got = file_digest(file)["sha256"]
    if got != want["sha256"]:
        raise ValueError(f"{file}: its SHA-256 {got[:16]}... differs from the manifest's "
                         f"{want['sha256'][:16]}... (a corrupt or replaced rank file)")


def check_shard_meta(file, shard, manifest, rank):
    """Refuse the ``shard`` entry of a rank file unless it is ``rank``'s of the
    save the manifest names."""
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


def state_span(a, start, n):
    """Where the piece ``[start, start + n)`` of a param lies in one of its
    state arrays ``a``: its elements, or its int8 blocks (compact state; a
    piece starts at a multiple of the block, and ends at one or at the
    param's end)."""
    if a.dtype == _core.Q8_DTYPE:
        return start // _core.QBLOCK, -(-(start + n) // _core.QBLOCK)
    return start, start + n


def full_state_like(b, shape):
    """A zero whole-param state array of the kind of the piece's array ``b``."""
    if b.dtype == _core.Q8_DTYPE:
        return np.zeros(-(-math.prod(shape) // _core.QBLOCK), dtype=_core.Q8_DTYPE)
    return np.zeros(shape, dtype=b.dtype)


def _piece_state_ok(b, dtype, length):
    """A piece's state array: of the param's dtype and the piece's length, or
    compact (bfloat16, float16 or int8 blocks) or float32 of a float32 or
    16-bit param."""
    if describe(b) == f"{dtype} {(length,)}":
        return True
    if not isinstance(b, np.ndarray) or (dtype != np.float32 and half_name(dtype) is None):
        return False
    if b.dtype == _core.Q8_DTYPE:
        return b.shape == (-(-length // _core.QBLOCK),)
    return (_core.storage_format(b.dtype) in (_core.FMT_BF16, _core.FMT_F16)
            or b.dtype == np.float32) and b.shape == (length,)


def check_rank_file(file, sd, manifest, rank, pieces):
    """Refuse a rank file that does not hold exactly ``pieces`` (rank
    ``rank``'s of the manifest's layout): their params, state arrays and step
    counts, with the manifest's dtypes."""
    shard = sd.get("shard")
    check_shard_meta(file, shard, manifest, rank)
    if shard.get("pieces") != piece_entries(pieces):
        raise ValueError(f"{file}: its pieces do not match the manifest's layout")
    params, state, steps = sd.get("params"), sd.get("state"), sd.get("steps")
    n = len(pieces)
    if not (isinstance(params, list) and isinstance(state, list) and len(params) == n
            and len(state) == n and describe(steps) == f"int64 {(n,)}"):
        raise ValueError(f"{file}: does not hold the params, state and step counts of the {n} "
                         f"pieces the manifest gives rank {rank}")
    check_counter(sd.get("iterations"), f"{file}: iterations")
    if n and steps.min() < 0:
        raise ValueError(f"{file}: step counts must be >= 0")
    whole = manifest.get("whole_tensors", False)
    for piece, q, states in zip(pieces, params, state):
        i = piece.tensor
        dtype = param_dtype(manifest['dtypes'][i])
        want = f"{dtype} {(piece.length,)}"
        if describe(q) != want:
            raise ValueError(f"{file}: piece of params[{i}] is {describe(q)}; expected {want}")
        # whole tensors keep their state arrays in the optimizer's shapes (checked
        # when the consolidated file is loaded into an optimizer)
        if not isinstance(states, list) or any(
                not describe(b).startswith(f"{dtype} ") if whole
                else not _piece_state_ok(b, dtype, piece.length) for b in states):
            raise ValueError(f"{file}: the state of the piece of params[{i}] is not a list of "
                             f"{f'{dtype} arrays' if whole else f'{want} arrays'}")
    extra = sd.get("extra", {})
    if not isinstance(extra, dict):
        raise ValueError(f"{file}: its extra entry is not a dict")
    config = manifest.get("config")
    if (isinstance(config, dict) and config.get("master_weights") is True
            and holders("masters", pieces, manifest["dtypes"]) and extra.get("masters") is None):
        raise ValueError(f"{file}: lacks extra.masters, the float32 master copies of its 16-bit "
                         f"pieces (the optimizer keeps them: master_weights=True)")
    for key in PIECE_EXTRAS:
        arrays, mine = extra.get(key), holders(key, pieces, manifest["dtypes"])
        if arrays is not None and not (isinstance(arrays, list) and len(arrays) == len(mine)
                                       and all(describe(a) == f"{extra_dtype(key, d)} "
                                                              f"{(p.length,)}"
                                               for p, a in zip(mine, arrays)
                                               for d in [manifest["dtypes"][p.tensor]])):
            raise ValueError(f"{file}: extra.{key} does not hold one array per piece of the "
                             f"piece's dtype and length")
