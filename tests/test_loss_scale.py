"""LossScaleOptimizer: Keras 3's dynamic loss scaling (live against Keras when
it is installed, and as known answers recorded from it by
tests/golden_loss_scale.py), skipped steps that change nothing, checkpoints
that resume bit for bit, refusals that change nothing."""
import copy
import functools
import json
import pickle

import numpy as np
import pytest

import fastopt as fo

import golden_loss_scale as gls

GOLDEN = json.loads(gls.OUT.read_text())
ADAM = functools.partial(fo.Adam, learning_rate=0.05)
SGD = functools.partial(fo.SGD, learning_rate=0.1, momentum=0.9)


def _tol(dtype):
    # float32: Keras computes Adam's bias corrections in float32, fastopt in
    # float64 (its Adam, not the loss scale: test_the_wrapper_is_its_rule is exact)
    return {"rtol": 1e-12, "atol": 1e-14} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-5}


def fastopt_run(name, kwargs, initial_scale, growth, dtype):
    """fastopt's trajectory on the problem of tests/golden_loss_scale.py."""
    w0, raws = gls.problem()
    params = [w.astype(dtype) for w in w0]
    opt = fo.LossScaleOptimizer(getattr(fo, name)(params, **kwargs),
                                initial_scale=initial_scale, dynamic_growth_steps=growth)
    out = []
    for raw in raws:
        opt.step(gls.scaled(raw, opt.dynamic_scale, dtype))
        out.append(([p.copy() for p in params], opt.dynamic_scale, opt.step_counter,
                    opt.iterations))
    return out


def model_run(name, kwargs, initial_scale, growth, dtype):
    """The rule of the Notes of LossScaleOptimizer, written out over a bare
    inner optimizer."""
    w0, raws = gls.problem()
    params = [w.astype(dtype) for w in w0]
    inner = getattr(fo, name)(params, **kwargs)
    scale, counter = np.float32(initial_scale), 0
    out = []
    for raw in raws:
        grads = gls.scaled(raw, float(scale), dtype)
        if all(np.isfinite(g).all() for g in grads if g is not None):
            inner.step([None if g is None else g / scale for g in grads])
            counter = (counter + 1) % growth
            scale = scale * np.float32(2.0) if counter == 0 else scale
        else:
            scale, counter = scale / np.float32(2.0), 0
        out.append(([p.copy() for p in params], float(scale), counter, inner.iterations))
    return out


def _case_id(case):
    name, kwargs, scale, growth, dtype = case
    return f"{name}-{dtype}-S{scale:g}-n{growth}"


@pytest.mark.parametrize("case", gls.CASES, ids=_case_id)
def test_against_keras_live(case):
    pytest.importorskip("keras")
    mine = fastopt_run(*case)
    theirs = gls.keras_run(*case)
    dtype = case[-1]
    for step, ((p, s, c, t), (kp, ks, kc, kt)) in enumerate(zip(mine, theirs)):
        assert (s, c, t) == (ks, kc, kt), f"step {step}"
        for a, b in zip(p, kp):
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, **_tol(dtype), err_msg=f"step {step}")


def _recorded_id(c):
    return _case_id((c["optimizer"], c["kwargs"], c["initial_scale"],
                     c["dynamic_growth_steps"], c["dtype"]))


# cases Keras cannot run: the rule is fastopt's for every optimizer and convention
MORE = [
    ("Adam", {"convention": "torch", "lr": 0.05, "weight_decay": 0.1}, 1024.0, 3, "float64"),
    ("Lion", {"learning_rate": 0.01, "use_ema": True}, 2.0 ** 15, 2, "float32"),
    ("RMSprop", {"learning_rate": 0.01, "maximize": True}, 100.0, 4, "float64"),
]


