"""Compact storage: bfloat16/float16/int8 state, 16-bit params and grads,
stochastic rounding, master weights.

The kernels compute in float32 and round what they store; the float64
reference steps from the same (decoded) values and its result is rounded with
the NumPy model of the formats in ``compact_ref.py`` (the same draws), so the
comparison is of bits: a code may differ only where float32 and float64
arithmetic fall on the two sides of a rounding threshold (probability about
2**-20 per value).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import compact_ref as cr
import optim_db
import reference as ref

import fastopt as fo
from fastopt import _core

bf16 = pytest.importorskip("ml_dtypes").bfloat16
HERE = os.path.dirname(os.path.abspath(__file__))
SIMDS = _core.simd_supported()

COMPACT = [e for e in optim_db.optim_db if e.cls.compact_state]
FORMAT = {"bfloat16": _core.FMT_BF16, "float16": _core.FMT_F16}


def _grads(rng, shape, n, dtype=np.float32, scales=(1e-3, 1.0, 30.0)):
    """Grads whose magnitudes spread over blocks (what int8 blocks must hold)."""
    return [(rng.standard_normal(shape) * rng.choice(scales, size=shape))
            .astype(dtype) for _ in range(n)]


def _kwargs(entry, convention):
    kw = {"learning_rate": 0.01}
    if entry.name == "SGD":
        kw["momentum"] = 0.9
    if entry.name == "RMSprop":
        kw.update(momentum=0.5, centered=True)
    if entry.name == "Adam":
        kw["amsgrad"] = True
    return kw


def _decoded(opt, i):
    """The float32 values of params[i]'s state arrays, by kernel order."""
    p = opt.params[i]
    out = []
    for a, f in zip(opt.state_arrays()[i], opt._formats[i]):
        out.append(_decode(a, f, p.size).reshape(p.shape))
    return out


def _decode(a, fmt, n):
    if fmt == _core.FMT_NATIVE:
        return np.asarray(a, dtype=np.float32).ravel()
    if fmt in (_core.FMT_BF16, _core.FMT_F16):
        return np.asarray(a).astype(np.float32).ravel()
    return cr.q8_decode(a["absmax"], a["codes"], fmt == _core.FMT_Q8S, n)


def _expected_state(x, fmt, key, step, stream):
    """The stored form of float32 state x, as compact_ref models it."""
    if fmt == _core.FMT_BF16:
        return cr.half_encode(x, "bf16", True, key, step, stream)
    if fmt == _core.FMT_F16:
        return cr.half_encode(x, "f16", True, key, step, stream)
    return cr.q8_encode(x, fmt == _core.FMT_Q8S, key, step, stream)


def _stored(a, fmt):
    if fmt in (_core.FMT_BF16, _core.FMT_F16):
        return np.asarray(a).view(np.uint16).ravel()
    return a["absmax"].copy(), a["codes"].copy()


def _agree(got, want, what, rtol=3e-5):
    """Stored bits equal but where float32 and float64 arithmetic (apart by up
    to ``rtol``, the float32 tolerance of tests/test_kernels.py) put a value on
    the two sides of a rounding threshold: then the codes are neighbours, and
    that happens to about rtol / (relative code step) of the values."""
    if isinstance(want, tuple):
        amax_g, codes_g = got
        amax_w, codes_w = want
        np.testing.assert_allclose(amax_g, amax_w, rtol=rtol, err_msg=what)
        got, want, step = codes_g.astype(np.int64), codes_w.astype(np.int64), 2.0 ** -3
    else:
        got, want, step = got.astype(np.int64), want.astype(np.int64), 2.0 ** -7
    differ = got != want
    assert (np.abs(got - want)[differ] == 1).all(), f"{what}: codes differ by more than one"
    allowed = 2 + 3 * want.size * rtol / step
    assert differ.sum() <= allowed, f"{what}: {differ.sum()} of {want.size} differ"


# ---- the formats --------------------------------------------------------------------

