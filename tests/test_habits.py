"""What Keras and torch users do by habit, and what each habit does here:
param-group edits with the constructor's names, hyper-parameters as
attributes, callables without arguments as schedules, ``add_param_group``,
``copy.deepcopy`` and ``pickle``, the caller's metadata in checkpoints, and
which hyper-parameters a loaded checkpoint leaves in force.

Every optimizer of the registry is exercised where the habit applies to all,
so optimizers added later are covered without editing this file.
"""
import copy
import pickle
import warnings

import numpy as np
import pytest

import fastopt as fo
from fastopt import schedules
from fastopt.optimizers import REGISTRY

import optim_db
from robust_util import (NAMES, assert_unchanged, build, conventions, default_convention,
                         float_hyper, rng_grads, snapshot)


def _same(a, b, what=""):
    """Bit-identical parameters, state arrays, averages, accumulators and counters."""
    for k, (p, q) in enumerate(zip(a.params, b.params)):
        assert p.dtype == q.dtype and p.tobytes() == q.tobytes(), f"{what}: params[{k}]"
    for k, (s, t) in enumerate(zip(a.state_arrays(), b.state_arrays())):
        assert [x.tobytes() for x in s] == [y.tobytes() for y in t], f"{what}: state {k}"
    for arrays in ("_ema", "_accum"):
        mine, theirs = getattr(a, arrays), getattr(b, arrays)
        assert (mine is None) == (theirs is None), what
        for x, y in zip(mine or (), theirs or ()):
            assert x.tobytes() == y.tobytes(), f"{what}: {arrays}"
    sa, sb = a._stepper, b._stepper
    assert (sa.iterations, sa.micro, sa.skipped) == (sb.iterations, sb.micro, sb.skipped), what
    assert sa.get_steps().tolist() == sb.get_steps().tolist(), what
    assert sa.get_aux() == sb.get_aux(), what


def _params(rng, name=None):
    """A float64 (3, 2) and a float32 param of 5 elements (1-D, or the shape
    optimizer ``name`` takes: optim_db.param_shape)."""
    return [rng.standard_normal((3, 2)),
            rng.standard_normal(optim_db.param_shape(name, 5)).astype(np.float32)]


def _new_value(cls, conv, key):
    """A legal value for ``key`` other than the default (None when none is found)."""
    default = cls.defaults(conv)[key]
    named = cls.named_values.get(key, {}).values()      # a hyper-parameter given by name
    for v in (default * 0.5, 0.25, default * 1.5, -0.25, *named):
        if v == default:
            continue
        try:
            cls([np.ones(optim_db.param_shape(cls.__name__, 1))], convention=conv, **{key: v})
        except (ValueError, TypeError):
            continue
        return v
    return None


# ---- param groups speak the constructor's names ---------------------------------

def test_group_edits_take_the_constructors_aliases():
    rng = np.random.default_rng(1)
    a, b = _params(rng), None
    b = [p.copy() for p in a]
    opt = fo.Adam(a, convention="torch")
    twin = fo.Adam(b, lr=0.05, betas=(0.8, 0.9), eps=1e-6, convention="torch")
    g = opt.param_groups[0]
    g["lr"] = 0.05
    g["betas"] = (0.8, 0.9)
    g.update(eps=1e-6)
    assert (g["lr"], g["betas"], g["eps"]) == (0.05, (0.8, 0.9), 1e-6)
    assert (g["learning_rate"], g["beta_1"], g["beta_2"]) == (0.05, 0.8, 0.9)
    assert "lr" not in dict(g) and g.get("lr") == 0.05 and g.get("nothing", 3) == 3
    for _ in range(3):
        grads = rng_grads(rng, a)
        opt.step(grads)
        twin.step([x.copy() for x in grads])
    _same(opt, twin, "aliases")
    rms = fo.RMSprop([np.ones(2)], convention="torch")
    rms.param_groups[0]["alpha"] = 0.5
    assert rms.param_groups[0]["rho"] == 0.5 and rms.hyperparameters()["rho"] == 0.5


def test_a_group_edit_is_the_groups_own_and_is_saved(tmp_path):
    w, v = np.ones(2), np.ones(2)
    opt = fo.SGD([{"params": [w]}, {"params": [v]}], learning_rate=0.1, convention="torch")
    opt.param_groups[1]["lr"] = 0.3
    opt.learning_rate = 0.2                  # groups without their own value follow
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.3]
    assert opt.get_config()["param_groups"][1]["learning_rate"] == 0.3
    fo.save(tmp_path / "c.npz", opt)
    other = fo.SGD([{"params": [np.ones(2)]}, {"params": [np.ones(2)]}], learning_rate=0.1,
                   convention="torch")
    fo.load(tmp_path / "c.npz", other, hyperparameters="checkpoint")
    assert [g["lr"] for g in other.param_groups] == [0.2, 0.3]


