"""The optimizer-wide options (spec §1.0 and §2.1) against the float64 reference,
and the semantics each one promises: clipnorm, global_clipnorm, weight-decay
exclusion, EMA, gradient accumulation, skip_nonfinite."""
import math

import numpy as np
import pytest

import fastopt as fo
from fastopt import _core
from fastopt.optimizers import REGISTRY

import optim_db
import reference
from conftest import expected_team

SIZES = [5, 33, 0, 1100, 1]


def lr_schedule(step):
    return 0.02 * (0.9 ** step) * (1.0 + 0.5 * (step % 2))


def _problem(seed, nsteps, skip=True, dtype=np.float64, name=None):
    """Params of SIZES (in the shapes optimizer ``name`` takes:
    optim_db.param_shape) and their grads, some None."""
    rng = np.random.default_rng(seed)
    shapes = [optim_db.param_shape(name, n) for n in SIZES]
    params = [rng.standard_normal(sh).astype(dtype) for sh in shapes]
    grads = []
    for s in range(nsteps):
        step = [(rng.standard_normal(sh) * (0.2 + s % 3)).astype(dtype) for sh in shapes]
        if skip:
            step = [None if (i + s) % 4 == 0 else g for i, g in enumerate(step)]
        grads.append(step)
    return params, grads


def _hyper(opt):
    return lambda step: opt.hyperparameters(step=step)


def _compare(name, convention, kwargs, nsteps=10, exclude=None, skip=True, seed=0,
             check_ema=False):
    params, grads = _problem(seed, nsteps, skip, name=name)
    opt = REGISTRY[name](params, learning_rate=lr_schedule, convention=convention, **kwargs)
    ref_opts = {k: v for k, v in kwargs.items() if k in reference.OPTIONS}
    ref = reference.Reference(name, convention, params, _hyper(opt),
                              exclude=exclude or (), **ref_opts)
    if exclude:
        opt.exclude_from_weight_decay(var_list=[params[i] for i in exclude])
    for g in grads:
        ref.step(g)
        opt.step(g)
    for i, (w, r) in enumerate(zip(params, ref.w)):
        np.testing.assert_allclose(w, r, rtol=1e-11, atol=1e-13, err_msg=f"params[{i}]")
    if check_ema:
        for i, (a, r) in enumerate(zip(opt.averages, ref.avg)):
            np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-13, err_msg=f"average {i}")
    assert opt.iterations == ref.iterations
    return opt, ref, params


CONVENTIONS = optim_db.name_conventions()


def _base_kwargs(name):
    return dict(optim_db.info(name).stateful)


# ---- every optimizer x convention with every option ------------------------------

@pytest.mark.parametrize(("name", "convention"), CONVENTIONS)
def test_clipnorm_and_weight_decay_exclusion(name, convention):
    kw = dict(_base_kwargs(name), clipnorm=0.7, weight_decay=0.05)
    _compare(name, convention, kw, exclude=[1, 3])


@pytest.mark.parametrize(("name", "convention"), CONVENTIONS)
def test_global_clipnorm_and_ema(name, convention):
    kw = dict(_base_kwargs(name), global_clipnorm=3.0, use_ema=True, ema_momentum=0.8,
              ema_overwrite_frequency=4)
    _compare(name, convention, kw, check_ema=True)


@pytest.mark.parametrize(("name", "convention"), CONVENTIONS)
def test_gradient_accumulation_and_skip_nonfinite(name, convention):
    kw = dict(_base_kwargs(name), gradient_accumulation_steps=3, skip_nonfinite=True,
              clipvalue=1.5, use_ema=True)
    params, grads = _problem(4, 13, name=name)
    grads[5] = [None if g is None else g.copy() for g in grads[5]]
    grads[5][1].flat[2] = np.nan
    grads[8] = [None if g is None else g.copy() for g in grads[8]]
    grads[8][3].flat[0] = -np.inf
    opt = REGISTRY[name](params, learning_rate=lr_schedule, convention=convention, **kw)
    ref = reference.Reference(name, convention, params, _hyper(opt),
                              **{k: v for k, v in kw.items() if k in reference.OPTIONS})
    for g in grads:
        ref.step(g)
        opt.step(g)
    for w, r in zip(params, ref.w):
        np.testing.assert_allclose(w, r, rtol=1e-11, atol=1e-13)
    for a, r in zip(opt.averages, ref.avg):
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-13)
    assert opt.skipped_steps == ref.skipped == 2
    assert opt.micro_steps == 11 and opt.iterations == 11 // 3


