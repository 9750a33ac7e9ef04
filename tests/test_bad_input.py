"""DESIGN.md §3: what bad input gets, for every registered optimizer.

Each case asserts the exception type, that the message names the offending
index (or hyper-parameter) and the fix, and that every parameter and all
optimizer state are bit-for-bit unchanged afterwards.  After each refusal the
optimizer takes a good step and must land exactly where a twin that never saw
the bad input lands: a refusal leaves nothing half-done behind.
"""
import math
import re

import numpy as np
import pytest

import fastopt as fo
from fastopt.optimizers import REGISTRY

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:         # the optional bf16 extra: its storage rows are skipped
    BF16 = None

import optim_db
from robust_util import (NAMES, TALLY, accepts, assert_same_optimizer, assert_unchanged,
                         bool_hyper, build, conventions, default_convention, float_hyper,
                         rng_grads, snapshot)

# ---- the problem every grad case runs on -----------------------------------------
# Three params of mixed dtypes, two of them views into one float32 buffer (flat
# parameter buffers are a legitimate use), so overlap cases have neighbours.

SHAPES = [(3, 4), (5,), (2, 3)]

# ---- the storage axis: compact state, 16-bit params -----------------------------------
# One table drives it: the dtype of params[0] and params[2] (the views of one
# buffer) and the storage options the optimizer is built with.  params[1] stays
# float64, in a param group of its own with full-precision state (compact state
# is for float32 and 16-bit params), so every case runs beside a group whose
# state_dtype differs.  tiny params need min_8bit_size=0 to get int8 blocks.
STORAGES = {
    "int8-state": (np.float32, dict(state_dtype="int8", min_8bit_size=0)),
    "bf16-state": (np.float32, dict(state_dtype="bfloat16")),
    "bf16-master": (BF16, dict(master_weights=True, state_dtype="int8", min_8bit_size=0)),
    # no state_dtype: the state is bfloat16 like the params
    "bf16-stochastic": (BF16, dict(rounding="stochastic", seed=7)),
}


def _half(dtype):
    return dtype == np.float16 or dtype.name == "bfloat16"


def takes_storage(cls, storage):
    """The optimizer class declares compact state, and 16-bit params if the
    storage has them."""
    dtype = STORAGES[storage][0]
    return bool(cls.compact_state) and (dtype == np.float32 or cls.compact_params)


def _battery_axis(names=NAMES, storages=tuple(STORAGES)):
    """``(name, storage)`` for each optimizer as it is (ids unchanged) and in
    each storage of ``storages`` it takes."""
    out = [pytest.param(name, None, id=name) for name in names]
    for storage in storages:
        dtype, options = STORAGES[storage]
        skip = pytest.mark.skipif(BF16 is None and (dtype is None or options.get(
            "state_dtype") == "bfloat16"), reason="bfloat16 needs ml_dtypes")
        out += [pytest.param(name, storage, id=f"{name}-{storage}", marks=skip)
                for name in names if takes_storage(REGISTRY[name], storage)]
    return out


BATTERY = _battery_axis()


class _StoredParams(list):
    """The battery's params in a storage row: good steps there mix grad widths
    (a bfloat16 grad for a float32 param, a float32 grad for a 16-bit one)."""
    storage = None


def make_params(name=None, storage=None):
    """Two float32 views of one buffer and a float64 param of 5 elements (1-D,
    or the shape optimizer ``name`` takes: optim_db.param_shape); in a storage
    row, the views are of the storage's dtype."""
    buf32 = np.arange(40, dtype=np.float32) / 40 - 0.5
    buf64 = np.linspace(-1.0, 1.0, 5).reshape(optim_db.param_shape(name, 5))
    if storage is not None:
        buf32 = buf32.astype(STORAGES[storage][0])
    params = [buf32[0:12].reshape(3, 4), buf64, buf32[16:22].reshape(2, 3)]
    if storage is not None:
        params = _StoredParams(params)
        params.storage = storage
    return params, buf32


def build_stored(name, params, storage, **kwargs):
    """``build`` with the storage's options, params[1] in a group of its own
    with float32 (full-precision) state."""
    if storage is None:
        return build(name, params, **kwargs)
    groups = [{"params": [params[0]]}, {"params": [params[1]], "state_dtype": "float32"},
              {"params": [params[2]]}]
    return build(name, groups, **STORAGES[storage][1], **kwargs)


def _shape(name, n):
    """A param of ``n`` elements in the shape optimizer ``name`` takes (1-D for
    most; optim_db.param_shape)."""
    return optim_db.param_shape(name, n)


def good_grads(rng, params):
    grads = rng_grads(rng, params)
    if getattr(params, "storage", None) is not None:
        # the widths a compact tensor takes besides its own: the bad grads of
        # params[0] are then made from a bfloat16 one
        if params[0].dtype == np.float32 and BF16 is not None:
            grads[0] = grads[0].astype(BF16)
        if _half(params[2].dtype):
            grads[2] = (rng.standard_normal(params[2].shape) * 0.3).astype(np.float32)
    return grads


def _misaligned(shape, dtype):
    n = int(np.prod(shape))
    raw = np.zeros(n * np.dtype(dtype).itemsize + 1, dtype=np.uint8)
    a = raw[1:].view(dtype).reshape(shape)
    assert not a.flags.aligned
    return a


def _transposed(g):
    """A transposed view with g's shape and values (a column of a 2-D array for 1-D g)."""
    if g.ndim > 1:
        t = np.ascontiguousarray(g.T).T
    else:
        t = np.stack([g, g], axis=1)[:, 0]
    assert t.shape == g.shape and not t.flags.c_contiguous
    return t


def _fortran(g):
    """A Fortran-ordered array with g's shape and values (a row of one for 1-D g)."""
    f = np.asfortranarray(g) if g.ndim > 1 else np.asfortranarray(np.stack([g, g]))[0]
    assert f.shape == g.shape and not f.flags.c_contiguous
    return f


def _swapped(g):
    return g.astype(g.dtype.newbyteorder())


# Each grad case: (id, function(grads, params, buf32, opt, i) -> grads, exception,
# [regexes the message must contain]).  ``i`` is the index made bad.
def _replace(i, value):
    def f(grads, params, buf, opt):
        grads = list(grads)
        grads[i] = value(grads[i], params[i], buf, opt) if callable(value) else value
        return grads
    return f


def _compact_state(o, owner):
    """The last state array of params[owner] stored compactly (int8 blocks or
    16-bit floats)."""
    return [a for a in o.state_arrays()[owner] if a.dtype not in (np.float32, np.float64)][-1]


def _in_memory_of(a, p):
    """A grad of ``p``'s shape, of a dtype ``p`` takes, laid over the first
    bytes of ``a`` (an int8 block array has no dtype a grad may have)."""
    for dt in (p.dtype, np.dtype(np.float32), BF16 or np.dtype(np.float16)):
        n = p.size * dt.itemsize
        if n <= a.nbytes:
            return a.view(np.uint8).reshape(-1)[:n].view(dt).reshape(p.shape)
    raise AssertionError(f"{a.nbytes} bytes hold no grad of shape {p.shape}")


