"""One table drives the tests: an :class:`OptimizerInfo` per optimizer class in
``fastopt.optimizers.REGISTRY`` (in the manner of torch's ``optim_db``).

Each entry says, for one optimizer, everything the suites need to know that
the class does not say about itself:

* ``rules``: its float64 reference update in each convention (the functions
  in ``tests/reference.py``); the keys are the conventions the optimizer has;
* ``initial_state(hp, w)``: the state a fresh optimizer starts from, by the
  formulas' definitions (``hp``: evaluated hyper-parameters at step 0);
* ``cases``: ``(kwargs, conventions)`` configurations that the kernel suites
  compare with the reference (cases that exercise the optimizer-wide options
  across optimizers live in :data:`OPTION_CASES`);
* ``stateful``: the keyword arguments that give it the state its defaults
  leave out (a momentum buffer), so that aliasing, snapshots and checkpoints
  have state to look at;
* ``golden``: known-answer rows ``(kwargs, keras result, torch result)``
  produced by Keras 3.15.1 and torch 2.13 themselves on :data:`GOLDEN_W0`
  and :data:`GOLDEN_GRADS` (w after three steps); ``None`` in a column is a
  library that does not have the optimizer.  ``golden_missing`` names, with
  the reason, a convention that has no row yet;
* ``torch_name`` / ``keras_name``: the anchor classes (``torch_module``: where
  the torch-convention anchor lives, ``torch.optim`` unless it is the
  ``schedulefree`` package); ``torch_cases``:
  configurations run against ``torch.optim`` itself (fastopt's keyword names;
  :meth:`OptimizerInfo.torch_kwargs` translates them);
* ``torch_sparse``: the torch class takes sparse gradients only (SparseAdam): the
  live comparisons hand it each gradient as a sparse tensor naming every element.
* ``decoupled_always``: weight decay is decoupled in every convention (AdamW).
* ``shape``: the shape a param of the suites' shape takes for this optimizer
  (:func:`param_shape`): the same, unless the optimizer takes some shapes only
  (Muon: matrices of as many elements); ``torch_context``: what a run of the
  torch anchor happens inside (Muon: :func:`torch_muon_float64`).
* ``shape_conventions``: the conventions that refuse a param not of the
  entry's ``shape`` (Muon: torch's; Keras's routes other params to AdamW).
* ``claim_shapes``: per convention, the shapes of the params of
  tests/test_claims.py's round trip, where the suites' shape leaves some
  hyper-parameter without effect (Muon, Keras: matrices never read the AdamW
  route's; a vector takes that route).
* ``frozen``: what else a learning rate of 0 needs to leave the weights as
  they are (Rprop: its step sizes also have a floor, ``step_size_min``).
* ``shared_clock``: one step count for the optimizer in every convention
  (schedule-free); ``per_update``: per convention, a function
  ``(shared, hp, t)`` the reference calls once per update, before the rule,
  for what the algorithm keeps per group across steps (it adds its values
  to ``hp``); ``coupled_decay_in_rule``: conventions whose rule applies the
  coupled weight decay itself (given as ``hp["_wd"]``), not the driver.

A new optimizer needs one entry here and its rule functions in
``tests/reference.py``; ``tests/test_optim_db.py`` fails until both exist.
"""
import contextlib
import json
from pathlib import Path

import numpy as np

import reference as ref
from fastopt.optimizers import REGISTRY

BOTH = ("keras", "torch")
KERAS = ("keras",)
TORCH = ("torch",)

#: Registry kernels that serve options rather than one optimizer.
OPTION_KERNELS = {"ema", "average"}

#: torch.optim's names of fastopt's keyword arguments, where they differ
#: (per optimizer additions in ``OptimizerInfo.torch_renames``); ``beta_1`` and
#: ``beta_2`` become torch's ``betas`` pair.
TORCH_KWARG_NAMES = {"learning_rate": "lr", "epsilon": "eps"}

# The problem of the golden rows: w after three steps of these grads.
GOLDEN_W0 = [1.0, -2.0, 0.5]
GOLDEN_GRADS = [[0.1, -0.2, 0.3], [-0.05, 0.4, 0.3], [0.2, 0.0, -0.1]]


