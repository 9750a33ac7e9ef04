"""Measure how far fastopt's two conventions drift apart; prints the README table.

    python docs/conventions_table.py

Each row runs one optimizer with convention="keras" and with
convention="torch" on the same float64 parameters (256 values) and the same
gradient sequence (N(0, 0.1^2), independent of the weights) and reports
``||dw_keras - dw_torch|| / ||dw_torch||`` of the displacements
``dw = w_t - w_0`` after 1, 10 and 200 updates (the same 256 values as a
16x16 matrix where a row names a shape).  Unless a row says otherwise
both sides get the same hyper-parameters, so what remains is the formulas.
"""
import numpy as np

import fastopt as fo
from fastopt import schedules

N, STEPS, REPORT = 256, 200, (1, 10, 200)


def decaying(lr):
    return schedules.ExponentialDecay(lr, decay_steps=1, decay_rate=0.97)


# (label, class, keras kwargs, torch kwargs)
ROWS = [
    ("Adam, each library's default epsilon (1e-7 vs 1e-8)", "Adam",
     {"learning_rate": 1e-3}, {"learning_rate": 1e-3}),
    ("Adam, both epsilon 1e-8 (epsilon-hat vs bias-corrected)", "Adam",
     {"learning_rate": 1e-3, "epsilon": 1e-8}, {"learning_rate": 1e-3, "epsilon": 1e-8}),
    ("Adam, both epsilon 0", "Adam",
     {"learning_rate": 1e-3, "epsilon": 0.0}, {"learning_rate": 1e-3, "epsilon": 0.0}),
    ("Adam, lr x0.97 per step, epsilon 0", "Adam",
     {"learning_rate": decaying(1e-3), "epsilon": 0.0},
     {"learning_rate": decaying(1e-3), "epsilon": 0.0}),
    ("Adam(weight_decay=0.01): Keras decoupled vs torch L2", "Adam",
     {"learning_rate": 1e-3, "epsilon": 1e-8, "weight_decay": 0.01},
     {"learning_rate": 1e-3, "epsilon": 1e-8, "weight_decay": 0.01}),
    ("AdamW, both weight_decay 0.01, epsilon 1e-8", "AdamW",
     {"learning_rate": 1e-3, "epsilon": 1e-8, "weight_decay": 0.01},
     {"learning_rate": 1e-3, "epsilon": 1e-8, "weight_decay": 0.01}),
    ("Nadam, equal lr/epsilon, each library's momentum schedule", "Nadam",
     {"learning_rate": 2e-3, "epsilon": 1e-8}, {"learning_rate": 2e-3, "epsilon": 1e-8}),
    ("Nadam, torch momentum_decay=1.0 (the Keras 3 schedule)", "Nadam",
     {"learning_rate": 2e-3, "epsilon": 1e-8},
     {"learning_rate": 2e-3, "epsilon": 1e-8, "momentum_decay": 1.0}),
    ("RMSprop, equal lr/rho/epsilon (epsilon inside vs outside sqrt)", "RMSprop",
     {"learning_rate": 1e-3, "rho": 0.9, "epsilon": 1e-7},
     {"learning_rate": 1e-3, "rho": 0.9, "epsilon": 1e-7}),
    ("RMSprop momentum 0.9, lr x0.97 per step, epsilon 0", "RMSprop",
     {"learning_rate": decaying(1e-3), "rho": 0.9, "momentum": 0.9, "epsilon": 0.0},
     {"learning_rate": decaying(1e-3), "rho": 0.9, "momentum": 0.9, "epsilon": 0.0}),
    ("Adagrad, Keras (init 0, epsilon 1e-10) vs torch defaults, equal lr", "Adagrad",
     {"learning_rate": 1e-2, "initial_accumulator_value": 0.0, "epsilon": 1e-10},
     {"learning_rate": 1e-2}),
    ("Adamax, equal lr/epsilon (epsilon after vs inside the max)", "Adamax",
     {"learning_rate": 2e-3, "epsilon": 1e-8}, {"learning_rate": 2e-3, "epsilon": 1e-8}),
    ("SGD momentum 0.9, constant lr", "SGD",
     {"learning_rate": 1e-2, "momentum": 0.9}, {"learning_rate": 1e-2, "momentum": 0.9}),
    ("SGD momentum 0.9, lr x0.97 per step", "SGD",
     {"learning_rate": decaying(1e-2), "momentum": 0.9},
     {"learning_rate": decaying(1e-2), "momentum": 0.9}),
    ("SGD(weight_decay=0.01), no momentum", "SGD",
     {"learning_rate": 1e-2, "weight_decay": 0.01},
     {"learning_rate": 1e-2, "weight_decay": 0.01}),
    ("ScheduleFreeAdamW, equal defaults, constant lr (Keras: x from the new z)",
     "ScheduleFreeAdamW", {}, {}),
    ("ScheduleFreeAdamW, lr x0.97 per step (torch weights the average by lr_max^2)",
     "ScheduleFreeAdamW", {"learning_rate": decaying(2.5e-3)},
     {"learning_rate": decaying(2.5e-3)}),
    ("ScheduleFreeAdamW(weight_decay=0.01): Keras decoupled vs torch at y",
     "ScheduleFreeAdamW", {"weight_decay": 0.01}, {"weight_decay": 0.01}),
    ("Adafactor, equal lr 1e-2, each library's epsilon_1 (vector, unfactored)", "Adafactor",
     {"learning_rate": 1e-2}, {"learning_rate": 1e-2}),
    ("Adafactor 16x16 (factored), equal lr 1e-2, each library's epsilon_1", "Adafactor",
     {"learning_rate": 1e-2}, {"learning_rate": 1e-2}, (16, 16)),
    ("Adafactor 16x16, weight_decay 0.1 (RMS(w) after vs before the decay)", "Adafactor",
     {"learning_rate": 1e-2, "weight_decay": 0.1},
     {"learning_rate": 1e-2, "weight_decay": 0.1}, (16, 16)),
    ("Muon 16x16, equal lr 1e-2, no decay, no lr adjustment (Keras sums the momentum, "
     "torch averages it; the normalisation cancels the factor)", "Muon",
     {"learning_rate": 1e-2, "weight_decay": 0.0, "rms_rate": None},
     {"learning_rate": 1e-2, "weight_decay": 0.0}, (16, 16)),
    ("Muon 16x16, equal lr 1e-2, each library's weight decay and lr adjustment "
     "(Keras 0.004, x0.2*sqrt(16); torch 0.1, x1)", "Muon",
     {"learning_rate": 1e-2}, {"learning_rate": 1e-2}, (16, 16)),
    ("Muon 32x8, equal lr 1e-2, no decay, torch adjust_lr_fn='match_rms_adamw' (= Keras's "
     "rms_rate 0.2)", "Muon",
     {"learning_rate": 1e-2, "weight_decay": 0.0},
     {"learning_rate": 1e-2, "weight_decay": 0.0, "adjust_lr_fn": "match_rms_adamw"}, (32, 8)),
]


def displacements(cls, kwargs, convention, grads, w0, shape=(N,)):
    w = w0.reshape(shape).copy()
    opt = cls([w], convention=convention, **kwargs)
    out = {}
    for t, g in enumerate(grads, start=1):
        opt.step([g.reshape(shape)])
        if t in REPORT:
            out[t] = w.ravel() - w0
    return out


def measure():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(N)
    grads = [rng.normal(0.0, 0.1, N) for _ in range(STEPS)]
    rows = []
    for label, name, kk, kt, *shape in ROWS:
        cls = getattr(fo, name)
        dk = displacements(cls, kk, "keras", grads, w0, *shape)
        dt = displacements(cls, kt, "torch", grads, w0, *shape)
        rows.append((label, [float(np.linalg.norm(dk[t] - dt[t]) / np.linalg.norm(dt[t]))
                             for t in REPORT]))
    return rows


def main():
    print("| same hyper-parameters unless noted | " + " | ".join(f"t={t}" for t in REPORT) + " |")
    print("|---|" + "---:|" * len(REPORT))
    for label, rel in measure():
        print(f"| {label} | " + " | ".join(f"{r:.1e}" for r in rel) + " |")


if __name__ == "__main__":
    main()
