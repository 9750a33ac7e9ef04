"""Defaults pinned by the anchors, not read back from the optimizer under test.

tests/anchor_defaults.py holds the defaults of Keras 3.15 and torch 2.13 as
written in their sources.  Here every optimizer of tests/optim_db.py is held
to it: the declared defaults, and the trajectory of an optimizer built with no
arguments against one built with the table's values spelled out (so a default
that the kernel reads differently from the declaration shows too).  Where the
libraries are installed, the table itself is compared with their signatures.
"""
import inspect

import numpy as np
import pytest

from fastopt.optimizers import REGISTRY

import optim_db
from anchor_defaults import (ANCHOR_DEFAULTS, KERAS_OPTIONS, NONE_AS, NOT_IN_ANCHOR,
                             TORCH_CLASS_NAMES, TORCH_NAMES, row)

CONVENTIONS = optim_db.name_conventions()


def _table(name, conv):
    row(name, conv)              # a clear error for a missing row
    out = dict(ANCHOR_DEFAULTS[(conv, name)])
    # an anchor's None (torch Adafactor's eps[0]) as the number fastopt keeps
    out.update({k: v for (c, n, k), v in NONE_AS.items() if (c, n) == (conv, name)})
    return out


@pytest.mark.parametrize(("name", "convention"), CONVENTIONS)
def test_declared_defaults_are_the_anchors(name, convention):
    cls = REGISTRY[name]
    row = _table(name, convention)
    declared = {k: s.default(convention) for k, s in cls.hyper.items()
                if convention in s.defaults}
    for key, value in row.items():
        if key in declared:
            assert declared[key] == value, (
                f"{name} ({convention}) default {key}: {declared[key]!r}, the anchor has "
                f"{value!r}")
        else:
            assert key in ("maximize", "decoupled_weight_decay", "weight_decay"), (
                f"{name} ({convention}) lacks the anchor's {key}")
    for key in declared:
        assert key in row or (convention, name, key) in NOT_IN_ANCHOR, (
            f"{name} ({convention}) has {key}, which the anchor table does not pin: add it "
            f"to tests/anchor_defaults.py (or to NOT_IN_ANCHOR with the reason)")
    for (conv, n, key), (value, _why) in NOT_IN_ANCHOR.items():
        if (conv, n) == (convention, name):
            assert declared[key] == value


@pytest.mark.parametrize(("name", "convention"), CONVENTIONS)
def test_defaults_drive_the_trajectory(name, convention):
    """No arguments and the table's values spelled out give the same bits; the
    table's values are also what the optimizer reports."""
    cls = REGISTRY[name]
    row = dict(_table(name, convention))
    for (conv, n, key), (value, _why) in NOT_IN_ANCHOR.items():
        if (conv, n) == (convention, name):
            row[key] = value
    rng = np.random.default_rng(1)
    s9, s4 = optim_db.param_shape(name, 9), optim_db.param_shape(name, 4)
    w0 = [rng.standard_normal(s9), rng.standard_normal(s4)]
    grads = [[rng.standard_normal(s9) * (1 + s % 3), rng.standard_normal(s4) * 0.1 ** s]
             for s in range(12)]
    a = [w.copy() for w in w0]
    b = [w.copy() for w in w0]
    implicit = cls(a, convention=convention)
    explicit = cls(b, convention=convention, **row)
    for g in grads:
        implicit.step(g)
        explicit.step(g)
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    hp = implicit.hyperparameters()
    for key, value in row.items():
        if key in hp:
            assert hp[key] == value, key
    if convention == "keras":
        for key, value in KERAS_OPTIONS.items():
            assert getattr(implicit, key) == value, key
    assert implicit.maximize is False


# ---- the table against the installed libraries -------------------------------------------

def _signature_defaults(cls):
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _torch_value(sig, name, key):
    where = TORCH_CLASS_NAMES.get(name, {}).get(key, TORCH_NAMES.get(key, key))
    if isinstance(where, tuple):
        return sig[where[0]][where[1]]
    return sig[where]


TORCH_ROWS = sorted(n for c, n in ANCHOR_DEFAULTS if c == "torch")
KERAS_ROWS = sorted(n for c, n in ANCHOR_DEFAULTS if c == "keras")


@pytest.mark.parametrize("name", TORCH_ROWS)
def test_table_matches_torch_signatures(name):
    torch = pytest.importorskip("torch")
    assert torch.__version__.startswith("2.13"), torch.__version__
    entry = optim_db.info(name)
    module = pytest.importorskip(entry.torch_module)      # torch.optim, or schedulefree
    sig = _signature_defaults(getattr(module, entry.torch_name))
    for key, value in ANCHOR_DEFAULTS[("torch", name)].items():
        theirs = _torch_value(sig, name, key)
        assert theirs == value, f"torch.optim.{name} {key}: {theirs!r}, the table has {value!r}"


@pytest.mark.parametrize("name", KERAS_ROWS)
def test_table_matches_keras_signatures(name):
    keras = pytest.importorskip("keras")
    assert keras.__version__.startswith("3.15"), keras.__version__
    sig = _signature_defaults(getattr(keras.optimizers, optim_db.info(name).keras_name))
    for key, value in ANCHOR_DEFAULTS[("keras", name)].items():
        theirs = sig[key]
        if key == "weight_decay" and theirs is None:
            theirs = 0.0
        assert theirs == value, f"keras.optimizers.{name} {key}: {theirs!r}, the table has {value!r}"
    for key, value in KERAS_OPTIONS.items():
        assert sig[key] == value, key