# ---- semantics of each option ----------------------------------------------------

def test_only_one_clip_option():
    with pytest.raises(ValueError, match="only one of clipnorm, global_clipnorm and clipvalue"):
        fo.Adam([np.zeros(2)], clipnorm=1.0, clipvalue=0.5)
    with pytest.raises(ValueError, match="clipnorm must be a positive finite float"):
        fo.Adam([np.zeros(2)], clipnorm=0.0)
    with pytest.raises(ValueError, match="global_clipnorm must be a positive finite float"):
        fo.Adam([np.zeros(2)], global_clipnorm=math.inf)


def test_option_validation_errors():
    w = [np.zeros(2)]
    with pytest.raises(ValueError, match="ema_momentum must be a float in \\[0, 1\\]; got 1.5"):
        fo.SGD(w, use_ema=True, ema_momentum=1.5)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be an int >= 2"):
        fo.SGD(w, gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="ema_overwrite_frequency must be an int >= 1"):
        fo.SGD(w, use_ema=True, ema_overwrite_frequency=0)
    with pytest.raises(TypeError, match="skip_nonfinite must be a bool"):
        fo.SGD(w, skip_nonfinite="yes")


def test_clipnorm_is_per_tensor():
    a, b = np.zeros(2), np.zeros(2)
    opt = fo.SGD([a, b], learning_rate=1.0, clipnorm=1.0)
    opt.step([np.array([3.0, 4.0]), np.array([0.3, 0.4])])
    np.testing.assert_allclose(a, [-0.6, -0.8], rtol=1e-15)     # norm 5 -> 1
    np.testing.assert_array_equal(b, [-0.3, -0.4])              # below the bound: untouched


def test_global_clipnorm_scales_all_grads_by_one_factor():
    a, b = np.zeros(2), np.zeros(1)
    opt = fo.SGD([a, b], learning_rate=1.0, global_clipnorm=1.0)
    opt.step([np.array([3.0, 0.0]), np.array([4.0])])           # global norm 5
    np.testing.assert_allclose(np.concatenate([a, b]), [-0.6, 0.0, -0.8], rtol=1e-15)


def test_global_clipnorm_nonfinite_norm_gives_nan_as_keras():
    a, b = np.zeros(2), np.zeros(2)
    opt = fo.SGD([a, b], learning_rate=1.0, global_clipnorm=1.0)
    opt.step([np.array([np.inf, 0.0]), np.array([1.0, 1.0])])
    assert np.isnan(a).all() and np.isnan(b).all()


def test_global_clipnorm_factor_independent_of_threads():
    """One reduction over all grads: the same bits for any thread count."""
    rng = np.random.default_rng(2)
    sizes = [70001, 3, 130000, 4096]
    p0 = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    gs = [[rng.standard_normal(n).astype(np.float32) * 3 for n in sizes] for _ in range(3)]
    results = []
    default = _core.parallel_threshold()
    for threads, threshold in ((1, 10**9), (2, 0), (3, 0), (4, default)):
        _core.set_parallel_threshold(threshold)
        ps = [p.copy() for p in p0]
        opt = fo.Lamb(ps, global_clipnorm=10.0, num_threads=threads)
        _core.team_seen()
        for g in gs:
            opt.step(g)
        # the split was real: 200k elements are above the default threshold too
        assert _core.team_seen() == expected_team(threads), threads
        results.append(ps)
    for ps in results[1:]:
        for x, y in zip(results[0], ps):
            assert np.array_equal(x, y)


