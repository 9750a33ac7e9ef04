"""Value tables of the anchor libraries' schedules, for the known-answer tests.

Writes ``tests/data/schedule_tables.json``: for each case the anchor's values
at steps ``0 .. n-1`` and the fastopt schedule (``{"class_name", "config"}``)
that must reproduce them.  ``tests/test_schedule_tables.py`` checks the stored
tables without the libraries and the same cases live when a library is
installed.  Each run rewrites only the sections of the libraries it is asked
for and records their versions::

    KERAS_BACKEND=torch python tests/gen_schedule_tables.py torch keras
    python tests/gen_schedule_tables.py optax     # an environment with jax, optax

torch: the value at step t is ``scheduler.get_last_lr()[0]`` after t calls of
``optimizer.step(); scheduler.step()`` for an SGD (momentum 0.9) whose lr was
``base_lr``.  optax: ``float(schedule(t))`` with ``jax_enable_x64``.  Keras:
``float(schedule(t))`` with ``floatx="float64"``; the fastopt config is the
Keras ``get_config()`` itself (names included).
"""

import json
import math
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "data", "schedule_tables.json")


# Functions the cases pass by name; the tests register them in fastopt.
def decay_097(t):
    return 0.97


def step_halving(t):
    return 0.5 if t % 3 == 0 else 1.0


def half_per_cycle(k):
    return 1.0 / (2.0 ** (k - 1))


def slow_exp(k):
    return 0.99 ** k


FUNCTIONS = {f.__name__: f for f in (decay_097, step_halving, half_per_cycle,
                                     slow_exp)}

# (id, torch class, torch kwargs (names as the functions' names), base_lr, n)
# base_lr None: the class takes no base_lr (CyclicLR, OneCycleLR).
TORCH_CASES = [
    ("LinearLR", "LinearLR", {"start_factor": 0.25, "end_factor": 1.0,
                              "total_iters": 8}, 0.1, 14),
    ("LinearLR-down", "LinearLR", {"start_factor": 1.0, "end_factor": 0.05,
                                   "total_iters": 10}, 0.3, 14),
    ("ConstantLR", "ConstantLR", {"factor": 0.5, "total_iters": 4}, 0.1, 8),
    ("MultiplicativeLR", "MultiplicativeLR", {"lr_lambda": "decay_097"}, 0.1, 30),
    ("MultiplicativeLR-steps", "MultiplicativeLR", {"lr_lambda": "step_halving"},
     1.0, 20),
    ("PolynomialLR", "PolynomialLR", {"total_iters": 10, "power": 2.0}, 0.1, 14),
    ("PolynomialLR-sqrt", "PolynomialLR", {"total_iters": 7, "power": 0.5}, 1.0, 10),
    ("StepLR", "StepLR", {"step_size": 3, "gamma": 0.5}, 0.1, 16),
    ("MultiStepLR", "MultiStepLR", {"milestones": [7, 2, 5, 5], "gamma": 0.3},
     0.1, 12),
    ("ExponentialLR", "ExponentialLR", {"gamma": 0.9}, 0.1, 30),
    ("CosineAnnealingLR", "CosineAnnealingLR", {"T_max": 6, "eta_min": 0.01},
     0.1, 40),
    ("CosineAnnealingWarmRestarts", "CosineAnnealingWarmRestarts",
     {"T_0": 3, "T_mult": 2, "eta_min": 0.001}, 0.1, 40),
    ("CosineAnnealingWarmRestarts-1", "CosineAnnealingWarmRestarts",
     {"T_0": 5, "T_mult": 1}, 1.0, 17),
    ("CyclicLR-triangular", "CyclicLR", {"base_lr": 0.01, "max_lr": 0.1,
                                         "step_size_up": 4, "step_size_down": 2},
     None, 25),
    ("CyclicLR-exp_range", "CyclicLR", {"base_lr": 0.01, "max_lr": 0.1,
                                        "step_size_up": 3, "mode": "exp_range",
                                        "gamma": 0.95}, None, 25),
    ("CyclicLR-scale_fn-cycle", "CyclicLR", {"base_lr": 0.01, "max_lr": 0.1,
                                             "step_size_up": 3,
                                             "scale_fn": "half_per_cycle",
                                             "scale_mode": "cycle"}, None, 25),
    ("CyclicLR-scale_fn-iterations", "CyclicLR",
     {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 3, "scale_fn": "slow_exp",
      "scale_mode": "iterations"}, None, 25),
    ("OneCycleLR", "OneCycleLR", {"max_lr": 0.1, "epochs": 4,
                                  "steps_per_epoch": 5}, None, 20),
    ("OneCycleLR-linear-3phase", "OneCycleLR",
     {"max_lr": 0.1, "total_steps": 30, "pct_start": 0.25,
      "anneal_strategy": "linear", "three_phase": True}, None, 30),
    ("SWALR", "SWALR", {"swa_lr": 0.05, "anneal_epochs": 5}, 0.2, 10),
    ("SWALR-linear", "SWALR", {"swa_lr": 0.01, "anneal_epochs": 3,
                               "anneal_strategy": "linear"}, 0.1, 6),
    ("SWALR-0", "SWALR", {"swa_lr": 0.02, "anneal_epochs": 0}, 0.1, 4),
]

