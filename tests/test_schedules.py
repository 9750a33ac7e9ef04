"""Tests for fastopt.schedules: anchor value tables (Keras 3, torch), plateau
sequences in both conventions, configs, state, serialization, errors, plot."""

import json
import math
import sys
import types

import numpy as np
import pytest

import fastopt.schedules as S


def close(actual, expected, rtol=5e-6, atol=0.0):
    """Values given to 6 significant digits in the spec."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# spec §3.1: Keras 3 value tables (steps 0..10)
# ---------------------------------------------------------------------------

KERAS_TABLES = [
    (S.ExponentialDecay(1, 4, .5),
     [1, .840896, .707107, .594604, .5, .420448, .353553, .297302, .25,
      .210224, .176777]),
    (S.ExponentialDecay(1, 4, .5, staircase=True),
     [1, 1, 1, 1, .5, .5, .5, .5, .25, .25, .25]),
    (S.PiecewiseConstant([3, 6], [1, .5, .1], switch="after"),
     [1, 1, 1, 1, .5, .5, .5, .1, .1, .1, .1]),
    (S.PolynomialDecay(1, 4, end_learning_rate=.1),
     [1, .775, .55, .325, .1, .1, .1, .1, .1, .1, .1]),
    (S.PolynomialDecay(1, 4, end_learning_rate=.1, cycle=True),
     [1, .775, .55, .325, .1, .4375, .325, .2125, .1, .325, .25]),
    (S.InverseTimeDecay(1, 2, .5),
     [1, .8, .666667, .571429, .5, .444444, .4, .363636, .333333, .307692,
      .285714]),
    (S.InverseTimeDecay(1, 2, .5, staircase=True),
     [1, 1, .666667, .666667, .5, .5, .4, .4, .333333, .333333, .285714]),
    (S.CosineDecay(1, 4, alpha=.1),
     [1, .868198, .55, .231802, .1, .1, .1, .1, .1, .1, .1]),
    (S.CosineDecay(0, 4, alpha=.1, warmup_target=1, warmup_steps=3),
     [0, .333333, .666667, 1, .868198, .55, .231802, .1, .1, .1, .1]),
    (S.CosineDecayRestarts(1, 2, t_mul=2, m_mul=.5),
     [1, .5, .5, .426777, .25, .0732233, .25, .240485, .213388, .172835, .125]),
    (S.CosineDecayRestarts(1, 3, t_mul=1, alpha=.1),
     [1, .775, .325, 1, .775, .325, 1, .775, .325, 1, .775]),
]


@pytest.mark.parametrize("sched,expected", KERAS_TABLES,
                         ids=[repr(s)[:60] for s, _ in KERAS_TABLES])
def test_keras_tables(sched, expected):
    close([sched(t) for t in range(len(expected))], expected)
    close(sched.values(len(expected)), expected)


def test_piecewise_constant_default_switches_at_boundary():
    s = S.PiecewiseConstant([3, 6], [1, .5, .1])
    # our semantics: the value changes AT the boundary step (Keras: one later)
    assert s.values(11).tolist() == [1, 1, 1, .5, .5, .5, .1, .1, .1, .1, .1]
    assert s(2) == 1 and s(3) == .5 and s(5) == .5 and s(6) == .1
    keras = S.PiecewiseConstant([3, 6], [1, .5, .1], switch="after")
    assert keras(3) == 1 and keras(4) == .5 and keras(6) == .5 and keras(7) == .1
    # boundary 0: values[0] is never used with switch="at"
    z = S.PiecewiseConstant([0, 2], [9, 1, 2])
    assert z.values(4).tolist() == [1, 1, 2, 2]


# ---------------------------------------------------------------------------
# spec §3.5: torch value tables (closed forms)
# ---------------------------------------------------------------------------

TORCH_TABLES = [
    ("StepLR(2,.5)", S.StepDecay(1, 2, .5), [1, 1, .5, .5, .25, .25, .125]),
    ("MultiStepLR([2,5],.1)", S.MultiStepDecay(1, [2, 5], .1),
     [1, 1, .1, .1, .1, .01, .01]),
    ("ConstantLR(.5,3)", S.PiecewiseConstant([3], [.5, 1]),
     [.5, .5, .5, 1, 1, 1]),
    ("LinearLR(.25,1,4)", S.LinearWarmup(4, 1.0, start=.25),
     [.25, .4375, .625, .8125, 1, 1, 1]),
    ("PolynomialLR(4,2)", S.PolynomialDecay(1, 4, end_learning_rate=0, power=2),
     [1, .5625, .25, .0625, 0, 0, 0]),
    # torch is not clamped past T_max; ours is: compare the first T_max+1 steps
    ("CosineAnnealingLR(4)", S.CosineDecay(1, 4), [1, .853553, .5, .146447, 0]),
    ("CosineAnnealingWarmRestarts(3,2)", S.CosineDecayRestarts(1, 3, t_mul=2),
     [1, .75, .25, 1, .933013, .75, .5, .25, .0669873, 1, .982963]),
    ("CyclicLR(.1,1,2,triangular2)",
     S.CyclicLR(.1, 1, step_size_up=2, mode="triangular2"),
     [.1, .55, 1, .55, .1, .325, .55, .325, .1, .2125, .325, .2125, .1]),
    ("CyclicLR momentum",
     S.CyclicLR(.1, 1, step_size_up=2, mode="triangular2").momentum,
     [.9, .85, .8, .85, .9, .875, .85, .875, .9, .8875, .875, .8875, .9]),
    ("OneCycleLR(1,10)", S.OneCycle(1, 10, anneal="cos"),
     [.04, .52, 1, .950485, .811746, .611262, .388742, .188258, .0495194,
      4e-6]),
    ("OneCycleLR(10,three_phase,linear)", S.OneCycle(1, 10, pct_start=.3),
     [.04, .52, 1, .52, .04, .0320008, .0240016, .0160024, .0080032, 4e-6]),
    ("SequentialLR(LinearLR(.1,1,3),ExponentialLR(.5),[3])",
     S.Sequential([S.LinearWarmup(3, 1.0, start=.1), S.ExponentialDecay(1, 1, .5)],
                  [3]),
     [.1, .4, .7, 1, .5, .25, .125]),
    ("SequentialLR via LinearWarmup(after=)",
     S.LinearWarmup(3, start=.1, after=S.ExponentialDecay(1, 1, .5)),
     [.1, .4, .7, 1, .5, .25, .125]),
    ("ChainedScheduler(ConstantLR(.5,2),ExponentialLR(.9))",
     S.PiecewiseConstant([2], [.5, 1]) * S.ExponentialDecay(1, 1, .9),
     [.5, .45, .81, .729, .6561, .59049]),
]


@pytest.mark.parametrize("name,sched,expected", TORCH_TABLES,
                         ids=[n for n, _, _ in TORCH_TABLES])
def test_torch_tables(name, sched, expected):
    close(sched.values(len(expected)), expected, atol=1e-15)


def test_onecycle_momentum_torch_row():
    m = S.OneCycle(1, 10, anneal="cos").momentum
    assert isinstance(m, S.OneCycleMomentum)
    # spec gives this row to 3-4 digits
    close(m.values(10), [.95, .9, .85, .855, .8688, .8889, .9111, .9312, .945, .95],
          rtol=0, atol=6e-4)


def test_onecycle_clamped_past_end_never_negative():
    for s in (S.OneCycle(1, 10, anneal="cos"), S.OneCycle(1, 10, pct_start=.3),
              S.OneCycle(1, 10)):
        final = s(9)
        assert final == pytest.approx(4e-6)
        # torch extrapolates (t=10: .0495194 for cos, -.0079952 for linear); we hold
        for t in (10, 11, 100, 10**9, 2**70):
            assert s(t) == final
            assert s.momentum(t) == s.momentum(9)
        assert min(s.values(50)) > 0


def test_onecycle_defaults_geron_shape():
    s = S.OneCycle(0.1, 100)
    cfg = s.get_config()
    assert cfg["three_phase"] is True and cfg["anneal"] == "linear"
    assert cfg["pct_start"] == .45 and cfg["div_factor"] == 25.0
    assert cfg["final_div_factor"] == 1e4
    v = s.values(100)
    assert v[0] == pytest.approx(0.1 / 25)
    assert v.max() == pytest.approx(0.1) and int(v.argmax()) == 44
    assert v[88] == pytest.approx(0.1 / 25)                # symmetric back down
    assert v[99] == pytest.approx(0.1 / 25 / 1e4)
    np.testing.assert_allclose(v[:45], v[88:43:-1], rtol=1e-12)  # symmetric
    m = s.momentum.values(100)
    assert m[0] == .95 and m[44] == pytest.approx(.85) and m[88] == pytest.approx(.95)
    assert np.all(m[88:] == .95)
    # cos default is torch's two-phase shape with pct_start .3
    c = S.OneCycle(1, 10, anneal="cos")
    assert c.three_phase is False and c.pct_start == .3


def test_onecycle_tiny_total_steps_never_raise():
    for n in range(1, 6):
        for kw in ({}, {"anneal": "cos"}, {"pct_start": 0.0}, {"pct_start": .5},
                   {"anneal": "cos", "pct_start": 1.0}):
            s = S.OneCycle(2.0, n, **kw)
            v = s.values(n + 3)
            assert np.all(np.isfinite(v)) and np.all(v >= 0) and np.all(v <= 2.0)
            assert v[-1] == pytest.approx(2.0 / 25 / 1e4)
            assert np.all(np.isfinite(s.momentum.values(n + 3)))


def test_cyclic_modes():
    tri = S.CyclicLR(0, 1, step_size_up=2, step_size_down=4)
    close(tri.values(7), [0, .5, 1, .75, .5, .25, 0], atol=1e-15)
    assert tri(6 + 2) == pytest.approx(1.0)
    exp = S.CyclicLR(0, 1, step_size_up=2, mode="exp_range", gamma=.9)
    assert exp.scale_mode == "iterations"
    assert exp(2) == pytest.approx(.9 ** 2) and exp(6) == pytest.approx(.9 ** 6)
    assert exp.momentum(2) == pytest.approx(.9 - .1 * .9 ** 2)


# ---------------------------------------------------------------------------
# seed formulas
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0, 1, 7, 20, 1000, 123456])
def test_seed_formulas(t):
    assert S.PowerDecay(0.01, 20, 1.0)(t) == pytest.approx(0.01 / (1 + t / 20))
    assert S.PowerDecay(0.01, 20, 0.5)(t) == pytest.approx(0.01 / (1 + t / 20) ** .5)
    assert S.ExponentialDecay(0.01, 20)(t) == pytest.approx(0.01 * 0.1 ** (t / 20))
    assert S.ExponentialDecay(0.01, 20, staircase=True)(t) == pytest.approx(
        0.01 * 0.1 ** (t // 20))
    assert S.InverseTimeDecay(0.01, 20, 1.0)(t) == pytest.approx(
        S.PowerDecay(0.01, 20)(t))


def test_exponential_growth_overflows_to_inf_not_error():
    s = S.ExponentialDecay(1e-7, 10, 10.0)
    assert s(10) == pytest.approx(1e-6)
    assert s(10**6) == math.inf


def test_multistep_repeated_milestone_counts_twice():
    s = S.MultiStepDecay(1, [2, 2, 4], .5)
    assert s.values(6).tolist() == [1, 1, .25, .25, .125, .125]


def test_cosine_restarts_cycle_edges_exact():
    # cycle starts at f = 0, 1, 3, 7, 15, ... for t_mul=2; restart gives peak * m^i
    s = S.CosineDecayRestarts(1, 5, t_mul=2, m_mul=.5)
    for i, start in enumerate([0, 5, 15, 35, 75, 155]):
        assert s(start) == pytest.approx(.5 ** i, rel=1e-12)
    s3 = S.CosineDecayRestarts(1, 1, t_mul=3)
    for i, start in enumerate([0, 1, 4, 13, 40, 121, 364]):
        assert s3(start) == pytest.approx(1.0)


def test_sequential_edges():
    a, b, c = S.Constant(1.0), S.ExponentialDecay(1, 1, .5), S.Constant(7.0)
    s = S.Sequential([a, b, c], [2, 5])
    assert s.values(8).tolist() == [1, 1, 1, .5, .25, 7, 7, 7]
    # milestone 0: the first schedule is never used; the second starts at 0
    z = S.Sequential([S.Constant(9.0), S.ExponentialDecay(1, 1, .5)], [0])
    assert z.values(3).tolist() == [1, .5, .25]
    # numbers are accepted as constants
    n = S.Sequential([0.1, S.LinearWarmup(2, 1.0)], [1])
    assert n.values(4).tolist() == [.1, 0, .5, 1]


def test_linear_warmup_variants():
    r = S.LinearWarmup(4, 1.0)
    assert r.values(6).tolist() == [0, .25, .5, .75, 1, 1]
    down = S.LinearWarmup(2, 0.0, start=1.0)
    assert down.values(3).tolist() == [1, .5, 0]
    cont = S.LinearWarmup(2, after=S.ExponentialDecay(.8, 1, .5))
    assert cont.values(5).tolist() == pytest.approx([0, .4, .8, .4, .2])
    zero = S.LinearWarmup(0, 3.0)
    assert zero(0) == 3.0


def test_product_and_operators():
    a = S.ExponentialDecay(1, 1, .5)
    p = a * 0.5
    assert isinstance(p, S.Product) and p(2) == .125
    q = 2.0 * a
    assert q(1) == 1.0
    r = a * S.Constant(3.0) * 2
    assert isinstance(r, S.Product) and len(r.factors) == 3  # flattened
    assert r(1) == 3.0
    assert S.Product(a)(3) == .125
    assert S.Product([a, 2.0])(1) == 1.0
    with pytest.raises(TypeError):
        a * "x"


def test_constant_and_lambda():
    assert S.Constant(0.3)(10**12) == 0.3
    f = S.Lambda(lambda t: 0.5 ** t)
    assert f(3) == 0.125 and type(f(3)) is float
    assert "Lambda" in repr(f)


# ---------------------------------------------------------------------------
# step handling
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("step", [3, np.int64(3), np.int32(3), np.uint8(3),
                                  np.array(3), np.array(3, dtype=np.int16), 3.0,
                                  np.float64(3.0), np.array(3.0)])
def test_step_types_accepted(step):
    s = S.ExponentialDecay(1, 1, .5)
    v = s(step)
    assert type(v) is float and v == .125


@pytest.mark.parametrize("step,exc", [(-1, ValueError), (np.int64(-5), ValueError),
                                      (2.5, ValueError), (math.nan, ValueError),
                                      (math.inf, ValueError), ("3", TypeError),
                                      (True, TypeError), (None, TypeError),
                                      (np.array([3]), TypeError)])
def test_bad_steps(step, exc):
    with pytest.raises(exc, match="step"):
        S.Constant(1.0)(step)


def test_every_schedule_returns_python_float():
    for s in all_schedules():
        for t in (0, np.int64(5), np.array(9)):
            assert type(s(t)) is float
        v = s.values(4)
        assert v.dtype == np.float64 and v.shape == (4,)
        with pytest.raises(ValueError):
            s(-1)


# ---------------------------------------------------------------------------
# spec §3.4: plateau sequences
# ---------------------------------------------------------------------------

PLATEAU_METRICS = [1.0, 0.9] + [0.9] * 9

PLATEAU_ROWS = [
    (dict(convention="keras", patience=2),
     [1, 1, 1, .5, .5, .25, .25, .125, .125, .0625, .0625]),
    (dict(convention="torch", patience=2),
     [1, 1, 1, 1, .5, .5, .5, .25, .25, .25, .125]),
    (dict(convention="keras", patience=2, cooldown=2),
     [1, 1, 1, .5, .5, .5, .25, .25, .25, .125, .125]),
    (dict(convention="torch", patience=2, cooldown=2),
     [1, 1, 1, 1, .5, .5, .5, .5, .5, .25, .25]),
    (dict(convention="keras", patience=0), [1, 1, .5, .25, .125]),
    (dict(convention="torch", patience=0), [1, 1, .5, .25, .125]),
    (dict(convention="keras", patience=1, min_lr=.3), [1, 1, .5, .3, .3] + [.3] * 6),
    (dict(convention="torch", patience=1, min_lr=.3),
     [1, 1, 1, .5, .5, .3] + [.3] * 5),
]


def run_plateau(sched, metrics, step=None):
    out = []
    for m in metrics:
        sched.report(m) if step is None else sched.report(m, step=step)
        out.append(sched(0))
    return out


@pytest.mark.parametrize("kw,expected", PLATEAU_ROWS,
                         ids=[str(kw) for kw, _ in PLATEAU_ROWS])
def test_plateau_spec_rows(kw, expected):
    s = S.ReduceOnPlateau(1.0, factor=.5, min_delta=0.0, **kw)
    assert run_plateau(s, PLATEAU_METRICS[:len(expected)]) == pytest.approx(expected)
    # same with a schedule base (a Constant) and an explicit step
    s2 = S.ReduceOnPlateau(S.Constant(1.0), factor=.5, min_delta=0.0, **kw)
    assert run_plateau(s2, PLATEAU_METRICS[:len(expected)], step=3) == \
        pytest.approx(expected)


def test_plateau_patience_zero_continues_halving():
    for conv in ("keras", "torch"):
        s = S.ReduceOnPlateau(1.0, factor=.5, patience=0, min_delta=0.0,
                              convention=conv)
        assert run_plateau(s, PLATEAU_METRICS) == pytest.approx(
            [1, 1] + [.5 ** k for k in range(1, 10)])


def test_plateau_multiplies_a_base_schedule():
    base = S.ExponentialDecay(1.0, 10, .1)
    s = S.ReduceOnPlateau(base, factor=.5, patience=1, min_delta=0.0)
    for t in (0, 5, 17):
        assert s(t) == base(t)
    s.report(1.0)
    assert s.report(1.0) is True                  # keras: wait 1 >= patience 1
    assert s.scale == .5 and s.num_reductions == 1
    for t in (0, 5, 17):
        assert s(t) == pytest.approx(base(t) * .5)
    # min_lr floors the reduced value but never lifts the base above itself
    f = S.ReduceOnPlateau(S.ExponentialDecay(1.0, 1, .1), factor=.1, patience=0,
                          min_delta=0.0, min_lr=.05)
    f.report(1.0)
    f.report(1.0)
    assert f(0) == .1 and f(1) == .05 and f(3) == pytest.approx(1e-3)


def test_plateau_relative_threshold_negative_metrics():
    # min: improvement needs cur < best - thr*|best|
    s = S.ReduceOnPlateau(1.0, mode="min", min_delta=.1, threshold_mode="rel",
                          patience=5)
    s.report(-1.0)
    s.report(-1.05)             # torch's best*(1-thr) = -0.9 would call this better
    assert s.best == -1.0 and s.wait == 1
    s.report(-1.2)
    assert s.best == -1.2 and s.wait == 0
    t = S.ReduceOnPlateau(1.0, mode="min", min_delta=.1, convention="torch",
                          patience=5)
    assert t.threshold_mode == "rel"
    t.report(-1.0)
    t.report(-1.05)
    assert t.best == -1.0 and t.num_bad == 1
    # max with negative metrics: cur > best + thr*|best|
    m = S.ReduceOnPlateau(1.0, mode="max", min_delta=.1, threshold_mode="rel",
                          patience=5)
    m.report(-1.0)
    m.report(-0.95)
    assert m.best == -1.0 and m.wait == 1
    m.report(-0.85)
    assert m.best == -0.85 and m.wait == 0
    # positive metrics: same as torch's formula
    p = S.ReduceOnPlateau(1.0, min_delta=.1, threshold_mode="rel", patience=5)
    p.report(1.0)
    p.report(0.91)
    assert p.wait == 1
    p.report(0.89)
    assert p.best == .89


def test_plateau_mode_max_and_abs_delta():
    s = S.ReduceOnPlateau(1.0, mode="max", factor=.5, patience=2, min_delta=.05)
    out = run_plateau(s, [0.1, 0.2, 0.22, 0.24, 0.3, 0.3, 0.3])
    # 0.22 and 0.24 are not > best(0.2)+0.05 -> two bad reports -> reduce
    assert out == [1, 1, 1, .5, .5, .5, .25]
    assert s.best == .3


def test_plateau_nan_metric_is_not_improvement():
    s = S.ReduceOnPlateau(1.0, patience=1, factor=.5)
    s.report(float("nan"))
    # counted as a bad report: wait reaches patience 1 -> reduce, wait reset
    assert s.best == math.inf and s.wait == 0 and s.scale == .5
    s.report(np.float32(2.0))
    assert s.best == 2.0
    s.report(np.array([1.0]))
    assert s.best == 1.0
    with pytest.raises(TypeError, match="metric"):
        s.report("0.5")


def test_plateau_torch_eps_skip():
    s = S.ReduceOnPlateau(1e-9, factor=.5, patience=0, convention="torch",
                          min_delta=0.0)
    s.report(1.0)
    assert s.report(1.0) is False   # change 5e-10 < eps 1e-8: skipped, counters reset
    assert s.scale == 1.0 and s.wait == 0


def test_plateau_state_and_reset():
    s = S.ReduceOnPlateau(0.1, patience=1, cooldown=1, factor=.5)
    assert s.state_dict() == {"best": math.inf, "wait": 0, "cooldown_counter": 0,
                              "scale": 1.0, "num_reports": 0, "num_reductions": 0}
    for m in (1.0, 1.0, 1.0):
        s.report(m)
    sd = s.state_dict()
    # r2: wait 1 -> reduce, cooldown 1; r3: cooldown 1 -> 0, wait 1 -> reduce
    assert sd == {"best": 1.0, "wait": 0, "cooldown_counter": 1, "scale": .25,
                  "num_reports": 3, "num_reductions": 2}
    assert all(type(v) in (int, float) for v in sd.values())
    s2 = S.ReduceOnPlateau(0.1, patience=1, cooldown=1, factor=.5)
    s2.load_state_dict({k: np.float64(v) if isinstance(v, float) else np.int64(v)
                        for k, v in sd.items()})
    assert s2.state_dict() == sd and s2(0) == s(0)
    s.reset()
    assert s.scale == 1.0 and s.num_reports == 0
    with pytest.raises(ValueError, match="missing keys"):
        s.load_state_dict({"best": 1.0})
    with pytest.raises(ValueError, match="unknown keys"):
        s.load_state_dict(dict(sd, bogus=1))


# ---------------------------------------------------------------------------
# config round trip, repr, serialization
# ---------------------------------------------------------------------------

@S.register
class Halving(S.Schedule):
    """A user subclass used to test the registry."""

    def __init__(self, lr, every=1):
        self.lr, self.every = lr, every

    def _compute(self, t):
        return self.lr * 0.5 ** (t // self.every)

    def get_config(self):
        return {"lr": self.lr, "every": self.every}


def all_schedules():
    plateau = S.ReduceOnPlateau(S.ExponentialDecay(1, 10, .5), patience=1,
                                factor=.5, cooldown=1)
    return [
        S.Constant(0.2),
        S.PowerDecay(0.01, 20, 0.5),
        S.ExponentialDecay(0.01, 7, .5, staircase=True),
        S.InverseTimeDecay(1, 2, .5, staircase=True),
        S.PiecewiseConstant([3, 6], [1, .5, .1], switch="after"),
        S.PolynomialDecay(1, 4, end_learning_rate=.1, power=2, cycle=True),
        S.CosineDecay(0, 4, alpha=.1, warmup_target=1, warmup_steps=3),
        S.CosineDecayRestarts(1, 3, t_mul=1.5, m_mul=.9, alpha=.05),
        S.LinearWarmup(5, start=.1, after=S.CosineDecay(1.0, 20)),
        S.StepDecay(1, 3, .5),
        S.MultiStepDecay(1, [2, 5, 5], .3),
        S.CyclicLR(.1, 1, 3, 5, mode="exp_range", gamma=.97),
        S.CyclicMomentum(.1, 1, 3, mode="triangular2"),
        S.OneCycle(1, 30, anneal="cos"),
        S.OneCycleMomentum(1, 30),
        plateau,
        S.Sequential([S.LinearWarmup(3, 1.0), S.ReduceOnPlateau(0.5, patience=0),
                      0.01], [3, 40]),
        S.Product(S.StepDecay(1, 4), 0.5, S.Constant(2.0)),
        Halving(0.4, every=3),
        S.LinearLR(0.5, 0.9, 7, base_lr=0.3),
        S.ConstantLR(0.25, 3, base_lr=0.3),
        S.MultiplicativeLR("halving_factor", base_lr=0.3),
        S.PolynomialLR(9, 1.5, base_lr=0.3),
        S.StepLR(4, 0.7, base_lr=0.3),
        S.MultiStepLR([9, 3, 3], 0.5, base_lr=0.3),
        S.ExponentialLR(0.95, base_lr=0.3),
        S.CosineAnnealingLR(7, 0.01, base_lr=0.3),
        S.CosineAnnealingWarmRestarts(3, 2, 0.01, base_lr=0.3),
        S.OneCycleLR(0.3, epochs=3, steps_per_epoch=9),
        S.SWALR(0.05, 6, "linear", base_lr=0.3),
        S.PiecewiseInterpolate("cosine", 0.3, {4: 0.5, 20: 0.1}),
        S.LinearOneCycle(30, 0.3),
        S.WarmupCosineDecay(0.0, 0.3, 5, 30, end_value=0.01, exponent=2.0),
        S.WarmupExponentialDecay(0.0, 0.3, 5, 4, 0.5, transition_begin=3,
                                 end_value=0.01),
        S.WarmupStableDecay(0.3, 5, 20, 10, decay_shape="1-sqrt", end_value=0.01),
        S.Lambda("halving_factor", name="lam"),
    ]


@S.register_function
def halving_factor(t):
    return 0.5 if t % 2 else 1.0


def test_all_builtin_classes_covered():
    covered = {type(s).__name__ for s in all_schedules()}
    builtin = {n for n, c in S._REGISTRY.items() if c.__module__ == S.__name__}
    assert builtin <= covered, builtin - covered
    for name in S.__all__:
        assert hasattr(S, name)


@pytest.mark.parametrize("sched", all_schedules(), ids=lambda s: type(s).__name__)
def test_config_round_trip(sched):
    cfg = sched.get_config()
    cfg_json = json.loads(json.dumps(cfg))
    assert cfg_json == cfg
    clone = type(sched).from_config(cfg_json)
    np.testing.assert_array_equal(clone.values(51), sched.values(51))
    assert repr(clone) == repr(sched)
    assert repr(sched).startswith(type(sched).__name__ + "(")
    # name= on every schedule, kept in the config (Keras); a user class that
    # writes its own get_config decides what it keeps
    named = type(sched).from_config(dict(cfg_json, name="kept"))
    assert named.name == "kept"
    if type(sched).get_config is S.Schedule.get_config:
        assert named.get_config()["name"] == "kept"


@pytest.mark.parametrize("sched", all_schedules(), ids=lambda s: type(s).__name__)
def test_serialize_round_trip(sched):
    d = S.serialize(sched)
    assert set(d) == {"class_name", "config", "state"}
    d2 = json.loads(json.dumps(d))
    clone = S.deserialize(d2)
    assert type(clone) is type(sched)
    np.testing.assert_array_equal(clone.values(51), sched.values(51))
    assert clone.state_dict() == sched.state_dict()


def test_stateless_schedules_have_empty_state():
    for s in all_schedules():
        if not isinstance(s, (S.ReduceOnPlateau, S.Sequential,
                              S.MultiplicativeLR)):
            assert s.state_dict() == {}
            s.load_state_dict({})
    with pytest.raises(ValueError, match="no state"):
        S.Constant(1.0).load_state_dict({"x": 1})


def test_serialize_plateau_mid_run_continues_identically():
    rng = np.random.default_rng(0)
    metrics = list(1.0 / (1 + np.arange(40)) + 0.05 * rng.random(40))
    metrics[15:] = [0.5] * 25
    for conv in ("keras", "torch"):
        a = S.ReduceOnPlateau(S.CosineDecay(0.1, 100), factor=.5, patience=2,
                              cooldown=1, convention=conv, min_lr=1e-4)
        for m in metrics[:20]:
            a.report(m)
        assert a.num_reductions > 0
        blob = json.dumps(S.serialize(a))
        b = S.deserialize(json.loads(blob))
        assert b.state_dict() == a.state_dict()
        for step, m in enumerate(metrics[20:]):
            ra, rb = a.report(m, step=step), b.report(m, step=step)
            assert ra == rb
            assert a(step) == b(step)
        assert a.state_dict() == b.state_dict()


def test_nested_state_round_trips():
    inner = S.ReduceOnPlateau(1.0, patience=0, factor=.5)
    seq = S.Sequential([S.LinearWarmup(2, 1.0), inner], [2])
    prod = seq * 0.1
    assert seq.state_dict() == {"children": [{}, inner.state_dict()]}
    inner.report(1.0)
    inner.report(1.0)
    d = S.serialize(prod)
    assert d["state"]["children"][0]["children"][1]["scale"] == .5
    clone = S.deserialize(json.loads(json.dumps(d)))
    np.testing.assert_array_equal(clone.values(10), prod.values(10))
    assert clone.factors[0].schedules[1].scale == .5
    # plateau over a plateau
    outer = S.ReduceOnPlateau(inner, patience=0, factor=.5)
    outer.report(3.0)
    outer.report(3.0)
    c2 = S.deserialize(S.serialize(outer))
    assert c2.scale == .5 and c2.base.scale == .5 and c2(5) == outer(5) == .25
    # missing child state is refused
    with pytest.raises(ValueError, match="children"):
        S.Sequential([1.0, S.ReduceOnPlateau(1.0)], [1]).load_state_dict({})
    with pytest.raises(ValueError, match="entries"):
        seq.load_state_dict({"children": [{}]})


def test_lambda_cannot_be_serialized():
    f = S.Lambda(lambda t: 1.0)
    with pytest.raises(TypeError, match="cannot be serialized"):
        S.serialize(f)
    with pytest.raises(TypeError, match="Schedule subclass"):
        f.get_config()
    with pytest.raises(TypeError, match="cannot be serialized"):
        S.serialize(S.Constant(1.0) * f)
    # plain callables are wrapped as Lambda when composed
    g = S.Sequential([lambda t: 2.0, 1.0], [1])
    assert g(0) == 2.0 and isinstance(g.schedules[0], S.Lambda)
    with pytest.raises(TypeError, match="expected a fastopt.schedules.Schedule"):
        S.serialize(lambda t: 1.0)


def test_registry_user_subclass():
    h = Halving(0.4, every=2)
    d = S.serialize(h)
    assert d["class_name"] == "Halving"
    assert S.deserialize(d).values(6).tolist() == h.values(6).tolist()

    class Unregistered(Halving):
        pass

    with pytest.raises(TypeError, match="not registered"):
        S.serialize(Unregistered(1.0))
    with pytest.raises(ValueError, match="unknown schedule class"):
        S.deserialize({"class_name": "Nope", "config": {}})
    assert S.deserialize({"class_name": "Nope", "config": {"lr": 1.0}},
                         custom_objects={"Nope": Halving})(1) == .5

    @S.register(name="my.Halving")
    class Named(Halving):
        pass

    assert S.serialize(Named(1.0))["class_name"] == "my.Halving"
    assert type(S.deserialize(S.serialize(Named(1.0)))) is Named
    with pytest.raises(ValueError, match="built-in"):
        S.register(name="Constant")(Named)
    with pytest.raises(TypeError):
        S.register(int)


def test_deserialize_bad_input():
    with pytest.raises(ValueError, match="class_name"):
        S.deserialize({"config": {}})
    with pytest.raises(ValueError, match="config"):
        S.deserialize({"class_name": "Constant", "config": [1]})
    with pytest.raises(TypeError, match="bad config keys"):
        S.Constant.from_config({"value": 1.0, "bogus": 2})


def test_optimizer_contract_plain_callable_use():
    # an optimizer calls float(sched(iterations)); first update sees step 0
    sched = S.OneCycle(0.1, 5)
    lrs = [float(sched(it)) for it in np.arange(7, dtype=np.int64)]
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[5] == lrs[6] == lrs[4]


# ---------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------

BAD_ARGS = [
    (lambda: S.PowerDecay(0.1, 0), ValueError, r"decay_steps must be > 0, got 0"),
    (lambda: S.PowerDecay(0.1, 10, -1), ValueError, r"power must be >= 0"),
    (lambda: S.ExponentialDecay(0.1, -5), ValueError, r"decay_steps.*got -5"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.0), ValueError, r"decay_rate"),
    (lambda: S.ExponentialDecay(math.nan, 10), ValueError,
     r"initial_learning_rate must be finite, got nan"),
    (lambda: S.ExponentialDecay(0.1, math.inf), ValueError, r"decay_steps must be finite"),
    (lambda: S.ExponentialDecay("0.1", 10), TypeError, r"initial_learning_rate must be a real"),
    (lambda: S.ExponentialDecay(0.1, 10, staircase=1), TypeError, r"staircase must be a bool"),
    (lambda: S.InverseTimeDecay(1, 0, .5), ValueError, r"decay_steps"),
    (lambda: S.PiecewiseConstant([], [1.0]), ValueError, r"boundaries must not be empty"),
    (lambda: S.PiecewiseConstant([3, 6], [1, 2]), ValueError,
     r"len\(values\) must be len\(boundaries\) \+ 1 = 3, got 2"),
    (lambda: S.PiecewiseConstant([6, 3], [1, 2, 3]), ValueError,
     r"boundaries must be strictly increasing"),
    (lambda: S.PiecewiseConstant([3, 3], [1, 2, 3]), ValueError, r"strictly increasing"),
    (lambda: S.PiecewiseConstant([-1], [1, 2]), ValueError, r"boundaries\[0\] must be >= 0"),
    (lambda: S.PiecewiseConstant([1.5], [1, 2]), ValueError, r"must be an integer"),
    (lambda: S.PiecewiseConstant([1], [1, math.inf]), ValueError, r"values\[1\] must be finite"),
    (lambda: S.PiecewiseConstant([1], [1, 2], switch="before"), ValueError, r"switch"),
    (lambda: S.PolynomialDecay(1, 0), ValueError, r"decay_steps"),
    (lambda: S.CosineDecay(1, 0), ValueError, r"decay_steps"),
    (lambda: S.CosineDecay(1, 10, warmup_steps=5), ValueError, r"needs warmup_target"),
    (lambda: S.CosineDecayRestarts(1, 10, t_mul=0.5), ValueError, r"t_mul must be >= 1"),
    (lambda: S.LinearWarmup(5), ValueError, r"target, after"),
    (lambda: S.LinearWarmup(-1, 1.0), ValueError, r"warmup_steps must be >= 0"),
    (lambda: S.StepDecay(1, 0), ValueError, r"step_size must be >= 1"),
    (lambda: S.MultiStepDecay(1, []), ValueError, r"milestones must not be empty"),
    (lambda: S.MultiStepDecay(1, [5, 2]), ValueError, r"non-decreasing"),
    (lambda: S.CyclicLR(1, .5), ValueError, r"max_lr must be >= base_lr"),
    (lambda: S.CyclicLR(.1, 1, 0), ValueError, r"step_size_up must be > 0"),
    (lambda: S.CyclicLR(.1, 1, mode="sine"), ValueError, r"mode must be one of"),
    (lambda: S.CyclicLR(.1, 1, gamma=1.5), ValueError, r"gamma must be <= 1"),
    (lambda: S.OneCycle(0, 10), ValueError, r"max_lr must be > 0"),
    (lambda: S.OneCycle(1, 0), ValueError, r"total_steps must be >= 1"),
    (lambda: S.OneCycle(1, 10, pct_start=.6), ValueError, r"pct_start must be <= 0.5"),
    (lambda: S.OneCycle(1, 10, anneal="cos", pct_start=1.2), ValueError, r"pct_start"),
    (lambda: S.OneCycle(1, 10, anneal="exp"), ValueError, r"anneal"),
    (lambda: S.OneCycle(1, 10, div_factor=.5), ValueError, r"div_factor must be >= 1"),
    (lambda: S.ReduceOnPlateau(factor=1.0), ValueError, r"factor must be < 1, got 1.0"),
    (lambda: S.ReduceOnPlateau(factor=2), ValueError, r"factor must be < 1"),
    (lambda: S.ReduceOnPlateau(factor=0), ValueError, r"factor must be > 0"),
    (lambda: S.ReduceOnPlateau(mode="avg"), ValueError, r"mode must be one of"),
    (lambda: S.ReduceOnPlateau(patience=-1), ValueError, r"patience must be >= 0"),
    (lambda: S.ReduceOnPlateau(min_delta=-1), ValueError, r"min_delta must be >= 0"),
    (lambda: S.ReduceOnPlateau(threshold_mode="pct"), ValueError, r"threshold_mode"),
    (lambda: S.ReduceOnPlateau(convention="tf"), ValueError, r"convention"),
    (lambda: S.ReduceOnPlateau(min_lr=math.nan), ValueError, r"min_lr must be finite"),
    (lambda: S.Sequential([1.0, 2.0], []), ValueError, r"boundaries must not be empty"),
    (lambda: S.Sequential([1.0], [3]), ValueError, r"len\(schedules\)"),
    (lambda: S.Sequential([1.0, 2.0, 3.0], [3, 3]), ValueError, r"strictly increasing"),
    (lambda: S.Sequential([1.0, "a"], [3]), TypeError, r"schedules\[1\]"),
    (lambda: S.Product(), ValueError, r"at least one factor"),
    (lambda: S.Lambda(3), TypeError, r"fn must be callable"),
    (lambda: S.Constant(math.inf), ValueError, r"value must be finite"),
]


@pytest.mark.parametrize("make,exc,pattern", BAD_ARGS,
                         ids=[f"bad{i}" for i in range(len(BAD_ARGS))])
def test_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


# ---------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------

def test_plot_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        S.plot(S.Constant(1.0), 10)


class _FakeAx:
    def __init__(self):
        self.lines, self.figure, self.saved = [], None, None

    def plot(self, xs, ys, label=None):
        self.lines.append((list(xs), list(ys), label))

    def set_xlabel(self, s):
        pass

    set_ylabel = set_yscale = set_xlabel

    def legend(self):
        pass


class _FakeFig:
    def __init__(self, ax):
        self.ax, self.saved = ax, None
        ax.figure = self

    def savefig(self, path):
        self.saved = path


def _fake_matplotlib(monkeypatch):
    mpl = types.ModuleType("matplotlib")
    plt = types.ModuleType("matplotlib.pyplot")

    def subplots():
        ax = _FakeAx()
        return _FakeFig(ax), ax

    plt.subplots = subplots
    mpl.pyplot = plt
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", plt)


def test_plot_with_fake_matplotlib(monkeypatch, tmp_path):
    _fake_matplotlib(monkeypatch)
    path = tmp_path / "lr.png"
    fig, ax = S.plot({"exp": S.ExponentialDecay(1, 1, .5),
                      "cyc": S.CyclicLR(0, 1, 2)}, 4, path=path)
    assert fig.saved == path
    assert ax.lines[0] == ([0, 1, 2, 3], [1, .5, .25, .125], "exp")
    assert ax.lines[1][2] == "cyc"
    ax2 = _FakeAx()
    _FakeFig(ax2)
    fig2, ax3 = S.plot([S.Constant(2.0), lambda t: t], [0, 5], ax=ax2)
    assert ax3 is ax2 and ax2.lines[1][:2] == ([0, 5], [0.0, 5.0])
    assert ax2.lines[0][2].startswith("Constant(")


def test_plot_real_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    fig, ax = S.plot(S.OneCycle(0.1, 50), 60, path=tmp_path / "one.png")
    assert (tmp_path / "one.png").exists()
    assert len(ax.get_lines()) == 1
