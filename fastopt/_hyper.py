"""Declarations shared by every optimizer: hyper-parameter specs, their one
checker, the convention records and param groups.

An optimizer declares a table ``hyper = {name: HP(...)}``; everything that
can be said about a hyper-parameter without running the algorithm lives in
its :class:`HP`: per-convention defaults, kind (float or bool), range,
aliases, whether a schedule may drive it.  :func:`check_value` is the only
place that turns a bad value into a message.
"""
import inspect
import math
import weakref
from typing import Any

import numpy as np


class Convention:
    """Whose numbers an optimizer reproduces, and the policies that follow.

    ``library``: the anchor's name in messages.  ``decoupled_weight_decay``:
    the default form of ``weight_decay``.  ``per_param_steps``: each parameter
    counts its own steps (torch: a parameter without a grad does not advance);
    otherwise one count for the optimizer (Keras ``iterations``).
    ``schedule_clock_calls``: with gradient accumulation, schedules read the
    number of calls (Keras) rather than of updates (a torch loop steps its
    scheduler per update).

    ``refuse_no_grads``: a step whose grads are all None raises (Keras:
    "No gradients provided for any variable"); otherwise every parameter is
    skipped (torch).  ``load_hyperparameters``: what :func:`fastopt.load` and
    ``load_state_dict`` do with the hyper-parameters a checkpoint holds by
    default: ``"checkpoint"`` restores them (torch's ``load_state_dict``
    restores its param groups), ``"optimizer"`` keeps the constructor's
    (Keras restores variables only).
    """

    __slots__ = ("name", "code", "library", "decoupled_weight_decay", "per_param_steps",
                 "schedule_clock_calls", "refuse_no_grads", "load_hyperparameters")

    def __init__(self, name, code, library, decoupled_weight_decay, per_param_steps,
                 schedule_clock_calls, refuse_no_grads, load_hyperparameters):
        self.name = name
        self.code = code
        self.library = library
        self.decoupled_weight_decay = decoupled_weight_decay
        self.per_param_steps = per_param_steps
        self.schedule_clock_calls = schedule_clock_calls
        self.refuse_no_grads = refuse_no_grads
        self.load_hyperparameters = load_hyperparameters

    def __repr__(self):
        return f"<convention {self.name!r}: {self.library}>"


KERAS = Convention("keras", 0, "Keras 3", decoupled_weight_decay=True, per_param_steps=False,
                   schedule_clock_calls=True, refuse_no_grads=True,
                   load_hyperparameters="optimizer")
TORCH = Convention("torch", 1, "torch.optim", decoupled_weight_decay=False,
                   per_param_steps=True, schedule_clock_calls=False, refuse_no_grads=False,
                   load_hyperparameters="checkpoint")
CONVENTIONS = {c.name: c for c in (KERAS, TORCH)}

# Constraints: (low, low closed, high, high closed); one checker reads them.
NONNEG = (0.0, True, math.inf, False)
POSITIVE = (0.0, False, math.inf, False)
NONPOS = (-math.inf, False, 0.0, True)
UNIT = (0.0, True, 1.0, True)            # [0, 1]
UNIT_OPEN = (0.0, True, 1.0, False)      # [0, 1)
UNIT_LEFT_OPEN = (0.0, False, 1.0, True)  # (0, 1]
ANY = (-math.inf, False, math.inf, False)


def _interval(c):
    lo, lo_closed, hi, hi_closed = c
    if hi == math.inf:
        return f"{'>=' if lo_closed else '>'} {lo:g}"
    if lo == -math.inf:
        return f"{'<=' if hi_closed else '<'} {hi:g}"
    return f"in {'[' if lo_closed else '('}{lo:g}, {hi:g}{']' if hi_closed else ')'}"


class HP:
    """One hyper-parameter of an optimizer.

    ``HP(default)`` or ``HP(keras=..., torch=...)`` for per-convention
    defaults (a convention without a default does not have the parameter);
    ``kind``: float or bool; ``check``: a constraint (``NONNEG``, ``UNIT``,
    ...); ``aliases``: other accepted names (``lr``, ``eps``, ``alpha``);
    ``schedulable``: whether a schedule may drive it (False for values that
    set the initial state); ``kernel``: whether the kernel's scalar function
    reads it (False for a value that only fills the initial state, and for
    weight_decay, which the engine reads); ``note``: added to the range error;
    ``none_refused``: an explicit ``None`` is an error rather than "the
    default" (Keras's ``AdamW(weight_decay=None)``); the class's signature
    then defaults the keyword to :data:`DEFAULT`.
    """

    __slots__ = ("defaults", "kind", "check", "aliases", "schedulable", "kernel", "note",
                 "none_refused")

    def __init__(self, default=None, *, keras=None, torch=None, kind=float, check=ANY,
                 aliases=(), schedulable=True, kernel=True, note="", none_refused=False):
        self.defaults = {}
        for conv, value in (("keras", keras), ("torch", torch)):
            value = default if value is None else value
            if value is not None:
                self.defaults[conv] = value
        self.kind = kind
        self.check = check
        self.aliases = tuple(aliases)
        self.schedulable = schedulable and kind is float
        self.kernel = kernel
        self.note = note
        self.none_refused = none_refused

    def default(self, convention):
        return self.defaults[convention]

    def __repr__(self):
        return (f"HP({self.defaults}, kind={self.kind.__name__}, check={self.check}, "
                f"aliases={self.aliases})")