@pytest.mark.parametrize("convention", ["keras", "torch"])
def test_exclude_from_weight_decay_by_name_from_param_groups(convention):
    kernel, bias, other = np.ones(3), np.ones(2), np.ones(2)
    groups = [{"params": [kernel, bias], "names": ["dense/kernel", "dense/bias"]},
              {"params": [other], "name": "norm/gamma"}]
    opt = fo.SGD(groups, learning_rate=0.1, weight_decay=0.5, convention=convention)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma"])
    zero = [np.zeros(3), np.zeros(2), np.zeros(2)]
    opt.step(zero)
    np.testing.assert_allclose(kernel, 0.95)     # decoupled 1 - lr*wd, or L2 g = wd*w
    np.testing.assert_array_equal(bias, 1.0)
    np.testing.assert_array_equal(other, 1.0)
    opt.exclude_from_weight_decay()              # cleared: every param decays again
    opt.step(zero)
    np.testing.assert_allclose(bias, 0.95)


def test_exclude_from_weight_decay_errors_and_config():
    a, b = np.ones(2), np.ones(2)
    opt = fo.AdamW([{"params": [a, b], "names": ["w", "b"]}])
    with pytest.raises(ValueError, match="var_list\\[0\\] is not a parameter of this optimizer"):
        opt.exclude_from_weight_decay(var_list=[np.ones(2)])
    with pytest.raises(TypeError, match="var_names must be a list of strings"):
        opt.exclude_from_weight_decay(var_names="b")
    with pytest.raises(ValueError, match="'names' has 1 entries for 2 params"):
        fo.SGD([{"params": [a, b], "names": ["w"]}])
    cfg = opt.get_config()
    assert cfg["param_groups"][0]["names"] == ["w", "b"]
    clone = fo.AdamW.from_config(cfg, [np.ones(2), np.ones(2)])
    assert clone._param_names == ["w", "b"]


def test_ema_first_update_copies_then_averages_and_finalize():
    w = np.array([1.0, 2.0])
    opt = fo.SGD([w], learning_rate=1.0, use_ema=True, ema_momentum=0.5)
    opt.finalize()                                # before any step: averages are the weights
    np.testing.assert_array_equal(w, [1.0, 2.0])
    opt.step([np.array([1.0, 1.0])])
    np.testing.assert_array_equal(opt.averages[0], [0.0, 1.0])     # a copy of w
    opt.step([np.array([1.0, 1.0])])
    np.testing.assert_array_equal(w, [-1.0, 0.0])
    np.testing.assert_array_equal(opt.averages[0], [-0.5, 0.5])
    opt.finalize()
    np.testing.assert_array_equal(w, [-0.5, 0.5])
    with pytest.raises(AttributeError, match="use_ema=True"):
        fo.SGD([np.zeros(1)]).averages


def test_ema_overwrite_frequency():
    w = np.zeros(1)
    opt = fo.SGD([w], learning_rate=1.0, use_ema=True, ema_momentum=0.5,
                 ema_overwrite_frequency=2)
    opt.step([np.array([1.0])])        # w -1, avg -1 (copy)
    opt.step([np.array([1.0])])        # w -2, avg -1.5, then w <- avg
    np.testing.assert_array_equal(w, [-1.5])


def test_gradient_accumulation_counts_and_schedule_step():
    """Keras: the schedule sees calls, bias correction counts updates; torch
    convention: both count updates."""
    for convention, expected in (("keras", [1, 3, 5]), ("torch", [0, 1, 2])):
        seen = []

        def lr(step, seen=seen):
            seen.append(step)
            return 0.1

        w = np.zeros(2)
        opt = fo.SGD([w], learning_rate=lr, gradient_accumulation_steps=2,
                     convention=convention)
        for k in range(6):
            opt.step([np.full(2, float(k))])
        assert sorted(set(seen)) == expected, convention
        assert opt.iterations == 3 and opt.micro_steps == 6
        # (0+1)/2 + (2+3)/2 + (4+5)/2 = 7.5 at lr 0.1
        np.testing.assert_allclose(w, -0.75, rtol=1e-15)