def grad_cases(i, storage=None):
    idx = rf"grads\[{i}\]"
    dt_fix = r"astype"
    cases = [
        ("list", _replace(i, lambda g, p, b, o: g.tolist()), TypeError, [idx, r"np\.asarray", "got"]),
        ("tuple", _replace(i, lambda g, p, b, o: tuple(g.ravel().tolist())), TypeError,
         [idx, r"np\.asarray"]),
        ("python-float", _replace(i, 1.0), TypeError, [idx, r"np\.asarray"]),
        ("numpy-scalar", _replace(i, lambda g, p, b, o: p.dtype.type(1)), TypeError,
         [idx, r"np\.asarray"]),
        ("string", _replace(i, "grad"), TypeError, [idx, r"np\.asarray"]),
        # float32 params take native float16 and bfloat16 grads, 16-bit params float32
        # and their own dtype (so bfloat16 ones not float16: tests/test_compact.py)
        ("float16", _replace(i, lambda g, p, b, o: g.astype(
            ">f2" if p.dtype in (np.float32, np.float16) else np.float16)), TypeError,
         [idx, "float16|f2", dt_fix]),
        ("int32", _replace(i, lambda g, p, b, o: g.astype(np.int32)), TypeError, [idx, dt_fix]),
        ("int64", _replace(i, lambda g, p, b, o: g.astype(np.int64)), TypeError, [idx, dt_fix]),
        ("bool", _replace(i, lambda g, p, b, o: g > 0), TypeError, [idx, dt_fix]),
        ("complex", _replace(i, lambda g, p, b, o: g.astype(np.complex128)), TypeError,
         [idx, "complex", dt_fix]),
        ("object", _replace(i, lambda g, p, b, o: g.astype(object)), TypeError, [idx, dt_fix]),
        ("other-float", _replace(i, lambda g, p, b, o: g.astype(
            np.float32 if p.dtype == np.float64 else np.float64)), TypeError, [idx, dt_fix]),
        ("byte-swapped", _replace(i, lambda g, p, b, o: _swapped(g)), TypeError, [idx, dt_fix]),
        ("extra-element", _replace(i, lambda g, p, b, o: np.zeros(p.size + 1, p.dtype)),
         ValueError, [idx, r"expected shape", r"order of the parameters"]),
        ("flattened", _replace(i, lambda g, p, b, o: np.zeros(p.size, p.dtype) if p.ndim > 1
                               else np.zeros((1, p.size), p.dtype)),
         ValueError, [idx, r"expected shape", r"order of the parameters"]),
        ("0-d", _replace(i, lambda g, p, b, o: np.array(1.0, dtype=p.dtype)), ValueError,
         [idx, r"expected shape"]),
        ("empty", _replace(i, lambda g, p, b, o: np.zeros((0,), p.dtype)), ValueError,
         [idx, r"expected shape"]),
        ("sliced", _replace(i, lambda g, p, b, o: np.repeat(g[..., None], 2, -1)[..., 0]),
         ValueError, [idx, "C-contiguous", r"ascontiguousarray"]),
        ("transposed", _replace(i, lambda g, p, b, o: _transposed(g)),
         ValueError, [idx, "C-contiguous", r"ascontiguousarray"]),
        ("fortran", _replace(i, lambda g, p, b, o: _fortran(g)),
         ValueError, [idx, "C-contiguous", r"ascontiguousarray"]),
        ("misaligned", _replace(i, lambda g, p, b, o: _misaligned(p.shape, p.dtype)),
         ValueError, [idx, "aligned", r"copy\(\)"]),
        ("is-the-param", _replace(i, lambda g, p, b, o: p), ValueError,
         [idx, rf"params\[{i}\]", "separate gradient array"]),
        ("view-of-the-param", _replace(i, lambda g, p, b, o: p.reshape(p.shape)), ValueError,
         [idx, "shares memory", "separate gradient array"]),
        # (a state array of the param's shape; factored state has none: the param)
        ("is-optimizer-state", _replace(i, lambda g, p, b, o: next(
            (a for a in reversed(o.state_arrays()[i]) if a.shape == p.shape), p)), ValueError,
         [idx, "shares memory", "separate gradient array"]),
    ]
    if i == 2:   # params[2] lives in buf32[16:22]: overlap its head and a gap
        cases += [
            ("overlaps-param", _replace(i, lambda g, p, b, o: b[13:19].reshape(2, 3)),
             ValueError, [idx, r"params\[2\]", "separate gradient array"]),
            ("is-another-param", _replace(i, lambda g, p, b, o: b[0:6].reshape(2, 3)),
             ValueError, [idx, r"params\[0\]", "separate gradient array"]),
        ]
    if storage is not None:
        # the arrays a compact tensor adds: a grad in their memory would be
        # overwritten while it is read, in a dtype the param takes
        alias = [idx, "shares memory", "separate gradient array"]
        cases.append(("in-compact-state", _replace(
            i, lambda g, p, b, o: _in_memory_of(_compact_state(o, i), p)), ValueError, alias))
        if i == 2:
            cases.append(("in-compact-state-of-another-param", _replace(
                i, lambda g, p, b, o: _in_memory_of(_compact_state(o, 0), p)), ValueError,
                [idx, r"params\[0\]", "separate gradient array"]))
        if STORAGES[storage][1].get("master_weights"):
            cases.append(("is-the-master-param", _replace(
                i, lambda g, p, b, o: o.master_params[i]), ValueError, alias))
            if i == 2:
                cases.append(("in-another-master-param", _replace(
                    i, lambda g, p, b, o: _in_memory_of(o.master_params[0], p)), ValueError,
                    [idx, r"params\[0\]", "separate gradient array"]))
    return cases


LIST_CASES = [
    ("too-few", lambda grads: grads[:-1], ValueError, [r"expected 3 grads", "got 2",
                                                      "one per parameter"]),
    ("too-many", lambda grads: grads + [grads[0].copy()], ValueError,
     [r"expected 3 grads", "got 4", "one per parameter"]),
    ("empty-list", lambda grads: [], ValueError, [r"expected 3 grads", "got 0"]),
    ("bare-ndarray", lambda grads: grads[1], TypeError, [r"grads", r"step\(\[g\]\)"]),
    ("none", lambda grads: None, TypeError, [r"grads", "NoneType", "list"]),
    ("int", lambda grads: 3, TypeError, [r"grads", "list"]),
    ("dict", lambda grads: {0: grads[0]}, ValueError, [r"expected 3 grads"]),
]


def _check_message(exc, patterns, what):
    import re
    msg = str(exc.value)
    for pat in patterns:
        assert re.search(pat, msg), f"{what}: message {msg!r} lacks {pat!r}"


def _battery_opt(name, rng, storage=None):
    params, buf = make_params(name, storage)
    opt = build_stored(name, params, storage)
    twin_params = [p.copy() for p in params]
    twin = build_stored(name, twin_params, storage)
    # a couple of good steps first so state is non-trivial
    for _ in range(2):
        g = good_grads(rng, params)
        opt.step(g)
        twin.step([x.copy() for x in g])
    return opt, twin, params, buf


def _refused(opt, twin, params, buf, call, exc_type, patterns, what, rng):
    before = snapshot(opt, [buf])
    with pytest.raises(exc_type) as exc:
        call()
    _check_message(exc, patterns, what)
    assert_unchanged(before, opt, [buf], what)
    TALLY["inputs_tried"] += 1
    TALLY["failures_survived"] += 1
    # the refusal left nothing half-done: the next good step matches the twin's
    g = good_grads(rng, params)
    opt.step(g)
    twin.step([x.copy() for x in g])
    assert_same_optimizer(opt, twin, what)


@pytest.mark.parametrize("name,storage", BATTERY)
@pytest.mark.parametrize("bad_index", [0, 2])
def test_bad_grads_refused_and_nothing_changes(name, storage, bad_index):
    rng = np.random.default_rng(11)
    opt, twin, params, buf = _battery_opt(name, rng, storage)
    for case_id, make_bad, exc_type, patterns in grad_cases(bad_index, storage):
        grads = make_bad(good_grads(rng, params), params, buf, opt)
        what = f"{name} {storage or ''} grads[{bad_index}] {case_id}"
        _refused(opt, twin, params, buf, lambda: opt.step(grads), exc_type, patterns, what, rng)
        # the same through the Keras-style entry point
        pairs = list(zip(grads, params))
        _refused(opt, twin, params, buf, lambda: opt.apply_gradients(pairs), exc_type,
                 patterns, what + " (apply_gradients)", rng)


def _rows(p, idx=None, dtype=np.int64):
    """A good RowGrad for the 2-D param p: its rows 1, 0, 1 (a repeat)."""
    idx = np.array([1, 0, 1] if idx is None else idx, dtype=dtype)
    return fo.RowGrad(idx, np.full((len(idx), p.shape[1]), 0.25, dtype=p.dtype))


def _bad_rows(i, indices=None, values=None):
    """A RowGrad for params[i] with its indices or values replaced."""
    def f(grads, params, buf, opt):
        grads = list(grads)
        good = _rows(params[i])
        idx = indices(good.indices, params[i]) if indices else good.indices
        vals = values(good.values, params[i], opt) if values else good.values
        grads[i] = fo.RowGrad(idx, vals)
        return grads
    return f


