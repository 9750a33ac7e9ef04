"""Shared pieces of the robustness suites (bad input, fuzzing, checkpoints,
threads, memory): building any registered optimizer generically, taking
bit-exact snapshots of everything an optimizer owns, and tallying what was
tried.

Everything here iterates ``fastopt.optimizers.REGISTRY``, takes what it needs
to know about an optimizer from its public class attributes and from
``tests/optim_db.py`` (at test time, so an optimizer without an entry fails
its tests rather than the collection), and probes options by construction, so
optimizers and options added later are covered without editing these tests.
"""
import atexit
import collections
import contextlib
import io
import json
import math
import os
import tracemalloc
import zipfile

import numpy as np

import fastopt as fo
from fastopt.optimizers import REGISTRY

import optim_db

NAMES = sorted(REGISTRY)


def conventions(cls):
    """The conventions ``cls`` supports, Keras first (its public ``conventions``;
    tests/test_optim_db.py holds optim_db's entries to the same)."""
    return list(cls.conventions)


def default_convention(cls):
    convs = conventions(cls)
    assert convs, f"{cls.__name__} accepts neither convention"
    return convs[0]


def stateful_kwargs(cls, convention):
    """Options that give ``cls`` optimizer state where its defaults have none
    (SGD without momentum keeps nothing), so aliasing and snapshots are exercised."""
    return dict(optim_db.info(cls.__name__).stateful)


def accepts(cls, convention, **options):
    """True when ``cls`` can be built with ``options`` (features another version may lack)."""
    try:
        cls([np.zeros(optim_db.param_shape(cls.__name__, 2))], convention=convention,
            **options)
    except TypeError:
        return False
    return True


def build(name, params, convention=None, **kwargs):
    cls = REGISTRY[name]
    convention = convention or default_convention(cls)
    kw = dict(stateful_kwargs(cls, convention))
    kw.update(kwargs)
    return cls(params, convention=convention, **kw)


def float_hyper(cls, convention):
    """Names of the float hyper-parameters of ``cls`` (bools excluded)."""
    return [k for k, h in cls.hyper.items() if convention in h.defaults and h.kind is float]


def bool_hyper(cls, convention):
    """Names of the bool hyper-parameters of ``cls`` (amsgrad, centered, ...)."""
    return [k for k, h in cls.hyper.items() if convention in h.defaults and h.kind is bool]


# ---- snapshots ----------------------------------------------------------------

def _freeze(obj):
    """A comparable, bit-exact image of a state dict: arrays become
    (dtype, shape, bytes); containers recurse; floats keep their bits."""
    if isinstance(obj, np.ndarray):
        return ("nd", obj.dtype.str, obj.shape, obj.tobytes())
    if isinstance(obj, dict):
        return ("d", tuple(sorted((str(k), _freeze(v)) for k, v in obj.items())))
    if isinstance(obj, (list, tuple)):
        return ("l", tuple(_freeze(v) for v in obj))
    if isinstance(obj, float):
        return ("f", np.float64(obj).tobytes())
    if isinstance(obj, np.generic):
        return ("g", obj.dtype.str, obj.tobytes())
    if callable(getattr(obj, "state_dict", None)):   # stateful schedules
        return ("s", type(obj).__name__, id(obj), _freeze(obj.state_dict()))
    return ("o", repr(obj))


# Attributes that hold machinery rather than optimizer state.  The engine's
# counters, per-parameter step counts and host values (Nadam's products) are
# compared through the Stepper's accessors.
_NOT_STATE = {"_engine", "_stepper", "_lock", "_index"}


def _engine_state(opt):
    s = opt._stepper
    return (s.iterations, s.micro, s.skipped, s.get_steps().tolist(), s.get_aux())


def _masters(opt):
    """The float32 master copies of 16-bit params (``master_weights=True``),
    None for the others; through the public accessor, whatever attribute
    holds them."""
    return [None if m is None else (m.dtype.str, m.shape, m.tobytes())
            for m in getattr(opt, "master_params", None) or []]


def snapshot(opt, params=None):
    """Everything the optimizer owns and everything it may write, bit for bit:
    its parameters (and any extra arrays given), its state dict (state arrays,
    counters, schedule state, config), the public counters and the master
    copies of 16-bit params."""
    arrays = [p.tobytes() for p in opt.params] + [p.tobytes() for p in (params or [])]
    extra = {k: getattr(opt, k) for k in ("iterations", "skipped_steps") if hasattr(opt, k)}
    # every attribute, so state that later versions keep (EMA copies, accumulators)
    # is covered without naming it; plain-callable schedules make state_dict() refuse
    owned = {k: v for k, v in vars(opt).items() if k not in _NOT_STATE}
    return arrays, _freeze(owned), repr(extra), _freeze(_engine_state(opt)), _masters(opt)