class OptimizerInfo:
    """Everything the suites know about one optimizer (see the module docstring)."""

    def __init__(self, name, *, rules, initial_state, cases, golden=(), golden_missing=None,
                 stateful=None, torch_name=None, keras_name=None, torch_cases=(),
                 torch_renames=None, decoupled_always=False, frozen=None, shared_clock=False,
                 per_update=None, coupled_decay_in_rule=(), torch_module="torch.optim",
                 torch_sparse=False, keras_float64_reductions=False, shape=None,
                 torch_context=None, claim_shapes=None, shape_conventions=BOTH):
        self.name = name
        self.shape = shape or tuple
        self.shape_conventions = tuple(shape_conventions)
        self.claim_shapes = dict(claim_shapes or {})
        # what a run of the torch anchor happens inside (Muon: its Newton-Schulz
        # iteration in float64, not bfloat16)
        self.torch_context = torch_context or contextlib.nullcontext
        self.rules = dict(rules)
        self.initial_state = initial_state
        self.cases = list(cases)
        self.golden = list(golden)
        self.golden_missing = dict(golden_missing or {})
        self.stateful = dict(stateful or {})
        self.torch_name = torch_name
        self.keras_name = keras_name
        self.torch_cases = list(torch_cases)
        self.torch_renames = dict(TORCH_KWARG_NAMES, **(torch_renames or {}))
        self.decoupled_always = decoupled_always
        self.frozen = dict(frozen or {})
        self.shared_clock = shared_clock
        self.per_update = dict(per_update or {})
        self.coupled_decay_in_rule = tuple(coupled_decay_in_rule)
        self.torch_module = torch_module
        self.torch_sparse = torch_sparse
        # Keras demotes some reductions of float64 tensors to float32 (its
        # result_type); True: fastopt follows its formulas in float64, so a live
        # comparison turns the demotion off (tests/test_adafactor.py measures it)
        self.keras_float64_reductions = keras_float64_reductions

    def __repr__(self):
        return f"OptimizerInfo({self.name!r})"

    @property
    def cls(self):
        return REGISTRY[self.name]

    @property
    def conventions(self):
        """The conventions it has (those with a rule), Keras first."""
        return tuple(c for c in BOTH if c in self.rules)

    def stateless_by_default(self, convention):
        """True when an optimizer built with the defaults keeps no state (SGD
        without momentum)."""
        return not self.initial_state(self.cls.defaults(convention), np.zeros(1))

    def golden_rows(self):
        """``(kwargs, convention, expected)`` for every filled golden column."""
        return [(kw, conv, expected) for kw, keras, torch in self.golden
                for conv, expected in (("keras", keras), ("torch", torch))
                if expected is not None]

    def torch_kwargs(self, kwargs):
        """``kwargs`` (fastopt's names) as torch.optim's keyword arguments."""
        out = {}
        for key, value in kwargs.items():
            if key in ("beta_1", "beta_2"):
                continue
            out[self.torch_renames.get(key, key)] = value
        if "beta_1" in kwargs or "beta_2" in kwargs:
            hyper = self.cls.hyper
            out["betas"] = (kwargs.get("beta_1", hyper["beta_1"].default("torch")),
                            kwargs.get("beta_2", hyper["beta_2"].default("torch")))
        return out


def recorded_golden(filename):
    """Golden rows that a generator script recorded from the anchor library into
    ``tests/data/<filename>`` (its ``optim_db`` list); none while it is being
    recorded, which test_optim_db reports as a missing golden column."""
    path = Path(__file__).resolve().parent / "data" / filename
    if not path.exists():
        return []
    return [tuple(row) for row in json.loads(path.read_text())["optim_db"]]


# ---- initial states -------------------------------------------------------------------

def _zeros(*names):
    return lambda hp, w: {n: np.zeros_like(w) for n in names}


def _sgd_state(hp, w):
    if hp["momentum"] != 0 or hp.get("_momentum_scheduled"):
        return {"b": np.zeros_like(w)}
    return {}


def _adam_state(hp, w):
    st = {"m": np.zeros_like(w), "v": np.zeros_like(w)}
    if hp["amsgrad"]:
        st["vhat"] = np.zeros_like(w)
    return st


