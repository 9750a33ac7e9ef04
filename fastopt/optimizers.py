"""Optimizers: hyper-parameters, conventions, schedules, state.

Every optimizer updates its parameters in place through one C kernel (see
``csrc/kernels``).  Python's work per step is to evaluate hyper-parameters
(schedules), turn them into a few scalars per parameter group computed in
double, and hand those and the gradients to :class:`fastopt._core.Engine`,
which validates every gradient before anything is written.
"""
import math
import operator
import os
import re
import threading
import weakref

import numpy as np

from . import _core, _hyper, _threads

CONVENTIONS = ("keras", "torch")

# Shared scalar slots (csrc/fastopt.h): flags, gscale, clip, l2, decay.
_F_GSCALE, _F_CLIP, _F_L2, _F_DECAY = 1, 2, 4, 8

_ALIASES = {"lr": "learning_rate", "eps": "epsilon"}


def _is_schedule(v):
    return callable(v) and not isinstance(v, (bool, int, float, np.number))


class ParamGroup(dict):
    """A parameter group: ``{"params": [...], <hyper-parameter>: value}``.

    Editable between steps like a torch param group; edits are validated
    when the next step evaluates the group.  The state arrays are made at
    construction: an edit may stop using one (``momentum`` set to 0), but an
    edit that needs another (``amsgrad`` False -> True, ``momentum`` 0 -> 0.9,
    ``centered`` False -> True) or a different ``"params"`` list is refused.
    """

    __slots__ = ("version",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.version = 0

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.version += 1

    def __delitem__(self, key):
        super().__delitem__(key)
        self.version += 1

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        self.version += 1

    def pop(self, *args):
        self.version += 1
        return super().pop(*args)

    def setdefault(self, key, default=None):
        self.version += 1
        return super().setdefault(key, default)

    def __ior__(self, other):  # type: ignore[misc]  # dict's __or__ returns a plain dict
        super().__ior__(other)
        self.version += 1
        return self

    def clear(self):
        super().clear()
        self.version += 1

    def popitem(self):
        self.version += 1
        return super().popitem()


# Optimizers (and sharded ones) whose locks a forked child must replace: a lock
# held by another thread at the fork would stay held forever in the child.
_live_optimizers: "weakref.WeakSet[object]" = weakref.WeakSet()


def _renew_locks_after_fork():
    for opt in list(_live_optimizers):
        opt._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_after_fork)


def _option(name, check, fixed=False):
    """An optimizer-wide option attribute, validated on every assignment.

    ``check(opt, value)`` returns the value to store or raises.  A settable
    option takes effect at the next step; a ``fixed`` one decides which arrays
    the optimizer keeps and can only be given at construction.  The getter is
    C-level (attrgetter) so that reading an option in a step costs no Python
    call."""
    attr = "_opt_" + name

    def set_option(opt, value):
        built = "_general" in opt.__dict__
        if built and fixed:
            raise AttributeError(f"{name} decides which arrays the optimizer keeps, so it is "
                                 f"set at construction only: build a new optimizer with "
                                 f"{name}={value!r}")
        value = check(opt, value)
        if not built:
            setattr(opt, attr, value)
            return
        with opt._lock:
            setattr(opt, attr, value)
            opt._options_changed()

    return property(operator.attrgetter(attr), set_option)


def _check_bool(key):
    def check(opt, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{key} must be a bool; got {value!r}")
        return bool(value)
    return check


def _check_truthy(opt, value):
    return bool(value)


def _check_num_threads(opt, value):
    return _threads.check_num_threads(value)


def _check_decoupled(opt, value):
    value = bool(value)
    if not value and opt._decoupled_always:
        raise ValueError(f"{type(opt).__name__}'s weight decay is decoupled; use Adam for "
                         f"coupled L2")
    return value


def _check_clip(key):
    def check(opt, value):
        if value is None:
            return None
        if key == "clipvalue":
            value = float(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float, np.floating,
                                                               np.integer)):
            raise TypeError(f"{key} must be a positive float or None; got {value!r}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{key} must be a positive finite float; got {value!r}")
        others = [k for k in _CLIPS if k != key and opt.__dict__.get("_opt_" + k) is not None]
        if others:
            raise ValueError(f"only one of clipnorm, global_clipnorm and clipvalue may be set; "
                             f"{others[0]} is set: set it to None first")
        return float(value)
    return check


_CLIPS = ("clipnorm", "global_clipnorm", "clipvalue")


def _check_ema_momentum(opt, value):
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
            or not 0.0 <= value <= 1.0):
        raise ValueError(f"ema_momentum must be a float in [0, 1]; got {value!r}")
    return float(value)


def _check_count(key, low):
    def check(opt, value):
        if value is not None and (isinstance(value, bool) or
                                  not isinstance(value, (int, np.integer)) or value < low):
            raise ValueError(f"{key} must be an int >= {low} or None; got {value!r}")
        return None if value is None else int(value)
    return check


