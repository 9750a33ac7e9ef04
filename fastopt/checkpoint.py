"""Atomic ``.npz`` checkpoints of an optimizer (and, by default, its parameters).

A checkpoint is written to a temporary file in the target's directory,
fsync'ed and renamed over the target, so a crash leaves either the old file
or the new one, never a torn one.  Loading validates everything (format
version, class, shapes, dtypes, counters, schedule state) before changing
anything.

A checkpoint may come from anyone, so reading one trusts nothing in it: the
metadata is read first, then only the ``.npy`` headers of the arrays it
names, and array data only once every header agrees with the size the zip
directory gives its member and with what the caller expects.  A member the
metadata does not name is refused unread.

``save(..., extra={...})`` stores the caller's own metadata (epoch, data
position, RNG state) with the same rules: plain JSON values and numeric
arrays, never pickle; :func:`load` returns it.
"""
from __future__ import annotations

import json
import math
import os
import stat
import zipfile
import zlib
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from . import _compact, _core

if TYPE_CHECKING:
    from ._types import LoadPolicy
    from .optimizer import Optimizer

FORMAT_VERSION = 1
_META = "__fastopt_meta__"
_USER = "user_extra"      # the state-dict key of save(..., extra=...)


def _encode(obj, arrays, prefix):
    """JSON-able copy of obj with every ndarray moved into ``arrays``.  Compact
    state (bfloat16, int8 blocks) is stored as its raw bytes (uint16, uint8
    rows of a block each), exactly as it is, with a note of what it is."""
    if isinstance(obj, np.ndarray):
        key = f"{prefix}"
        if obj.dtype == _core.Q8_DTYPE:
            arrays[key] = np.ascontiguousarray(obj).view(np.uint8).reshape(obj.shape[0], -1)
            return {"__array__": key, "__view__": "int8_blocks"}
        if obj.dtype.name == "bfloat16":
            arrays[key] = np.ascontiguousarray(obj).view(np.uint16)
            return {"__array__": key, "__view__": "bfloat16"}
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {str(k): _encode(v, arrays, f"{prefix}/{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _decode(obj, lookup, path=""):
    """obj with every array reference ``{"__array__": name}`` replaced by
    ``lookup(name)`` (of the checkpoint at ``path``, for messages)."""
    if isinstance(obj, dict):
        if set(obj) in ({"__array__"}, {"__array__", "__view__"}):
            name = obj["__array__"]
            if not isinstance(name, str):
                raise ValueError(f"an array reference must name a member (a string); got "
                                 f"{name!r:.80}")
            return _view(lookup(name), obj.get("__view__"), name, path)
        return {k: _decode(v, lookup, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, lookup, path) for v in obj]
    return obj


def _view(a, kind, name, path):
    """A member read back as the compact array it was saved from (see _encode);
    a stand-in (no memory) stays one, of the compact dtype and shape."""
    if kind is None or a is None:
        return a
    stand_in = a.size > 0 and all(st == 0 for st in a.strides)
    if kind == "bfloat16" and a.dtype == np.uint16:
        dtype, shape = _compact.bfloat16(), a.shape
    elif (kind == "int8_blocks" and a.dtype == np.uint8 and a.ndim == 2
          and a.shape[1] == _core.Q8_DTYPE.itemsize):
        dtype, shape = _core.Q8_DTYPE, a.shape[:1]
    else:
        raise ValueError(f"{path}: member {name!r}: corrupt checkpoint: a {a.dtype} array of "
                         f"shape {a.shape} said to hold {kind!r:.40}")
    if stand_in:
        return np.broadcast_to(np.zeros((), dtype=dtype), shape)
    return np.ascontiguousarray(a).view(dtype).reshape(shape)


def _create_temp(directory):
    """A new file in ``directory``, open for writing: (fd, path).  Created with
    mode 0o666 less the umask, as ``open()`` creates files (``mkstemp`` would
    give 0o600), and with O_EXCL, so a planted file or symlink is never used."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = os.path.join(directory, f".fastopt-{os.urandom(8).hex()}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def write_atomic(path, mode, write):
    """Create or replace ``path`` atomically: ``write(f)`` fills a temporary file
    in the same directory, which is fsync'ed and renamed over ``path`` (then the
    directory is fsync'ed).  A crash leaves the old file or the new one.  A new
    file gets mode 0o666 less the umask; a replaced one keeps its permissions,
    so a reader that could read the old file (another user's evaluation job,
    say) can read the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(directory)
    try:
        try:
            # permission bits only: set-id bits would land on a file now owned by the writer
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode) & 0o777)
        except FileNotFoundError:
            pass
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


