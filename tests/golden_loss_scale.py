"""Writes tests/data/loss_scale_golden.json: trajectories of Keras 3's
``LossScaleOptimizer`` around Adam and SGD, recorded from Keras itself
(Keras 3.15.1 on its torch backend, torch 2.13.0 CPU; ``floatx`` set to each
case's dtype, variables of that dtype), for the tests that run without Keras
(tests/test_loss_scale.py, which also compares with Keras live).

    KERAS_BACKEND=torch PYTHONPATH=tests python tests/golden_loss_scale.py          # diff
    KERAS_BACKEND=torch PYTHONPATH=tests python tests/golden_loss_scale.py --write  # record

The problem (:func:`problem`): two parameters, :data:`STEPS` steps of fixed
raw gradients; each step hands the optimizer ``raw * scale`` (the gradients
of ``scale_loss(loss)``, with the optimizer's own current scale, in the
parameters' dtype).  Steps in :data:`NONFINITE` hold an inf or a NaN (one
step at a time and two in a row), one step has no gradient for the second
parameter, and ``dynamic_growth_steps`` is small, so the scale both halves
and doubles.  Recorded after every step: the parameters, the scale, the
counter and ``iterations``.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "data" / "loss_scale_golden.json"
STEPS = 16
SHAPES = [(3,), (2, 2)]
NONE_STEP = 4                                  # params[1] gets no gradient
NONFINITE = {2: (0, 1, np.inf), 7: (1, 3, np.nan), 8: (0, 0, -np.inf)}

# (inner optimizer, fastopt/Keras kwargs, initial_scale, dynamic_growth_steps, dtype)
CASES = [
    ("Adam", {"learning_rate": 0.05}, 1024.0, 3, "float64"),
    ("Adam", {"learning_rate": 0.05}, 1024.0, 3, "float32"),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}, 2.0 ** 15, 2, "float64"),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}, 2.0 ** 15, 2, "float32"),
    # scales that are not powers of two: Keras divides (g / S is not g * (1/S) there)
    ("SGD", {"learning_rate": 0.1}, 1000.0, 3, "float64"),
    ("Adam", {"learning_rate": 0.05}, 3000.0, 1, "float32"),
    # the inner optimizer's options see the unscaled gradients
    ("Adam", {"learning_rate": 0.05, "gradient_accumulation_steps": 2}, 1024.0, 3, "float64"),
    ("SGD", {"learning_rate": 0.1, "clipvalue": 0.2}, 1024.0, 3, "float64"),
]


def problem():
    """The initial parameters and, per step, the raw (unscaled) gradients:
    float64, None for a parameter without a gradient."""
    rng = np.random.default_rng(1215)
    w0 = [rng.standard_normal(s) for s in SHAPES]
    raws = []
    for step in range(STEPS):
        grads = [rng.standard_normal(s) * 0.3 for s in SHAPES]
        if step == NONE_STEP:
            grads[1] = None
        if step in NONFINITE:
            i, k, value = NONFINITE[step]
            grads[i].reshape(-1)[k] = value
        raws.append(grads)
    return w0, raws


def scaled(raw, scale, dtype):
    """The gradients of ``scale * loss``, in ``dtype``."""
    return [None if g is None else g.astype(dtype) * np.asarray(scale, dtype=dtype)
            for g in raw]


def keras_run(name, kwargs, initial_scale, growth, dtype):
    """Keras 3's trajectory: per step ``(params, scale, counter, iterations)``."""
    import keras
    saved = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        w0, raws = problem()
        variables = [keras.Variable(w.astype(dtype), dtype=dtype) for w in w0]
        inner = getattr(keras.optimizers, name)(**kwargs)
        opt = keras.optimizers.LossScaleOptimizer(inner, initial_scale=initial_scale,
                                                  dynamic_growth_steps=growth)
        opt.build(variables)
        out = []
        for raw in raws:
            grads = scaled(raw, float(opt.dynamic_scale.numpy()), dtype)
            opt.apply([None if g is None else keras.ops.convert_to_tensor(g, dtype=dtype)
                       for g in grads], variables)
            out.append(([np.array(v.numpy(), dtype=dtype) for v in variables],
                        float(opt.dynamic_scale.numpy()), int(opt.step_counter.numpy()),
                        int(opt.iterations.numpy())))
        return out
    finally:
        keras.config.set_floatx(saved)


def record():
    import keras
    import torch
    cases = []
    for name, kwargs, initial_scale, growth, dtype in CASES:
        steps = keras_run(name, kwargs, initial_scale, growth, dtype)
        cases.append({
            "optimizer": name, "kwargs": kwargs, "initial_scale": initial_scale,
            "dynamic_growth_steps": growth, "dtype": dtype,
            "params": [[p.tolist() for p in params] for params, _, _, _ in steps],
            "dynamic_scale": [s for _, s, _, _ in steps],
            "step_counter": [c for _, _, c, _ in steps],
            "iterations": [t for _, _, _, t in steps],
        })
    return {"generator": "tests/golden_loss_scale.py", "keras": keras.__version__,
            "backend": keras.backend.backend(), "torch": torch.__version__, "cases": cases}


def main():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    data = record()
    text = json.dumps(data, indent=1) + "\n"
    if "--write" in sys.argv:
        OUT.write_text(text)
        print(f"wrote {OUT}")
        return
    old = OUT.read_text() if OUT.exists() else ""
    print("unchanged" if old == text else f"differs from {OUT} (run with --write to record)")


if __name__ == "__main__":
    main()
