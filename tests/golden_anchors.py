"""Known-answer vectors computed by the anchor libraries themselves.

Run where torch 2.13 and Keras 3.15 (torch backend) are installed::

    KERAS_BACKEND=torch python tests/golden_anchors.py            # print the rows
    KERAS_BACKEND=torch python tests/golden_anchors.py --write    # tests/data/golden_anchors.json

Two problems, both float64 (torch's default dtype set to float64, Keras's
``floatx`` "float64"): the 3-vector of ``optim_db.GOLDEN_W0`` /
``GOLDEN_GRADS`` (its rows go into the ``golden`` column of
``tests/optim_db.py``), and :data:`MATRIX_SHAPES`, params of two and three
axes on which factored and matrix-shaped rules work (stored with the inputs in
``tests/data/golden_anchors.json``, read by ``tests/test_golden.py``).

Keras 3 computes ``ops.mean``, ``ops.maximum`` and ``ops.minimum`` of float64
tensors in float32 (``keras.src.backend.common.dtypes.result_type`` maps
64-bit dtypes to 32-bit, as JAX does by default), which moves Adafactor's
numbers by ~1e-7 relative.  The rows here are Keras's formulas in float64:
the generator empties ``BIT64_TO_BIT32_DTYPE`` while it runs Keras.
``tests/test_adafactor.py`` measures the shipped behaviour too.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
DATA = os.path.join(HERE, "data", "golden_anchors.json")

MATRIX_SHAPES = [(3, 4), (2, 3, 5), (5, 2)]
STEPS = 3

# (fastopt class, convention, fastopt kwargs, anchor kwargs)
CASES = [
    ("Adafactor", "torch", {"learning_rate": 0.01}, {"lr": 0.01}),
    ("Adafactor", "torch", {"learning_rate": 0.05, "weight_decay": 0.1, "eps": (1e-6, 1e-2),
                            "clip_threshold": 1.5, "beta_2_decay": -0.5},
     {"lr": 0.05, "weight_decay": 0.1, "eps": (1e-6, 1e-2), "d": 1.5, "beta2_decay": -0.5}),
    ("Adafactor", "keras", {"learning_rate": 0.01}, {"learning_rate": 0.01}),
    ("Adafactor", "keras", {"learning_rate": 0.05, "weight_decay": 0.1, "epsilon_1": 1e-6,
                            "epsilon_2": 1e-2, "clip_threshold": 0.5, "beta_2_decay": -0.5},
     {"learning_rate": 0.05, "weight_decay": 0.1, "epsilon_1": 1e-6, "epsilon_2": 1e-2,
      "clip_threshold": 0.5, "beta_2_decay": -0.5}),
]


def matrix_problem():
    rng = np.random.default_rng(2026)
    w0 = [rng.standard_normal(s).round(3) for s in MATRIX_SHAPES]
    grads = [[(rng.standard_normal(s) * 0.3).round(3) for s in MATRIX_SHAPES]
             for _ in range(STEPS)]
    return w0, grads


def run_torch(cls_name, kwargs, w0, grads):
    import torch
    torch.set_default_dtype(torch.float64)
    params = [torch.tensor(np.array(w, dtype=np.float64)) for w in w0]
    opt = getattr(torch.optim, cls_name)(params, **kwargs)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(np.array(g, dtype=np.float64))
        opt.step()
    return [p.numpy().tolist() for p in params]


def run_keras(cls_name, kwargs, w0, grads):
    import keras
    from keras.src.backend.common import dtypes
    keras.config.set_floatx("float64")
    saved = dict(dtypes.BIT64_TO_BIT32_DTYPE)
    dtypes.BIT64_TO_BIT32_DTYPE.clear()
    try:
        variables = [keras.Variable(np.array(w, dtype=np.float64)) for w in w0]
        opt = getattr(keras.optimizers, cls_name)(**kwargs)
        for gs in grads:
            opt.apply_gradients([(keras.ops.convert_to_tensor(np.array(g, dtype=np.float64)), v)
                                 for g, v in zip(gs, variables)])
        return [keras.ops.convert_to_numpy(v).tolist() for v in variables]
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE.update(saved)


def main(write):
    import keras
    import torch
    import optim_db
    w3, g3 = [optim_db.GOLDEN_W0], [[g] for g in optim_db.GOLDEN_GRADS]
    wm, gm = matrix_problem()
    rows = []
    for name, conv, mine, theirs in CASES:
        run = run_torch if conv == "torch" else run_keras
        vec = run(name, theirs, w3, g3)[0]
        mat = run(name, theirs, wm, gm)
        print(f"{name} {conv} {mine}\n  3-vector: [{', '.join(f'{x:.10f}' for x in vec)}]")
        rows.append({"name": name, "convention": conv, "kwargs": mine, "vector": vec,
                     "matrices": mat})
    if write:
        out = {"libraries": {"torch": torch.__version__, "keras": keras.__version__,
                             "keras_backend": keras.backend.backend(), "floatx": "float64"},
               "steps": STEPS, "w0": [w.tolist() for w in wm],
               "grads": [[g.tolist() for g in gs] for gs in gm], "rows": rows}
        with open(DATA, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print(f"wrote {DATA}")


if __name__ == "__main__":
    main("--write" in sys.argv)
