"""The public API of DESIGN.md §2: step, apply_gradients, iterations, learning
rate and schedules, param groups, config, state, checkpoints, threads."""
import json
import os

import numpy as np
import pytest

import fastopt as fo
from fastopt.optimizers import REGISTRY

import optim_db
import reference


def test_public_names():
    for name in ("SGD", "Adam", "AdamW", "Optimizer", "save", "load", "set_num_threads",
                 "get_num_threads", "show_config", "__version__"):
        assert hasattr(fo, name), name


def test_step_updates_in_place_and_returns_none():
    w = np.ones(5, dtype=np.float32)
    ident = id(w)
    opt = fo.SGD([w], learning_rate=0.5)
    assert opt.step([np.ones(5, dtype=np.float32)]) is None
    assert id(w) == ident
    np.testing.assert_array_equal(w, 0.5)
    assert opt.iterations == 1 and isinstance(opt.iterations, int)


def test_lr_alias_and_eps_betas_aliases():
    w = np.zeros(2)
    assert fo.SGD([w], lr=0.3).learning_rate == 0.3
    opt = fo.Adam([w], lr=0.1, betas=(0.8, 0.99), eps=1e-3, convention="torch")
    hp = opt.current_hyperparameters()
    assert (hp["learning_rate"], hp["beta_1"], hp["beta_2"], hp["epsilon"]) == (0.1, 0.8, 0.99, 1e-3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'rho'"):
        fo.Adam([w], rho=0.9)


def test_learning_rate_settable_between_steps():
    w = np.zeros(1)
    opt = fo.SGD([w], learning_rate=1.0)
    opt.step([np.ones(1)])
    opt.learning_rate = 0.25
    opt.step([np.ones(1)])
    np.testing.assert_allclose(w, [-1.25])
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        opt.learning_rate = -1.0
    with pytest.raises(ValueError, match="finite"):
        opt.learning_rate = float("nan")
    assert opt.learning_rate == 0.25


def test_schedule_evaluated_at_iterations_first_update_sees_zero():
    seen = []

    def sched(step):
        seen.append(step)
        return 0.1

    w = np.zeros(1)
    opt = fo.SGD([w], learning_rate=sched)
    for _ in range(3):
        opt.step([np.ones(1)])
    assert seen == [0, 1, 2]


def test_any_float_hyperparameter_may_be_a_schedule():
    w = np.zeros(3)
    w_ref = w.copy()
    mom = lambda s: 0.5 + 0.1 * s  # noqa: E731
    opt = fo.SGD([w], learning_rate=0.1, momentum=mom)
    ref = reference.Reference("SGD", "keras", [w_ref],
                              lambda s: {"learning_rate": 0.1, "momentum": mom(s),
                                         "nesterov": False, "_momentum_scheduled": True})
    rng = np.random.default_rng(1)
    for _ in range(4):
        g = rng.standard_normal(3)
        opt.step([g])
        ref.step([g])
    np.testing.assert_allclose(w, ref.w[0], rtol=1e-14)


def test_schedule_returning_nan_refuses_the_step():
    w = np.ones(3)
    opt = fo.Adam([w], learning_rate=lambda s: float("nan") if s == 1 else 0.1)
    opt.step([np.ones(3)])
    before = (w.copy(), [a.copy() for a in opt.state_arrays()[0]])
    with pytest.raises(ValueError, match="learning_rate evaluated to nan at step 1"):
        opt.step([np.ones(3)])
    assert np.array_equal(w, before[0])
    assert all(np.array_equal(a, b) for a, b in zip(opt.state_arrays()[0], before[1]))
    assert opt.iterations == 1


def test_apply_gradients_matches_by_identity():
    a, b = np.zeros(2), np.zeros(3)
    opt = fo.SGD([a, b], learning_rate=1.0)
    opt.apply_gradients([(np.ones(3), b)])
    np.testing.assert_array_equal(a, 0)
    np.testing.assert_array_equal(b, -1)
    opt.apply_gradients(zip([np.ones(2), np.ones(3)], [a, b]))
    np.testing.assert_array_equal(a, -1)
    with pytest.raises(ValueError, match="not built with"):
        opt.apply_gradients([(np.ones(2), np.zeros(2))])
    with pytest.raises(ValueError, match="appears twice"):
        opt.apply_gradients([(np.ones(2), a), (np.ones(2), a)])


def test_param_groups_override_hyperparameters():
    a, b = np.zeros(2), np.zeros(2)
    opt = fo.SGD([{"params": [a]}, {"params": [b], "learning_rate": 0.5}], learning_rate=0.1)
    opt.step([np.ones(2), np.ones(2)])
    np.testing.assert_allclose(a, -0.1)
    np.testing.assert_allclose(b, -0.5)
    opt.learning_rate = 1.0           # groups without an override follow
    opt.step([np.ones(2), np.ones(2)])
    np.testing.assert_allclose(a, -1.1)
    np.testing.assert_allclose(b, -1.0)
    opt.param_groups[1]["learning_rate"] = 2.0   # torch-style edit
    opt.step([np.ones(2), np.ones(2)])
    np.testing.assert_allclose(b, -3.0)
    with pytest.raises(ValueError, match="param group 1: learning_rate must be >= 0"):
        opt.param_groups[1]["learning_rate"] = -2.0     # refused at the assignment
    assert opt.param_groups[1]["learning_rate"] == 2.0
    opt.step([np.ones(2), np.ones(2)])
    np.testing.assert_allclose(b, -5.0)


def test_param_group_errors():
    with pytest.raises(TypeError, match="unknown hyper-parameter 'rho'"):
        fo.SGD([{"params": [np.zeros(1)], "rho": 0.9}])
    with pytest.raises(TypeError, match="single ndarray"):
        fo.SGD(np.zeros(3))
    with pytest.raises(ValueError, match="no 'params'"):
        fo.SGD([{"learning_rate": 0.1}])


def test_convention_errors():
    with pytest.raises(ValueError, match="convention must be 'keras' or 'torch'"):
        fo.Adam([np.zeros(1)], convention="jax")
    with pytest.raises(TypeError, match="dampening"):
        fo.SGD([np.zeros(1)], dampening=0.1)        # a torch-only knob
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        fo.SGD([np.zeros(1)], nesterov=True, convention="torch")


def test_keras_global_step_vs_torch_per_param_step():
    """Skipped params: Keras bias-corrects with the global count, torch per param."""
    g = np.array([0.3])
    out = {}
    for conv in ("keras", "torch"):
        a, b = np.zeros(1), np.zeros(1)
        opt = fo.Adam([a, b], learning_rate=0.1, convention=conv, epsilon=0.0)
        opt.step([g, None])
        opt.step([g, g])
        out[conv] = b[0]
    # torch: b's first step is a full-size step (t=1); Keras: t=2 bias correction
    assert out["torch"] == pytest.approx(-0.1)
    assert out["keras"] != pytest.approx(-0.1)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_config_round_trip(name):
    cls = REGISTRY[name]
    w = np.zeros(optim_db.param_shape(name, 3))
    convention = "torch" if "torch" in optim_db.info(name).conventions else "keras"
    opt = cls([w], learning_rate=0.02, convention=convention, weight_decay=0.1, maximize=True)
    cfg = opt.get_config()
    json.dumps(cfg)
    clone = cls.from_config(cfg, [np.zeros_like(w)])
    assert clone.get_config() == cfg


def test_config_round_trip_with_groups_and_schedule():
    from fastopt import schedules
    a, b = np.zeros(2), np.zeros(3)
    sched = schedules.ExponentialDecay(0.1, 10, 0.5)
    opt = fo.Adam([{"params": [a]}, {"params": [b], "beta_1": 0.5}], learning_rate=sched)
    cfg = json.loads(json.dumps(opt.get_config()))
    clone = fo.Adam.from_config(cfg, [np.zeros(2), np.zeros(3)])
    assert [len(g["params"]) for g in clone.param_groups] == [1, 1]
    assert clone.param_groups[1]["beta_1"] == 0.5
    assert clone.learning_rate(7) == sched(7)


def _run(opt, params, grads):
    for g in grads:
        opt.step(g)


@pytest.mark.parametrize(("name", "convention"), optim_db.name_conventions())
def test_state_dict_resume_is_bit_identical(name, convention, tmp_path):
    rng = np.random.default_rng(3)
    shapes = [optim_db.param_shape(name, s) for s in [(4, 3), (7,)]]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(6)]
    grads[2][1] = None
    cls = REGISTRY[name]
    info = optim_db.info(name)
    # built with the stateful kwargs where the defaults keep no state at all (SGD)
    kw = info.stateful if info.stateless_by_default(convention) else {}
    p_straight = [np.ones(s) for s in shapes]
    straight = cls(p_straight, convention=convention, **kw)
    _run(straight, p_straight, grads)

    p_first = [np.ones(s) for s in shapes]
    first = cls(p_first, convention=convention, **kw)
    _run(first, p_first, grads[:3])
    fo.save(tmp_path / "ck.npz", first)

    p_resumed = [np.zeros(s) for s in shapes]
    resumed = cls(p_resumed, convention=convention, **kw)
    fo.load(tmp_path / "ck.npz", resumed)
    assert resumed.iterations == 3
    _run(resumed, p_resumed, grads[3:])
    for a, b in zip(p_straight, p_resumed):
        assert np.array_equal(a, b)


