"""Every kernel path against the float64 reference, and bit-identity across
thread counts, SIMD variants and the parallel/serial split."""
import os

import numpy as np
import pytest

import fastopt as fo
from fastopt import _core
from fastopt.optimizers import REGISTRY

import optim_db
import reference
from conftest import SIMD_VARIANTS, expected_team

SIZES = [0, 1, 7, 17, 1023, 65537]
PAIRS = optim_db.expand()


def lr_schedule(step):
    """A learning rate that changes every step (where the conventions differ most)."""
    return 0.01 * (0.93 ** step) * (1.0 + 0.3 * (step % 3))


def build(case, convention, params, lr=lr_schedule, **extra):
    name, kwargs, _ = case
    return REGISTRY[name](params, learning_rate=lr, convention=convention, **kwargs, **extra)


def reference_for(case, convention, opt, params):
    name, kwargs, _ = case
    options = {k: kwargs[k] for k in reference.OPTIONS if k in kwargs}
    return reference.Reference(name, convention, params,
                               lambda step: opt.hyperparameters(step=step), **options)


def make_problem(rng, sizes, dtype, nsteps, name=None):
    """Params of ``sizes`` (in the shapes optimizer ``name`` takes:
    optim_db.param_shape) and ``nsteps`` lists of grads."""
    shapes = [optim_db.param_shape(name, n) for n in sizes]
    params = [rng.standard_normal(sh).astype(dtype) for sh in shapes]
    grads = [[(rng.standard_normal(sh) * 0.3).astype(dtype) for sh in shapes]
             for _ in range(nsteps)]
    return params, grads


def test_every_optimizer_has_a_reference_and_cases():
    covered = {c[0] for c in optim_db.all_cases()}
    for name, cls in REGISTRY.items():
        assert name in covered, f"{name} has no cases in tests/optim_db.py"
        rules = optim_db.info(name).rules
        for conv in cls.conventions:
            assert conv in rules, f"no reference for {name} ({conv})"


def test_every_kernel_is_used():
    used = {cls.kernel for cls in REGISTRY.values()} | optim_db.OPTION_KERNELS
    assert used >= set(_core.KERNELS), f"kernels without an optimizer: {set(_core.KERNELS) - used}"


def _tolerance(dtype):
    return (1e-11, 1e-13) if dtype == np.float64 else (3e-5, 3e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("case", "convention"), [p for p, _ in PAIRS], ids=[i for _, i in PAIRS])
def test_matches_reference(case, convention, dtype, rng):
    params, grads = make_problem(rng, SIZES, dtype, nsteps=12, name=case[0])
    opt = build(case, convention, params)
    ref = reference_for(case, convention, opt, params)
    for step_grads in grads:
        ref.step(step_grads)
        opt.step(step_grads)
    rtol, atol = _tolerance(dtype)
    for i, (w, r) in enumerate(zip(params, ref.w)):
        np.testing.assert_allclose(w, r, rtol=rtol, atol=atol, err_msg=f"params[{i}]")


@pytest.mark.parametrize(("case", "convention"), [p for p, _ in PAIRS], ids=[i for _, i in PAIRS])
def test_matches_reference_with_skipped_grads(case, convention, rng):
    """None grads: the param and its state stay put; torch counts steps per param."""
    params, grads = make_problem(rng, [5, 33, 0, 8], np.float64, nsteps=8, name=case[0])
    opt = build(case, convention, params)
    ref = reference_for(case, convention, opt, params)
    for s, step_grads in enumerate(grads):
        step_grads = [None if (i + s) % 3 == 0 else g for i, g in enumerate(step_grads)]
        ref.step(step_grads)
        opt.step(step_grads)
    for i, (w, r) in enumerate(zip(params, ref.w)):
        np.testing.assert_allclose(w, r, rtol=1e-11, atol=1e-13, err_msg=f"params[{i}]")


# The largest tensor: far above the parallel threshold (every thread gets
# chunks) with a ragged last chunk.  .ci/sanitize, where every access is
# instrumented, sets a smaller one that is still both.
BIG = int(os.environ.get("FASTOPT_TEST_BIG_TENSOR", 10**6))
assert BIG > 2 * _core.parallel_threshold() and BIG % _core.CHUNK, BIG


@pytest.mark.parametrize(("case", "convention"), [p for p, _ in PAIRS], ids=[i for _, i in PAIRS])
def test_large_tensor_matches_reference(case, convention, rng):
    params, grads = make_problem(rng, [BIG], np.float32, nsteps=3, name=case[0])
    opt = build(case, convention, params)
    ref = reference_for(case, convention, opt, params)
    for step_grads in grads:
        ref.step(step_grads)
        opt.step(step_grads)
    rtol, atol = _tolerance(np.float32)
    np.testing.assert_allclose(params[0], ref.w[0], rtol=rtol, atol=atol)


BIT_SIZES = [0, 1, 7, 17, 1023, 65537, BIG]
_PROBLEMS = {}


