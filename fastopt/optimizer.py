"""The base class: construction, param groups, the step, configuration.

An optimizer class declares its kernel, its hyper-parameter table and its
state (see :mod:`fastopt.optimizers`); this class turns the declaration into
checked param groups, state arrays and one engine
(:class:`fastopt._core.Stepper`) that runs the whole step in compiled code.
Per step, Python only takes the lock and hands the grads down; schedules are
called by the engine, at the step the convention says.
"""
import os
import re
import threading
import weakref
from typing import Mapping

import numpy as np

from . import _core, _statedict, _threads
from ._hyper import (CONVENTIONS, HP, NONNEG, ParamGroup, check_range, check_value, group_names,
                     is_schedule, split_param_groups)
from ._options import Options

_GLOBAL_ALIASES = {"lr": "learning_rate", "eps": "epsilon"}
#: Every optimizer class defined in fastopt, by name.
REGISTRY: "dict[str, type[Optimizer]]" = {}

# Optimizers (and sharded ones) whose locks a forked child must replace: a lock
# held by another thread at the fork would stay held forever in the child.
_live_optimizers: "weakref.WeakSet[object]" = weakref.WeakSet()


def _renew_locks_after_fork():
    for opt in list(_live_optimizers):
        opt._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_after_fork)


class Optimizer(Options):
    """Base class: parameter groups, conventions, schedules, state, checkpoints.

    A subclass declares ``kernel`` (a file in ``csrc/kernels``), ``hyper`` (its
    table of :class:`fastopt._hyper.HP`, per-convention defaults, ranges and
    aliases, in the order the kernel reads them) and ``variables`` (the names
    of its state arrays); optionally ``state_names(group)`` when the arrays
    depend on a setting, ``initial`` (state arrays filled from a
    hyper-parameter instead of zeros), ``check(hp, where)`` for a rule across fields and
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
        Threads for this optimizer (default: :func:`fastopt.get_num_threads`).

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

    kernel: "str | None" = None
    hyper: "dict[str, HP]" = {}
    variables: "tuple[str, ...]" = ()
    initial: "dict[str, str]" = {}
    aux_state: "str | None" = None
    #: False for an optimizer whose update of an element depends on other elements
    #: (Lamb's per-tensor trust ratio): it cannot run on a flat shard of a tensor.
    elementwise = True
    #: True when weight decay can only be decoupled (AdamW).
    decoupled_only = False
    #: Keywords that give several hyper-parameters at once: ``{"betas":
    #: (("beta_1", "beta_2"), "(b1, b2)")}``.
    tuple_aliases: "Mapping[str, tuple[tuple[str, ...], str]]" = {}
    #: Conventions in which ``check`` has anything to say about scheduled values.
    check_conventions: "tuple[str, ...]" = ()
    conventions: "tuple[str, ...]" = ()
    _hp_order: "tuple[str, ...]" = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "hyper" in cls.__dict__:
            cls.hyper = dict(cls.hyper)
            cls.hyper.setdefault("weight_decay", HP(0.0, check=NONNEG, kernel=False))
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
    def defaults(cls, convention):
        """The hyper-parameters and their defaults in ``convention``."""
        return {k: h.defaults[convention] for k, h in cls.hyper.items()
                if convention in h.defaults}

    def state_names(self, group):
        """Names of the state arrays a group with these settings uses."""
        return self.variables

    def check(self, hp, where):
        """Rules across hyper-parameters (constants, and scheduled values per step)."""

    def __init__(self, params, *, convention="keras", weight_decay=None,
                 decoupled_weight_decay=None, maximize=False, clipvalue=None,
                 num_threads=None, name=None, clipnorm=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 gradient_accumulation_steps=None, skip_nonfinite=False, **hyper):
        cls = type(self)
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be 'keras' or 'torch'; got {convention!r}")
        if convention not in cls.conventions:
            (only,) = cls.conventions
            raise ValueError(f"{cls.__name__} exists in {CONVENTIONS[only].library} only, so it "
                             f"has no {convention!r} convention; use convention={only!r}")
        self.convention = convention
        self._conv = conv = CONVENTIONS[convention]
        self.name = name or cls.__name__.lower()
        defaults = cls.defaults(convention)
        hyper["weight_decay"] = weight_decay
        for key, value in self._resolve_aliases(hyper).items():
            if value is None:
                continue
            if key not in defaults:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument "
                                f"{key!r}; known: {', '.join(sorted(defaults))}")
            defaults[key] = value
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
                          skip_nonfinite=skip_nonfinite)
        self._check_group(defaults, "")
        self._defaults = defaults

        self.param_groups, self._overrides, flat, pnames = [], [], [], []
        for gi, (plist, over) in enumerate(split_param_groups(params)):
            over = {self._canonical(k): v for k, v in over.items()}
            pnames.extend(group_names(over, len(plist), gi))
            for k in over:
                if k not in defaults:
                    raise TypeError(f"param group {gi}: unknown hyper-parameter {k!r}; known: "
                                    f"{', '.join(sorted(defaults))}")
            group = ParamGroup(defaults)
            group.update(over)
            self._check_group(group, f"param group {gi}: ")
            group["params"] = plist
            self.param_groups.append(group)
            self._overrides.append(over)
            flat.extend(plist)
        for i, p in enumerate(flat):
            _core.check_param(p, i)
        self._params, self._param_names = flat, pnames
        self._index = {id(p): i for i, p in enumerate(flat)}
        # the state arrays each group keeps; edits of the group must keep them valid
        self._state, self._group_state, group_of = [], [], []
        need = 0
        try:
            for gi, group in enumerate(self.param_groups):
                names = self.state_names(group)
                self._group_state.append((dict(group, params=list(group["params"])), names))
                need += len(names) * sum(p.nbytes for p in group["params"])
            need += sum(p.nbytes for p in flat) * (bool(self._opt_use_ema) +
                                                   bool(self._opt_gradient_accumulation_steps))
            for gi, group in enumerate(self.param_groups):
                names = self._group_state[gi][1]
                for p in group["params"]:
                    self._state.append([np.full_like(p, group[self.initial[n]])
                                        if n in self.initial else np.zeros_like(p)
                                        for n in names])
                    group_of.append(gi)
            self._engine = _core.Engine(cls.kernel, flat, self._state)
            # copies, so finalize() before any step leaves the weights as they are
            self._ema = [p.copy() for p in flat] if self._opt_use_ema else None
            self._accum = ([np.zeros_like(p) for p in flat]
                           if self._opt_gradient_accumulation_steps else None)
            failed = False
        except MemoryError:
            failed = True
        if failed:
            # outside the handler: the exception raised holds no reference to what was built
            self._state = self._group_state = self._engine = self._ema = self._accum = None
            raise MemoryError(f"{cls.__name__}: its state for {len(flat)} parameters needs "
                              f"{need} bytes ({need / 2 ** 20:.1f} MiB), which could not be "
                              f"allocated; nothing was built and the parameters are as they "
                              f"were. Free memory, or use fewer state arrays (options) or "
                              f"ShardedOptimizer to split the state over processes")
        ema = (None if self._ema is None else
               _core.Engine("ema", flat, [[a] for a in self._ema]))
        self._wd_excluded = frozenset()
        self._stepper = _core.Stepper(self._engine, self.param_groups, group_of, conv.code,
                                      conv.per_param_steps, conv.schedule_clock_calls,
                                      self._sync, ema, self._accum)
        self._configure()
        for gi in range(len(self.param_groups)):
            self._sync(gi)

    # ---- hyper-parameters ----------------------------------------------------

    @classmethod
    def _canonical(cls, key):
        key = _GLOBAL_ALIASES.get(key, key)
        for name, h in cls.hyper.items():
            if key in h.aliases:
                return name
        return key

    def _resolve_aliases(self, hyper):
        """Constructor keywords by canonical name: ``lr``/``eps`` taken as
        ``learning_rate``/``epsilon``, a table alias (``alpha``) refused next
        to its name, a tuple alias (``betas``) split into its parts."""
        out = {}
        for key, value in hyper.items():
            if key in self.tuple_aliases:
                names, form = self.tuple_aliases[key]
                if value is not None:
                    if any(hyper.get(k) is not None for k in names):
                        raise TypeError(f"pass either {key}={form} or {'/'.join(names)}, "
                                        f"not both")
                    out.update(zip(names, value))
                continue
            name = self._canonical(key)
            if (name != key and key not in _GLOBAL_ALIASES and value is not None
                    and hyper.get(name) is not None):
                raise TypeError(f"pass either {name} or {key} (its torch name), not both")
            if value is not None or name not in out:
                out[name] = value
        return out

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
                scheduled.append((value, j, key, self.hyper[key]))
                value = 0.0
            values.append(float(value))
        self._stepper.set_group(gi, values, scheduled, len(self.state_names(group)),
                                group.version)

    def _check_state_layout(self, gi, group):
        """The state arrays are made at construction.  An edit may stop using
        some (momentum set to 0), but not need arrays that do not exist or give
        an array another role."""
        initial, kept = self._group_state[gi]
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
            cross_check=cross)

    def hyperparameters(self, group=0, step=None):
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
    def params(self):
        """The parameters, in the order their grads are expected."""
        return list(self._params)

    @property
    def learning_rate(self):
        """The optimizer-wide learning rate: a float or a schedule."""
        return self._defaults["learning_rate"]

    @learning_rate.setter
    def learning_rate(self, value):
        self._check_group(dict(self._defaults, learning_rate=value), "")
        self._defaults["learning_rate"] = value
        for group, over in zip(self.param_groups, self._overrides):
            if "learning_rate" not in over:
                group["learning_rate"] = value

    lr = learning_rate

    @property
    def state(self):
        """Per-parameter state arrays, by name (live views: do not resize)."""
        out = []
        for group in self.param_groups:
            names = self.state_names(group)
            for _ in group["params"]:
                out.append(dict(zip(names, self._state[len(out)])))
        return out

    def state_arrays(self):
        """Per parameter, the list of its state arrays in kernel order (live)."""
        return [list(s) for s in self._state]

    @property
    def lock(self):
        """The lock that step, state_dict and load_state_dict hold: hold it to
        read the parameters and state as one consistent snapshot."""
        return self._lock

    @property
    def iterations(self):
        """Updates applied (Keras's ``iterations``)."""
        return self._stepper.iterations

    @iterations.setter
    def iterations(self, value):
        self._stepper.iterations = _statedict.check_counter(value, "iterations")

    @property
    def micro_steps(self):
        """Calls to :meth:`step` that were applied or accumulated (equals
        ``iterations`` unless ``gradient_accumulation_steps`` is set)."""
        s = self._stepper
        return s.micro if self._opt_gradient_accumulation_steps else s.iterations

    @property
    def skipped_steps(self):
        """Steps refused by ``skip_nonfinite`` (nothing changed)."""
        return self._stepper.skipped

    @property
    def averages(self):
        """The moving averages of the parameters (``use_ema=True``), live arrays."""
        if self._ema is None:
            raise AttributeError("averages exist only with use_ema=True")
        return list(self._ema)

    # ---- the step ------------------------------------------------------------

    def step(self, grads):
        """Apply one update in place: ``grads[i]`` is the gradient of ``params[i]``
        (``None`` leaves that parameter and its state untouched).  Every grad is
        checked before anything is written; on error nothing changes.
        """
        lock = self._lock
        lock.acquire()     # not `with`: try/finally costs half as much per step
        try:
            self._stepper.step(grads)
        finally:
            lock.release()

    def apply_gradients(self, grads_and_vars):
        """Keras-style: ``opt.apply_gradients(zip(grads, params))``.

        Pairs are matched to the optimizer's parameters by identity; parameters
        that get no pair are skipped this step.
        """
        grads = [None] * len(self._params)
        for k, pair in enumerate(grads_and_vars):
            try:
                g, p = pair
            except (TypeError, ValueError):
                raise TypeError(f"apply_gradients expects (grad, param) pairs; item {k} is "
                                f"{type(pair).__name__}") from None
            i = self._index.get(id(p))
            if i is None or self._params[i] is not p:
                raise ValueError(f"apply_gradients: pair {k} names a parameter this optimizer "
                                 f"was not built with; pass the same array objects as at "
                                 f"construction")
            if grads[i] is not None:
                raise ValueError(f"apply_gradients: params[{i}] appears twice")
            grads[i] = g
        self.step(grads)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Exclude parameters from weight decay (decoupled or coupled).

        ``var_list``: parameters, matched by identity.  ``var_names``: strings
        (regular expressions); a parameter is excluded when any of them
        ``re.search``-matches its name.  Names come from param groups
        (``{"params": [...], "name": "bias"}`` names every param of the group,
        ``"names": [...]`` one name each).  Each call replaces the previous
        exclusion; call with no arguments to clear it.  Takes effect at the
        next step.
        """
        excluded = set()
        for k, v in enumerate(var_list or ()):
            i = self._index.get(id(v))
            if i is None or self._params[i] is not v:
                raise ValueError(f"var_list[{k}] is not a parameter of this optimizer; pass "
                                 f"the same array objects as at construction")
            excluded.add(i)
        if var_names:
            if isinstance(var_names, str):
                raise TypeError("var_names must be a list of strings; got a single string: "
                                f"pass [{var_names!r}]")
            pattern = re.compile("|".join(sorted(set(var_names))))
            for i, n in enumerate(self._param_names):
                if n is not None and pattern.search(n) is not None:
                    excluded.add(i)
        with self._lock:
            self._wd_excluded = frozenset(excluded)
            self._stepper.set_excluded(self._wd_excluded)

    def finalize(self):
        """Copy the moving averages into the parameters (``use_ema=True``; a
        no-op otherwise).  Keras calls this ``finalize_variable_values``."""
        if self._ema is None:
            return
        with self._lock:
            for p, a in zip(self._params, self._ema):
                np.copyto(p, a)

    finalize_variable_values = finalize

    # ---- configuration and state -------------------------------------------

    def get_config(self):
        """Constructor arguments as a JSON-able dict (schedules serialized)."""
        from . import schedules
        cfg = {"name": self.name, "convention": self.convention,
               "decoupled_weight_decay": self.decoupled_weight_decay,
               "maximize": self.maximize, "clipvalue": self.clipvalue,
               "num_threads": self.num_threads}
        cfg.update(self._options_config())
        for key, value in self._defaults.items():
            cfg[key] = _config_value(value, schedules)
        if (len(self.param_groups) > 1 or any(self._overrides)
                or any(n is not None for n in self._param_names)):
            cfg["param_groups"] = []
            start = 0
            for group, over in zip(self.param_groups, self._overrides):
                size = len(group["params"])
                entry = dict({k: _config_value(v, schedules) for k, v in over.items()},
                             size=size)
                names = self._param_names[start:start + size]
                if any(n is not None for n in names):
                    entry["names"] = list(names)
                cfg["param_groups"].append(entry)
                start += size
        return cfg

    @classmethod
    def from_config(cls, config, params):
        """Rebuild an optimizer from :meth:`get_config` over ``params`` (a flat list
        is split into the configured param groups by their sizes)."""
        from . import schedules
        cfg = {k: _from_config_value(v, schedules) for k, v in config.items()
               if k != "param_groups"}
        groups = config.get("param_groups")
        if groups is not None:
            params = list(params)
            if params and not isinstance(params[0], dict):
                sizes = [g["size"] for g in groups]
                if sum(sizes) != len(params):
                    raise ValueError(f"config has param groups of sizes {sizes} "
                                     f"({sum(sizes)} params); got {len(params)} params")
                split, start = [], 0
                for g in groups:
                    over = {k: _from_config_value(v, schedules) for k, v in g.items()
                            if k != "size"}
                    split.append(dict(over, params=params[start:start + g["size"]]))
                    start += g["size"]
                params = split
        return cls(params, **cfg)

    def state_dict(self):
        """Everything needed to resume exactly: counters, state arrays (copies),
        config, and the counters of stateful schedules."""
        with self._lock:
            return _statedict.build(self)

    def load_state_dict(self, sd):
        """Restore :meth:`state_dict`.  Everything is checked first (format
        version, class, convention, shapes, dtypes, counters, schedule state);
        a mismatch raises ``ValueError`` and leaves the optimizer as it was."""
        with self._lock:
            _statedict.check(self, sd)()

    def check_state_dict(self, sd):
        """Validate ``sd`` completely (raising ``ValueError`` as
        :meth:`load_state_dict` would); return a function that applies it and
        cannot fail.  Call both under :attr:`lock`."""
        return _statedict.check(self, sd)

    def __repr__(self):
        n = sum(p.size for p in self._params)
        return (f"{type(self).__name__}(convention={self.convention!r}, "
                f"learning_rate={self.learning_rate!r}, params={len(self._params)} arrays / "
                f"{n} elements, iterations={self.iterations})")


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