def rowgrad_cases(i):
    """RowGrads for the 2-D params[i] (rows 3 or 2), each wrong in one way."""
    at = rf"grads\[{i}\]"
    rows = SHAPES[i][0]
    cases = [
        ("indices-out-of-range", _bad_rows(i, lambda x, p: np.array([0, rows, 1])), ValueError,
         [at + r"\.indices\[1\] is " + str(rows), rf"\[0, {rows}\)"]),
        ("indices-negative", _bad_rows(i, lambda x, p: np.array([0, 1, -1])), ValueError,
         [at + r"\.indices\[2\] is -1", "negative"]),
        ("indices-float", _bad_rows(i, lambda x, p: x.astype(np.float64)), TypeError,
         [at + r"\.indices", "int32 or int64", "astype"]),
        ("indices-uint32", _bad_rows(i, lambda x, p: x.astype(np.uint32)), TypeError,
         [at + r"\.indices", "int32 or int64"]),
        ("indices-int16", _bad_rows(i, lambda x, p: x.astype(np.int16)), TypeError,
         [at + r"\.indices", "int32 or int64"]),
        ("indices-byte-swapped", _bad_rows(i, lambda x, p: _swapped(x)), TypeError,
         [at + r"\.indices", "native byte order"]),
        ("indices-list", _bad_rows(i, lambda x, p: x.tolist()), TypeError,
         [at + r"\.indices", r"np\.asarray"]),
        ("indices-2-d", _bad_rows(i, lambda x, p: x.reshape(3, 1)), ValueError,
         [at + r"\.indices", "1-D"]),
        ("indices-strided", _bad_rows(i, lambda x, p: np.repeat(x, 2)[::2]), ValueError,
         [at + r"\.indices", "contiguous", "ascontiguousarray"]),
        ("values-other-float", _bad_rows(i, values=lambda v, p, o: v.astype(
            np.float64 if p.dtype == np.float32 else np.float32)), TypeError,
         [at + r"\.values", "astype"]),
        ("values-int32", _bad_rows(i, values=lambda v, p, o: v.astype(np.int32)), TypeError,
         [at + r"\.values", "astype"]),
        ("values-list", _bad_rows(i, values=lambda v, p, o: v.tolist()), TypeError,
         [at + r"\.values", r"np\.asarray"]),
        ("values-wrong-width", _bad_rows(i, values=lambda v, p, o: np.zeros(
            (3, p.shape[1] + 1), p.dtype)), ValueError, [at + r"\.values", "expected shape"]),
        ("values-wrong-count", _bad_rows(i, values=lambda v, p, o: v[:2].copy()), ValueError,
         [at + r"\.values", "expected shape", r"\(3, "]),
        ("values-1-d", _bad_rows(i, values=lambda v, p, o: v.ravel()), ValueError,
         [at + r"\.values", "expected shape"]),
        ("values-transposed", _bad_rows(i, values=lambda v, p, o: _transposed(v)), ValueError,
         [at + r"\.values", "C-contiguous", "ascontiguousarray"]),
        ("values-sliced", _bad_rows(i, values=lambda v, p, o: np.repeat(v, 2, 1)[:, ::2]),
         ValueError, [at + r"\.values", "C-contiguous", "ascontiguousarray"]),
        ("values-misaligned", _bad_rows(i, values=lambda v, p, o: _misaligned(v.shape, v.dtype)),
         ValueError, [at + r"\.values", "aligned", r"copy\(\)"]),
        ("values-view-of-the-param", _bad_rows(i, lambda x, p: np.arange(rows),
                                               lambda v, p, o: p.reshape(p.shape)),
         ValueError, [at + r"\.values", "shares memory", "separate gradient array"]),
        ("values-is-optimizer-state", _bad_rows(
            i, lambda x, p: np.arange(rows),
            lambda v, p, o: o.state_arrays()[i][-1] if o.state_arrays()[i] else p),
         ValueError, [at + r"\.values", "shares memory"]),
        ("values-masked", _bad_rows(i, values=lambda v, p, o: np.ma.masked_array(v)), TypeError,
         [at + r"\.values", "masked"]),
    ]
    if i == 2:   # a good RowGrad for params[0] first: its coalescing must leave no trace
        cases.append(("out-of-range-after-a-good-rowgrad", lambda grads, params, buf, opt: [
            _rows(params[0]), grads[1], _rows(params[2], [0, 5])], ValueError,
            [at + r"\.indices\[1\] is 5"]))
    return cases


@pytest.mark.parametrize("name,storage", BATTERY)
@pytest.mark.parametrize("bad_index", [0, 2])
def test_bad_rowgrads_refused_and_nothing_changes(name, storage, bad_index):
    rng = np.random.default_rng(12)
    opt, twin, params, buf = _battery_opt(name, rng, storage)
    if storage is not None:
        # a compact tensor is updated in whole blocks, so it has no row update
        grads = good_grads(rng, params)
        grads[bad_index] = _rows(params[bad_index])
        _refused(opt, twin, params, buf, lambda: opt.step(grads), ValueError,
                 [rf"grads\[{bad_index}\]: a RowGrad", rf"params\[{bad_index}\] has compact "
                  "storage", "dense gradient"], f"{name} {storage} RowGrad", rng)
        return
    if not REGISTRY[name].elementwise:
        grads = [_rows(params[0]), None, None]
        _refused(opt, twin, params, buf, lambda: opt.step(grads), ValueError,
                 [r"grads\[0\]: a RowGrad", "reads the whole tensor", "dense gradient"],
                 f"{name} RowGrad", rng)
        return
    # a good RowGrad step lands where the twin's does
    grads = [_rows(params[0]), good_grads(rng, params)[1], _rows(params[2], [1, 1], np.int32)]
    opt.step(grads)
    twin.step(grads)
    assert_same_optimizer(opt, twin, f"{name} good RowGrad")
    for case_id, make_bad, exc_type, patterns in rowgrad_cases(bad_index):
        grads = make_bad(good_grads(rng, params), params, buf, opt)
        what = f"{name} grads[{bad_index}] {case_id}"
        _refused(opt, twin, params, buf, lambda: opt.step(grads), exc_type, patterns, what, rng)
    # a RowGrad for the 1-D params[1]
    grads = good_grads(rng, params)
    grads[1] = fo.RowGrad(np.array([0]), np.ones((1, 5)))
    _refused(opt, twin, params, buf, lambda: opt.step(grads), ValueError,
             [r"grads\[1\]: a RowGrad updates rows of a 2-D parameter", r"\(5,\)"],
             f"{name} RowGrad of a 1-D param", rng)


@pytest.mark.parametrize("name,storage", BATTERY)
def test_bad_grad_lists_refused_and_nothing_changes(name, storage):
    rng = np.random.default_rng(12)
    opt, twin, params, buf = _battery_opt(name, rng, storage)
    for case_id, make_bad, exc_type, patterns in LIST_CASES:
        grads = make_bad(good_grads(rng, params))
        _refused(opt, twin, params, buf, lambda: opt.step(grads), exc_type, patterns,
                 f"{name} {case_id}", rng)


@pytest.mark.parametrize("name,storage", BATTERY)
def test_apply_gradients_pairing_errors(name, storage):
    rng = np.random.default_rng(13)
    opt, twin, params, buf = _battery_opt(name, rng, storage)
    g = good_grads(rng, params)
    stranger = np.zeros_like(params[1])
    cases = [
        ("unknown-param", [(g[0], params[0]), (g[1], stranger)], ValueError,
         [r"pair 1", "same array objects"]),
        ("copy-of-param", [(g[0], params[0].copy())], ValueError, [r"pair 0", "same array"]),
        ("param-twice", [(g[0], params[0]), (g[0].copy(), params[0])], ValueError,
         [r"params\[0\] appears twice"]),
        ("not-a-pair", [(g[0], params[0], None)], TypeError, [r"item 0", r"\(grad, param\)"]),
    ]
    for case_id, pairs, exc_type, patterns in cases:
        _refused(opt, twin, params, buf, lambda: opt.apply_gradients(pairs), exc_type,
                 patterns, f"{name} {case_id}", rng)


