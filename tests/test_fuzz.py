"""Hypothesis-driven fuzzing of the public API: random optimizers, conventions,
shapes, dtypes, strides, aliasing, hyper-parameters and options.

Every call either applies a correct update or raises a clean ``TypeError`` /
``ValueError`` with nothing changed.  "Correct" is checked two ways: bit for
bit against a twin optimizer fed canonical (fresh, contiguous) copies of the
same accepted inputs, and, for tame hyper-parameters, against the float64
reference of ``tests/reference.py``.

Examples are derandomized so CI is reproducible; FASTOPT_FUZZ_EXAMPLES=n
raises the budget and FASTOPT_FUZZ_RANDOM=1 draws new examples each run.
"""
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastopt as fo
from fastopt.optimizers import REGISTRY

import optim_db
import reference
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
PARAM_DEFECTS = ["none"] * 40 + ["float16", "int64", "complex", "byteswap", "sliced",
                                 "transposed", "readonly", "duplicate", "list", "misaligned"]
GRAD_DEFECTS = (["none"] * 60 + ["skip", "readonly", "view-in-buffer"] * 3 + ["rowgrad"] * 6 +
                ["rowgrad-out-of-range", "rowgrad-values-dtype", "rowgrad-values-sliced",
                 "rowgrad-indices-float"] +
                ["float16", "int32", "other-float", "byteswap", "shape", "0-d", "sliced",
                 "fortran", "misaligned", "alias-param", "alias-state", "list"])
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


def make_grad(data, p, state, defect):
    """A grad for param ``p`` with a possible defect; the 'clean' counterpart
    (what the optimizer must have used when it accepts it) is returned too."""
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
    elif defect == "list":
        g = g.tolist()
    return g, clean


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


def draw_optimizer(data):
    """A registered optimizer: its name, class and one of its conventions."""
    name = data.draw(st.sampled_from(NAMES), label="optimizer")
    return name, REGISTRY[name], data.draw(st.sampled_from(CONVENTIONS[name]), label="convention")


def draw_hyper(data, cls, conv):
    """Keyword arguments and whether they are all 'tame' (reference-comparable)."""
    kw, tame = {}, True
    for key in float_hyper(cls, conv):
        default = cls.hyper[key].default(conv)
        how = data.draw(st.sampled_from(["default"] * 4 + ["scaled"] * 3 + ["wild"]), label=key)
        if how == "scaled":
            u = data.draw(st.floats(0.05, 1.0), label=f"{key} factor")
            kw[key] = default * u if default else 0.9 * u
        elif how == "wild":
            kw[key] = data.draw(st.sampled_from(WILD), label=f"{key} value")
            tame = False
    for key in bool_hyper(cls, conv):
        kw[key] = data.draw(st.booleans(), label=key)
    kw["maximize"] = data.draw(st.booleans(), label="maximize")
    clip = data.draw(st.sampled_from([None] * 6 + [0.5, 1e-3, 0.0, -1.0, float("nan")]),
                     label="clipvalue")
    if clip is not None:
        kw["clipvalue"] = clip
        tame = tame and clip > 0
    wd = data.draw(st.sampled_from([None] * 5 + [0.01, 0.1, -0.1, float("nan")]), label="wd")
    if wd is not None:
        kw["weight_decay"] = wd
        tame = tame and wd >= 0
    if conv == "torch" and data.draw(st.booleans(), label="decoupled"):
        kw["decoupled_weight_decay"] = True
    kw["num_threads"] = data.draw(st.sampled_from([None, 1, 2, 3]), label="threads")
    return kw, tame


def _reference_for(name, conv, opt, params, kw):
    if conv not in optim_db.info(name).rules:
        return None
    hp = opt.current_hyperparameters()
    options = {k: kw[k] for k in ("maximize", "clipvalue", "decoupled_weight_decay") if k in kw}
    return reference.Reference(name, conv, params, lambda step: hp, **options)


