"""Keras 3's Muon on a mixed model: the problem, Keras's run of it, and the
known answers recorded from Keras itself (tests/data/muon_keras_golden.json),
for the tests that run without Keras.

    KERAS_BACKEND=torch PYTHONPATH=tests python tests/golden_muon.py          # compare
    KERAS_BACKEND=torch PYTHONPATH=tests python tests/golden_muon.py --write  # record

Keras 3.15.1 on its torch backend, ``floatx`` "float64", float64 variables
named as :data:`NAMES` (a standalone variable's path is its name), with its
float64 reductions kept (``BIT64_TO_BIT32_DTYPE`` emptied while it runs, as
tests/golden_anchors.py does: Keras takes the Newton-Schulz norm of float64 in
float32 otherwise).  The model mixes every route of Keras's Muon: matrices
(the Muon step), a bias, a 3-D kernel and a scalar (not 2-D: the AdamW step),
an embedding and an excluded layer (2-D, sent to the AdamW step by name).
30 steps, a learning rate that changes every step, both weight decays
nonzero, one param of each route excluded from weight decay, a param
without a grad some steps.
"""
import json
import os
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "data" / "muon_keras_golden.json"
STEPS = 30

#: (name, shape, route Keras's Muon gives it)
PARAMS = [
    ("dense_kernel", (5, 3), "muon"),
    ("dense_bias", (3,), "adamw"),          # 1-D
    ("conv_kernel", (2, 3, 4), "adamw"),    # 3-D
    ("token_embedding", (6, 4), "adamw"),   # "embedding" in its name
    ("hidden_kernel", (4, 4), "muon"),
    ("output_dense_kernel", (4, 2), "adamw"),   # exclude_layers
    ("scale", (), "adamw"),                 # 0-D
]
NAMES = [n for n, _, _ in PARAMS]
SHAPES = [s for _, s, _ in PARAMS]
ROUTES = [r for _, _, r in PARAMS]

#: Keras's keywords (fastopt's Muon takes the same ones)
KWARGS = {"adam_beta_1": 0.8, "adam_beta_2": 0.99, "epsilon": 1e-6, "adam_lr_ratio": 0.5,
          "adam_weight_decay": 0.03, "weight_decay": 0.02, "momentum": 0.9,
          "exclude_layers": ["output_dense"]}
#: ``exclude_from_weight_decay(var_names=...)``: one param of each route
EXCLUDED = ["dense_bias", "hidden"]


def lr_at(step):
    return 0.02 * (0.95 ** step) * (1.0 + 0.4 * (step % 3))


def problem(seed=2026, nsteps=STEPS):
    """Initial params and per-step grads (rounded, so the JSON holds them
    exactly); params[4] has no grad every fifth step."""
    rng = np.random.default_rng(seed)

    def draw(shape, scale=1.0):      # a 0-d array for shape (), not a NumPy scalar
        return np.array(np.round(rng.standard_normal(shape) * scale, 3)).reshape(shape)
    w0 = [draw(s) for s in SHAPES]
    grads = []
    for step in range(nsteps):
        g = [draw(s, 0.5 + step % 2) for s in SHAPES]
        if step % 5 == 2:
            g[4] = None
        grads.append(g)
    return w0, grads


def run_keras(w0, grads, kwargs=None, excluded=EXCLUDED):
    """Keras's Muon over the problem; the params after the last step."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras.src.backend.common import dtypes
    saved, demotion = keras.config.floatx(), dict(dtypes.BIT64_TO_BIT32_DTYPE)
    keras.config.set_floatx("float64")
    dtypes.BIT64_TO_BIT32_DTYPE.clear()
    try:
        variables = [keras.Variable(np.array(w, dtype=np.float64), dtype="float64", name=n)
                     for w, n in zip(w0, NAMES)]
        opt = keras.optimizers.Muon(learning_rate=lr_at(0), **(KWARGS if kwargs is None
                                                              else kwargs))
        opt.exclude_from_weight_decay(var_names=list(excluded))
        for step, g in enumerate(grads):
            opt.learning_rate = lr_at(step)
            opt.apply_gradients([(keras.ops.convert_to_tensor(x, dtype="float64"), v)
                                 for x, v in zip(g, variables) if x is not None])
        assert [opt._should_use_adamw(v) for v in variables] == \
            [r == "adamw" for r in ROUTES], "Keras routes the params otherwise: read it again"
        return [np.asarray(keras.ops.convert_to_numpy(v)) for v in variables]
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE.update(demotion)
        keras.config.set_floatx(saved)


def record():
    import keras
    w0, grads = problem()
    out = run_keras(w0, grads)
    return {"generator": "tests/golden_muon.py", "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "floatx": "float64",
            "names": NAMES, "kwargs": KWARGS, "excluded": EXCLUDED, "steps": STEPS,
            "w0": [w.tolist() for w in w0],
            "grads": [[None if x is None else x.tolist() for x in g] for g in grads],
            "w": [w.tolist() for w in out]}


def load():
    """The recorded answers, inputs as float64 arrays."""
    data = json.loads(OUT.read_text())
    data["w0"] = [np.array(w, dtype=np.float64).reshape(s) for w, s in zip(data["w0"], SHAPES)]
    data["grads"] = [[None if x is None else np.array(x, dtype=np.float64) for x in g]
                     for g in data["grads"]]
    data["w"] = [np.array(w, dtype=np.float64) for w in data["w"]]
    return data


if __name__ == "__main__":
    fresh = record()
    if "--write" in sys.argv:
        OUT.write_text(json.dumps(fresh, indent=0) + "\n")
        print(f"wrote {OUT}")
    else:
        old = load()
        gap = max(float(np.max(np.abs(np.array(a) - b) / np.maximum(np.abs(b), 1e-12),
                            initial=0.0))
                  for a, b in zip(fresh["w"], old["w"]))
        print(f"largest relative difference from the recorded answers: {gap:.3g}")
        sys.exit(0 if gap <= 1e-12 else 1)