# (id, optax function, kwargs, fastopt class, fastopt config, n)
OPTAX_CASES = [
    ("piecewise_interpolate-linear", "piecewise_interpolate_schedule",
     {"interpolate_type": "linear", "init_value": 0.1,
      "boundaries_and_scales": {5: 2.0, 12: 0.1, 13: 0.5}},
     "PiecewiseInterpolate", {"interpolate_type": "linear", "init_value": 0.1,
                              "boundaries_and_scales": [[5, 2.0], [12, 0.1],
                                                        [13, 0.5]]}, 18),
    ("piecewise_interpolate-cosine", "piecewise_interpolate_schedule",
     {"interpolate_type": "cosine", "init_value": 1.0,
      "boundaries_and_scales": {0: 0.5, 6: 0.2, 10: 3.0}},
     "PiecewiseInterpolate", {"interpolate_type": "cosine", "init_value": 1.0,
                              "boundaries_and_scales": [[0, 0.5], [6, 0.2],
                                                        [10, 3.0]]}, 14),
    ("linear_onecycle", "linear_onecycle_schedule",
     {"transition_steps": 40, "peak_value": 0.1},
     "LinearOneCycle", {"transition_steps": 40, "peak_value": 0.1}, 45),
    ("linear_onecycle-pcts", "linear_onecycle_schedule",
     {"transition_steps": 17, "peak_value": 1.0, "pct_start": 0.2,
      "pct_final": 0.7, "div_factor": 10.0, "final_div_factor": 100.0},
     "LinearOneCycle", {"transition_steps": 17, "peak_value": 1.0,
                        "pct_start": 0.2, "pct_final": 0.7, "div_factor": 10.0,
                        "final_div_factor": 100.0}, 20),
    ("cosine_decay-exponent", "cosine_decay_schedule",
     {"init_value": 0.1, "decay_steps": 20, "alpha": 0.1, "exponent": 2.0},
     "CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 20,
                     "alpha": 0.1, "exponent": 2.0}, 25),
    ("exponential_decay-floor-begin", "exponential_decay",
     {"init_value": 0.1, "transition_steps": 3, "decay_rate": 0.5,
      "transition_begin": 4, "end_value": 0.01},
     "ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 3,
                          "decay_rate": 0.5, "transition_begin": 4,
                          "end_value": 0.01}, 25),
    ("exponential_decay-staircase-ceiling", "exponential_decay",
     {"init_value": 0.1, "transition_steps": 2, "decay_rate": 1.5,
      "transition_begin": 1, "staircase": True, "end_value": 0.5},
     "ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 2,
                          "decay_rate": 1.5, "transition_begin": 1,
                          "staircase": True, "end_value": 0.5}, 16),
    ("warmup_cosine_decay", "warmup_cosine_decay_schedule",
     {"init_value": 0.0, "peak_value": 0.1, "warmup_steps": 5,
      "decay_steps": 25, "end_value": 0.001},
     "WarmupCosineDecay", {"init_value": 0.0, "peak_value": 0.1,
                           "warmup_steps": 5, "decay_steps": 25,
                           "end_value": 0.001}, 30),
    ("warmup_cosine_decay-exponent", "warmup_cosine_decay_schedule",
     {"init_value": 0.01, "peak_value": 1.0, "warmup_steps": 3,
      "decay_steps": 12, "exponent": 0.5},
     "WarmupCosineDecay", {"init_value": 0.01, "peak_value": 1.0,
                           "warmup_steps": 3, "decay_steps": 12,
                           "exponent": 0.5}, 15),
    ("warmup_exponential_decay", "warmup_exponential_decay_schedule",
     {"init_value": 0.0, "peak_value": 0.1, "warmup_steps": 4,
      "transition_steps": 3, "decay_rate": 0.5, "transition_begin": 2,
      "end_value": 0.005},
     "WarmupExponentialDecay", {"init_value": 0.0, "peak_value": 0.1,
                                "warmup_steps": 4, "transition_steps": 3,
                                "decay_rate": 0.5, "transition_begin": 2,
                                "end_value": 0.005}, 25),
    ("warmup_exponential_decay-staircase", "warmup_exponential_decay_schedule",
     {"init_value": 0.02, "peak_value": 0.2, "warmup_steps": 0,
      "transition_steps": 4, "decay_rate": 0.7, "staircase": True},
     "WarmupExponentialDecay", {"init_value": 0.02, "peak_value": 0.2,
                                "warmup_steps": 0, "transition_steps": 4,
                                "decay_rate": 0.7, "staircase": True}, 20),
]

