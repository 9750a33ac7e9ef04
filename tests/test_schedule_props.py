"""Property tests (hypothesis) for fastopt.schedules: monotonicity, bounds,
clamping, continuity at phase joins, plateau invariants and resume."""

import json
import math

import numpy as np
from hypothesis import given, settings, strategies as st

import fastopt.schedules as S

FAST = settings(max_examples=40, deadline=None, database=None)

lr = st.floats(0.0, 10.0, allow_nan=False)
pos_steps = st.floats(0.5, 500.0, allow_nan=False)
steps = st.integers(0, 5000)


def non_increasing(sched, ts):
    ts = sorted(ts)
    v = [sched(t) for t in ts]
    return all(b <= a * (1 + 1e-12) + 1e-300 for a, b in zip(v, v[1:]))


@FAST
@given(lr, pos_steps, st.floats(0.0, 5.0), st.lists(steps, min_size=2, max_size=30))
def test_power_decay_non_increasing(lr0, s, c, ts):
    sched = S.PowerDecay(lr0, s, c)
    assert non_increasing(sched, ts)
    assert sched(0) == lr0


@FAST
@given(lr, pos_steps, st.floats(1e-3, 1.0), st.booleans(),
       st.lists(steps, min_size=2, max_size=30))
def test_exponential_decay_non_increasing(lr0, s, rate, stair, ts):
    sched = S.ExponentialDecay(lr0, s, rate, staircase=stair)
    assert non_increasing(sched, ts)
    assert all(0 <= sched(t) <= lr0 for t in ts)


@FAST
@given(lr, pos_steps, st.floats(0.0, 1.0), st.lists(steps, min_size=2, max_size=30))
def test_cosine_decay_non_increasing_and_clamped(lr0, d, alpha, ts):
    sched = S.CosineDecay(lr0, d, alpha=alpha)
    assert non_increasing(sched, ts)
    end = sched(math.ceil(d))
    assert math.isclose(end, lr0 * alpha, rel_tol=1e-12, abs_tol=1e-15)
    assert all(sched(t) == end for t in ts if t >= d)


@FAST
@given(lr, lr, pos_steps, st.floats(0.0, 4.0), st.lists(steps, min_size=2, max_size=30))
def test_polynomial_decay_non_increasing(a, b, d, power, ts):
    lr0, end = max(a, b), min(a, b)
    sched = S.PolynomialDecay(lr0, d, end_learning_rate=end, power=power)
    assert non_increasing(sched, ts)
    assert all(end - 1e-12 <= sched(t) <= lr0 + 1e-12 for t in ts)


@FAST
@given(lr, pos_steps, st.floats(0.0, 10.0), st.booleans(),
       st.lists(steps, min_size=2, max_size=30))
def test_inverse_time_non_increasing(lr0, d, rate, stair, ts):
    assert non_increasing(S.InverseTimeDecay(lr0, d, rate, staircase=stair), ts)


