"""Known-answer tests: the value tables of torch, optax and Keras schedules
(tests/data/schedule_tables.json, written by tests/gen_schedule_tables.py)
against the fastopt schedule of each case; the same cases live when the
library is installed; configs, state and exact resume of the ported names."""

import json
import os
import sys

import numpy as np
import pytest

import fastopt.schedules as S
import gen_schedule_tables as G

with open(G.PATH) as f:
    TABLES = json.load(f)

for _name, _fn in G.FUNCTIONS.items():
    S.register_function(_fn, name=_name)

# torch multiplies the previous lr step after step; these are closed forms
RTOL, ATOL = 1e-12, 1e-15


def rows(lib, kind="schedule"):
    out = [r for r in TABLES[lib]["cases"] if ("metrics" in r) == (kind == "plateau")]
    return pytest.mark.parametrize("row", out, ids=[r["id"] for r in out])


def build(row):
    return S.deserialize(row["fastopt"])


def check(sched, expected):
    got = [sched(t) for t in range(len(expected))]
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_every_section_and_version_present():
    assert set(TABLES) == {"torch", "optax", "keras"}
    for sec in TABLES.values():
        assert sec["version"] and sec["cases"]
    ids = [r["fastopt"]["class_name"] for r in TABLES["torch"]["cases"]]
    for name in ("LinearLR", "ConstantLR", "MultiplicativeLR", "PolynomialLR",
                 "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
                 "CosineAnnealingWarmRestarts", "CyclicLR", "OneCycleLR",
                 "SWALR"):
        assert name in ids, name


@rows("torch")
def test_torch_table(row):
    check(build(row), row["values"])


@rows("optax")
def test_optax_table(row):
    check(build(row), row["values"])


@rows("keras")
def test_keras_table(row):
    sched = build(row)
    check(sched, row["values"])
    # a Keras config (with its name) is a fastopt config, and comes back
    assert sched.name == row["keras_config"]["name"]
    if row["fastopt"]["class_name"] == row["source"].rsplit(".", 1)[1]:
        assert sched.get_config() == row["keras_config"]


def run_plateau(row):
    kw = row["kwargs"]
    s = S.ReduceOnPlateau(row["lr0"], **kw)
    out = []
    for m in row["metrics"]:
        s.report(m)
        out.append(s(0))
    return s, out


@rows("keras", "plateau")
def test_keras_plateau_auto(row):
    s, out = run_plateau(row)
    np.testing.assert_allclose(out, row["values"], rtol=RTOL)
    assert s.mode == "auto"
    clone = S.deserialize(json.loads(json.dumps(S.serialize(s))))
    assert clone.state_dict() == s.state_dict() and clone(0) == s(0)


def test_plateau_auto_unknown_metric_refused():
    with pytest.raises(ValueError, match="mode='min' or mode='max'"):
        S.ReduceOnPlateau(0.1, mode="auto", monitor="val_bleu")
    with pytest.raises(ValueError, match="monitor=None"):
        S.ReduceOnPlateau(0.1, mode="auto")
    assert S.ReduceOnPlateau(0.1, mode="auto", monitor="val_auc")._mode == "max"
    assert S.ReduceOnPlateau(0.1, mode="auto", monitor="loss")._mode == "min"


# ---------------------------------------------------------------------------
# live comparisons
# ---------------------------------------------------------------------------

@rows("torch")
def test_torch_live(row):
    pytest.importorskip("torch")
    case = next(c for c in G.TORCH_CASES if c[0] == row["id"])
    _, cls, kw, base_lr, n = case
    check(build(row), G.torch_values(cls, kw, base_lr, n))


@rows("optax")
def test_optax_live(row):
    pytest.importorskip("optax")
    case = next(c for c in G.OPTAX_CASES if c[0] == row["id"])
    _, fn, kw, _, _, n = case
    check(build(row), G.optax_values(fn, kw, n + 7))


def _keras():
    if "keras" not in sys.modules:      # the tables were made with the torch backend
        os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@rows("keras")
def test_keras_live(row):
    _keras()
    case = next(c for c in G.KERAS_CASES if c[0] == row["id"])
    _, cls, kw, n = case
    vals, cfg = G.keras_values(cls, kw, n + 7)
    check(S.deserialize(G.keras_fastopt(cls, cfg)), vals)


@rows("keras", "plateau")
def test_keras_plateau_live(row):
    _keras()
    vals = G.keras_plateau_values(row["kwargs"], row["lr0"], row["metrics"])
    np.testing.assert_allclose(run_plateau(row)[1], vals, rtol=RTOL)


# ---------------------------------------------------------------------------
# config round trip, state, exact resume for every case
# ---------------------------------------------------------------------------

ALL = [r for lib in ("torch", "optax", "keras") for r in TABLES[lib]["cases"]
       if "fastopt" in r]