SPECIALS = np.array([0.0, -0.0, 1e-8, 6e-8, -6e-8, 3e-5, 65504, 65519, 65520, 1e6, 3e38,
                     np.inf, -np.inf, np.nan, -2.5e-7, 1.0, -1.0, 0.1, 1 + 2 ** -11],
                    dtype=np.float32)


@pytest.mark.parametrize("fmt,name", [(_core.FMT_BF16, "bf16"), (_core.FMT_F16, "f16")])
def test_16bit_nearest_matches_numpy_casts(fmt, name):
    x = np.concatenate([SPECIALS, np.random.default_rng(0).standard_normal(5000)
                        .astype(np.float32) * np.float32(10) ** np.random.default_rng(1)
                        .integers(-9, 6, 5000).astype(np.float32)])
    got = _core.compact_encode(fmt, "nearest", x, 0, 0, 0, 0)
    with np.errstate(over="ignore"):
        want = x.astype(bf16 if name == "bf16" else np.float16).view(np.uint16)
    same = (got == want) | (np.isnan(x) & np.isnan(got.view(bf16 if name == "bf16"
                                                               else np.float16)))
    assert same.all(), x[~same]
    assert (got == cr.half_encode(x, name, False, 0, 0, 0)).all()
    back = _core.compact_decode(fmt, got, x.size)
    assert np.array_equal(back, want.view(bf16 if name == "bf16" else np.float16)
                          .astype(np.float32), equal_nan=True)


@pytest.mark.parametrize("name", ["bf16", "f16"])
def test_16bit_stochastic_matches_model_and_is_unbiased(name):
    fmt = FORMAT["bfloat16" if name == "bf16" else "float16"]
    x = np.concatenate([SPECIALS, np.random.default_rng(2).standard_normal(3000)
                        .astype(np.float32) * np.float32(1e-5)])
    got = _core.compact_encode(fmt, "stochastic", x, 5 * 256, 77, 3, 0)
    assert (got == cr.half_encode(x, name, True, 77, 3, 0, first=5 * 256)).all()
    # one value rounded many times (each step draws anew): the mean is the value
    v = np.full(4096, np.float32(1 + 2 ** -10 + 2 ** -13) * np.float32(0.3), dtype=np.float32)
    means = []
    for step in range(40):
        q = _core.compact_encode(fmt, "stochastic", v, 0, 9, step, 0)
        vals = _core.compact_decode(fmt, q, v.size)
        assert len(np.unique(vals)) <= 2     # the two neighbours only
        means.append(vals.astype(np.float64).mean())
    ulp = float(np.spacing(v[0].astype(bf16 if name == "bf16" else np.float16)))
    assert abs(np.mean(means) - float(v[0])) < 0.01 * ulp


@pytest.mark.parametrize("signed", [True, False])
def test_int8_blocks_match_model(signed):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(1000) * 10.0 ** rng.integers(-12, 2, 1000)).astype(np.float32)
    x[300:320] = 0
    if not signed:
        x = np.abs(x)
    fmt = _core.FMT_Q8S if signed else _core.FMT_Q8U
    q = _core.compact_encode(fmt, "stochastic", x, 512, 11, 4, 2)
    amax, codes = cr.q8_encode(x, signed, 11, 4, 2, first=512)
    assert np.array_equal(q["absmax"], amax)
    assert np.array_equal(q["codes"], codes)
    back = _core.compact_decode(fmt, q, x.size)
    assert np.array_equal(back, cr.q8_decode(amax, codes, signed, x.size))
    # within one code step (1/8 of the value) where the format has the range
    blockmax = np.repeat(amax, 256)[:x.size]
    inrange = np.abs(x) > blockmax * (2.0 ** (-13 if signed else -29))
    rel = np.abs(back - x)[inrange] / np.abs(x)[inrange]
    assert rel.max() <= 0.125 + 1e-6
    assert (np.sign(back) == np.sign(x))[np.abs(back) > 0].all()
    if not signed:
        assert (back[x > 0] > 0).all()     # a positive second moment never reads 0