def _encode_extra(obj, arrays, where):
    """The caller's metadata as JSON with each array moved into ``arrays``
    (members ``u/0``, ``u/1``, ...); anything that would need pickle is refused."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf" or not obj.dtype.isnative:
            raise TypeError(f"extra{where}: a {obj.dtype} array; a checkpoint holds numeric "
                            f"arrays (bool, int, uint, float) in native byte order only")
        name = f"u/{sum(k.startswith('u/') for k in arrays)}"
        arrays[name] = np.ascontiguousarray(obj)
        return {"__array__": name}
    if isinstance(obj, (list, tuple)):
        return [_encode_extra(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"extra{where}: key {k!r} is not a string; JSON keys are "
                                f"strings (convert it, e.g. str(k))")
            out[k] = _encode_extra(v, arrays, f"{where}[{k!r}]")
        if set(out) == {"__array__"}:
            raise ValueError(f"extra{where}: a dict whose only key is '__array__' is the "
                             f"checkpoint's array reference; rename the key")
        return out
    raise TypeError(f"extra{where}: {type(obj).__name__} cannot be saved without pickle, "
                    f"which checkpoints never use (a checkpoint may be read from anyone). "
                    f"Use None, bool, int, float, str, lists, dicts with string keys and "
                    f"numeric NumPy arrays; for a NumPy Generator save "
                    f"rng.bit_generator.state (a dict)")


def save(path: Union[str, os.PathLike[str]], optimizer: Optimizer, include_params: bool = True,
         extra: Optional[dict[str, Any]] = None) -> None:
    """Write ``optimizer``'s state (and its parameters unless
    ``include_params=False``) to ``path`` atomically.

    ``extra``: the caller's own metadata (epoch, position in the data, RNG
    state...), a dict with string keys of plain values (None, bool, int,
    float, str, lists, dicts) and numeric NumPy arrays, stored without pickle
    and returned by :func:`load` (tuples come back as lists).  Anything else
    raises ``TypeError`` before the file is touched."""
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict (or None); got {type(extra).__name__}")
    user_arrays: dict[str, Any] = {}
    user = _encode_extra(extra, user_arrays, "") if extra is not None else None
    # one lock for state and params: a step from another thread cannot land between them
    with optimizer.lock:
        sd = optimizer.state_dict()
        if include_params:
            sd["params"] = [p.copy() for p in optimizer.params]
    if user is not None:
        sd[_USER] = user
    write(path, sd, user_arrays)


def write(path, sd, extra_arrays=None):
    """Write the state dict ``sd`` (as :meth:`Optimizer.state_dict` returns it,
    with a ``"params"`` list of arrays if it is to restore parameters) to
    ``path`` atomically, as :func:`save` does.  ``extra_arrays``: members
    already referenced from ``sd`` as ``{"__array__": name}``."""
    path = os.fspath(path)
    arrays = dict(extra_arrays or {})
    meta = _encode(sd, arrays, "a")
    meta["checkpoint_version"] = FORMAT_VERSION
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_atomic(path, "wb", lambda f: np.savez(f, **arrays))


def _stand_in(shape, dtype):
    """An array of ``shape`` and ``dtype`` that holds no memory (zero strides):
    what a check of shapes and dtypes sees before any data is read."""
    return np.broadcast_to(np.zeros((), dtype=dtype), shape)


def _header(path, z, info):
    """Shape and dtype from the ``.npy`` header of member ``info``, checked to
    agree with the member's size in the zip directory; its data is not read."""
    where = f"{path}: member {info.filename!r}"
    if info.flag_bits & 0x1:
        raise ValueError(f"{where}: encrypted, which fastopt never writes; not a fastopt "
                         f"checkpoint (or it was edited)")
    # fastopt writes stored (uncompressed) members, so what a file makes the reader
    # allocate is bounded by its size on disk; a compressed member could claim 1000x
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{where}: compressed, which fastopt never writes; not a fastopt "
                         f"checkpoint (or it was re-packed: extract and save it again)")
    with z.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version}; fastopt writes 1.0 or 2.0")
        except ValueError as e:
            raise ValueError(f"{where}: corrupt checkpoint, not a .npy array ({e})") from e
        offset = f.tell()
    if dtype.kind not in "biuf" or any(d < 0 for d in shape) or len(shape) > 64:
        raise ValueError(f"{where}: corrupt checkpoint: holds {dtype} data of shape {shape}, "
                         f"but a fastopt checkpoint holds numeric arrays only (was it edited?)")
    size = offset + math.prod(shape) * dtype.itemsize
    if size != info.file_size:
        raise ValueError(f"{where}: its header describes a {dtype} array of shape {shape} "
                         f"({size} bytes with the header), but the zip directory gives the "
                         f"member {info.file_size} bytes; the file is corrupt or was edited")
    return shape, dtype


