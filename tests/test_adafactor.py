"""Adafactor on params of two and more axes: the factored state (its size, the
reference, threads and SIMD variants, checkpoints), the refusals, and live
comparisons with torch.optim.Adafactor and keras.optimizers.Adafactor.  The
shared suites (driven by tests/optim_db.py) cover the unfactored path and the
options."""
import os

import numpy as np
import pytest

import fastopt as fo
from fastopt import _core

import reference
from conftest import SIMD_VARIANTS

SHAPES = [(5, 7), (3, 4, 6), (9,), (), (1, 5), (4, 1), (0, 3), (2, 0, 4), (37, 300)]


def lr_at(step):
    return 0.02 * (0.95 ** step) * (1.0 + 0.4 * (step % 3))


def problem(rng, dtype, nsteps, shapes=SHAPES):
    params = [np.asarray(rng.standard_normal(s), dtype=dtype) for s in shapes]
    grads = [[np.asarray(rng.standard_normal(s) * 0.3, dtype=dtype) for s in shapes]
             for _ in range(nsteps)]
    return params, grads


CASES = [
    ("keras", {}),
    ("keras", {"weight_decay": 0.05, "clipnorm": 0.5, "epsilon_1": 1e-6, "beta_2_decay": -0.5}),
    ("keras", {"clip_threshold": 0.3, "clipvalue": 0.2, "maximize": True}),
    ("torch", {}),
    ("torch", {"weight_decay": 0.05, "eps": (1e-5, 1e-2), "clip_threshold": 1.2}),
    ("torch", {"global_clipnorm": 0.5, "maximize": True}),
]
IDS = [f"{c}-{','.join(kw)}" for c, kw in CASES]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("convention", "kwargs"), CASES, ids=IDS)
def test_factored_matches_reference(convention, kwargs, dtype, rng):
    params, grads = problem(rng, dtype, nsteps=10)
    opt = fo.Adafactor(params, learning_rate=lr_at, convention=convention, **kwargs)
    options = {k: v for k, v in kwargs.items() if k in reference.OPTIONS}
    ref = reference.Reference("Adafactor", convention, params,
                              lambda step: opt.hyperparameters(step=step), **options)
    for s, gs in enumerate(grads):
        gs = [None if (i + s) % 4 == 0 else g for i, g in enumerate(gs)]
        ref.step(gs)
        opt.step(gs)
    rtol, atol = (1e-11, 1e-13) if dtype == np.float64 else (3e-5, 3e-6)
    for i, (w, r) in enumerate(zip(params, ref.w)):
        np.testing.assert_allclose(w, r, rtol=rtol, atol=atol, err_msg=f"params[{i}]")
    for i, (mine, theirs) in enumerate(zip(opt.state, ref.state)):
        assert sorted(mine) == sorted(theirs), i
        for k in mine:
            np.testing.assert_allclose(mine[k], theirs[k], rtol=rtol * 10, atol=atol,
                                       err_msg=f"params[{i}] {k}")


def test_state_is_factored_never_full_size():
    W, T, b = np.zeros((1000, 3000), np.float32), np.zeros((4, 6, 50, 70)), np.zeros(10)
    opt = fo.Adafactor([W, T, b])
    st = opt.state
    assert [a.shape for a in st[0].values()] == [(1000,), (3000,)]
    assert list(st[0]) == ["row", "col"]
    assert [a.shape for a in st[1].values()] == [(4, 6, 50), (4, 6, 70)]
    assert list(st[2]) == ["v"] and st[2]["v"].shape == (10,)
    kept = sum(a.size for s in opt.state_arrays() for a in s)
    assert kept == 1000 + 3000 + 4 * 6 * (50 + 70) + 10
    sd = opt.state_dict()
    assert [a.shape for a in sd["state"][0]] == [(1000,), (3000,)]


def _run(conv, dtype, simd, threads, threshold):
    rng = np.random.default_rng(5)
    params, grads = problem(rng, dtype, 3, shapes=[(300, 700), (3, 70, 90), (17, 5), (40,)])
    _core.set_simd(simd)
    _core.set_parallel_threshold(threshold)
    opt = fo.Adafactor(params, learning_rate=0.01, convention=conv, num_threads=threads,
                       weight_decay=0.01)
    for gs in grads:
        opt.step(gs)
    return params + [a for s in opt.state_arrays() for a in s]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("conv", ["keras", "torch"])