class Optimizer:
    """Base class: parameter groups, conventions, schedules, state, checkpoints.

    Subclasses declare ``_kernel`` (a name in ``csrc/registry.def``),
    ``_hyper`` (per-convention defaults of their float and bool
    hyper-parameters), ``_state_names(group)`` and ``_scalars(hp, t, group)``
    (the kernel-specific scalars for one group at its 1-based step ``t``).

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

    _kernel: "str | None" = None
    _hyper: "dict[str, dict[str, float | bool]]" = {"keras": {}, "torch": {}}
    _bool_hyper: "tuple[str, ...]" = ()
    _decoupled_always = False

    # Options: each assignment is validated; all but use_ema and
    # gradient_accumulation_steps (which decide the arrays kept) may change
    # between steps and apply from the next one.  The step reads the stored
    # values (self._opt_<name>) directly.
    maximize = _option("maximize", _check_truthy)
    decoupled_weight_decay = _option("decoupled_weight_decay", _check_decoupled)
    clipvalue = _option("clipvalue", _check_clip("clipvalue"))
    clipnorm = _option("clipnorm", _check_clip("clipnorm"))
    global_clipnorm = _option("global_clipnorm", _check_clip("global_clipnorm"))
    skip_nonfinite = _option("skip_nonfinite", _check_bool("skip_nonfinite"))
    num_threads = _option("num_threads", _check_num_threads)
    use_ema = _option("use_ema", _check_bool("use_ema"), fixed=True)
    ema_momentum = _option("ema_momentum", _check_ema_momentum)
    ema_overwrite_frequency = _option("ema_overwrite_frequency",
                                      _check_count("ema_overwrite_frequency", 1))
    gradient_accumulation_steps = _option("gradient_accumulation_steps",
                                          _check_count("gradient_accumulation_steps", 2),
                                          fixed=True)

    #: False for an optimizer whose update of an element depends on other elements
    #: (Lamb's per-tensor trust ratio): it cannot run on a flat shard of a tensor.
    elementwise = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.kernel = cls._kernel
        cls.conventions = tuple(c for c in CONVENTIONS if c in cls._hyper)
        names = {k: None for conv in cls.conventions for k in cls._hyper[conv]}
        cls.hyper = {k: _hyper.HP(keras=cls._hyper.get("keras", {}).get(k),
                                  torch=cls._hyper.get("torch", {}).get(k),
                                  kind=bool if k in cls._bool_hyper else float)
                     for k in names}

    @classmethod
    def defaults(cls, convention):
        """The hyper-parameters and their defaults in ``convention``."""
        out = {k: h.default(convention) for k, h in cls.hyper.items()
               if convention in h.defaults}
        out.setdefault("weight_decay", 0.0)
        return out

    @property
    def lock(self):
        """The lock that step, state_dict and load_state_dict hold: hold it to
        read the parameters and state as one consistent snapshot."""
        return self._lock

    def state_arrays(self):
        """Per parameter, the list of its state arrays in kernel order (live)."""
        return [list(s) for s in self._state]

    def check_state_dict(self, sd):
        """Validate ``sd`` completely (raising ``ValueError`` as
        :meth:`load_state_dict` would); return a function that applies it and
        cannot fail.  Call both under :attr:`lock`."""
        return self._check_state_dict(sd)

    def hyperparameters(self, group=0, step=None):
        """The group's hyper-parameters as floats (bools as bools), schedules
        evaluated at ``step`` (default: the step the next update reads)."""
        return dict(self._evaluate(self.param_groups[group],
                                   self.iterations if step is None else step)[0])

    def __init__(self, params, *, convention="keras", weight_decay=None,
                 decoupled_weight_decay=None, maximize=False, clipvalue=None,
                 num_threads=None, name=None, clipnorm=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 gradient_accumulation_steps=None, skip_nonfinite=False, **hyper):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be 'keras' or 'torch'; got {convention!r}")
        if convention not in self._hyper:
            (only,) = self._hyper
            library = {"keras": "Keras 3", "torch": "torch.optim"}
            raise ValueError(f"{type(self).__name__} exists in {library[only]} only, so it has no "
                             f"{convention!r} convention; use convention={only!r}")
        self.convention = convention
        self.name = name or type(self).__name__.lower()
        defaults = dict(self._hyper[convention])
        defaults["weight_decay"] = defaults.get("weight_decay", 0.0)
        for key, value in hyper.items():
            key = self._canonical(key)
            if value is None:
                continue
            if key not in defaults:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                                f"{key!r}; known: {', '.join(sorted(defaults))}")
            defaults[key] = value
        if weight_decay is not None:
            defaults["weight_decay"] = weight_decay
        if decoupled_weight_decay is None:
            decoupled_weight_decay = convention == "keras" or self._decoupled_always
        # step, state_dict and load_state_dict are serialised: two threads stepping one
        # optimizer apply their updates one after the other, and a checkpoint is never torn
        self._lock = threading.RLock()
        _live_optimizers.add(self)
        self.decoupled_weight_decay = decoupled_weight_decay
        self.maximize = maximize
        self.clipvalue = clipvalue
        self.num_threads = num_threads
        self._set_options(clipnorm, global_clipnorm, use_ema, ema_momentum,
                          ema_overwrite_frequency, gradient_accumulation_steps, skip_nonfinite)
        self._defaults = defaults
        self._check_hyper(defaults, "")

        groups = self._split_groups(params)
        self.param_groups = []
        self._overrides = []
        flat = []
        pnames = []
        for gi, (plist, over) in enumerate(groups):
            over = {self._canonical(k): v for k, v in over.items()}
            pnames.extend(_group_names(over, len(plist), gi))
            for k in over:
                if k not in defaults:
                    raise TypeError(f"param group {gi}: unknown hyper-parameter {k!r}; known: "
                                    f"{', '.join(sorted(defaults))}")
            group = ParamGroup(defaults)
            group.update(over)
            self._check_hyper(group, f"param group {gi}: ")
            group["params"] = plist
            self.param_groups.append(group)
            self._overrides.append(over)
            flat.extend(plist)
        for i, p in enumerate(flat):
            _core.check_param(p, i)
        self._params = flat
        self._nparams = len(flat)
        self._group_of = np.repeat(np.arange(len(groups), dtype=np.int32),
                                   [len(g["params"]) for g in self.param_groups])
        self._state = []
        # the state arrays each group keeps; edits of the group must keep them valid
        self._group_state = []
        for group in self.param_groups:
            names = self._state_names(group)
            self._group_state.append((dict(group, params=list(group["params"])), names))
            for p in group["params"]:
                self._state.append([self._init_state(name, p, group) for name in names])
        self._engine = _core.Engine(self._kernel, flat, self._state)
        self._engine.set_rows(self._group_of.tolist())
        self._group_list = self._group_of.tolist()
        self._index = {id(p): i for i, p in enumerate(flat)}
        self.iterations = 0
        # torch convention: step count per parameter (None grads do not advance it)
        self._steps = [0] * len(flat)
        self._uniform = True
        self._custom_rows = False
        self._hp_cache = {}
        sizes = [len(g["params"]) for g in self.param_groups]
        self._first = [int(sum(sizes[:k])) if sizes[k] else -1 for k in range(len(sizes))]
        self._param_names = pnames
        self._wd_excluded = frozenset()
        self._init_options()

    # ---- construction helpers -------------------------------------------

    @staticmethod
    def _canonical(key):
        return _ALIASES.get(key, key)

    @staticmethod
    def _split_groups(params):
        return _hyper.split_param_groups(params)

    def _check_hyper(self, hp, where):
        for key, value in hp.items():
            if key == "params" or _is_schedule(value):
                continue
            if key in self._bool_hyper:
                if not isinstance(value, (bool, np.bool_)):
                    raise TypeError(f"{where}{key} must be a bool; got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating,
                                                                 np.integer)):
                raise TypeError(f"{where}{key} must be a float or a schedule (a callable "
                                f"step -> float); got {value!r}")
            try:
                finite = math.isfinite(value)
            except OverflowError:   # an int beyond the float range
                finite = False
            if not finite:
                raise ValueError(f"{where}{key} must be finite; got {value!r}")
        self._validate(hp, where)

    def _validate(self, hp, where):
        """Range checks of the constant hyper-parameters (schedules are checked per step)."""
        _nonneg(hp, "learning_rate", where)
        _nonneg(hp, "weight_decay", where)

    def _init_state(self, name, p, group):
        return np.zeros_like(p)

    def _state_names(self, group):
        raise NotImplementedError

    def _scalars(self, hp, t, group):
        raise NotImplementedError

    # ---- public attributes ---------------------------------------------

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
        probe = dict(self._defaults, learning_rate=value)
        self._check_hyper(probe, "")
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
            names = self._state_names(group)
            for _ in group["params"]:
                i = len(out)
                out.append(dict(zip(names, self._state[i])))
        return out

    def current_hyperparameters(self, group=0):
        """Hyper-parameters of a group as the next step will use them (schedules evaluated)."""
        return dict(self._evaluate(self.param_groups[group], self.iterations)[0])

    # ---- the step -------------------------------------------------------

    def _evaluate(self, group, step):
        """``(hp, shared)``: the group's hyper-parameters as floats (bools as
        bools) at ``step`` and the five shared scalars.

        Constants are converted and checked once per edit of the group; only
        schedules are called per step."""
        cache = self._hp_cache.get(id(group))
        if cache is None or cache[0] is not group or cache[1] != group.version:
            cache = self._cache_group(group)
        if not cache[3]:
            return cache[2], cache[4]
        hp = dict(cache[2])
        for key, fn in cache[3]:
            value = float(fn(step))
            if not math.isfinite(value):
                raise ValueError(f"{key} evaluated to {value!r} at step {step}; "
                                 f"hyper-parameters must be finite")
            hp[key] = value
        if hp["learning_rate"] < 0:
            raise ValueError(f"learning_rate evaluated to {hp['learning_rate']!r} at step "
                             f"{step}; it must be >= 0")
        # a scheduled value gets the range checks of a constant one (beta_1 -> 1 would
        # divide by zero in the bias correction, momentum > 1 would diverge silently)
        self._validate(hp, f"schedule value at step {step}: ")
        return hp, self._shared(hp)

    def _cache_group(self, group):
        gi = next((k for k, g in enumerate(self.param_groups) if g is group), None)
        self._check_hyper(group, f"param group {gi}: " if gi is not None else "")
        if gi is not None:
            self._check_state_layout(gi, group)
        constants, scheduled = {}, []
        for key, value in group.items():
            if key == "params":
                continue
            if key in self._bool_hyper:
                constants[key] = bool(value)
            elif _is_schedule(value):
                scheduled.append((key, value))
            else:
                constants[key] = float(value)
        shared = None if scheduled else self._shared(constants)
        cache = (group, group.version, constants, scheduled, shared)
        self._hp_cache[id(group)] = cache
        return cache

    def _check_state_layout(self, gi, group):
        """The state arrays are made at construction.  An edit may stop using
        some (momentum set to 0), but not need arrays that do not exist or give
        an array another role (the kernel would write through a missing array,
        or use one buffer as another)."""
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
        names = self._state_names(group)
        if names == kept[:len(names)]:
            return
        culprits = [k for k in initial if k != "params" and group[k] != initial[k]
                    and self._state_names({**group, k: initial[k]}) != names]
        keys = " and ".join(culprits) or "an edited hyper-parameter"
        raise ValueError(f"param group {gi}: {keys} cannot change this way after construction: "
                         f"the optimizer keeps the state arrays {list(kept)}, and the new "
                         f"setting needs {list(names)}. Build a new optimizer with the new "
                         f"setting (or set it back); nothing was changed")

    def _shared(self, hp):
        """The five shared scalars: flags, gscale, clip, l2, decay."""
        flags = 0
        gscale = 1.0
        if self._opt_maximize:
            flags |= _F_GSCALE
            gscale = -1.0
        clip = 0.0
        if self._opt_clipvalue is not None:
            flags |= _F_CLIP
            clip = self._opt_clipvalue
        l2 = 0.0
        decay = 1.0
        wd = hp.get("weight_decay", 0.0)
        if wd != 0.0:
            if self._opt_decoupled_weight_decay:
                flags |= _F_DECAY
                decay = 1.0 - hp["learning_rate"] * wd
            else:
                flags |= _F_L2
                l2 = wd
        return [float(flags), gscale, clip, l2, decay]

    def _row(self, group, t):
        hp, shared = self._evaluate(group, self.iterations)
        return shared + self._scalars(hp, t, group)

    def step(self, grads):
        """Apply one update in place: ``grads[i]`` is the gradient of ``params[i]``
        (``None`` leaves that parameter and its state untouched).  Every grad is
        checked before anything is written; on error nothing changes.
        """
        if self._general:
            return self._step_general(grads)
        lock = self._lock
        lock.acquire()     # not `with`: try/finally costs half as much per step
        try:
            engine = self._engine
            active = engine.set_grads(grads)
            grads = engine.bound      # what was checked is what is read below
            if active:
                try:
                    rows = self._step_rows(grads, active == self._nparams)
                except BaseException:
                    engine.clear_grads()
                    raise
                engine.run(rows, self._opt_num_threads or _threads.get_num_threads())
            else:
                engine.clear_grads()
            if active and self.convention == "torch":
                if active == self._nparams:
                    self._steps_bump += 1
                else:
                    steps = self._steps
                    for i, g in enumerate(grads):
                        if g is not None:
                            steps[i] += 1
                    self._uniform = self._steps_uniform()
            self.iterations += 1
        finally:
            lock.release()

    def _step_rows(self, grads, all_active):
        """Scalar rows for this step: one per group, or (torch convention with
        per-parameter step counts that differ) one per (group, step) pair."""
        keras = self.convention == "keras"
        if keras or (all_active and self._uniform):
            if self._custom_rows:
                self._engine.set_rows(self._group_of.tolist())
                self._custom_rows = False
            groups = self.param_groups
            if len(groups) == 1:
                # one group (whose first param is params[0]): the common case
                g = groups[0]
                t = self.iterations + 1 if keras else self._steps_base[0] + self._steps_bump + 1
                c = self._hp_cache.get(id(g))
                if c is not None and c[4] is not None and c[0] is g and c[1] == g.version:
                    return [c[4] + self._scalars(c[2], t, g)]
                return [self._row(g, t)]
            t = self.iterations + 1
            if not keras:
                base, bump = self._steps_base, self._steps_bump + 1
            caches = self._hp_cache
            rows = []
            for g, i in zip(groups, self._first):
                if not keras:
                    t = base[i] + bump if i >= 0 else 1
                # inline of _row for a group of constants whose cache is current
                c = caches.get(id(g))
                if c is not None and c[4] is not None and c[0] is g and c[1] == g.version:
                    rows.append(c[4] + self._scalars(c[2], t, g))
                else:
                    rows.append(self._row(g, t))
            return rows
        keys, rows, mapping = {}, [], []
        steps = self._steps
        for i, g in enumerate(grads):
            key = (self._group_list[i], steps[i] + 1)
            if key not in keys:
                keys[key] = len(rows)
                rows.append(self._row(self.param_groups[key[0]], key[1]))
            mapping.append(keys[key] if g is not None else 0)
        self._engine.set_rows(mapping)
        self._custom_rows = True
        return rows

    @property
    def _steps(self):
        """Per-parameter step counts (torch convention).  A step that updates
        every parameter advances them all through one counter; the list is
        brought up to date when read."""
        if self._steps_bump:
            bump = self._steps_bump
            self._steps_base = [k + bump for k in self._steps_base]
            self._steps_bump = 0
        return self._steps_base

    @_steps.setter
    def _steps(self, value):
        self._steps_base = value
        self._steps_bump = 0

    def _steps_uniform(self):
        firsts = {}
        for gi, k in zip(self._group_list, self._steps):
            if firsts.setdefault(gi, k) != k:
                return False
        return True

    # ---- optimizer-wide options (Keras order, spec §1.0) -------------------

    _needs_general = False   # the optimizer itself needs the general step (Nadam, Lamb)
    _two_pass = False        # the kernel has a reduction pass (Lamb)
    #: Registry kernels that serve options rather than one optimizer.
    _aux_kernels = ("ema",)

    def _set_options(self, clipnorm, global_clipnorm, use_ema, ema_momentum,
                     ema_overwrite_frequency, gradient_accumulation_steps, skip_nonfinite):
        clips = [k for k, v in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm),
                                ("clipvalue", self.clipvalue)) if v is not None]
        if len(clips) > 1:
            raise ValueError(f"only one of clipnorm, global_clipnorm and clipvalue may be set; "
                             f"got {', '.join(clips)}")
        self.clipnorm = clipnorm
        self.global_clipnorm = global_clipnorm
        self.use_ema = use_ema
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.skip_nonfinite = skip_nonfinite

    def _options_changed(self):
        """An option was set between steps: the cached shared scalars and the
        choice of step path are derived from the options, so derive them again."""
        self._hp_cache.clear()
        self._update_general()

    def _init_options(self):
        """State of the options; decides whether steps take the general path."""
        #: Steps refused by ``skip_nonfinite`` (nothing changed, not counted in iterations).
        self.skipped_steps = 0
        # calls to step(); differs from iterations only with gradient accumulation
        self._micro = 0
        self._accum = ([np.zeros_like(p) for p in self._params]
                       if self._opt_gradient_accumulation_steps else None)
        self._ema = None
        self._ema_engine = None
        if self._opt_use_ema:
            # copies, so finalize() before any step leaves the weights as they are
            self._ema = [p.copy() for p in self._params]
            self._ema_engine = _core.Engine("ema", self._params, [[a] for a in self._ema])
        self._update_general()

    def _update_general(self):
        if not getattr(self, "_general", False):
            self._micro = self.iterations
        self._general = bool(self._needs_general or self._opt_clipnorm is not None
                             or self._opt_global_clipnorm is not None or self._opt_use_ema
                             or self._opt_gradient_accumulation_steps or self._opt_skip_nonfinite
                             or self._wd_excluded)

    @property
    def micro_steps(self):
        """Calls to :meth:`step` that were applied or accumulated (equals
        ``iterations`` unless ``gradient_accumulation_steps`` is set)."""
        return self._micro if self._general else self.iterations

    @property
    def averages(self):
        """The moving averages of the parameters (``use_ema=True``), live arrays."""
        if self._ema is None:
            raise AttributeError("averages exist only with use_ema=True")
        return list(self._ema)

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
            self._update_general()

    def finalize(self):
        """Copy the moving averages into the parameters (``use_ema=True``; a
        no-op otherwise).  Keras calls this ``finalize_variable_values``."""
        if self._ema is None:
            return
        with self._lock:
            for p, a in zip(self._params, self._ema):
                np.copyto(p, a)

    finalize_variable_values = finalize

    def _options_config(self):
        return {"clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "use_ema": self.use_ema, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "skip_nonfinite": self.skip_nonfinite}

    def _group_names_config(self, gi):
        start = int(sum(len(g["params"]) for g in self.param_groups[:gi]))
        names = self._param_names[start:start + len(self.param_groups[gi]["params"])]
        return {"names": list(names)} if any(n is not None for n in names) else {}

    def _extra_state(self):
        """Counters and arrays of the options (and of subclasses) for state_dict."""
        out = {"micro_steps": int(self.micro_steps), "skipped_steps": int(self.skipped_steps)}
        if self._ema is not None:
            out["ema"] = [a.copy() for a in self._ema]
        if self._accum is not None:
            out["accumulators"] = [a.copy() for a in self._accum]
        return out

    def _check_extra_state(self, extra):
        """Validate the ``extra`` entry of a state dict; returns it normalised."""
        if not isinstance(extra, dict):
            raise ValueError("state 'extra' must be a dict")
        out = {key: _check_counter(extra.get(key, 0), f"extra.{key}")
               for key in ("micro_steps", "skipped_steps")}
        for key, mine in (("ema", self._ema), ("accumulators", self._accum)):
            theirs = extra.get(key)
            if mine is None:
                if theirs is not None:
                    raise ValueError(f"state has {key} but this optimizer keeps none (were the "
                                     f"optimizer options the same?)")
                continue
            if theirs is None or len(theirs) != len(mine):
                raise ValueError(f"state lacks the {len(mine)} {key} arrays this optimizer "
                                 f"keeps (were the optimizer options the same?)")
            arrays = []
            for i, (a, b) in enumerate(zip(mine, theirs)):
                b = np.asarray(b)
                if b.shape != a.shape or b.dtype != a.dtype:
                    raise ValueError(f"params[{i}] {key}: expected {a.dtype} {a.shape}; got "
                                     f"{b.dtype} {b.shape}")
                arrays.append(b)
            out[key] = arrays
        return out

    def _load_extra_state(self, extra):
        self._micro = extra["micro_steps"]
        self.skipped_steps = extra["skipped_steps"]
        for key, mine in (("ema", self._ema), ("accumulators", self._accum)):
            if mine is not None:
                for a, b in zip(mine, extra[key]):
                    np.copyto(a, b)

    # hooks of the general step (Nadam keeps momentum-schedule products)

    def _begin_update(self, sched_step):
        """Called before the rows of an update are built; must not change state."""

    def _row_key(self, i):
        return ()

    def _scalars_at(self, hp, t, group, i, key):
        return self._scalars(hp, t, group)

    def _commit_update(self, grads, keys):
        """Called after an update was applied."""

    def _step_general(self, grads):
        """The step with options: skip_nonfinite, accumulation, clipping, weight-decay
        exclusion, two-pass kernels, EMA -- in Keras's order (spec §1.0)."""
        with self._lock:
            engine = self._engine
            nthreads = self._opt_num_threads or _threads.get_num_threads()
            active = engine.set_grads(grads)
            grads = engine.bound      # what was checked is what is read below
            try:
                if self._ema_engine is not None:
                    self._ema_engine.check()   # before the update, not after it
                if self._opt_skip_nonfinite and active and engine.nonfinite(nthreads).any():
                    self.skipped_steps += 1
                    return
                k = self._opt_gradient_accumulation_steps
                updates_before = self.iterations
                if k and (self._micro + 1) % k:
                    engine.clear_grads()
                    for a, g in zip(self._accum, grads):
                        if g is not None:
                            np.add(a, g, out=a)
                else:
                    sched_step = (self._micro if k and self.convention == "keras"
                                  else self.iterations)
                    self._begin_update(sched_step)
                    rows, mapping, keys = self._plan_rows(grads, sched_step) if active else \
                        ([], None, None)
                    # nothing has changed up to here: every error above leaves all as it was
                    if k:
                        engine.clear_grads()
                        eff = [None] * self._nparams
                        for i, (a, g) in enumerate(zip(self._accum, grads)):
                            if g is not None:
                                np.add(g, a, out=a)
                                np.divide(a, k, out=a)
                                eff[i] = a
                        if active:
                            engine.set_grads(eff)
                    if active:
                        self._apply_rows(rows, mapping, grads, nthreads)
                    if k:
                        for a in self._accum:
                            a.fill(0)
                    self._commit_update(grads, keys)
                    if self.convention == "torch" and active:
                        for i, g in enumerate(grads):
                            if g is not None:
                                self._steps[i] += 1
                        self._uniform = self._steps_uniform()
                    self.iterations += 1
                if self._ema_engine is not None:
                    mu = self._opt_ema_momentum if updates_before else 0.0
                    freq = self._opt_ema_overwrite_frequency
                    over = 1.0 if freq and (updates_before + 1) % freq == 0 else 0.0
                    self._ema_engine.run_params([[0.0, 1.0, 0.0, 0.0, 1.0, mu, 1.0 - mu, over]],
                                                nthreads)
                self._micro += 1
            finally:
                engine.clear_grads()

    def _plan_rows(self, grads, sched_step):
        """Scalar rows of one update and the row of each tensor, before clipping.
        Rows are shared by tensors of one group at one step (and one exclusion
        state); evaluating them raises before anything is written."""
        keras = self.convention == "keras"
        t_keras = self.iterations + 1
        excluded = self._wd_excluded
        cache, rows = {}, []
        mapping = [0] * self._nparams
        keys = [None] * self._nparams
        for i, g in enumerate(grads):
            if g is None:
                continue
            gi = self._group_list[i]
            t = t_keras if keras else self._steps[i] + 1
            key = (gi, t, i in excluded) + self._row_key(i)
            r = cache.get(key)
            if r is None:
                group = self.param_groups[gi]
                hp, shared = self._evaluate(group, sched_step)
                row = list(shared) + list(self._scalars_at(hp, t, group, i, key))
                if key[2]:
                    row[0] = float(int(row[0]) & ~(_F_DECAY | _F_L2))
                    row[3], row[4] = 0.0, 1.0
                r = cache[key] = len(rows)
                rows.append(row)
            mapping[i] = r
            keys[i] = key
        return rows, mapping, keys

    def _apply_rows(self, rows, mapping, grads, nthreads):
        """Clip (per-tensor or global factor in the GSCALE slot), then run the kernel."""
        engine = self._engine
        if self._opt_clipnorm is not None:
            c = self._opt_clipnorm
            norms = engine.norms(0, nthreads)
            for i, g in enumerate(grads):
                if g is None:
                    continue
                nrm = float(norms[i])
                # c/max(norm, c), NaN-propagating: NaN norms give NaN, inf gives 0
                f = 1.0 if nrm <= c else c / nrm
                if f != 1.0:
                    row = list(rows[mapping[i]])
                    row[0] = float(int(row[0]) | _F_GSCALE)
                    row[1] *= f
                    mapping[i] = len(rows)
                    rows.append(row)
        elif self._opt_global_clipnorm is not None:
            c = self._opt_global_clipnorm
            total = math.sqrt(math.fsum(engine.sumsq(0, nthreads).tolist()))
            if total == math.inf:
                # the sum of squares overflowed: combine per-tensor norms with scaling
                # (still inf, or NaN, when a grad holds inf or NaN)
                total = math.hypot(*engine.norms(0, nthreads).tolist())
            # Keras: c * min(1/norm, 1/c), turned into NaN when the norm is not finite
            inv = 1.0 / total if total > 0 else math.inf
            f = c * min(inv, 1.0 / c) + (total - total)
            for row in rows:
                row[0] = float(int(row[0]) | _F_GSCALE)
                row[1] *= f
        engine.set_rows(mapping)
        self._custom_rows = True
        if not self._two_pass:
            engine.run(rows, nthreads)
            return
        sums = engine.run_reduce(rows, nthreads)
        rows2, mapping2 = [], [0] * self._nparams
        for i, g in enumerate(grads):
            if g is None:
                continue
            wn, rn = math.sqrt(sums[i, 0]), math.sqrt(sums[i, 1])
            phi = wn / rn if wn > 0 and rn > 0 else 1.0
            row = list(rows[mapping[i]])
            row[0] = 0.0
            row[self._phi_slot] *= phi
            mapping2[i] = len(rows2)
            rows2.append(row)
        engine.set_rows(mapping2)
        engine.run(rows2, nthreads)

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

    # ---- configuration and state ------------------------------------------

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
            cfg["param_groups"] = [
                dict({k: _config_value(v, schedules) for k, v in over.items()},
                     size=len(group["params"]), **self._group_names_config(gi))
                for gi, (group, over) in enumerate(zip(self.param_groups, self._overrides))]
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
        from . import schedules
        with self._lock:
            return {
                "format_version": 1,
                "class": type(self).__name__,
                "config": self.get_config(),
                "iterations": int(self.iterations),
                "steps": np.array(self._steps, dtype=np.int64),
                "shapes": [list(p.shape) for p in self._params],
                "dtypes": [p.dtype.str for p in self._params],
                "state": [[a.copy() for a in s] for s in self._state],
                "schedules": _schedule_states(self, schedules),
                "extra": self._extra_state(),
            }

    def load_state_dict(self, sd):
        """Restore :meth:`state_dict`.  Everything is checked first (format
        version, class, convention, shapes, dtypes, counters, schedule state);
        a mismatch raises ``ValueError`` and leaves the optimizer as it was."""
        with self._lock:
            apply = self._check_state_dict(sd)
            apply()

    def _check_state_dict(self, sd):
        """Validate ``sd`` completely; return a function that applies it and cannot fail."""
        if not isinstance(sd, dict) or sd.get("format_version") != 1:
            version = sd.get("format_version") if isinstance(sd, dict) else None
            raise ValueError(f"not a fastopt optimizer state: format_version 1 expected, got "
                             f"{version!r}. Pass the dict returned by state_dict()")
        missing = [k for k in ("class", "iterations", "steps", "state") if k not in sd]
        if missing:
            raise ValueError(f"optimizer state is missing {missing}; it was not written by "
                             f"state_dict() (or was edited)")
        name = type(self).__name__
        if sd["class"] != name:
            raise ValueError(f"state is of a {sd['class']} optimizer; this is a {name}. Load it "
                             f"into a {sd['class']} built over the same parameters")
        config = sd.get("config") or {}
        if not isinstance(config, dict):
            raise ValueError(f"config: expected a dict; got {type(config).__name__}")
        conv = config.get("convention", self.convention)
        if conv != self.convention:
            raise ValueError(f"state is of a convention={conv!r} {name}; this one has "
                             f"convention={self.convention!r}. Build the optimizer with "
                             f"convention={conv!r} to resume it")
        for key, mine in (("shapes", [list(p.shape) for p in self._params]),
                          ("dtypes", [p.dtype.str for p in self._params])):
            theirs = sd.get(key)
            if theirs is None:
                continue
            if not isinstance(theirs, (list, tuple)) or (key == "shapes" and not all(
                    isinstance(t, (list, tuple)) for t in theirs)):
                raise ValueError(f"{key}: expected a list with one entry per parameter; got "
                                 f"{theirs!r:.80}")
            theirs = [list(t) if key == "shapes" else t for t in theirs]
            if len(theirs) != len(mine):
                raise ValueError(f"state has {len(theirs)} parameters; this optimizer has "
                                 f"{len(mine)}. Build it over the parameters it was saved with")
            for i, (a, b) in enumerate(zip(mine, theirs)):
                if a != b:
                    raise ValueError(f"params[{i}]: the state was saved for {key[:-1]} {b}; "
                                     f"this optimizer's params[{i}] has {key[:-1]} {a}. Build "
                                     f"it over the parameters it was saved with, in order")
        state = sd["state"]
        if not isinstance(state, (list, tuple)) or len(state) != len(self._state):
            n = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
            raise ValueError(f"state has {n} parameters; this optimizer has "
                             f"{len(self._state)}. Build it over the parameters it was saved "
                             f"with")
        for i, (mine, theirs) in enumerate(zip(self._state, state)):
            if not isinstance(theirs, (list, tuple)) or len(theirs) != len(mine):
                n = len(theirs) if isinstance(theirs, (list, tuple)) else type(theirs).__name__
                raise ValueError(f"params[{i}]: state has {n} arrays; expected "
                                 f"{len(mine)} (were the optimizer options the same?)")
            for k, (a, b) in enumerate(zip(mine, theirs)):
                b = np.asarray(b)
                if b.shape != a.shape or b.dtype != a.dtype:
                    got = f"{b.dtype} {b.shape}"
                    raise ValueError(f"params[{i}] state {k}: expected {a.dtype} {a.shape}; "
                                     f"got {got}")
        steps = np.asarray(sd["steps"])
        if (steps.dtype.kind not in "iu" and steps.size) or steps.shape != (len(self._steps),):
            got = f"{steps.dtype} {steps.shape}"
            raise ValueError(f"steps: expected {len(self._steps)} integer counts; got {got}")
        if steps.size and (steps.min() < 0 or steps.max() > _COUNTER_MAX):
            raise ValueError(f"steps: step counters must be >= 0 and < 2**63; got "
                             f"{steps.min()} .. {steps.max()}")
        iterations = _check_counter(sd["iterations"], "iterations")
        sched_states = sd.get("schedules") or {}
        if not isinstance(sched_states, dict):
            raise ValueError(f"schedules: expected a dict; got {type(sched_states).__name__}")
        _check_schedule_states(self, sched_states)
        extra = self._check_extra_state(sd.get("extra", {}))

        def apply():
            for mine, theirs in zip(self._state, state):
                for a, b in zip(mine, theirs):
                    np.copyto(a, np.asarray(b))
            self._steps = [int(k) for k in steps]
            self.iterations = iterations
            self._uniform = self._steps_uniform()
            _load_schedule_states(self, sched_states)
            self._load_extra_state(extra)

        return apply

    def __repr__(self):
        n = sum(p.size for p in self._params)
        return (f"{type(self).__name__}(convention={self.convention!r}, "
                f"learning_rate={self.learning_rate!r}, params={len(self._params)} arrays / "
                f"{n} elements, iterations={self.iterations})")