def test_int8_special_blocks():
    x = np.zeros(600, dtype=np.float32)
    x[256 + 7] = np.nan
    x[512:] = 1.5
    q = _core.compact_encode(_core.FMT_Q8S, "stochastic", x, 0, 0, 1, 1)
    back = _core.compact_decode(_core.FMT_Q8S, q, x.size)
    assert (back[:256] == 0).all()
    assert np.isnan(back[256:512]).all()         # a non-finite block stays non-finite
    np.testing.assert_allclose(back[512:], 1.5, rtol=1e-6)


# ---- kernels against the float64 reference, rounding modelled ------------------------

def _compare_run(entry, convention, sdtype, shape=(3, 700), steps=4, num_threads=1):
    """fastopt with compact state against the reference stepping from the same
    decoded state each step; returns the optimizer."""
    kw = _kwargs(entry, convention)
    rng = np.random.default_rng(5)
    w = rng.standard_normal(shape).astype(np.float32)
    opt = entry.cls([w], convention=convention, state_dtype=sdtype, min_8bit_size=0,
                    seed=12345, num_threads=num_threads, **kw)
    hp = dict(entry.cls.defaults(convention), **kw)
    r = ref.Reference(entry.name, convention, [w], lambda step: hp)
    keys = list(r.state[0])
    fmts = opt._formats[0]
    assert any(f != _core.FMT_NATIVE for f in fmts)
    key = _core.rng_key(12345, 0)
    # Ftrl's sqrt(n_new) - sqrt(n) cancels in float32: its grads spread less, and its
    # linear state and weights get an absolute tolerance of 1e-5
    scales = (0.1, 1.0, 3.0) if entry.name == "Ftrl" else (1e-3, 1.0, 30.0)
    atol = 1e-5 if entry.name == "Ftrl" else 3e-6
    for t, g in enumerate(_grads(rng, shape, steps, scales=scales), start=1):
        r.w[0] = w.astype(np.float64)
        for name, x in zip(keys, _decoded(opt, 0)):
            r.state[0][name] = x.astype(np.float64)
        r.step([g])
        opt.step([g])
        np.testing.assert_allclose(w, r.w[0], rtol=3e-5, atol=atol,
                                   err_msg=f"{entry.name} {convention} {sdtype} step {t}")
        for k, (name, f) in enumerate(zip(keys, fmts)):
            want = r.state[0][name].astype(np.float32)
            a = opt.state_arrays()[0][k]
            if f == _core.FMT_NATIVE:
                np.testing.assert_allclose(a, want, rtol=3e-5, atol=atol)
                continue
            _agree(_stored(a, f), _expected_state(want, f, key, t, 1 + k),
                   f"{entry.name} {convention} {sdtype} step {t} state {name}")
    return opt


@pytest.mark.parametrize("entry", COMPACT, ids=lambda e: e.name)
@pytest.mark.parametrize("sdtype", ["bfloat16", "int8"])
def test_kernel_matches_reference_with_rounding_modelled(entry, sdtype):
    for convention in entry.conventions:
        _compare_run(entry, convention, sdtype)


@pytest.mark.parametrize("entry", [optim_db.info("Adam"), optim_db.info("RMSprop")],
                         ids=lambda e: e.name)
def test_float16_state_matches_reference(entry):
    _compare_run(entry, "torch", "float16")


def _run(sdtype, dtype=np.float32, grad_dtype=None, threads=1, simd=None, steps=5, size=5000,
         **kw):
    rng = np.random.default_rng(7)
    w = rng.standard_normal(size).astype(np.float32).astype(dtype)
    prev = _core.get_simd()
    if simd:
        _core.set_simd(simd)
    try:
        _core.set_parallel_threshold(0)
        opt = fo.Adam([w], learning_rate=0.01, state_dtype=sdtype, min_8bit_size=0,
                      num_threads=threads, **kw)
        for g in _grads(rng, (size,), steps, grad_dtype or dtype):
            opt.step([g])
    finally:
        _core.set_simd(prev)
        _core.set_parallel_threshold(32768)
    return [w.tobytes()] + [np.asarray(a).tobytes() for a in opt.state_arrays()[0]]