@pytest.mark.parametrize("case", gls.CASES + MORE, ids=_case_id)
def test_the_wrapper_is_its_rule(case):
    """Bit for bit the rule written out over the bare inner optimizer, in
    every dtype."""
    mine, want = fastopt_run(*case), model_run(*case)
    for step, ((p, s, c, t), (wp, ws, wc, wt)) in enumerate(zip(mine, want)):
        assert (s, c, t) == (ws, wc, wt), f"step {step}"
        assert [a.tobytes() for a in p] == [a.tobytes() for a in wp], f"step {step}"


@pytest.mark.parametrize("recorded", GOLDEN["cases"], ids=_recorded_id)
def test_golden_regenerates(recorded):
    """Keras today gives the recorded answers (the generator is not stale)."""
    keras = pytest.importorskip("keras")
    assert keras.__version__.split(".")[:2] == GOLDEN["keras"].split(".")[:2]
    steps = gls.keras_run(recorded["optimizer"], recorded["kwargs"], recorded["initial_scale"],
                          recorded["dynamic_growth_steps"], recorded["dtype"])
    assert [s for _, s, _, _ in steps] == recorded["dynamic_scale"]
    assert [t for _, _, _, t in steps] == recorded["iterations"]
    for (params, _, _, _), want in zip(steps, recorded["params"]):
        for p, w in zip(params, want):
            np.testing.assert_array_equal(p, np.array(w, dtype=recorded["dtype"]))


def test_golden_covers_every_case():
    cases = [(c["optimizer"], c["kwargs"], c["initial_scale"], c["dynamic_growth_steps"],
              c["dtype"]) for c in GOLDEN["cases"]]
    assert cases == [tuple(c) for c in gls.CASES]
    assert GOLDEN["backend"] == "torch"


@pytest.mark.parametrize("recorded", GOLDEN["cases"], ids=_recorded_id)
def test_golden(recorded):
    dtype = recorded["dtype"]
    mine = fastopt_run(recorded["optimizer"], recorded["kwargs"], recorded["initial_scale"],
                       recorded["dynamic_growth_steps"], dtype)
    assert [s for _, s, _, _ in mine] == recorded["dynamic_scale"]
    assert [c for _, _, c, _ in mine] == recorded["step_counter"]
    assert [t for _, _, _, t in mine] == recorded["iterations"]
    # the problem halves and doubles the scale, and skips one step and two in a row
    scales = recorded["dynamic_scale"]
    assert any(b == 2 * a for a, b in zip(scales, scales[1:]))
    assert any(b == a / 2 for a, b in zip(scales, scales[1:]))
    for step, ((params, _, _, _), want) in enumerate(zip(mine, recorded["params"])):
        for p, w in zip(params, want):
            np.testing.assert_allclose(p, np.array(w, dtype=dtype), **_tol(dtype),
                                       err_msg=f"step {step}")


def test_unscaling_divides_in_float32_promotion():
    """g / S as Keras computes it: a scale that is not a power of two gives
    the quotient, not g * (1/S); float32 grads are divided in float32."""
    for dtype in (np.float64, np.float32):
        w = np.zeros(5, dtype=dtype)
        opt = fo.LossScaleOptimizer(fo.SGD([w], learning_rate=1.0), initial_scale=3.0)
        g = np.array([1.0, 2.0, 7.0, 1e-3, 5.5], dtype=dtype)
        g0 = g.copy()
        opt.step([g])
        np.testing.assert_array_equal(w, -(g / np.float32(3.0)))
        assert w.dtype == dtype
        np.testing.assert_array_equal(g, g0)        # the caller's grads are not touched
    # the scale is held in float32, as Keras holds it
    opt = fo.LossScaleOptimizer(fo.SGD([np.zeros(1)]), initial_scale=0.1)
    assert opt.dynamic_scale == float(np.float32(0.1)) and opt.initial_scale == 0.1
    assert opt.scale_loss(2.0) == 2.0 * float(np.float32(0.1))