def _rmsprop_state(hp, w):
    st = {"v": np.zeros_like(w)}
    if hp["centered"]:
        st["mg"] = np.zeros_like(w)
    if hp["momentum"] != 0 or hp.get("_momentum_scheduled"):
        st["mom"] = np.zeros_like(w)
    return st


def _adafactor_state(hp, w):
    if w.ndim >= 2:     # factored over the last two axes
        return {"row": np.zeros(w.shape[:-1]), "col": np.zeros(w.shape[:-2] + w.shape[-1:])}
    return {"v": np.zeros_like(w)}


def _muon_state(hp, w):
    return {"m": np.zeros_like(w)}


def _matrix(shape):
    """A matrix of about as many elements as ``shape`` (tall for most sizes,
    so the Newton-Schulz iteration's transpose is exercised; wide ones come
    from the entry's own cases)."""
    shape = tuple(shape)
    if len(shape) == 2:
        return shape
    n = int(np.prod(shape))
    if len(shape) > 2 or n == 0:
        return (int(np.prod(shape[:-1])), shape[-1]) if len(shape) > 2 else (0, 3)
    for cols in (4, 3, 2):
        if n % cols == 0 and n > cols:
            return (n // cols, cols)
    return (n, 1)


@contextlib.contextmanager
def torch_muon_float64():
    """torch.optim.Muon with its Newton-Schulz iteration in float64: torch's
    own function with its one cast (``grad.bfloat16()``, always a copy) made a
    float64 copy (``grad.double()`` would return a float64 momentum buffer
    itself, which the in-place ``div_`` would then scale).  fastopt runs the
    iteration in the param's dtype; this is the float64 result torch's
    formulas give."""
    import inspect

    import torch.optim._muon as muon
    saved = muon._zeropower_via_newtonschulz
    source = inspect.getsource(saved)
    assert source.count("grad.bfloat16()") == 1, "torch's Newton-Schulz changed: read it again"
    scope = dict(vars(muon))
    exec(source.replace("grad.bfloat16()", "grad.to(torch.float64, copy=True)"), scope)
    muon._zeropower_via_newtonschulz = scope["_zeropower_via_newtonschulz"]
    try:
        yield
    finally:
        muon._zeropower_via_newtonschulz = saved


# ---- the table --------------------------------------------------------------------------

optim_db = [
    OptimizerInfo(
        "SGD",
        rules={"keras": ref.sgd_keras, "torch": ref.sgd_torch},
        initial_state=_sgd_state,
        stateful={"momentum": 0.9},
        cases=[
            ({}, BOTH),
            ({"momentum": 0.9}, BOTH),
            ({"momentum": 0.9, "nesterov": True}, BOTH),
            ({"momentum": 0.8, "dampening": 0.3}, TORCH),
            ({"momentum": 0.9, "weight_decay": 0.05}, BOTH),
            ({"momentum": 0.9, "maximize": True, "clipvalue": 0.5}, BOTH),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9975000000, -2.0020000000, 0.4950000000],
             [0.9975000000, -2.0020000000, 0.4950000000]),
            ({"learning_rate": 0.01, "momentum": 0.9},
             [0.9962400000, -2.0021800000, 0.4871700000],
             [0.9962400000, -2.0021800000, 0.4871700000]),
            ({"learning_rate": 0.01, "momentum": 0.9, "nesterov": True},
             [0.9941160000, -2.0039620000, 0.4834530000],
             [0.9941160000, -2.0039620000, 0.4834530000]),
        ],
        torch_name="SGD", keras_name="SGD",
        torch_cases=[
            {},
            {"momentum": 0.9},
            {"momentum": 0.9, "nesterov": True, "weight_decay": 0.03},
            {"momentum": 0.7, "dampening": 0.4, "maximize": True},
        ],
    ),
    OptimizerInfo(
        "Adam",
        rules={"keras": ref.adam_keras, "torch": ref.adam_torch},
        initial_state=_adam_state,
        cases=[
            ({}, BOTH),
            ({"amsgrad": True}, BOTH),
            ({"weight_decay": 0.05}, BOTH),
            ({"weight_decay": 0.05, "decoupled_weight_decay": True}, TORCH),
            ({"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3, "maximize": True}, BOTH),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9807559960, -1.9964911383, 0.4739432445],
             [0.9807555154, -1.9964910264, 0.4739430215]),
            ({"learning_rate": 0.01, "amsgrad": True},
             [0.9807559960, -1.9964897230, 0.4739432445],
             [0.9807555154, -1.9964896111, 0.4739430215]),
        ],
        torch_name="Adam", keras_name="Adam",
        torch_cases=[
            {},
            {"amsgrad": True, "weight_decay": 0.05},
            {"weight_decay": 0.05, "decoupled_weight_decay": True, "maximize": True},
        ],
    ),
    OptimizerInfo(
        "AdamW",
        rules={"keras": ref.adam_keras, "torch": ref.adam_torch},
        initial_state=_adam_state,
        decoupled_always=True,
        cases=[
            ({}, BOTH),
            ({"amsgrad": True, "weight_decay": 0.1, "clipvalue": 0.3}, BOTH),
        ],
        golden=[
            ({"learning_rate": 0.01, "weight_decay": 0.01, "epsilon": 1e-8},
             [0.9804578581, -1.9958927312, 0.4737960579],
             [0.9804578117, -1.9958927202, 0.4737960364]),
        ],
        torch_name="AdamW", keras_name="AdamW",
        torch_cases=[
            {},
            {"amsgrad": True, "weight_decay": 0.1, "beta_1": 0.8},
        ],
    ),
    OptimizerInfo(
        "Adagrad",
        rules={"keras": ref.adagrad_keras, "torch": ref.adagrad_torch},
        initial_state=lambda hp, w: {"acc": np.full_like(w, hp["initial_accumulator_value"])},
        cases=[
            ({}, BOTH),
            ({"initial_accumulator_value": 0.3, "epsilon": 1e-4, "maximize": True}, BOTH),
            ({"lr_decay": 0.05, "weight_decay": 0.02}, TORCH),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9933541257, -2.0019577433, 0.4893050168],
             [0.9857434204, -1.9989442719, 0.4852230895]),
        ],
        torch_name="Adagrad", keras_name="Adagrad",
        torch_cases=[
            {},
            {"lr_decay": 0.1, "initial_accumulator_value": 0.2, "weight_decay": 0.05},
        ],
    ),
    OptimizerInfo(
        "RMSprop",
        rules={"keras": ref.rmsprop_keras, "torch": ref.rmsprop_torch},
        initial_state=_rmsprop_state,
        stateful={"momentum": 0.9},
        cases=[
            ({}, BOTH),
            ({"momentum": 0.9}, BOTH),
            ({"centered": True}, BOTH),
            # epsilon 1e-5: float32 v - mg^2 cancels; with torch's eps 1e-8 outside the sqrt
            # the float32 trajectory drifts from the float64 reference by ~1e-4 on rare
            # elements
            ({"momentum": 0.8, "centered": True, "weight_decay": 0.05, "epsilon": 1e-5}, BOTH),
            ({"rho": 0.5, "epsilon": 1e-3, "clipvalue": 0.2}, BOTH),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9549368459, -1.9969489744, 0.4532469388],
             [0.8574274567, -1.9895323262, 0.3522177066]),
            ({"learning_rate": 0.01, "rho": 0.9, "epsilon": 1e-7, "momentum": 0.9,
              "centered": True},
             [0.9079944298, -1.9646364288, 0.3694874267],
             [0.9079905837, -1.9646354288, 0.3694868571]),
        ],
        torch_name="RMSprop", keras_name="RMSprop",
        torch_renames={"rho": "alpha"},
        torch_cases=[
            {},
            {"momentum": 0.9, "centered": True, "weight_decay": 0.02},
            {"rho": 0.8, "epsilon": 1e-4, "momentum": 0.5, "maximize": True},
        ],
    ),
    OptimizerInfo(
        "Adamax",
        rules={"keras": ref.adamax_keras, "torch": ref.adamax_torch},
        initial_state=_zeros("m", "u"),
        cases=[
            ({}, BOTH),
            ({"weight_decay": 0.05, "maximize": True}, BOTH),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9835384002, -1.9947231373, 0.4749149725],
             [0.9835383874, -1.9947231339, 0.4749149650]),
        ],
        torch_name="Adamax", keras_name="Adamax",
        torch_cases=[
            {},
            {"weight_decay": 0.05, "epsilon": 1e-3},
        ],
    ),
    OptimizerInfo(
        "Nadam",
        rules={"keras": ref.nadam_keras, "torch": ref.nadam_torch},
        initial_state=lambda hp, w: {"m": np.zeros_like(w), "v": np.zeros_like(w),
                                     "mu_product": 1.0},
        cases=[
            ({}, BOTH),
            ({"momentum_decay": 0.004, "beta_1": 0.8}, KERAS),
            ({"momentum_decay": 1.0}, TORCH),
            ({"weight_decay": 0.05}, BOTH),
            ({"weight_decay": 0.05, "decoupled_weight_decay": True}, TORCH),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9838192718, -1.9986107989, 0.4829674600],
             [0.9835655596, -1.9988611919, 0.4832322258]),
        ],
        torch_name="NAdam", keras_name="Nadam",
        torch_cases=[
            {},
            {"momentum_decay": 1.0, "weight_decay": 0.05},
            {"weight_decay": 0.05, "decoupled_weight_decay": True},
        ],
    ),
    OptimizerInfo(
        "Adadelta",
        rules={"keras": ref.adadelta, "torch": ref.adadelta},
        initial_state=_zeros("eg", "edx"),
        cases=[
            ({}, BOTH),
            ({"weight_decay": 0.05, "clipvalue": 0.2}, BOTH),
        ],
        golden=[
            ({"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6},
             [0.9946180374, -2.0008783722, 0.4949357572],
             [0.9946180374, -2.0008783722, 0.4949357572]),
        ],
        torch_name="Adadelta", keras_name="Adadelta",
        torch_cases=[
            {},
            {"rho": 0.5, "weight_decay": 0.05, "maximize": True},
        ],
    ),
    OptimizerInfo(
        "Lion",
        rules={"keras": ref.lion_keras},
        initial_state=_zeros("m"),
        cases=[
            ({}, KERAS),
            ({"beta_1": 0.5, "weight_decay": 0.1}, KERAS),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9900000000, -2.0100000000, 0.4900000000], None),
        ],
        keras_name="Lion",
    ),
    OptimizerInfo(
        "Lamb",
        rules={"keras": ref.lamb_keras},
        initial_state=_zeros("m", "v"),
        cases=[
            ({}, KERAS),
            ({"weight_decay": 0.05, "clipvalue": 0.3}, KERAS),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.9653291988, -2.0011966308, 0.4514189029], None),
        ],
        keras_name="Lamb",
    ),
    OptimizerInfo(
        "Ftrl",
        rules={"keras": ref.ftrl_keras},
        initial_state=lambda hp, w: {"n": np.full_like(w, hp["initial_accumulator_value"]),
                                     "z": np.zeros_like(w)},
        cases=[
            ({}, KERAS),
            ({"l1_regularization_strength": 0.01, "l2_regularization_strength": 0.02,
              "l2_shrinkage_regularization_strength": 0.01, "beta": 0.1}, KERAS),
            ({"learning_rate_power": -0.3, "initial_accumulator_value": 0.5}, KERAS),
            ({"learning_rate_power": 0.0, "l1_regularization_strength": 0.001}, KERAS),
        ],
        golden=[
            ({"learning_rate": 0.01},
             [0.0398915341, -0.3116492331, 0.1265668892], None),
        ],
        keras_name="Ftrl",
    ),
    OptimizerInfo(
        "RAdam",
        rules={"torch": ref.radam_torch},
        initial_state=_zeros("m", "v"),
        cases=[
            ({}, TORCH),
            ({"beta_2": 0.9, "weight_decay": 0.05}, TORCH),
            ({"weight_decay": 0.05, "decoupled_weight_decay": True}, TORCH),
        ],
        golden_missing={"torch": "no torch 2.13 run has been recorded for it yet "
                                 "(test-audit-2026-12 A.5); test_torch_compat compares it "
                                 "with torch.optim.RAdam where torch is installed"},
        torch_name="RAdam",
        torch_cases=[
            {},
            {"beta_2": 0.9, "weight_decay": 0.05},
            {"weight_decay": 0.05, "decoupled_weight_decay": True},
        ],
    ),
    OptimizerInfo(
        "Rprop",
        rules={"torch": ref.rprop_torch},
        initial_state=_zeros("prev", "step_size"),
        cases=[
            ({}, TORCH),
            ({"etaminus": 0.3, "etaplus": 1.5, "step_size_min": 1e-4, "step_size_max": 0.2,
              "maximize": True}, TORCH),
            ({"weight_decay": 0.05, "clipvalue": 0.3}, TORCH),
        ],
        # torch 2.13.0+cpu (torch.optim.Rprop, single-tensor path), float64
        golden=[
            ({"learning_rate": 0.01},
             None,
             [0.9850000000, -1.9900000000, 0.4780000000]),
            ({"learning_rate": 0.05, "etaminus": 0.3, "etaplus": 1.5, "step_size_min": 0.0001,
              "step_size_max": 0.2, "maximize": True},
             None,
             [1.0650000000, -2.0500000000, 0.6250000000]),
        ],
        torch_name="Rprop",
        torch_cases=[{}],
        # lr only starts the step sizes, which then grow to step_size_min (as in torch)
        frozen={"step_size_min": 0.0},
    ),
    OptimizerInfo(
        "ASGD",
        rules={"torch": ref.asgd_torch},
        initial_state=lambda hp, w: {"ax": np.zeros_like(w), "eta": 0.0},
        cases=[
            ({}, TORCH),
            # t0 small: the average moves (mu < 1) within the run
            ({"lambd": 0.05, "alpha": 0.6, "t0": 2.0}, TORCH),
            ({"lambd": 0.01, "t0": 0.0, "weight_decay": 0.05, "maximize": True}, TORCH),
        ],
        # tests/make_golden.py: torch 2.13.0+cpu (torch.optim.ASGD, single-tensor path),
        # default dtype float64
        golden=[
            ({"learning_rate": 0.01},
             None,
             [0.997497004130, -2.001993997011, 0.494998509753]),
            ({"learning_rate": 0.05, "lambd": 0.1, "alpha": 0.5, "t0": 1.0,
              "weight_decay": 0.1},
             None,
             [0.957989771232, -1.950694042477, 0.460644849243]),
        ],
        torch_name="ASGD",
        torch_cases=[
            {},
            {"lambd": 0.05, "alpha": 0.6, "t0": 3.0, "weight_decay": 0.03},
            {"lambd": 0.01, "t0": 0.0, "maximize": True},
        ],
    ),
    OptimizerInfo(
        "ScheduleFreeAdamW",
        rules={"keras": ref.sfadamw_keras, "torch": ref.sfadamw_torch},
        initial_state=lambda hp, w: {"z": w.copy(), "v": np.zeros_like(w)},
        shared_clock=True,
        per_update={"torch": ref.schedule_free_weights, "keras": ref.schedule_free_keras_weights},
        coupled_decay_in_rule=TORCH,
        cases=[
            ({}, BOTH),
            ({"warmup_steps": 5, "weight_decay": 0.05}, BOTH),
            # beta_1 0.4: the other form of torch's lerp in eval
            ({"beta_1": 0.4, "beta_2": 0.9, "epsilon": 1e-3, "r": 0.5, "weight_lr_power": 1.0},
             TORCH),
            ({"weight_decay": 0.05, "decoupled_weight_decay": True, "maximize": True}, TORCH),
        ],
        # tests/make_golden.py: schedulefree 1.4.1 (AdamWScheduleFree, foreach=False) and
        # Keras 3.15 (torch backend, floatx float64)
        golden=[
            ({"learning_rate": 0.01},
             [0.989178917996, -1.998431475402, 0.484658145316],
             [0.988382151006, -1.998853049147, 0.484589774280]),
            ({"learning_rate": 0.01, "warmup_steps": 2, "weight_decay": 0.1},
             [0.993182140661, -2.001432924414, 0.489166643483],
             [0.991241339892, -2.002586523550, 0.487048870455]),
        ],
        torch_name="AdamWScheduleFree", keras_name="ScheduleFreeAdamW",
        torch_module="schedulefree",
        torch_cases=[
            {},
            {"warmup_steps": 4, "weight_decay": 0.05, "r": 0.5, "weight_lr_power": 1.0,
             "beta_1": 0.8},
        ],
    ),
    OptimizerInfo(
        "ScheduleFreeSGD",
        rules={"torch": ref.sfsgd_torch},
        initial_state=lambda hp, w: {"z": w.copy()},
        shared_clock=True,
        per_update={"torch": ref.schedule_free_weights},
        cases=[
            ({}, TORCH),
            ({"warmup_steps": 3, "momentum": 0.5, "weight_decay": 0.05}, TORCH),
            ({"r": 1.0, "weight_lr_power": 0.0, "maximize": True}, TORCH),
        ],
        # tests/make_golden.py: schedulefree 1.4.1 (SGDScheduleFree, foreach=False)
        golden=[
            ({"learning_rate": 0.1},
             None,
             [0.985500000000, -2.008000000000, 0.453000000000]),
            ({"learning_rate": 0.1, "momentum": 0.5, "warmup_steps": 2, "weight_decay": 0.1},
             None,
             [0.963809627778, -1.984646477778, 0.453573584722]),
        ],
        torch_name="SGDScheduleFree",
        torch_module="schedulefree",
        torch_cases=[
            {},
            {"warmup_steps": 4, "weight_decay": 0.05, "momentum": 0.6, "r": 1.0},
        ],
    ),
    OptimizerInfo(
        "SparseAdam",
        rules={"torch": ref.sparse_adam_torch},
        initial_state=_zeros("m", "v"),
        cases=[
            ({}, TORCH),
            ({"beta_1": 0.0, "beta_2": 0.9, "epsilon": 1e-3, "maximize": True}, TORCH),
            ({"weight_decay": 0.05, "clipvalue": 0.3}, TORCH),
        ],
        # torch 2.13.0+cpu, float64, each grad as a sparse tensor naming every element
        # (tests/golden_sparse_adam.py)
        golden=recorded_golden("sparse_adam_golden.json"),
        torch_name="SparseAdam",
        torch_cases=[{}, {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3, "maximize": True}],
        torch_sparse=True,
    ),
    OptimizerInfo(
        "Adafactor",
        rules={"keras": ref.adafactor_keras, "torch": ref.adafactor_torch},
        initial_state=_adafactor_state,
        decoupled_always=True,
        cases=[
            ({}, BOTH),
            ({"weight_decay": 0.05, "clipvalue": 0.3}, BOTH),
            ({"beta_2_decay": -0.5, "epsilon_1": 1e-6, "epsilon_2": 1e-2,
              "clip_threshold": 0.5}, KERAS),
            ({"eps": (1e-5, 1e-2), "clip_threshold": 1.5, "maximize": True}, TORCH),
        ],
        # tests/golden_anchors.py (torch 2.13, Keras 3.15 with float64 kept; more rows,
        # on matrices, in tests/data/golden_anchors.json)
        golden=[
            ({"learning_rate": 0.01},
             [0.9767666380, -2.0026632675, 0.4791978932],
             [0.9767666380, -2.0026632675, 0.4791978932]),
        ],
        torch_name="Adafactor", keras_name="Adafactor", keras_float64_reductions=True,
        torch_renames={"clip_threshold": "d", "beta_2_decay": "beta2_decay"},
        torch_cases=[
            {},
            {"weight_decay": 0.05, "eps": (1e-5, 1e-2), "clip_threshold": 1.5,
             "maximize": True},
        ],
    ),
    OptimizerInfo(
        "Muon",
        rules={"keras": ref.muon_keras, "torch": ref.muon_torch},
        initial_state=_muon_state,
        decoupled_always=True,
        shape=_matrix,
        cases=[
            ({}, BOTH),
            ({"nesterov": False, "weight_decay": 0.05, "clipvalue": 0.3}, BOTH),
            ({"momentum": 0.5, "ns_steps": 3, "muon_a": 2.0, "muon_b": -1.5, "muon_c": 0.5,
              "rms_rate": None}, KERAS),
            ({"ns_coefficients": (2.0, -1.5, 0.5), "adjust_lr_fn": "match_rms_adamw",
              "epsilon": 1e-3, "maximize": True}, TORCH),
        ],
        # tests/golden_gen.py on GOLDEN_W0 as a 3 x 1 matrix (param_shape); torch's
        # Newton-Schulz in float64 (torch_muon_float64), Keras with float64 kept
        golden=[
            ({"learning_rate": 0.01},
             [0.9974496174, -2.0006479931, 0.4946363832],
             [0.9848571711, -1.9984516438, 0.4720114526]),
            ({"learning_rate": 0.01, "nesterov": False, "weight_decay": 0.0},
             [0.9981230735, -2.0003928812, 0.4938147170],
             [0.9906153702, -2.0019644063, 0.4690735941]),
        ],
        torch_name="Muon", keras_name="Muon", keras_float64_reductions=True,
        torch_context=torch_muon_float64,
        # a matrix takes the Muon step, a vector Keras's AdamW step
        claim_shapes={"keras": [(5, 1), (3,)]},
        shape_conventions=TORCH,
        torch_renames={"epsilon": "eps"},
        torch_cases=[
            {},
            {"nesterov": False, "weight_decay": 0.05, "momentum": 0.5,
             "ns_coefficients": (2.0, -1.5, 0.5), "adjust_lr_fn": "match_rms_adamw"},
        ],
    ),
]