@pytest.mark.parametrize("case", [
    dict(sdtype="int8"), dict(sdtype="bfloat16"), dict(sdtype=None, dtype=bf16),
    dict(sdtype="int8", dtype=bf16, master_weights=True),
    dict(sdtype=None, dtype=np.float16, rounding="nearest"),
    dict(sdtype="int8", dtype=np.float32, grad_dtype=bf16)], ids=str)
def test_bits_do_not_depend_on_threads_or_simd(case):
    base = _run(**case)
    for threads in (2, 3, 4):
        assert _run(threads=threads, **case) == base, threads
    for simd in SIMDS:
        assert _run(simd=simd, **case) == base, simd


# ---- 16-bit params and grads ---------------------------------------------------------

@pytest.mark.parametrize("pname,pdtype", [("bf16", bf16), ("f16", np.float16)])
@pytest.mark.parametrize("rounding", ["stochastic", "nearest"])
@pytest.mark.parametrize("gdtype", ["same", np.float32])
def test_16bit_params_match_reference(pname, pdtype, rounding, gdtype):
    rng = np.random.default_rng(8)
    shape = (1000,)
    w = rng.standard_normal(shape).astype(pdtype)
    opt = fo.Adam([w], learning_rate=0.01, rounding=rounding, state_dtype="float32", seed=3)
    hp = dict(fo.Adam.defaults("keras"), learning_rate=0.01)
    r = ref.Reference("Adam", "keras", [w.astype(np.float32)], lambda step: hp)
    key = _core.rng_key(3, 0)
    for t, g in enumerate(_grads(rng, shape, 4, pdtype if gdtype == "same" else gdtype), 1):
        r.w[0] = w.astype(np.float64)
        opt.step([g])
        r.step([g.astype(np.float32)])
        want = cr.half_encode(r.w[0].astype(np.float32), pname, rounding == "stochastic",
                              key, t, 0)
        _agree(w.view(np.uint16), want, f"{pname} {rounding} step {t}")
        np.testing.assert_allclose(opt.state_arrays()[0][0], r.state[0]["m"], rtol=1e-5,
                                   atol=1e-7)


def test_float32_params_take_16bit_grads():
    rng = np.random.default_rng(9)
    w = rng.standard_normal(3000).astype(np.float32)
    w2 = w.copy()
    a = fo.Adam([w], learning_rate=0.01)
    b = fo.Adam([w2], learning_rate=0.01)
    for g in _grads(rng, (3000,), 3, bf16):
        a.step([g])
        b.step([g.astype(np.float32)])     # the same values, widened
    assert w.tobytes() == w2.tobytes()
    for g in _grads(rng, (3000,), 3, np.float16):
        a.step([g])
        b.step([g.astype(np.float32)])
    assert w.tobytes() == w2.tobytes()


@pytest.mark.parametrize("cls", [fo.Lamb, fo.Adafactor, fo.Muon])
@pytest.mark.parametrize("gdtype", ["bfloat16", "float16"])
def test_kernels_of_more_than_one_pass_refuse_16bit_grads(cls, gdtype):
    """Lamb's and Muon's reductions and Adafactor's row/column pass read the grad
    as the param's dtype: a 16-bit grad of a float32 param is refused, naming
    why, and nothing changes (a float32 grad steps)."""
    w = np.linspace(-1, 1, 40 * 30).astype(np.float32).reshape(40, 30)
    opt = cls([w])
    before = [w.tobytes()] + [a.tobytes() for st in opt.state_arrays() for a in st]
    g = np.full(w.shape, 0.25, bf16 if gdtype == "bfloat16" else np.float16)
    with pytest.raises(TypeError, match=r"grads\[0\]: expected dtype float32 .*more than one "
                                        r"pass over a tensor"):
        opt.step([g])
    assert [w.tobytes()] + [a.tobytes() for st in opt.state_arrays() for a in st] == before
    assert opt.iterations == 0
    opt.step([g.astype(np.float32)])
    assert opt.iterations == 1 and np.isfinite(w).all()