# ---- every hyper-parameter is an attribute --------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_hyperparameter_is_a_settable_attribute(name):
    """``opt.<name> = v`` applies from the next step, exactly as a group edit
    does, and before any step exactly as the keyword does."""
    cls = REGISTRY[name]
    for conv in conventions(cls):
        defaults = cls.defaults(conv)
        for key in defaults:
            rng = np.random.default_rng(2)
            opt = build(name, _params(rng, name), convention=conv)
            assert getattr(opt, key) == opt.param_groups[0][key]
            if key not in float_hyper(cls, conv):
                assert isinstance(getattr(opt, key), bool)
                continue
            v = _new_value(cls, conv, key)
            if v is None:
                continue
            built = build(name, _params(np.random.default_rng(2), name), convention=conv,
                          **{key: v})
            edited = build(name, _params(np.random.default_rng(2), name), convention=conv)
            late = build(name, _params(np.random.default_rng(2), name), convention=conv)
            try:
                setattr(opt, key, v)
            except ValueError as e:          # needs state arrays it was not built with
                assert "cannot change" in str(e), str(e)
                continue
            assert getattr(opt, key) == v and opt.param_groups[0][key] == v
            for s in range(3):
                grads = rng_grads(rng, opt.params)
                if s == 1:
                    edited.param_groups[0][key] = v
                    setattr(late, key, v)
                for o in (opt, built, edited, late):
                    o.step([x.copy() for x in grads])
            what = f"{name}/{conv} {key}"
            _same(opt, built, f"{what}: attribute vs keyword")
            _same(late, edited, f"{what}: attribute vs group edit")
            assert opt.get_config()[key] == v


def test_attribute_aliases_and_keras_habits():
    w = np.ones(3)
    opt = fo.Adam([w], convention="torch")
    opt.lr, opt.betas, opt.eps = 0.01, (0.8, 0.95), 1e-5
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon) == (0.01, 0.8, 0.95, 1e-5)
    sgd = fo.SGD([np.ones(2)], momentum=0.9)
    sgd.momentum = 0.0                       # Keras users do this; it now takes effect
    assert sgd.hyperparameters()["momentum"] == 0.0
    with pytest.raises(AttributeError, match="no hyper-parameter 'momentum'"):
        opt.momentum = 0.9
    with pytest.raises(AttributeError, match="no 'dampening' in the keras convention"):
        fo.SGD([np.ones(2)]).dampening = 0.1


# ---- callables without arguments --------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_a_callable_without_arguments_is_a_schedule(name):
    """Keras 3 takes ``learning_rate=lambda: 0.1``; the arity is read once, at
    construction."""
    cls = REGISTRY[name]
    conv = default_convention(cls)
    rng = np.random.default_rng(3)
    a = _params(rng, name)
    b = [p.copy() for p in a]
    calls = []

    def lr():
        calls.append(1)
        return 0.01

    opt = build(name, a, convention=conv, learning_rate=lr)
    twin = build(name, b, convention=conv, learning_rate=0.01)
    assert opt.learning_rate is lr
    for _ in range(3):
        grads = rng_grads(rng, a)
        opt.step(grads)
        twin.step([x.copy() for x in grads])
    _same(opt, twin, name)
    assert len(calls) == 3
    with pytest.raises(TypeError, match=r"learning_rate: a schedule must be callable as "
                                        r"fn\(step\) or fn\(\)"):
        build(name, [np.ones(optim_db.param_shape(name, 2))], convention=conv,
              learning_rate=lambda a, b: 0.1)
    assert schedules.Lambda(lambda: 0.5)(10) == 0.5