def snapshot_bytes(opt):
    return (sum(p.nbytes for p in opt.params)
            + sum(a.nbytes for s in opt.state_arrays() for a in s)
            + sum(m.nbytes for m in getattr(opt, "master_params", None) or [] if m is not None))


def assert_unchanged(before, opt, params=None, what=""):
    after = snapshot(opt, params)
    for k, (a, b) in enumerate(zip(before[0], after[0])):
        assert a == b, f"{what}: params[{k}] changed by a refused call"
    assert before[1] == after[1], f"{what}: optimizer state changed by a refused call"
    assert before[2] == after[2], f"{what}: counters changed: {before[2]} -> {after[2]}"
    assert before[3] == after[3], f"{what}: per-parameter step counts changed"
    for k, (a, b) in enumerate(zip(before[4], after[4])):
        assert a == b, f"{what}: master_params[{k}] changed by a refused call"
    TALLY["bytes_checked"] += snapshot_bytes(opt)


def assert_same_optimizer(a, b, what=""):
    """Two optimizers hold bit-identical parameters and state."""
    for k, (p, q) in enumerate(zip(a.params, b.params)):
        assert p.dtype == q.dtype and p.tobytes() == q.tobytes(), f"{what}: params[{k}] differ"
    for k, (p, q) in enumerate(zip(_masters(a), _masters(b))):
        assert p == q, f"{what}: master_params[{k}] differ"
    sa = {k: v for k, v in vars(a).items() if k not in _NOT_STATE | {"param_groups"}}
    sb = {k: v for k, v in vars(b).items() if k not in _NOT_STATE | {"param_groups"}}
    for k in sa:
        if k.startswith("_params"):
            continue
        assert _freeze(sa[k]) == _freeze(sb.get(k)), f"{what}: {k} differs"


# ---- tallies --------------------------------------------------------------------
# FASTOPT_TALLY=<file> makes each test process add what it tried to that JSON
# file at exit (the figures quoted in the robustness report).

TALLY = collections.Counter()


def _dump_tally():
    path = os.environ.get("FASTOPT_TALLY")
    if not path or not TALLY:
        return
    try:
        with open(path) as f:
            total = collections.Counter(json.load(f))
    except (OSError, ValueError):
        total = collections.Counter()
    total.update(TALLY)
    with open(path, "w") as f:
        json.dump(dict(total), f, indent=1, sort_keys=True)


atexit.register(_dump_tally)


# ---- crafted checkpoint archives ---------------------------------------------------
# A checkpoint may come from anyone: these build the files an attacker could.

def npy_header(shape, dtype):
    """The ``.npy`` (format 1.0) header of an array of ``shape`` and ``dtype``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
        "shape": tuple(shape)})
    return buf.getvalue()


def rebuild_npz(src, dst, drop=(), add=None):
    """Copy the archive ``src`` to ``dst`` without the members ``drop``, then
    add the members ``add`` ({name: bytes}, stored as given)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename not in drop:
                zout.writestr(info, zin.read(info))
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def add_zeros_member(path, name, shape, dtype, deflate=True):
    """Append a ``.npy`` member of zeros of ``shape`` to the archive ``path``:
    consistent sizes; deflated, about 1/200 of its size on disk."""
    left = math.prod(shape) * np.dtype(dtype).itemsize
    chunk = bytes(min(left, 1 << 24))
    how = (dict(compression=zipfile.ZIP_DEFLATED, compresslevel=1) if deflate
           else dict(compression=zipfile.ZIP_STORED))
    with zipfile.ZipFile(path, "a", **how) as z:
        with z.open(name, "w", force_zip64=True) as f:
            f.write(npy_header(shape, dtype))
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
    return path


@contextlib.contextmanager
def traced_peak():
    """Yields a list that holds, after the block, the peak bytes allocated
    inside it as tracemalloc sees them (NumPy reports array data to it, even
    pages never touched)."""
    out = []
    tracemalloc.start()
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def rng_grads(rng, params, scale=0.3):
    return [np.asarray(rng.standard_normal(p.shape) * scale, dtype=p.dtype) for p in params]


__all__ = ["fo", "REGISTRY", "NAMES"]