# (id, Keras class, kwargs (with name=), n); fastopt class = Keras class name
# except PiecewiseConstantDecay (PiecewiseConstant, switch="after")
KERAS_CASES = [
    ("ExponentialDecay", "ExponentialDecay",
     {"initial_learning_rate": 0.1, "decay_steps": 4, "decay_rate": 0.5,
      "name": "exp"}, 20),
    ("ExponentialDecay-staircase", "ExponentialDecay",
     {"initial_learning_rate": 0.1, "decay_steps": 3, "decay_rate": 0.7,
      "staircase": True}, 15),
    ("InverseTimeDecay", "InverseTimeDecay",
     {"initial_learning_rate": 0.1, "decay_steps": 2, "decay_rate": 0.5,
      "name": "inv"}, 15),
    ("PolynomialDecay-cycle", "PolynomialDecay",
     {"initial_learning_rate": 0.1, "decay_steps": 4, "end_learning_rate": 0.01,
      "power": 2.0, "cycle": True, "name": "poly"}, 20),
    ("CosineDecay-warmup", "CosineDecay",
     {"initial_learning_rate": 0.0, "decay_steps": 10, "alpha": 0.1,
      "warmup_target": 0.1, "warmup_steps": 4, "name": "cos"}, 20),
    ("CosineDecayRestarts", "CosineDecayRestarts",
     {"initial_learning_rate": 0.1, "first_decay_steps": 3, "t_mul": 2.0,
      "m_mul": 0.8, "alpha": 0.05, "name": "sgdr"}, 30),
    ("PiecewiseConstantDecay", "PiecewiseConstantDecay",
     {"boundaries": [3, 8], "values": [0.1, 0.05, 0.01], "name": "pw"}, 12),
]

# Keras ReduceLROnPlateau callback, mode="auto": the lr after each epoch
KERAS_PLATEAU_CASES = [
    ("ReduceLROnPlateau-auto-acc", {"monitor": "val_accuracy", "factor": 0.5,
                                    "patience": 2, "mode": "auto",
                                    "min_delta": 0.01, "cooldown": 1,
                                    "min_lr": 0.01},
     0.1, [0.5, 0.6, 0.6, 0.61, 0.6, 0.7, 0.7, 0.7, 0.7, 0.69, 0.7, 0.7, 0.7]),
    ("ReduceLROnPlateau-auto-loss", {"monitor": "val_loss", "factor": 0.2,
                                     "patience": 1, "mode": "auto"},
     0.1, [1.0, 0.9, 0.95, 0.9, 0.8, 0.85, 0.85, 0.7, 0.71, 0.72]),
]


# ---------------------------------------------------------------------------
# anchors (imported only here)
# ---------------------------------------------------------------------------

