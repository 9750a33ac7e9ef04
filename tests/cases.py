"""The table that drives the parametrised suites: optimizer configurations
(class name, keyword arguments, conventions).  Every class in
fastopt.optimizers.REGISTRY must appear here and in reference.RULES."""

BOTH = ("keras", "torch")

CASES = [
    ("SGD", {}, BOTH),
    ("SGD", {"momentum": 0.9}, BOTH),
    ("SGD", {"momentum": 0.9, "nesterov": True}, BOTH),
    ("SGD", {"momentum": 0.8, "dampening": 0.3}, ("torch",)),
    ("SGD", {"momentum": 0.9, "weight_decay": 0.05}, BOTH),
    ("SGD", {"momentum": 0.9, "maximize": True, "clipvalue": 0.5}, BOTH),
    ("Adam", {}, BOTH),
    ("Adam", {"amsgrad": True}, BOTH),
    ("Adam", {"weight_decay": 0.05}, BOTH),
    ("Adam", {"weight_decay": 0.05, "decoupled_weight_decay": True}, ("torch",)),
    ("Adam", {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3, "maximize": True}, BOTH),
    ("AdamW", {}, BOTH),
    ("AdamW", {"amsgrad": True, "weight_decay": 0.1, "clipvalue": 0.3}, BOTH),
    ("Adagrad", {}, BOTH),
    ("Adagrad", {"initial_accumulator_value": 0.3, "epsilon": 1e-4, "maximize": True}, BOTH),
    ("Adagrad", {"lr_decay": 0.05, "weight_decay": 0.02}, ("torch",)),
    ("RMSprop", {}, BOTH),
    ("RMSprop", {"momentum": 0.9}, BOTH),
    ("RMSprop", {"centered": True}, BOTH),
    # epsilon 1e-5: float32 v - mg^2 cancels; with torch's eps 1e-8 outside the sqrt the
    # float32 trajectory drifts from the float64 reference by ~1e-4 on rare elements
    ("RMSprop", {"momentum": 0.8, "centered": True, "weight_decay": 0.05, "epsilon": 1e-5},
     BOTH),
    ("RMSprop", {"rho": 0.5, "epsilon": 1e-3, "clipvalue": 0.2}, BOTH),
    ("Adamax", {}, BOTH),
    ("Adamax", {"weight_decay": 0.05, "maximize": True}, BOTH),
    ("Nadam", {}, BOTH),
    ("Nadam", {"momentum_decay": 0.004, "beta_1": 0.8}, ("keras",)),
    ("Nadam", {"momentum_decay": 1.0}, ("torch",)),
    ("Nadam", {"weight_decay": 0.05}, BOTH),
    ("Nadam", {"weight_decay": 0.05, "decoupled_weight_decay": True}, ("torch",)),
    ("Adadelta", {}, BOTH),
    ("Adadelta", {"weight_decay": 0.05, "clipvalue": 0.2}, BOTH),
    ("Lion", {}, ("keras",)),
    ("Lion", {"beta_1": 0.5, "weight_decay": 0.1}, ("keras",)),
    ("Lamb", {}, ("keras",)),
    ("Lamb", {"weight_decay": 0.05, "clipvalue": 0.3}, ("keras",)),
    ("Ftrl", {}, ("keras",)),
    ("Ftrl", {"l1_regularization_strength": 0.01, "l2_regularization_strength": 0.02,
              "l2_shrinkage_regularization_strength": 0.01, "beta": 0.1}, ("keras",)),
    ("Ftrl", {"learning_rate_power": -0.3, "initial_accumulator_value": 0.5}, ("keras",)),
    ("Ftrl", {"learning_rate_power": 0.0, "l1_regularization_strength": 0.001}, ("keras",)),
    ("RAdam", {}, ("torch",)),
    ("RAdam", {"beta_2": 0.9, "weight_decay": 0.05}, ("torch",)),
    ("RAdam", {"weight_decay": 0.05, "decoupled_weight_decay": True}, ("torch",)),
    # optimizer-wide options
    ("Adam", {"clipnorm": 0.5}, BOTH),
    ("SGD", {"momentum": 0.9, "global_clipnorm": 1.0, "maximize": True}, BOTH),
    ("RMSprop", {"use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 5}, BOTH),
    # epsilon 1e-3: Adam's first update is nearly sign((g1+g2+g3)/3), ill-conditioned in
    # float32 where the sum cancels
    ("Adam", {"gradient_accumulation_steps": 3, "weight_decay": 0.05, "epsilon": 1e-3}, BOTH),
    ("SGD", {"momentum": 0.9, "gradient_accumulation_steps": 2}, BOTH),
    ("Nadam", {"gradient_accumulation_steps": 2, "use_ema": True}, BOTH),
    ("Lamb", {"global_clipnorm": 2.0}, ("keras",)),
    ("Adagrad", {"skip_nonfinite": True, "clipnorm": 1.0}, BOTH),
]

# Options handled by the reference driver rather than passed as hyper-parameters.
OPTIONS = ("maximize", "clipvalue", "decoupled_weight_decay", "clipnorm", "global_clipnorm",
           "use_ema", "ema_momentum", "ema_overwrite_frequency", "gradient_accumulation_steps",
           "skip_nonfinite")


def case_id(case, convention):
    name, kwargs, _ = case
    args = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({args})-{convention}"


def expand():
    """(case, convention) pairs, with readable ids."""
    out = []
    for case in CASES:
        for conv in case[2]:
            out.append(((case, conv), case_id(case, conv)))
    return out