def _data(path, z, info, shape, dtype):
    """The array in member ``info``, whose header was checked by :func:`_header`."""
    try:
        with z.open(info) as f:
            a = np.lib.format.read_array(f, allow_pickle=False)
    except MemoryError as e:
        raise ValueError(f"{path}: member {info.filename!r} ({dtype} {shape}) does not fit in "
                         f"memory") from e
    except ValueError as e:
        raise ValueError(f"{path}: unreadable or truncated checkpoint (member "
                         f"{info.filename!r}: {e})") from e
    if a.shape != shape or a.dtype != dtype:
        raise ValueError(f"{path}: member {info.filename!r} changed while it was read")
    return a


def _index(path, z):
    """The metadata and ``{name: (member, shape, dtype)}`` for every array it
    names, all checked; no array data is read."""
    infos = z.infolist()
    members = {i.filename: i for i in infos}
    if len(members) != len(infos):
        twice = next(n for n in members if sum(i.filename == n for i in infos) > 1)
        raise ValueError(f"{path}: member {twice!r} appears twice; not a fastopt checkpoint "
                         f"(or it was edited)")
    info = members.get(_META + ".npy")
    if info is None:
        raise ValueError(f"{path}: not a fastopt checkpoint (no metadata entry)")
    shape, dtype = _header(path, z, info)
    if dtype != np.uint8 or len(shape) != 1:
        raise ValueError(f"{path}: corrupt checkpoint metadata (a {dtype} array of shape "
                         f"{shape}; expected the uint8 bytes of a JSON object)")
    raw = _data(path, z, info, shape, dtype).tobytes()
    try:
        meta = json.loads(raw.decode())
    except (ValueError, RecursionError) as e:      # bad UTF-8 or JSON, too deep, huge ints
        raise ValueError(f"{path}: corrupt checkpoint metadata ({type(e).__name__}: "
                         f"{e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupt checkpoint metadata (not a JSON object)")
    version = meta.pop("checkpoint_version", None)
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version!r}; this fastopt reads "
                         f"version {FORMAT_VERSION}")
    named = []
    try:
        _decode(meta, named.append)
    except ValueError as e:
        raise ValueError(f"{path}: corrupt checkpoint metadata ({e})") from e
    names = set(named)
    if len(names) != len(named):
        twice = next(n for n in named if named.count(n) > 1)
        raise ValueError(f"{path}: the checkpoint's metadata names array {twice!r:.80} more "
                         f"than once; fastopt writes each array once, so this is not a "
                         f"fastopt checkpoint (or it was edited)")
    wanted = {n + ".npy" for n in names} | {_META + ".npy"}
    for member in members:
        if member not in wanted:
            raise ValueError(f"{path}: member {member!r} is not named by the checkpoint's "
                             f"metadata; fastopt writes no such member, so this is not a "
                             f"fastopt checkpoint (or it was edited). Refused unread")
    headers = {}
    for name in sorted(names):
        info = members.get(name + ".npy")
        if info is None:
            raise ValueError(f"{path}: checkpoint is missing array {name!r}")
        headers[name] = (info, *_header(path, z, info))
    return meta, headers