@pytest.mark.parametrize("row", ALL, ids=[r["id"] for r in ALL])
def test_config_state_and_resume(row):
    a = build(row)
    n = len(row["values"]) + 10
    cfg = json.loads(json.dumps(a.get_config()))
    assert type(a).from_config(cfg).values(n).tolist() == a.values(n).tolist()
    assert repr(a).startswith(type(a).__name__ + "(")
    named = type(a).from_config(dict(cfg, name="ported"))
    assert named.name == "ported" and named.get_config() == dict(cfg, name="ported")
    # run to a cut, checkpoint through JSON, continue in a fresh process-like copy
    for cut in (0, 1, n // 3, n - 1):
        a = build(row)
        head = [a(t) for t in range(cut)]
        b = S.deserialize(json.loads(json.dumps(S.serialize(a))))
        assert b.state_dict() == a.state_dict()
        tail_a = [a(t) for t in range(cut, n)]
        tail_b = [b(t) for t in range(cut, n)]
        assert tail_a == tail_b
        assert head + tail_a == build(row).values(n).tolist()


def test_multiplicative_product_is_state():
    s = S.MultiplicativeLR("decay_097", base_lr=0.1)
    assert s.state_dict() == {"step": 0, "lr": 0.1}
    v = s(5)
    assert s.state_dict() == {"step": 5, "lr": v}
    t = S.MultiplicativeLR(G.decay_097, base_lr=0.1)
    t.load_state_dict(s.state_dict())
    assert t(6) == s(6)
    assert t(2) == S.MultiplicativeLR("decay_097", base_lr=0.1)(2)   # back: recomputed
    with pytest.raises(ValueError, match="expected keys"):
        t.load_state_dict({"step": 1})
    with pytest.raises(TypeError, match="register_function"):
        S.serialize(S.MultiplicativeLR(lambda k: 0.9, base_lr=1.0))
    with pytest.raises(ValueError, match="not a registered function"):
        S.MultiplicativeLR("nope", base_lr=1.0)


def test_cosine_annealing_rises_or_holds():
    rise = S.CosineAnnealingLR(4, 0.1, base_lr=1.0)
    hold = S.CosineAnnealingLR(4, 0.1, base_lr=1.0, hold=True)
    assert rise(4) == hold(4) == pytest.approx(0.1)
    assert rise(8) == 1.0 and hold(8) == hold(10**9) == hold(4)
    assert rise(10**12 + 4) == rise(4)        # exact period, no drift


def test_onecycle_lr_epochs_and_momentum():
    a = S.OneCycleLR(0.1, epochs=3, steps_per_epoch=7)
    b = S.OneCycleLR(0.1, total_steps=21)
    assert a.values(25).tolist() == b.values(25).tolist()
    assert a.momentum.values(25).tolist() == S.OneCycle(
        0.1, 21, anneal="cos").momentum.values(25).tolist()
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        S.OneCycleLR(0.1, 10, cycle_momentum=False).momentum
    with pytest.raises(ValueError, match="not both"):
        S.OneCycleLR(0.1, 10, epochs=2, steps_per_epoch=5)
    with pytest.raises(ValueError, match="epochs and steps_per_epoch"):
        S.OneCycleLR(0.1, epochs=2)


def test_wsd_phases_and_shapes():
    for shape, mid in (("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - 0.5 ** 0.5),
                       ("square", 0.75)):
        s = S.WarmupStableDecay(1.0, 4, 6, 8, decay_shape=shape, init_value=0.2,
                                end_value=0.1)
        v = s.values(25)
        np.testing.assert_allclose(v[:5], [0.2, 0.4, 0.6, 0.8, 1.0], rtol=1e-15)
        assert (v[4:10] == 1.0).all()
        assert v[14] == pytest.approx(0.1 + 0.9 * mid, rel=1e-15)
        assert (v[18:] == 0.1).all()
    z = S.WarmupStableDecay(2.0, 0, 0, 0)
    assert z(0) == 0.0 and S.WarmupStableDecay(2.0, 0, 1, 0)(0) == 2.0


def test_name_on_every_schedule():
    s = S.ExponentialDecay(0.1, 10, 0.5, name="decay")
    assert s.get_config()["name"] == "decay" and s.name == "decay"
    c = S.deserialize(S.serialize(s))
    assert c.name == "decay" and c.get_config() == s.get_config()
    p = S.Product(S.Constant(2.0), 0.5, name="prod")
    assert S.deserialize(S.serialize(p)).name == "prod"
    assert "name" not in S.Constant(1.0).get_config()
    with pytest.raises(TypeError, match="name must be a str"):
        S.Constant(1.0, name=3)


def test_lambda_serialises_by_registered_name():
    @S.register_function(name="tables.inv")
    def inv(t):
        return 1.0 / (1 + t)

    s = S.Lambda(inv, name="warm")
    d = json.loads(json.dumps(S.serialize(s)))
    assert d["config"] == {"fn": "tables.inv", "name": "warm"}
    assert S.deserialize(d).values(5).tolist() == s.values(5).tolist()
    assert S.Lambda("tables.inv")(1) == 0.5
    with pytest.raises(ValueError, match="needs name="):
        S.register_function(lambda t: 1.0)
    with pytest.raises(TypeError, match="plain function"):
        S.register_function(S.Constant(1.0))
    c = S.CyclicLR(0.1, 1.0, 2, scale_fn=inv)
    assert S.deserialize(S.serialize(c)).values(9).tolist() == c.values(9).tolist()
    assert c.momentum.scale_fn is inv
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        S.CyclicLR(0.1, 1.0, 2, cycle_momentum=False).momentum