# ---- helpers ---------------------------------------------------------------

def _group_names(over, size, gi):
    """Parameter names given by a param group ("name" for all, "names" one each)."""
    name = over.pop("name", None)
    names = over.pop("names", None)
    if names is None:
        names = over.pop("param_names", None)
    if name is not None and names is not None:
        raise ValueError(f"param group {gi}: give either 'name' or 'names', not both")
    if names is not None:
        names = list(names)
        if len(names) != size:
            raise ValueError(f"param group {gi}: 'names' has {len(names)} entries for {size} "
                             f"params")
    else:
        names = [name] * size
    for n in names:
        if n is not None and not isinstance(n, str):
            raise TypeError(f"param group {gi}: parameter names must be strings; got {n!r}")
    return names


def _nonneg(hp, key, where):
    v = hp.get(key)
    if v is not None and not _is_schedule(v) and v < 0:
        raise ValueError(f"{where}{key} must be >= 0; got {v!r}")


def _unit(hp, key, where, closed=False):
    v = hp.get(key)
    if v is None or _is_schedule(v):
        return
    ok = 0.0 <= v <= 1.0 if closed else 0.0 <= v < 1.0
    if not ok:
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"{where}{key} must be in {interval}; got {v!r}")


def _check_moments(hp, where):
    """The hyper-parameters of the Adam family: two decay rates and an epsilon."""
    _unit(hp, "beta_1", where)
    _unit(hp, "beta_2", where)
    _nonneg(hp, "epsilon", where)


