"""Schedule-free AdamW and SGD: against the schedulefree package and Keras 3
themselves (when installed), the train/eval modes (an exact swap, stepping
refused in eval mode), checkpoints in either mode, and a learning rate of 0
on the first steps."""
import os

import numpy as np
import pytest

import fastopt as fo


def lr_at(step):
    return 0.01 * (0.95 ** step) * (1.0 + 0.4 * (step % 3))


def _problem(seed=3, sizes=(17, 5, 64), nsteps=30, skip=True):
    rng = np.random.default_rng(seed)
    w0 = [rng.standard_normal(n) for n in sizes]
    grads = []
    for s in range(nsteps):
        g = [rng.standard_normal(n) * (0.5 + s % 2) for n in sizes]
        if skip and s % 4 == 1:
            g[1] = None
        grads.append(g)
    return w0, grads


@pytest.fixture
def torch64():
    torch = pytest.importorskip("torch")
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(saved)


SF_CASES = [
    ("ScheduleFreeAdamW", "AdamWScheduleFree", {}, {}),
    ("ScheduleFreeAdamW", "AdamWScheduleFree",
     {"warmup_steps": 5, "weight_decay": 0.05, "r": 0.5, "weight_lr_power": 1.0,
      "beta_1": 0.4, "beta_2": 0.99},
     {"warmup_steps": 5, "weight_decay": 0.05, "r": 0.5, "weight_lr_power": 1.0,
      "betas": (0.4, 0.99)}),
    ("ScheduleFreeSGD", "SGDScheduleFree", {"warmup_steps": 3, "weight_decay": 0.05},
     {"warmup_steps": 3, "weight_decay": 0.05}),
    ("ScheduleFreeSGD", "SGDScheduleFree", {"momentum": 0.3}, {"momentum": 0.3}),
]


@pytest.mark.parametrize(("name", "theirs_name", "kw", "their_kw"), SF_CASES)
def test_trajectory_and_average_match_schedulefree(name, theirs_name, kw, their_kw, torch64):
    torch = torch64
    schedulefree = pytest.importorskip("schedulefree")
    w0, grads = _problem()
    mine = [w.copy() for w in w0]
    theirs = [torch.tensor(w) for w in w0]
    opt = getattr(fo, name)(mine, learning_rate=lr_at, convention="torch", **kw)
    topt = getattr(schedulefree, theirs_name)(theirs, lr=lr_at(0), foreach=False, **their_kw)
    topt.train()
    for step, g in enumerate(grads):
        topt.param_groups[0]["lr"] = lr_at(step)
        for p, gi in zip(theirs, g):
            p.grad = None if gi is None else torch.tensor(gi)
        topt.step()
        opt.step(g)
    for i, (p, t) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(p, t.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"y {i}")
    xs = opt.eval_params()
    topt.eval()
    opt.eval()
    for i, (x, p, t) in enumerate(zip(xs, mine, theirs)):
        np.testing.assert_allclose(x, t.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"x {i}")
        assert np.array_equal(x, p)


def test_zero_learning_rate_at_the_first_steps_matches_schedulefree(torch64):
    """An outside warmup from 0: every weight of the average is 0 at first
    (the package's ZeroDivisionError branch gives ckp1 = 0), never 0/0."""
    torch = torch64
    schedulefree = pytest.importorskip("schedulefree")

    def lr(step):
        return 0.0 if step < 3 else 0.01 * step

    w0, grads = _problem(skip=False, nsteps=12)
    mine = [w.copy() for w in w0]
    theirs = [torch.tensor(w) for w in w0]
    opt = fo.ScheduleFreeAdamW(mine, learning_rate=lr, convention="torch")
    topt = schedulefree.AdamWScheduleFree(theirs, lr=0.0, foreach=False)
    topt.train()
    for step, g in enumerate(grads):
        topt.param_groups[0]["lr"] = lr(step)
        for p, gi in zip(theirs, g):
            p.grad = torch.tensor(gi)
        topt.step()
        opt.step(g)
        assert all(np.isfinite(p).all() for p in mine)
    for p, t in zip(mine, theirs):
        np.testing.assert_allclose(p, t.numpy(), rtol=1e-10, atol=1e-12)


def test_zero_learning_rate_at_the_first_steps_is_finite_without_the_package():
    w = np.linspace(-1, 1, 7)
    for cls in (fo.ScheduleFreeAdamW, fo.ScheduleFreeSGD):
        p = w.copy()
        opt = cls([p], learning_rate=lambda s: 0.0 if s < 2 else 0.1, convention="torch")
        for _ in range(2):
            opt.step([np.ones(7)])
        assert p.tobytes() == w.tobytes()          # ckp1 = 0 and lr 0: y stays
        opt.step([np.ones(7)])
        assert np.isfinite(p).all() and not np.array_equal(p, w)


@pytest.fixture
def keras64():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("the Keras convention follows Keras on its torch backend")
    saved = keras.config.floatx()
    keras.config.set_floatx("float64")
    yield keras
    keras.config.set_floatx(saved)