def test_a_scale_below_one_overflows_quietly_as_keras():
    """Finite grads that g / S turns into inf reach the inner optimizer (Keras
    checks the grads it is given, not the quotients), without a NumPy warning."""
    import warnings
    w = np.zeros(2, dtype=np.float32)
    opt = fo.LossScaleOptimizer(fo.SGD([w], learning_rate=1.0), initial_scale=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step([np.array([3e38, 1.0], dtype=np.float32)])
    np.testing.assert_array_equal(w, [-np.inf, -2.0])
    assert (opt.iterations, opt.dynamic_scale, opt.step_counter) == (1, 0.5, 1)


def _snapshot(opt):
    inner = opt.inner_optimizer
    return ([p.tobytes() for p in inner.params],
            [[a.tobytes() for a in s] for s in inner.state_arrays()],
            inner.iterations, inner.skipped_steps, opt.dynamic_scale, opt.step_counter)


def _started(factory, dtype, steps=3, **kwargs):
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(s).astype(dtype) for s in ((4,), (3, 5), (2,))]
    opt = fo.LossScaleOptimizer(factory(params), **kwargs)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(dtype) * opt.dynamic_scale
                  for p in params])
    return opt, params, rng


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factory", [ADAM, SGD], ids=["Adam", "SGD"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_skipped_step_changes_nothing_but_the_scale(factory, dtype, bad):
    opt, params, rng = _started(factory, dtype, dynamic_growth_steps=5)
    assert opt.step_counter == 3
    for where in range(3):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        grads[where].reshape(-1)[-1] = bad
        if where == 2:
            grads[0] = None
        before = _snapshot(opt)
        scale = opt.dynamic_scale
        opt.step(grads)
        after = _snapshot(opt)
        assert after[:4] == before[:4]          # params, state, iterations, inner skips
        assert (opt.dynamic_scale, opt.step_counter) == (scale / 2, 0)


def test_row_grads_are_checked_and_unscaled():
    table = np.zeros((4, 2))
    opt = fo.LossScaleOptimizer(fo.SGD([table], learning_rate=1.0), initial_scale=4.0)
    opt.step([fo.RowGrad(np.array([1, 3, 1]), np.full((3, 2), 4.0))])
    np.testing.assert_array_equal(table, [[0, 0], [-2, -2], [0, 0], [-1, -1]])
    values = np.ones((1, 2))
    values[0, 1] = np.nan
    opt.step([fo.RowGrad(np.array([0]), values)])
    np.testing.assert_array_equal(table, [[0, 0], [-2, -2], [0, 0], [-1, -1]])
    assert (opt.dynamic_scale, opt.iterations) == (2.0, 1)


def test_growth_every_step_and_overflow_as_keras():
    w = np.zeros(1, dtype=np.float32)
    opt = fo.LossScaleOptimizer(fo.SGD([w], learning_rate=0.0), initial_scale=2.0 ** 126,
                                dynamic_growth_steps=1)
    opt.step([np.zeros(1, np.float32)])
    assert opt.dynamic_scale == 2.0 ** 127 and opt.step_counter == 0
    opt.step([np.zeros(1, np.float32)])
    assert opt.dynamic_scale == np.inf          # float32 overflow, uncapped as in Keras


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factory", [ADAM, SGD], ids=["Adam", "SGD"])
def test_checkpoint_round_trip_resumes_bit_exact(factory, dtype, tmp_path):
    opt, params, _ = _started(factory, dtype, steps=4, initial_scale=64.0,
                              dynamic_growth_steps=3)
    assert opt.step_counter == 1 and opt.dynamic_scale == 128.0
    path = tmp_path / "ckpt.npz"
    fo.save(path, opt)
    sd = opt.state_dict()

    def tail(o, ps, seed):
        rng = np.random.default_rng(seed)
        out = []
        for k in range(9):
            grads = [rng.standard_normal(p.shape).astype(dtype) * o.dynamic_scale for p in ps]
            if k in (2, 5):
                grads[1][0, 0] = np.inf
            o.step(grads)
            out.append(_snapshot(o))
        return out

    want = tail(opt, params, 3)
    assert len({s[-2] for s in want}) > 1       # the tail halves and doubles

    # from the file, into a fresh optimizer over fresh parameters
    fresh = [np.zeros_like(p) for p in params]
    other = fo.LossScaleOptimizer(factory(fresh), initial_scale=64.0, dynamic_growth_steps=3)
    fo.load(path, other)
    assert (other.dynamic_scale, other.step_counter, other.iterations) == (128.0, 1, 4)
    assert tail(other, fresh, 3) == want

    # from the state dict, into the first optimizer (params from the file)
    opt.load_state_dict(sd)
    for p, q in zip(params, fo.checkpoint.read(path)["params"]):
        np.copyto(p, q)
    assert tail(opt, params, 3) == want

    # a copy continues as the original does
    opt.load_state_dict(sd)
    for p, q in zip(params, fo.checkpoint.read(path)["params"]):
        np.copyto(p, q)
    twin = copy.deepcopy(opt)
    assert tail(twin, twin.params, 3) == want
    twin = pickle.loads(pickle.dumps(opt))
    assert tail(twin, twin.params, 3) == want


