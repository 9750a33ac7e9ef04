"""Regenerates the golden rows of tests/optim_db.py from the anchor libraries.

Each row is ``w`` after three steps of ``GOLDEN_GRADS`` from ``GOLDEN_W0``
with the row's keyword arguments (every other hyper-parameter at the
library's default), computed by the library itself:

* Keras 3.15.1 with the torch backend (``KERAS_BACKEND=torch``) and
  ``keras.config.set_floatx("float64")``: a float64 ``keras.Variable`` and
  ``optimizer.apply_gradients``.  With Keras's default float32 the rows miss
  rtol 1e-9 (AdamW by 5e-8);
* torch 2.13.0 (CPU): a float64 tensor, ``foreach=False``, ``opt.step()``.

Usage (an environment with both libraries; .ci/anchors makes one):

    KERAS_BACKEND=torch python tests/golden_gen.py           # prints the rows
    KERAS_BACKEND=torch python tests/golden_gen.py --check   # compares with optim_db

``--check`` exits 1 when a row differs from the library by more than rtol 1e-9;
tests/test_golden.py::test_golden_rows_regenerate runs the same comparison.
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import optim_db  # noqa: E402
from anchor_defaults import to_torch_kwargs  # noqa: E402

VERSIONS = {"keras": "3.15", "torch": "2.13"}


def keras_row(entry, kwargs):
    import keras
    from keras.src.backend.common import dtypes
    saved = keras.config.floatx()
    keras.config.set_floatx("float64")
    demotion = dict(dtypes.BIT64_TO_BIT32_DTYPE)
    if entry.keras_float64_reductions:      # Keras's formulas in float64 (optim_db)
        dtypes.BIT64_TO_BIT32_DTYPE.clear()
    try:
        var = keras.Variable(_golden(entry, optim_db.GOLDEN_W0), dtype="float64")
        opt = getattr(keras.optimizers, entry.keras_name)(**kwargs)
        for g in optim_db.GOLDEN_GRADS:
            opt.apply_gradients([(keras.ops.convert_to_tensor(_golden(entry, g),
                                                              dtype="float64"), var)])
        return [float(x) for x in keras.ops.convert_to_numpy(var).ravel()]
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE.update(demotion)
        keras.config.set_floatx(saved)


def _golden(entry, values):
    """A golden array in the shape the optimizer takes (optim_db.param_shape)."""
    values = np.array(values, dtype=np.float64)
    return values.reshape(optim_db.param_shape(entry.name, values.shape))


def torch_row(entry, kwargs):
    import torch
    # torch keeps some per-parameter scalars (ASGD's eta and mu, NAdam's
    # mu_product) in the default dtype: float64, as the rows were recorded
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with entry.torch_context():
            return _torch_steps(entry, kwargs)
    finally:
        torch.set_default_dtype(saved)


def _torch_steps(entry, kwargs):
    import importlib

    import torch
    p = torch.tensor(_golden(entry, optim_db.GOLDEN_W0))
    import inspect
    module = importlib.import_module(entry.torch_module)      # torch.optim, or schedulefree
    cls = getattr(module, entry.torch_name)
    extra = {"foreach": False} if "foreach" in inspect.signature(cls).parameters else {}
    opt = cls([p], **to_torch_kwargs(entry.name, kwargs), **extra)
    if hasattr(opt, "train"):       # schedulefree's optimizers step only in train mode
        opt.train()
    for g in optim_db.GOLDEN_GRADS:
        grad = torch.tensor(_golden(entry, g))
        if entry.torch_sparse:      # every element named (SparseAdam takes sparse grads only)
            grad = torch.sparse_coo_tensor(torch.arange(len(grad))[None], grad, grad.shape)
        p.grad = grad
        opt.step()
    return [float(x) for x in p.detach().numpy().ravel()]


def check_versions():
    import keras
    import torch
    for lib, mod in (("keras", keras), ("torch", torch)):
        if not mod.__version__.startswith(VERSIONS[lib]):
            raise SystemExit(f"{lib} {mod.__version__} installed; the golden rows come from "
                             f"{lib} {VERSIONS[lib]}")


def rows():
    """``(entry, kwargs, convention, recorded, regenerated)`` for every golden cell."""
    out = []
    for entry in optim_db.optim_db:
        for kwargs, keras_col, torch_col in entry.golden:
            if keras_col is not None:
                out.append((entry, kwargs, "keras", keras_col, keras_row(entry, kwargs)))
            if torch_col is not None:
                out.append((entry, kwargs, "torch", torch_col, torch_row(entry, kwargs)))
    return out


def main(argv):
    check_versions()
    bad = 0
    for entry, kwargs, conv, recorded, new in rows():
        print(f"{entry.name} {conv} {kwargs}: [{', '.join(f'{x:.10f}' for x in new)}]")
        if "--check" in argv and not np.allclose(new, recorded, rtol=1e-9, atol=0):
            print(f"  MISMATCH: optim_db has {recorded}")
            bad += 1
    if "--check" in argv:
        print(f"golden rows: {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