# Cross-option cases: the optimizer-wide options (clipping, EMA, accumulation,
# skip_nonfinite) on a few optimizers; every optimizer meets every option in
# tests/test_options.py.
OPTION_CASES = [
    ("Adam", {"clipnorm": 0.5}, BOTH),
    ("SGD", {"momentum": 0.9, "global_clipnorm": 1.0, "maximize": True}, BOTH),
    ("RMSprop", {"use_ema": True, "ema_momentum": 0.9, "ema_overwrite_frequency": 5}, BOTH),
    # epsilon 1e-3: Adam's first update is nearly sign((g1+g2+g3)/3), ill-conditioned in
    # float32 where the sum cancels
    ("Adam", {"gradient_accumulation_steps": 3, "weight_decay": 0.05, "epsilon": 1e-3}, BOTH),
    ("SGD", {"momentum": 0.9, "gradient_accumulation_steps": 2}, BOTH),
    ("Nadam", {"gradient_accumulation_steps": 2, "use_ema": True}, BOTH),
    ("Lamb", {"global_clipnorm": 2.0}, KERAS),
    ("Adagrad", {"skip_nonfinite": True, "clipnorm": 1.0}, BOTH),
]

_BY_NAME = {entry.name: entry for entry in optim_db}


def info(name):
    """The entry of the optimizer ``name``; a clear error for one that has none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"{name} has no OptimizerInfo in tests/optim_db.py: add one with its rules "
            f"(reference functions in tests/reference.py, one per convention), initial_state, "
            f"cases, golden rows (or golden_missing), stateful kwargs and anchor names"
        ) from None


def param_shape(name, shape):
    """The shape a suite's param of ``shape`` takes for optimizer ``name``
    (its entry's ``shape``; the same for most)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    entry = _BY_NAME.get(name)
    return tuple(entry.shape(shape)) if entry else shape


def name_conventions():
    """``(name, convention)`` for every entry and each convention it has, by name."""
    return [(entry.name, conv) for entry in sorted(optim_db, key=lambda e: e.name)
            for conv in entry.conventions]


def all_cases():
    """``(name, kwargs, conventions)``: every entry's cases, then :data:`OPTION_CASES`."""
    return [(entry.name, kw, convs) for entry in optim_db for kw, convs in entry.cases] + \
        list(OPTION_CASES)


def case_id(case, convention):
    name, kwargs, _ = case
    args = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{name}({args})-{convention}"


def expand():
    """(case, convention) pairs of :func:`all_cases`, with readable ids."""
    out = []
    for case in all_cases():
        for conv in case[2]:
            out.append(((case, conv), case_id(case, conv)))
    return out