@pytest.mark.parametrize("inner,exc,pattern", [
    ([1.0], TypeError, "inner_optimizer: expected a fastopt optimizer .* got list"),
    ("lso", TypeError, "got LossScaleOptimizer: it already scales the loss"),
    ("multi", TypeError, "got MultiOptimizer"),
])
def test_refuses_what_is_not_a_fastopt_optimizer(inner, exc, pattern):
    w = np.zeros(2)
    if inner == "lso":
        inner = fo.LossScaleOptimizer(fo.SGD([w]))
    elif inner == "multi":
        inner = fo.MultiOptimizer([w], {"sgd": fo.SGD}, default="sgd")
    with pytest.raises(exc, match=pattern):
        fo.LossScaleOptimizer(inner)


@pytest.mark.parametrize("kwargs,exc,pattern", [
    ({"initial_scale": 0.0}, ValueError, "initial_scale must be a positive float .* got 0.0"),
    ({"initial_scale": -2.0}, ValueError, "initial_scale must be .* got -2.0"),
    ({"initial_scale": float("nan")}, ValueError, "initial_scale .* got nan"),
    ({"initial_scale": float("inf")}, ValueError, "initial_scale .* got inf"),
    ({"initial_scale": 1e39}, ValueError, r"finite and not zero in float32 .* got 1e\+39"),
    ({"initial_scale": 1e-46}, ValueError, "not zero in float32"),
    ({"initial_scale": 10 ** 400}, ValueError, "initial_scale .* got an int of 1329 bits"),
    ({"dynamic_growth_steps": 2 ** 63}, ValueError, "dynamic_growth_steps .* got 92233"),
    ({"initial_scale": True}, TypeError, "initial_scale must be a positive float; got True"),
    ({"initial_scale": "1024"}, TypeError, "initial_scale must be a positive float"),
    ({"dynamic_growth_steps": 0}, ValueError, "dynamic_growth_steps must be an int >= 1 .* got 0"),
    ({"dynamic_growth_steps": -3}, ValueError, "dynamic_growth_steps must be .* got -3"),
    ({"dynamic_growth_steps": 2.0}, ValueError, "dynamic_growth_steps must be .* got 2.0"),
    ({"dynamic_growth_steps": True}, ValueError, "dynamic_growth_steps must be .* got True"),
    ({"dynamic": False}, TypeError, "unexpected keyword argument 'dynamic'"),
])
def test_refuses_bad_settings(kwargs, exc, pattern):
    w = np.ones(2)
    inner = fo.Adam([w])
    with pytest.raises(exc, match=pattern):
        fo.LossScaleOptimizer(inner, **kwargs)
    assert inner.iterations == 0 and not inner.skip_nonfinite


def test_refuses_an_inner_optimizer_that_skips_nonfinite_steps_itself():
    w = np.ones(2)
    with pytest.raises(ValueError, match="inner_optimizer has skip_nonfinite=True: .* itself "
                                         ".* Set the inner optimizer's skip_nonfinite=False"):
        fo.LossScaleOptimizer(fo.Adam([w], skip_nonfinite=True))
    # set after wrapping: the step refuses, nothing changes
    opt, params, _ = _started(ADAM, np.float64, dynamic_growth_steps=10)
    opt.inner_optimizer.skip_nonfinite = True
    before = _snapshot(opt)
    for bad in (np.inf, 1.0):
        grads = [np.full(p.shape, bad) for p in params]
        with pytest.raises(ValueError, match="skip_nonfinite=True"):
            opt.step(grads)
        assert _snapshot(opt) == before


