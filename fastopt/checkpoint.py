"""Atomic ``.npz`` checkpoints of an optimizer (and, by default, its parameters).

A checkpoint is written to a temporary file in the target's directory,
fsync'ed and renamed over the target, so a crash leaves either the old file
or the new one, never a torn one.  Loading validates everything (format
version, class, shapes, dtypes, counters, schedule state) before changing
anything.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1
_META = "__fastopt_meta__"


def _encode(obj, arrays, prefix):
    """JSON-able copy of obj with every ndarray moved into ``arrays``."""
    if isinstance(obj, np.ndarray):
        key = f"{prefix}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {str(k): _encode(v, arrays, f"{prefix}/{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _decode(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def write_atomic(path, mode, write):
    """Create or replace ``path`` atomically: ``write(f)`` fills a temporary file
    in the same directory, which is fsync'ed and renamed over ``path`` (then the
    directory is fsync'ed).  A crash leaves the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastopt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save(path, optimizer, include_params=True):
    """Write ``optimizer``'s state (and its parameters unless
    ``include_params=False``) to ``path`` atomically."""
    path = os.fspath(path)
    # one lock for state and params: a step from another thread cannot land between them
    with optimizer._lock:
        sd = optimizer.state_dict()
        if include_params:
            sd["params"] = [p.copy() for p in optimizer.params]
    arrays = {}
    meta = _encode(sd, arrays, "a")
    meta["checkpoint_version"] = FORMAT_VERSION
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, "wb", lambda f: np.savez(f, **arrays))


def read(path):
    """The checkpoint at ``path`` as a state dict (with ``"params"`` if saved)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise ValueError(f"{path}: not a fastopt checkpoint (not an .npz archive), or truncated")
    try:
        with np.load(path, allow_pickle=False) as z:
            if _META not in z.files:
                raise ValueError(f"{path}: not a fastopt checkpoint (no metadata entry)")
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: unreadable or truncated checkpoint ({e})") from e
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt checkpoint metadata ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupt checkpoint metadata (not a JSON object)")
    version = meta.pop("checkpoint_version", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version!r}; this fastopt reads "
                         f"version {FORMAT_VERSION}")
    try:
        return _decode(meta, arrays)
    except KeyError as e:
        raise ValueError(f"{path}: checkpoint is missing array {e}") from e


def load(path, optimizer):
    """Restore ``optimizer`` (and its parameters, if the file has them) from
    ``path``.  Any mismatch raises and leaves optimizer and parameters as they were."""
    sd = read(path)
    params = sd.pop("params", None)
    mine = optimizer.params
    if params is not None:
        if not isinstance(params, list) or len(params) != len(mine):
            n = len(params) if isinstance(params, list) else type(params).__name__
            raise ValueError(f"{path}: checkpoint has {n} params; the optimizer has "
                             f"{len(mine)}. Build the optimizer over the parameters it was "
                             f"saved with")
        for i, (p, q) in enumerate(zip(mine, params)):
            if not isinstance(q, np.ndarray):
                raise ValueError(f"{path}: params[{i}] in the checkpoint is not an array")
            if p.shape != q.shape or p.dtype != q.dtype:
                raise ValueError(f"{path}: params[{i}] is {q.dtype} {q.shape} in the "
                                 f"checkpoint, {p.dtype} {p.shape} in the optimizer. Build "
                                 f"the optimizer over the parameters it was saved with")
    with optimizer._lock:
        try:
            apply = optimizer._check_state_dict(sd)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
        # everything is checked: from here on nothing can fail half-way
        apply()
        if params is not None:
            for p, q in zip(mine, params):
                np.copyto(p, q)
