"""The base class: construction, param groups, the step, configuration.

An optimizer class declares its kernel, its hyper-parameter table and its
state (see :mod:`fastopt.optimizers`); this class turns the declaration into
checked param groups, state arrays and one engine
(:class:`fastopt._core.Stepper`) that runs the whole step in compiled code.
Per step, Python only takes the lock and hands the grads down; schedules are
called by the engine, at the step the convention says.
"""
from __future__ import annotations

import operator
import os
import re
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Tuple, TypeVar

import numpy as np

from . import _compact, _core, _statedict, _threads
from ._hyper import (CONVENTIONS, DEFAULT, HP, NONNEG, ParamGroup, check_range, check_value,
                     group_names, is_schedule, split_param_groups, step_callable)
from ._options import Options

if TYPE_CHECKING:
    from ._types import Array, Grads, HyperValue, LoadPolicy, Params

_T = TypeVar("_T", bound="Optimizer")

_GLOBAL_ALIASES = {"lr": "learning_rate", "eps": "epsilon"}
#: Every optimizer class defined in fastopt, by name.
REGISTRY: "dict[str, type[Optimizer]]" = {}

# Optimizers (and sharded ones) whose locks a forked child must replace: a lock
# held by another thread at the fork would stay held forever in the child.
_live_optimizers: "weakref.WeakSet[object]" = weakref.WeakSet()


_known_cache: "list[object]" = [None, frozenset()]


def _known_names():
    """Every hyper-parameter name and alias of any optimizer: an attribute of
    one of these names that an optimizer lacks is refused, not created."""
    if _known_cache[0] != len(REGISTRY):
        names = set(_GLOBAL_ALIASES)
        for cls in REGISTRY.values():
            names.update(cls._attribute_names)
        _known_cache[:] = [len(REGISTRY), frozenset(names)]
    return _known_cache[1]


class _HyperAttribute:
    """``opt.<hyper-parameter>``: the optimizer-wide value (a float, bool or
    schedule); assigning it is checked like the keyword and applies from the
    next step to every param group that does not set its own.  Made from the
    class's ``hyper`` table for every name and alias."""

    def __init__(self, key, names=None):
        self.key = key              # the name as given
        self.names = names          # a tuple alias: the names it stands for

    def __set_name__(self, owner, name):
        self.key = name

    def __get__(self, opt, cls=None):
        if opt is None:
            return self
        if self.names is not None:
            return tuple(opt._hyper_value(n, self.key) for n in self.names)
        return opt._hyper_value(opt._canonical(self.key), self.key)

    def __set__(self, opt, value):
        for name in self.names or (opt._canonical(self.key),):
            opt._hyper_value(name, self.key)     # AttributeError for another convention's
        opt._set_hyper({self.key: value})


def _tuple_parts(key, value, names, form, where):
    try:
        parts = None if isinstance(value, (str, bytes)) else tuple(value)
    except TypeError:
        parts = None
    if parts is None or len(parts) != len(names):
        raise ValueError(f"{where}{key} must be a tuple {form} of {len(names)} values (for "
                         f"{', '.join(names)}); got {value!r}")
    return parts


def _check_param(p, i):
    mod = type(p).__module__.split(".")[0]
    if mod == "torch" and not isinstance(p, np.ndarray):
        raise TypeError(f"params[{i}]: a {type(p).__module__}.{type(p).__name__}; fastopt "
                        f"updates NumPy arrays in place. Pass p.detach().numpy() (for a CPU "
                        f"tensor: a view sharing the tensor's memory, so the update reaches "
                        f"the model) and the grads as p.grad.numpy()")
    _core.check_param(p, i)


def _renew_locks_after_fork():
    for opt in list(_live_optimizers):
        opt._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_after_fork)


def pairs_to_grads(grads_and_vars: Iterable[Tuple[Optional[Array], Array]],
                   params: "list[Array]", index: "Mapping[int, int]"
                   ) -> "Tuple[list[Optional[Array]], int]":
    """Keras's ``(grad, param)`` pairs as a grads list in the order of
    ``params`` (``index``: ``id(p) -> i``) and the number of pairs; a pair
    that is not one, names an unknown param or names one twice is refused."""
    grads: "list[Optional[Array]]" = [None] * len(params)
    pairs = 0
    for k, pair in enumerate(grads_and_vars):
        pairs += 1
        try:
            g, p = pair
        except (TypeError, ValueError):
            raise TypeError(f"apply_gradients expects (grad, param) pairs; item {k} is "
                            f"{type(pair).__name__}") from None
        i = index.get(id(p))
        if i is None or params[i] is not p:
            raise ValueError(f"apply_gradients: pair {k} names a parameter this optimizer "
                             f"was not built with; pass the same array objects as at "
                             f"construction")
        if grads[i] is not None:
            raise ValueError(f"apply_gradients: params[{i}] appears twice")
        grads[i] = g
    return grads, pairs



def _construction_only(name: str, read: Callable[[Any], Any], decides: str) -> property:
    """A setting read as an attribute and set at construction only (an
    assignment would otherwise make an attribute that does nothing)."""
    def refuse(opt: Any, value: Any) -> None:
        raise AttributeError(f"{name} is set at construction only ({decides}): build a "
                             f"new optimizer with {name}={value!r}")
    return property(read, refuse, doc=f"The {name} given at construction ({decides}).")