def test_16bit_grads_accumulate_as_their_float32_values():
    rng = np.random.default_rng(13)
    w = rng.standard_normal(9000).astype(np.float32)
    w2 = w.copy()
    a = fo.Adam([w], learning_rate=0.01, gradient_accumulation_steps=3)
    b = fo.Adam([w2], learning_rate=0.01, gradient_accumulation_steps=3)
    for k, g in enumerate(_grads(rng, (9000,), 7, bf16)):
        g = g if k % 2 else g.astype(np.float32).astype(np.float16)
        a.step([g])
        b.step([g.astype(np.float32)])
        assert w.tobytes() == w2.tobytes()
    assert a.iterations == 2


def test_master_weights_follow_the_float32_run_and_round_to_nearest():
    rng = np.random.default_rng(10)
    w = rng.standard_normal(2000).astype(bf16)
    w32 = w.astype(np.float32)
    opt = fo.Adam([w], learning_rate=1e-3, master_weights=True, state_dtype="float32")
    plain = fo.Adam([w32], learning_rate=1e-3)
    master = opt.master_params[0]
    assert master.dtype == np.float32 and np.array_equal(master, w32)
    for g in _grads(rng, (2000,), 6, bf16):
        opt.step([g])
        plain.step([g.astype(np.float32)])
        assert master.tobytes() == w32.tobytes()
        assert np.array_equal(w.view(np.uint16), w32.astype(bf16).view(np.uint16))


def test_stochastic_rounding_moves_bf16_weights_where_nearest_stalls():
    # steps far below half a bfloat16 unit: nearest never moves the weight
    w_s = np.full(4096, 1.0, dtype=bf16)
    w_n = w_s.copy()
    s = fo.SGD([w_s], learning_rate=1e-4, rounding="stochastic")
    n = fo.SGD([w_n], learning_rate=1e-4, rounding="nearest")
    g = np.ones(4096, dtype=np.float32)
    for _ in range(100):
        s.step([g])
        n.step([g])
    assert (w_n.astype(np.float32) == 1.0).all()
    np.testing.assert_allclose(w_s.astype(np.float64).mean(), 1.0 - 100 * 1e-4, atol=2e-4)


# ---- state bytes, thresholds --------------------------------------------------------

def test_state_bytes_per_param():
    n = 1 << 20
    per = {}
    for sdtype in (None, "bfloat16", "int8"):
        opt = fo.Adam([np.zeros(n, np.float32)], state_dtype=sdtype)
        per[sdtype] = sum(a.nbytes for a in opt.state_arrays()[0]) / n
    assert per == {None: 8.0, "bfloat16": 4.0, "int8": 2 * 260 / 256}
    assert per["int8"] <= 2.05


def test_min_8bit_size_keeps_small_tensors_in_float32():
    big, small = np.zeros(5000, np.float32), np.zeros(100, np.float32)
    opt = fo.Adam([big, small], state_dtype="int8")
    assert opt.state_arrays()[0][0].dtype == _core.Q8_DTYPE
    assert opt.state_arrays()[1][0].dtype == np.float32
    opt = fo.Adam([big, small], state_dtype="int8", min_8bit_size=100)
    assert opt.state_arrays()[1][0].dtype == _core.Q8_DTYPE


