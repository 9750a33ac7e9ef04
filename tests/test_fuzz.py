"""Hypothesis-driven fuzzing of the public API: random optimizers, conventions,
shapes, dtypes, strides, aliasing, hyper-parameters, options and storage
settings (compact state, 16-bit params, master weights, rounding, seed).

Every call either applies a correct update or raises a clean ``TypeError`` /
``ValueError`` with nothing changed.  "Correct" is checked two ways: bit for
bit against a twin optimizer fed canonical (fresh, contiguous) copies of the
same accepted inputs, and, for tame hyper-parameters, against the float64
reference of ``tests/reference.py``.

Examples are derandomized so CI is reproducible; FASTOPT_FUZZ_EXAMPLES=n
raises the budget and FASTOPT_FUZZ_RANDOM=1 draws new examples each run.
"""
import math
import os
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastopt as fo
from fastopt import _core
from fastopt.optimizers import REGISTRY

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:         # the optional bf16 extra: then float16 is the only 16-bit dtype
    BF16 = None

import optim_db
import reference
from anchor_defaults import row as anchor_row
from robust_util import (NAMES, TALLY, assert_same_optimizer, assert_unchanged, bool_hyper,
                         conventions, float_hyper, snapshot, stateful_kwargs)

EXAMPLES = int(os.environ.get("FASTOPT_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("FASTOPT_FUZZ_RANDOM", "") in ("", "0"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CONVENTIONS = {name: conventions(REGISTRY[name]) for name in NAMES}
WILD = [0.0, 1.0, 2.0, -0.1, -1e-300, 1e300, float("nan"), float("inf"), float("-inf"), 1e-30]
CLEAN_ERRORS = (TypeError, ValueError)

shapes = st.one_of(
    st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
    st.sampled_from([(40000,), (3, 12289)]),     # above the parallel threshold: a team runs
)

# "none" is weighted so most examples reach a step and most steps are accepted
PARAM_DEFECTS = ["none"] * 100 + ["float16", "int64", "complex", "byteswap", "sliced",
                                 "transposed", "readonly", "duplicate", "list", "misaligned"]
GRAD_DEFECTS = (["none"] * 60 + ["skip", "readonly", "view-in-buffer"] * 3 + ["rowgrad"] * 6 +
                ["rowgrad-out-of-range", "rowgrad-values-dtype", "rowgrad-values-sliced",
                 "rowgrad-indices-float"] +
                ["float16", "int32", "other-float", "byteswap", "shape", "0-d", "sliced",
                 "fortran", "misaligned", "alias-param", "alias-state", "list"] +
                # compact storage: a 16-bit grad (float32 params take them), a grad
                # in the bytes of a compact state array, the float32 master copy
                ["half-grad"] * 3 + ["alias-state-bytes", "alias-master"])
LIST_DEFECTS = ["none"] * 30 + ["short", "long", "ndarray", "tuple", "generator"]


def _misaligned(shape, dtype):
    n = int(np.prod(shape))
    raw = np.zeros(n * np.dtype(dtype).itemsize + 1, dtype=np.uint8)
    return raw[1:].view(dtype).reshape(shape)


def make_param(data, shape, dtype, defect, earlier):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="param seed"))
    p = np.asarray(rng.standard_normal(shape), dtype=dtype)   # 0-d stays an ndarray
    if defect == "float16":
        return p.astype(np.float16)
    if defect == "int64":
        return p.astype(np.int64)
    if defect == "complex":
        return p.astype(np.complex64)
    if defect == "byteswap":
        return p.astype(p.dtype.newbyteorder())
    if defect == "sliced":
        return np.repeat(p[..., None], 2, -1)[..., 0]
    if defect == "transposed":
        return np.ascontiguousarray(p.T).T
    if defect == "readonly":
        p.flags.writeable = False
        return p
    if defect == "duplicate" and earlier:
        return earlier[-1]
    if defect == "list":
        return p.tolist()
    if defect == "misaligned":
        a = _misaligned(shape, dtype)
        a[...] = p
        return a
    return p


def _in_memory_of(a, p):
    """A grad of ``p``'s shape and of a dtype ``p`` takes, laid over the first
    bytes of ``a`` (int8 blocks have no dtype a grad may have), or ``a``
    itself where no such grad fits."""
    for dt in (p.dtype, np.dtype(np.float32), BF16):
        if dt is not None and _grad_dtype_ok(dt, p.dtype) and p.size * dt.itemsize <= a.nbytes:
            return a.reshape(-1).view(np.uint8)[:p.size * dt.itemsize].view(dt).reshape(p.shape)
    return a