class Optimizer(Options):
    """Base class: parameter groups, conventions, schedules, state, checkpoints.

    A subclass declares ``kernel`` (a file in ``csrc/kernels``), ``hyper`` (its
    table of :class:`fastopt._hyper.HP`, per-convention defaults, ranges and
    aliases, in the order the kernel reads them) and ``variables`` (the names
    of its state arrays); optionally ``state_names(group)`` when the arrays
    depend on a setting, ``initial`` (state arrays filled from a
    hyper-parameter, or copied from the parameter with ``"param"``, instead of
    zeros), ``check(hp, where)`` for a rule across fields and
    ``aux_state`` (the name its kernel's host values have in a state dict).

    Options every optimizer takes (keyword-only), applied per update in
    Keras 3's order: (1) ``skip_nonfinite``, (2) gradient accumulation,
    (3) clipping, (4) weight decay, (5) the update, (6) the moving average.

    Parameters
    ----------
    convention : {"keras", "torch"}
        Whose formulas and defaults to reproduce (Keras 3 or torch.optim).
    weight_decay : float or schedule
        Keras: decoupled ``w <- w - lr*wd*w`` before the update.  torch: coupled
        L2 ``g <- g + wd*w`` unless ``decoupled_weight_decay=True``.  See
        :meth:`exclude_from_weight_decay`.
    decoupled_weight_decay : bool
        Force decoupled (True) or coupled L2 (False) weight decay.
    maximize : bool
        Ascend instead of descend (gradients negated; torch's option).
    clipnorm : float
        Per parameter: ``g <- g * clipnorm / max(||g||_2, clipnorm)``.
    global_clipnorm : float
        ``g_i <- g_i * c * min(1/||G||, 1/c)`` with ``||G||`` the norm over all
        grads of the step (one deterministic reduction); a non-finite ``||G||``
        turns every grad into NaN, as in Keras.
    clipvalue : float
        ``g <- clip(g, -clipvalue, clipvalue)``.  At most one of the three clips.
    use_ema, ema_momentum, ema_overwrite_frequency : bool, float, int
        Keep ``avg <- m*avg + (1-m)*w`` of every parameter after each step
        (``m = 0`` until the first update has been applied, so the average
        starts as a copy); every ``ema_overwrite_frequency`` updates copy the
        averages into the parameters; :meth:`finalize` copies them at the end.
    use_swa, swa_start, swa_freq, swa_decay : bool, int, int, float or None
        Weight averaging in torch ``swa_utils``' arithmetic: after the ``u``-th
        update (``u`` counted from 1) with ``u > swa_start`` and
        ``u % swa_freq == 0`` (torchcontrib's ``SWA`` clock) the averages are
        updated as ``AveragedModel.update_parameters`` does: a copy the first
        time, then ``avg + (w - avg)/(n + 1)`` (``swa_decay=None``, uniform,
        ``n`` averaged so far) or ``lerp(avg, w, 1 - swa_decay)`` (torch's
        ``get_ema_multi_avg_fn``).  :meth:`swap_averages` swaps parameters and
        averages (to evaluate with the averages, and back); :attr:`n_averaged`
        counts the averaged updates.  Not with ``use_ema``.
    gradient_accumulation_steps : int
        ``k >= 2``: calls accumulate ``acc += g``; every k-th call applies
        ``(g + acc)/k`` and resets.  ``iterations`` (bias corrections, EMA) counts
        updates.  Schedules are evaluated at the number of calls in the keras
        convention (Keras 3 does this) and at the number of updates in the
        torch convention (a torch loop steps its scheduler per update).
    skip_nonfinite : bool
        A step whose grads hold NaN or Inf changes nothing (parameters, state,
        counters) and is counted in ``skipped_steps``.
    num_threads : int
        Threads for this optimizer.  Default: as :func:`fastopt.set_num_threads`
        set, or else one thread or :func:`fastopt.get_num_threads`, whichever
        has been giving the shorter period between this optimizer's steps.

    Every option is an attribute of the same name.  Assigning one between
    steps is validated like the keyword and applies from the next step;
    ``use_ema`` and ``gradient_accumulation_steps`` decide which arrays the
    optimizer keeps and can only be given at construction.

    Notes
    -----
    Before its own rule every optimizer transforms, per parameter ``w`` with
    gradient ``g``: ``g <- -g`` (``maximize``), the clip, then weight decay
    (decoupled ``w <- w*(1 - lr*wd)`` or coupled ``g <- g + wd*w``).
    Scheduled hyper-parameters are evaluated at ``iterations`` (the first
    update sees step 0).

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> W, b = np.ones((2, 2)), np.zeros(2)
    >>> opt = fo.SGD([{"params": [W], "learning_rate": 0.1},
    ...               {"params": [b], "learning_rate": 0.5}])
    >>> opt.apply_gradients([(np.ones(2), b)])     # Keras style; W is skipped
    >>> b, opt.iterations
    (array([-0.5, -0.5]), 1)
    >>> sd = opt.state_dict()
    >>> opt.step([np.ones((2, 2)), np.ones(2)])     # torch style: grads in order
    >>> W
    array([[0.9, 0.9],
           [0.9, 0.9]])
    >>> opt.load_state_dict(sd); opt.iterations    # counters and state, not weights
    1
    """

    # every hyper-parameter and alias of a class is an attribute (see _HyperAttribute);
    # these are the ones all have, for type checkers (each class lists its own)
    learning_rate: HyperValue
    lr: HyperValue
    weight_decay: HyperValue

    kernel: "str | None" = None
    hyper: "dict[str, HP]" = {}
    variables: "tuple[str, ...]" = ()
    initial: "dict[str, str]" = {}
    aux_state: "str | None" = None
    #: None, or ``host_stage(stepped, sums)``: run by the step between the
    #: kernel's reduction pass and its finish, with the indices of the tensors
    #: stepped and their sums (see ``Stepper``); it may rewrite the sums and the
    #: scratch arrays (:meth:`scratch_layout`).  Muon's Newton-Schulz iteration.
    host_stage: Any = None
    #: Float hyper-parameters that also take names, ``{key: {name: value}}``
    #: (Muon's ``adjust_lr_fn``); the class maps them in ``_canonical_items``.
    named_values: "Mapping[str, Mapping[Any, float]]" = {}
    #: False for an optimizer whose update of an element depends on other elements
    #: (Lamb's per-tensor trust ratio): it cannot run on a flat shard of a tensor.
    elementwise = True
    #: True when weight decay can only be decoupled (AdamW).
    decoupled_only = False
    #: State arrays that ``state_dtype`` may hold in bfloat16, float16 or int8,
    #: each "signed" or "unsigned" (int8 codes of values >= 0): moments and
    #: accumulators, not copies of the weights (see fastopt/_compact.py).
    compact_state: "Mapping[str, str]" = {}
    #: True when bfloat16/float16 params are taken (a single elementwise pass).
    compact_params = False
    #: Why a class takes neither, for its messages.
    compact_reason: "str | None" = None
    #: Methods that rewrite the parameters elementwise from the state (no
    #: arguments): a ShardedOptimizer runs them on every shard and gathers.
    param_methods: "tuple[str, ...]" = ("swap_averages",)
    #: True when the algorithm counts steps per optimizer in every convention
    #: (schedule-free's ``k``), not per parameter as the torch convention does.
    shared_clock = False
    #: Keywords that give several hyper-parameters at once: ``{"betas":
    #: (("beta_1", "beta_2"), "(b1, b2)")}``.
    tuple_aliases: "Mapping[str, tuple[tuple[str, ...], str]]" = {}
    #: Conventions in which ``check`` has anything to say about scheduled values.
    check_conventions: "tuple[str, ...]" = ()
    conventions: "tuple[str, ...]" = ()
    _hp_order: "tuple[str, ...]" = ()
    _attribute_names: "frozenset[str]" = frozenset()
    # what an instance holds (for type checkers)
    param_groups: list[ParamGroup]
    _defaults: dict[str, Any]
    _overrides: list[dict[str, Any]]
    _params: list[Any]
    _param_names: list[Optional[str]]
    _state: list[list[Any]]
    _scratch: list[list[Any]]
    _group_state: list[Any]
    _index: dict[int, int]
    _ema: Optional[list[Any]]
    _swa: Optional[list[Any]]
    _accum: Optional[list[Any]]
    _wd_rule: tuple[Any, Any]
    _wd_excluded: frozenset[int]
    _engine: Any
    _stepper: Any

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "hyper" in cls.__dict__:
            cls.hyper = dict(cls.hyper)
            cls.hyper.setdefault("weight_decay", HP(0.0, check=NONNEG, kernel=False))
        cls._install_attributes()
        if cls.kernel is None:
            return
        cls.conventions = tuple(c for c in CONVENTIONS
                                if c in cls.hyper["learning_rate"].defaults)
        declared = tuple(k for k, h in cls.hyper.items() if h.kernel)
        reads = _core.kernel_hp(cls.kernel)
        if declared != reads:
            raise TypeError(f"{cls.__name__} declares the hyper-parameters {list(declared)} "
                            f"for kernel {cls.kernel!r}, whose scalar function "
                            f"(csrc/kernels/{cls.kernel}.c, FO_KERNEL_HP) reads "
                            f"{list(reads)}: make the two lists the same, in the same order")
        # the values a group hands the engine: the kernel's, then the engine's own
        cls._hp_order = reads + ("weight_decay",)
        if cls.__module__.startswith("fastopt."):
            REGISTRY[cls.__name__] = cls

    @classmethod
    def _install_attributes(cls):
        """An attribute per hyper-parameter and alias (see :class:`_HyperAttribute`)."""
        names = {k: None for k in cls.hyper}
        for alias, name in _GLOBAL_ALIASES.items():
            if name in cls.hyper:
                names[alias] = None
        for h in cls.hyper.values():
            names.update(dict.fromkeys(h.aliases))
        for key, (parts, _) in cls.tuple_aliases.items():
            names[key] = tuple(parts)
        for name, parts in names.items():
            for klass in cls.__mro__:
                held = klass.__dict__.get(name)
                if held is not None and not isinstance(held, _HyperAttribute):
                    raise TypeError(f"{cls.__name__}: the hyper-parameter (or alias) {name!r} "
                                    f"would hide {klass.__name__}.{name}; rename it")
            if not isinstance(cls.__dict__.get(name), _HyperAttribute):
                setattr(cls, name, _HyperAttribute(name, parts))
        cls._attribute_names = frozenset(names)

    @classmethod
    def defaults(cls, convention):
        """The hyper-parameters and their defaults in ``convention``."""
        return {k: h.defaults[convention] for k, h in cls.hyper.items()
                if convention in h.defaults}

    def state_names(self, group):
        """Names of the state arrays a group with these settings uses."""
        return self.variables

    def state_layout(self, group, p):
        """``(name, shape)`` of each state array param ``p`` of ``group`` keeps
        (the names of :meth:`state_names`, each of ``p``'s shape, unless the
        kernel keeps factored state)."""
        return [(n, p.shape) for n in self.state_names(group)]

    def scratch_layout(self, group, p):
        """``(name, shape)`` of each scratch array bound to the kernel after
        param ``p``'s state arrays: rewritten every step before it is read,
        so it is no part of the state (state dicts and checkpoints leave it
        out).  None by default; Muon's holds the Newton-Schulz matrix."""
        return []

    def check_param(self, p, i):
        """The class's rules on one parameter (``params[i]``), at construction
        and in ``add_param_group`` (Muon in the torch convention takes matrices only)."""

    def check(self, hp, where):
        """Rules across hyper-parameters (constants, and scheduled values per step)."""

    def __init__(self, params: Params, *, convention: str = "keras", weight_decay: Any = None,
                 decoupled_weight_decay: Optional[bool] = None, maximize: bool = False,
                 clipvalue: Optional[float] = None, num_threads: Optional[int] = None,
                 name: Optional[str] = None, clipnorm: Optional[float] = None,
                 global_clipnorm: Optional[float] = None, use_ema: bool = False,
                 ema_momentum: float = 0.99, ema_overwrite_frequency: Optional[int] = None,
                 gradient_accumulation_steps: Optional[int] = None,
                 skip_nonfinite: bool = False, use_swa: bool = False, swa_start: int = 0,
                 swa_freq: int = 1, swa_decay: Optional[float] = None,
                 state_dtype: Optional[str] = None, min_8bit_size: int = 4096, seed: int = 0,
                 rounding: Optional[str] = None, master_weights: bool = False,
                 _layout: "Optional[Tuple[list[int], list[int], list[int]]]" = None,
                 **hyper: Any) -> None:
        cls = type(self)
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be 'keras' or 'torch'; got {convention!r}")
        if convention not in cls.conventions:
            (only,) = cls.conventions
            raise ValueError(f"{cls.__name__} exists in {CONVENTIONS[only].library} only, so it "
                             f"has no {convention!r} convention; use convention={only!r}")
        self._convention = convention
        self._conv = conv = CONVENTIONS[convention]
        self.name = name or cls.__name__.lower()
        defaults = cls.defaults(convention)
        hyper["weight_decay"] = weight_decay
        passed = [(k, v) for k, v in hyper.items() if v is not DEFAULT and
                  (v is not None or self._spec(k).none_refused)]
        defaults.update(self._canonical_items(passed, "", f"{cls.__name__}()"))
        if decoupled_weight_decay is None:
            decoupled_weight_decay = conv.decoupled_weight_decay or cls.decoupled_only
        # step, state_dict and load_state_dict are serialised: two threads stepping one
        # optimizer apply their updates one after the other, and a checkpoint is never torn
        self._lock = threading.RLock()
        _live_optimizers.add(self)
        self.decoupled_weight_decay = decoupled_weight_decay
        self.maximize = maximize
        self.num_threads = num_threads
        self._set_options(clipvalue, clipnorm, global_clipnorm, use_ema=use_ema,
                          ema_momentum=ema_momentum,
                          ema_overwrite_frequency=ema_overwrite_frequency,
                          gradient_accumulation_steps=gradient_accumulation_steps,
                          skip_nonfinite=skip_nonfinite, use_swa=use_swa, swa_start=swa_start,
                          swa_freq=swa_freq, swa_decay=swa_decay)
        self._check_group(defaults, "")
        self._storage = _compact.Storage(cls, state_dtype, min_8bit_size, seed, rounding,
                                         master_weights)
        self._defaults = defaults
        given: Any = params if isinstance(params, np.ndarray) else list(params)
        if isinstance(given, list) and not given:
            raise ValueError(f"{cls.__name__}() got an empty parameter list: pass the arrays "
                             f"to optimize (torch.optim refuses an empty list too)")
        groups = split_param_groups(given)
        self.param_groups, self._overrides = [], []
        self._params, self._param_names, self._state, self._group_state = [], [], [], []
        self._scratch = []
        self._group_dtypes: "list[Optional[str]]" = []
        self._masters: "list[Optional[np.ndarray]]" = []
        self._formats: "list[list[int]]" = []
        #: per param, its index in the whole model, its first element there and
        #: the whole param's size (a ShardedOptimizer's pieces): the rounding
        #: draws, int8 blocks and min_8bit_size follow the whole param
        self._layout = _layout
        self._ema = [] if self._opt_use_ema else None
        self._swa = [] if self._opt_use_swa else None
        self._accum = [] if self._opt_gradient_accumulation_steps else None
        self._wd_rule = ((), ())
        self._wd_excluded = frozenset()
        self._stepper = None
        self._add_groups(groups)

    def _new_group(self, gi, plist, over, start):
        """A checked param group (not yet added) from its params and overrides;
        its params are numbered from ``start`` in messages."""
        where = f"param group {gi}: "
        over = dict(over)
        names = group_names(over, len(plist), gi)
        sdtype = _compact.check_state_dtype(over.pop("state_dtype", None), where)
        over = self._canonical_items(over.items(), where, f"param group {gi}")
        group = ParamGroup(self._defaults)
        group.update(over)
        self._check_group(group, where)
        group["params"] = plist
        for k, p in enumerate(plist):
            _check_param(p, start + k)
            self._storage.check_param(self, p, start + k, sdtype)
            self.check_param(p, start + k)
        self._storage.check_names(type(self), self.state_names(group), sdtype, where)
        return group, over, names, sdtype

    def _add_groups(self, groups):
        """Check the new groups, make their state arrays and bind everything
        again (a new engine and stepper, counters carried over); nothing
        changes unless all of it succeeds."""
        n0, gi0 = len(self._params), len(self.param_groups)
        made, start = [], n0
        for k, (plist, over) in enumerate(groups):
            made.append(self._new_group(gi0 + k, plist, over, start))
            start += len(plist)
        all_groups = self.param_groups + [g for g, _, _, _ in made]
        cls, conv, storage = type(self), self._conv, self._storage
        if self._layout is None:     # a shard's pieces: checked over the whole model
            storage.check_all(cls, self._params + [p for g, _, _, _ in made for p in g["params"]])

        def allocate():
            params, names = list(self._params), list(self._param_names)
            state, group_state = list(self._state), list(self._group_state)
            scratch, masters = list(self._scratch), list(self._masters)
            formats = list(self._formats)
            for group, _, pnames, sdtype in made:
                params.extend(group["params"])
                names.extend(pnames)
                snames = self.state_names(group)
                group_state.append((dict(group, params=list(group["params"])), snames))
                for p in group["params"]:
                    layout = self.state_layout(group, p)
                    size = p.size if self._layout is None else self._layout[2][len(formats)]
                    fmts = storage.formats(cls, [n for n, _ in layout], sdtype, p, size)
                    formats.append(fmts)
                    state.append([self._initial_array(p, group, n, shape, f)
                                  for (n, shape), f in zip(layout, fmts)])
                    scratch.append([np.zeros(shape, dtype=p.dtype)
                                    for _, shape in self.scratch_layout(group, p)])
                    half = storage.master_weights and _compact.half_name(p.dtype)
                    masters.append(p.astype(np.float32) if half else None)
            index = range(len(params)) if self._layout is None else self._layout[0]
            base = [0] * len(params) if self._layout is None else self._layout[1]
            # refuses overlapping params
            engine = _core.Engine(cls.kernel, params, [st + sc for st, sc in zip(state, scratch)],
                                  formats=[f + [_core.FMT_NATIVE] * len(sc)
                                           for f, sc in zip(formats, scratch)],
                                  masters=masters,
                                  keys=[_core.rng_key(storage.seed, index[i])
                                        for i in range(len(params))],
                                  bases=list(base[:len(params)]),
                                  rounding=[storage.param_rounding()] * len(params))
            new = params[n0:]
            # copies, so finalize() before any step leaves the weights as they are
            ema = None if self._ema is None else self._ema + [p.copy() for p in new]
            swa = None if self._swa is None else self._swa + [p.copy() for p in new]
            accum = None if self._accum is None else self._accum + [np.zeros_like(p) for p in new]
            averager = None
            if ema is not None:
                averager = _core.Engine("ema", params, [[a] for a in ema])
            elif swa is not None:
                averager = _core.Engine("average", params, [[a] for a in swa])
            return (params, names, state, group_state, engine, ema, swa, accum, averager, scratch,
                    formats, masters)

        try:
            built = allocate()
        except MemoryError:
            built = None
        if built is None:
            # raised outside the handler: nothing refers to what was allocated
            new_params = [p for g, _, _, _ in made for p in g["params"]]
            need = sum(len(self.state_names(g)) * p.nbytes
                       for g, _, _, _ in made for p in g["params"])
            need += sum(p.nbytes for p in new_params) * (
                bool(self._opt_use_ema) + bool(self._opt_use_swa) +
                bool(self._opt_gradient_accumulation_steps))
            raise MemoryError(f"{cls.__name__}: its state for {len(new_params)} parameters "
                              f"needs {need} bytes ({need / 2 ** 20:.1f} MiB), which could not "
                              f"be allocated; nothing was built and the parameters are as they "
                              f"were. Free memory, or use fewer state arrays (options) or "
                              f"ShardedOptimizer to split the state over processes")
        (params, names, state, group_state, engine, ema, swa, accum, averager, scratch,
         formats, masters) = built
        new = params[n0:]
        group_of = [gi for gi, g in enumerate(all_groups) for _ in g["params"]]
        stepper = _core.Stepper(engine, all_groups, group_of, conv.code,
                                conv.per_param_steps and not cls.shared_clock,
                                conv.schedule_clock_calls, self._sync, averager,
                                accum, refuse_no_grads=conv.refuse_no_grads,
                                host=None if cls.host_stage is None else self.host_stage)
        old = self._stepper
        if old is not None:
            if old.swapped:
                raise ValueError("add_param_group: the parameters hold the averages "
                                 "(swap_averages() was called); call swap_averages() again "
                                 "first")
            stepper.iterations, stepper.micro = old.iterations, old.micro
            stepper.skipped = old.skipped
            if swa is not None:
                stepper.n_averaged = old.n_averaged
            stepper.set_steps(list(old.get_steps()) + [0] * len(new))
            aux = stepper.get_aux()
            mine = old.get_aux()
            stepper.set_aux(list(mine) + aux[len(mine):])
        # from here on nothing can fail: commit
        for group, over, _, sdtype in made:
            group._bind(self)
            self._group_dtypes.append(sdtype)
            self.param_groups.append(group)
            self._overrides.append(over)
        self._params, self._param_names, self._state = params, names, state
        self._scratch = scratch
        self._formats, self._masters = formats, masters
        self._group_state = group_state
        self._index = {id(p): i for i, p in enumerate(params)}
        self._engine, self._ema, self._accum, self._stepper = engine, ema, accum, stepper
        self._swa = swa
        self._configure()
        self._apply_wd_rule()
        for gi in range(len(self.param_groups)):
            self._sync(gi)

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a param group (torch's ``add_param_group``): ``{"params": [...],
        <hyper-parameter>: value, ...}``, checked as the constructor checks
        groups; keys it does not set take the optimizer-wide values.

        The new parameters start with fresh state (zero moments, step count 0
        where each parameter counts its own); the optimizer's counters carry
        on.  :meth:`state_dict`, :func:`fastopt.save` and :meth:`get_config`
        include the group, so a checkpoint loads into an optimizer built (or
        extended) with the same groups.  Raises and changes nothing on bad
        input (a parameter already in the optimizer, an unknown key, ...).
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"add_param_group expects a dict {{'params': [...], ...}}; got "
                            f"{type(param_group).__name__}")
        with self._lock:
            if type(self).shared_clock and self.iterations:
                raise ValueError(
                    f"add_param_group: {type(self).__name__} keeps one step count for every "
                    f"group, so a group added after {self.iterations} steps would start "
                    f"mid-way (the reference counts each group from 0); build the optimizer "
                    f"with every group, or add it before the first step")
            self._add_groups(split_param_groups([param_group]))

    def _initial_array(self, p, group, name, shape, fmt=_core.FMT_NATIVE):
        """A new state array of ``shape`` in storage ``fmt``: a copy of the
        parameter (``initial[name] == "param"``), filled with a
        hyper-parameter's value, or zeros (factored state has a shape of its
        own).  Full-precision state of a 16-bit param is float32."""
        source = self.initial.get(name)
        dtype = _compact.compute_dtype(p)
        if source == "param":
            values = p.astype(dtype)
        elif source is not None:
            values = np.full(p.shape, group[source], dtype=dtype)
        else:
            values = np.zeros(shape, dtype=dtype)
        return _compact.encode(values, fmt, shape)

    # ---- hyper-parameters ----------------------------------------------------

    @classmethod
    def _canonical(cls, key):
        key = _GLOBAL_ALIASES.get(key, key)
        for name, h in cls.hyper.items():
            if key in h.aliases:
                return name
        return key

    @classmethod
    def _spec(cls, key):
        return cls.hyper.get(cls._canonical(key)) or HP()

    def _valid_keys(self):
        """The names this optimizer takes, each with its aliases, for messages."""
        out = []
        for name in self._defaults:
            aliases = [a for a, n in _GLOBAL_ALIASES.items() if n == name]
            aliases += list(self.hyper[name].aliases)
            aliases += [k for k, (parts, _) in self.tuple_aliases.items() if name in parts
                        and all(p in self._defaults for p in parts)]
            out.append(f"{name} ({', '.join(aliases)})" if aliases else name)
        return ", ".join(out)

    def _canonical_items(self, items, where, caller):
        """``{canonical name: value}`` from ``(key, value)`` pairs as a user wrote
        them: aliases taken (``lr``, ``eps``, ``alpha``), tuple aliases split
        (``betas``), unknown names and two spellings of one name refused."""
        known = self._defaults if hasattr(self, "_defaults") else \
            type(self).defaults(self.convention)
        out, given = {}, {}
        for key, value in items:
            if key == "params":
                raise ValueError(f"{where}'params' cannot change after construction (the "
                                 f"optimizer keeps state for the arrays it was built over). "
                                 f"Use add_param_group for new arrays, or build a new "
                                 f"optimizer; nothing was changed")
            if key == "state_dtype":    # a group's own: popped where the group is made
                raise ValueError(f"{where}state_dtype is set when the group is made (it decides "
                                 f"how the group's state is stored); build a new optimizer "
                                 f"with it in the group's dict; nothing was changed")
            if key in self.tuple_aliases:
                names, form = self.tuple_aliases[key]
                pairs = zip(names, _tuple_parts(key, value, names, form, where))
            else:
                pairs = [(self._canonical(key), value)]
            for name, v in pairs:
                if name not in known:
                    if where:
                        raise TypeError(f"{where}unknown hyper-parameter {key!r}; valid keys: "
                                        f"{self._valid_keys_for(known)}")
                    raise TypeError(f"{caller} got an unexpected keyword argument {key!r}; "
                                    f"known: {', '.join(sorted(known))}")
                if name in given:
                    raise TypeError(f"{where}pass either {given[name]} or {key} (two names for "
                                    f"{name}), not both")
                given[name] = key
                out[name] = v
        return out

    def _valid_keys_for(self, known):
        if hasattr(self, "_defaults"):
            return self._valid_keys()
        return ", ".join(sorted(known))

    def _hyper_value(self, name, key):
        try:
            return self._defaults[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {key!r} in the "
                                 f"{self.convention} convention") from None

    def _set_hyper(self, changes):
        """Assign optimizer-wide values (``opt.beta_1 = 0.5``): checked for the
        optimizer and for every group that takes them, then applied from the
        next step; on error nothing changes."""
        with self._lock:
            canon = self._canonical_items(changes.items(), "", type(self).__name__)
            self._check_group(dict(self._defaults, **canon), "")
            plan = []
            for gi, (group, over) in enumerate(zip(self.param_groups, self._overrides)):
                mine = {k: v for k, v in canon.items() if k not in over}
                if mine:
                    cand = dict(group, **mine)
                    self._check_group(cand, f"param group {gi}: ")
                    self._check_state_layout(gi, cand)
                    plan.append((group, mine))
            self._defaults.update(canon)
            for group, mine in plan:
                group._set(mine)

    def _group_index(self, group):
        for gi, g in enumerate(self.param_groups):
            if g is group:
                return gi
        raise ValueError("this param group no longer belongs to the optimizer")

    def _edit_group(self, group, changes):
        """Check an edit of a param group (see :class:`fastopt._hyper.ParamGroup`);
        returns the changes by canonical name.  Raises, changing nothing."""
        with self._lock:
            gi = self._group_index(group)
            where = f"param group {gi}: "
            canon = self._canonical_items(changes.items(), where, "")
            cand = dict(group, **canon)
            self._check_group(cand, where)
            self._check_state_layout(gi, cand)
            self._overrides[gi].update(canon)
            return canon

    def _refuse_removal(self, group, key):
        gi = self._group_index(group)
        what = "its keys" if key is None else repr(key)
        raise ValueError(f"param group {gi}: {what} cannot be removed; every hyper-parameter "
                         f"of the group must stay (set a new value instead); nothing was "
                         f"changed")

    def __setattr__(self, name, value):
        if (name[:1] != "_" and name in _known_names()
                and not hasattr(type(self), name)):
            raise AttributeError(f"{type(self).__name__} has no hyper-parameter {name!r}, so "
                                 f"setting it would do nothing; its hyper-parameters: "
                                 f"{self._valid_keys()}")
        object.__setattr__(self, name, value)

    def _check_group(self, group, where):
        """Type and range of every value (schedules are checked per step), then
        the rules across fields."""
        for key, value in group.items():
            if key != "params":
                check_value(self.hyper[key], key, value, where)
        for key, spec in self.hyper.items():
            value = group.get(key)
            if spec.kind is float and value is not None and not is_schedule(value):
                check_range(spec, key, value, where)
        self.check(group, where)

    def _sync(self, gi):
        """Check group ``gi`` as edited and hand its values to the engine."""
        group = self.param_groups[gi]
        self._check_group(group, f"param group {gi}: ")
        self._check_state_layout(gi, group)
        values, scheduled = [], []
        for j, key in enumerate(self._hp_order):
            value = group.get(key, 0.0)
            if is_schedule(value):
                scheduled.append((step_callable(value), j, key, self.hyper[key]))
                value = 0.0
            values.append(float(value))
        self._stepper.set_group(gi, values, scheduled, len(self.state_names(group)),
                                group.version)

    def _check_state_layout(self, gi, group, restoring=False):
        """The state arrays are made at construction.  An edit may stop using
        some (momentum set to 0), but not need arrays that do not exist or give
        an array another role, nor change a value that only filled them
        (``initial_accumulator_value``: a new value would do nothing), unless
        the state is being restored with it (``restoring``)."""
        initial, kept = self._group_state[gi]
        for key in sorted(set(self.initial.values())):
            if not restoring and key in group and key in initial and group[key] != initial[key]:
                raise ValueError(f"param group {gi}: {key} cannot change after construction: "
                                 f"it fills the state arrays when the optimizer is built, so "
                                 f"a new value would do nothing. Build a new optimizer with "
                                 f"{key}={group[key]!r}; nothing was changed")
        missing = [k for k in initial if k not in group]
        if missing:
            raise ValueError(f"param group {gi} lacks {', '.join(missing)} (deleted, or the group "
                             f"was cleared); every hyper-parameter of the group must stay. Set "
                             f"it again; nothing was changed")
        plist = group["params"]
        if (not isinstance(plist, (list, tuple)) or len(plist) != len(initial["params"])
                or any(p is not q for p, q in zip(plist, initial["params"]))):
            raise ValueError(f"param group {gi}: 'params' cannot change after construction "
                             f"(the optimizer keeps state for the arrays it was built over). "
                             f"Build a new optimizer over the new arrays; nothing was changed")
        names = self.state_names(group)
        if names == kept[:len(names)]:
            return
        culprits = [k for k in initial if k != "params" and group[k] != initial[k]
                    and self.state_names({**group, k: initial[k]}) != names]
        keys = " and ".join(culprits) or "an edited hyper-parameter"
        raise ValueError(f"param group {gi}: {keys} cannot change this way after construction: "
                         f"the optimizer keeps the state arrays {list(kept)}, and the new "
                         f"setting needs {list(names)}. Build a new optimizer with the new "
                         f"setting (or set it back); nothing was changed")

    def _cross_check(self, gi, step):
        hp = dict(zip(self._hp_order, self._stepper.group_values(gi)))
        self.check(hp, f"schedule value at step {step}: ")

    def _configure(self):
        """Hand the options to the engine (after construction or an assignment)."""
        cross = (self._cross_check if self.convention in self.check_conventions else None)
        self._stepper.configure(
            maximize=self._opt_maximize, decoupled=self._opt_decoupled_weight_decay,
            clipvalue=self._opt_clipvalue, clipnorm=self._opt_clipnorm,
            global_clipnorm=self._opt_global_clipnorm, skip_nonfinite=self._opt_skip_nonfinite,
            num_threads=self._opt_num_threads, ema_momentum=self._opt_ema_momentum,
            ema_overwrite_frequency=self._opt_ema_overwrite_frequency,
            gradient_accumulation_steps=self._opt_gradient_accumulation_steps,
            cross_check=cross, swa_start=self._opt_swa_start, swa_freq=self._opt_swa_freq,
            swa_decay=self._opt_swa_decay)

    def hyperparameters(self, group: int = 0, step: Optional[int] = None) -> dict[str, Any]:
        """The group's hyper-parameters as floats (bools as bools), schedules
        evaluated at ``step`` (default: the step the next update reads) and
        checked as a step checks them."""
        g = self.param_groups[group]
        with self._lock:
            self._sync(group)
            step = self._stepper.schedule_step if step is None else step
            values = dict(zip(self._hp_order, self._stepper.evaluate(group, step)))
        return {key: (bool(value) if self.hyper[key].kind is bool else
                      values[key] if is_schedule(value) else float(value))
                for key, value in g.items() if key != "params"}

    current_hyperparameters = hyperparameters

    # ---- public attributes ---------------------------------------------------

    @property
    def params(self) -> list[Array]:
        """The parameters, in the order their grads are expected."""
        return list(self._params)

    @property
    def state(self) -> list[dict[str, Array]]:
        """Per-parameter state arrays, by name (live views: do not resize)."""
        out: list[dict[str, Array]] = []
        for group in self.param_groups:
            for p in group["params"]:
                names = [n for n, _ in self.state_layout(group, p)]
                out.append(dict(zip(names, self._state[len(out)])))
        return out

    convention = _construction_only("convention", operator.attrgetter("_convention"),
                                    "it decides the formulas and defaults")
    state_dtype = _construction_only("state_dtype", lambda opt: opt._storage.state_dtype,
                                     "it decides how the state is stored")
    min_8bit_size = _construction_only("min_8bit_size", lambda opt: opt._storage.min_8bit_size,
                                       "it decides how the state is stored")
    seed = _construction_only("seed", lambda opt: opt._storage.seed,
                              "it keys the stochastic roundings of every step")
    rounding = _construction_only("rounding", lambda opt: opt._storage.rounding,
                                  "it decides how 16-bit params are rounded")
    master_weights = _construction_only("master_weights",
                                        lambda opt: opt._storage.master_weights,
                                        "it decides whether float32 copies are kept")

    @property
    def master_params(self) -> "list[Optional[Array]]":
        """Per parameter, its float32 master copy (``master_weights=True``, a
        bfloat16 or float16 param), else None (live arrays)."""
        return list(self._masters)

    def _storage_config(self):
        """The storage options that differ from their defaults (a config without
        them is the same optimizer as before they existed)."""
        defaults = {"state_dtype": None, "min_8bit_size": 4096, "seed": 0, "rounding": None,
                    "master_weights": False}
        return {k: v for k, v in self._storage.config().items() if v != defaults[k]}

    def state_arrays(self) -> list[list[Array]]:
        """Per parameter, the list of its state arrays in kernel order (live)."""
        return [list(s) for s in self._state]

    @property
    def lock(self) -> Any:
        """The lock that step, state_dict and load_state_dict hold: hold it to
        read the parameters and state as one consistent snapshot."""
        return self._lock

    @property
    def iterations(self) -> int:
        """Updates applied (Keras's ``iterations``)."""
        return self._stepper.iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        self._stepper.iterations = _statedict.check_counter(value, "iterations")

    @property
    def micro_steps(self) -> int:
        """Calls to :meth:`step` that were applied or accumulated (equals
        ``iterations`` unless ``gradient_accumulation_steps`` is set)."""
        s = self._stepper
        return s.micro if self._opt_gradient_accumulation_steps else s.iterations

    @property
    def skipped_steps(self) -> int:
        """Steps refused by ``skip_nonfinite`` (nothing changed)."""
        return self._stepper.skipped

    @property
    def averages(self) -> list[Array]:
        """The averages of the parameters (``use_ema=True`` or ``use_swa=True``),
        live arrays."""
        if self._swa is not None:
            return list(self._swa)
        if self._ema is None:
            raise AttributeError("averages exist only with use_ema=True or use_swa=True")
        return list(self._ema)

    @property
    def n_averaged(self) -> int:
        """Updates averaged so far (``use_swa=True``; torch's ``n_averaged``)."""
        if self._swa is None:
            raise AttributeError("n_averaged exists only with use_swa=True")
        return self._stepper.n_averaged

    @property
    def swapped(self) -> bool:
        """Whether the parameters hold the averages (:meth:`swap_averages`)."""
        return self._stepper.swapped

    def swap_averages(self) -> bool:
        """Swap every parameter with its average, in place (``use_swa=True``).

        The values are moved, not recomputed, so calling it twice restores
        parameters and averages bit for bit.  Evaluate between the two calls;
        stepping, :meth:`state_dict` and :meth:`load_state_dict` refuse while
        swapped.  Returns :attr:`swapped`.
        """
        if self._swa is None:
            raise ValueError("swap_averages needs use_swa=True (an exponential average "
                             "in torch's form is use_swa=True with swa_decay=...; with "
                             "use_ema, finalize() copies the averages)")
        with self._lock:
            self._stepper.swap_averages()
            return self._stepper.swapped

    # ---- the step ------------------------------------------------------------

    def step(self, grads: Grads) -> None:
        """Apply one update in place: ``grads[i]`` is the gradient of ``params[i]``
        (``None`` leaves that parameter and its state untouched), or for a 2-D
        parameter a :class:`fastopt.RowGrad` (only the rows it names, and their
        state, are updated; see "Embedding tables" in the README).  Every grad is
        checked before anything is written; on error nothing changes.
        """
        lock = self._lock
        lock.acquire()     # not `with`: try/finally costs half as much per step
        try:
            self._stepper.step(grads)
        finally:
            lock.release()

    def apply_gradients(self, grads_and_vars: Iterable[Tuple[Optional[Array], Array]]) -> None:
        """Keras-style: ``opt.apply_gradients(zip(grads, params))``.

        Pairs are matched to the optimizer's parameters by identity; parameters
        that get no pair are skipped this step.  As in Keras, an empty sequence
        of pairs does nothing, and pairs whose grads are all None raise in the
        keras convention.
        """
        grads, pairs = pairs_to_grads(grads_and_vars, self._params, self._index)
        if pairs:       # Keras: no pairs at all is a no-op (pairs of None grads are not)
            self.step(grads)

    def exclude_from_weight_decay(self, var_list: Optional[Iterable[Array]] = None,
                                  var_names: Optional[Iterable[str]] = None) -> None:
        """Exclude parameters from weight decay (decoupled or coupled).

        ``var_list``: parameters, matched by identity.  ``var_names``: strings
        (regular expressions); a parameter is excluded when any of them
        ``re.search``-matches its name.  Names come from param groups
        (``{"params": [...], "name": "bias"}`` names every param of the group,
        ``"names": [...]`` one name each).  Each call replaces the previous
        exclusion; call with no arguments to clear it.  Takes effect at the
        next step.
        """
        ids = []
        for k, v in enumerate(var_list or ()):
            i = self._index.get(id(v))
            if i is None or self._params[i] is not v:
                raise ValueError(f"var_list[{k}] is not a parameter of this optimizer; pass "
                                 f"the same array objects as at construction")
            ids.append(i)
        if var_names and isinstance(var_names, str):
            raise TypeError("var_names must be a list of strings; got a single string: "
                            f"pass [{var_names!r}]")
        if var_names:
            re.compile("|".join(var_names))     # a bad pattern raises before anything changes
        with self._lock:
            self._wd_rule = (tuple(ids), tuple(sorted(set(var_names or ()))))
            self._apply_wd_rule()

    def _apply_wd_rule(self):
        """Hand the exclusion of :meth:`exclude_from_weight_decay` to the engine
        (again after :meth:`add_param_group`: a new parameter whose name matches
        is excluded too)."""
        ids, names = self._wd_rule
        excluded = set(ids)
        if names:
            pattern = re.compile("|".join(names))
            for i, n in enumerate(self._param_names):
                if n is not None and pattern.search(n) is not None:
                    excluded.add(i)
        self._wd_excluded = frozenset(excluded)
        self._stepper.set_excluded(self._wd_excluded)

    def finalize(self) -> None:
        """Copy the moving averages into the parameters (``use_ema=True``; a
        no-op otherwise).  Keras calls this ``finalize_variable_values``."""
        if self._ema is None:
            return
        with self._lock:
            for p, a in zip(self._params, self._ema):
                np.copyto(p, a)

    finalize_variable_values = finalize

    # ---- configuration and state -------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-able dict (schedules serialized)."""
        from . import schedules
        cfg = {"name": self.name, "convention": self.convention,
               "decoupled_weight_decay": self.decoupled_weight_decay,
               "maximize": self.maximize, "clipvalue": self.clipvalue,
               "num_threads": self.num_threads}
        cfg.update(self._options_config())
        cfg.update(self._storage_config())
        for key, value in self._defaults.items():
            cfg[key] = _config_value(value, schedules)
        if (len(self.param_groups) > 1 or any(self._overrides)
                or any(n is not None for n in self._param_names)
                or any(d is not None for d in self._group_dtypes)):
            cfg["param_groups"] = []
            start = 0
            for group, over in zip(self.param_groups, self._overrides):
                size = len(group["params"])
                entry = dict({k: _config_value(v, schedules) for k, v in over.items()},
                             size=size)
                if self._group_dtypes[len(cfg["param_groups"])] is not None:
                    entry["state_dtype"] = self._group_dtypes[len(cfg["param_groups"])]
                names = self._param_names[start:start + size]
                if any(n is not None for n in names):
                    entry["names"] = list(names)
                cfg["param_groups"].append(entry)
                start += size
        return cfg

    @classmethod
    def from_config(cls: type[_T], config: Mapping[str, Any], params: Params) -> _T:
        """Rebuild an optimizer from :meth:`get_config` over ``params`` (a flat list
        is split into the configured param groups by their sizes)."""
        from . import schedules
        cfg = {k: _from_config_value(v, schedules) for k, v in config.items()
               if k != "param_groups"}
        groups = config.get("param_groups")
        given: Any = params
        if groups is not None:
            given = list(params)
            if given and not isinstance(given[0], dict):
                sizes = [g["size"] for g in groups]
                if sum(sizes) != len(given):
                    raise ValueError(f"config has param groups of sizes {sizes} "
                                     f"({sum(sizes)} params); got {len(given)} params")
                split, start = [], 0
                for g in groups:
                    over = {k: _from_config_value(v, schedules) for k, v in g.items()
                            if k != "size"}
                    split.append(dict(over, params=given[start:start + g["size"]]))
                    start += g["size"]
                given = split
        return cls(given, **cfg)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: counters, state arrays (copies),
        config, and the counters of stateful schedules."""
        with self._lock:
            return _statedict.build(self)

    def load_state_dict(self, sd: Mapping[str, Any], hyperparameters: LoadPolicy = None) -> None:
        """Restore :meth:`state_dict`.  Everything is checked first (format
        version, class, convention, shapes, dtypes, counters, schedule state);
        a mismatch raises ``ValueError`` and leaves the optimizer as it was.

        ``hyperparameters``: what happens to the hyper-parameters ``sd`` holds
        (learning rate, betas, ... of every param group, schedules included).
        ``"checkpoint"`` restores them, as torch's ``load_state_dict`` restores
        its param groups; ``"optimizer"`` keeps the ones this optimizer was
        built (or since set) with, as Keras does (it restores variables only).
        None (the default) follows the convention: torch restores, Keras
        keeps; when they differ a ``UserWarning`` names the first difference
        (passing the keyword silences it)."""
        with self._lock:
            _statedict.check(self, sd, hyperparameters)()

    def check_state_dict(self, sd: Mapping[str, Any],
                         hyperparameters: LoadPolicy = None) -> Callable[[], None]:
        """Validate ``sd`` completely (raising ``ValueError`` as
        :meth:`load_state_dict` would); return a function that applies it and
        cannot fail.  Call both under :attr:`lock`."""
        return _statedict.check(self, sd, hyperparameters)

    # ---- copies ----------------------------------------------------------------

    def __reduce__(self):
        """``copy.deepcopy(opt)`` and ``pickle.dumps(opt)``: the constructor's
        arguments (the parameters, the hyper-parameters as objects, schedules
        included, the options) and :meth:`state_dict`.  A deep copy owns copies
        of the parameters (shared with a model copied in the same ``deepcopy``
        call) and steps independently; an unpickled optimizer continues exactly
        as one restored from :func:`fastopt.save`."""
        with self._lock:
            kwargs = {"convention": self.convention, "name": self.name,
                      "decoupled_weight_decay": self.decoupled_weight_decay,
                      "maximize": self.maximize, "clipvalue": self.clipvalue,
                      "num_threads": self.num_threads, **self._options_config(),
                      **self._storage_config(), **self._defaults}
            groups, start = [], 0
            for group, over in zip(self.param_groups, self._overrides):
                size = len(group["params"])
                entry = dict(over, params=list(group["params"]))
                if self._group_dtypes[len(groups)] is not None:
                    entry["state_dtype"] = self._group_dtypes[len(groups)]
                names = self._param_names[start:start + size]
                if any(n is not None for n in names):
                    entry["names"] = list(names)
                groups.append(entry)
                start += size
            return (_rebuild, (type(self), groups, kwargs, _statedict.build(self, config=False),
                               self._wd_rule))

    def __repr__(self):
        n = sum(p.size for p in self._params)
        return (f"{type(self).__name__}(convention={self.convention!r}, "
                f"learning_rate={self.learning_rate!r}, params={len(self._params)} arrays / "
                f"{n} elements, iterations={self.iterations})")


def _rebuild(cls, groups, kwargs, sd, wd_rule):
    opt = cls(groups, **kwargs)
    opt.load_state_dict(sd, hyperparameters="optimizer")
    with opt._lock:
        opt._wd_rule = wd_rule
        opt._apply_wd_rule()
    return opt


def _config_value(value, schedules):
    if is_schedule(value):
        return schedules.serialize(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _from_config_value(value, schedules):
    if isinstance(value, dict) and "class_name" in value:
        return schedules.deserialize(value)
    return value