@pytest.mark.parametrize("name,storage", BATTERY)
def test_read_only_grads_are_fine(name, storage):
    # a grad is only read: read-only and byte-identical copies are legitimate
    rng = np.random.default_rng(14)
    opt, twin, params, _ = _battery_opt(name, rng, storage)
    g = good_grads(rng, params)
    ro = [x.copy() for x in g]
    for x in ro:
        x.flags.writeable = False
    opt.step(ro)
    twin.step(g)
    assert_same_optimizer(opt, twin)
    TALLY["inputs_tried"] += 1


# ---- bad parameters (construction) ------------------------------------------------

def _ro(a):
    a.flags.writeable = False
    return a


def param_cases(name=None):
    """Each case's good params are in the shape optimizer ``name`` takes."""
    def ones(n, dtype=np.float64):
        return np.ones(_shape(name, n), dtype)
    base = np.ones((3, 4))
    buf = np.zeros(20).reshape(_shape(name, 20))
    same = ones(4)
    return [
        ("list", [[1.0, 2.0]], TypeError, [r"params\[0\]", "ndarray", "got"]),
        ("python-float", [ones(2), 1.5], TypeError, [r"params\[1\]", "ndarray"]),
        # optimizers with compact storage take native float16 params (tests/test_compact.py)
        ("float16", [ones(3, ">f2" if name and REGISTRY[name].compact_params else np.float16)],
         TypeError, [r"params\[0\]", "float16", "astype"]),
        ("int", [ones(3, np.int64)], TypeError, [r"params\[0\]", "astype"]),
        ("complex", [ones(3, np.complex128)], TypeError, [r"params\[0\]", "astype"]),
        ("object", [ones(3, object)], TypeError, [r"params\[0\]", "astype"]),
        ("bool", [ones(3, bool)], TypeError, [r"params\[0\]", "astype"]),
        ("byte-swapped", [ones(2), ones(3, ">f8" if np.little_endian else "<f8")],
         TypeError, [r"params\[1\]", "byte order", "astype"]),
        ("sliced", [np.ones(10)[::2]], ValueError, [r"params\[0\]", "C-contiguous",
                                                    "ascontiguousarray"]),
        ("transposed", [base.T], ValueError, [r"params\[0\]", "ascontiguousarray"]),
        ("fortran", [np.asfortranarray(base)], ValueError, [r"params\[0\]",
                                                            "ascontiguousarray"]),
        ("read-only", [ones(2), _ro(ones(3))], ValueError,
         [r"params\[1\]", "read-only", "writeable"]),
        ("misaligned", [_misaligned((4,), np.float64)], ValueError,
         [r"params\[0\]", "aligned", "copy"]),
        ("same-twice", [same, ones(2), same], ValueError,
         [r"params\[0\] and params\[2\]", "pass each parameter once"]),
        ("overlapping", [buf[0:10], buf[5:15]] if buf.ndim == 1 else [buf[0:3], buf[2:5]],
         ValueError,
         [r"params\[0\] and params\[1\]", "pass each parameter once"]),
        ("single-ndarray", np.ones(3), TypeError, [r"single ndarray", r"\[w\]"]),
        ("mixed-groups", [ones(2), {"params": [ones(2)]}], TypeError, ["not a mix"]),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_bad_params_refused(name):
    cls = REGISTRY[name]
    for conv in conventions(cls):
        for case_id, params, exc_type, patterns in param_cases(name):
            arrays = [p for p in (params if isinstance(params, list) else [params])
                      if isinstance(p, np.ndarray)]
            before = [(a.dtype.str, a.shape, a.tobytes()) for a in arrays]
            with pytest.raises(exc_type) as exc:
                build(name, params, convention=conv)
            _check_message(exc, patterns, f"{name}/{conv} {case_id}")
            assert before == [(a.dtype.str, a.shape, a.tobytes()) for a in arrays]
            TALLY["inputs_tried"] += 1
            TALLY["failures_survived"] += 1


@pytest.mark.parametrize("name", NAMES)
def test_zero_d_and_empty_params_are_allowed(name):
    """0-d params update like 1-element ones; empty params are a no-op that still counts."""
    rng = np.random.default_rng(15)
    for dtype in (np.float32, np.float64):
        # Muon takes matrices: its 0-d and empty params are (1, 1) and (0, 3)
        s0, s1, e1 = _shape(name, ()), _shape(name, 1), _shape(name, 0)
        scalar, empty = np.full(s0, 0.5, dtype), np.zeros(e1, dtype)
        empty2d = np.zeros((0, 3), dtype)
        flat = np.full(s1, 0.5, dtype)
        opt = build(name, [scalar, empty, empty2d])
        ref = build(name, [flat])
        for _ in range(3):
            g = np.array(rng.standard_normal(), dtype)
            opt.step([g.reshape(s0), np.zeros(e1, dtype), np.zeros((0, 3), dtype)])
            ref.step([g.reshape(s1)])
        assert scalar.shape == s0 and scalar.tobytes() == flat.tobytes(), name
        assert opt.iterations == 3
        only_empty = build(name, [np.zeros(e1, dtype)])
        only_empty.step([np.zeros(e1, dtype)])
        assert only_empty.iterations == 1
        nothing = build(name, [{"params": []}])     # an empty group, as torch allows
        nothing.step([])
        assert nothing.iterations == 1
        TALLY["inputs_tried"] += 4


# ---- storage settings (construction) ------------------------------------------------

def storage_setting_cases(name):
    """``(id, params, options, exception, [patterns])``: storage settings that
    optimizer ``name`` refuses, by README "Compact storage" and the class's
    ``compact_state``, ``compact_params`` and ``compact_reason``."""
    cls = REGISTRY[name]
    reason = re.escape(cls.compact_reason or "")

    def ones(dtype=np.float32, n=4):
        return [np.ones(_shape(name, n), dtype)]

    cases = [
        ("state_dtype-unknown", ones(), dict(state_dtype="int4"), ValueError,
         ["state_dtype must be", "'int4'", "'bfloat16'"]),
        ("state_dtype-float64", ones(), dict(state_dtype="float64"), ValueError,
         ["state_dtype must be", "'float64'"]),
        ("state_dtype-a-type", ones(), dict(state_dtype=np.float16), ValueError,
         ["state_dtype must be"]),
        ("group-state_dtype-unknown", [{"params": ones()}, {"params": ones(),
                                                          "state_dtype": "int9"}],
         {}, ValueError, [r"param group 1: state_dtype must be", "'int9'"]),
        ("min_8bit_size-negative", ones(), dict(min_8bit_size=-1), ValueError,
         ["min_8bit_size", "-1"]),
        ("min_8bit_size-float", ones(), dict(min_8bit_size=1.5), ValueError, ["min_8bit_size"]),
        ("min_8bit_size-bool", ones(), dict(min_8bit_size=True), ValueError, ["min_8bit_size"]),
        ("seed-negative", ones(), dict(seed=-1), ValueError, [r"seed must be", r"2\*\*64"]),
        ("seed-too-big", ones(), dict(seed=2 ** 64), ValueError, [r"seed must be"]),
        ("seed-float", ones(), dict(seed=1.5), ValueError, [r"seed must be"]),
        ("seed-bool", ones(), dict(seed=True), ValueError, [r"seed must be"]),
        ("rounding-unknown", ones(), dict(rounding="up"), ValueError,
         ["rounding must be", "'up'"]),
        ("master_weights-string", ones(), dict(master_weights="yes"), ValueError,
         ["master_weights must be", "'yes'"]),
        ("master_weights-int", ones(), dict(master_weights=1), ValueError,
         ["master_weights must be"]),
    ]
    if cls.compact_params:
        cases += [
            ("master_weights-without-16-bit-params", ones(), dict(master_weights=True),
             ValueError, ["master_weights", "would do nothing"]),
            ("rounding-without-16-bit-params", ones(), dict(rounding="nearest"), ValueError,
             ["rounding", "would do nothing"]),
            ("compact-state-of-a-float64-param", ones(np.float32) + ones(np.float64),
             dict(state_dtype="int8"), TypeError, [r"params\[1\] is float64",
                                                   "state_dtype='int8'"]),
            ("16-bit-param-with-gradient_accumulation_steps", ones(np.float16),
             dict(gradient_accumulation_steps=2), ValueError,
             [r"params\[0\] is float16", "gradient_accumulation_steps"]),
        ]
        if BF16 is not None:
            cases.append(("16-bit-param-with-use_ema", ones() + ones(BF16), dict(use_ema=True),
                          ValueError, [r"params\[1\] is bfloat16", "use_ema"]))
    else:
        cases += [
            ("16-bit-param", ones() + ones(np.float16), {}, TypeError,
             [r"params\[1\] is float16", f"{name} takes float32 or float64", reason]),
            ("master_weights", ones(), dict(master_weights=True), ValueError,
             [f"{name} takes float32/float64 params only", "master_weights would do nothing"]),
            ("rounding", ones(), dict(rounding="stochastic"), ValueError,
             ["rounding would do nothing"]),
        ]
    if not cls.compact_state:
        cases += [(f"compact-state-{sd}", ones(), dict(state_dtype=sd), ValueError,
                   [f"state_dtype='{sd}'", reason, "Leave state_dtype unset"])
                  for sd in ("bfloat16", "float16", "int8")
                  if BF16 is not None or sd != "bfloat16"]
    elif not optim_db.info(name).initial_state(cls.defaults(default_convention(cls)),
                                               np.zeros(1)):
        # no state with its defaults (SGD without momentum): nothing could be compact
        cases.append(("compact-state-of-no-state", ones(), dict(state_dtype="int8"), ValueError,
                      ["state_dtype='int8'", "no state with these settings"]))
    return cases


@pytest.mark.parametrize("name", NAMES)
def test_bad_storage_settings_refused(name):
    cls = REGISTRY[name]
    for case_id, params, options, exc_type, patterns in storage_setting_cases(name):
        arrays = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
        before = [(a.dtype.str, a.shape, a.tobytes()) for a in arrays]
        with pytest.raises(exc_type) as exc:
            cls(params, **options)
        _check_message(exc, patterns, f"{name} {case_id}")
        assert before == [(a.dtype.str, a.shape, a.tobytes()) for a in arrays]
        TALLY["inputs_tried"] += 1
        TALLY["failures_survived"] += 1


STORAGE_SETTINGS = [("state_dtype", "int8"), ("min_8bit_size", 0), ("seed", 3),
                    ("rounding", "nearest"), ("master_weights", True)]


def test_storage_settings_cannot_change_after_construction():
    """The storage settings decide the arrays made at construction and how they
    are rounded, as use_ema does, and the convention the formulas: assigning
    one later is refused like ``opt.use_ema = True``, not stored where nothing
    reads it; each reads back as given."""
    w = np.zeros(300, np.float16)
    opt = fo.Adam([w], state_dtype="float32")
    assert (opt.state_dtype, opt.min_8bit_size, opt.seed, opt.rounding, opt.master_weights,
            opt.convention) == ("float32", 4096, 0, None, False, "keras")
    before = snapshot(opt, [])
    for key, value in STORAGE_SETTINGS + [("convention", "torch")]:
        with pytest.raises((AttributeError, ValueError)) as exc:
            setattr(opt, key, value)
        _check_message(exc, [key, "construction"], f"opt.{key} = {value!r}")
        assert_unchanged(before, opt, [], f"opt.{key} = {value!r}")


def test_state_dtype_given_as_a_numpy_dtype(tmp_path):
    """The documented values are None and four names.  A NumPy dtype that
    compares equal to one is either refused naming state_dtype, or taken as
    that name: the config holds the name, and the optimizer saves."""
    w = np.zeros(300, np.float32)
    try:
        opt = fo.Adam([w], state_dtype=np.dtype("int8"), min_8bit_size=0)
    except (TypeError, ValueError) as exc:
        assert "state_dtype" in str(exc)
        return
    assert isinstance(opt.get_config()["state_dtype"], str)
    fo.save(tmp_path / "c.npz", opt)


# ---- hyper-parameters ----------------------------------------------------------------

BAD_FLOATS = [float("nan"), float("inf"), float("-inf"), np.float32("nan"), 10 ** 400]
BAD_TYPES = ["0.1", 1j, [0.1], True]


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_and_mistyped_hyperparameters_refused(name):
    cls = REGISTRY[name]
    for conv in conventions(cls):
        for key in float_hyper(cls, conv):
            for bad in BAD_FLOATS:
                w = np.ones(_shape(name, 3))
                with pytest.raises(ValueError) as exc:
                    build(name, [w], convention=conv, **{key: bad})
                _check_message(exc, [key, "must be finite", "got"], f"{name} {key}={bad}")
                assert (w == 1.0).all()
                # the same value in a param group names the group
                with pytest.raises(ValueError) as exc:
                    build(name, [{"params": [np.ones(_shape(name, 2))]},
                                 {"params": [np.ones(_shape(name, 2))], key: bad}],
                          convention=conv)
                _check_message(exc, [r"param group 1", key], f"{name} group {key}={bad}")
                TALLY["inputs_tried"] += 2
                TALLY["failures_survived"] += 2
            for bad in BAD_TYPES:
                if isinstance(bad, str) and key in cls.named_values:
                    with pytest.raises(ValueError) as exc:      # a name it does not have
                        build(name, [np.ones(_shape(name, 3))], convention=conv, **{key: bad})
                    _check_message(exc, [key, repr(bad)], f"{name} {key}={bad!r}")
                    continue
                with pytest.raises(TypeError) as exc:
                    build(name, [np.ones(_shape(name, 3))], convention=conv, **{key: bad})
                _check_message(exc, [key, "float or a schedule"], f"{name} {key}={bad!r}")
                TALLY["inputs_tried"] += 1
                TALLY["failures_survived"] += 1


@pytest.mark.parametrize("name", NAMES)
def test_negative_and_zero_learning_rates(name):
    cls = REGISTRY[name]
    for conv in conventions(cls):
        for bad in (-1e-3, -1.0, -1e-300):
            with pytest.raises(ValueError) as exc:
                build(name, [np.ones(_shape(name, 3))], convention=conv, learning_rate=bad)
            _check_message(exc, ["learning_rate", "must be", "got"], f"{name} lr={bad}")
            TALLY["inputs_tried"] += 1
            TALLY["failures_survived"] += 1
        # lr = 0 is valid where the update is a multiple of lr (a frozen model), and
        # refused clearly where the formula divides by it (with what else an optimizer
        # needs to be frozen: optim_db's ``frozen``)
        w = np.linspace(-1, 1, 5)
        w0 = w.copy()
        try:
            opt = build(name, [w], convention=conv, learning_rate=0.0,
                        **optim_db.info(name).frozen)
        except ValueError as e:
            assert "learning_rate" in str(e), str(e)
            continue
        for _ in range(3):
            opt.step([np.linspace(1, 2, 5)])
        assert w.tobytes() == w0.tobytes(), f"{name}/{conv}: lr=0 moved the weights"
        TALLY["inputs_tried"] += 1


@pytest.mark.parametrize("name,storage", BATTERY)
def test_learning_rate_setter_refusals_change_nothing(name, storage):
    rng = np.random.default_rng(16)
    opt, twin, params, buf = _battery_opt(name, rng, storage)

    def setter(v):
        def f():
            opt.learning_rate = v
        return f

    for bad, exc_type in [(-0.5, ValueError), (float("nan"), ValueError), ("x", TypeError)]:
        _refused(opt, twin, params, buf, setter(bad), exc_type, ["learning_rate"],
                 f"{name} lr setter {bad!r}", rng)
        assert opt.learning_rate == twin.learning_rate


def _out_of_range(name, conv, key, bad):
    """True when ``key=bad`` is refused by the constructor (a value legal for the
    key is not a bad input)."""
    try:
        build(name, [np.ones(_shape(name, 1))], convention=conv, **{key: bad})
    except (ValueError, TypeError):
        return True
    return False


def _group_edit(opt, key, value):
    def f():
        opt.param_groups[0][key] = value
    return f


def _aliases(cls, conv):
    """``(alias, canonical)`` for every alias the optimizer takes in ``conv``."""
    defaults = cls.defaults(conv)
    out = [(a, n) for a, n in (("lr", "learning_rate"), ("eps", "epsilon")) if n in defaults]
    out += [(a, k) for k, h in cls.hyper.items() if k in defaults for a in h.aliases]
    return out


@pytest.mark.parametrize("name,storage", BATTERY)
def test_group_edits_refused_at_the_assignment(name, storage):
    """A param-group edit is checked when it is made: a bad value, an unknown or
    misspelt key, a tuple alias of the wrong length, a removed key or new
    params raise at once and change nothing (the group keeps its value)."""
    rng = np.random.default_rng(17)
    opt, twin, params, buf = _battery_opt(name, rng, storage)
    cls, conv = type(opt), opt.convention
    group = opt.param_groups[0]
    cases = [("no_such_key", 1.0, TypeError, ["param group 0", "unknown hyper-parameter",
                                               "'no_such_key'", "valid keys", "learning_rate"]),
             ("learning_rte", 0.1, TypeError, ["learning_rte", "valid keys"]),
             ("params", [np.zeros(_shape(name, 3))], ValueError, ["'params' cannot change",
                                                    "add_param_group"]),
             ("state_dtype", "bfloat16", ValueError, ["param group 0", "state_dtype is set "
                                                      "when the group is made"])]
    for key in float_hyper(cls, conv):
        cases.append((key, float("nan"), ValueError, ["param group 0", key, "finite"]))
        cases.append((key, "0.1", TypeError, ["param group 0", key, "float or a schedule"]))
        if _out_of_range(name, conv, key, -1.0):
            cases.append((key, -1.0, ValueError, ["param group 0", key, "must be"]))
    for alias, key in _aliases(cls, conv):
        if key in float_hyper(cls, conv):
            cases.append((alias, float("nan"), ValueError, ["param group 0", key]))
    for alias, (names, _) in cls.tuple_aliases.items():
        if all(n in cls.defaults(conv) for n in names):
            cases.append((alias, (0.5,), ValueError, [alias, "tuple", "got"]))
            cases.append((alias, 0.5, ValueError, [alias, "tuple", "got"]))
    for key, bad, exc_type, patterns in cases:
        kept = dict(group)
        _refused(opt, twin, params, buf, _group_edit(opt, key, bad), exc_type, patterns,
                 f"{name} group edit {key}={bad!r}", rng)
        assert dict(group) == kept
    # two names for one hyper-parameter in one edit
    for alias, key in _aliases(cls, conv):
        value = opt.param_groups[0][key]
        _refused(opt, twin, params, buf, lambda: group.update({key: value, alias: value}),
                 TypeError, ["not both", alias, key], f"{name} group update {key}+{alias}", rng)
    # removing a key
    for edit in (lambda: group.pop("learning_rate"), group.popitem, group.clear,
                 lambda: group.__delitem__("learning_rate")):
        _refused(opt, twin, params, buf, edit, ValueError, ["param group 0", "cannot be removed",
                                                           "nothing was changed"],
                 f"{name} group removal", rng)


@pytest.mark.parametrize("name,storage", BATTERY)
def test_hyperparameter_attribute_refusals_change_nothing(name, storage):
    """``opt.<hyper-parameter> = value`` is checked like the keyword; the name of a
    hyper-parameter this optimizer lacks (``opt.momentum`` on Adam) is refused
    rather than stored where nothing reads it."""
    from fastopt.optimizer import _known_names
    rng = np.random.default_rng(19)
    opt, twin, params, buf = _battery_opt(name, rng, storage)
    cls, conv = type(opt), opt.convention

    def setter(key, v):
        def f():
            setattr(opt, key, v)
        return f

    for key in float_hyper(cls, conv):
        bads = [(float("nan"), ValueError), ("0.1", TypeError)]
        if _out_of_range(name, conv, key, -1.0):
            bads.append((-1.0, ValueError))
        for bad, exc_type in bads:
            kept = getattr(opt, key)
            _refused(opt, twin, params, buf, setter(key, bad), exc_type, [key],
                     f"{name} opt.{key} = {bad!r}", rng)
            assert getattr(opt, key) == kept
    for foreign in sorted(_known_names()):
        if not hasattr(type(opt), foreign):
            _refused(opt, twin, params, buf, setter(foreign, 0.5), AttributeError,
                     [f"no hyper-parameter '{foreign}'", "learning_rate"],
                     f"{name} opt.{foreign}", rng)
            assert foreign not in vars(opt)


@pytest.mark.parametrize("name", NAMES)
def test_two_spellings_of_one_hyperparameter_refused(name):
    cls = REGISTRY[name]
    for conv in conventions(cls):
        for alias, key in _aliases(cls, conv):
            value = cls.defaults(conv)[key]
            with pytest.raises(TypeError) as exc:
                build(name, [np.ones(_shape(name, 2))], convention=conv,
                      **{key: value, alias: value})
            _check_message(exc, ["not both", alias, key], f"{name}/{conv} {key}+{alias}")
            with pytest.raises(TypeError) as exc:
                build(name, [{"params": [np.ones(_shape(name, 2))], key: value, alias: value}],
                      convention=conv)
            _check_message(exc, ["param group 0", "not both"], f"{name}/{conv} group {alias}")
            TALLY["inputs_tried"] += 2
            TALLY["failures_survived"] += 2
        for alias, (names, _) in cls.tuple_aliases.items():
            if not all(n in cls.defaults(conv) for n in names):
                continue
            value = tuple(cls.defaults(conv)[n] for n in names)
            with pytest.raises(TypeError) as exc:
                build(name, [np.ones(_shape(name, 2))], convention=conv,
                      **{alias: value, names[0]: value[0]})
            _check_message(exc, ["not both", alias], f"{name}/{conv} {alias}+{names[0]}")
            for bad in ((value[0],), value + value[:1], 0.5):
                with pytest.raises(ValueError) as exc:
                    build(name, [np.ones(_shape(name, 2))], convention=conv, **{alias: bad})
                _check_message(exc, [alias, "tuple", "got"], f"{name}/{conv} {alias}={bad!r}")
            TALLY["inputs_tried"] += 4
            TALLY["failures_survived"] += 4


@pytest.mark.parametrize("name", NAMES)
def test_empty_parameter_list_refused(name):
    cls = REGISTRY[name]
    for conv in conventions(cls):
        for empty in ([], (), iter([])):
            with pytest.raises(ValueError) as exc:
                build(name, empty, convention=conv)
            _check_message(exc, ["empty parameter list"], f"{name}/{conv}")
            TALLY["inputs_tried"] += 1
            TALLY["failures_survived"] += 1


@pytest.mark.parametrize("name", NAMES)
def test_schedule_returning_a_non_number_refuses_the_step(name):
    cls = REGISTRY[name]
    conv = default_convention(cls)
    rng = np.random.default_rng(20)
    for bad in ("0.1", b"0.1", None, [0.1], True):
        params = [rng.standard_normal(_shape(name, 4))]
        opt = build(name, params, convention=conv,
                    learning_rate=lambda step, bad=bad: 0.01 if step < 1 else bad)
        opt.step(rng_grads(rng, params))
        before = snapshot(opt, [])
        with pytest.raises(TypeError) as exc:
            opt.step(rng_grads(rng, params))
        _check_message(exc, ["learning_rate", "schedule returned", "at step 1", "number"],
                       f"{name} schedule -> {bad!r}")
        assert_unchanged(before, opt, [], f"{name} schedule -> {bad!r}")
        TALLY["inputs_tried"] += 1
        TALLY["failures_survived"] += 1


@pytest.mark.parametrize("name", NAMES)
def test_all_none_grads_follow_the_convention(name):
    """Keras 3 refuses a step without any gradient ("No gradients provided for any
    variable"); torch skips every parameter."""
    cls = REGISTRY[name]
    rng = np.random.default_rng(21)
    for conv in conventions(cls):
        params = [rng.standard_normal(_shape(name, 4)), rng.standard_normal(_shape(name, 3))]
        opt = build(name, params, convention=conv)
        opt.step(rng_grads(rng, params))
        before = snapshot(opt, [])
        if conv == "keras":
            for call in (lambda: opt.step([None, None]),
                         lambda: opt.apply_gradients([(None, params[0])])):
                with pytest.raises(ValueError) as exc:
                    call()
                _check_message(exc, ["No gradients provided for any variable",
                                     "Nothing was changed"], f"{name}/keras all None")
                assert_unchanged(before, opt, [], f"{name}/keras all None")
            TALLY["failures_survived"] += 2
        else:
            ws = [p.copy() for p in params]
            steps = opt._stepper.get_steps().tolist()
            opt.step([None, None])
            assert all(p.tobytes() == w.tobytes() for p, w in zip(params, ws))
            assert opt._stepper.get_steps().tolist() == steps   # no parameter advanced
        TALLY["inputs_tried"] += 1


def test_keras_guards_against_silent_misconfiguration():
    """The checks Keras 3 makes in its constructors (keras/src/optimizers): Lion's
    beta_1 in (0, 1] (0 degenerates to SignSGD), AdamW's weight_decay not None,
    SGD's momentum in [0, 1], Ftrl's signs; each also as a later assignment."""
    w = np.ones(3)
    cases = [(fo.Lion, {"beta_1": 0.0}, ValueError, ["beta_1", r"\(0, 1\]", "SignSGD"]),
             (fo.Lion, {"beta_1": 1.5}, ValueError, ["beta_1"]),
             (fo.AdamW, {"weight_decay": None}, TypeError, ["weight_decay", "None"]),
             (fo.AdamW, {"weight_decay": None, "convention": "torch"}, TypeError,
              ["weight_decay"]),
             (fo.SGD, {"momentum": 1.5}, ValueError, ["momentum", r"\[0, 1\]"]),
             (fo.SGD, {"momentum": -0.1}, ValueError, ["momentum"]),
             (fo.Ftrl, {"initial_accumulator_value": -0.1}, ValueError, ["initial_acc"]),
             (fo.Ftrl, {"learning_rate_power": 0.5}, ValueError, ["learning_rate_power"]),
             (fo.Ftrl, {"l1_regularization_strength": -1.0}, ValueError, ["l1_"]),
             (fo.Ftrl, {"l2_regularization_strength": -1.0}, ValueError, ["l2_"]),
             (fo.Ftrl, {"l2_shrinkage_regularization_strength": -1.0}, ValueError,
              ["l2_shrinkage"])]
    for cls, kw, exc_type, patterns in cases:
        with pytest.raises(exc_type) as exc:
            cls([w], **kw)
        _check_message(exc, patterns, f"{cls.__name__} {kw}")
        key = next(k for k in kw if k != "convention")
        opt = cls([w], convention=kw.get("convention", "keras"))
        kept = getattr(opt, key)
        with pytest.raises(exc_type):
            setattr(opt, key, kw[key])
        assert getattr(opt, key) == kept
        TALLY["inputs_tried"] += 2
        TALLY["failures_survived"] += 2
    assert (w == 1.0).all()
    assert fo.AdamW([w]).weight_decay == 0.004      # leaving it out is the default


class _FakeTorchTensor:
    """What a torch tensor looks like to fastopt's check: its type's module."""
    __module__ = "torch"


def test_torch_tensor_param_suggests_a_numpy_view():
    for params in ([_FakeTorchTensor()], [np.ones(2), _FakeTorchTensor()]):
        with pytest.raises(TypeError) as exc:
            fo.Adam(params)
        _check_message(exc, [rf"params\[{len(params) - 1}\]", "torch",
                             r"\.detach\(\)\.numpy\(\)"], "torch tensor")


def test_real_torch_tensor_param_suggests_a_numpy_view():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(TypeError, match=r"params\[0\].*detach\(\)\.numpy\(\)"):
        fo.Adam([p])
    w = p.detach().numpy()
    fo.SGD([w], learning_rate=0.5).step([np.ones(3, np.float32)])
    assert float(p[0]) == 0.5          # the update reached the tensor


def test_grads_of_another_float_dtype_suggest_rebuilding_the_optimizer():
    """model.double() after the optimizer was built: the grads are float64 while
    the optimizer still holds the float32 arrays."""
    w = np.ones(3, np.float32)
    opt = fo.Adam([w])
    before = w.tobytes()
    with pytest.raises(TypeError) as exc:
        opt.step([np.ones(3)])
    _check_message(exc, [r"grads\[0\]", "float32", "float64", "model.double",
                         "build a new optimizer", "astype"], "model.double")
    assert w.tobytes() == before and opt.iterations == 0


@pytest.mark.parametrize("name", NAMES)
def test_schedule_yielding_bad_values_refuses_the_step(name):
    """A schedule is checked per step like a constant: NaN, a negative lr, or a value
    out of the parameter's range refuses that step and changes nothing."""
    cls = REGISTRY[name]
    conv = default_convention(cls)
    rng = np.random.default_rng(18)
    for key in float_hyper(cls, conv):
        defaults = cls.defaults(conv)
        good = defaults[key] if key != "learning_rate" else 0.01
        for bad in (float("nan"), -5.0, 5.0):
            def sched(step, bad=bad, good=good):
                return bad if step == 2 else good
            params = [rng.standard_normal(_shape(name, 4)),
                      rng.standard_normal((2, 2)).astype(np.float32)]
            try:
                opt = build(name, params, convention=conv, **{key: sched})
            except (ValueError, TypeError):
                continue   # schedules not accepted for this key
            try:
                probe = build(name, [np.ones(_shape(name, 1))], convention=conv, **{key: bad})
            except ValueError:
                probe = None
            if probe is not None:
                continue   # the value is legal for this key
            for _ in range(2):
                opt.step(rng_grads(rng, params))
            before = snapshot(opt, [])
            with pytest.raises(ValueError) as exc:
                opt.step(rng_grads(rng, params))
            _check_message(exc, [key, "step 2"], f"{name} schedule {key}->{bad}")
            assert_unchanged(before, opt, [], f"{name} schedule {key}->{bad}")
            TALLY["inputs_tried"] += 1
            TALLY["failures_survived"] += 1


@pytest.mark.parametrize("name", NAMES)
def test_bad_options_refused(name):
    cls = REGISTRY[name]
    conv = default_convention(cls)
    cases = [("convention", "jax", ValueError), ("num_threads", 0, ValueError),
             ("num_threads", 1.5, ValueError), ("num_threads", True, ValueError),
             ("clipvalue", float("nan"), ValueError), ("clipvalue", -1.0, ValueError),
             ("clipvalue", 0.0, ValueError), ("no_such_option", 1.0, TypeError)]
    # options that newer versions add: tested once the optimizer accepts them
    for opt_name, good in (("clipnorm", 1.0), ("global_clipnorm", 1.0),
                           ("ema_momentum", 0.99)):
        extra = {"use_ema": True} if opt_name == "ema_momentum" else {}
        if accepts(cls, conv, **{opt_name: good}, **extra):
            cases += [(opt_name, float("nan"), ValueError), (opt_name, -1.0, ValueError)]
    for key, bad, exc_type in cases:
        extra = {"use_ema": True} if key == "ema_momentum" else {}
        kw = {key: bad, **extra}
        if key == "convention":
            with pytest.raises(exc_type) as exc:
                cls([np.ones(_shape(name, 2))], convention=bad)
        else:
            with pytest.raises(exc_type) as exc:
                build(name, [np.ones(_shape(name, 2))], convention=conv, **kw)
        _check_message(exc, [key if key != "no_such_option" else "no_such_option"],
                       f"{name} {key}={bad!r}")
        TALLY["inputs_tried"] += 1
        TALLY["failures_survived"] += 1


def test_every_error_category_is_covered():
    """The battery covers every promise of DESIGN.md §3 (guards against a case
    list shrinking silently)."""
    ids = {c[0] for c in grad_cases(2)} | {c[0] for c in LIST_CASES} | \
        {c[0] for c in param_cases()} | {c[0] for c in grad_cases(2, "bf16-master")}
    for needed in ("list", "float16", "int32", "complex", "object", "byte-swapped",
                   "extra-element", "too-few", "0-d", "sliced", "transposed", "fortran",
                   "read-only", "is-the-param", "overlaps-param", "is-optimizer-state",
                   "same-twice", "misaligned", "bare-ndarray", "in-compact-state",
                   "is-the-master-param"):
        assert needed in ids, needed
    # every optimizer with compact state runs the battery in every storage it takes
    axis = {tuple(p.values) for p in BATTERY}
    for name in NAMES:
        for storage in STORAGES:
            if takes_storage(REGISTRY[name], storage):
                assert (name, storage) in axis, (name, storage)
    assert any(REGISTRY[n].compact_params for n in NAMES)


@pytest.mark.parametrize("name,storage", BATTERY)
def test_skip_nonfinite_skips_whole_step(name, storage):
    """With ``skip_nonfinite=True`` (where the optimizer has it) a step whose grads
    hold NaN/Inf changes nothing but the skip counter (16-bit grads are read in
    place: in a storage row the bad value is also in a bfloat16 grad)."""
    cls = REGISTRY[name]
    conv = default_convention(cls)
    if not accepts(cls, conv, skip_nonfinite=True):
        pytest.skip(f"{name} has no skip_nonfinite option in this version")
    rng = np.random.default_rng(19)
    params, buf = make_params(name, storage)
    opt = build_stored(name, params, storage, skip_nonfinite=True)
    opt.step(good_grads(rng, params))

    def arrays():
        return [p.tobytes() for p in params] + \
            [a.tobytes() for s in opt.state_arrays() for a in s] + \
            [m.tobytes() for m in opt.master_params if m is not None]

    for j, bad in zip((2, 0, 2), (np.nan, np.inf, -np.inf)):
        g = good_grads(rng, params)
        g[j].reshape(-1)[4] = bad
        arrays_before = arrays()
        skipped = opt.skipped_steps
        opt.step(g)
        assert opt.skipped_steps == skipped + 1
        assert arrays_before == arrays()
        TALLY["inputs_tried"] += 1
        TALLY["failures_survived"] += 1


def test_non_finite_grads_propagate_by_default():
    # DESIGN.md §3: without skip_nonfinite a NaN grad is the user's business, as in the anchors
    w = np.ones(3)
    opt = fo.SGD([w], learning_rate=0.1)
    opt.step([np.array([np.nan, 1.0, np.inf])])
    assert math.isnan(w[0]) and w[1] == 0.9 and w[2] == -np.inf


# ---- what changes after construction ------------------------------------------------------
# The optimizer caches pointers to its arrays and builds its state from the
# hyper-parameters at construction; later changes that would break either
# are refused, and the next good step lands where a twin lands.

def _freeze_flag(a):
    a.flags.writeable = False


ARRAY_CHANGES = [
    ("param made read-only", lambda opt: _freeze_flag(opt.params[1]),
     lambda opt: setattr(opt.params[1].flags, "writeable", True), r"params\[1\] was made read-only"),
    ("state made read-only", lambda opt: _freeze_flag(opt.state_arrays()[2][-1]),
     lambda opt: setattr(opt.state_arrays()[2][-1].flags, "writeable", True),
     r"state array \d of params\[2\] was made read-only"),
]


@pytest.mark.parametrize("name,storage", BATTERY)
def test_arrays_changed_after_construction_refuse_the_step(name, storage):
    rng = np.random.default_rng(31)
    opt, twin, params, buf = _battery_opt(name, rng, storage)
    for what, change, undo, pattern in ARRAY_CHANGES:
        if "state" in what and not opt.state_arrays()[2]:
            continue
        change(opt)
        before = snapshot(opt, [buf])
        with pytest.raises(ValueError) as exc:
            opt.step(good_grads(rng, params))
        _check_message(exc, [pattern, "nothing was changed"], f"{name}: {what}")
        assert_unchanged(before, opt, [buf], f"{name}: {what}")
        undo(opt)
        g = good_grads(rng, params)
        opt.step(g)
        twin.step([x.copy() for x in g])
        assert_same_optimizer(opt, twin, f"{name}: after {what}")
        TALLY["inputs_tried"] += 1
        TALLY["failures_survived"] += 1


def _state_keys(cls, conv):
    """Hyper-parameters that decide the state arrays, with a value that needs more:
    the bools off by default, and the stateful keys of tests/optim_db.py."""
    defaults = cls.defaults(conv)
    keys = [(k, True) for k in bool_hyper(cls, conv) if defaults[k] is False]
    keys += [(k, 0.5) for k in optim_db.info(cls.__name__).stateful]
    return keys


@pytest.mark.parametrize("name", NAMES)
def test_state_deciding_edits_are_refused_or_match_a_twin(name):
    """An edit of a group is either refused with nothing changed (it needs state
    the optimizer does not keep) or gives what an optimizer built with the
    edited value gives."""
    cls = REGISTRY[name]
    rng = np.random.default_rng(32)
    for conv in conventions(cls):
        for key, value in _state_keys(cls, conv):
            params = [rng.standard_normal(_shape(name, 5)),
                      rng.standard_normal((2, 3)).astype(np.float32)]
            opt = cls(params, convention=conv)
            kept = list(opt.state[0])
            before = snapshot(opt, [])
            g = rng_grads(rng, params)
            twin_params = [p.copy() for p in params]
            what = f"{name}/{conv} {key}={value}"
            try:
                twin = cls(twin_params, convention=conv, **{key: value})
            except ValueError:      # invalid on its own (torch nesterov without momentum)
                with pytest.raises(ValueError):
                    opt.param_groups[0][key] = value
                assert_unchanged(before, opt, [], what)
                continue
            if set(twin.state[0]) <= set(kept):
                opt.param_groups[0][key] = value
                opt.step(g)
                twin.step([x.copy() for x in g])
                for p, q in zip(params, twin_params):
                    assert p.tobytes() == q.tobytes(), what
                for mine, theirs in zip(opt.state, twin.state):
                    for k, a in theirs.items():
                        assert mine[k].tobytes() == a.tobytes(), f"{what}: state {k}"
                continue
            for edit in (_group_edit(opt, key, value), lambda: setattr(opt, key, value)):
                with pytest.raises(ValueError) as exc:
                    edit()     # refused at the assignment
                _check_message(exc, [f"param group 0: {key} cannot change",
                                     "Build a new optimizer"], what)
                assert_unchanged(before, opt, [], what)
            assert_unchanged(before, opt, [], what)
            TALLY["inputs_tried"] += 1
            TALLY["failures_survived"] += 1


OPTIONS_LATER = [("maximize", True), ("clipvalue", 0.1), ("clipnorm", 0.1),
                 ("global_clipnorm", 0.1), ("skip_nonfinite", True), ("num_threads", 2)]


@pytest.mark.parametrize("name", NAMES)
def test_options_set_after_construction_match_a_twin_built_with_them(name):
    cls = REGISTRY[name]
    conv = default_convention(cls)
    for key, value in OPTIONS_LATER + [("decoupled_weight_decay", not
                                        cls([np.ones(_shape(name, 1))],
                                            convention=conv).decoupled_weight_decay)]:
        rng = np.random.default_rng(33)
        params = [rng.standard_normal(_shape(name, 6)),
                  rng.standard_normal(_shape(name, 3)).astype(np.float32)]
        base = {"weight_decay": 0.01}
        try:
            twin = cls([p.copy() for p in params], convention=conv, **base, **{key: value})
        except ValueError:
            continue     # AdamW's decay cannot be coupled
        opt = cls(params, convention=conv, **base)
        setattr(opt, key, value)
        for s in range(3):
            g = rng_grads(rng, params, scale=3.0)
            if s == 1:
                g[0][0] = np.nan     # skip_nonfinite skips; otherwise NaN flows the same way
            opt.step(g)
            twin.step([x.copy() for x in g])
        assert_same_optimizer(opt, twin, f"{name}: {key}={value} set after construction")
        assert opt.get_config() == twin.get_config()
