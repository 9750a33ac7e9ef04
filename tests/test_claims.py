"""Claims checked by runs that can lose, for every entry of tests/optim_db.py:

* resume restores every state array: the fullest configuration of each
  optimizer (AMSGrad's ``vhat``, centered RMSprop's momentum, ...) and the
  options' arrays (accumulators, moving averages), with gradients that shrink
  so that a maximum kept in state (``vhat``) differs from the running value;
  each test first shows that leaving any one array at its fresh value changes
  the continuation, so the bit-exact comparison cannot pass by accident;
* a refused call changes nothing on every path: each option alone and
  combined, gradient accumulation refused between and at updates, every way a
  call can be refused; afterwards the optimizer equals a twin that never saw
  the refused calls (accumulators and averages included);
* a config round trip keeps behaviour: an optimizer rebuilt from the config of
  one built with non-default values steps exactly as the original.
"""
import json
import math

import numpy as np
import pytest

import fastopt as fo
from fastopt.optimizers import REGISTRY

import optim_db
from robust_util import assert_same_optimizer, assert_unchanged, snapshot

CONVENTIONS = optim_db.name_conventions()
SHAPES = [(5, 3), (7,)]


def _shapes(name):
    """SHAPES in the shapes optimizer ``name`` takes (optim_db.param_shape)."""
    return [optim_db.param_shape(name, s) for s in SHAPES]


def _conv_cases(entry, conv):
    return [kw for kw, convs in entry.cases if conv in convs]


def _state_arrays(entry, conv, kwargs):
    """How many state arrays ``entry`` keeps for the first param of SHAPES with
    ``kwargs`` (its initial-state definition in optim_db, not the optimizer's
    own count; a matrix, so factored state counts its row and column arrays)."""
    hp = dict(entry.cls.defaults(conv))
    hp.update({k: v for k, v in kwargs.items() if k in hp})
    st = entry.initial_state(hp, np.zeros(SHAPES[0]))
    return sum(isinstance(v, np.ndarray) for v in st.values())


def _fullest(entry, conv):
    """The cases of ``entry`` that give it the most state arrays (with its
    stateful kwargs under each)."""
    cases = [dict(entry.stateful, **kw) for kw in _conv_cases(entry, conv)] + [entry.stateful]
    most = max(_state_arrays(entry, conv, kw) for kw in cases)
    out = []
    for kw in cases:
        if _state_arrays(entry, conv, kw) == most and kw not in out:
            out.append(kw)
    return out


RESUME = [(name, conv, kw) for name, conv in CONVENTIONS
          for kw in _fullest(optim_db.info(name), conv)]