class _Default:
    """The value of a keyword left out, where ``None`` is refused."""

    __slots__ = ()

    def __repr__(self):
        return "<default>"

    def __reduce__(self):
        return "DEFAULT"


#: A keyword's "not given" where an explicit ``None`` is an error.
DEFAULT: Any = _Default()


def is_schedule(v):
    return callable(v) and not isinstance(v, (bool, int, float, np.number))


def schedule_arity(fn, where=""):
    """How a schedule is called: 1 for ``fn(step)``, 0 for ``fn()`` (Keras 3
    accepts a callable without arguments as a learning rate).  Decided once,
    from the signature; a callable whose signature cannot be read is taken as
    ``fn(step)``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    for n in (1, 0):
        try:
            sig.bind(*range(n))
        except TypeError:
            continue
        return n
    raise TypeError(f"{where}a schedule must be callable as fn(step) or fn(); "
                    f"{fn!r} takes {sig}")


class NoArgSchedule:
    """``fn()`` called as a schedule ``fn(step)``."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, step):
        return self.fn()


def step_callable(fn, where=""):
    """``fn`` as a callable of the step (see :func:`schedule_arity`)."""
    return fn if schedule_arity(fn, where) == 1 else NoArgSchedule(fn)


def check_value(spec, key, value, where):
    """Return ``value`` converted (float, or bool) if it fits ``spec``; else
    raise the message every layer uses.  A schedule passes when ``spec`` may be
    scheduled (its values are checked per step)."""
    if value is None and spec.none_refused:
        raise TypeError(f"{where}{key} must be a float or a schedule; got None. Leave the "
                        f"keyword out for the default, or pass 0.0 to turn it off")
    if spec.kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{where}{key} must be a bool; got {value!r}")
        return bool(value)
    if is_schedule(value):
        if not spec.schedulable:
            raise TypeError(f"{where}{key} sets the initial state and cannot be a schedule; "
                            f"pass a float")
        schedule_arity(value, f"{where}{key}: ")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{where}{key} must be a float or a schedule (a callable "
                        f"step -> float); got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:   # an int beyond the float range
        finite = False
    if not finite:
        raise ValueError(f"{where}{key} must be finite; got {value!r}")
    return value


def check_range(spec, key, value, where):
    lo, lo_closed, hi, hi_closed = spec.check
    if ((value >= lo if lo_closed else value > lo) and
            (value <= hi if hi_closed else value < hi)):
        return
    raise ValueError(f"{where}{key} must be {_interval(spec.check)}{spec.note}; got {value!r}")


def split_param_groups(params):
    """``[(list of arrays, {overrides}), ...]`` from a list of arrays or of
    param-group dicts (the constructor's ``params``)."""
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


class ParamGroup(dict):
    """A parameter group: ``{"params": [...], <hyper-parameter>: value}``.

    Editable between steps like a torch param group, with the constructor's
    names and aliases (``g["lr"] = 0.1`` sets ``learning_rate``, ``g["betas"]
    = (0.8, 0.99)`` sets ``beta_1`` and ``beta_2``; reading ``g["lr"]`` works
    too).  An edit is checked when it is made: an unknown key, a value of the
    wrong type or range, or a setting that needs state arrays the optimizer
    does not keep (``amsgrad`` False -> True, ``momentum`` 0 -> 0.9,
    ``centered`` False -> True) raises and changes nothing; so does removing
    a key or replacing ``"params"``.  An edited value is the group's own from
    then on (assigning the optimizer-wide attribute no longer changes it) and
    is saved by checkpoints.
    """

    __slots__ = ("version", "_owner")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.version = 0
        self._owner = None

    def __reduce__(self):
        # a copy is a plain dict: it belongs to no optimizer
        return dict, (dict(self),)

    def _bind(self, owner):
        """From now on edits are checked by ``owner._edit_group`` (a weak reference:
        the optimizer owns its groups)."""
        self._owner = weakref.ref(owner)

    def _opt(self):
        return None if self._owner is None else self._owner()

    def _set(self, changes):
        """Set checked values (the optimizer's own path)."""
        super().update(changes)
        self.version += 1

    def _edit(self, changes):
        opt = self._opt()
        if opt is not None:
            changes = opt._edit_group(self, changes)
        self._set(changes)

    def __missing__(self, key):
        opt = self._opt()
        if opt is not None:
            names = opt.tuple_aliases.get(key, ((),))[0]
            if names and all(n in self for n in names):
                return tuple(dict.__getitem__(self, n) for n in names)
            name = opt._canonical(key)
            if name != key and name in self:
                return dict.__getitem__(self, name)
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key, value):
        self._edit({key: value})

    def update(self, *args, **kwargs):
        self._edit(dict(*args, **kwargs))

    def __ior__(self, other):  # type: ignore[misc]  # dict's __or__ returns a plain dict
        self._edit(dict(other))
        return self

    def setdefault(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            self[key] = default
            return default

    def _refuse_removal(self, key):
        opt = self._opt()
        if opt is not None:
            opt._refuse_removal(self, key)

    def __delitem__(self, key):
        self._refuse_removal(key)
        super().__delitem__(key)
        self.version += 1

    def pop(self, key, *default):
        if key not in self and default:
            return default[0]
        self._refuse_removal(key)
        self.version += 1
        return super().pop(key, *default)

    def clear(self):
        self._refuse_removal(None)
        super().clear()
        self.version += 1

    def popitem(self):
        self._refuse_removal(None)
        self.version += 1
        return super().popitem()


def group_names(over, size, gi):
    """Parameter names given by a param group ("name" for all, "names" one each);
    removes them from ``over``."""
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