def torch_values(cls_name, kwargs, base_lr, n):
    import torch
    from torch.optim import lr_scheduler, swa_utils
    kwargs = {k: FUNCTIONS[v] if k in ("lr_lambda", "scale_fn") else v
              for k, v in kwargs.items()}
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    lr = base_lr if base_lr is not None else kwargs.get("base_lr", 0.1)
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    cls = (swa_utils.SWALR if cls_name == "SWALR"
           else getattr(lr_scheduler, cls_name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = cls(opt, **kwargs)
        out = [float(sched.get_last_lr()[0])]
        for _ in range(n - 1):
            opt.step()
            sched.step()
            out.append(float(sched.get_last_lr()[0]))
    return out


def optax_values(fn_name, kwargs, n):
    import jax
    jax.config.update("jax_enable_x64", True)
    import optax
    sched = getattr(optax, fn_name)(**kwargs)
    return [float(sched(t)) for t in range(n)]


def keras_schedule(cls_name, kwargs):
    import keras
    keras.config.set_floatx("float64")
    return getattr(keras.optimizers.schedules, cls_name)(**kwargs)


def keras_values(cls_name, kwargs, n):
    s = keras_schedule(cls_name, kwargs)
    return [float(s(t)) for t in range(n)], s.get_config()


def keras_plateau_values(kwargs, lr0, metrics):
    import keras
    import numpy as np
    keras.config.set_floatx("float64")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr0), loss="mse",
                  metrics=["accuracy"])
    model.fit(np.zeros((2, 1)), np.zeros((2, 1)), epochs=1, verbose=0)
    model.optimizer.learning_rate = lr0       # metrics built, nothing else kept
    cb = keras.callbacks.ReduceLROnPlateau(**kwargs)
    cb.set_model(model)
    cb.on_train_begin()
    out = []
    for epoch, m in enumerate(metrics):
        cb.on_epoch_end(epoch, logs={kwargs["monitor"]: m})
        out.append(float(model.optimizer.learning_rate))
    return out


# ---------------------------------------------------------------------------
# fastopt side of each case
# ---------------------------------------------------------------------------

def torch_fastopt(cls_name, kwargs, base_lr):
    cfg = dict(kwargs)
    if base_lr is not None:
        cfg["base_lr"] = base_lr
    return {"class_name": cls_name, "config": cfg}


def keras_fastopt(cls_name, keras_config):
    cfg = dict(keras_config)
    if cls_name == "PiecewiseConstantDecay":
        return {"class_name": "PiecewiseConstant",
                "config": dict(cfg, switch="after")}
    return {"class_name": cls_name, "config": cfg}


def generate(lib):
    if lib == "torch":
        import torch
        rows = [{"id": i, "source": f"torch.optim {c}", "kwargs": kw,
                 "base_lr": b, "fastopt": torch_fastopt(c, kw, b),
                 "values": torch_values(c, kw, b, n)}
                for i, c, kw, b, n in TORCH_CASES]
        return {"version": torch.__version__, "cases": rows}
    if lib == "optax":
        import jax
        import optax
        rows = [{"id": i, "source": f"optax.{f}",
                 "kwargs": {k: ([[int(a), b] for a, b in v.items()]
                                if isinstance(v, dict) else v)
                            for k, v in kw.items()},
                 "fastopt": {"class_name": c, "config": cfg},
                 "values": optax_values(f, kw, n)}
                for i, f, kw, c, cfg, n in OPTAX_CASES]
        return {"version": f"optax {optax.__version__}, jax {jax.__version__}, "
                           f"jax_enable_x64", "cases": rows}
    if lib == "keras":
        import keras
        rows = []
        for i, c, kw, n in KERAS_CASES:
            vals, cfg = keras_values(c, kw, n)
            rows.append({"id": i, "source": f"keras.optimizers.schedules.{c}",
                         "kwargs": kw, "keras_config": cfg,
                         "fastopt": keras_fastopt(c, cfg), "values": vals})
        for i, kw, lr0, metrics in KERAS_PLATEAU_CASES:
            rows.append({"id": i, "source": "keras.callbacks.ReduceLROnPlateau",
                         "kwargs": kw, "lr0": lr0, "metrics": metrics,
                         "values": keras_plateau_values(kw, lr0, metrics)})
        return {"version": f"keras {keras.__version__} "
                           f"({keras.backend.backend()} backend), floatx float64",
                "cases": rows}
    raise SystemExit(f"unknown library {lib!r}; expected torch, optax or keras")


def main(libs):
    data = {}
    if os.path.exists(PATH):
        with open(PATH) as f:
            data = json.load(f)
    for lib in libs:
        data[lib] = generate(lib)
        print(f"{lib}: {len(data[lib]['cases'])} cases ({data[lib]['version']})")
    for sec in data.values():
        for row in sec["cases"]:
            assert all(math.isfinite(v) for v in row["values"]), row["id"]
    with open(PATH, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["torch", "keras"])
