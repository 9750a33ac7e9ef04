"""Trajectories against Keras 3 itself, for every optimizer of tests/optim_db.py
that Keras has (skipped when Keras is not installed; .ci/anchors installs it).
Keras runs on its torch backend in float64 (``floatx="float64"``): a learning
rate that changes every call, parameters whose grad is None on some calls
(Keras counts one global step), and the cases of each entry and of the
option cases that use only keyword arguments Keras has."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from fastopt.optimizers import REGISTRY  # noqa: E402

import optim_db  # noqa: E402

# Keyword arguments fastopt has that Keras's optimizers do not.
NOT_KERAS = {"maximize", "decoupled_weight_decay", "momentum_decay", "num_threads",
             "skip_nonfinite", "dampening", "lr_decay"}

CASES = [(name, kw) for name, kw, convs in optim_db.all_cases()
         if "keras" in convs and optim_db.info(name).keras_name is not None
         and not set(kw) & NOT_KERAS]
CASES = [c for i, c in enumerate(CASES) if c not in CASES[:i]]


def _id(case):
    name, kw = case
    return f"{name}({','.join(f'{k}={v}' for k, v in kw.items())})"


def lr_at(step):
    return 0.02 * (0.95 ** step) * (1.0 + 0.4 * (step % 3))


@pytest.fixture(autouse=True)
def float64_keras():
    saved = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield
    keras.config.set_floatx(saved)


def test_every_keras_optimizer_is_compared():
    covered = {name for name, _ in CASES}
    has_keras = {n for n, cls in REGISTRY.items() if "keras" in cls.conventions}
    named = {e.name for e in optim_db.optim_db if e.keras_name is not None}
    assert has_keras == covered == named


def _keras_run(name, kwargs, w0, grads, lr_schedule):
    # Keras computes some reductions of float64 tensors in float32 (its
    # result_type maps 64-bit dtypes to 32-bit, as JAX does): for an optimizer
    # that follows its formulas in float64 (optim_db), compared are those
    # (tests/test_adafactor.py measures the demotion)
    from keras.src.backend.common import dtypes
    saved = dict(dtypes.BIT64_TO_BIT32_DTYPE)
    if optim_db.info(name).keras_float64_reductions:
        dtypes.BIT64_TO_BIT32_DTYPE.clear()
    try:
        return _keras_steps(name, kwargs, w0, grads, lr_schedule)
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE.update(saved)


def _keras_steps(name, kwargs, w0, grads, lr_schedule):
    variables = [keras.Variable(w, dtype="float64") for w in w0]
    lr = lr_schedule(0) if lr_schedule else kwargs.get("learning_rate", None)
    kw = {k: v for k, v in kwargs.items() if k != "learning_rate"}
    if lr is not None:
        kw["learning_rate"] = lr
    opt = getattr(keras.optimizers, optim_db.info(name).keras_name)(**kw)
    for step, g in enumerate(grads):
        if lr_schedule:
            opt.learning_rate = lr_schedule(step)
        pairs = [(keras.ops.convert_to_tensor(x, dtype="float64"), v)
                 for x, v in zip(g, variables) if x is not None]
        opt.apply_gradients(pairs)
    return [keras.ops.convert_to_numpy(v) for v in variables]


def _problem(seed, nsteps, with_none, name=None):
    rng = np.random.default_rng(seed)
    sizes = [optim_db.param_shape(name, n) for n in [17, 5, 300]]
    w0 = [rng.standard_normal(n) for n in sizes]
    grads = []
    for step in range(nsteps):
        g = [rng.standard_normal(n) * (0.5 + step % 2) for n in sizes]
        if with_none and step % 4 == 1:
            g[1] = None
        if with_none and step % 5 == 2:
            g[2] = None
        grads.append(g)
    return w0, grads


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[_id(c) for c in CASES])
def test_trajectory_matches_keras(name, kwargs):
    # Keras drops the None pairs of a call; with accumulation that would also
    # drop them from the accumulators, a case the options suite covers
    with_none = "gradient_accumulation_steps" not in kwargs
    w0, grads = _problem(11, 25, with_none, name)
    mine = [w.copy() for w in w0]
    opt = REGISTRY[name](mine, learning_rate=lr_at, convention="keras", **kwargs)
    for g in grads:
        opt.step(g)
    theirs = _keras_run(name, kwargs, w0, grads, lr_at)
    # Keras's torch backend computes a clipping norm ~1e-9 off the exact value
    # (fastopt's, checked against the float64 reference in test_options); over
    # 25 steps that moves the weights (of size ~1) by up to ~1e-8
    rtol, atol = (1e-6, 3e-8) if {"clipnorm", "global_clipnorm"} & set(kwargs) else (1e-10, 1e-12)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"params[{i}]")


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Nadam", "Lamb", "Adagrad"])
def test_float32_trajectory_close_to_keras(name):
    keras.config.set_floatx("float32")
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(4099).astype(np.float32)
    mine = [w0.copy()]
    opt = REGISTRY[name](mine, learning_rate=1e-2, convention="keras")
    grads = [[rng.standard_normal(4099).astype(np.float32)] for _ in range(20)]
    for g in grads:
        opt.step(g)
    var = keras.Variable(w0, dtype="float32")
    kopt = getattr(keras.optimizers, optim_db.info(name).keras_name)(learning_rate=1e-2)
    for g in grads:
        kopt.apply_gradients([(keras.ops.convert_to_tensor(g[0]), var)])
    np.testing.assert_allclose(mine[0], keras.ops.convert_to_numpy(var), rtol=2e-5, atol=2e-6)


def test_defaults_match_keras_without_arguments():
    """Built with no arguments at all, each Keras-convention optimizer follows
    Keras's own defaults (a wrong default shows here even if the tables agree)."""
    for entry in optim_db.optim_db:
        if entry.keras_name is None:
            continue
        w0, grads = _problem(5, 12, False, entry.name)
        mine = [w.copy() for w in w0]
        opt = REGISTRY[entry.name](mine, convention="keras")
        for g in grads:
            opt.step(g)
        theirs = _keras_run(entry.name, {}, w0, grads, None)
        for i, (a, b) in enumerate(zip(mine, theirs)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{entry.name} params[{i}]")