def test_load_refuses_mismatch_and_changes_nothing(tmp_path):
    w = np.ones(3)
    opt = fo.Adam([w])
    opt.step([np.ones(3)])
    fo.save(tmp_path / "a.npz", opt)
    other_w = np.ones(4)
    other = fo.Adam([other_w])
    other.step([np.ones(4)])
    before = [a.copy() for a in other.state_arrays()[0]], other_w.copy()
    with pytest.raises(ValueError, match="params\\[0\\]"):
        fo.load(tmp_path / "a.npz", other)
    assert all(np.array_equal(a, b) for a, b in zip(other.state_arrays()[0], before[0]))
    assert np.array_equal(other_w, before[1]) and other.iterations == 1
    with pytest.raises(ValueError, match="SGD optimizer; this is a Adam|is of a Adam"):
        fo.load(tmp_path / "a.npz", fo.SGD([np.ones(3)], momentum=0.9))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not a fastopt checkpoint|unreadable or truncated"):
        fo.load(tmp_path / "junk.npz", opt)


def test_save_is_atomic_replace(tmp_path):
    w = np.ones(3)
    opt = fo.SGD([w], momentum=0.5)
    path = tmp_path / "ck.npz"
    fo.save(path, opt)
    opt.step([np.ones(3)])
    fo.save(path, opt)
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]   # no temp file left behind


def test_thread_count_controls():
    fo.set_num_threads(1)
    assert fo.get_num_threads() == 1
    fo.set_num_threads(None)
    assert fo.get_num_threads() >= 1
    with pytest.raises(ValueError, match="positive int"):
        fo.set_num_threads(0)
    with pytest.raises(ValueError, match="positive int"):
        fo.Adam([np.zeros(1)], num_threads=-2)
