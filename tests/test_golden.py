"""Known-answer tests: the golden trajectories (w after three steps), generated
by Keras 3.15.1 (torch backend, floatx float64) and torch 2.13 themselves with
tests/golden_gen.py, which regenerates and checks them.  Every golden row of
tests/optim_db.py, both columns; a missing column is an optimizer the library
does not have, which must raise ValueError for that convention."""
import json
import os

import numpy as np
import pytest

from fastopt.optimizers import REGISTRY

from optim_db import GOLDEN_GRADS as GRADS
from optim_db import GOLDEN_W0 as W0
from optim_db import optim_db, param_shape

# (class, kwargs, convention, result): each entry's golden rows (tests/optim_db.py);
# other hyper-parameters are each library's defaults (tests/test_defaults.py pins
# those that three steps cannot see, e.g. Lion's betas).
ROWS = [(info.name, kw, conv, expected)
        for info in optim_db for kw, conv, expected in info.golden_rows()]


def _id(row):
    name, kw, conv, _ = row
    return f"{name}({','.join(f'{k}={v}' for k, v in kw.items())})-{conv}"


@pytest.mark.parametrize("row", ROWS, ids=[_id(r) for r in ROWS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_golden(row, dtype):
    name, kw, conv, expected = row
    w = _golden(name, W0, dtype)
    opt = REGISTRY[name]([w], convention=conv, **kw)
    for g in GRADS:
        opt.step([_golden(name, g, dtype)])
    np.testing.assert_allclose(w.ravel(), expected, rtol=TOLERANCE[np.dtype(dtype).name],
                               atol=0)


def _golden(name, values, dtype):
    """A golden array in the shape the optimizer takes (optim_db.param_shape)."""
    return np.array(values, dtype=dtype).reshape(param_shape(name, (len(values),)))


# float32: about two float32 ulps of the result (the largest error measured over
# the rows is 1.1e-7 relative), so the other convention's formulas fail wherever
# the two libraries differ by more than float32 can resolve.
TOLERANCE = {"float64": 1e-9, "float32": 2e-7}


def _float32_run(name, kw, conv):
    w = _golden(name, W0, np.float32)
    opt = REGISTRY[name]([w], convention=conv, **kw)
    for g in GRADS:
        opt.step([_golden(name, g, np.float32)])
    return w.ravel()


BOTH_COLUMNS = [(info.name, kw, keras, torch) for info in optim_db
                for kw, keras, torch in info.golden if keras is not None and torch is not None]


@pytest.mark.parametrize("row", BOTH_COLUMNS, ids=[_id((r[0], r[1], "both", None))
                                                   for r in BOTH_COLUMNS])
def test_float32_tolerance_tells_the_conventions_apart(row):
    """Run in float32 with the other convention's formulas, each row must fail
    its float32 tolerance, unless the libraries' float64 results differ by less
    than float32 resolves (then no float32 test could tell them apart)."""
    name, kw, keras, torch = row
    rtol = TOLERANCE["float32"]
    for conv, expected, other in (("keras", keras, torch), ("torch", torch, keras)):
        expected = np.array(expected)
        gap = np.max(np.abs(np.array(other) - expected) / np.abs(expected))
        w = _float32_run(name, kw, "torch" if conv == "keras" else "keras")
        passes = np.allclose(w, expected, rtol=rtol, atol=0)
        if gap > 2 * rtol:
            assert not passes, f"{name} {kw}: the {conv} row passes with the other formulas"
        else:
            assert gap < 4 * np.finfo(np.float32).eps, (name, kw, gap)


def test_golden_rows_regenerate():
    """The rows are what Keras and torch give today (tests/golden_gen.py)."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    import golden_gen
    golden_gen.check_versions()
    bad = [(entry.name, conv, kw, recorded, new)
           for entry, kw, conv, recorded, new in golden_gen.rows()
           if not np.allclose(new, recorded, rtol=1e-9, atol=0)]
    assert not bad


MISSING = [(info.name, conv) for info in optim_db for _, keras, torch in info.golden
           for conv, expected in (("keras", keras), ("torch", torch)) if expected is None]


@pytest.mark.parametrize(("name", "convention"), MISSING)
def test_convention_the_library_lacks_raises(name, convention):
    with pytest.raises(ValueError, match=f"{name} exists in .* only.*use convention="):
        REGISTRY[name]([np.zeros(3)], convention=convention)


def test_default_convention_is_the_library_that_has_it():
    assert REGISTRY["RAdam"]([np.zeros(1)]).convention == "torch"
    for name in ("Lion", "Lamb", "Ftrl", "Nadam", "Adagrad"):
        assert REGISTRY[name]([np.zeros(1)]).convention == "keras"
    with pytest.raises(ValueError, match="RAdam exists in torch.optim only"):
        REGISTRY["RAdam"]([np.zeros(1)], convention="keras")


# Rows on params of two and three axes (and the 3-vector) computed by the anchor
# libraries with tests/golden_anchors.py: (class, convention, kwargs, results)
with open(os.path.join(os.path.dirname(__file__), "data", "golden_anchors.json")) as _f:
    ANCHORS = json.load(_f)


@pytest.mark.parametrize("row", ANCHORS["rows"],
                         ids=[f"{r['name']}-{r['convention']}-{k}"
                              for k, r in enumerate(ANCHORS["rows"])])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_golden_anchor_rows(row, dtype):
    rtol, atol = (1e-9, 0) if dtype == np.float64 else (2e-5, 2e-6)
    for w0, grads, expected in ((ANCHORS["w0"], ANCHORS["grads"], row["matrices"]),
                                ([W0], [[g] for g in GRADS], [row["vector"]])):
        params = [np.array(w, dtype=dtype) for w in w0]
        opt = REGISTRY[row["name"]](params, convention=row["convention"], **row["kwargs"])
        for gs in grads:
            opt.step([np.array(g, dtype=dtype) for g in gs])
        for i, (w, e) in enumerate(zip(params, expected)):
            np.testing.assert_allclose(w, np.array(e), rtol=rtol, atol=atol,
                                       err_msg=f"params[{i}]")