def _shrinking_grads(seed, shapes, nsteps=10):
    """Large gradients, then small ones: running second moments fall below
    their maximum (AMSGrad's vhat), momentum buffers keep what they saw; one
    param has no grad on one step (torch's per-param step counts)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(nsteps):
        scale = 2.0 if s < 3 else 1e-3 * (1 + s % 2)
        step = [rng.standard_normal(sh) * scale for sh in shapes]
        if s == 4:
            step[1] = None
        out.append(step)
    return out


OPTION_STATE = {"use_ema": True, "ema_overwrite_frequency": 4, "gradient_accumulation_steps": 3}


def _resume_run(name, conv, kwargs, grads, cut, tmp_path, fresh_arrays=()):
    """Steps ``grads[:cut]``, saves, loads into a new optimizer (first setting
    the state named by ``fresh_arrays`` back to the fresh optimizer's values),
    steps the rest; returns the image of params and every array."""
    cls = REGISTRY[name]
    rng = np.random.default_rng(0)
    w0 = [rng.standard_normal(s) for s in _shapes(name)]
    first = cls([w.copy() for w in w0], convention=conv, learning_rate=0.05, **kwargs)
    for g in grads[:cut]:
        first.step(g)
    path = tmp_path / "ck.npz"
    fo.save(path, first)
    second = cls([np.zeros(s) for s in _shapes(name)], convention=conv, learning_rate=0.05,
                 **kwargs)
    if fresh_arrays:
        sd = fo.checkpoint.read(path)
        fresh = cls([np.zeros(s) for s in _shapes(name)], convention=conv, learning_rate=0.05,
                    **kwargs).state_dict()
        for where in fresh_arrays:
            if where[0] == "state":
                sd["state"][where[1]][where[2]] = fresh["state"][where[1]][where[2]]
            else:
                sd["extra"][where[1]][where[2]] = np.zeros_like(sd["extra"][where[1]][where[2]])
        second.load_state_dict(sd)
    else:
        fo.load(path, second)
    for g in grads[cut:]:
        second.step(g)
    return _image(second)


def _image(opt):
    arrays = [p.tobytes() for p in opt.params]
    arrays += [a.tobytes() for s in opt.state_arrays() for a in s]
    # accumulators and moving averages (state_dict refuses plain-callable schedules)
    for key in ("_accum", "_ema"):
        arrays += [a.tobytes() for a in getattr(opt, key) or ()]
    return arrays


def _straight(name, conv, kwargs, grads):
    rng = np.random.default_rng(0)
    w0 = [rng.standard_normal(s) for s in _shapes(name)]
    opt = REGISTRY[name](w0, convention=conv, learning_rate=0.05, **kwargs)
    for g in grads:
        opt.step(g)
    return _image(opt)


def _every_array(name, conv, kwargs):
    opt = REGISTRY[name]([np.zeros(s) for s in _shapes(name)], convention=conv, **kwargs)
    sd = opt.state_dict()
    where = [("state", i, k) for i, s in enumerate(sd["state"]) for k in range(len(s))]
    for key in ("accumulators", "ema"):
        where += [("extra", key, i) for i in range(len(sd.get("extra", {}).get(key) or ()))]
    return where


@pytest.mark.parametrize("with_options", [False, True], ids=["plain", "ema+accumulation"])
@pytest.mark.parametrize(("name", "convention", "kwargs"), RESUME,
                         ids=[f"{n}-{c}-{','.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
                              for n, c, kw in RESUME])
def test_resume_restores_every_state_array(name, convention, kwargs, with_options, tmp_path):
    kwargs = dict(kwargs, **(OPTION_STATE if with_options else {}))
    grads = _shrinking_grads(5, _shapes(name))
    cut = 7                        # mid-accumulation with k=3 (7 % 3 == 1)
    straight = _straight(name, convention, kwargs, grads)
    assert _resume_run(name, convention, kwargs, grads, cut, tmp_path) == straight
    where = _every_array(name, convention, kwargs)
    expect = _state_arrays(optim_db.info(name), convention, kwargs)
    assert sum(w[0] == "state" and w[1] == 0 for w in where) == expect
    # the comparison bites: any one array left as a fresh optimizer has it
    # (a load that forgot it) changes what follows
    for w in where:
        assert _resume_run(name, convention, kwargs, grads, cut, tmp_path, [w]) != straight, (
            f"{w}: restoring it or not makes no difference to this test's trajectory")


def test_resume_cases_include_the_third_arrays():
    """The configurations the audit found untested are among the resumed ones."""
    seen = {(n, c, tuple(sorted(kw))) for n, c, kw in RESUME}
    for conv in ("keras", "torch"):
        assert any(n == "Adam" and c == conv and "amsgrad" in kw for n, c, kw in seen)
        assert any(n == "RMSprop" and c == conv and {"centered", "momentum"} <= set(kw)
                   for n, c, kw in seen)


# ---- refused calls on every path ---------------------------------------------------------

OPTION_SETS = [
    {},
    {"clipnorm": 0.5},
    {"global_clipnorm": 0.7},
    {"clipvalue": 0.2},
    {"use_ema": True, "ema_overwrite_frequency": 3},
    {"gradient_accumulation_steps": 2},
    {"gradient_accumulation_steps": 3},
    {"skip_nonfinite": True},
    {"maximize": True},
    {"weight_decay": 0.05, "exclude": True},
    {"gradient_accumulation_steps": 2, "use_ema": True, "global_clipnorm": 0.7,
     "skip_nonfinite": True, "maximize": True, "weight_decay": 0.05},
    {"gradient_accumulation_steps": 3, "clipnorm": 0.5, "use_ema": True,
     "ema_overwrite_frequency": 2, "exclude": True, "weight_decay": 0.05},
    {"gradient_accumulation_steps": 2, "clipvalue": 0.2, "skip_nonfinite": True,
     "use_ema": True},
]


class Poisonable:
    """A learning-rate schedule that yields NaN while ``poisoned``: the step
    that reads it must be refused.  One instance serves the optimizer and its
    twin (the twin never sees it poisoned)."""

    def __init__(self):
        self.poisoned = False

    def __call__(self, step):
        return math.nan if self.poisoned else 0.03 * 0.9 ** step

    def __repr__(self):
        return "Poisonable()"


def _refusals(opt, grads, shapes):
    """(label, call, message pattern) for every way a call can be refused now."""
    micro = opt.micro_steps
    k = opt.gradient_accumulation_steps or 1
    skipped = opt.skip_nonfinite and not all(np.isfinite(g).all() for g in grads)
    # a schedule is read at updates only: an accumulating call, or one that
    # skip_nonfinite skips, accepts it
    at_update = (micro + 1) % k == 0 and not skipped
    sched = opt.param_groups[0]["learning_rate"]
    out = []

    def wrong_dtype():
        bad = list(grads)
        bad[1] = grads[1].astype(np.float32)
        opt.step(bad)
    out.append(("grad dtype", wrong_dtype, r"grads\[1\]"))
    out.append(("grad count", lambda: opt.step(grads[:1]), r"grads"))
    longer = (shapes[1][0] + 1,) + tuple(shapes[1][1:])
    out.append(("grad shape", lambda: opt.step([grads[0], np.zeros(longer)]),
                r"grads\[1\]"))

    def alias():
        opt.step([grads[0], opt.params[1]])
    out.append(("grad is a param", alias, r"grads\[1\]"))

    def poisoned_schedule():
        sched.poisoned = True
        try:
            opt.step(grads)
        finally:
            sched.poisoned = False
    if at_update:
        out.append(("schedule NaN", poisoned_schedule, r"learning_rate"))

    def group_edit():
        group = opt.param_groups[-1]
        group["learning_rate"] = -1.0
        try:
            opt.step(grads)
        finally:
            group["learning_rate"] = sched
    out.append(("group edited to a bad value", group_edit, r"learning_rate"))

    def setter():
        opt.learning_rate = math.nan
    out.append(("learning_rate setter", setter, r"learning_rate"))

    def pairs():
        opt.apply_gradients(zip(grads, [opt.params[0], np.zeros(shapes[1])]))
    out.append(("apply_gradients unknown variable", pairs, r"pair 1 .*not built with"))

    def load_mismatch():
        other = type(opt)([np.zeros(shapes[0]), np.zeros((shapes[1][0] + 2,) + shapes[1][1:])],
                          convention=opt.convention)
        opt.load_state_dict(other.state_dict())
    out.append(("load_state_dict of other shapes", load_mismatch, r"shape"))
    return out


REFUSAL = [(name, conv, i) for name, conv in CONVENTIONS for i in range(len(OPTION_SETS))]


def _options_for(name, conv, options):
    kw = dict(optim_db.info(name).stateful)
    kw.update({k: v for k, v in options.items() if k != "exclude"})
    if name == "Ftrl" or REGISTRY[name].hyper.get("weight_decay") is None:
        kw.pop("weight_decay", None)
    return kw


@pytest.mark.parametrize(("name", "convention", "which"), REFUSAL,
                         ids=[f"{n}-{c}-{','.join(OPTION_SETS[i]) or 'plain'}"
                              for n, c, i in REFUSAL])
def test_refused_calls_change_nothing_on_every_path(name, convention, which):
    options = OPTION_SETS[which]
    kw = _options_for(name, convention, options)
    shapes = [optim_db.param_shape(name, s) for s in [(6,), (4,)]]
    rng = np.random.default_rng(which)
    w0 = [rng.standard_normal(s) for s in shapes]
    sched = Poisonable()
    cls = REGISTRY[name]
    opt = cls([w.copy() for w in w0], convention=convention, learning_rate=sched, **kw)
    twin = cls([w.copy() for w in w0], convention=convention, learning_rate=sched, **kw)
    if options.get("exclude"):
        for o in (opt, twin):
            o.exclude_from_weight_decay(var_list=[o.params[1]])
    refused = 0
    for s in range(7):
        grads = [rng.standard_normal(sh) for sh in shapes]
        if s == 4 and options.get("skip_nonfinite"):
            grads[0].flat[2] = np.nan     # a skipped step is not a refused one
        for label, call, pattern in _refusals(opt, grads, shapes):
            before = snapshot(opt)
            with pytest.raises((TypeError, ValueError), match=pattern) as err:
                call()
            assert_unchanged(before, opt, what=f"step {s}, {label} ({err.value})")
            refused += 1
        opt.step(grads)
        twin.step(grads)
        assert_same_optimizer(opt, twin, f"after step {s}")
        assert _image(opt) == _image(twin), f"after step {s}"
    assert refused >= 7 * 8
    # the good steps did something, so a refusal that wrote would have shown
    assert any(a.tobytes() != w.tobytes() for a, w in zip(opt.params, w0))


def test_accumulators_hold_partial_sums_when_refusals_meet_them():
    """The refusal test meets non-zero accumulators: the audit's probe
    (a refused update after one accumulated grad) with its values."""
    sched = Poisonable()
    w = np.zeros(1)
    opt = fo.Adam([w], gradient_accumulation_steps=2, learning_rate=sched)
    opt.step([np.array([0.5])])
    assert opt._accum[0][0] == 0.5
    sched.poisoned = True
    with pytest.raises(ValueError, match="learning_rate"):
        opt.step([np.array([0.1])])
    assert opt._accum[0][0] == 0.5
    assert w[0] == 0.0 and opt.iterations == 0 and opt.micro_steps == 1


# ---- config round trips keep behaviour -------------------------------------------------------

def _trajectory(cls, conv, kw, w0, grads):
    opt = cls([w.copy() for w in w0], convention=conv, **kw)
    for g in grads:
        opt.step(g)
    return _image(opt)


def _non_default_kwargs(cls, conv, w0, grads, first=()):
    """Every hyper-parameter of ``cls`` away from its default, at a valid value
    that changes this test's trajectory, and every option set.  ``first``: keys
    to move first (a value chosen earlier can hide another's effect: a large
    epsilon hides a clipping threshold)."""
    kw = dict(learning_rate=0.02, maximize=True, clipvalue=0.7, use_ema=True,
              ema_momentum=0.8, ema_overwrite_frequency=3, gradient_accumulation_steps=2,
              skip_nonfinite=True, num_threads=2)
    if conv == "torch" and not getattr(cls, "decoupled_only", False):
        kw["decoupled_weight_decay"] = True
    base = _trajectory(cls, conv, kw, w0, grads)
    excluded = set()
    # switches last: a switch another value excludes (torch's nesterov with
    # dampening) stays off, the value is tested
    for key, spec in sorted(cls.hyper.items(),
                            key=lambda item: (item[1].kind is bool, item[0] not in first)):
        if conv not in spec.defaults or key == "learning_rate":
            continue
        d = spec.default(conv)
        if spec.kind is bool:
            candidates = [not d]
        elif key in cls.named_values:       # the values its names stand for
            candidates = [v for v in cls.named_values[key].values() if v != d]
        else:
            # relative moves first; then small absolute values, for a default far
            # from this short run's scale (ASGD's t0 = 1e6, Keras Adafactor's
            # epsilon_1 = 1e-30, torch's None as -1.0) or a whole count (warmup_steps),
            # the smallest first so that it leaves the later values room to bite
            candidates = ([d * 0.7, d * 1.3, d * 500, d * 1e-3, 1e-30, 1e-6, 1e-3, 0.1, 1.0] if d else
                          [0.05, 0.01, -0.35, 2.0])
        refused = 0
        for v in candidates:
            try:
                image = _trajectory(cls, conv, dict(kw, **{key: v}), w0, grads)
            except ValueError:      # out of range, or excluded by another value
                refused += 1
                continue
            if image != base:
                kw[key], base = v, image
                break
        if spec.kind is bool and refused == len(candidates):
            excluded.add(key)
    return kw, excluded


@pytest.mark.parametrize(("name", "convention"), CONVENTIONS)
def test_config_round_trip_keeps_behaviour(name, convention):
    cls = REGISTRY[name]
    rng = np.random.default_rng(4)
    s5, s3 = optim_db.info(name).claim_shapes.get(
        convention, [optim_db.param_shape(name, 5), optim_db.param_shape(name, 3)])
    w0 = [rng.standard_normal(s5), rng.standard_normal(s3)]
    grads = [[rng.standard_normal(s5), rng.standard_normal(s3) * (1 + s % 4)] for s in range(40)]
    grads[5][0][1] = np.inf
    kw, excluded = _non_default_kwargs(cls, convention, w0, grads)
    missing = [k for k, spec in cls.hyper.items()
               if convention in spec.defaults and k not in kw and k not in excluded]
    if missing:
        kw, excluded = _non_default_kwargs(cls, convention, w0, grads, first=missing)
        missing = [k for k, spec in cls.hyper.items()
                   if convention in spec.defaults and k not in kw and k not in excluded]
    assert not missing, f"no valid value of {missing} changes the trajectory"
    opt = cls([w.copy() for w in w0], convention=convention, **kw)
    cfg = json.loads(json.dumps(opt.get_config()))
    clone = cls.from_config(cfg, [w.copy() for w in w0])
    plain = cls([w.copy() for w in w0], convention=convention, learning_rate=0.02)
    for g in grads:
        for o in (opt, clone, plain):
            o.step(g)
    assert _image(clone) == _image(opt)
    for key, value in kw.items():
        assert getattr(clone, key, clone.param_groups[0].get(key)) == value, key
    # every non-default value matters to the trajectory compared above
    assert _image(plain) != _image(opt)
    for key in kw:
        if key in ("num_threads", "learning_rate"):
            continue
        reduced = {k: v for k, v in kw.items() if k != key}
        try:
            other = _trajectory(cls, convention, reduced, w0, grads)
        except ValueError:          # the other values need this one (nesterov's momentum)
            continue
        assert other != _image(opt), f"{key}={kw[key]} changes nothing in this test"