def test_group_state_dtype_and_what_stays_full():
    a, b = np.zeros(5000, np.float32), np.zeros(5000, np.float32)
    opt = fo.Adam([{"params": [a], "state_dtype": "int8"}, {"params": [b]}],
                  state_dtype="bfloat16")
    assert [x.dtype for x in opt.state_arrays()[0]] == [_core.Q8_DTYPE] * 2
    assert [x.dtype.name for x in opt.state_arrays()[1]] == ["bfloat16"] * 2
    assert opt.get_config()["param_groups"][0]["state_dtype"] == "int8"
    # schedule-free's z is a point of the parameter space: only v is compact
    sf = fo.ScheduleFreeAdamW([np.zeros(5000, np.float32)], state_dtype="int8")
    assert [x.dtype for x in sf.state_arrays()[0]] == [np.float32, _core.Q8_DTYPE]
    # 16-bit params: full-precision state is float32
    w = np.zeros(5000, dtype=bf16)
    opt = fo.Adam([w], state_dtype="float32")
    assert [x.dtype for x in opt.state_arrays()[0]] == [np.float32] * 2
    opt = fo.Adam([w.copy()])
    assert [x.dtype.name for x in opt.state_arrays()[0]] == ["bfloat16"] * 2


# ---- checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    dict(state_dtype="int8"), dict(state_dtype="bfloat16"),
    dict(dtype=bf16, master_weights=True, state_dtype="int8"),
    dict(dtype=np.float16)], ids=str)
def test_checkpoint_keeps_compact_state_and_resumes_bit_exact(tmp_path, case):
    case = dict(case)
    dtype = case.pop("dtype", np.float32)
    rng = np.random.default_rng(11)
    w0 = rng.standard_normal(3000).astype(np.float32).astype(dtype)
    grads = _grads(rng, (3000,), 6, dtype)
    w = w0.copy()
    opt = fo.Adam([w], learning_rate=0.01, min_8bit_size=0, seed=5, **case)
    for g in grads[:3]:
        opt.step([g])
    fo.save(tmp_path / "c.npz", opt)
    sd = opt.state_dict()
    assert [a.dtype for a in sd["state"][0]] == [a.dtype for a in opt.state_arrays()[0]]
    for g in grads[3:]:
        opt.step([g])
    # a new optimizer over new arrays, as a new process would build it
    w2 = w0.copy()
    again = fo.Adam([w2], learning_rate=0.01, min_8bit_size=0, seed=5, **case)
    fo.load(tmp_path / "c.npz", again)
    for g in grads[3:]:
        again.step([g])
    assert w2.tobytes() == w.tobytes()
    for a, b in zip(opt.state_arrays()[0], again.state_arrays()[0]):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_resume_in_a_new_process_is_bit_exact(tmp_path):
    script = r"""
import sys, numpy as np, fastopt as fo, ml_dtypes
rng = np.random.default_rng(12)
w = rng.standard_normal(4000).astype(ml_dtypes.bfloat16)
grads = [rng.standard_normal(4000).astype(ml_dtypes.bfloat16) for _ in range(6)]
opt = fo.Adam([w], learning_rate=0.01, state_dtype="int8", min_8bit_size=0, seed=99)
mode = sys.argv[1]
if mode == "resume":
    fo.load(sys.argv[2], opt)
for k, g in enumerate(grads):
    if mode == "resume" and k < 3:
        continue
    opt.step([g])
    if mode == "save" and k == 2:
        fo.save(sys.argv[2], opt)
sys.stdout.write(w.view(np.uint16).tobytes().hex()[:4000])
"""
    ck = str(tmp_path / "c.npz")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    outs = [subprocess.run([sys.executable, "-c", script, mode, ck], capture_output=True,
                           text=True, env=env, check=True).stdout for mode in ("save", "resume")]
    assert outs[0] == outs[1] and outs[0]