# ---- add_param_group ----------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_in_the_torch_convention_matches_fresh_optimizers(name):
    cls = REGISTRY[name]
    if "torch" not in cls.conventions:
        pytest.skip("no torch convention")
    rng = np.random.default_rng(4)
    a = rng.standard_normal(optim_db.param_shape(name, 6))
    b = rng.standard_normal((2, 2)).astype(np.float32)
    a_ref, b_ref = a.copy(), b.copy()
    opt = build(name, [a], convention="torch")
    if cls.shared_clock:
        # one step count for all groups: a group added later is refused, not mis-clocked
        opt.step([rng.standard_normal(optim_db.param_shape(name, 6))])
        before = a.copy()
        with pytest.raises(ValueError, match="keeps one step count for every group"):
            opt.add_param_group({"params": [b], "lr": 0.02})
        assert len(opt.param_groups) == 1 and a.tobytes() == before.tobytes()
        return
    ref_a = build(name, [a_ref], convention="torch")
    ref_b = build(name, [b_ref], convention="torch", learning_rate=0.02)
    for s in range(6):
        if s == 3:
            opt.add_param_group({"params": [b], "lr": 0.02})
        ga = rng.standard_normal(optim_db.param_shape(name, 6))
        gb = rng.standard_normal((2, 2)).astype(np.float32)
        opt.step([ga] if s < 3 else [ga, gb])
        ref_a.step([ga.copy()])
        if s >= 3:
            ref_b.step([gb.copy()])
    assert a.tobytes() == a_ref.tobytes() and b.tobytes() == b_ref.tobytes(), name
    assert opt.iterations == 6 and len(opt.param_groups) == 2
    assert opt.param_groups[1]["learning_rate"] == 0.02


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_checkpoints_and_config(name, tmp_path):
    cls = REGISTRY[name]
    conv = default_convention(cls)
    rng = np.random.default_rng(5)
    kw = {"use_ema": True, "gradient_accumulation_steps": 2}
    a, b = _params(rng, name)
    opt = build(name, [a], convention=conv, **kw)
    opt.step(rng_grads(rng, [a]))
    opt.add_param_group({"params": [b], "name": "head"})
    for _ in range(3):
        opt.step(rng_grads(rng, [a, b]))
    fo.save(tmp_path / "c.npz", opt)
    again = build(name, [np.zeros_like(a)], convention=conv, **kw)
    again.add_param_group({"params": [np.zeros_like(b)], "name": "head"})
    fo.load(tmp_path / "c.npz", again)
    rebuilt = cls.from_config(opt.get_config(), [a.copy(), b.copy()])
    rebuilt.load_state_dict(opt.state_dict())
    _same(opt, again, f"{name}: checkpoint")
    for _ in range(2):
        grads = rng_grads(rng, [a, b])
        for o in (opt, again, rebuilt):
            o.step([x.copy() for x in grads])
    _same(opt, again, f"{name}: after the checkpoint")
    _same(opt, rebuilt, f"{name}: from_config")