@FUZZ
@given(data=st.data())
def test_fuzz_public_api(data):
    name, cls, conv = draw_optimizer(data)
    n = data.draw(st.integers(0, 4), label="nparams")
    params = []
    for i in range(n):
        shape = data.draw(shapes, label=f"shape{i}")
        dtype = data.draw(st.sampled_from([np.float32, np.float64]), label=f"dtype{i}")
        defect = data.draw(st.sampled_from(PARAM_DEFECTS), label=f"param defect{i}")
        params.append(make_param(data, shape, dtype, defect, params))
    kw, tame = draw_hyper(data, cls, conv)
    given_arrays = [p for p in params if isinstance(p, np.ndarray)]
    before = [(p.dtype.str, p.shape, p.tobytes()) for p in given_arrays]
    TALLY["inputs_tried"] += 1
    try:
        opt = cls(params, convention=conv, **kw)
    except CLEAN_ERRORS:
        assert before == [(p.dtype.str, p.shape, p.tobytes()) for p in given_arrays]
        TALLY["failures_survived"] += 1
        return
    twin_params = [p.copy() for p in params]
    twin = cls(twin_params, convention=conv, **kw)
    ref = _reference_for(name, conv, opt, params, kw) if tame else None
    nsteps = data.draw(st.integers(1, 4), label="steps")
    for s in range(nsteps):
        grads, clean = [], []
        for i, p in enumerate(params):
            defect = data.draw(st.sampled_from(GRAD_DEFECTS), label=f"step{s} grad defect{i}")
            g, c = make_grad(data, p, opt.state_arrays()[i], defect)
            grads.append(g)
            clean.append(c)
        ldefect = data.draw(st.sampled_from(LIST_DEFECTS), label=f"step{s} list defect")
        call = grads
        if ldefect == "short":
            call = grads[:-1]
        elif ldefect == "long":
            call = grads + [None]
        elif ldefect == "ndarray":
            call = grads[0] if grads and isinstance(grads[0], np.ndarray) else np.zeros(n + 1)
        elif ldefect == "tuple":
            call = tuple(grads)
        elif ldefect == "generator":
            call = (g for g in grads)
        snap = snapshot(opt)
        TALLY["inputs_tried"] += 1
        try:
            opt.step(call)
        except CLEAN_ERRORS:
            assert_unchanged(snap, opt, [], f"{name}/{conv} step {s}")
            TALLY["failures_survived"] += 1
            continue
        twin.step(clean)
        assert_same_optimizer(opt, twin, f"{name}/{conv} step {s}")
        TALLY["updates_verified"] += 1
        if ref is not None:
            ref.step(clean)     # a RowGrad: the reference's lazy rule on its rows
    if ref is not None:
        TALLY["reference_checked"] += 1
        with np.errstate(all="ignore"):
            for i, (w, r) in enumerate(zip(params, ref.w)):
                if r.size == 0 or not np.isfinite(r).all():
                    continue
                rtol, atol = (1e-9, 1e-12) if w.dtype == np.float64 else (3e-4, 3e-5)
                np.testing.assert_allclose(w, r, rtol=rtol, atol=atol * max(1.0, np.abs(r).max()),
                                           err_msg=f"{name}/{conv} params[{i}] {kw}")


@FUZZ
@given(data=st.data())
def test_fuzz_param_groups_and_setters(data):
    """Param groups with random overrides and learning-rate edits between steps:
    invalid values are refused (at construction or at the next step) with nothing
    changed; valid ones match a twin built directly with the final values."""
    name, cls, conv = draw_optimizer(data)
    keys = float_hyper(cls, conv)
    ngroups = data.draw(st.integers(1, 3), label="groups")
    groups = []
    for gi in range(ngroups):
        size = data.draw(st.integers(0, 2), label=f"group{gi} size")
        plist = [np.linspace(-1, 1, 3 + k).astype(np.float32) for k in range(size)]
        over = {}
        for key in data.draw(st.lists(st.sampled_from(keys), max_size=2, unique=True),
                             label=f"group{gi} keys"):
            default = cls.hyper[key].default(conv)
            over[key] = data.draw(st.sampled_from([default, 0.5 * default] + WILD[:4]),
                                  label=f"group{gi} {key}")
        groups.append(dict(over, params=plist))
    TALLY["inputs_tried"] += 1
    try:
        opt = cls(groups, convention=conv)
    except CLEAN_ERRORS:
        TALLY["failures_survived"] += 1
        return
    params = opt.params
    rng = np.random.default_rng(data.draw(st.integers(0, 1000), label="seed"))
    for s in range(3):
        lr = data.draw(st.sampled_from([None, 0.001, 0.0, -1.0, float("nan")]), label=f"lr{s}")
        if lr is not None:
            snap = snapshot(opt)
            TALLY["inputs_tried"] += 1
            try:
                opt.learning_rate = lr
            except CLEAN_ERRORS:
                assert_unchanged(snap, opt, [], f"{name} lr={lr}")
                TALLY["failures_survived"] += 1
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        snap = snapshot(opt)
        TALLY["inputs_tried"] += 1
        try:
            opt.step(grads)
        except CLEAN_ERRORS:
            assert_unchanged(snap, opt, [], f"{name} step {s}")
            TALLY["failures_survived"] += 1


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
                        "group params", "option", "fork"]), label=f"step{s} mutation")
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