def test_bit_identical_across_threads_and_simd(conv, dtype):
    default = _core.parallel_threshold()
    try:
        base = _run(conv, dtype, "baseline", 1, 10**9)
        for simd in SIMD_VARIANTS:
            for threads, threshold in [(1, 10**9), (2, 0), (3, 0), (4, default)]:
                got = _run(conv, dtype, simd, threads, threshold)
                for a, b in zip(base, got):
                    assert np.array_equal(a, b), (simd, threads, threshold)
    finally:
        _core.set_simd("auto")
        _core.set_parallel_threshold(default)


def test_resume_from_state_dict_is_exact(rng):
    params, grads = problem(rng, np.float64, 8)
    copy = [p.copy() for p in params]
    lr = fo.schedules.ExponentialDecay(0.02, 1, 0.9)
    a = fo.Adafactor(params, learning_rate=lr, convention="torch")
    for gs in grads[:4]:
        a.step(gs)
    sd = a.state_dict()
    b = fo.Adafactor(copy, learning_rate=lr, convention="torch")
    for p, q in zip(copy, params):
        p[...] = q
    b.load_state_dict(sd)
    for gs in grads[4:]:
        a.step(gs)
        b.step(gs)
    for p, q in zip(params, copy):
        assert np.array_equal(p, q)


# ---- refusals -------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [(1e-3,), (None, 1e-3, 1e-3), 1e-3, "ab"])
def test_eps_tuple_of_wrong_length_is_refused(eps):
    with pytest.raises(ValueError, match=r"eps must be a tuple \(eps1, eps2\) of 2 values"):
        fo.Adafactor([np.zeros((2, 2))], convention="torch", eps=eps)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"convention": "torch", "clip_threshold": 0.5}, "torch's d\\) must be >= 1"),
    ({"convention": "torch", "d": 0.5}, "torch's d\\) must be >= 1"),
    ({"relative_step": False}, "relative_step=False is not supported"),
    ({"epsilon_1": -1.0}, "epsilon_1 must be >= 0"),
    ({"convention": "torch", "epsilon_1": -0.5}, "epsilon_1 must be >= 0"),
    ({"beta_2_decay": 0.5}, "beta_2_decay must be <= 0"),
    ({"convention": "torch", "relative_step": True}, "unexpected keyword argument"),
    ({"decoupled_weight_decay": False, "weight_decay": 0.1}, "decoupled"),
])
def test_bad_hyper_parameters_are_refused(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fo.Adafactor([np.zeros((2, 2))], **kwargs)


def test_torch_eps_none_is_the_dtype_epsilon():
    opt = fo.Adafactor([np.zeros((2, 2))], convention="torch", eps=(None, 1e-2))
    assert opt.param_groups[0]["epsilon_1"] == -1.0
    assert opt.param_groups[0]["epsilon_2"] == 1e-2


def test_refused_step_changes_nothing(rng):
    params, grads = problem(rng, np.float64, 2, shapes=[(6, 7), (3,)])
    opt = fo.Adafactor(params, convention="torch")
    opt.step(grads[0])
    before = [p.copy() for p in params] + [a.copy() for s in opt.state_arrays() for a in s]
    with pytest.raises(ValueError, match=r"grads\[0\]: expected shape \(6, 7\)"):
        opt.step([np.zeros((7, 6)), grads[1][1]])
    after = params + [a for s in opt.state_arrays() for a in s]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert opt.iterations == 1


def test_factored_state_of_the_wrong_shape_is_refused():
    W = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"of shape \(4,\)"):
        _core.Engine("adafactor", [W], [[np.zeros(3), np.zeros(5)]])
    with pytest.raises(ValueError, match="needs 2 state arrays"):
        _core.Engine("adafactor", [W], [[np.zeros((3, 4))]])


def test_sharded_by_whole_tensors():
    """Rows and columns need the whole matrix: ShardedOptimizer gives each
    tensor to one rank (tests/mpi/run_options.py checks it bit for bit)."""
    pytest.importorskip("fastopt.distributed")
    from fastopt.distributed import _inputs
    assert _inputs.whole_tensors(fo.Adafactor)