def test_add_param_group_weight_decay_exclusion_by_name():
    a, b = np.ones(2), np.ones(2)
    opt = fo.SGD([{"params": [a], "name": "w"}], learning_rate=0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.add_param_group({"params": [b], "name": "bias"})
    opt.step([np.zeros(2), np.zeros(2)])
    assert (a < 1).all() and (b == 1).all()


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_refusals_change_nothing(name):
    cls = REGISTRY[name]
    conv = default_convention(cls)
    rng = np.random.default_rng(6)
    a, b = _params(rng, name)
    opt = build(name, [a], convention=conv)
    if not cls.shared_clock:       # (one clock for all groups: refused after a step)
        opt.step(rng_grads(rng, [a]))
    cases = [({"params": [a]}, ValueError, "pass each parameter once"),
             ({"params": [a[:1]]}, ValueError, "pass each parameter once"),
             ({"params": [b], "no_such": 1.0}, TypeError, "unknown hyper-parameter"),
             ({"params": [b], "learning_rate": -1.0}, ValueError, "learning_rate"),
             ({"params": [b], "lr": 0.1, "learning_rate": 0.1}, TypeError, "not both"),
             ({"params": [b.astype(np.int32)]}, TypeError, r"params\[1\]"),
             ({"no_params": [b]}, ValueError, "no 'params'"),
             ([b], TypeError, "expects a dict")]
    for group, exc, pattern in cases:
        before = snapshot(opt, [b])
        with pytest.raises(exc, match=pattern):
            opt.add_param_group(group)
        assert_unchanged(before, opt, [b], f"{name} add_param_group {group!r:.60}")
        assert len(opt.param_groups) == 1 and len(opt.params) == 1


# ---- copies -----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_and_pickle_continue_as_a_checkpoint_does(name, tmp_path):
    cls = REGISTRY[name]
    for conv in conventions(cls):
        rng = np.random.default_rng(7)
        params = _params(rng, name)
        opt = build(name, [{"params": params[:1], "name": "w"}, {"params": params[1:]}],
                    convention=conv, clipnorm=2.0, use_ema=True,
                    learning_rate=schedules.ExponentialDecay(0.01, 3, 0.5))
        opt.exclude_from_weight_decay(var_names=["w"])
        for _ in range(3):
            opt.step(rng_grads(rng, params))
        fo.save(tmp_path / "c.npz", opt)
        restored = build(name, [{"params": [np.zeros_like(params[0])], "name": "w"},
                                {"params": [np.zeros_like(params[1])]}], convention=conv,
                         clipnorm=2.0, use_ema=True,
                         learning_rate=schedules.ExponentialDecay(0.01, 3, 0.5))
        restored.exclude_from_weight_decay(var_names=["w"])
        fo.load(tmp_path / "c.npz", restored)
        copied = copy.deepcopy(opt)
        pickled = pickle.loads(pickle.dumps(opt))
        for o in (copied, pickled):
            assert all(p is not q for p, q in zip(o.params, opt.params))
            assert o._wd_excluded == opt._wd_excluded
        kept = [p.copy() for p in opt.params]
        for _ in range(3):       # the copies step independently of the original
            grads = rng_grads(rng, params)
            for o in (copied, pickled, restored):
                o.step([x.copy() for x in grads])
        assert all(p.tobytes() == k.tobytes() for p, k in zip(opt.params, kept))
        assert opt.iterations == 3
        _same(copied, restored, f"{name}/{conv}: deepcopy")
        _same(pickled, restored, f"{name}/{conv}: pickle")


def test_deepcopy_with_the_model_keeps_sharing_the_parameters():
    w = np.ones(3)
    model = {"w": w}
    opt = fo.Adam([w])
    model2, opt2 = copy.deepcopy((model, opt))
    assert opt2.params[0] is model2["w"] and model2["w"] is not w
    opt2.step([np.ones(3)])
    assert (w == 1).all() and (model2["w"] < 1).all()


# ---- the caller's metadata in checkpoints --------------------------------------------

def test_save_extra_round_trip(tmp_path):
    w = np.ones(3)
    opt = fo.Adam([w])
    opt.step([np.ones(3)])
    rng = np.random.default_rng(8)
    extra = {"epoch": 3, "loss": 0.25, "name": "run/1", "done": False, "none": None,
             "position": [1, 2, (3, 4)], "rng": rng.bit_generator.state,
             "perm": np.arange(5, dtype=np.int64), "mask": np.array([True, False]),
             "nested": {"a/b": np.ones((2, 2), np.float32), "a": {"b": np.zeros(1)}},
             "np_scalar": np.float32(0.5)}
    fo.save(tmp_path / "c.npz", opt, extra=extra)
    got = fo.load(tmp_path / "c.npz", fo.Adam([np.zeros(3)]))
    assert got["epoch"] == 3 and got["loss"] == 0.25 and got["name"] == "run/1"
    assert got["done"] is False and got["none"] is None and got["np_scalar"] == 0.5
    assert got["position"] == [1, 2, [3, 4]]
    for key in ("perm", "mask"):
        assert got[key].dtype == extra[key].dtype and (got[key] == extra[key]).all()
    assert (got["nested"]["a/b"] == 1).all() and (got["nested"]["a"]["b"] == 0).all()
    other = np.random.default_rng()
    other.bit_generator.state = got["rng"]
    assert other.random() == np.random.default_rng(8).random()
    fo.save(tmp_path / "d.npz", opt)
    assert fo.load(tmp_path / "d.npz", fo.Adam([np.zeros(3)])) == {}


@pytest.mark.parametrize(("extra", "exc", "pattern"), [
    ({"rng": np.random.default_rng(0)}, TypeError, "without pickle"),
    ({"f": lambda: 0}, TypeError, "without pickle"),
    ({"c": np.ones(2, np.complex128)}, TypeError, "numeric"),
    ({"s": np.array(["a"])}, TypeError, "numeric"),
    ({"o": np.array([None])}, TypeError, "numeric"),
    ({1: "x"}, TypeError, "not a string"),
    ({"a": {"__array__": "u/0"}}, ValueError, "__array__"),
    ([1, 2], TypeError, "must be a dict"),
])
def test_save_extra_refusals_leave_the_file_alone(tmp_path, extra, exc, pattern):
    opt = fo.Adam([np.ones(2)])
    path = tmp_path / "c.npz"
    fo.save(path, opt, extra={"epoch": 1})
    before = path.read_bytes()
    opt.step([np.ones(2)])
    with pytest.raises(exc, match=pattern):
        fo.save(path, opt, extra=extra)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_crafted_extra_is_refused(tmp_path):
    from fastopt import checkpoint
    opt = fo.Adam([np.ones(2)])
    sd = opt.state_dict()
    sd["params"] = [p.copy() for p in opt.params]
    sd["user_extra"] = [1, 2]
    checkpoint.write(tmp_path / "c.npz", sd)
    target = fo.Adam([np.zeros(2)])
    before = snapshot(target)
    with pytest.raises(ValueError, match="user_extra"):
        fo.load(tmp_path / "c.npz", target)
    assert_unchanged(before, target)


# ---- which hyper-parameters a loaded checkpoint leaves in force ------------------------

@pytest.mark.parametrize("convention", ["keras", "torch"])
def test_load_keeps_or_restores_hyperparameters_by_convention(convention, tmp_path):
    saved = fo.Adam([np.ones(2)], learning_rate=0.1, beta_1=0.8, convention=convention)
    saved.step([np.ones(2)])
    fo.save(tmp_path / "c.npz", saved)
    restores = convention == "torch"
    opt = fo.Adam([np.ones(2)], learning_rate=0.5, convention=convention)
    with pytest.warns(UserWarning, match="hyper-parameters differ.*learning_rate"):
        fo.load(tmp_path / "c.npz", opt)
    assert (opt.learning_rate, opt.beta_1) == ((0.1, 0.8) if restores else (0.5, 0.9))
    for policy, expect in (("checkpoint", (0.1, 0.8)), ("optimizer", (0.5, 0.9))):
        opt = fo.Adam([np.ones(2)], learning_rate=0.5, convention=convention)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fo.load(tmp_path / "c.npz", opt, hyperparameters=policy)
        assert (opt.learning_rate, opt.beta_1) == expect
        assert opt.hyperparameters()["learning_rate"] == expect[0]
        opt2 = fo.Adam([np.ones(2)], learning_rate=0.5, convention=convention)
        opt2.load_state_dict(saved.state_dict(), hyperparameters=policy)
        assert (opt2.learning_rate, opt2.beta_1) == expect
    same = fo.Adam([np.ones(2)], learning_rate=0.1, beta_1=0.8, convention=convention)
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # nothing differs: nothing to say
        fo.load(tmp_path / "c.npz", same)


def test_load_restores_schedules_and_keeps_the_users_own_object(tmp_path):
    plateau = schedules.ReduceOnPlateau(0.01, factor=0.5, patience=0)
    w = np.ones(2)
    saved = fo.SGD([w], learning_rate=plateau, convention="torch")
    saved.step([np.ones(2)])
    plateau.report(1.0)
    plateau.report(2.0)
    fo.save(tmp_path / "c.npz", saved)
    mine = schedules.ReduceOnPlateau(0.01, factor=0.5, patience=0)
    opt = fo.SGD([np.ones(2)], learning_rate=mine, convention="torch")
    fo.load(tmp_path / "c.npz", opt)
    assert opt.learning_rate is mine           # same schedule: the user's object, restored
    assert opt.hyperparameters()["learning_rate"] == saved.hyperparameters()["learning_rate"]
    other = fo.SGD([np.ones(2)], learning_rate=0.3, convention="torch")
    fo.load(tmp_path / "c.npz", other, hyperparameters="checkpoint")
    assert isinstance(other.learning_rate, schedules.ReduceOnPlateau)
    assert other.hyperparameters()["learning_rate"] == saved.hyperparameters()["learning_rate"]


def test_load_refusals_change_nothing(tmp_path):
    saved = fo.Adam([np.ones(2)], learning_rate=0.1, convention="torch")
    fo.save(tmp_path / "c.npz", saved)
    opt = fo.Adam([np.ones(2)], convention="torch")
    before = snapshot(opt)
    with pytest.raises(ValueError, match="hyperparameters must be 'checkpoint'"):
        fo.load(tmp_path / "c.npz", opt, hyperparameters="newest")
    assert_unchanged(before, opt)
    sd = saved.state_dict()
    sd["config"]["learning_rate"] = -1.0
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        opt.load_state_dict(sd, hyperparameters="checkpoint")
    assert_unchanged(before, opt)
    opt.load_state_dict(sd, hyperparameters="optimizer")     # the config is not read