def _config_value(value, schedules):
    if _is_schedule(value):
        return schedules.serialize(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _from_config_value(value, schedules):
    if isinstance(value, dict) and "class_name" in value:
        return schedules.deserialize(value)
    return value


def _iter_schedules(opt):
    for key, value in opt._defaults.items():
        if _is_schedule(value):
            yield f"defaults.{key}", value
    for gi, over in enumerate(opt._overrides):
        for key, value in over.items():
            if _is_schedule(value):
                yield f"group{gi}.{key}", value


def _schedule_states(opt, schedules):
    out = {}
    for path, sched in _iter_schedules(opt):
        if hasattr(sched, "state_dict"):
            out[path] = sched.state_dict()
    return out


_COUNTER_MAX = 2 ** 63 - 1     # counters are int64 in the kernels and in checkpoints


def _check_counter(value, name):
    """``value`` as an int if it can be a step counter (an int, not a bool,
    in [0, 2**63)); else ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        got = f"{value!r:.60}"
    elif not 0 <= value <= _COUNTER_MAX:
        bits = abs(int(value)).bit_length()
        got = value if bits <= 128 else f"an int of {bits} bits"
    else:
        return int(value)
    raise ValueError(f"{name}: step counters must be ints >= 0 and < 2**63; got {got}. "
                     f"Pass a state written by state_dict() (or fastopt.save)")


def _check_schedule_states(opt, states):
    """Refuse schedule state that does not fit: loaded into a copy of each
    schedule first, so a bad entry raises before anything is restored."""
    import copy
    mine = {path: s for path, s in _iter_schedules(opt) if hasattr(s, "state_dict")}
    extra = set(states) - set(mine)
    if extra:
        raise ValueError(f"state carries schedule state for {sorted(extra)}, which this "
                         f"optimizer's hyper-parameters are not schedules for")
    for path, sched in mine.items():
        if path in states and hasattr(sched, "load_state_dict"):
            try:
                copy.deepcopy(sched).load_state_dict(states[path])
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError,
                    RecursionError) as e:
                raise ValueError(f"schedule state for {path} does not fit the schedule "
                                 f"{type(sched).__name__}: {e}") from e


def _load_schedule_states(opt, states):
    for path, sched in _iter_schedules(opt):
        if path in states and hasattr(sched, "load_state_dict"):
            sched.load_state_dict(states[path])


# ---- the optimizers ----------------------------------------------------------

class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum and Nesterov momentum (NAG).

    Parameters
    ----------
    params : list of ndarray, or list of dict
        C-contiguous float32/float64 arrays updated in place, or param groups
        (``{"params": [...], "learning_rate": ..., ...}``).
    learning_rate : float or schedule
        Keras default 0.01, torch default 1e-3.  ``lr`` is an alias.
    momentum : float or schedule
        Momentum factor in [0, 1]; 0 (default) is plain SGD.
    nesterov : bool
        Nesterov accelerated gradient.
    dampening : float
        torch convention only: ``(1 - dampening)`` scales new gradients in the
        buffer (not on a parameter's first step).
    convention : {"keras", "torch"}
        Whose formulas and defaults to reproduce.
    weight_decay : float or schedule
        Keras: decoupled ``w -= lr*wd*w`` before the update.  torch: coupled L2
        ``g += wd*w`` unless ``decoupled_weight_decay=True``.
    maximize : bool
        Ascend instead of descend (gradients negated).
    clipvalue : float
        Clip every gradient element to ``[-clipvalue, clipvalue]`` first.
    num_threads : int
        Threads for this optimizer (default: :func:`fastopt.get_num_threads`).

    Notes
    -----
    Keras (lr inside the velocity)::

        v <- momentum*v - lr*g
        w <- w + v                       (nesterov: w <- w + momentum*v - lr*g)

    torch (lr outside the buffer; the first step copies g)::

        b <- g (first step)  or  momentum*b + (1 - dampening)*g
        w <- w - lr*b                    (nesterov: w <- w - lr*(g + momentum*b))

    Both give the same trajectory for a constant learning rate; with a
    schedule Keras applies a new rate to new gradients only, while torch
    rescales the whole buffer.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.array([1.0, -2.0])
    >>> opt = fo.SGD([w], learning_rate=0.1, momentum=0.9)
    >>> opt.step([np.array([0.5, 0.5])])
    >>> w
    array([ 0.95, -2.05])
    """

    _kernel = "sgd"
    _hyper = {
        "keras": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
        "torch": {"learning_rate": 1e-3, "momentum": 0.0, "nesterov": False,
                  "dampening": 0.0},
    }
    _bool_hyper = ("nesterov",)

    def __init__(self, params, learning_rate=None, momentum=None, nesterov=None, *,
                 dampening=None, convention="keras", **kwargs):
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         momentum=momentum, nesterov=nesterov, dampening=dampening,
                         **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _unit(hp, "momentum", where, closed=True)
        _unit(hp, "dampening", where, closed=True)
        if self.convention == "torch" and hp.get("nesterov"):
            mom, damp = hp.get("momentum", 0.0), hp.get("dampening", 0.0)
            if (not _is_schedule(mom) and mom <= 0) or (not _is_schedule(damp) and damp != 0):
                raise ValueError(f"{where}nesterov=True needs momentum > 0 and dampening = 0 "
                                 f"in the torch convention (as torch.optim.SGD)")

    def _state_names(self, group):
        mom = group["momentum"]
        return ("momentum",) if _is_schedule(mom) or mom != 0 else ()

    def _scalars(self, hp, t, group):
        mom = hp["momentum"]
        if not self._state_names(group):
            mode = 0.0
        elif self.convention == "keras":
            mode = 1.0
        else:
            mode = 3.0 if t == 1 else 2.0
        return [hp["learning_rate"], mom, mode, 1.0 if hp["nesterov"] else 0.0,
                1.0 - hp.get("dampening", 0.0)]


class Adam(Optimizer):
    r"""Adam, with AMSGrad as an option.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-3 in both conventions.  ``lr`` is an alias.
    beta_1, beta_2 : float or schedule
        Decay rates of the first and second moment estimates (0.9, 0.999).
    epsilon : float
        Keras: 1e-7, added to ``sqrt(v)`` before the bias correction ("epsilon
        hat").  torch: 1e-8, added to ``sqrt(v / (1 - beta_2^t))``.  ``eps``
        is an alias.
    amsgrad : bool
        Use the running maximum of the (uncorrected) second moment.
    convention : {"keras", "torch"}
        Keras 3 or torch.optim formulas and defaults.
    weight_decay : float or schedule
        Keras: decoupled.  torch: coupled L2 unless
        ``decoupled_weight_decay=True`` (which is :class:`AdamW`).

    Notes
    -----
    With ``t`` the 1-based step::

        m <- m + (1 - beta_1)*(g - m)
        v <- beta_2*v + (1 - beta_2)*g^2
        keras: w <- w - lr*sqrt(1 - beta_2^t)/(1 - beta_1^t) * m/(sqrt(v) + eps)
        torch: w <- w - lr/(1 - beta_1^t) * m/(sqrt(v)/sqrt(1 - beta_2^t) + eps)

    The conventions agree exactly when ``epsilon = 0``.  The kernel does one
    square root and one division per element; the factors are computed once
    per step in double.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(3, dtype=np.float32)
    >>> opt = fo.Adam([w], learning_rate=0.1)
    >>> opt.step([np.array([1.0, -1.0, 0.0], dtype=np.float32)])
    >>> np.round(w, 4)
    array([-0.1,  0.1,  0. ], dtype=float32)
    """

    _kernel = "adam"
    _hyper = {
        "keras": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
                  "amsgrad": False},
        "torch": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8,
                  "amsgrad": False},
    }
    _bool_hyper = ("amsgrad",)

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None,
                 amsgrad=None, *, betas=None, convention="keras", **kwargs):
        if betas is not None:
            if beta_1 is not None or beta_2 is not None:
                raise TypeError("pass either betas=(b1, b2) or beta_1/beta_2, not both")
            beta_1, beta_2 = betas
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad,
                         **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _check_moments(hp, where)

    def _state_names(self, group):
        return ("m", "v", "vhat") if group["amsgrad"] else ("m", "v")

    def _scalars(self, hp, t, group):
        b1, b2 = hp["beta_1"], hp["beta_2"]
        bc1 = 1.0 - b1 ** t
        bc2 = 1.0 - b2 ** t
        lr = hp["learning_rate"]
        if self.convention == "keras":
            a, c = lr * math.sqrt(bc2) / bc1, 1.0
        else:
            a, c = lr / bc1, 1.0 / math.sqrt(bc2)
        return [a, c, hp["epsilon"], 1.0 - b1, b2, 1.0 - b2, 1.0 if hp["amsgrad"] else 0.0]