@pytest.mark.parametrize("which", ["count", "dtype", "shape", "type", "ndarray", "alias", "int",
                                   "all_none", "eval", "swapped"])
@pytest.mark.parametrize("finite", [True, False])
def test_refused_steps_change_nothing(which, finite):
    """Bad grads raise before the check of finiteness: neither the scale nor
    the counter moves, whether or not the grads hold NaN or Inf."""
    factory = ADAM
    if which == "eval":
        factory = functools.partial(fo.ScheduleFreeAdamW, learning_rate=0.01)
    if which == "swapped":
        factory = functools.partial(fo.SGD, learning_rate=0.1, use_swa=True)
    opt, params, rng = _started(factory, np.float64, dynamic_growth_steps=10)
    grads = [rng.standard_normal(p.shape) for p in params]
    if not finite:
        grads[0][0] = np.nan
    exc, pattern = ValueError, None
    if which == "count":
        grads = grads[:2]
        pattern = "expected 3 grads"
    elif which == "dtype":
        grads[1] = grads[1].astype(np.float32)
        exc, pattern = TypeError, r"grads\[1\]"
    elif which == "shape":
        grads[2] = np.ones(3)
        pattern = r"grads\[2\]"
    elif which == "type":
        grads[1] = grads[1].tolist()
        exc, pattern = TypeError, r"grads\[1\]"
    elif which == "ndarray":
        grads = grads[0]
        exc, pattern = TypeError, "Wrap a single gradient in a list"
    elif which == "int":
        grads = 3
        exc, pattern = TypeError, "grads: expected a list of 3 gradients .* got int"
    elif which == "alias":
        grads[2] = params[2]
        pattern = r"grads\[2\]"
    elif which == "all_none":
        if not finite:
            pytest.skip("no grad to hold a NaN")
        grads = [None] * 3
        pattern = "No gradients provided for any variable"
    elif which == "eval":
        opt.inner_optimizer.eval()
        pattern = "eval mode"
    elif which == "swapped":
        opt.inner_optimizer.swap_averages()
        exc, pattern = RuntimeError, "swap_averages"
    before = _snapshot(opt)
    with pytest.raises(exc, match=pattern):
        opt.step(grads)
    assert _snapshot(opt) == before


def test_refused_loads_change_nothing(tmp_path):
    opt, params, _ = _started(ADAM, np.float64, steps=4, dynamic_growth_steps=3)
    sd = opt.state_dict()
    opt.step([np.ones(p.shape) for p in params])
    before = _snapshot(opt)
    bad = [
        ({**sd, "class": "Adam"}, "not a LossScaleOptimizer state"),
        (sd["inner_optimizer"], "not a LossScaleOptimizer state .*'Adam'"),
        ({**sd, "dynamic_scale": -1.0}, "dynamic_scale: expected a float32 value >= 0"),
        ({**sd, "dynamic_scale": 0.1}, "dynamic_scale: expected a float32 value"),
        ({**sd, "dynamic_scale": float("nan")}, "dynamic_scale"),
        ({**sd, "dynamic_scale": "8"}, "dynamic_scale"),
        ({**sd, "dynamic_scale": 10 ** 400}, "dynamic_scale: .* got an int of 1329 bits"),
        ({**sd, "dynamic_scale": 1e300}, "dynamic_scale"),
        ({**sd, "step_counter": 3}, "step_counter: 3 finite steps counted, .* "
                                    "dynamic_growth_steps=3"),
        ({**sd, "step_counter": -1}, "step_counter"),
        ({k: v for k, v in sd.items() if k != "inner_optimizer"}, "lacks 'inner_optimizer'"),
        ({**sd, "inner_optimizer": {**sd["inner_optimizer"], "class": "SGD"}},
         "inner_optimizer: state is of a SGD optimizer"),
    ]
    for state, pattern in bad:
        with pytest.raises(ValueError, match=pattern):
            opt.load_state_dict(state)
        assert _snapshot(opt) == before
    # a checkpoint of another optimizer, and one of a wrapper with other parameters
    fo.save(tmp_path / "adam.npz", opt.inner_optimizer)
    other = fo.LossScaleOptimizer(fo.Adam([np.zeros(4)]))
    other.step([np.ones(4) * other.dynamic_scale])
    fo.save(tmp_path / "other.npz", other)
    for name, pattern in (("adam.npz", "not a LossScaleOptimizer state"),
                          ("other.npz", "has 1 params; the optimizer has 3")):
        with pytest.raises(ValueError, match=pattern):
            fo.load(tmp_path / name, opt)
        assert _snapshot(opt) == before