def _read(path, expect, data):
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise ValueError(f"{path}: not a fastopt checkpoint (not an .npz archive), or truncated")
    try:
        with zipfile.ZipFile(path) as z:
            meta, headers = _index(path, z)
            stand_ins = _decode(meta, lambda n: _stand_in(*headers[n][1:]), path)
            if not data:
                return stand_ins
            if expect is not None:
                expect(stand_ins)
            arrays = {n: _data(path, z, *h) for n, h in headers.items()}
            return _decode(meta, arrays.__getitem__, path)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: unreadable or truncated checkpoint ({e})") from e
    except RecursionError as e:
        raise ValueError(f"{path}: corrupt checkpoint metadata (nested too deeply)") from e
    except MemoryError as e:
        raise ValueError(f"{path}: checkpoint does not fit in memory ({e})") from e


def read(path, expect=None):
    """The checkpoint at ``path`` as a state dict (with ``"params"`` if saved).

    ``expect(sd)``, if given, is called before any array data is read, with
    the state dict in which every array is a stand-in of the saved array's
    shape and dtype that holds no memory; it refuses the file by raising.
    """
    return _read(path, expect, True)


def read_headers(path):
    """The checkpoint at ``path`` as :func:`read` gives it, but with every
    array a stand-in of its shape and dtype: only the metadata and the
    ``.npy`` headers are read."""
    return _read(path, None, False)


def load(path: Union[str, os.PathLike[str]], optimizer: Optimizer,
         hyperparameters: LoadPolicy = None) -> dict[str, Any]:
    """Restore ``optimizer`` (and its parameters, if the file has them) from
    ``path``; return the ``extra`` dict given to :func:`save` (``{}`` if none).
    Any mismatch raises ``ValueError`` and leaves optimizer and parameters as
    they were.

    ``hyperparameters``: ``"checkpoint"`` restores the saved hyper-parameters
    (learning rate, betas, ... of every param group, schedules included) as
    torch's ``load_state_dict`` does; ``"optimizer"`` keeps the optimizer's
    own, as Keras does.  None (the default) follows the optimizer's
    convention: torch restores, Keras keeps; when the two differ a
    ``UserWarning`` says which was done (passing the keyword silences it)."""
    path = os.fspath(path)
    # shapes and dtypes are compared with the optimizer's before any array data is read
    sd = read(path, expect=lambda sd: _check(path, optimizer, sd, hyperparameters))
    with optimizer.lock:
        apply, params = _check(path, optimizer, sd, hyperparameters)
        # everything is checked: from here on nothing can fail half-way
        apply()
        if params is not None:
            for p, q in zip(optimizer.params, params):
                np.copyto(p, q)
    user = sd.get(_USER)
    return user if isinstance(user, dict) else {}


def _check(path, optimizer, sd, hyperparameters=None):
    """Validate the checkpoint ``sd`` read from ``path`` against ``optimizer``
    without changing anything; returns the function that applies its state and
    the params to copy (None if it has none)."""
    sd = dict(sd)
    params = sd.pop("params", None)
    user = sd.pop(_USER, None)
    if user is not None and not isinstance(user, dict):
        raise ValueError(f"{path}: corrupt checkpoint metadata ({_USER} is not a dict)")
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
            if not p.flags.writeable:
                raise ValueError(f"{path}: params[{i}] of the optimizer is read-only, so the "
                                 f"checkpoint cannot restore it; nothing was loaded. Make it "
                                 f"writeable (params[{i}].flags.writeable = True) and load "
                                 f"again")
    try:
        apply = optimizer.check_state_dict(sd, hyperparameters)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    except (TypeError, AttributeError, OverflowError, RecursionError) as e:
        # a value of the wrong type deep in crafted metadata (a schedule's state, say)
        raise ValueError(f"{path}: corrupt checkpoint metadata ({type(e).__name__}: {e}); "
                         f"it was not written by fastopt.save (or was edited)") from e
    return apply, params