class AdamW(Adam):
    r"""Adam with decoupled weight decay.

    Parameters
    ----------
    params, learning_rate, beta_1, beta_2, epsilon, amsgrad, convention
        As :class:`Adam`.
    weight_decay : float or schedule
        Keras default 0.004; torch default 0.01.  Always decoupled.

    Notes
    -----
    Before the Adam update (see :class:`Adam` for its math and the epsilon
    placement of each convention)::

        w <- w * (1 - lr*weight_decay)          (lr = the scheduled rate)

    The Adam update is computed from ``g``, not from the decayed ``w``; as in
    both Keras and torch, the decay is multiplied by the scheduled learning
    rate, not by a separate schedule multiplier.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.ones(2)
    >>> opt = fo.AdamW([w], learning_rate=0.1, weight_decay=0.5)
    >>> opt.step([np.zeros(2)])
    >>> w
    array([0.95, 0.95])
    """

    _hyper = {
        "keras": dict(Adam._hyper["keras"], weight_decay=0.004),
        "torch": dict(Adam._hyper["torch"], weight_decay=0.01),
    }
    _decoupled_always = True

    def __init__(self, params, learning_rate=None, weight_decay=None, beta_1=None,
                 beta_2=None, epsilon=None, amsgrad=None, **kwargs):
        super().__init__(params, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, weight_decay=weight_decay,
                         **kwargs)


