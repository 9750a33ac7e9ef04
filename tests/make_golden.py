"""Prints the golden rows of tests/optim_db.py for the optimizers listed here,
computed by the anchor libraries themselves (not by fastopt).

    KERAS_BACKEND=torch python tests/make_golden.py [NAME ...]

Versions used for the rows in tests/optim_db.py: torch 2.13.0+cpu
(``torch.set_default_dtype(torch.float64)``, ``foreach=False``), schedulefree
1.4.1 (``foreach=False``), Keras 3.15 on the torch backend with
``keras.config.set_floatx("float64")``.  The problem is optim_db's
``GOLDEN_W0`` and ``GOLDEN_GRADS``: the row is w after three steps.  Each
entry: (fastopt class, fastopt keyword arguments, library, library class,
the library's keyword arguments).
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from optim_db import GOLDEN_GRADS, GOLDEN_W0  # noqa: E402

ROWS = [
    ("ASGD", {"learning_rate": 0.01}, "torch", "ASGD", {"lr": 0.01}),
    ("ASGD", {"learning_rate": 0.05, "lambd": 0.1, "alpha": 0.5, "t0": 1.0, "weight_decay": 0.1},
     "torch", "ASGD", {"lr": 0.05, "lambd": 0.1, "alpha": 0.5, "t0": 1.0, "weight_decay": 0.1}),
    ("ScheduleFreeAdamW", {"learning_rate": 0.01}, "schedulefree", "AdamWScheduleFree",
     {"lr": 0.01}),
    ("ScheduleFreeAdamW", {"learning_rate": 0.01}, "keras", "ScheduleFreeAdamW",
     {"learning_rate": 0.01}),
    ("ScheduleFreeAdamW", {"learning_rate": 0.01, "warmup_steps": 2, "weight_decay": 0.1},
     "schedulefree", "AdamWScheduleFree", {"lr": 0.01, "warmup_steps": 2, "weight_decay": 0.1}),
    ("ScheduleFreeAdamW", {"learning_rate": 0.01, "warmup_steps": 2, "weight_decay": 0.1},
     "keras", "ScheduleFreeAdamW", {"learning_rate": 0.01, "warmup_steps": 2, "weight_decay": 0.1}),
    ("ScheduleFreeSGD", {"learning_rate": 0.1}, "schedulefree", "SGDScheduleFree", {"lr": 0.1}),
    ("ScheduleFreeSGD", {"learning_rate": 0.1, "momentum": 0.5, "warmup_steps": 2,
                         "weight_decay": 0.1},
     "schedulefree", "SGDScheduleFree",
     {"lr": 0.1, "momentum": 0.5, "warmup_steps": 2, "weight_decay": 0.1}),
]


def run_torch(module, cls, kwargs):
    import torch
    torch.set_default_dtype(torch.float64)
    w = torch.tensor(GOLDEN_W0, dtype=torch.float64)
    opt = getattr(module, cls)([w], foreach=False, **kwargs)
    if hasattr(opt, "train"):
        opt.train()
    for g in GOLDEN_GRADS:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach().numpy().tolist()


def run_keras(cls, kwargs):
    import keras
    import numpy as np
    keras.config.set_floatx("float64")
    w = keras.Variable(np.array(GOLDEN_W0), dtype="float64")
    opt = getattr(keras.optimizers, cls)(**kwargs)
    for g in GOLDEN_GRADS:
        opt.apply_gradients([(keras.ops.convert_to_tensor(np.array(g)), w)])
    return np.asarray(keras.ops.convert_to_numpy(w)).tolist()


def compute(name, kwargs, library, cls, lib_kwargs):
    if library == "torch":
        import torch
        return run_torch(torch.optim, cls, lib_kwargs)
    if library == "schedulefree":
        import schedulefree
        return run_torch(schedulefree, cls, lib_kwargs)
    if library == "keras":
        return run_keras(cls, lib_kwargs)
    raise ValueError(library)


def main(names):
    for name, kwargs, library, cls, lib_kwargs in ROWS:
        if names and name not in names:
            continue
        w = compute(name, kwargs, library, cls, lib_kwargs)
        print(f"{name} {library} {kwargs}:\n    [{', '.join(f'{x:.12f}' for x in w)}]")


if __name__ == "__main__":
    main(sys.argv[1:])
