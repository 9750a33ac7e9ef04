"""Declarations shared by every optimizer: hyper-parameter specs, their one
checker, the convention records and param groups.

An optimizer declares a table ``hyper = {name: HP(...)}``; everything that
can be said about a hyper-parameter without running the algorithm lives in
its :class:`HP`: per-convention defaults, kind (float or bool), range,
aliases, whether a schedule may drive it.  :func:`check_value` is the only
place that turns a bad value into a message.
"""
import math

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
    """

    __slots__ = ("name", "code", "library", "decoupled_weight_decay", "per_param_steps",
                 "schedule_clock_calls")

    def __init__(self, name, code, library, decoupled_weight_decay, per_param_steps,
                 schedule_clock_calls):
        self.name = name
        self.code = code
        self.library = library
        self.decoupled_weight_decay = decoupled_weight_decay
        self.per_param_steps = per_param_steps
        self.schedule_clock_calls = schedule_clock_calls

    def __repr__(self):
        return f"<convention {self.name!r}: {self.library}>"


KERAS = Convention("keras", 0, "Keras 3", decoupled_weight_decay=True, per_param_steps=False,
                   schedule_clock_calls=True)
TORCH = Convention("torch", 1, "torch.optim", decoupled_weight_decay=False,
                   per_param_steps=True, schedule_clock_calls=False)
CONVENTIONS = {c.name: c for c in (KERAS, TORCH)}

# Constraints: (low, low closed, high, high closed); one checker reads them.
NONNEG = (0.0, True, math.inf, False)
POSITIVE = (0.0, False, math.inf, False)
NONPOS = (-math.inf, False, 0.0, True)
UNIT = (0.0, True, 1.0, True)            # [0, 1]
UNIT_OPEN = (0.0, True, 1.0, False)      # [0, 1)
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
    weight_decay, which the engine reads); ``note``: added to the range error.
    """

    __slots__ = ("defaults", "kind", "check", "aliases", "schedulable", "kernel", "note")

    def __init__(self, default=None, *, keras=None, torch=None, kind=float, check=ANY,
                 aliases=(), schedulable=True, kernel=True, note=""):
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

    def default(self, convention):
        return self.defaults[convention]

    def __repr__(self):
        return (f"HP({self.defaults}, kind={self.kind.__name__}, check={self.check}, "
                f"aliases={self.aliases})")


def is_schedule(v):
    return callable(v) and not isinstance(v, (bool, int, float, np.number))


def check_value(spec, key, value, where):
    """Return ``value`` converted (float, or bool) if it fits ``spec``; else
    raise the message every layer uses.  A schedule passes when ``spec`` may be
    scheduled (its values are checked per step)."""
    if spec.kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{where}{key} must be a bool; got {value!r}")
        return bool(value)
    if is_schedule(value):
        if not spec.schedulable:
            raise TypeError(f"{where}{key} sets the initial state and cannot be a schedule; "
                            f"pass a float")
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