def _trajectory(case, convention, dtype, simd, threads, threshold):
    key = (np.dtype(dtype).name, optim_db.param_shape(case[0], BIG))
    if key not in _PROBLEMS:
        _PROBLEMS[key] = make_problem(np.random.default_rng(7), BIT_SIZES, dtype, nsteps=3,
                                      name=case[0])
    params0, grads = _PROBLEMS[key]
    params = [p.copy() for p in params0]
    _core.set_simd(simd)
    _core.set_parallel_threshold(threshold)
    opt = build(case, convention, params, num_threads=threads)
    teams, _ = set(), _core.team_seen()
    for step_grads in grads:
        opt.step(step_grads)
        teams.add(_core.team_seen())
    teams.discard(0)                 # accumulating calls run no kernel
    return params, [a for s in opt.state_arrays() for a in s], teams


# (threads, parallel threshold): serial, every split forced down to 16 elements, default
SPLITS = [(1, 10**9), (2, 0), (3, 0), (4, None)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("case", "convention"), [p for p, _ in PAIRS], ids=[i for _, i in PAIRS])
def test_bit_identical_across_threads_and_simd(case, convention, dtype):
    default = _core.parallel_threshold()
    base_w, base_s, teams = _trajectory(case, convention, dtype, "baseline", 1, 10**9)
    assert teams == {1}
    for simd in SIMD_VARIANTS:
        for threads, threshold in SPLITS:
            threshold = default if threshold is None else threshold
            w, s, teams = _trajectory(case, convention, dtype, simd, threads, threshold)
            # the BIG tensor is active every step: the split really ran
            assert teams == {expected_team(threads)}, (simd, threads, threshold, teams)
            for a, b in zip(base_w + base_s, w + s):
                assert np.array_equal(a, b), (simd, threads, threshold)


def test_mixed_dtypes_in_one_optimizer(rng):
    params = [rng.standard_normal(n).astype(dt) for n, dt in
              [(100, np.float32), (3, np.float64), (40000, np.float32), (70000, np.float64)]]
    ref_params = [p.copy() for p in params]
    opt = fo.Adam(params, learning_rate=0.01)
    singles = [fo.Adam([p], learning_rate=0.01) for p in ref_params]
    for _ in range(4):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        opt.step(grads)
        for o, g in zip(singles, grads):
            o.step([g])
    for a, b in zip(params, ref_params):
        assert np.array_equal(a, b)


def test_multidimensional_and_zero_d_params(rng):
    params = [rng.standard_normal((3, 4, 5)), np.array(2.0), np.zeros((0, 3))]
    flat = [p.ravel().copy() for p in params]
    opt = fo.SGD(params, learning_rate=0.1, momentum=0.5)
    opt_flat = fo.SGD(flat, learning_rate=0.1, momentum=0.5)
    for _ in range(3):
        grads = [rng.standard_normal(p.shape) for p in params]
        opt.step(grads)
        opt_flat.step([g.ravel().copy() for g in grads])
    for a, b in zip(params, flat):
        assert np.array_equal(a.ravel(), b)


def test_keras_rmsprop_follows_keras_operation_order():
    """Keras's centered RMSprop averages with ``rho*mg + (1-rho)*g`` (torch's
    lerps) and divides ``lr*g`` by the root: with rho = 0 its variance
    v - mg^2 is exactly 0, so every step is ``lr*g / sqrt(eps)`` in float32,
    as the same operations in NumPy give it (a lerp leaves a rounding
    residue that sqrt(eps) amplifies)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal(257).astype(np.float32)
    want = w.copy()
    opt = fo.RMSprop([w], learning_rate=0.01, rho=0.0, centered=True)
    lr, eps = np.float32(0.01), np.float32(1e-7)
    for _ in range(4):
        g = rng.standard_normal(257).astype(np.float32)
        opt.step([g])
        want = want - (lr * g) / np.sqrt(eps)
    assert w.tobytes() == want.tobytes()


@pytest.mark.parametrize("name", ["Lamb", "Nadam"])
def test_keras_second_moment_follows_keras_operation_order(name):
    """Keras moves v as ``v + (g^2 - v)*(1-b2)``: with beta_2 = 0 and grads
    shrinking 10x a step, v drops 100x a step and the rounding of that form
    (not of ``b2*v + (1-b2)*g^2``) is what Keras's trajectory carries; float64
    follows the reference (Keras's operations) to a few ulps."""
    from anchor_defaults import row
    rng = np.random.default_rng(1)
    w = rng.standard_normal(300)
    hp = dict(row(name, "keras"), learning_rate=0.01, beta_2=0.0, weight_decay=0.0)
    ref = reference.Reference(name, "keras", [w], lambda step: hp)
    opt = REGISTRY[name]([w], learning_rate=0.01, beta_2=0.0)
    for t in range(1, 9):
        g = rng.standard_normal(300) * 10.0 ** -t
        opt.step([g])
        ref.step([g])
    np.testing.assert_allclose(w, ref.w[0], rtol=1e-13, atol=0)