@pytest.mark.parametrize("kw", [{}, {"warmup_steps": 4, "weight_decay": 0.02, "beta_1": 0.7}])
def test_trajectory_matches_keras(kw, keras64):
    keras = keras64

    class Schedule(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return keras.ops.convert_to_tensor(lr_at(int(step)), dtype="float64")

    w0, grads = _problem()
    mine = [w.copy() for w in w0]
    theirs = [keras.Variable(w.copy(), dtype="float64") for w in w0]
    opt = fo.ScheduleFreeAdamW(mine, learning_rate=lr_at, **kw)
    kopt = keras.optimizers.ScheduleFreeAdamW(learning_rate=Schedule(), **kw)
    kopt.build(theirs)
    for g in grads:
        kopt.apply_gradients([(keras.ops.convert_to_tensor(gi), v)
                              for gi, v in zip(g, theirs) if gi is not None])
        opt.step(g)
    for i, (p, v) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(p, np.asarray(v.numpy()), rtol=1e-10, atol=1e-12,
                                   err_msg=f"params[{i}]")


# ---- modes ---------------------------------------------------------------------------

@pytest.mark.parametrize("convention", ["keras", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_train_round_trip_is_bit_exact(convention, dtype):
    w0, grads = _problem(nsteps=7)
    params = [w.astype(dtype) for w in w0]
    opt = fo.ScheduleFreeAdamW(params, learning_rate=0.05, convention=convention)
    for g in grads:
        opt.step([None if gi is None else gi.astype(dtype) for gi in g])
    y = [p.copy() for p in params]
    xs = opt.eval_params()
    assert opt.training and all(np.array_equal(p, q) for p, q in zip(params, y))
    for _ in range(3):
        opt.eval()
        assert not opt.training
        assert all(np.array_equal(p, x) for p, x in zip(params, xs))
        assert all(np.array_equal(a, b) for a, b in zip(opt.eval_params(), xs))
        opt.eval()                                  # a no-op in eval mode
        opt.train()
        assert all(p.tobytes() == q.tobytes() for p, q in zip(params, y))
        opt.train()
    assert not any(np.array_equal(p, x) for p, x in zip(params, xs))


def test_step_in_eval_mode_is_refused_and_changes_nothing():
    w0, grads = _problem(nsteps=3, skip=False)
    params = [w.copy() for w in w0]
    opt = fo.ScheduleFreeSGD(params, learning_rate=0.1)
    opt.step(grads[0])
    opt.eval()
    before = [p.copy() for p in params] + [a.copy() for s in opt.state_arrays() for a in s]
    with pytest.raises(ValueError, match=r"ScheduleFreeSGD is in eval mode.*opt\.train\(\)"):
        opt.step(grads[1])
    with pytest.raises(ValueError, match="eval mode"):
        opt.apply_gradients(zip(grads[1], params))
    after = [p.copy() for p in params] + [a.copy() for s in opt.state_arrays() for a in s]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after))
    assert opt.iterations == 1


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_checkpoint_records_the_mode_and_resumes_exactly(tmp_path, mode):
    w0, grads = _problem(nsteps=16)
    a = [w.copy() for w in w0]
    kw = dict(learning_rate=0.02, warmup_steps=3, weight_decay=0.01, convention="torch")
    opt = fo.ScheduleFreeAdamW(a, **kw)
    for g in grads[:8]:
        opt.step(g)
    if mode == "eval":
        opt.eval()
    fo.save(tmp_path / "sf.npz", opt)
    b = [np.zeros_like(w) for w in w0]
    twin = fo.ScheduleFreeAdamW(b, **kw)
    fo.load(tmp_path / "sf.npz", twin)
    assert twin.training == (mode == "train")
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    opt.train()
    twin.train()
    for g in grads[8:]:
        opt.step(g)
        twin.step(g)
    for x, y in zip(a + opt.eval_params(), b + twin.eval_params()):
        assert x.tobytes() == y.tobytes()


def test_a_state_in_eval_mode_without_its_train_params_is_refused():
    w = np.ones(3)
    opt = fo.ScheduleFreeAdamW([w], learning_rate=0.1)
    opt.step([np.ones(3)])
    opt.eval()
    sd = opt.state_dict()
    del sd["extra"]["train_params"]
    twin = fo.ScheduleFreeAdamW([np.ones(3)], learning_rate=0.1)
    with pytest.raises(ValueError, match="extra.train_params"):
        twin.load_state_dict(sd)
    assert twin.training and twin.iterations == 0
    sd["extra"]["mode"] = "sleep"
    with pytest.raises(ValueError, match="extra.mode"):
        twin.load_state_dict(sd)


def test_z_starts_from_the_param_at_its_first_step():
    """Weights loaded after construction: z is taken from the parameter at the
    first step (both libraries create it then)."""
    w = np.zeros(4)
    fresh = np.full(4, 2.0)
    opt = fo.ScheduleFreeAdamW([w], learning_rate=0.1, convention="torch")
    twin_w = fresh.copy()
    twin = fo.ScheduleFreeAdamW([twin_w], learning_rate=0.1, convention="torch")
    np.copyto(w, fresh)
    g = np.array([1.0, -1.0, 0.5, 0.0])
    for _ in range(3):
        opt.step([g])
        twin.step([g])
    assert w.tobytes() == twin_w.tobytes()


def test_warmup_steps_must_be_whole():
    with pytest.raises(ValueError, match="warmup_steps must be a whole number"):
        fo.ScheduleFreeAdamW([np.zeros(2)], warmup_steps=2.5)
    with pytest.raises(ValueError, match="ScheduleFreeSGD exists in torch.optim only"):
        fo.ScheduleFreeSGD([np.zeros(2)], convention="keras")