@FAST
@given(lr, st.integers(1, 10), st.floats(0.5, 20.0), st.floats(1.0, 3.0),
       st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_cosine_restarts_matches_iterative_reference(lr0, t0, _, tm, mm, alpha):
    # the log-based closed form against torch's iterative T_cur/T_i bookkeeping
    tm = float(round(tm))       # integer multiplier: cycle edges are integers
    sched = S.CosineDecayRestarts(lr0, t0, t_mul=tm, m_mul=mm, alpha=alpha)
    t_i, t_cur, i = float(t0), 0.0, 0
    for t in range(300):
        if t > 0:
            t_cur += 1
            if t_cur >= t_i:
                t_cur -= t_i
                t_i *= tm
                i += 1
        ref = lr0 * ((1 - alpha) * 0.5 * mm ** i * (1 + math.cos(math.pi * t_cur / t_i))
                     + alpha)
        assert math.isclose(sched(t), ref, rel_tol=1e-9, abs_tol=1e-12), (t, i)
        assert lr0 * min(alpha, 1) - 1e-12 <= sched(t) <= lr0 + 1e-12


@FAST
@given(st.floats(1e-4, 10.0), st.integers(20, 400), st.floats(0.1, 0.45),
       st.floats(1.0, 100.0), st.floats(1.0, 1e5), st.floats(0.5, 0.9),
       st.floats(0.0, 0.1))
def test_onecycle_three_phase_properties(max_lr, n, pct, div, fdiv, bm, dm):
    mm = bm + dm
    s = S.OneCycle(max_lr, n, pct_start=pct, div_factor=div, final_div_factor=fdiv,
                   base_momentum=bm, max_momentum=mm)
    _check_onecycle(s, n, slope_factor=1.0)


@FAST
@given(st.floats(1e-4, 10.0), st.integers(20, 400), st.floats(0.1, 0.9),
       st.floats(1.0, 100.0), st.floats(1.0, 1e5), st.sampled_from(["cos", "linear"]))
def test_onecycle_two_phase_properties(max_lr, n, pct, div, fdiv, anneal):
    s = S.OneCycle(max_lr, n, pct_start=pct, anneal=anneal, three_phase=False,
                   div_factor=div, final_div_factor=fdiv)
    _check_onecycle(s, n, slope_factor=math.pi / 2 if anneal == "cos" else 1.0)


def _check_onecycle(s, n, slope_factor):
    v = s.values(n + 5)
    m = s.momentum.values(n + 5)
    lo, hi = s.final_lr, s.max_lr
    assert np.all(v >= 0)
    assert np.all(v >= lo * (1 - 1e-12)) and np.all(v <= hi * (1 + 1e-12))
    assert abs(v.max() - hi) <= hi * 2 / (s.pct_start * n - 1)
    bm, mm = sorted((s.base_momentum, s.max_momentum))
    assert np.all(m >= bm - 1e-12) and np.all(m <= mm + 1e-12)
    # clamped past the end: the final value for every t >= N - 1
    final = s(n - 1)
    assert math.isclose(final, lo, rel_tol=1e-9)
    for t in (n, n + 1, 10 * n, 10**12):
        assert s(t) == final and s.momentum(t) == s.momentum(n - 1)
    # continuity: no jump larger than the steepest phase slope (per step)
    bound = 0.0
    for start, end, (a, b), (ma, mb) in s._phases:
        length = end - start
        if length > 0:
            bound = max(bound, slope_factor * abs(b - a) / min(length, 1e300))
    assert np.max(np.abs(np.diff(v))) <= bound * (1 + 1e-9) + 1e-15


@FAST
@given(st.floats(0.0, 1.0), st.floats(0.0, 2.0), st.floats(0.5, 50.0),
       st.one_of(st.none(), st.floats(0.5, 50.0)),
       st.sampled_from(["triangular", "triangular2", "exp_range"]),
       st.floats(0.9, 1.0), st.lists(steps, min_size=1, max_size=40))
def test_cyclic_bounded(base, span, up, down, mode, gamma, ts):
    s = S.CyclicLR(base, base + span, up, down, mode=mode, gamma=gamma)
    mom = s.momentum
    for t in ts:
        assert base - 1e-12 <= s(t) <= base + span + 1e-12
        assert 0.8 - 1e-12 <= mom(t) <= 0.9 + 1e-12
    # continuity of the triangle: slope at most span / min(up, down) per step
    v = s.values(200)
    d = down if down is not None else up
    assert np.max(np.abs(np.diff(v))) <= span / min(up, d) * (1 + 1e-9) + 1e-12


@FAST
@given(st.floats(0.0, 2.0), st.floats(0.0, 2.0), st.integers(1, 50),
       st.floats(1.0, 200.0), st.floats(0.0, 1.0))
def test_cosine_warmup_continuous(lr0, target, w, d, alpha):
    s = S.CosineDecay(lr0, d, alpha=alpha, warmup_target=target, warmup_steps=w)
    v = s.values(w + int(d) + 5)
    bound = max(abs(target - lr0) / w, math.pi / 2 * target * (1 - alpha) / d)
    assert np.max(np.abs(np.diff(v))) <= bound * (1 + 1e-9) + 1e-12
    assert math.isclose(v[w], target, rel_tol=1e-12, abs_tol=1e-15)


@FAST
@given(st.lists(st.integers(0, 60), min_size=1, max_size=5, unique=True),
       st.lists(steps, min_size=1, max_size=20))
def test_sequential_restart_semantics(bounds, ts):
    bounds = sorted(bounds)
    children = [S.ExponentialDecay(1.0 + k, 3, .5) for k in range(len(bounds) + 1)]
    s = S.Sequential(children, bounds)
    for t in ts:
        k = sum(b <= t for b in bounds)
        off = bounds[k - 1] if k else 0
        assert s(t) == children[k](t - off)
    for k, b in enumerate(bounds):     # at each boundary the child is at step 0
        assert s(b) == children[k + 1](0)


@FAST
@given(st.integers(0, 10**15))
def test_step_type_invariance(t):
    s = S.CosineDecayRestarts(0.1, 7, t_mul=1.5, m_mul=.9)
    assert s(t) == s(np.int64(t)) == s(np.array(t))
    o = S.OneCycle(0.1, 1000)
    assert 0 <= o(t) <= 0.1


metrics = st.lists(st.one_of(st.floats(-5, 5), st.just(1.0), st.just(float("nan"))),
                   min_size=1, max_size=40)


@FAST
@given(metrics, st.integers(0, 40), st.sampled_from(["keras", "torch"]),
       st.sampled_from(["min", "max"]), st.sampled_from(["abs", "rel"]),
       st.integers(0, 4), st.integers(0, 3), st.floats(0.0, 0.5))
def test_plateau_invariants_and_resume(ms, cut, conv, mode, tmode, patience, cooldown,
                                       min_lr):
    base = S.ExponentialDecay(1.0, 20, .5)
    kw = dict(mode=mode, threshold_mode=tmode, patience=patience, cooldown=cooldown,
              min_lr=min_lr, convention=conv, factor=.5, min_delta=1e-3)
    a = S.ReduceOnPlateau(base, **kw)
    cut = min(cut, len(ms))
    prev_scale = 1.0
    for k, m in enumerate(ms[:cut]):
        a.report(m, step=k)
        assert a.scale <= prev_scale
        prev_scale = a.scale
        for t in (0, k, 100):
            b = base(t)
            assert min(min_lr, b) - 1e-15 <= a(t) <= b
    b = S.deserialize(json.loads(json.dumps(S.serialize(a))))
    assert b.state_dict() == a.state_dict()
    for k, m in enumerate(ms[cut:], start=cut):
        assert a.report(m, step=k) == b.report(m, step=k)
        assert a(k) == b(k)
    assert a.state_dict() == b.state_dict()
    assert a.num_reports == len(ms)


@FAST
@given(st.floats(1e-3, 1.0), st.integers(1, 100), st.floats(0.05, 0.45),
       st.sampled_from(["linear", "cos"]))
def test_onecycle_config_round_trip(max_lr, n, pct, anneal):
    s = S.OneCycle(max_lr, n, pct_start=pct, anneal=anneal)
    c = S.deserialize(json.loads(json.dumps(S.serialize(s))))
    np.testing.assert_array_equal(c.values(n + 3), s.values(n + 3))
    np.testing.assert_array_equal(c.momentum.values(n + 3), s.momentum.values(n + 3))


# ---------------------------------------------------------------------------
# torch names, optax presets, warmup-stable-decay
# ---------------------------------------------------------------------------

FAR = (10**6, 10**12, 10**15)       # far past every end: defined, finite


def non_decreasing(sched, ts):
    ts = sorted(ts)
    v = [sched(t) for t in ts]
    return all(b >= a * (1 - 1e-12) - 1e-300 for a, b in zip(v, v[1:]))


def _bounded(sched, ts, lo, hi, far=FAR):
    for t in list(ts) + list(far):
        v = sched(t)
        assert math.isfinite(v) and v >= 0
        assert lo - 1e-12 * max(1.0, abs(lo)) <= v <= hi + 1e-12 * max(1.0, abs(hi))


@FAST
@given(lr, st.floats(0.01, 1.0), st.floats(0.0, 1.0), st.integers(1, 200),
       st.floats(0.0, 4.0), st.integers(1, 50), st.floats(0.0, 1.0),
       st.lists(steps, min_size=2, max_size=30))
def test_torch_decays_monotone_bounded(base, sf, ef, total, power, size, gamma, ts):
    for s in (S.PolynomialLR(total, power, base_lr=base),
              S.StepLR(size, gamma, base_lr=base),
              S.MultiStepLR([size, 2 * size, 2 * size], gamma, base_lr=base),
              S.ExponentialLR(max(gamma, 1e-3), base_lr=base)):
        assert non_increasing(s, ts)
        _bounded(s, ts, 0.0, base)
    c = S.ConstantLR(ef, total, base_lr=base)
    assert non_decreasing(c, ts)
    _bounded(c, ts, base * ef, base)
    lin = S.LinearLR(sf, ef, total, base_lr=base)
    assert (non_decreasing if ef >= sf else non_increasing)(lin, ts)
    _bounded(lin, ts, base * min(sf, ef), base * max(sf, ef))
    assert lin(total) == lin(10**15)


@FAST
@given(lr, st.floats(0.0, 1.0), st.integers(1, 60), st.integers(1, 3),
       st.lists(steps, min_size=1, max_size=30))
def test_cosine_annealing_bounds_and_period(base, frac, t_max, t_mult, ts):
    eta = base * frac
    rise = S.CosineAnnealingLR(t_max, eta, base_lr=base)
    hold = S.CosineAnnealingLR(t_max, eta, base_lr=base, hold=True)
    for t in ts:
        assert rise(t) == rise(t + 2 * t_max)
        assert hold(t) == rise(min(t, t_max))
    _bounded(rise, ts, eta, base)
    assert non_increasing(hold, ts)
    w = S.CosineAnnealingWarmRestarts(t_max, t_mult, eta, base_lr=base)
    _bounded(w, ts, eta, base)
    t_i, t_cur = t_max, 0          # torch's T_cur/T_i bookkeeping
    for t in range(200):
        if t > 0:
            t_cur += 1
            if t_cur >= t_i:
                t_cur -= t_i
                t_i *= t_mult
        ref = eta + (base - eta) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
        assert w(t) == ref


@FAST
@given(lr, lr, st.integers(0, 40), st.sampled_from(["cos", "linear"]),
       st.lists(steps, min_size=2, max_size=30))
def test_swalr_monotone_to_swa_lr(base, swa, epochs, strategy, ts):
    s = S.SWALR(swa, epochs, strategy, base_lr=base)
    assert (non_increasing if swa <= base else non_decreasing)(s, ts)
    _bounded(s, ts, min(base, swa), max(base, swa))
    assert math.isclose(s(max(epochs, 1)), swa, rel_tol=1e-12, abs_tol=1e-15)


@FAST
@given(lr, st.integers(0, 50), st.integers(0, 200), st.integers(0, 100),
       st.sampled_from(list(S.WarmupStableDecay._SHAPES)), st.floats(0.0, 1.0),
       st.floats(0.0, 1.0), st.integers(0, 400))
def test_wsd_phases(peak, w, stable, d, shape, fi, fe, cut):
    init, end = peak * fi, peak * fe
    s = S.WarmupStableDecay(peak, w, stable, d, decay_shape=shape,
                            init_value=init, end_value=end)
    v = s.values(w + stable + d + 3)
    rise = v[:w + 1] if stable + d else v[:w]     # no stable/decay: ends at w
    assert np.all(np.diff(rise) >= -1e-15)                      # warmup rises
    assert np.all(v[w:w + stable] == peak)                      # stable
    assert np.all(np.diff(v[w + stable:]) <= 1e-15)             # decay falls
    _bounded(s, range(0, len(v)), min(init, end), peak)
    # resumable from any phase: a serialised copy continues identically
    c = S.deserialize(json.loads(json.dumps(S.serialize(s))))
    assert [c(t) for t in range(cut, cut + 20)] == [s(t) for t in range(cut, cut + 20)]


@FAST
@given(st.sampled_from(["linear", "cosine"]), lr,
       st.dictionaries(st.integers(0, 100), st.floats(0.0, 3.0), max_size=5),
       st.lists(steps, min_size=1, max_size=30))
def test_piecewise_interpolate_between_knots(kind, init, bs, ts):
    s = S.PiecewiseInterpolate(kind, init, bs)
    knots = list(s._values)
    _bounded(s, ts, min(knots), max(knots))
    for b, v in zip(s._bounds[1:], knots[1:]):
        if s._bounds.count(b) == 1 and b == max(s._bounds[1:]):
            assert s(b) == v


@FAST
@given(lr, lr, st.integers(0, 30), st.integers(1, 100), st.floats(0.0, 1.0),
       st.floats(0.3, 3.0), st.lists(steps, min_size=2, max_size=30))
def test_warmup_presets(init, peak, w, d, fend, expo, ts):
    end = peak * fend
    c = S.WarmupCosineDecay(init, peak, w, w + d, end_value=end, exponent=expo)
    assert non_increasing(c, [t for t in ts if t >= w] + [w])
    assert (non_decreasing if peak >= init else non_increasing)(
        c, [t for t in ts if t <= w] + [w])
    _bounded(c, ts, min(init, end), max(init, peak))
    e = S.WarmupExponentialDecay(init, peak, w, max(d, 1) / 3, 0.5, end_value=end)
    assert non_increasing(e, [t for t in ts if t >= w] + [w])
    _bounded(e, ts, min(init, end), max(init, peak))


@FAST
@given(st.lists(st.floats(0.5, 1.0), min_size=1, max_size=30), lr,
       st.integers(0, 40), st.integers(0, 40))
def test_multiplicative_resume_exact(factors, base, cut, back):
    S.register_function(lambda t: factors[t % len(factors)], name="props.factors")
    a = S.MultiplicativeLR("props.factors", base_lr=base)
    ref = a.values(60).tolist()
    a(cut)
    b = S.deserialize(json.loads(json.dumps(S.serialize(a))))
    assert [b(t) for t in range(cut, 60)] == ref[cut:]
    assert a(back) == ref[back]                  # stepping back recomputes
    assert non_increasing(a, range(60))
    _bounded(a, range(0, 60, 7), 0.0, base, far=())