def test_gradient_accumulation_none_grad_at_update_drops_that_accumulator():
    a, b = np.zeros(1), np.zeros(1)
    opt = fo.SGD([a, b], learning_rate=1.0, gradient_accumulation_steps=2)
    opt.step([np.ones(1), np.ones(1)])
    opt.step([np.ones(1), None])        # b gets no update; its accumulator is reset (Keras)
    opt.step([np.ones(1), np.ones(1)])
    opt.step([np.ones(1), np.ones(1)])
    np.testing.assert_array_equal(a, [-2.0])
    np.testing.assert_array_equal(b, [-1.0])


def test_skip_nonfinite_refuses_the_whole_step():
    w = np.ones(3)
    opt = fo.Adam([w], skip_nonfinite=True, use_ema=True)
    opt.step([np.full(3, 0.5)])
    before = (w.copy(), [a.copy() for a in opt.state_arrays()[0]], opt.averages[0].copy())
    for bad in (np.nan, np.inf, -np.inf):
        opt.step([np.array([0.1, bad, 0.2])])
    assert np.array_equal(w, before[0])
    assert all(np.array_equal(a, b) for a, b in zip(opt.state_arrays()[0], before[1]))
    assert np.array_equal(opt.averages[0], before[2])
    assert opt.skipped_steps == 3 and opt.iterations == 1
    opt.step([np.full(3, 0.5)])
    assert opt.iterations == 2 and not np.array_equal(w, before[0])


def test_nonfinite_grads_propagate_by_default():
    w = np.ones(2)
    fo.Adam([w]).step([np.array([np.nan, 0.1])])
    assert np.isnan(w[0]) and np.isfinite(w[1])


def test_state_dict_with_every_option_resumes_bit_identically(tmp_path):
    params0, grads = _problem(9, 11)
    from fastopt import schedules
    kw = dict(learning_rate=schedules.ExponentialDecay(0.02, 3, 0.5), global_clipnorm=2.0,
              use_ema=True,
              ema_overwrite_frequency=3, gradient_accumulation_steps=2, skip_nonfinite=True)
    grads[3] = [None if g is None else np.full_like(g, np.nan) for g in grads[3]]
    straight = [p.copy() for p in params0]
    opt = fo.Nadam(straight, **kw)
    for g in grads:
        opt.step(g)
    first = [p.copy() for p in params0]
    opt1 = fo.Nadam(first, **kw)
    for g in grads[:6]:
        opt1.step(g)
    fo.save(tmp_path / "ck.npz", opt1)
    resumed = [np.zeros_like(p) for p in params0]
    opt2 = fo.Nadam(resumed, **kw)
    fo.load(tmp_path / "ck.npz", opt2)
    assert (opt2.iterations, opt2.micro_steps, opt2.skipped_steps) == (
        opt1.iterations, opt1.micro_steps, opt1.skipped_steps)
    for g in grads[6:]:
        opt2.step(g)
    for a, b in zip(straight, resumed):
        assert np.array_equal(a, b)
    for a, b in zip(opt.averages, opt2.averages):
        assert np.array_equal(a, b)
    other = fo.Nadam([np.zeros_like(p) for p in params0], learning_rate=kw["learning_rate"])
    with pytest.raises(ValueError, match="ema but this optimizer keeps none"):
        fo.load(tmp_path / "ck.npz", other)


# ---- optimizer-specific semantics ---------------------------------------------------

def test_lion_sign_of_zero_is_zero():
    w = np.array([1.0, 1.0, 1.0])
    opt = fo.Lion([w], learning_rate=0.1)
    opt.step([np.array([0.0, 1e-30, -0.0])])
    np.testing.assert_array_equal(w, [1.0, 0.9, 1.0])


def test_lamb_trust_ratio_per_tensor():
    a, b = np.array([3.0, 4.0]), np.zeros(2)
    opt = fo.Lamb([a, b], learning_rate=0.1, epsilon=0.0)
    opt.step([np.array([1.0, 1.0]), np.array([1.0, -1.0])])
    # a: ||w|| = 5, r = (1, 1): phi = 5/sqrt(2); b: ||w|| = 0 -> phi = 1
    np.testing.assert_allclose(a, np.array([3.0, 4.0]) - 0.1 * 5 / math.sqrt(2), rtol=1e-14)
    np.testing.assert_allclose(b, [-0.1, 0.1], rtol=1e-14)


