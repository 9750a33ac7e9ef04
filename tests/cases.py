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
]

# Options handled by the reference driver rather than passed as hyper-parameters.
OPTIONS = ("maximize", "clipvalue", "decoupled_weight_decay")


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