def _betas(beta_1, beta_2, betas):
    if betas is not None:
        if beta_1 is not None or beta_2 is not None:
            raise TypeError("pass either betas=(b1, b2) or beta_1/beta_2, not both")
        beta_1, beta_2 = betas
    return beta_1, beta_2


def _not_scheduled(hp, key, where):
    if _is_schedule(hp.get(key)):
        raise TypeError(f"{where}{key} sets the initial state and cannot be a schedule; "
                        f"pass a float")


class Adagrad(Optimizer):
    r"""Adagrad: per-element learning rates from the sum of squared gradients.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Keras default 1e-3, torch default 1e-2.  ``lr`` is an alias.
    initial_accumulator_value : float
        Starting value of the accumulator: Keras 0.1, torch 0.
    epsilon : float
        Keras 1e-7 inside the square root; torch 1e-10 outside it.  ``eps``
        is an alias.
    lr_decay : float or schedule
        torch convention only: ``lr_t = lr / (1 + (t - 1)*lr_decay)``.
    convention : {"keras", "torch"}
        Keras 3 or torch.optim formulas and defaults.
    **kwargs
        The options of :class:`Optimizer` (weight decay, clipping, EMA, ...).

    Notes
    -----
    ::

        acc <- acc + g^2
        keras: w <- w - lr * g / sqrt(acc + eps)
        torch: w <- w - lr/(1 + (t-1)*lr_decay) * g / (sqrt(acc) + eps)

    torch's first step is ``lr*sign(g)`` (accumulator 0); Keras's is
    ``lr*g/sqrt(0.1 + g^2)``.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.Adagrad([w], learning_rate=0.1, convention="torch")
    >>> opt.step([np.array([2.0, -0.5])])
    >>> w
    array([-0.1,  0.1])
    """

    _kernel = "adagrad"
    _hyper = {
        "keras": {"learning_rate": 1e-3, "initial_accumulator_value": 0.1, "epsilon": 1e-7},
        "torch": {"learning_rate": 1e-2, "initial_accumulator_value": 0.0, "epsilon": 1e-10,
                  "lr_decay": 0.0},
    }

    def __init__(self, params, learning_rate=None, initial_accumulator_value=None,
                 epsilon=None, *, lr_decay=None, convention="keras", **kwargs):
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         initial_accumulator_value=initial_accumulator_value,
                         epsilon=epsilon, lr_decay=lr_decay, **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _not_scheduled(hp, "initial_accumulator_value", where)
        _nonneg(hp, "initial_accumulator_value", where)
        _nonneg(hp, "epsilon", where)
        _nonneg(hp, "lr_decay", where)

    def _init_state(self, name, p, group):
        return np.full_like(p, group["initial_accumulator_value"])

    def _state_names(self, group):
        return ("accumulator",)

    def _scalars(self, hp, t, group):
        lr, eps = hp["learning_rate"], hp["epsilon"]
        if self.convention == "keras":
            return [lr, eps, 0.0]
        return [lr / (1.0 + (t - 1) * hp["lr_decay"]), 0.0, eps]


class RMSprop(Optimizer):
    r"""RMSprop, with optional momentum and the centered variant.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Keras default 1e-3, torch default 1e-2.  ``lr`` is an alias.
    rho : float or schedule
        Decay of the mean square: Keras 0.9, torch 0.99.  ``alpha`` (torch's
        name) is an alias.
    momentum : float or schedule
        Momentum factor (default 0: no momentum buffer).
    epsilon : float
        Keras 1e-7 inside the square root; torch 1e-8 outside it.
    centered : bool
        Normalise by the variance estimate ``v - mg^2`` instead of ``v``.
    convention : {"keras", "torch"}
        Keras 3 or torch.optim formulas and defaults.
    **kwargs
        The options of :class:`Optimizer`.

    Notes
    -----
    ::

        v  <- rho*v + (1 - rho)*g^2
        mg <- rho*mg + (1 - rho)*g                 (centered)
        s   = max(v - mg^2, 0) if centered else v
        keras: q = g / sqrt(s + eps);   m <- momentum*m + lr*q;  w <- w - m
        torch: q = g / (sqrt(s) + eps); m <- momentum*m + q;     w <- w - lr*m
        (without momentum: w <- w - lr*q)

    ``v - mg^2`` can round below zero; it is clamped at 0 (Keras's inner eps
    hides this, torch's sqrt gives NaN).  With momentum and a changing
    learning rate the conventions differ: Keras keeps the learning rate inside
    the buffer, torch applies the current one to the whole buffer.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.RMSprop([w], learning_rate=0.01, epsilon=0.0)
    >>> opt.step([np.array([1.0, -1.0])])
    >>> np.round(w, 6)
    array([-0.031623,  0.031623])
    """

    _kernel = "rmsprop"
    _hyper = {
        "keras": {"learning_rate": 1e-3, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7,
                  "centered": False},
        "torch": {"learning_rate": 1e-2, "rho": 0.99, "momentum": 0.0, "epsilon": 1e-8,
                  "centered": False},
    }
    _bool_hyper = ("centered",)

    def __init__(self, params, learning_rate=None, rho=None, momentum=None, epsilon=None,
                 centered=None, *, alpha=None, convention="keras", **kwargs):
        if alpha is not None:
            if rho is not None:
                raise TypeError("pass either rho or alpha (its torch name), not both")
            rho = alpha
        super().__init__(params, convention=convention, learning_rate=learning_rate, rho=rho,
                         momentum=momentum, epsilon=epsilon, centered=centered, **kwargs)

    @staticmethod
    def _canonical(key):
        key = _ALIASES.get(key, key)
        return "rho" if key == "alpha" else key

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _unit(hp, "rho", where, closed=True)
        _unit(hp, "momentum", where, closed=True)
        _nonneg(hp, "epsilon", where)

    def _state_names(self, group):
        mom = group["momentum"]
        names = ("v", "mg") if group["centered"] else ("v",)
        return names + ("momentum",) if _is_schedule(mom) or mom != 0 else names

    def _scalars(self, hp, t, group):
        lr, rho, eps = hp["learning_rate"], hp["rho"], hp["epsilon"]
        mom = self._state_names(group)[-1] == "momentum"
        if self.convention == "keras":
            e_in, e_out, a_in, a_out = eps, 0.0, lr, 1.0
        else:
            e_in, e_out, a_in, a_out = 0.0, eps, 1.0, lr
        return [lr, rho, 1.0 - rho, e_in, e_out, hp["momentum"], a_in, a_out,
                1.0 if hp["centered"] else 0.0, 1.0 if mom else 0.0]