def make_grad(data, p, state, defect, master=None):
    """A grad for param ``p`` with a possible defect; the 'clean' counterpart
    (what the optimizer must have used when it accepts it) is returned too.
    ``state`` and ``master`` are the param's state arrays and master copy."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="grad seed"))
    scale = data.draw(st.sampled_from([0.3, 1e-3, 50.0]), label="grad scale")
    g = np.asarray(rng.standard_normal(p.shape) * scale, dtype=p.dtype)
    if data.draw(st.booleans(), label="zeros in grad") and g.size:
        g.reshape(-1)[::3] = 0
    clean = g.copy()
    if defect.startswith("rowgrad"):
        return make_rowgrad(data, rng, p, scale, defect)
    if defect == "skip":
        return None, None
    if defect == "readonly":
        g.flags.writeable = False
    elif defect == "view-in-buffer":
        buf = np.zeros(g.size + 16, dtype=g.dtype)
        v = buf[8:8 + g.size].reshape(g.shape)
        v[...] = g
        g = v
    elif defect == "float16":
        g = g.astype(np.float16)
    elif defect == "int32":
        g = g.astype(np.int32)
    elif defect == "other-float":
        g = g.astype(np.float64 if p.dtype == np.float32 else np.float32)
    elif defect == "byteswap":
        g = g.astype(g.dtype.newbyteorder())
    elif defect == "shape":
        g = np.zeros(p.size + 1, p.dtype)
    elif defect == "0-d":
        g = np.array(1.0, p.dtype) if p.ndim else np.zeros(1, p.dtype)
    elif defect == "sliced":
        g = np.repeat(g[..., None], 2, -1)[..., 0]
    elif defect == "fortran":
        g = np.asfortranarray(g) if g.ndim > 1 else np.asfortranarray(np.stack([g, g]))[0]
    elif defect == "misaligned":
        a = _misaligned(p.shape, p.dtype)
        a[...] = g
        g = a
    elif defect == "alias-param":
        g = p
    elif defect == "alias-state":
        g = state[-1] if state else p
    elif defect == "alias-state-bytes":
        compact = [a for a in state if a.dtype not in (np.float32, np.float64)]
        g = _in_memory_of((compact or state or [p])[-1], p)
    elif defect == "alias-master":
        g = p if master is None else master
    elif defect == "half-grad":
        g = g.astype(BF16 if BF16 is not None else np.float16)
    elif defect == "list":
        g = g.tolist()
    if isinstance(g, np.ndarray) and g.dtype != p.dtype and _grad_dtype_ok(g.dtype, p.dtype):
        clean = g.copy()     # a 16-bit grad of a float32 param (or the reverse) is taken
    return g, clean


def _half(dtype):
    return dtype == np.float16 or dtype.name == "bfloat16"


def _grad_dtype_ok(g, p, multipass=False):
    """The grad dtypes a param takes: its own; 16-bit floats for float32 params
    (unless the kernel makes more than one pass over a tensor: ``multipass``);
    float32 for 16-bit params."""
    return g == p or (p == np.float32 and _half(g) and not multipass) or (
        _half(p) and g == np.float32)


def _multipass(cls):
    """The kernel reads a tensor more than once (a reduction or rows/columns pass)."""
    return _core.kernel_reduces(cls.kernel) or _core.kernel_factored(cls.kernel)


def make_rowgrad(data, rng, p, scale, defect):
    """A RowGrad (refused for a param that is not 2-D, and by Lamb) and its clean copy."""
    rows, dim = p.shape if p.ndim == 2 else (max(p.size, 1), 1)
    n = int(data.draw(st.integers(0, 2 * rows), label="rowgrad length")) if rows else 0
    idx = rng.integers(0, max(rows, 1), n).astype(
        data.draw(st.sampled_from([np.int32, np.int64]), label="index dtype"))
    vals = np.asarray(rng.standard_normal((n, dim)) * scale, dtype=p.dtype)
    clean = fo.RowGrad(idx.copy(), vals.copy())
    if defect == "rowgrad-out-of-range":
        idx = np.append(idx, data.draw(st.sampled_from([rows, -1, 2**40]), label="bad index"))
        vals = np.concatenate([vals, np.zeros((1, dim), p.dtype)])
    elif defect == "rowgrad-values-dtype":
        vals = vals.astype(np.float64 if p.dtype == np.float32 else np.float32)
    elif defect == "rowgrad-values-sliced":
        vals = np.repeat(vals, 2, axis=1)[:, ::2]
        if vals.size == 0 or dim < 2 and n < 2:
            vals = np.zeros((n, dim + 1), p.dtype)      # then a wrong width
    elif defect == "rowgrad-indices-float":
        idx = idx.astype(np.float64)
    return fo.RowGrad(idx, vals), clean


def draw_optimizer(data, names=NAMES):
    """A registered optimizer (of ``names``, repeats weigh more): its name,
    class and one of its conventions."""
    name = data.draw(st.sampled_from(names), label="optimizer")
    return name, REGISTRY[name], data.draw(st.sampled_from(CONVENTIONS[name]), label="convention")


# ---- what is valid, decided here (DESIGN.md §3), not by asking the optimizer --------------

def shape_problem(i, p, name, conv):
    """``None`` when optimizer ``name`` takes a param of ``p``'s shape in
    convention ``conv`` (Muon in torch's: matrices only; optim_db.param_shape),
    else ``(error type, pattern)``."""
    if (isinstance(p, np.ndarray) and conv in optim_db.info(name).shape_conventions
            and optim_db.param_shape(name, p.shape) != p.shape):
        return ValueError, rf"params\[{i}\]: {name}\b.* takes"
    return None


def param_problem(i, p, earlier, cls):
    """``None`` when ``p`` is a valid params[i] of ``cls``, else ``(error type,
    pattern)``."""
    if not isinstance(p, np.ndarray):
        return TypeError, rf"params\[{i}\]: expected a numpy.ndarray"
    if _half(p.dtype) and p.dtype.isnative:
        if not cls.compact_params:
            return TypeError, rf"params\[{i}\] is {p.dtype}: {cls.__name__} takes float32"
    elif p.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return TypeError, rf"params\[{i}\]: expected dtype float32, float64"
    if not p.flags.c_contiguous:
        return ValueError, rf"params\[{i}\]: expected a C-contiguous array"
    if not p.flags.writeable:
        return ValueError, rf"params\[{i}\]: the array is read-only"
    if not p.flags.aligned:
        return ValueError, rf"params\[{i}\]: the array is not aligned"
    for j, q in enumerate(earlier):
        if isinstance(q, np.ndarray) and np.shares_memory(p, q):
            return ValueError, rf"params\[{j}\] and params\[{i}\] share memory"
    return None


def rowgrad_problem(i, g, p, opt, compact=False):
    """``None`` when the RowGrad ``g`` is a valid grads[i] for param ``p`` of
    ``opt`` (``compact``: its state is stored compactly), else ``(error type,
    pattern)``."""
    if p.ndim != 2:
        return ValueError, rf"grads\[{i}\]: a RowGrad updates rows of a 2-D parameter"
    if _half(p.dtype) or compact:
        return ValueError, rf"grads\[{i}\]: a RowGrad, but params\[{i}\] has compact storage"
    if _core.kernel_reduces(type(opt).kernel):
        return ValueError, rf"grads\[{i}\]: a RowGrad, but the update of kernel"
    idx, vals = g.indices, g.values
    if idx.dtype.kind != "i":
        return TypeError, rf"grads\[{i}\]\.indices: expected dtype int32 or int64"
    if vals.dtype != p.dtype:
        return TypeError, rf"grads\[{i}\]\.values: expected dtype"
    if vals.ndim != 2 or vals.shape != (len(idx), p.shape[1]):
        return ValueError, rf"grads\[{i}\]\.values: expected shape"
    if not vals.flags.c_contiguous:
        return ValueError, rf"grads\[{i}\]\.values: expected a C-contiguous array"
    bad = np.flatnonzero((idx < 0) | (idx >= p.shape[0]))
    if bad.size:
        return ValueError, rf"grads\[{i}\]\.indices\[{bad[0]}\] is"
    if opt.gradient_accumulation_steps:
        return ValueError, r"a RowGrad cannot be accumulated"
    return None


def grad_problem(i, g, p, owned, opt, compact=False):
    """``None`` when ``g`` is a valid grads[i] for param ``p`` of ``opt`` (whose
    own, state and master arrays are ``owned``; ``compact``: its state is
    stored compactly), else ``(error type, pattern)``."""
    if g is None:
        return None
    if isinstance(g, fo.RowGrad):
        return rowgrad_problem(i, g, p, opt, compact)
    if not isinstance(g, np.ndarray):
        return TypeError, rf"grads\[{i}\]: expected a numpy.ndarray"
    if not (_grad_dtype_ok(g.dtype, p.dtype, _multipass(type(opt))) and g.dtype.isnative):
        return TypeError, rf"grads\[{i}\]: expected dtype {p.dtype.name}"
    if g.shape != p.shape:
        return ValueError, rf"grads\[{i}\]: expected shape"
    if not g.flags.c_contiguous:
        return ValueError, rf"grads\[{i}\]: expected a C-contiguous array"
    if not g.flags.aligned:
        return ValueError, rf"grads\[{i}\]: expected an aligned array"
    if any(np.shares_memory(g, a) for a in owned):
        return ValueError, rf"grads\[{i}\] shares memory with params\[{i}\]"
    return None


def value_ok(spec, value):
    """A float hyper-parameter's value against its declared range (a finite
    value is required whatever the range)."""
    lo, lo_closed, hi, hi_closed = spec.check
    if not math.isfinite(value):
        return False
    return (value > lo or lo_closed and value == lo) and (value < hi or hi_closed and value == hi)


# ---- compact storage (README "Compact storage") ----------------------------------------
# (value, valid) pairs; None leaves the setting out.  Leaving it out is drawn
# most, so that most examples reach a step.
STORAGE_DRAWS = {
    "state_dtype": [("float32", True), ("float16", True), ("int8", True), ("int4", False),
                    ("float64", False), ("BF16", False), (8, False)] +
                   ([("bfloat16", True)] if BF16 is not None else []),
    "min_8bit_size": [(0, True), (100, True), (-1, False), (1.5, False), (True, False)],
    "master_weights": [(False, True), (True, True), ("yes", False), (1, False)],
    "rounding": [("stochastic", True), ("nearest", True), ("up", False), ("Nearest", False)],
    "seed": [(0, True), (12345, True), (2 ** 64 - 1, True), (-1, False), (2 ** 64, False),
             (True, False)],
}
COMPACT_STATE_DTYPES = ("bfloat16", "float16", "int8")
STORAGE_NAMES = ("float32",) + COMPACT_STATE_DTYPES
# the param-group twins give every schedulable value as a schedule, which keeps
# a buffer where a constant 0 keeps none (RMSprop's momentum): float16 state
# overflows to inf there (1/epsilon is beyond its range) and 0 * inf differs
# from no buffer, so the group fuzz draws the state dtypes (and 16-bit params)
# of float32's range
GROUP_STATE_DTYPES = ("float32", "int8") + (("bfloat16",) if BF16 is not None else ()) + (
    "int4",)
COMPACT_WEIGHTED = NAMES + [n for n in NAMES if REGISTRY[n].compact_state] * 2
PARAM_DTYPES = [np.float32, np.float64]
HALF_DTYPES = [np.float16] + ([BF16] if BF16 is not None else [])


def draw_storage(data, cls):
    """The storage settings and the names of the invalid ones; one example in
    five makes one of them invalid.  The param settings (master_weights,
    rounding) are drawn rarely for a class without 16-bit params, where they
    are refused."""
    keys = list(STORAGE_DRAWS)
    poisoned = data.draw(st.sampled_from([None] * len(keys) * 4 + keys),
                         label="invalid storage setting")
    kw, bad = {}, []
    for key, draws in STORAGE_DRAWS.items():
        if key == poisoned:
            kw[key] = data.draw(st.sampled_from([v for v, ok in draws if not ok]),
                                label=f"{key} invalid value")
            bad.append(key)
            continue
        unset = (12 if key in ("master_weights", "rounding") and not cls.compact_params
                 else 2 if key == "state_dtype" else 4)
        pick = data.draw(st.sampled_from([None] * unset + [v for v, ok in draws if ok]),
                         label=key)
        if pick is not None:
            kw[key] = pick
    return kw, bad


def _native_half(p):
    return isinstance(p, np.ndarray) and _half(p.dtype) and p.dtype.isnative


def _keeps_state(name, cls, conv, kw):
    """Whether optimizer ``name`` keeps state arrays with the drawn values
    (optim_db's initial state: SGD without momentum keeps none)."""
    hp = dict(cls.defaults(conv))
    hp.update({k: v for k, v in kw.items() if k in hp})
    return any(isinstance(v, np.ndarray) for v in
               optim_db.info(name).initial_state(hp, np.zeros(1)).values())


def storage_problems(params, problems, name, cls, conv, kw, bad):
    """The refusals the valid storage settings in ``kw`` must meet with these
    params (``problems``: each param's own): ``(error type, pattern)`` each."""
    sd, out = kw.get("state_dtype"), []
    mw, rounding = kw.get("master_weights", False), kw.get("rounding")
    param_opts = [k for k, on in (("master_weights", mw is True),
                                  ("rounding", rounding is not None)) if on]
    for key in param_opts:
        if key in bad:
            continue
        if not cls.compact_params:
            out.append((ValueError, rf"{cls.__name__} takes float32/float64 params only, so "
                                    rf"(master_weights|rounding) would do nothing"))
        elif not any(_native_half(p) for p in params):
            out.append((ValueError, r"(master_weights|rounding) is for bfloat16 or float16 "
                                    r"params"))
    for i, p in enumerate(params):
        if problems[i] is not None and "share memory" not in problems[i][1]:
            continue
        if _native_half(p) and cls.compact_params:
            if kw.get("use_ema") is True:
                out.append((ValueError, rf"params\[{i}\] is \w+: use_ema and use_swa"))
            if "gradient_accumulation_steps" not in bad and kw.get(
                    "gradient_accumulation_steps") is not None:
                out.append((ValueError, rf"params\[{i}\] is \w+: gradient_accumulation_steps"))
        if (sd in COMPACT_STATE_DTYPES and isinstance(p, np.ndarray)
                and p.dtype == np.float64):
            out.append((TypeError, rf"params\[{i}\] is float64: state_dtype={sd!r}"))
    if sd in COMPACT_STATE_DTYPES and (not cls.compact_state
                                       or not _keeps_state(name, cls, conv, kw)):
        out.append((ValueError, rf"state_dtype={sd!r}: {cls.__name__} has .* Leave state_dtype "
                                rf"unset"))
    return out


def compact_tensors(params, cls, kw):
    """Per param, whether it is stored compactly (a 16-bit param, or state in
    16 bits or int8 blocks: min_8bit_size elements or more), by the documented
    rules."""
    sd = kw.get("state_dtype")
    least = kw.get("min_8bit_size", 4096)
    return [_half(p.dtype) or sd in ("bfloat16", "float16")
            or sd == "int8" and p.size >= least for p in params]


def check_storage(opt, params, cls, kw):
    """The arrays an accepted optimizer made are in the dtypes the settings
    say: compact state in its format, the rest in float32 (16-bit params) or
    the param's dtype, and a float32 master copy of each 16-bit param with
    master_weights."""
    sd, least = kw.get("state_dtype"), kw.get("min_8bit_size", 4096)
    for i, (p, state) in enumerate(zip(params, opt.state)):
        full = np.dtype(np.float32) if _half(p.dtype) else p.dtype
        for key, a in state.items():
            want = full
            if key in cls.compact_state:
                eff = sd if sd is not None else (p.dtype.name if _half(p.dtype) else None)
                if eff in ("bfloat16", "float16"):
                    want = np.dtype(BF16 if eff == "bfloat16" else np.float16)
                elif eff == "int8" and p.size >= least:
                    want = _core.Q8_DTYPE
            assert a.dtype == want, f"params[{i}] state {key}: {a.dtype}, expected {want} ({kw})"
        master = opt.master_params[i]
        if kw.get("master_weights") is True and _half(p.dtype):
            assert master is not None and master.dtype == np.float32 and master.shape == p.shape
            assert np.array_equal(master, p.astype(np.float32)), f"params[{i}] master"
        else:
            assert master is None, f"params[{i}] has a master copy ({kw})"


# Options: (value, valid) pairs; None leaves the option out.
OPTION_DRAWS = {
    "clipnorm": [(0.5, True), (0.0, False), (-1.0, False), (math.inf, False)],
    "global_clipnorm": [(1.0, True), (1e-3, True), (math.inf, False)],
    "clipvalue": [(0.5, True), (1e-3, True), (0.0, False), (-1.0, False), (math.nan, False)],
    "use_ema": [(True, True), (False, True), ("yes", False)],
    "ema_momentum": [(0.5, True), (1.0, True), (1.5, False), (-0.1, False)],
    "ema_overwrite_frequency": [(1, True), (3, True), (0, False), (2.5, False)],
    "gradient_accumulation_steps": [(2, True), (3, True), (1, False), (2.5, False)],
    "skip_nonfinite": [(True, True), ("yes", False)],
    "weight_decay": [(0.01, True), (0.1, True), (-0.1, False), (math.nan, False)],
    "maximize": [(True, True), (False, True)],
    "num_threads": [(1, True), (2, True), (3, True), (0, False), (2.5, False)],
}


def draw_hyper(data, name, cls, conv):
    """Keyword arguments, the names of the invalid ones, whether every float
    is tame (reference-comparable), and the evaluated hyper-parameters the
    reference uses: the anchors' defaults (tests/anchor_defaults.py) with the
    drawn values, never values read back from the optimizer.

    Three examples in four draw only valid values; the fourth makes one drawn
    hyper-parameter or option invalid."""
    floats = float_hyper(cls, conv)
    options = [k for k in OPTION_DRAWS if not (k == "weight_decay" and k in cls.hyper)]
    can_poison = floats + [k for k in options if not all(ok for _, ok in OPTION_DRAWS[k])]
    poisoned = data.draw(st.sampled_from([None] * len(can_poison) * 3 + can_poison),
                         label="invalid one")
    kw, bad, tame = {}, [], True
    for key in floats:
        spec = cls.hyper[key]
        default = spec.default(conv)
        if key == poisoned:
            invalid = [v for v in WILD + [-1.0, 1.5] if not value_ok(spec, v)]
            kw[key] = data.draw(st.sampled_from(invalid), label=f"{key} invalid value")
            bad.append(key)
            continue
        how = data.draw(st.sampled_from(["default"] * 4 + ["scaled"] * 3 + ["wild"]), label=key)
        if how == "scaled":
            u = data.draw(st.floats(0.05, 1.0), label=f"{key} factor")
            v = default * u if default else 0.9 * u
            if value_ok(spec, v):
                kw[key] = v
        elif how == "wild":
            valid = [v for v in WILD if value_ok(spec, v)]
            if valid:
                kw[key] = data.draw(st.sampled_from(valid), label=f"{key} value")
                tame = tame and abs(kw[key]) < 1e3
    for key in bool_hyper(cls, conv):
        kw[key] = data.draw(st.booleans(), label=key)
    for key in options:
        draws = OPTION_DRAWS[key]
        if key == poisoned:
            kw[key] = data.draw(st.sampled_from([v for v, ok in draws if not ok]),
                                label=f"{key} invalid value")
            bad.append(key)
            continue
        pick = data.draw(st.sampled_from([None] * 4 + [v for v, ok in draws if ok]), label=key)
        if pick is not None:
            kw[key] = pick
    if conv == "torch" and data.draw(st.booleans(), label="decoupled"):
        kw["decoupled_weight_decay"] = True
    hp = {k: v for k, v in anchor_row(name, conv).items()
          if k not in ("maximize", "decoupled_weight_decay")}
    hp.setdefault("weight_decay", 0.0)
    hp.update({k: v for k, v in kw.items() if k in hp})
    return kw, bad, tame, hp


def _clip_count(kw):
    return sum(kw.get(k) is not None for k in ("clipnorm", "global_clipnorm", "clipvalue"))


def _refused_with(err, expected, what):
    """``err`` is a refusal ``expected`` foresaw: a (type, pattern) or a list of
    them (any one may be reported), or a list of strings one of which the
    message must contain."""
    msg = str(err)
    if isinstance(expected, tuple):
        expected = [expected]
    if all(isinstance(e, str) for e in expected):
        assert isinstance(err, CLEAN_ERRORS) and any(k in msg for k in expected), (
            f"{what}: expected a refusal naming one of {expected}; got {type(err).__name__}: {msg}")
        return
    assert any(isinstance(err, etype) and re.search(pattern, msg) for etype, pattern in expected), (
        f"{what}: expected one of {expected}; got {type(err).__name__}: {msg}")


@FUZZ
@given(data=st.data())
def test_fuzz_public_api(data):
    """Every drawn input is classified here before the call: a valid one must be
    accepted and then match a twin fed clean copies (bit for bit) and, for tame
    values, the float64 reference with the anchors' defaults; an invalid one
    must be refused with the error that names it, and change nothing."""
    # half the examples draw storage settings and 16-bit params (for the classes
    # that take them; the others meet float16 as a param defect), mostly for the
    # classes with compact state; the others stay comparable with the float64
    # reference
    compact_mode = data.draw(st.booleans(), label="storage settings")
    name, cls, conv = draw_optimizer(data, COMPACT_WEIGHTED if compact_mode else NAMES)
    n = data.draw(st.integers(0, 4), label="nparams")
    dtypes = (PARAM_DTYPES if not compact_mode else
              [np.float32] * 3 + [np.float64] + (HALF_DTYPES if cls.compact_params else []))
    params = []
    for i in range(n):
        shape = data.draw(shapes, label=f"shape{i}")
        dtype = data.draw(st.sampled_from(dtypes), label=f"dtype{i}")
        defect = data.draw(st.sampled_from(PARAM_DEFECTS), label=f"param defect{i}")
        params.append(make_param(data, shape, dtype, defect, params))
    kw, bad, tame, hp = draw_hyper(data, name, cls, conv)
    storage, storage_bad = draw_storage(data, cls) if compact_mode else ({}, [])
    if compact_mode:
        # 16-bit params refuse these options: kept in one example in four, so
        # that most reach a step
        for key in ("use_ema", "gradient_accumulation_steps"):
            if key in kw and key not in bad and data.draw(st.integers(0, 3), label=f"keep {key}"):
                del kw[key]
    kw.update(storage)
    bad += storage_bad
    problems = [param_problem(i, p, params[:i], cls) for i, p in enumerate(params)]
    stored = storage_problems(params, problems, name, cls, conv, kw, bad)
    first_bad_param = next((pr for pr in problems if pr is not None), None)
    # a shape the class refuses: checked with each param's format, before overlaps
    shape_problems = [pr for i, p in enumerate(params) if problems[i] is None or
                      "share memory" in problems[i][1]
                      if (pr := shape_problem(i, p, name, conv)) is not None]
    first_bad_param = first_bad_param or next(iter(shape_problems), None)
    given_arrays = [p for p in params if isinstance(p, np.ndarray)]
    before = [(p.dtype.str, p.shape, p.tobytes()) for p in given_arrays]
    TALLY["inputs_tried"] += 1
    try:
        opt = cls(params, convention=conv, **kw)
    except CLEAN_ERRORS as err:
        assert before == [(p.dtype.str, p.shape, p.tobytes()) for p in given_arrays]
        # any of the problems drawn may be the one reported
        TALLY["refused_values" if bad else "refused_params" if first_bad_param
              else "refused_other"] += 1
        expected = [(CLEAN_ERRORS, rf"\b{k}\b") for k in bad] + (
            [first_bad_param] if first_bad_param else []) + shape_problems + (
            [(ValueError, "only one of clipnorm, global_clipnorm and clipvalue")]
            if _clip_count(kw) > 1 else []) + (
            [(ValueError, "got an empty parameter list")] if not params else []) + stored
        # every param's own format (a 16-bit param a class refuses) is checked before
        # the params are compared for overlaps
        if first_bad_param is not None and "share memory" in first_bad_param[1]:
            expected += [pr for pr in problems if pr is not None and "share memory" not in pr[1]]
        # a rule across valid values (torch's nesterov needs momentum, Adafactor's
        # relative_step): it names them, and may come before the other checks;
        # the storage rules are all foreseen by storage_problems
        across = [(ValueError, rf"\b{k}\b") for k in kw
                  if kw[k] is not None and k not in STORAGE_DRAWS]
        if not expected:
            TALLY["refused_across_values"] += 1
        expected += across
        _refused_with(err, expected, f"{name}/{conv} {kw}")
        TALLY["failures_survived"] += 1
        return
    assert not bad, f"{name}/{conv}: {bad} accepted in {kw}"
    assert first_bad_param is None, f"{name}/{conv}: accepted params {first_bad_param}"
    assert params, f"{name}/{conv}: an empty parameter list accepted"
    assert _clip_count(kw) <= 1, f"{name}/{conv}: two clip options accepted"
    assert not stored, f"{name}/{conv}: accepted {kw}, expected one of {stored}"
    check_storage(opt, params, cls, kw)
    compact = compact_tensors(params, cls, kw)
    TALLY["optimizers_built"] += 1
    if any(compact):
        TALLY["compact_optimizers_built"] += 1
    twin_params = [p.copy() for p in params]
    twin = cls(twin_params, convention=conv, **kw)
    ref = None
    # compact tensors (16-bit params, compact state) round every step (their bits
    # are checked against the twin here and with the rounding modelled in
    # tests/test_compact.py), and the rules take
    # params of the entry's shape (Keras's Muon gives the others its AdamW step:
    # tests/test_muon.py checks that route)
    if (tame and conv in optim_db.info(name).rules
            and not any(compact)
            and all(optim_db.param_shape(name, p.shape) == p.shape for p in params
                    if isinstance(p, np.ndarray))):
        options = {k: kw[k] for k in reference.OPTIONS if k in kw}
        ref = reference.Reference(name, conv, params, lambda step: hp, **options)
    nsteps = data.draw(st.integers(1, 4), label="steps")
    for s in range(nsteps):
        grads, clean = [], []
        for i, p in enumerate(params):
            defect = data.draw(st.sampled_from(GRAD_DEFECTS), label=f"step{s} grad defect{i}")
            g, c = make_grad(data, p, opt.state_arrays()[i], defect, opt.master_params[i])
            grads.append(g)
            clean.append(c)
        ldefect = data.draw(st.sampled_from(LIST_DEFECTS), label=f"step{s} list defect")
        call = grads
        expected = None
        if ldefect in ("short", "long") and n:
            call = grads[:-1] if ldefect == "short" else grads + [None]
            expected = (ValueError, rf"expected {n} grads")
        elif ldefect == "long":
            call = [None]
            expected = (ValueError, r"expected 0 grads")
        elif ldefect == "ndarray":
            call = grads[0] if grads and isinstance(grads[0], np.ndarray) else np.zeros(n + 1)
            expected = (TypeError, r"grads: expected a list")
        elif ldefect == "tuple":
            call = tuple(grads)
        elif ldefect == "generator":
            call = (g for g in grads)
        if expected is None:
            # every grad's problem: the step may report any of them first (format
            # checks of all grads come before a RowGrad's index range)
            owned = [[p] + list(opt.state_arrays()[i]) +
                     [m for m in opt.master_params[i:i + 1] if m is not None]
                     for i, p in enumerate(params)]
            expected = [pr for i, (g, p) in enumerate(zip(grads, params))
                        if (pr := grad_problem(i, g, p, owned[i], opt, compact[i]))
                        is not None] or None
            # Keras 3 refuses a step in which every grad is None
            if expected is None and conv == "keras" and n and all(g is None for g in grads):
                expected = (ValueError, r"No gradients provided for any variable")
        snap = snapshot(opt)
        TALLY["inputs_tried"] += 1
        try:
            opt.step(call)
        except CLEAN_ERRORS as err:
            assert expected is not None, f"{name}/{conv} step {s}: valid grads refused: {err}"
            _refused_with(err, expected, f"{name}/{conv} step {s}")
            assert_unchanged(snap, opt, [], f"{name}/{conv} step {s}")
            TALLY["failures_survived"] += 1
            continue
        assert expected is None, f"{name}/{conv} step {s}: accepted, expected {expected}"
        twin.step(clean)
        assert_same_optimizer(opt, twin, f"{name}/{conv} step {s}")
        TALLY["updates_verified"] += 1
        TALLY["compact_updates_verified"] += any(compact)
        if ref is not None:
            ref.step(clean)     # a RowGrad: the reference's lazy rule on its rows
    # a hyper-parameter drawn as 0 or 1e-30 (a decay of 0, an epsilon of 0) leaves
    # the anchors' forms ill-conditioned in float32 (Keras's v + (1-b2)*(g^2 - v)
    # cancels when v drops): float32 params are then checked against the twin only
    degenerate = any(isinstance(v, float) and abs(v) < 1e-20 for v in kw.values())
    if ref is not None and opt.micro_steps > 0:
        assert ref.micro == opt.micro_steps
        TALLY["reference_checked"] += 1
        with np.errstate(all="ignore"):
            for i, (w, r) in enumerate(zip(params, ref.w)):
                if r.size == 0 or not np.isfinite(r).all():
                    continue
                if w.dtype == np.float32 and degenerate:
                    continue
                rtol, atol = (1e-9, 1e-12) if w.dtype == np.float64 else (3e-4, 3e-5)
                np.testing.assert_allclose(w, r, rtol=rtol, atol=atol * max(1.0, np.abs(r).max()),
                                           err_msg=f"{name}/{conv} params[{i}] {kw}")


def _layout(name, conv, current, key=None, value=None):
    """The state arrays optim_db's initial state gives with the values the test
    expects (``key`` set to ``value``)."""
    hp = dict(REGISTRY[name].defaults(conv))
    hp.update({k: c.value for k, c in current.items()})
    if key is not None:
        hp[key] = value
    return sorted(optim_db.info(name).initial_state(hp, np.zeros(1)))


class _Current:
    """A schedule that returns what the test says the value is now: the twin's
    path to a hyper-parameter, independent of setters and group edits."""

    def __init__(self, value):
        self.value = value

    def __call__(self, step):
        return self.value


def _nonfinite_alike(p, q):
    """Equal but where both are inf or NaN: a twin's value given as a schedule
    that returns 0 keeps its state (a momentum buffer) and multiplies it, and
    0 * inf is NaN where the optimizer without the buffer has inf."""
    p, q = p.astype(np.float64), q.astype(np.float64)
    differ = (p != q) & ~(np.isnan(p) & np.isnan(q))
    return bool((~np.isfinite(p[differ])).all() and (~np.isfinite(q[differ])).all())


@FUZZ
@given(data=st.data())
def test_fuzz_param_groups_and_setters(data):
    """Param groups with random overrides, learning-rate edits (the setter) and
    group edits between steps.  Invalid values are refused (at construction or
    at the assignment) with a message naming the value, and nothing changes;
    valid ones must be accepted and match a twin: one optimizer per group whose
    schedulable values are schedules reporting the values this test expects
    (another path than the setter and group sync).  Groups may set their own
    state_dtype and hold 16-bit params; each twin is then built with the
    group's storage over copies of the params up to the group's, so that its
    stochastic roundings (keyed by the param's index) are those of the group."""
    name, cls, conv = draw_optimizer(data)
    keys = [k for k in float_hyper(cls, conv) if cls.hyper[k].schedulable]
    ngroups = data.draw(st.integers(1, 3), label="groups")
    # the optimizer's storage: tiny params need min_8bit_size=0 for int8 blocks
    storage = {k: v for k, v in (
        ("state_dtype", data.draw(st.sampled_from([None] * 4 + list(GROUP_STATE_DTYPES)),
                                  label="state_dtype")),
        ("min_8bit_size", data.draw(st.sampled_from([None, 0, 0]), label="min_8bit_size")),
        ("seed", data.draw(st.sampled_from([None, 9]), label="storage seed"))) if v is not None}
    groups, overrides, gdtypes = [], [], []
    for gi in range(ngroups):
        size = data.draw(st.integers(1, 2), label=f"group{gi} size")
        # (bfloat16 only: float16 params keep float16 state, see GROUP_STATE_DTYPES)
        dtype = data.draw(st.sampled_from([np.float32] * 3 + ([BF16] if cls.compact_params and
                                                              BF16 is not None else [])),
                          label=f"group{gi} dtype")
        plist = [np.linspace(-1, 1, 3 + k + gi).astype(dtype).reshape(
            optim_db.param_shape(name, 3 + k + gi)) for k in range(size)]
        over = {}
        for key in data.draw(st.lists(st.sampled_from(keys), max_size=2, unique=True),
                             label=f"group{gi} keys"):
            default = cls.hyper[key].default(conv)
            over[key] = data.draw(st.sampled_from([default, 0.5 * default] + WILD[:4]),
                                  label=f"group{gi} {key}")
        gdtype = data.draw(st.sampled_from([None] * 4 + list(GROUP_STATE_DTYPES)),
                           label=f"group{gi} state_dtype")
        groups.append(dict(over, params=plist, **({} if gdtype is None
                                                   else {"state_dtype": gdtype})))
        overrides.append(over)
        gdtypes.append(gdtype)
    bad = [k for over in overrides for k, v in over.items() if not value_ok(cls.hyper[k], v)]
    # the storage rules: a name among the state dtypes, and compact state only
    # where the class and the group's values keep state that may be compact
    effective = [gd if gd is not None else storage.get("state_dtype") for gd in gdtypes]
    bad_storage = [sd for sd in gdtypes + [storage.get("state_dtype")]
                   if sd is not None and sd not in STORAGE_NAMES]
    bad_storage += [sd for gi, sd in enumerate(effective) if sd in COMPACT_STATE_DTYPES
                    and (not cls.compact_state or not _keeps_state(name, cls, conv,
                                                                   overrides[gi]))]
    TALLY["inputs_tried"] += 1
    try:
        opt = cls(groups, convention=conv, **storage)
    except CLEAN_ERRORS as err:
        # a value out of its declared range, or one a class rule refuses (Adafactor's
        # epsilon_1 >= 0 but for torch's -1): the message names one of those drawn;
        # the storage rules are all foreseen here
        drawn = bad + [k for over in overrides for k in over if k not in bad]
        if bad_storage:
            drawn.append("state_dtype")
        else:
            assert "state_dtype" not in str(err), f"{name}/{conv} {storage} {gdtypes}: {err}"
        _refused_with(err, drawn, f"{name}/{conv} groups {overrides} {storage} {gdtypes}")
        TALLY["failures_survived"] += 1
        return
    assert not bad, f"{name}/{conv}: accepted {bad} in {overrides}"
    assert not bad_storage, f"{name}/{conv}: accepted {storage} {gdtypes} ({bad_storage})"
    # what each group's values are now, by this test's account
    lr_default = cls.hyper["learning_rate"].default(conv)
    current = [{k: _Current(over.get(k, cls.hyper[k].default(conv))) for k in keys}
               for over in overrides]
    firsts = np.cumsum([0] + [len(g["params"]) for g in groups])
    TALLY["compact_group_optimizers_built"] += any(
        sd in COMPACT_STATE_DTYPES for sd in effective) or any(_half(p.dtype) for p in opt.params)
    twins = [cls([p.copy() for g in groups[:gi + 1] for p in g["params"]], convention=conv,
                 **dict(storage, state_dtype=effective[gi]), **current[gi])
             for gi, g in enumerate(groups)]
    built = [set(_layout(name, conv, current[gi])) for gi in range(ngroups)]
    params = opt.params
    rng = np.random.default_rng(data.draw(st.integers(0, 1000), label="seed"))
    edits = 0
    for s in range(4):
        lr = data.draw(st.sampled_from([None, 0.001, 0.0, 0.05, -1.0, float("nan")]), label=f"lr{s}")
        if lr is not None:
            snap = snapshot(opt)
            TALLY["inputs_tried"] += 1
            try:
                opt.learning_rate = lr
            except CLEAN_ERRORS as err:
                assert not value_ok(cls.hyper["learning_rate"], lr), f"lr={lr} refused: {err}"
                _refused_with(err, ["learning_rate"], f"{name} lr={lr}")
                assert_unchanged(snap, opt, [], f"{name} lr={lr}")
                TALLY["failures_survived"] += 1
            else:
                assert value_ok(cls.hyper["learning_rate"], lr), f"lr={lr} accepted"
                lr_default = lr
                for gi, over in enumerate(overrides):
                    if "learning_rate" not in over:
                        current[gi]["learning_rate"].value = lr
                edits += 1
        edit = data.draw(st.sampled_from([None, None] + keys), label=f"edit{s}")
        pending_bad = None
        if edit is not None:
            gi = data.draw(st.integers(0, ngroups - 1), label=f"edit{s} group")
            default = cls.hyper[edit].default(conv)
            value = data.draw(st.sampled_from([0.5 * default, 0.9 * default] + WILD[:4]),
                              label=f"edit{s} value")
            invalid = not value_ok(cls.hyper[edit], value)
            # the state arrays are made at construction: an edit may stop using
            # some, one that needs an array the group does not keep is refused
            relayout = (not invalid and bool(set(_layout(name, conv, current[gi], edit, value))
                                             - built[gi]))
            snap = snapshot(opt)
            TALLY["inputs_tried"] += 1
            try:
                opt.param_groups[gi][edit] = value      # checked when assigned
            except CLEAN_ERRORS as err:
                if not (invalid or relayout):
                    # a rule of the class beyond the declared range (torch Adafactor's
                    # d >= 1): it names the value, as any refusal must
                    TALLY["refused_across_values"] += 1
                _refused_with(err, [f"param group {gi}: {edit}"], f"{name} edit {edit}={value}")
                assert_unchanged(snap, opt, [], f"{name} edit {edit}={value}")
                TALLY["failures_survived"] += 1
            else:
                assert not invalid and not relayout, f"{name}/{conv}: {edit}={value} accepted"
                current[gi][edit].value = value
                overrides[gi][edit] = value     # the group's own now: setters leave it
                edits += 1
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        snap = snapshot(opt)
        TALLY["inputs_tried"] += 1
        try:
            opt.step(grads)
        except CLEAN_ERRORS as err:
            assert pending_bad is not None, f"{name}/{conv} step {s}: valid step refused: {err}"
            _refused_with(err, [pending_bad[3]], f"{name} step {s}")
            assert_unchanged(snap, opt, [], f"{name} step {s}")
            TALLY["failures_survived"] += 1
            gi, key, old, _ = pending_bad
            opt.param_groups[gi][key] = old          # the user puts it right
            opt.step(grads)
        else:
            assert pending_bad is None, f"{name}/{conv} step {s}: accepted {pending_bad}"
        for twin in twins:
            twin.step(grads[:len(twin.params)])
        theirs = [p for gi, t in enumerate(twins) for p in t.params[firsts[gi]:]]
        for i, (p, q) in enumerate(zip(params, theirs)):
            assert p.tobytes() == q.tobytes() or _nonfinite_alike(p, q), (
                f"{name}/{conv} step {s}: params[{i}] differs from the per-group twins")
        TALLY["updates_verified"] += 1
    TALLY["group_edits_verified"] += edits


# ---- mutations between steps ----------------------------------------------------------
# What users do to a built optimizer: reallocate, retype or freeze its arrays,
# edit param groups through any dict method, set options, pass grads in odd
# containers, fork.  Every step after a mutation either applies or is refused
# with a clean error and nothing changed; nothing crashes (the ASan job runs
# this too).

class _ConvertingList(list):
    """Grads whose items are made anew on every indexing."""

    def __getitem__(self, i):
        item = list.__getitem__(self, i)
        return None if item is None else np.array(item)


OPTION_VALUES = {
    "maximize": [True, False],
    "clipvalue": [None, 0.5, -1.0, float("nan")],
    "clipnorm": [None, 0.5, 0.0],
    "global_clipnorm": [None, 1.0, float("inf")],
    "skip_nonfinite": [True, False, "yes"],
    "decoupled_weight_decay": [True, False],
    "num_threads": [None, 1, 2, 1000, 0, 2**40],
    "ema_momentum": [0.5, 1.5],
    "ema_overwrite_frequency": [None, 1, 0],
    "use_ema": [True],
    "gradient_accumulation_steps": [2],
}


def _mutate(data, opt, s):
    """Apply one drawn mutation; returns its label."""
    params = opt.params
    what = data.draw(st.sampled_from(
        ["none"] * 4 + ["param readonly", "param writeable", "param resize", "param setstate",
                        "param dtype", "state readonly", "state resize", "group set",
                        "group ior", "group del", "group popitem", "group clear",
                        "group params", "option", "fork", "mode"]), label=f"step{s} mutation")
    i = data.draw(st.integers(0, len(params) - 1), label=f"step{s} index")
    p = params[i]
    try:
        if what == "param readonly":
            p.flags.writeable = False
        elif what == "param writeable":
            p.flags.writeable = True
        elif what == "param resize":
            p.resize(p.size + 3, refcheck=False)
        elif what == "param setstate":
            p.__setstate__((1, p.shape, p.dtype, False, bytes(p.nbytes)))
        elif what == "param dtype":
            p.dtype = np.int32 if p.dtype == np.float32 else np.int64
        elif what in ("state readonly", "state resize") and opt.state_arrays()[i]:
            a = opt.state_arrays()[i][0]
            if what == "state readonly":
                a.flags.writeable = False
            else:
                a.resize(a.size + 5, refcheck=False)
        elif what.startswith("group"):
            group = opt.param_groups[0]
            keys = [k for k in group if k != "params"] or ["learning_rate"]
            key = data.draw(st.sampled_from(keys), label=f"step{s} key")
            value = data.draw(st.sampled_from([True, False, 0.0, 0.9, 0.5, -1.0, float("nan")]),
                              label=f"step{s} value")
            if what == "group set":
                group[key] = value
            elif what == "group ior":
                group |= {key: value}
            elif what == "group del":
                del group[key]
            elif what == "group popitem":
                group.popitem()
            elif what == "group clear":
                group.clear()
            else:
                group["params"] = list(group.get("params", ()))[::-1] + [np.zeros(2)]
        elif what == "mode":
            # the methods that rewrite the params from the state (schedule-free's
            # eval/train, swap_averages, ASGD's averaged params), called in any order:
            # a step they make invalid is refused and changes nothing
            methods = [m for m in type(opt).param_methods if hasattr(opt, m)]
            if methods:
                getattr(opt, data.draw(st.sampled_from(methods), label=f"step{s} method"))()
        elif what == "option":
            key = data.draw(st.sampled_from(sorted(OPTION_VALUES)), label=f"step{s} option")
            value = data.draw(st.sampled_from(OPTION_VALUES[key]), label=f"step{s} {key}")
            setattr(opt, key, value)
    except (TypeError, ValueError, AttributeError, KeyError):
        TALLY["failures_survived"] += 1    # numpy, dict or fastopt refused the mutation itself
    return what


@FUZZ
@given(data=st.data())
def test_fuzz_mutations_between_steps(data):
    name, cls, conv = draw_optimizer(data)
    kw = {k: True for k in bool_hyper(cls, conv) if data.draw(st.booleans(), label=k)}
    stateful = stateful_kwargs(cls, conv)
    if stateful and data.draw(st.booleans(), label="momentum"):
        kw.update(stateful)
    if data.draw(st.booleans(), label="ema"):
        kw["use_ema"] = True
    sizes = data.draw(st.lists(st.sampled_from([1, 7, 40000]), min_size=1, max_size=3),
                      label="sizes")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    params = [np.linspace(-1, 1, n).astype(dtype) for n in sizes]
    try:
        opt = cls(params, convention=conv, learning_rate=1e-3, **kw)
    except CLEAN_ERRORS:      # e.g. torch's nesterov without momentum
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    for s in range(data.draw(st.integers(1, 5), label="steps")):
        what = _mutate(data, opt, s)
        grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
        if data.draw(st.booleans(), label=f"step{s} converting list"):
            grads = _ConvertingList(grads)
        TALLY["inputs_tried"] += 1
        if what == "fork" and hasattr(os, "fork"):
            pid = os.fork()
            if pid == 0:   # the child may step (or refuse) but must not crash or hang
                code = 0
                try:
                    import signal
                    signal.alarm(20)
                    opt.step(grads)
                except CLEAN_ERRORS:
                    pass
                except BaseException:
                    code = 3
                os._exit(code)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "child failed"
        snap = snapshot(opt)
        try:
            opt.step(grads)
        except CLEAN_ERRORS:
            assert_unchanged(snap, opt, [], f"{name}/{conv} after {what}")
            TALLY["failures_survived"] += 1
            continue
        TALLY["updates_verified"] += 1
