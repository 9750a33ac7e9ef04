"""The anchors' defaults, written from their sources (not from fastopt):
Keras 3.15.1 ``keras/src/optimizers/<name>.py`` (``__init__`` signatures; a
``weight_decay=None`` there is 0) and torch 2.13.0 ``torch/optim/<name>.py``
(``__init__`` signatures), in fastopt's keyword names: ``lr`` is
``learning_rate``, ``eps`` is ``epsilon``, ``betas`` are ``beta_1, beta_2``,
torch's RMSprop ``alpha`` is ``rho``, Rprop's ``etas`` are ``etaminus,
etaplus`` and its ``step_sizes`` are ``step_size_min, step_size_max``.

tests/test_defaults.py holds every optimizer to this table and, where the
libraries are installed, the table to their signatures.  A new optimizer with
an anchor adds its rows here from the anchor's source.
"""

#: Options every Keras 3 optimizer takes, with the defaults of
#: ``keras/src/optimizers/base_optimizer.py``.
KERAS_OPTIONS = {"clipnorm": None, "clipvalue": None, "global_clipnorm": None,
                 "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                 "gradient_accumulation_steps": None}

ANCHOR_DEFAULTS = {
    # ---- Keras 3.15.1 --------------------------------------------------------------
    ("keras", "SGD"): {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False,
                       "weight_decay": 0.0},
    ("keras", "Adam"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                        "epsilon": 1e-7, "amsgrad": False, "weight_decay": 0.0},
    ("keras", "AdamW"): {"learning_rate": 0.001, "weight_decay": 0.004, "beta_1": 0.9,
                         "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    ("keras", "Adagrad"): {"learning_rate": 0.001, "initial_accumulator_value": 0.1,
                           "epsilon": 1e-7, "weight_decay": 0.0},
    ("keras", "RMSprop"): {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0,
                           "epsilon": 1e-7, "centered": False, "weight_decay": 0.0},
    ("keras", "Adamax"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                          "epsilon": 1e-7, "weight_decay": 0.0},
    ("keras", "Nadam"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                         "epsilon": 1e-7, "weight_decay": 0.0},
    ("keras", "Adadelta"): {"learning_rate": 0.001, "rho": 0.95, "epsilon": 1e-7,
                            "weight_decay": 0.0},
    ("keras", "Lion"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.99,
                        "weight_decay": 0.0},
    ("keras", "Lamb"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                        "epsilon": 1e-7, "weight_decay": 0.0},
    ("keras", "Ftrl"): {"learning_rate": 0.001, "learning_rate_power": -0.5,
                        "initial_accumulator_value": 0.1, "l1_regularization_strength": 0.0,
                        "l2_regularization_strength": 0.0,
                        "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0,
                        "weight_decay": 0.0},
    # ---- torch 2.13.0 ----------------------------------------------------------------
    ("torch", "SGD"): {"learning_rate": 0.001, "momentum": 0.0, "dampening": 0.0,
                       "weight_decay": 0.0, "nesterov": False, "maximize": False},
    ("torch", "Adam"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                        "epsilon": 1e-8, "weight_decay": 0.0, "amsgrad": False,
                        "maximize": False, "decoupled_weight_decay": False},
    ("torch", "AdamW"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                         "epsilon": 1e-8, "weight_decay": 0.01, "amsgrad": False,
                         "maximize": False},
    ("torch", "Adagrad"): {"learning_rate": 0.01, "lr_decay": 0.0, "weight_decay": 0.0,
                           "initial_accumulator_value": 0.0, "epsilon": 1e-10,
                           "maximize": False},
    ("torch", "RMSprop"): {"learning_rate": 0.01, "rho": 0.99, "epsilon": 1e-8,
                           "weight_decay": 0.0, "momentum": 0.0, "centered": False,
                           "maximize": False},
    ("torch", "Adamax"): {"learning_rate": 0.002, "beta_1": 0.9, "beta_2": 0.999,
                          "epsilon": 1e-8, "weight_decay": 0.0, "maximize": False},
    ("torch", "Nadam"): {"learning_rate": 0.002, "beta_1": 0.9, "beta_2": 0.999,
                         "epsilon": 1e-8, "weight_decay": 0.0, "momentum_decay": 0.004,
                         "decoupled_weight_decay": False, "maximize": False},
    ("torch", "Adadelta"): {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6,
                            "weight_decay": 0.0, "maximize": False},
    ("torch", "RAdam"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                         "epsilon": 1e-8, "weight_decay": 0.0,
                         "decoupled_weight_decay": False, "maximize": False},
    ("torch", "Rprop"): {"learning_rate": 0.01, "etaminus": 0.5, "etaplus": 1.2,
                         "step_size_min": 1e-6, "step_size_max": 50.0, "maximize": False},
    ("torch", "ASGD"): {"learning_rate": 0.01, "lambd": 1e-4, "alpha": 0.75, "t0": 1e6,
                        "weight_decay": 0.0, "maximize": False},
    # eps=(None, 1e-3): None (each dtype's machine epsilon) is kept as -1.0 in fastopt
    ("torch", "Adafactor"): {"learning_rate": 0.01, "beta_2_decay": -0.8, "epsilon_1": None,
                             "epsilon_2": 1e-3, "clip_threshold": 1.0, "weight_decay": 0.0,
                             "maximize": False},
    ("torch", "SparseAdam"): {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                              "epsilon": 1e-8, "maximize": False},
    # ---- Keras 3.15.1, more ----------------------------------------------------------
    ("keras", "Adafactor"): {"learning_rate": 0.001, "beta_2_decay": -0.8, "epsilon_1": 1e-30,
                             "epsilon_2": 1e-3, "clip_threshold": 1.0, "relative_step": True,
                             "weight_decay": 0.0},
    ("keras", "ScheduleFreeAdamW"): {"learning_rate": 0.0025, "beta_1": 0.9, "beta_2": 0.999,
                                     "epsilon": 1e-8, "warmup_steps": 0, "weight_decay": 0.0},
    # Muon: exclude_layers (None) and exclude_embeddings (True) are keywords that
    # route params, not hyper-parameters (tests/test_muon.py checks them)
    ("keras", "Muon"): {"learning_rate": 0.001, "weight_decay": 0.004, "momentum": 0.95,
                        "nesterov": True, "muon_a": 3.4445, "muon_b": -4.7750,
                        "muon_c": 2.0315, "ns_steps": 5, "rms_rate": 0.2,
                        "adam_beta_1": 0.9, "adam_beta_2": 0.999, "adam_weight_decay": 0.004,
                        "epsilon": 1e-7, "adam_lr_ratio": 1},
    ("torch", "Muon"): {"learning_rate": 0.001, "weight_decay": 0.1, "momentum": 0.95,
                        "nesterov": True, "muon_a": 3.4445, "muon_b": -4.7750,
                        "muon_c": 2.0315, "epsilon": 1e-7, "ns_steps": 5,
                        "adjust_lr_fn": None},
    # ---- schedulefree 1.4 (AdamWScheduleFree, SGDScheduleFree) -----------------------
    ("torch", "ScheduleFreeAdamW"): {"learning_rate": 0.0025, "beta_1": 0.9, "beta_2": 0.999,
                                     "epsilon": 1e-8, "weight_decay": 0.0, "warmup_steps": 0,
                                     "r": 0.0, "weight_lr_power": 2.0},
    ("torch", "ScheduleFreeSGD"): {"learning_rate": 1.0, "momentum": 0.9, "weight_decay": 0.0,
                                   "warmup_steps": 0, "r": 0.0, "weight_lr_power": 2.0},
}

#: An anchor's ``None`` default and the number fastopt keeps for it.
NONE_AS = {("torch", "Adafactor", "epsilon_1"): -1.0, ("torch", "Muon", "adjust_lr_fn"): 0.0}

#: Hyper-parameters fastopt has in a convention whose library lacks them: each
#: with the value that reproduces the library and why.
NOT_IN_ANCHOR = {
    ("keras", "Nadam", "momentum_decay"): (
        1.0, "Keras's Nadam has no momentum_decay: its u_t uses 0.96 ** t, which is "
             "0.96 ** (momentum_decay * t) with 1.0"),
    ("torch", "Rprop", "weight_decay"): (
        0.0, "torch's Rprop has no weight_decay; 0 leaves its update as torch has it"),
    ("torch", "SparseAdam", "weight_decay"): (
        0.0, "torch's SparseAdam has no weight_decay; 0 leaves its update as torch has it"),
}

#: torch's names for fastopt's, where they differ (the pairs are tuples there).
TORCH_NAMES = {"learning_rate": "lr", "epsilon": "eps", "beta_1": ("betas", 0),
               "beta_2": ("betas", 1), "etaminus": ("etas", 0), "etaplus": ("etas", 1),
               "step_size_min": ("step_sizes", 0), "step_size_max": ("step_sizes", 1)}
#: per class, where torch renames differently
TORCH_CLASS_NAMES = {"RMSprop": {"rho": "alpha"},
                     "Adafactor": {"beta_2_decay": "beta2_decay", "clip_threshold": "d",
                                   "epsilon_1": ("eps", 0), "epsilon_2": ("eps", 1)},
                     "Muon": {"muon_a": ("ns_coefficients", 0), "muon_b": ("ns_coefficients", 1),
                              "muon_c": ("ns_coefficients", 2)}}


def to_torch_kwargs(name, kwargs):
    """``kwargs`` (fastopt's names) as torch.optim's keyword arguments; the
    other half of a pair (``betas``, ``etas``, ``step_sizes``) is the table's
    default."""
    out, pairs = {}, {}
    renames = dict(TORCH_NAMES, **TORCH_CLASS_NAMES.get(name, {}))
    for key, value in kwargs.items():
        where = renames.get(key, key)
        if isinstance(where, tuple):
            pairs.setdefault(where[0], {})[where[1]] = value
        else:
            out[where] = value
    row = ANCHOR_DEFAULTS[("torch", name)]
    for pair, given in pairs.items():
        halves = [k for k, w in renames.items() if isinstance(w, tuple) and w[0] == pair]
        halves.sort(key=lambda k: renames[k][1])
        out[pair] = tuple(given.get(i, row[k]) for i, k in enumerate(halves))
    return out


def row(name, convention):
    """The anchor's defaults of ``name`` in ``convention`` (fastopt's names),
    with the values of :data:`NOT_IN_ANCHOR`; a clear error for a missing row."""
    try:
        out = dict(ANCHOR_DEFAULTS[(convention, name)])
    except KeyError:
        raise AssertionError(
            f"{name} ({convention}) has no row in tests/anchor_defaults.py: add its defaults "
            f"from the anchor library's source") from None
    out.update({k: v for (c, n, k), (v, _) in NOT_IN_ANCHOR.items() if (c, n) == (convention, name)})
    out.update({k: v for (c, n, k), v in NONE_AS.items() if (c, n) == (convention, name)})
    return out