class Adamax(Optimizer):
    r"""Adamax: Adam with the infinity norm.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Keras default 1e-3, torch default 2e-3.  ``lr`` is an alias.
    beta_1, beta_2 : float or schedule
        0.9 and 0.999.  ``betas=(b1, b2)`` is accepted.
    epsilon : float
        Keras 1e-7 added after the max; torch 1e-8 inside the max.
    convention : {"keras", "torch"}
        Keras 3 or torch.optim formulas and defaults.
    **kwargs
        The options of :class:`Optimizer`.

    Notes
    -----
    ::

        m <- m + (1 - beta_1)*(g - m)
        keras: u <- max(beta_2*u, |g|);        w <- w - lr/(1 - beta_1^t) * m/(u + eps)
        torch: u <- max(beta_2*u, |g| + eps);  w <- w - lr/(1 - beta_1^t) * m/u

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.Adamax([w], learning_rate=0.1, epsilon=0.0)
    >>> opt.step([np.array([0.5, -2.0])])
    >>> w
    array([-0.1,  0.1])
    """

    _kernel = "adamax"
    _hyper = {
        "keras": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        "torch": {"learning_rate": 2e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
    }

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 betas=None, convention="keras", **kwargs):
        beta_1, beta_2 = _betas(beta_1, beta_2, betas)
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _check_moments(hp, where)

    def _state_names(self, group):
        return ("m", "u")

    def _scalars(self, hp, t, group):
        b1, b2, eps = hp["beta_1"], hp["beta_2"], hp["epsilon"]
        a = hp["learning_rate"] / (1.0 - b1 ** t)
        e_in, e_out = (0.0, eps) if self.convention == "keras" else (eps, 0.0)
        return [a, 1.0 - b1, b2, e_in, e_out]


def _nadam_mu(hp, t):
    return hp["beta_1"] * (1.0 - 0.5 * 0.96 ** (t * hp["momentum_decay"]))


class Nadam(Optimizer):
    r"""Nadam: Adam with Nesterov momentum and a momentum schedule.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Keras default 1e-3, torch default 2e-3.  ``lr`` is an alias.
    beta_1, beta_2 : float or schedule
        0.9 and 0.999.  ``betas=(b1, b2)`` is accepted.
    epsilon : float
        Keras 1e-7, torch 1e-8; both add it to ``sqrt(v/(1 - beta_2^t))``.
    momentum_decay : float or schedule
        ``psi`` of the momentum schedule ``mu_t = beta_1*(1 - 0.5*0.96^(t*psi))``.
        Keras 3 (default 1.0) uses ``0.96^t``; torch's default 0.004 is also
        the Keras 2 / tf.keras schedule (``schedule_decay``).
    convention : {"keras", "torch"}
        Keras 3 or torch.optim formulas and defaults.
    **kwargs
        The options of :class:`Optimizer` (torch: ``decoupled_weight_decay``).

    Notes
    -----
    With ``P_t = mu_1 * ... * mu_t``::

        m <- m + (1 - beta_1)*(g - m)
        v <- beta_2*v + (1 - beta_2)*g^2
        w <- w - lr * (mu_{t+1}/(1 - P_t*mu_{t+1}) * m + (1 - mu_t)/(1 - P_t) * g)
                  / (sqrt(v/(1 - beta_2^t)) + eps)

    Keras keeps one product ``P`` per optimizer (per param group here),
    advanced once per update even for parameters without a grad; torch keeps
    one per parameter, advanced when that parameter is stepped.  Both are
    kept in double on the host (torch keeps a float32 tensor unless the
    default dtype is float64).  The per-parameter products make a step cost a
    little Python work per parameter.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.Nadam([w], learning_rate=0.1, epsilon=0.0)
    >>> opt.step([np.array([1.0, -1.0])])
    >>> np.round(w, 6)
    array([-0.106279,  0.106279])
    """

    _kernel = "nadam"
    _hyper = {
        "keras": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
                  "momentum_decay": 1.0},
        "torch": {"learning_rate": 2e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8,
                  "momentum_decay": 4e-3},
    }
    _needs_general = True

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 momentum_decay=None, betas=None, convention="keras", **kwargs):
        beta_1, beta_2 = _betas(beta_1, beta_2, betas)
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         momentum_decay=momentum_decay, **kwargs)
        if self.convention == "keras":
            self._products = [1.0] * len(self.param_groups)
        else:
            self._products = [1.0] * self._nparams
        self._pending = None

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _check_moments(hp, where)
        _nonneg(hp, "momentum_decay", where)

    def _state_names(self, group):
        return ("m", "v")

    def _scalars(self, hp, t, group):
        raise NotImplementedError("Nadam's scalars depend on its momentum products; "
                                  "see _scalars_at")

    def _begin_update(self, sched_step):
        if self.convention == "keras":
            t = self.iterations + 1
            pending = []
            for gi, group in enumerate(self.param_groups):
                hp, _ = self._evaluate(group, sched_step)
                u_t = _nadam_mu(hp, t)
                pending.append((u_t, _nadam_mu(hp, t + 1), self._products[gi] * u_t))
            self._pending = pending
        else:
            self._pending = {}

    def _row_key(self, i):
        return () if self.convention == "keras" else (self._products[i],)

    def _scalars_at(self, hp, t, group, i, key):
        lr = hp["learning_rate"]
        if self.convention == "keras":
            u_t, u_t1, prod = self._pending[key[0]]
        else:
            u_t, u_t1 = _nadam_mu(hp, t), _nadam_mu(hp, t + 1)
            prod = self._products[i] * u_t
            self._pending[key] = prod
        b2 = hp["beta_2"]
        return [lr * u_t1 / (1.0 - prod * u_t1), lr * (1.0 - u_t) / (1.0 - prod),
                1.0 / math.sqrt(1.0 - b2 ** t), hp["epsilon"], 1.0 - hp["beta_1"], b2, 1.0 - b2]

    def _commit_update(self, grads, keys):
        if self.convention == "keras":
            self._products = [p for _, _, p in self._pending]
        elif keys is not None:
            for i, key in enumerate(keys):
                if key is not None:
                    self._products[i] = self._pending[key]
        self._pending = None

    def _extra_state(self):
        out = super()._extra_state()
        out["momentum_products"] = np.array(self._products, dtype=np.float64)
        return out

    def _check_extra_state(self, extra):
        out = super()._check_extra_state(extra)
        n = len(self._products)
        prods = extra.get("momentum_products", ())
        try:
            if np.shape(prods) != (n,):     # first: converting a huge array costs its size
                raise ValueError(f"shape {np.shape(prods)}")
            prods = np.asarray(prods, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"extra.momentum_products: expected {n} values; got {e}") from e
        if not np.isfinite(prods).all():
            raise ValueError(f"extra.momentum_products: expected finite values; got {prods}")
        out["momentum_products"] = [float(x) for x in prods]
        return out

    def _load_extra_state(self, extra):
        super()._load_extra_state(extra)
        self._products = list(extra["momentum_products"])


class Adadelta(Optimizer):
    r"""Adadelta: unit-corrected steps from running averages of g^2 and of the steps.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Keras default 1e-3, torch default 1.0.  ``lr`` is an alias.
    rho : float or schedule
        Decay rate: Keras 0.95, torch 0.9.
    epsilon : float
        Keras 1e-7, torch 1e-6 (inside both square roots in both).
    convention : {"keras", "torch"}
        Keras 3 or torch.optim defaults and weight decay (the formulas agree).
    **kwargs
        The options of :class:`Optimizer`.

    Notes
    -----
    ::

        Eg  <- rho*Eg + (1 - rho)*g^2
        d    = sqrt(Edx + eps) / sqrt(Eg + eps) * g
        Edx <- rho*Edx + (1 - rho)*d^2
        w   <- w - lr*d

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(1)
    >>> opt = fo.Adadelta([w], learning_rate=1.0, rho=0.5, epsilon=1.0)
    >>> opt.step([np.array([1.0])])
    >>> np.round(w, 6)
    array([-0.816497])
    """

    _kernel = "adadelta"
    _hyper = {
        "keras": {"learning_rate": 1e-3, "rho": 0.95, "epsilon": 1e-7},
        "torch": {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6},
    }

    def __init__(self, params, learning_rate=None, rho=None, epsilon=None, *,
                 convention="keras", **kwargs):
        super().__init__(params, convention=convention, learning_rate=learning_rate, rho=rho,
                         epsilon=epsilon, **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _unit(hp, "rho", where, closed=True)
        _nonneg(hp, "epsilon", where)

    def _state_names(self, group):
        return ("accumulated_grad", "accumulated_delta")

    def _scalars(self, hp, t, group):
        rho = hp["rho"]
        return [hp["learning_rate"], rho, 1.0 - rho, hp["epsilon"]]


class Lion(Optimizer):
    r"""Lion (evolved sign momentum), Keras 3; torch.optim has no Lion.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-3.  ``lr`` is an alias.
    beta_1, beta_2 : float or schedule
        Interpolation factor of the step direction (0.9) and momentum decay (0.99).
    convention : {"keras"}
        Only Keras has Lion; ``"torch"`` raises ValueError.
    **kwargs
        The options of :class:`Optimizer` (weight decay is decoupled).

    Notes
    -----
    ::

        w <- w - lr * sign(beta_1*m + (1 - beta_1)*g)
        m <- beta_2*m + (1 - beta_2)*g

    ``sign(0) = 0``: where the interpolation is exactly zero the element does
    not move (as Keras, optax and bitsandbytes; DeepSpeed's CPU Lion takes a
    full step there).  A NaN propagates.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(3)
    >>> opt = fo.Lion([w], learning_rate=0.1)
    >>> opt.step([np.array([2.0, -1e-3, 0.0])])
    >>> w
    array([-0.1,  0.1,  0. ])
    """

    _kernel = "lion"
    _hyper = {"keras": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.99}}

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, *, betas=None,
                 convention="keras", **kwargs):
        beta_1, beta_2 = _betas(beta_1, beta_2, betas)
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _unit(hp, "beta_1", where, closed=True)
        _unit(hp, "beta_2", where, closed=True)

    def _state_names(self, group):
        return ("momentum",)

    def _scalars(self, hp, t, group):
        b1, b2 = hp["beta_1"], hp["beta_2"]
        return [hp["learning_rate"], b1, 1.0 - b1, b2, 1.0 - b2]


