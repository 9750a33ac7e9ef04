"""Optimizers: hyper-parameters, conventions, schedules, state.

Every optimizer updates its parameters in place through one C kernel (see
``csrc/kernels``).  Python's work per step is to evaluate hyper-parameters
(schedules), turn them into a few scalars per parameter group computed in
double, and hand those and the gradients to :class:`fastopt._core.Engine`,
which validates every gradient before anything is written.
"""
import math
import threading

import numpy as np

from . import _core, _threads

CONVENTIONS = ("keras", "torch")

# Shared scalar slots (csrc/fastopt.h): flags, gscale, clip, l2, decay.
_F_GSCALE, _F_CLIP, _F_L2, _F_DECAY = 1, 2, 4, 8

_ALIASES = {"lr": "learning_rate", "eps": "epsilon"}


def _is_schedule(v):
    return callable(v) and not isinstance(v, (bool, int, float, np.number))


class ParamGroup(dict):
    """A parameter group: ``{"params": [...], <hyper-parameter>: value}``.

    Editable between steps like a torch param group; edits are validated
    when the next step evaluates the group.
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


class Optimizer:
    """Base class: parameter groups, conventions, schedules, state, checkpoints.

    Subclasses declare ``_kernel`` (a name in ``csrc/registry.def``),
    ``_hyper`` (per-convention defaults of their float and bool
    hyper-parameters), ``_state_names(group)`` and ``_scalars(hp, t, group)``
    (the kernel-specific scalars for one group at its 1-based step ``t``).
    """

    _kernel: "str | None" = None
    _hyper: "dict[str, dict[str, float | bool]]" = {"keras": {}, "torch": {}}
    _bool_hyper: "tuple[str, ...]" = ()
    _decoupled_always = False

    def __init__(self, params, *, convention="keras", weight_decay=None,
                 decoupled_weight_decay=None, maximize=False, clipvalue=None,
                 num_threads=None, name=None, **hyper):
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be 'keras' or 'torch'; got {convention!r}")
        if convention not in self._hyper:
            raise ValueError(f"{type(self).__name__} has no torch.optim counterpart; "
                             f"use convention='keras'")
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
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.maximize = bool(maximize)
        if clipvalue is not None:
            clipvalue = float(clipvalue)
            if not clipvalue > 0 or not math.isfinite(clipvalue):
                raise ValueError(f"clipvalue must be a positive finite float; got {clipvalue!r}")
        self.clipvalue = clipvalue
        if num_threads is not None and (isinstance(num_threads, bool) or
                                        not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive int or None; got {num_threads!r}")
        self.num_threads = num_threads
        self._defaults = defaults
        self._check_hyper(defaults, "")

        groups = self._split_groups(params)
        self.param_groups = []
        self._overrides = []
        flat = []
        for gi, (plist, over) in enumerate(groups):
            over = {self._canonical(k): v for k, v in over.items()}
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
        for group in self.param_groups:
            names = self._state_names(group)
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
        self._lock = threading.Lock()

    # ---- construction helpers -------------------------------------------

    @staticmethod
    def _canonical(key):
        return _ALIASES.get(key, key)

    @staticmethod
    def _split_groups(params):
        if isinstance(params, np.ndarray):
            raise TypeError("params must be a list of arrays (or of param-group dicts); got a "
                            "single ndarray: pass [w]")
        params = list(params)
        if params and all(isinstance(g, dict) for g in params):
            groups = []
            for gi, g in enumerate(params):
                if "params" not in g:
                    raise ValueError(f"param group {gi} has no 'params' entry")
                plist = g["params"]
                if isinstance(plist, np.ndarray):
                    plist = [plist]
                groups.append((list(plist), {k: v for k, v in g.items() if k != "params"}))
            return groups
        if any(isinstance(g, dict) for g in params):
            raise TypeError("params must be all arrays or all param-group dicts, not a mix")
        return [(params, {})]

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
            if not math.isfinite(value):
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
        return hp, self._shared(hp)

    def _cache_group(self, group):
        gi = next((k for k, g in enumerate(self.param_groups) if g is group), None)
        self._check_hyper(group, f"param group {gi}: " if gi is not None else "")
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

    def _shared(self, hp):
        """The five shared scalars: flags, gscale, clip, l2, decay."""
        flags = 0
        gscale = 1.0
        if self.maximize:
            flags |= _F_GSCALE
            gscale = -1.0
        clip = 0.0
        if self.clipvalue is not None:
            flags |= _F_CLIP
            clip = self.clipvalue
        l2 = 0.0
        decay = 1.0
        wd = hp.get("weight_decay", 0.0)
        if wd != 0.0:
            if self.decoupled_weight_decay:
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
        with self._lock:
            engine = self._engine
            active = engine.set_grads(grads)
            if active:
                try:
                    rows = self._step_rows(grads, active == self._nparams)
                except BaseException:
                    engine.clear_grads()
                    raise
                engine.run(rows, self.num_threads or _threads.get_num_threads())
            else:
                engine.clear_grads()
            if active and self.convention == "torch":
                if active == self._nparams:
                    self._steps = [k + 1 for k in self._steps]
                else:
                    for i, g in enumerate(grads):
                        if g is not None:
                            self._steps[i] += 1
                    self._uniform = self._steps_uniform()
            self.iterations += 1

    def _step_rows(self, grads, all_active):
        """Scalar rows for this step: one per group, or (torch convention with
        per-parameter step counts that differ) one per (group, step) pair."""
        if self.convention == "keras" or (all_active and self._uniform):
            if self._custom_rows:
                self._engine.set_rows(self._group_of.tolist())
                self._custom_rows = False
            if self.convention == "keras":
                t = self.iterations + 1
                return [self._row(g, t) for g in self.param_groups]
            return [self._row(g, self._steps[i] + 1 if i >= 0 else 1)
                    for g, i in zip(self.param_groups, self._first)]
        keys, rows, mapping = {}, [], []
        for i, g in enumerate(grads):
            key = (self._group_list[i], self._steps[i] + 1)
            if key not in keys:
                keys[key] = len(rows)
                rows.append(self._row(self.param_groups[key[0]], key[1]))
            mapping.append(keys[key] if g is not None else 0)
        self._engine.set_rows(mapping)
        self._custom_rows = True
        return rows

    def _steps_uniform(self):
        firsts = {}
        for gi, k in zip(self._group_list, self._steps):
            if firsts.setdefault(gi, k) != k:
                return False
        return True

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
        for key, value in self._defaults.items():
            cfg[key] = _config_value(value, schedules)
        if len(self.param_groups) > 1 or any(self._overrides):
            cfg["param_groups"] = [
                dict({k: _config_value(v, schedules) for k, v in over.items()},
                     size=len(group["params"]))
                for group, over in zip(self.param_groups, self._overrides)]
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
        }

    def load_state_dict(self, sd):
        """Restore :meth:`state_dict`.  Everything is checked first; a mismatch
        raises and leaves the optimizer as it was."""
        from . import schedules
        if not isinstance(sd, dict) or sd.get("format_version") != 1:
            raise ValueError("not a fastopt optimizer state (format_version 1 expected)")
        if sd.get("class") != type(self).__name__:
            raise ValueError(f"state is of a {sd.get('class')} optimizer; this is a "
                             f"{type(self).__name__}")
        state = sd["state"]
        if len(state) != len(self._state):
            raise ValueError(f"state has {len(state)} parameters; this optimizer has "
                             f"{len(self._state)}")
        for i, (mine, theirs) in enumerate(zip(self._state, state)):
            if len(theirs) != len(mine):
                raise ValueError(f"params[{i}]: state has {len(theirs)} arrays; expected "
                                 f"{len(mine)} (were the optimizer options the same?)")
            for k, (a, b) in enumerate(zip(mine, theirs)):
                b = np.asarray(b)
                if b.shape != a.shape or b.dtype != a.dtype:
                    raise ValueError(f"params[{i}] state {k}: expected {a.dtype} {a.shape}; "
                                     f"got {b.dtype} {b.shape}")
        steps = np.asarray(sd["steps"], dtype=np.int64)
        if steps.shape != (len(self._steps),):
            raise ValueError(f"steps: expected {len(self._steps)} counts; got {steps.shape}")
        iterations = int(sd["iterations"])
        if iterations < 0 or (steps < 0).any():
            raise ValueError("step counters must be >= 0")
        sched_states = sd.get("schedules", {})
        _check_schedule_states(self, sched_states)
        for mine, theirs in zip(self._state, state):
            for a, b in zip(mine, theirs):
                np.copyto(a, b)
        self._steps = [int(k) for k in steps]
        self.iterations = iterations
        self._uniform = self._steps_uniform()
        _load_schedule_states(self, sched_states, schedules)

    def __repr__(self):
        n = sum(p.size for p in self._params)
        return (f"{type(self).__name__}(convention={self.convention!r}, "
                f"learning_rate={self.learning_rate!r}, params={len(self._params)} arrays / "
                f"{n} elements, iterations={self.iterations})")


# ---- helpers ---------------------------------------------------------------

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


def _check_schedule_states(opt, states):
    mine = {path for path, s in _iter_schedules(opt) if hasattr(s, "state_dict")}
    extra = set(states) - mine
    if extra:
        raise ValueError(f"state carries schedule state for {sorted(extra)}, which this "
                         f"optimizer's hyper-parameters are not schedules for")


def _load_schedule_states(opt, states, schedules):
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
        _unit(hp, "beta_1", where)
        _unit(hp, "beta_2", where)
        _nonneg(hp, "epsilon", where)

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
        if kwargs.get("decoupled_weight_decay") is False:
            raise ValueError("AdamW's weight decay is decoupled; use Adam for coupled L2")
        super().__init__(params, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, weight_decay=weight_decay,
                         **kwargs)


#: Every public optimizer class by name; tests iterate over it.
REGISTRY = {cls.__name__: cls for cls in (SGD, Adam, AdamW)}