def test_rmsprop_centered_clamps_negative_variance():
    """v - mg^2 rounds below 0 under a constant gradient; the update stays finite."""
    w = np.zeros(64, dtype=np.float32)
    g = np.linspace(0.1, 3.0, 64).astype(np.float32)
    opt = fo.RMSprop([w], learning_rate=1e-3, centered=True, epsilon=1e-8, rho=0.9,
                     convention="torch")
    went_negative = False
    for _ in range(300):
        opt.step([g])
        st = opt.state[0]
        went_negative |= bool((st["v"] - st["mg"] * st["mg"] < 0).any())
    assert went_negative
    assert np.isfinite(w).all()


@pytest.mark.parametrize("convention", ["keras", "torch"])
def test_nadam_products_with_scheduled_beta_and_skipped_params(convention):
    """Keras: one product advanced every update; torch: per parameter.  A step
    whose grads are all None is refused in the keras convention (as Keras 3
    refuses it) and skips every parameter in the torch one."""
    rng = np.random.default_rng(5)
    params = [rng.standard_normal(4) for _ in range(3)]
    b1 = lambda s: 0.9 - 0.02 * (s % 4)  # noqa: E731
    opt = fo.Nadam(params, learning_rate=0.05, beta_1=b1, convention=convention)
    ref = reference.Reference("Nadam", convention, params, _hyper(opt))
    for s in range(9):
        grads = [None if (i * 2 + s) % 3 == 0 else rng.standard_normal(4) for i in range(3)]
        if s == 4:
            grads = [None, None, None]
            if convention == "keras":
                before = [p.copy() for p in params], opt.iterations
                with pytest.raises(ValueError, match="No gradients provided for any variable"):
                    opt.step(grads)
                assert all((p == q).all() for p, q in zip(params, before[0]))
                assert opt.iterations == before[1]
                continue
        opt.step(grads)
        ref.step(grads)
    for w, r in zip(params, ref.w):
        np.testing.assert_allclose(w, r, rtol=1e-12)


def test_nadam_momentum_decay_presets():
    """Keras 3 is momentum_decay=1.0; torch's (and Keras 2's) 0.004."""
    g = [np.array([0.3, -0.1])]
    out = {}
    for conv, md in (("keras", None), ("keras", 0.004), ("torch", 1.0), ("torch", None)):
        w = np.zeros(2)
        opt = fo.Nadam([w], learning_rate=0.01, epsilon=0.0, momentum_decay=md, convention=conv)
        for _ in range(5):
            opt.step(g)
        out[(conv, md)] = w
    np.testing.assert_allclose(out[("keras", None)], out[("torch", 1.0)], rtol=1e-12)
    np.testing.assert_allclose(out[("keras", 0.004)], out[("torch", None)], rtol=1e-12)
    assert not np.allclose(out[("keras", None)], out[("torch", None)], rtol=1e-3)


def test_adagrad_initial_accumulator_and_ftrl_validation():
    w = np.zeros(2)
    assert np.array_equal(fo.Adagrad([w]).state[0]["accumulator"], [0.1, 0.1])
    assert np.array_equal(fo.Adagrad([w], convention="torch").state[0]["accumulator"], [0, 0])
    with pytest.raises(TypeError, match="initial_accumulator_value sets the initial state"):
        fo.Adagrad([w], initial_accumulator_value=lambda s: 0.1)
    with pytest.raises(ValueError, match="learning_rate_power must be <= 0; got 0.5"):
        fo.Ftrl([w], learning_rate_power=0.5)
    with pytest.raises(ValueError, match="learning_rate must be > 0 for Ftrl"):
        fo.Ftrl([w], learning_rate=0.0)
    opt = fo.Ftrl([w], learning_rate=lambda s: 0.0)
    with pytest.raises(ValueError, match="step 0: learning_rate must be > 0 for Ftrl"):
        opt.step([np.ones(2)])
    assert opt.iterations == 0 and np.array_equal(w, [0.0, 0.0])


def test_every_optimizer_is_exported():
    for name in REGISTRY:
        assert getattr(fo, name) is REGISTRY[name] and name in fo.__all__, name