class Lamb(Optimizer):
    r"""Lamb: Adam's direction scaled by a per-tensor trust ratio (Keras 3).

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-3.  ``lr`` is an alias.
    beta_1, beta_2 : float or schedule
        0.9 and 0.999.
    epsilon : float
        1e-7, added to the bias-corrected ``sqrt(v)``.
    convention : {"keras"}
        Only Keras has Lamb; ``"torch"`` raises ValueError.
    **kwargs
        The options of :class:`Optimizer`.

    Notes
    -----
    ::

        m <- m + (1 - beta_1)*(g - m);   v <- v + (1 - beta_2)*(g^2 - v)
        r  = (m/(1 - beta_1^t)) / (sqrt(v/(1 - beta_2^t)) + eps)
        phi = ||w||_2/||r||_2 over the whole array if both are > 0, else 1
        w <- w - lr*phi*r

    As in Keras, weight decay is the optimizer-wide decoupled decay applied
    before the update (so ``||w||`` is of the decayed weights), not the
    paper's ``r + wd*w`` inside the trust ratio.  The norms are computed by
    a deterministic reduction (double accumulation in a fixed order): the
    result does not depend on the thread count.  Two passes over memory.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.array([3.0, 4.0])
    >>> opt = fo.Lamb([w], learning_rate=0.1, epsilon=0.0)
    >>> opt.step([np.array([1.0, 1.0])])
    >>> np.round(w, 6)
    array([2.646447, 3.646447])
    """

    _kernel = "lamb"
    _hyper = {"keras": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999,
                        "epsilon": 1e-7}}
    _needs_general = True
    _two_pass = True
    elementwise = False
    _phi_slot = 5 + 6

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 betas=None, convention="keras", **kwargs):
        beta_1, beta_2 = _betas(beta_1, beta_2, betas)
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _check_moments(hp, where)

    def _state_names(self, group):
        return ("m", "v")

    def _scalars(self, hp, t, group):
        b1, b2 = hp["beta_1"], hp["beta_2"]
        return [1.0 / (1.0 - b1 ** t), 1.0 / math.sqrt(1.0 - b2 ** t), hp["epsilon"],
                1.0 - b1, b2, 1.0 - b2, hp["learning_rate"]]


class Ftrl(Optimizer):
    r"""FTRL-proximal ("follow the regularized leader"), Keras 3.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-3; must be > 0.  ``lr`` is an alias.
    learning_rate_power : float
        ``<= 0`` (default -0.5).
    initial_accumulator_value : float
        Starting value of ``n`` (0.1), ``>= 0``.
    l1_regularization_strength, l2_regularization_strength : float or schedule
        ``l1`` and ``l2`` (0).
    l2_shrinkage_regularization_strength : float or schedule
        ``l2s`` (0): an L2 penalty in the gradient only.
    beta : float or schedule
        0.
    convention : {"keras"}
        Only Keras has Ftrl; ``"torch"`` raises ValueError.
    **kwargs
        The options of :class:`Optimizer`.

    Notes
    -----
    With ``p = -learning_rate_power``::

        n' = n + g^2
        z <- z + (g + 2*l2s*w) - (n'^p - n^p)/lr * w
        w <- (clip(z, -l1, l1) - z) / (n'^p/lr + 2*l2 + beta/lr)
        n <- n'

    The weight is recomputed, not incremented: it is exactly 0 where
    ``|z| <= l1``.  ``p = 0.5`` (the default) uses a square root.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.Ftrl([w], learning_rate=0.1, l1_regularization_strength=0.5)
    >>> opt.step([np.array([1.0, -0.25])])
    >>> np.round(w, 6)
    array([-0.047673,  0.      ])
    """

    _kernel = "ftrl"
    _hyper = {"keras": {"learning_rate": 1e-3, "learning_rate_power": -0.5,
                        "initial_accumulator_value": 0.1, "l1_regularization_strength": 0.0,
                        "l2_regularization_strength": 0.0,
                        "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0}}

    def __init__(self, params, learning_rate=None, learning_rate_power=None,
                 initial_accumulator_value=None, l1_regularization_strength=None,
                 l2_regularization_strength=None, l2_shrinkage_regularization_strength=None,
                 beta=None, *, convention="keras", **kwargs):
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         learning_rate_power=learning_rate_power,
                         initial_accumulator_value=initial_accumulator_value,
                         l1_regularization_strength=l1_regularization_strength,
                         l2_regularization_strength=l2_regularization_strength,
                         l2_shrinkage_regularization_strength=(
                             l2_shrinkage_regularization_strength),
                         beta=beta, **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        lr = hp.get("learning_rate")
        if lr is not None and not _is_schedule(lr) and lr <= 0:
            raise ValueError(f"{where}learning_rate must be > 0 for Ftrl (it divides by it); "
                             f"got {lr!r}")
        _not_scheduled(hp, "initial_accumulator_value", where)
        _not_scheduled(hp, "learning_rate_power", where)
        p = hp.get("learning_rate_power")
        if p is not None and p > 0:
            raise ValueError(f"{where}learning_rate_power must be <= 0; got {p!r}")
        for key in ("initial_accumulator_value", "l1_regularization_strength",
                    "l2_regularization_strength", "l2_shrinkage_regularization_strength",
                    "beta"):
            _nonneg(hp, key, where)

    def _init_state(self, name, p, group):
        if name == "accumulator":
            return np.full_like(p, group["initial_accumulator_value"])
        return np.zeros_like(p)

    def _state_names(self, group):
        return ("accumulator", "linear")

    def _scalars(self, hp, t, group):
        lr = hp["learning_rate"]
        if not lr > 0:
            raise ValueError(f"learning_rate evaluated to {lr!r}; Ftrl needs it > 0")
        p = -hp["learning_rate_power"]
        mode = 1.0 if p == 0.5 else (2.0 if p == 0.0 else 0.0)
        return [1.0 / lr, p, hp["l1_regularization_strength"],
                2.0 * hp["l2_regularization_strength"] + hp["beta"] / lr,
                2.0 * hp["l2_shrinkage_regularization_strength"], mode]


class RAdam(Optimizer):
    r"""RAdam: Adam with the variance of the adaptive rate rectified (torch.optim).

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-3.  ``lr`` is an alias.
    beta_1, beta_2 : float or schedule
        0.9 and 0.999.  ``betas=(b1, b2)`` is accepted.
    epsilon : float
        1e-8, added to ``sqrt(v)`` (before the bias correction, as torch does).
    convention : {"torch"}
        The default: only torch.optim has RAdam; ``"keras"`` raises ValueError.
    **kwargs
        The options of :class:`Optimizer` (``decoupled_weight_decay``).

    Notes
    -----
    With ``rho_inf = 2/(1 - beta_2) - 1`` and
    ``rho_t = rho_inf - 2*t*beta_2^t/(1 - beta_2^t)``::

        m <- m + (1 - beta_1)*(g - m);   v <- beta_2*v + (1 - beta_2)*g^2
        rho_t > 5:  r_t = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))
                    w <- w - lr*r_t*sqrt(1 - beta_2^t)/(1 - beta_1^t) * m/(sqrt(v) + eps)
        otherwise:  w <- w - lr/(1 - beta_1^t) * m

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.RAdam([w], learning_rate=0.1)
    >>> opt.step([np.array([1.0, -3.0])])
    >>> np.round(w, 6)
    array([-0.1,  0.3])
    """

    _kernel = "radam"
    _hyper = {"torch": {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999,
                        "epsilon": 1e-8}}

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 betas=None, convention="torch", **kwargs):
        beta_1, beta_2 = _betas(beta_1, beta_2, betas)
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    def _validate(self, hp, where):
        super()._validate(hp, where)
        _check_moments(hp, where)

    def _state_names(self, group):
        return ("m", "v")

    def _scalars(self, hp, t, group):
        lr, b1, b2 = hp["learning_rate"], hp["beta_1"], hp["beta_2"]
        bc1 = 1.0 - b1 ** t
        bc2 = 1.0 - b2 ** t
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2 ** t / bc2
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                             / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            a, rectified = lr * rect * math.sqrt(bc2) / bc1, 1.0
        else:
            a, rectified = lr / bc1, 0.0
        return [a, hp["epsilon"], 1.0 - b1, b2, 1.0 - b2, rectified]


#: Every public optimizer class by name; tests iterate over it.
REGISTRY = {cls.__name__: cls for cls in (SGD, Adam, AdamW, Adagrad, RMSprop, Adamax, Nadam,
                                          Adadelta, Lion, Lamb, Ftrl, RAdam)}