def test_attributes_as_keras():
    w = np.zeros(3)
    inner = fo.Adam([w], learning_rate=0.01)
    opt = fo.LossScaleOptimizer(inner)
    assert (opt.initial_scale, opt.dynamic_scale, opt.dynamic_growth_steps) == (
        32768.0, 32768.0, 2000)
    assert opt.inner_optimizer is inner and opt.params[0] is w and opt.lock is inner.lock
    assert opt.scale_loss(0.5) == 16384.0
    np.testing.assert_array_equal(opt.scale_loss(np.array([1.0, 2.0], np.float32)),
                                  np.array([32768.0, 65536.0], np.float32))
    opt.learning_rate = 0.5
    assert inner.learning_rate == 0.5 and opt.learning_rate == 0.5
    opt.apply_gradients([(np.ones(3) * 32768.0, w)])
    assert opt.iterations == inner.iterations == 1 and opt.step_counter == 1
    opt.apply_gradients([])                       # no pairs: nothing, as in Keras
    assert opt.iterations == 1 and opt.step_counter == 1
    with pytest.raises(ValueError, match="pair 0 names a parameter"):
        opt.apply_gradients([(np.ones(3), np.ones(3))])
    assert "LossScaleOptimizer(Adam(" in repr(opt)


def test_config_round_trip_keeps_behaviour():
    w = np.ones((2, 3), np.float32)
    inner = fo.Adam([{"params": [w], "learning_rate": 0.02}], beta_1=0.8, clipvalue=0.5)
    opt = fo.LossScaleOptimizer(inner, initial_scale=256.0, dynamic_growth_steps=2)
    cfg = json.loads(json.dumps(opt.get_config()))
    assert cfg["inner_optimizer"]["class_name"] == "Adam"
    assert (cfg["initial_scale"], cfg["dynamic_growth_steps"]) == (256.0, 2)
    w2 = w.copy()
    twin = fo.LossScaleOptimizer.from_config(cfg, [w2])
    assert twin.inner_optimizer.param_groups[0]["learning_rate"] == 0.02
    rng = np.random.default_rng(3)
    for k in range(7):
        g = rng.standard_normal(w.shape).astype(np.float32) * opt.dynamic_scale
        if k == 3:
            g[1, 1] = np.nan
        opt.step([g])
        twin.step([g.copy()])
        assert w.tobytes() == w2.tobytes()
        assert (twin.dynamic_scale, twin.step_counter) == (opt.dynamic_scale, opt.step_counter)
    for bad in ({**cfg, "inner_optimizer": {"class_name": "Nope", "config": {}}},
                {k: v for k, v in cfg.items() if k != "inner_optimizer"}):
        with pytest.raises(ValueError, match="inner_optimizer: expected .*'class_name'"):
            fo.LossScaleOptimizer.from_config(bad, [w2])
    with pytest.raises(ValueError, match="dynamic_growth_steps must be"):
        fo.LossScaleOptimizer.from_config({**cfg, "dynamic_growth_steps": 0}, [w2])