def test_compact_checkpoint_refused_by_a_full_precision_optimizer(tmp_path):
    w = np.zeros(5000, np.float32)
    opt = fo.Adam([w], state_dtype="int8")
    opt.step([np.ones(5000, np.float32)])
    fo.save(tmp_path / "c.npz", opt)
    other = fo.Adam([np.zeros(5000, np.float32)])
    before = [a.tobytes() for a in other.state_arrays()[0]]
    with pytest.raises(ValueError, match="state_dtype='int8'"):
        fo.load(tmp_path / "c.npz", other)
    with pytest.raises(ValueError, match="state_dtype='int8'"):
        other.load_state_dict(opt.state_dict())
    assert [a.tobytes() for a in other.state_arrays()[0]] == before
    assert other.iterations == 0


# ---- refusals ------------------------------------------------------------------------

@pytest.mark.parametrize("build,match", [
    (lambda: fo.Adam([np.zeros(9, np.float32)], state_dtype="int4"), "state_dtype must be"),
    (lambda: fo.Adam([np.zeros(9)], state_dtype="int8"), "float64"),
    (lambda: fo.ASGD([np.zeros(9, np.float32)], state_dtype="int8"), "copy of the weights"),
    (lambda: fo.SGD([np.zeros(9, np.float32)], state_dtype="int8"), "no state"),
    (lambda: fo.Lamb([np.zeros(9, bf16)]), "float32 or float64 params"),
    (lambda: fo.Lamb([np.zeros(9, np.float32)], state_dtype="bfloat16"), "trust ratio"),
    (lambda: fo.Adam([np.zeros(9, np.float32)], rounding="nearest"), "would do nothing"),
    (lambda: fo.Adam([np.zeros(9, np.float32)], master_weights=True), "would do nothing"),
    (lambda: fo.Adam([np.zeros(9, np.float32)], rounding="up"), "rounding must be"),
    (lambda: fo.Adam([np.zeros(9, np.float32)], seed=-1), "seed must be"),
    (lambda: fo.Adam([np.zeros(9, np.float32)], min_8bit_size=1.5), "min_8bit_size"),
    (lambda: fo.Adam([np.zeros(9, bf16)], use_ema=True), "use_ema"),
    (lambda: fo.Adam([np.zeros(9, bf16)], gradient_accumulation_steps=2),
     "gradient_accumulation_steps"),
    (lambda: fo.Adam([{"params": [np.zeros(9, np.float32)], "state_dtype": "int9"}]),
     "param group 0: state_dtype"),
])
def test_bad_settings_refused(build, match):
    with pytest.raises((ValueError, TypeError), match=match):
        build()


def test_bad_grads_refused_and_nothing_changes():
    w = np.ones(5000, dtype=bf16)
    x = np.ones((50, 100), np.float32)
    opt = fo.Adam([w, x], state_dtype="int8", min_8bit_size=0)
    before = [w.tobytes(), x.tobytes()] + [a.tobytes() for st in opt.state_arrays() for a in st]
    for grads, match in [
        ([np.ones(5000, np.float16), None], "bfloat16 or float32"),
        ([np.ones(5000, np.float64), None], "bfloat16 or float32"),
        ([None, fo.RowGrad([1], np.ones((1, 100), np.float32))], "compact storage"),
        # ml_dtypes' repr of a byte-swapped bfloat16 looks like the native one
        ([np.ones(5000, bf16).astype(np.dtype(bf16).newbyteorder()), None], "byte-swapped"),
    ]:
        with pytest.raises((TypeError, ValueError), match=match):
            opt.step(grads)
        after = [w.tobytes(), x.tobytes()] + [a.tobytes() for st in opt.state_arrays()
                                              for a in st]
        assert after == before
    assert opt.iterations == 0