# ---- the anchors, live ----------------------------------------------------------------

LIVE_SHAPES = [(5, 7), (3, 4, 6), (9,), (), (1, 5), (4, 1)]


def _live_problem(dtype=np.float64):
    rng = np.random.default_rng(17)
    return problem(rng, dtype, 30, shapes=LIVE_SHAPES)


def _fastopt(convention, kwargs, dtype=np.float64):
    params, grads = _live_problem(dtype)
    opt = fo.Adafactor(params, learning_rate=lr_at, convention=convention, **kwargs)
    for gs in grads:
        opt.step(gs)
    return params


TORCH_CASES = [{}, {"weight_decay": 0.1, "clip_threshold": 1.5, "eps": (1e-6, 1e-2),
                    "beta_2_decay": -0.6, "maximize": True}]


@pytest.mark.parametrize("kwargs", TORCH_CASES, ids=["defaults", "options"])
def test_matches_torch_live(kwargs):
    torch = pytest.importorskip("torch")
    names = {"clip_threshold": "d", "beta_2_decay": "beta2_decay"}
    params, grads = _live_problem()
    theirs = [torch.tensor(p) for p in params]
    topt = torch.optim.Adafactor(theirs, lr=lr_at(0),
                                 **{names.get(k, k): v for k, v in kwargs.items()})
    for s, gs in enumerate(grads):
        for group in topt.param_groups:
            group["lr"] = lr_at(s)
        for p, g in zip(theirs, gs):
            p.grad = torch.tensor(g)
        topt.step()
    mine = _fastopt("torch", kwargs)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"params[{i}]")


def _keras_run(kwargs, keep_float64):
    pytest.importorskip("torch")
    os.environ.setdefault("KERAS_BACKEND", "torch")     # read when keras is first imported
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on {keras.backend.backend()}; the comparison needs "
                    f"KERAS_BACKEND=torch")
    from keras.src.backend.common import dtypes
    saved_floatx, saved = keras.config.floatx(), dict(dtypes.BIT64_TO_BIT32_DTYPE)
    keras.config.set_floatx("float64")
    if keep_float64:
        dtypes.BIT64_TO_BIT32_DTYPE.clear()
    try:
        class Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                return lr_at(int(keras.ops.convert_to_numpy(step)))

        params, grads = _live_problem()
        variables = [keras.Variable(p) for p in params]
        kopt = keras.optimizers.Adafactor(learning_rate=Schedule(), **kwargs)
        for gs in grads:
            kopt.apply_gradients([(keras.ops.convert_to_tensor(g), v)
                                  for g, v in zip(gs, variables)])
        return [keras.ops.convert_to_numpy(v) for v in variables]
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE.update(saved)
        keras.config.set_floatx(saved_floatx)


KERAS_CASES = [{}, {"weight_decay": 0.1, "clip_threshold": 0.5, "epsilon_1": 1e-6,
                    "epsilon_2": 1e-2, "beta_2_decay": -0.5}]


@pytest.mark.parametrize("kwargs", KERAS_CASES, ids=["defaults", "options"])
def test_matches_keras_formulas_live(kwargs):
    """Keras 3 with its 64-to-32-bit demotion of reductions turned off: the same
    formulas, to float64 precision."""
    theirs = _keras_run(kwargs, keep_float64=True)
    for i, (a, b) in enumerate(zip(_fastopt("keras", kwargs), theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"params[{i}]")


@pytest.mark.parametrize("kwargs", KERAS_CASES, ids=["defaults", "options"])
def test_close_to_keras_as_shipped_live(kwargs):
    """Keras 3 as shipped computes ops.mean/maximum/minimum of float64 tensors in
    float32 (keras.src.backend.common.dtypes.result_type maps 64-bit dtypes to
    32-bit), so its Adafactor differs from its own formulas in float64 by
    ~1e-7 relative per step; over 30 steps we measure < 1e-6."""
    theirs = _keras_run(kwargs, keep_float64=False)
    for i, (a, b) in enumerate(zip(_fastopt("keras", kwargs), theirs)):
        np.testing.assert_allclose(a, b, rtol=5e-6, atol=1e-8, err_msg=f"params[{i}]")