def test_sharded_optimizer_takes_compact_state_and_16bit_params():
    """(tests/test_distributed.py runs both on 1, 2 and 3 ranks.)"""
    MPI = pytest.importorskip("mpi4py.MPI")
    from fastopt.distributed import ShardedOptimizer
    w = np.zeros(5000, np.float32)
    opt = ShardedOptimizer(fo.Adam, [w], MPI.COMM_SELF, state_dtype="int8")
    assert [a.dtype for a in opt.optimizer.state_arrays()[0]] == [_core.Q8_DTYPE] * 2
    # 16-bit params: their grads are summed in float32, the rank's pieces rounded
    # as the whole params are
    h, x = np.full(700, 0.5, bf16), np.full(300, 0.25, np.float32)
    twin_h, twin_x = h.copy(), x.copy()
    sharded = ShardedOptimizer(fo.SGD, [h, x], MPI.COMM_SELF, momentum=0.9,
                               master_weights=True)
    plain = fo.SGD([twin_h, twin_x], momentum=0.9, master_weights=True)
    for t in range(3):
        g = [np.full(700, 0.1 * t, bf16), np.full(300, 0.2, np.float32)]
        sharded.step(g)
        plain.step([g[0].astype(np.float32), g[1]])
    assert h.tobytes() == twin_h.tobytes() and x.tobytes() == twin_x.tobytes()
    assert sharded.optimizer.master_params[0].tobytes() == plain.master_params[0].tobytes()
    with pytest.raises(ValueError, match=r"grads\[0\]: expected dtype bfloat16 or float32 "
                                         r"\(params\[0\] is bfloat16\)"):
        sharded.step([np.zeros(700, np.float16), None])
    with pytest.raises(ValueError, match="master_weights"):
        ShardedOptimizer(fo.Adam, [np.zeros(9, np.float32)], MPI.COMM_SELF,
                         master_weights=True)
    with pytest.raises(ValueError, match=r"row_params: params\[0\] has compact storage"):
        ShardedOptimizer(fo.Adam, [np.zeros((5000, 2), np.float32)], MPI.COMM_SELF,
                         row_params=[0], state_dtype="int8")
    assert not w.any()


def test_torch_bfloat16_tensors_are_handed_over_without_a_copy():
    """The README's recipe: a bfloat16 torch tensor seen as ml_dtypes' bfloat16
    through an int16 view shares its memory; float16 needs no view."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.randn(3000, dtype=torch.bfloat16))
    h = torch.nn.Parameter(torch.randn(3000, dtype=torch.float16))
    w = p.data.view(torch.int16).numpy().view(bf16)
    wh = h.data.numpy()
    assert np.shares_memory(w, p.data.view(torch.int16).numpy())
    ref_w, ref_h = w.copy(), wh.copy()
    opt = fo.Adam([w, wh], learning_rate=0.01)
    twin = fo.Adam([ref_w, ref_h], learning_rate=0.01)
    for _ in range(3):
        g = torch.randn(3000, dtype=torch.bfloat16)
        gh = torch.randn(3000, dtype=torch.float16)
        opt.step([g.view(torch.int16).numpy().view(bf16), gh.numpy()])
        twin.step([g.view(torch.int16).numpy().view(bf16).copy(), gh.numpy().copy()])
    assert p.data.view(torch.int16).numpy().tobytes() == ref_w.view(np.int16).tobytes()
    assert h.data.numpy().tobytes() == ref_h.tobytes()


def test_loss_scaling_of_float16_params():
    """float16 training as Keras does it: gradients of the scaled loss, a
    step skipped (nothing written) and the scale halved on overflow."""
    w = np.full(5000, 0.5, np.float16)
    opt = fo.LossScaleOptimizer(fo.Adam([w], learning_rate=1e-3), initial_scale=2.0 ** 15,
                                dynamic_growth_steps=2)
    before = w.tobytes()
    g = np.full(5000, np.float16(60000))          # 2**15 * ~1.8: overflows to inf when scaled
    g[0] = np.inf
    opt.step([g])
    assert w.tobytes() == before and opt.dynamic_scale == 2.0 ** 14 and opt.iterations == 0
    scaled = (np.full(5000, 0.25, np.float32) * opt.dynamic_scale).astype(np.float16)
    opt.step([scaled])
    opt.step([scaled])
    assert opt.iterations == 2 and opt.dynamic_scale == 2.0 ** 15
    assert (w.astype(np.float32) < 0.5).all()
