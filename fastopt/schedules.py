"""Learning-rate (and any hyper-parameter) schedules for fastopt.

A schedule is a callable ``sched(step) -> float``: a pure function of the
explicit, 0-based optimizer step (the number of updates applied so far; the
first update sees step 0).  The optimizers evaluate ``float(sched(iterations))``
for every scheduled hyper-parameter before each update; any plain callable works
there too, the classes below just add validation, configs, state and
serialization.

There is no hidden global state and no call-order heuristic.  The only stateful
schedule is :class:`ReduceOnPlateau`, whose state changes only through
:meth:`ReduceOnPlateau.report` (the metrics it was told) and
:meth:`~Schedule.load_state_dict`; :class:`MultiplicativeLR` keeps its running
product (a cache of a function of the step, in its state so that a resumed run
continues it bit for bit).

Every schedule

* returns a Python ``float``; accepts a Python ``int``, a NumPy integer, a 0-d
  integer array (or an integral float); a negative step raises ``ValueError``;
* validates its arguments at construction (``ValueError``/``TypeError`` naming
  the argument and the value given);
* has ``get_config()`` (JSON-able constructor arguments, nested schedules
  encoded as ``{"class_name", "config"}``), ``from_config(config)``,
  ``state_dict()``/``load_state_dict(state)``, ``values(n)`` and a ``repr``;
* composes: ``a * b``, ``a * 0.5`` and ``0.5 * a`` build a :class:`Product`.

Every constructor also takes ``name=`` (a label kept in the config, as in
Keras).  Module-level functions: :func:`serialize`, :func:`deserialize`,
:func:`register` (a class decorator for user subclasses),
:func:`register_function` (names a plain function so a :class:`Lambda`, a
:class:`MultiplicativeLR` or a ``CyclicLR(scale_fn=...)`` serialises) and
:func:`plot`.

Porting is one rename away: torch's scheduler names with torch's arguments
(less the optimizer, plus ``base_lr=``) are plain schedules of the step whose
values equal torch's ``get_last_lr()`` after as many ``scheduler.step()``
calls: :class:`LinearLR`, :class:`ConstantLR`, :class:`MultiplicativeLR`,
:class:`PolynomialLR`, :class:`StepLR`, :class:`MultiStepLR`,
:class:`ExponentialLR`, :class:`CosineAnnealingLR`,
:class:`CosineAnnealingWarmRestarts`, :class:`CyclicLR`, :class:`OneCycleLR`,
:class:`SWALR`; optax's piecewise interpolation, linear 1cycle and warmup
presets are :class:`PiecewiseInterpolate`, :class:`LinearOneCycle`,
:class:`WarmupCosineDecay`, :class:`WarmupExponentialDecay`.

This module is pure Python + NumPy and imports nothing from the rest of
fastopt.
"""

from __future__ import annotations

import bisect
import functools
import math
import numbers
import operator

from typing import Callable, Optional, Sequence, Union

import numpy as np

from ._hyper import step_callable

__all__ = [
    "Schedule",
    "Constant",
    "Lambda",
    "PowerDecay",
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstant",
    "PolynomialDecay",
    "CosineDecay",
    "CosineDecayRestarts",
    "LinearWarmup",
    "StepDecay",
    "MultiStepDecay",
    "CyclicLR",
    "CyclicMomentum",
    "OneCycle",
    "OneCycleMomentum",
    "ReduceOnPlateau",
    "Sequential",
    "Product",
    "LinearLR",
    "ConstantLR",
    "MultiplicativeLR",
    "PolynomialLR",
    "StepLR",
    "MultiStepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "SWALR",
    "PiecewiseInterpolate",
    "LinearOneCycle",
    "WarmupCosineDecay",
    "WarmupExponentialDecay",
    "WarmupStableDecay",
    "register",
    "register_function",
    "serialize",
    "deserialize",
    "plot",
]


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------

def _fmt(x):
    return repr(x)


def _real(owner, name, x, *, lo=None, lo_open=False, hi=None, hi_open=False,
          finite=True):
    """Validate a real number and return it as a Python float."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        if isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iuf":
            x = x.item()
        else:
            raise TypeError(
                f"{owner}: {name} must be a real number, got {_fmt(x)} "
                f"of type {type(x).__name__}")
    v = float(x)
    if finite and not math.isfinite(v):
        raise ValueError(f"{owner}: {name} must be finite, got {_fmt(x)}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        op = ">" if lo_open else ">="
        raise ValueError(f"{owner}: {name} must be {op} {lo}, got {_fmt(x)}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        op = "<" if hi_open else "<="
        raise ValueError(f"{owner}: {name} must be {op} {hi}, got {_fmt(x)}")
    return v


def _int(owner, name, x, *, lo=None):
    """Validate an integer (integral floats accepted) and return a Python int."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x.item()
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be an integer, got {_fmt(x)}")
    if isinstance(x, (numbers.Integral, np.integer)):
        v = int(x)
    elif isinstance(x, numbers.Real):
        f = float(x)
        if not math.isfinite(f) or not f.is_integer():
            raise ValueError(
                f"{owner}: {name} must be an integer, got {_fmt(x)}")
        v = int(f)
    else:
        raise TypeError(
            f"{owner}: {name} must be an integer, got {_fmt(x)} "
            f"of type {type(x).__name__}")
    if lo is not None and v < lo:
        raise ValueError(f"{owner}: {name} must be >= {lo}, got {_fmt(x)}")
    return v


def _bool(owner, name, x):
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be a bool, got {_fmt(x)}")
    return bool(x)


def _choice(owner, name, x, choices):
    if x not in choices:
        raise ValueError(
            f"{owner}: {name} must be one of {list(choices)}, got {_fmt(x)}")
    return x


def _int_list(owner, name, xs, *, strict=True, lo=0, allow_empty=False):
    """A list of integer steps, increasing (strictly if ``strict``)."""
    if isinstance(xs, (str, bytes)) or not hasattr(xs, "__iter__"):
        raise TypeError(
            f"{owner}: {name} must be a sequence of integers, got {_fmt(xs)}")
    out = [_int(owner, f"{name}[{i}]", x, lo=lo) for i, x in enumerate(xs)]
    if not out and not allow_empty:
        raise ValueError(f"{owner}: {name} must not be empty, got {_fmt(xs)}")
    for i in range(1, len(out)):
        if out[i] < out[i - 1] or (strict and out[i] == out[i - 1]):
            kind = "strictly increasing" if strict else "non-decreasing"
            raise ValueError(
                f"{owner}: {name} must be {kind}, got {out} "
                f"({name}[{i - 1}]={out[i - 1]}, {name}[{i}]={out[i]})")
    return out


def _as_step(step):
    """Validate a step and return it as a Python int >= 0."""
    if isinstance(step, int) and not isinstance(step, bool):
        t = step
    elif isinstance(step, np.integer):
        t = int(step)
    else:
        if isinstance(step, np.ndarray) and step.ndim == 0:
            step = step.item()
        if isinstance(step, (bool, np.bool_)):
            raise TypeError(f"step must be an integer, got {step!r}")
        if isinstance(step, (numbers.Integral, np.integer)):
            t = int(step)
        elif isinstance(step, numbers.Real):
            f = float(step)
            if not math.isfinite(f) or not f.is_integer():
                raise ValueError(
                    f"step must be an integer >= 0, got {step!r}")
            t = int(f)
        else:
            try:
                t = operator.index(step)
            except TypeError:
                raise TypeError(
                    f"step must be an integer, got {step!r} of type "
                    f"{type(step).__name__}") from None
    if t < 0:
        raise ValueError(f"step must be >= 0, got {t}")
    return t


def _pow(a, b):
    """``a ** b`` for floats that returns inf instead of raising on overflow."""
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf


def _as_schedule(owner, name, x):
    """Schedules pass through, numbers become :class:`Constant`, other
    callables become :class:`Lambda`."""
    if isinstance(x, Schedule):
        return x
    if isinstance(x, (numbers.Real, np.ndarray)) and not isinstance(x, bool):
        return Constant(_real(owner, name, x))
    if callable(x):
        return Lambda(x)
    raise TypeError(
        f"{owner}: {name} must be a Schedule, a number or a callable "
        f"step -> float, got {_fmt(x)}")


# ---------------------------------------------------------------------------
# registry and (de)serialization
# ---------------------------------------------------------------------------

_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}
_BUILTIN: set[str] = set()


def register(cls=None, *, name=None):
    """Register a :class:`Schedule` subclass so :func:`deserialize` finds it.

    Use as a decorator, ``@register`` or ``@register(name="MySchedule")``.
    The class must implement ``get_config()`` (JSON-able constructor
    arguments) and inherit or override ``from_config``.  Re-registering a
    user name replaces the previous class (convenient in notebooks); the
    built-in names cannot be taken over.

    Returns the class unchanged.
    """
    def deco(c):
        if not (isinstance(c, type) and issubclass(c, Schedule)):
            raise TypeError(f"register: expected a Schedule subclass, got {c!r}")
        key = name if name is not None else c.__name__
        if not isinstance(key, str) or not key:
            raise ValueError(f"register: name must be a non-empty str, got {key!r}")
        old = _REGISTRY.get(key)
        if old is not None and old is not c and key in _BUILTIN:
            raise ValueError(
                f"register: the name {key!r} belongs to the built-in "
                f"{old.__module__}.{old.__qualname__}; pass register(name=...)")
        if old is not None:
            _NAMES.pop(old, None)
        _REGISTRY[key] = c
        _NAMES[c] = key
        return c

    if cls is None:
        return deco
    return deco(cls)


def _builtin(cls):
    register(cls)
    _BUILTIN.add(cls.__name__)
    return cls


_FUNCTIONS: dict[str, object] = {}
_FUNCTION_NAMES: dict[object, str] = {}


def register_function(fn=None, *, name=None):
    """Register a plain function under a name so that schedules holding it
    (:class:`Lambda`, :class:`MultiplicativeLR`, ``CyclicLR(scale_fn=...)``)
    serialise: the config stores the name, and :func:`deserialize` (in the
    same or another process that registered the function again) looks it up.

    Use as a decorator, ``@register_function`` or
    ``@register_function(name="warmup")``, or call it.  Re-registering a name
    replaces the previous function.  The registered name may be passed where
    the function is expected: ``Lambda("warmup")``.

    Returns the function unchanged.

    Examples
    --------
    >>> from fastopt import schedules
    >>> @schedules.register_function(name="inv_sqrt")
    ... def inv_sqrt(t):
    ...     return 1.0 / (1.0 + t) ** 0.5
    >>> s = schedules.Lambda(inv_sqrt)
    >>> s.get_config()
    {'fn': 'inv_sqrt'}
    >>> schedules.deserialize(schedules.serialize(s))(3)
    0.5
    """
    def deco(f):
        if not callable(f) or isinstance(f, (Schedule, type)):
            raise TypeError(
                f"register_function: expected a plain function, got {f!r}")
        key = name if name is not None else getattr(f, "__name__", None)
        if not isinstance(key, str) or not key or key == "<lambda>":
            raise ValueError(
                f"register_function: name must be a non-empty str (a lambda "
                f"needs name=...), got {key!r}")
        old = _FUNCTIONS.get(key)
        if old is not None:
            _FUNCTION_NAMES.pop(old, None)
        _FUNCTIONS[key] = f
        _FUNCTION_NAMES[f] = key
        return f

    if fn is None:
        return deco
    return deco(fn)


def _function(owner, argname, fn):
    """A callable, or the name of a registered function, as a callable."""
    if isinstance(fn, str):
        f = _FUNCTIONS.get(fn)
        if f is None:
            raise ValueError(
                f"{owner}: {argname}={fn!r} is not a registered function; "
                f"known: {sorted(_FUNCTIONS)}. Register it with "
                f"@fastopt.schedules.register_function before deserializing")
        return f
    if not callable(fn):
        raise TypeError(
            f"{owner}: {argname} must be callable or the name of a registered "
            f"function, got {fn!r}")
    return fn


def _class_name(sched):
    cls = type(sched)
    key = _NAMES.get(cls)
    if key is None:
        raise TypeError(
            f"cannot serialize {cls.__qualname__}: the class is not registered; "
            f"decorate it with @fastopt.schedules.register")
    return key


def _encode(v):
    """Encode a raw config value into JSON-able data."""
    if isinstance(v, Schedule):
        return {"class_name": _class_name(v), "config": v.get_config()}
    if callable(v):
        try:
            return _FUNCTION_NAMES[v]
        except (KeyError, TypeError):
            raise TypeError(
                f"{v!r} cannot be serialized: a lambda or Python function has "
                f"no portable config. Register it with "
                f"@fastopt.schedules.register_function (its name is stored), "
                f"or write a Schedule subclass implementing _compute() and "
                f"get_config(), decorated with @fastopt.schedules.register"
            ) from None
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _encode(x) for k, x in v.items()}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (numbers.Integral, np.integer)):
        return int(v)
    if isinstance(v, (numbers.Real, np.floating)):
        return float(v)
    return v


def _decode(v):
    if isinstance(v, dict) and "class_name" in v:
        return deserialize(v)
    if isinstance(v, dict):
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_decode(x) for x in v]
    return v


def serialize(schedule):
    """Serialize a schedule: ``{"class_name", "config", "state"}``.

    ``class_name`` is the registered name, ``config`` is
    ``schedule.get_config()`` (nested schedules encoded recursively as
    ``{"class_name", "config"}``) and ``state`` is ``schedule.state_dict()``
    (which holds the nested schedules' counters, see
    :meth:`Schedule.state_dict`).  The result contains only ``dict``,
    ``list``, ``str``, ``bool``, ``int`` and ``float`` (possibly ``inf``, which
    Python's ``json`` writes as ``Infinity``).

    Raises
    ------
    TypeError
        For a :class:`Lambda` (a Python function cannot be serialized), for a
        schedule containing one, for an unregistered ``Schedule`` subclass
        and for objects that are not ``Schedule`` instances.
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(
            f"serialize: expected a fastopt.schedules.Schedule, got "
            f"{schedule!r}; plain callables cannot be serialized, use a "
            f"registered Schedule subclass")
    return {
        "class_name": _class_name(schedule),
        "config": schedule.get_config(),
        "state": _encode(schedule.state_dict()),
    }


def deserialize(data, custom_objects=None):
    """Rebuild a schedule from :func:`serialize` output, config AND state.

    Parameters
    ----------
    data : dict
        ``{"class_name": str, "config": dict, "state": dict}``; ``state`` may
        be omitted (fresh counters).
    custom_objects : dict, optional
        Extra ``name -> class`` mapping consulted before the registry.
    """
    if not isinstance(data, dict) or "class_name" not in data:
        raise ValueError(
            f"deserialize: expected a dict with 'class_name' and 'config', "
            f"got {data!r}")
    name = data["class_name"]
    cls = None
    if custom_objects:
        cls = custom_objects.get(name)
    if cls is None:
        cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(
            f"deserialize: unknown schedule class {name!r}; known: "
            f"{sorted(_REGISTRY)}. Register user classes with "
            f"@fastopt.schedules.register")
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(
            f"deserialize: 'config' of {name} must be a dict, got {config!r}")
    obj = cls.from_config(config)
    state = data.get("state")
    if state:
        obj.load_state_dict(state)
    return obj


# ---------------------------------------------------------------------------
# base class
# ---------------------------------------------------------------------------

class Schedule:
    """Base class of all schedules: a pure function ``step -> float``.

    Subclasses implement ``_compute(self, t)`` (``t`` is a validated Python
    ``int >= 0``; return a number) and ``get_config()`` (or the raw
    ``_config()``, whose nested schedules are encoded automatically); they
    inherit ``__call__``, ``from_config``, ``values``, ``__repr__``,
    multiplication and (empty) state.  Register subclasses with
    :func:`register` to make them deserializable.

    Notes
    -----
    Equivalent of Keras ``LearningRateSchedule`` and of torch's closed-form
    ``_get_closed_form_lr``; unlike torch schedulers a schedule never reads or
    writes the optimizer, so the order of resuming/constructing does not
    matter.

    Examples
    --------
    >>> from fastopt import schedules
    >>> class HalveEachStep(schedules.Schedule):
    ...     def __init__(self, lr0):
    ...         self.lr0 = lr0
    ...     def _compute(self, t):
    ...         return self.lr0 / 2 ** t
    ...     def _config(self):
    ...         return {"lr0": self.lr0}
    >>> s = HalveEachStep(1.0)
    >>> s(3), s.get_config()
    (0.125, {'lr0': 1.0})
    >>> (s * 0.5)(1)                   # composes with the built-ins
    0.25
    """

    name = None

    def __init_subclass__(cls, **kwargs):
        # every constructor takes name= (Keras keeps a schedule's name in its
        # config); a class whose own __init__ has a ``name`` keeps it
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        code = init.__code__
        if "name" in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]:
            return

        @functools.wraps(init)
        def __init__(self, *args, name=None, **kw):
            init(self, *args, **kw)
            if name is not None and not isinstance(name, str):
                raise TypeError(f"{type(self).__name__}: name must be a str or "
                                f"None, got {name!r}")
            self.name = name

        cls.__init__ = __init__

    def __call__(self, step: int) -> float:
        return float(self._compute(_as_step(step)))

    def _compute(self, t):  # pragma: no cover - abstract
        raise NotImplementedError(
            f"{type(self).__name__} must implement _compute(self, t)")

    # -- config -------------------------------------------------------------
    def _config(self):
        raise NotImplementedError(
            f"{type(self).__name__} must implement get_config()")

    def get_config(self):
        """Constructor arguments as a JSON-able dict (nested schedules encoded
        as ``{"class_name", "config"}``, registered functions by their name,
        ``name`` only when one was given)."""
        cfg = _encode(self._config())
        if self.name is not None:
            cfg["name"] = self.name
        return cfg

    @classmethod
    def from_config(cls, config):
        """Build an instance from :meth:`get_config` output."""
        if not isinstance(config, dict):
            raise TypeError(
                f"{cls.__name__}.from_config: config must be a dict, got "
                f"{config!r}")
        try:
            return cls(**_decode(config))
        except TypeError as e:
            if "unexpected keyword" in str(e) or "required positional" in str(e):
                raise TypeError(
                    f"{cls.__name__}.from_config: bad config keys "
                    f"{sorted(config)}: {e}") from e
            raise

    # -- state --------------------------------------------------------------
    def _children(self):
        return []

    def _own_state(self):
        return {}

    def _load_own_state(self, state):
        if state:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: this schedule has no "
                f"state, got keys {sorted(state)}")

    def state_dict(self):
        """Counters as a dict of plain scalars (empty if stateless).

        Composite schedules (:class:`ReduceOnPlateau` with a schedule base,
        :class:`Sequential`, :class:`Product`, :class:`LinearWarmup` with
        ``after``) add ``"children"``: the list of their children's state
        dicts, only when at least one child has state.
        """
        state = dict(self._own_state())
        child_states = [c.state_dict() for c in self._children()]
        if any(child_states):
            state["children"] = child_states
        return state

    def load_state_dict(self, state):
        """Restore counters from :meth:`state_dict` output."""
        if not isinstance(state, dict):
            raise TypeError(
                f"{type(self).__name__}.load_state_dict: expected a dict, got "
                f"{state!r}")
        state = dict(state)
        children = self._children()
        child_states = state.pop("children", None)
        if child_states is None:
            for c in children:
                if c.state_dict():
                    raise ValueError(
                        f"{type(self).__name__}.load_state_dict: missing "
                        f"'children' (a child schedule {type(c).__name__} "
                        f"has state)")
        else:
            if len(child_states) != len(children):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: 'children' has "
                    f"{len(child_states)} entries, expected {len(children)}")
        self._load_own_state(state)
        if child_states is not None:
            for c, s in zip(children, child_states):
                c.load_state_dict(s if s else {})

    # -- conveniences ---------------------------------------------------------
    def values(self, n):
        """``np.array([self(0), ..., self(n-1)], dtype=float64)``."""
        n = _int(type(self).__name__, "n", n, lo=0)
        return np.array([self(t) for t in range(n)], dtype=np.float64)

    def __repr__(self):
        try:
            cfg = self._config()
        except NotImplementedError:
            try:
                cfg = self.get_config()
            except Exception:
                return f"<{type(self).__name__}>"
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        return f"{type(self).__name__}({args})"

    def __mul__(self, other):
        if isinstance(other, Schedule) or (
                isinstance(other, numbers.Real) and not isinstance(other, bool)):
            left = list(self.factors) if type(self) is Product else [self]
            right = (list(other.factors) if type(other) is Product
                     else [other])
            return Product(*left, *right)
        return NotImplemented

    def __rmul__(self, other):
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            right = list(self.factors) if type(self) is Product else [self]
            return Product(other, *right)
        return NotImplemented


# ---------------------------------------------------------------------------
# simple schedules
# ---------------------------------------------------------------------------

@_builtin
class Constant(Schedule):
    """Constant value: ``value(t) = value``.

    Parameters
    ----------
    value : float
        The value (finite).

    Notes
    -----
    optax ``constant_schedule``; torch's ``ConstantLR`` (a temporary factor) is
    ``PiecewiseConstant([total_iters], [factor*lr, lr])``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.Constant(0.01)
    >>> s(0), s(10**9)
    (0.01, 0.01)
    """

    def __init__(self, value):
        self.value = _real("Constant", "value", value)

    def _compute(self, t):
        return self.value

    def _config(self):
        return {"value": self.value}


@_builtin
class Lambda(Schedule):
    """Wrap a Python callable: ``value(t) = float(fn(t))``, or ``float(fn())``
    for a callable without arguments.

    Parameters
    ----------
    fn : callable
        ``fn(step: int) -> float``, or ``fn() -> float`` (Keras 3's plain
        callables); which one is decided once, here, from its signature.

    Notes
    -----
    Like torch ``LambdaLR`` with base lr 1 (multiply by a number for a base
    lr: ``Lambda(f) * 0.01``).  An optimizer takes a plain callable of either
    form directly too (``learning_rate=lambda: 0.1``, as Keras 3 does); wrap
    it in ``Lambda`` to combine it with other schedules.  A ``Lambda``
    serialises when its function was registered with
    :func:`register_function` (the config stores the name; ``fn`` may also be
    given as that name); otherwise ``get_config``/:func:`serialize` raise
    ``TypeError``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.Lambda(lambda t: 0.1 / (t + 1))
    >>> s(0), s(4)
    (0.1, 0.02)
    >>> schedules.Lambda(lambda: 0.5)(7)
    0.5
    """

    def __init__(self, fn):
        self.fn = _function("Lambda", "fn", fn)
        self._call = step_callable(self.fn, "Lambda: ")

    def _compute(self, t):
        v = self._call(t)
        if isinstance(v, (str, bytes)):
            raise TypeError(f"Lambda: fn returned {v!r:.60} at step {t}; a schedule must "
                            f"return a number (a float)")
        return float(v)

    def _config(self):
        return {"fn": self.fn}

    def __repr__(self):
        return f"Lambda({self.fn!r})"


@_builtin
class PowerDecay(Schedule):
    """Power scheduling (Géron): ``lr(t) = lr0 / (1 + t/s) ** c``.

    Parameters
    ----------
    initial_learning_rate : float
        ``lr0``.
    decay_steps : float
        ``s > 0``: after ``s`` steps the lr is ``lr0 / 2**c``.
    power : float, default 1.0
        ``c >= 0``.

    Notes
    -----
    For ``c = 1`` this is Keras ``InverseTimeDecay(lr0, s, 1.0)`` and the
    Keras 2 ``decay=1/s`` optimizer argument; torch:
    ``LambdaLR(lambda t: (1 + t/s) ** -c)``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.PowerDecay(0.01, decay_steps=100)
    >>> s(0), s(100), s(300)
    (0.01, 0.005, 0.0025)
    """

    def __init__(self, initial_learning_rate, decay_steps, power=1.0):
        n = "PowerDecay"
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.decay_steps = _real(n, "decay_steps", decay_steps, lo=0, lo_open=True)
        self.power = _real(n, "power", power, lo=0)

    def _compute(self, t):
        return self.initial_learning_rate / _pow(1.0 + t / self.decay_steps,
                                                 self.power)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "power": self.power}


@_builtin
class ExponentialDecay(Schedule):
    """Exponential decay: ``lr(t) = lr0 * decay_rate ** p``, ``p = t/decay_steps``
    (``floor(t/decay_steps)`` if ``staircase``).

    Parameters
    ----------
    initial_learning_rate : float
        ``lr0``.
    decay_steps : float
        ``> 0``.
    decay_rate : float, default 0.1
        ``> 0`` (the seed's default 0.1: the lr drops 10x every
        ``decay_steps``).  ``> 1`` grows (overflow gives ``inf``).
    staircase : bool, default False
        Integer division of the exponent (torch ``StepLR`` shape).
    transition_begin : int, default 0
        ``b >= 0``: the value holds at ``lr0`` until step ``b`` and the decay
        counts from there (``p = (t - b)/decay_steps``; optax).
    end_value : float or None, default None
        A floor (``decay_rate < 1``) or ceiling (``decay_rate > 1``) on the
        value (optax).

    Notes
    -----
    Keras ``ExponentialDecay`` (Keras requires ``decay_rate``; here it defaults
    to 0.1), torch ``ExponentialLR(gamma=decay_rate ** (1/decay_steps))``,
    optax ``exponential_decay(init_value, transition_steps, decay_rate,
    transition_begin, staircase, end_value)``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.ExponentialDecay(0.01, decay_steps=100, decay_rate=0.1)
    >>> [round(s(t), 6) for t in (0, 50, 100, 200)]
    [0.01, 0.003162, 0.001, 0.0001]
    >>> s = schedules.ExponentialDecay(0.01, 100, 0.1, staircase=True)
    >>> [round(s(t), 6) for t in (0, 99, 100)]
    [0.01, 0.01, 0.001]
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float,
                 decay_rate: float = 0.1, staircase: bool = False, transition_begin: int = 0,
                 end_value: Optional[float] = None) -> None:
        n = "ExponentialDecay"
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.decay_steps = _real(n, "decay_steps", decay_steps, lo=0, lo_open=True)
        self.decay_rate = _real(n, "decay_rate", decay_rate, lo=0, lo_open=True)
        self.staircase = _bool(n, "staircase", staircase)
        self.transition_begin = _int(n, "transition_begin", transition_begin,
                                     lo=0)
        self.end_value = (None if end_value is None else
                          _real(n, "end_value", end_value))

    def _compute(self, t):
        t = t - self.transition_begin
        if t <= 0:
            return self.initial_learning_rate
        p = t / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        v = (0.0 if self.initial_learning_rate == 0.0 else
             self.initial_learning_rate * _pow(self.decay_rate, p))
        if self.end_value is not None:
            v = (max(v, self.end_value) if self.decay_rate < 1.0 else
                 min(v, self.end_value))
        return v

    def _config(self):
        cfg = {"initial_learning_rate": self.initial_learning_rate,
               "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
               "staircase": self.staircase}
        if self.transition_begin or self.end_value is not None:
            cfg.update(transition_begin=self.transition_begin,
                       end_value=self.end_value)
        return cfg


@_builtin
class InverseTimeDecay(Schedule):
    """Inverse time decay: ``lr(t) = lr0 / (1 + decay_rate * p)``,
    ``p = t/decay_steps`` (``floor`` if ``staircase``).

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : float
        ``> 0``.
    decay_rate : float
        ``>= 0``.
    staircase : bool, default False

    Notes
    -----
    Keras ``InverseTimeDecay`` (same formula); :class:`PowerDecay` with
    ``power=1`` and ``decay_steps = decay_steps/decay_rate``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.InverseTimeDecay(0.01, decay_steps=10, decay_rate=0.5)
    >>> [round(s(t), 6) for t in (0, 10, 20)]
    [0.01, 0.006667, 0.005]
    """

    def __init__(self, initial_learning_rate, decay_steps, decay_rate,
                 staircase=False):
        n = "InverseTimeDecay"
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.decay_steps = _real(n, "decay_steps", decay_steps, lo=0, lo_open=True)
        self.decay_rate = _real(n, "decay_rate", decay_rate, lo=0)
        self.staircase = _bool(n, "staircase", staircase)

    def _compute(self, t):
        p = t / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate,
                "staircase": self.staircase}


@_builtin
class PiecewiseConstant(Schedule):
    """Piecewise constant: the value switches AT each boundary step.

    ``switch="at"`` (default): ``values[i]`` for
    ``boundaries[i-1] <= t < boundaries[i]`` (``values[0]`` for
    ``t < boundaries[0]``, ``values[-1]`` for ``t >= boundaries[-1]``).

    ``switch="after"`` (Keras ``PiecewiseConstantDecay``): ``values[i]`` for
    ``boundaries[i-1] < t <= boundaries[i]``, i.e. the switch happens at step
    ``boundary + 1``.

    Parameters
    ----------
    boundaries : sequence of int
        Non-empty, strictly increasing steps ``>= 0``.
    values : sequence of float
        ``len(boundaries) + 1`` finite values.
    switch : {"at", "after"}, default "at"

    Notes
    -----
    The default matches optax ``piecewise_constant_schedule`` and torch
    ``MultiStepLR``/``LambdaLR`` (switch at the boundary); Keras is one step
    later: ``PiecewiseConstantDecay([3, 6], [1, .5, .1])`` gives ``.5`` at
    steps 4..6, ours gives it at steps 3..5 (use ``switch="after"`` for the
    Keras row).

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.PiecewiseConstant([100, 150], [0.1, 0.01, 0.001])
    >>> [s(t) for t in (0, 99, 100, 149, 150)]
    [0.1, 0.1, 0.01, 0.01, 0.001]
    """

    def __init__(self, boundaries, values, switch="at"):
        n = "PiecewiseConstant"
        self.boundaries = _int_list(n, "boundaries", boundaries)
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"{n}: values must be a sequence of numbers, got "
                            f"{values!r}")
        self.values_ = [_real(n, f"values[{i}]", v) for i, v in enumerate(values)]
        if len(self.values_) != len(self.boundaries) + 1:
            raise ValueError(
                f"{n}: len(values) must be len(boundaries) + 1 = "
                f"{len(self.boundaries) + 1}, got {len(self.values_)} values for "
                f"{len(self.boundaries)} boundaries")
        self.switch = _choice(n, "switch", switch, ("at", "after"))

    def _compute(self, t):
        if self.switch == "at":
            i = bisect.bisect_right(self.boundaries, t)
        else:
            i = bisect.bisect_left(self.boundaries, t)
        return self.values_[i]

    def _config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values_),
                "switch": self.switch}


@_builtin
class PolynomialDecay(Schedule):
    """Polynomial decay from ``lr0`` to ``end_learning_rate`` over
    ``decay_steps`` (Keras semantics).

    No cycle: ``s = min(t, D)``,
    ``lr = (lr0 - end) * (1 - s/D) ** power + end`` (held at ``end`` after D).
    Cycle: ``D' = D * ceil(t/D)`` (``D' = D`` at ``t = 0``),
    ``lr = (lr0 - end) * (1 - t/D') ** power + end``: reaches ``end`` at every
    multiple of ``D`` and jumps back up on the next step.

    Parameters
    ----------
    initial_learning_rate : float
    decay_steps : float
        ``D > 0``.
    end_learning_rate : float, default 1e-4
    power : float, default 1.0
        ``>= 0``.
    cycle : bool, default False

    Notes
    -----
    Keras ``PolynomialDecay``; torch ``PolynomialLR(total_iters=D, power)`` is
    ``end_learning_rate=0``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.PolynomialDecay(0.1, decay_steps=100, end_learning_rate=0.0)
    >>> [round(s(t), 6) for t in (0, 50, 100, 1000)]
    [0.1, 0.05, 0.0, 0.0]
    """

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=1e-4,
                 power=1.0, cycle=False):
        n = "PolynomialDecay"
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.decay_steps = _real(n, "decay_steps", decay_steps, lo=0, lo_open=True)
        self.end_learning_rate = _real(n, "end_learning_rate", end_learning_rate)
        self.power = _real(n, "power", power, lo=0)
        self.cycle = _bool(n, "cycle", cycle)

    def _compute(self, t):
        d = self.decay_steps
        if self.cycle:
            mult = 1.0 if t == 0 else math.ceil(t / d)
            d = d * mult
            s = float(t)
        else:
            s = min(float(t), d)
        frac = max(0.0, 1.0 - s / d)
        lr0, end = self.initial_learning_rate, self.end_learning_rate
        return (lr0 - end) * _pow(frac, self.power) + end

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate,
                "power": self.power, "cycle": self.cycle}


def _cos_decay(frac, alpha, exponent=1.0):
    if exponent != 1.0:
        return (1.0 - alpha) * _pow(0.5 * (1.0 + math.cos(math.pi * frac)),
                                    exponent) + alpha
    return (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * frac)) + alpha


@_builtin
class CosineDecay(Schedule):
    """Cosine decay with optional linear warmup (Keras semantics).

    Without warmup: ``s = min(t, D)``,
    ``lr = lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * s/D)) + alpha)``.

    With ``warmup_target``: ``s = min(t, W + D)``; for ``s < W``:
    ``lr = lr0 + (warmup_target - lr0) * s/W`` (linear ramp from
    ``initial_learning_rate``); then
    ``lr = warmup_target * ((1 - alpha) * 0.5 * (1 + cos(pi * (s-W)/D)) + alpha)``.

    Parameters
    ----------
    initial_learning_rate : float
        Start value (the peak when there is no warmup).
    decay_steps : float
        ``D > 0``: length of the cosine part (excluding warmup, as in Keras;
        optax's ``warmup_cosine_decay_schedule`` includes it).
    alpha : float, default 0.0
        Final value as a fraction of the peak.
    warmup_target : float or None, default None
        Peak reached after the warmup.
    warmup_steps : int, default 0
        ``W >= 0``; requires ``warmup_target`` when positive (Keras silently
        ignores ``warmup_steps`` without a target; we raise).
    exponent : float, default 1.0
        ``> 0``: the cosine factor ``0.5 * (1 + cos(...))`` is raised to this
        power (optax ``cosine_decay_schedule(exponent=)``).

    Notes
    -----
    Keras ``CosineDecay``; torch ``CosineAnnealingLR(T_max=D, eta_min=alpha*lr0)``
    for ``t <= D``, but torch is not clamped past ``T_max`` (it rises again),
    this schedule stays at its final value (:class:`CosineAnnealingLR` has
    both).  optax ``cosine_decay_schedule(init_value, decay_steps, alpha,
    exponent)``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.CosineDecay(0.1, decay_steps=100)
    >>> [round(s(t), 6) for t in (0, 50, 100)]
    [0.1, 0.05, 0.0]
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0,
                 warmup_target=None, warmup_steps=0, exponent=1.0):
        n = "CosineDecay"
        self.exponent = _real(n, "exponent", exponent, lo=0, lo_open=True)
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.decay_steps = _real(n, "decay_steps", decay_steps, lo=0, lo_open=True)
        self.alpha = _real(n, "alpha", alpha)
        self.warmup_target = (None if warmup_target is None else
                              _real(n, "warmup_target", warmup_target))
        self.warmup_steps = _int(n, "warmup_steps", warmup_steps, lo=0)
        if self.warmup_target is None and self.warmup_steps > 0:
            raise ValueError(
                f"{n}: warmup_steps={self.warmup_steps} needs warmup_target "
                f"(got warmup_target=None)")

    def _compute(self, t):
        d = self.decay_steps
        if self.warmup_target is None:
            s = min(float(t), d)
            return self.initial_learning_rate * _cos_decay(s / d, self.alpha,
                                                           self.exponent)
        w = self.warmup_steps
        s = min(float(t), d + w)
        if s < w:
            lr0 = self.initial_learning_rate
            return lr0 + (self.warmup_target - lr0) * s / w
        return self.warmup_target * _cos_decay((s - w) / d, self.alpha,
                                               self.exponent)

    def _config(self):
        cfg = {"initial_learning_rate": self.initial_learning_rate,
               "decay_steps": self.decay_steps, "alpha": self.alpha,
               "warmup_target": self.warmup_target,
               "warmup_steps": self.warmup_steps}
        if self.exponent != 1.0:
            cfg["exponent"] = self.exponent
        return cfg


@_builtin
class CosineDecayRestarts(Schedule):
    """Cosine decay with warm restarts (SGDR), Keras semantics.

    ``f = t / first_decay_steps``; cycle ``i`` spans
    ``[(1 - t_mul**i)/(1 - t_mul), (1 - t_mul**(i+1))/(1 - t_mul))`` in units of
    ``f`` (``[i, i+1)`` for ``t_mul = 1``); with ``g`` the fraction of cycle
    ``i`` completed,
    ``lr = lr0 * ((1 - alpha) * 0.5 * m_mul**i * (1 + cos(pi * g)) + alpha)``.
    The ``alpha`` floor is not scaled by ``m_mul**i`` (as in Keras).

    Parameters
    ----------
    initial_learning_rate : float
    first_decay_steps : float
        Length of the first cycle, ``> 0``.
    t_mul : float, default 2.0
        Cycle-length multiplier, ``>= 1``.
    m_mul : float, default 1.0
        Peak multiplier per restart, ``>= 0``.
    alpha : float, default 0.0

    Notes
    -----
    Keras ``CosineDecayRestarts``; torch
    ``CosineAnnealingWarmRestarts(T_0, T_mult)`` with ``eta_min = 0`` equals
    ``CosineDecayRestarts(lr, T_0, t_mul=T_mult)`` (for integer ``T_mult``).
    The cycle index is computed with a logarithm as in Keras and then
    corrected so that floating-point round-off never puts a step in the wrong
    cycle.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.CosineDecayRestarts(0.1, first_decay_steps=10)
    >>> [round(s(t), 6) for t in (0, 5, 10, 20)]
    [0.1, 0.05, 0.1, 0.05]
    """

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0,
                 m_mul=1.0, alpha=0.0):
        n = "CosineDecayRestarts"
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.first_decay_steps = _real(n, "first_decay_steps", first_decay_steps,
                                       lo=0, lo_open=True)
        self.t_mul = _real(n, "t_mul", t_mul, lo=1)
        self.m_mul = _real(n, "m_mul", m_mul, lo=0)
        self.alpha = _real(n, "alpha", alpha)

    def _cycle(self, f):
        tm = self.t_mul
        if tm == 1.0:
            i = math.floor(f)
            return i, f - i
        i = math.floor(math.log(1.0 - f * (1.0 - tm)) / math.log(tm))

        def start(k):
            return (1.0 - tm ** k) / (1.0 - tm)
        # correct round-off in the log
        while i > 0 and f < start(i):
            i -= 1
        while f >= start(i + 1):
            i += 1
        g = (f - start(i)) / tm ** i
        return i, min(max(g, 0.0), 1.0)

    def _compute(self, t):
        i, g = self._cycle(t / self.first_decay_steps)
        m = _pow(self.m_mul, i) if self.m_mul != 1.0 else 1.0
        cos = 0.5 * m * (1.0 + math.cos(math.pi * g))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cos + self.alpha)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "first_decay_steps": self.first_decay_steps,
                "t_mul": self.t_mul, "m_mul": self.m_mul, "alpha": self.alpha}


@_builtin
class LinearWarmup(Schedule):
    """Linear ramp from ``start`` to ``target`` over ``warmup_steps``, then
    ``target`` or the ``after`` schedule.

    ``lr(t) = start + (target - start) * t / W`` for ``t < W``;
    for ``t >= W``: ``after(t - W)`` if ``after`` is given (it restarts at its
    step 0, like :class:`Sequential`), else ``target``.

    Parameters
    ----------
    warmup_steps : int
        ``W >= 0`` (0: no ramp).
    target : float or None
        End of the ramp.  ``None`` (only with ``after``) means ``after(0)``, so
        the ramp joins the following schedule continuously.
    start : float, default 0.0
        Value at step 0.  To ramp a factor (torch ``LinearLR``), use a start
        and target relative to 1 and multiply: ``LinearWarmup(4, 1.0,
        start=0.25) * base_lr``.
    after : Schedule, float or callable, optional
        What follows the ramp.

    Notes
    -----
    torch ``LinearLR(start_factor, end_factor, total_iters)`` with base lr ``b``
    is ``LinearWarmup(total_iters, end_factor*b, start=start_factor*b)``;
    optax ``linear_schedule``/``warmup_constant_schedule``; Keras has the ramp
    only inside ``CosineDecay(warmup_target=...)``.  The ramp may also go
    down (``target < start``).

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.LinearWarmup(10, target=0.1)
    >>> [round(s(t), 6) for t in (0, 5, 10, 50)]
    [0.0, 0.05, 0.1, 0.1]
    """

    def __init__(self, warmup_steps, target=None, start=0.0, after=None):
        n = "LinearWarmup"
        self.warmup_steps = _int(n, "warmup_steps", warmup_steps, lo=0)
        self.start = _real(n, "start", start)
        self.after = None if after is None else _as_schedule(n, "after", after)
        if target is None and self.after is None:
            raise ValueError(f"{n}: give target, after, or both (got neither)")
        self.target = None if target is None else _real(n, "target", target)

    def _target(self):
        return self.target if self.target is not None else self.after(0)

    def _compute(self, t):
        w = self.warmup_steps
        if t < w:
            return self.start + (self._target() - self.start) * t / w
        if self.after is not None:
            return self.after(t - w)
        return self.target

    def _children(self):
        return [self.after] if self.after is not None else []

    def _config(self):
        return {"warmup_steps": self.warmup_steps, "target": self.target,
                "start": self.start, "after": self.after}


@_builtin
class StepDecay(Schedule):
    """Step decay: ``lr(t) = lr0 * gamma ** floor(t / step_size)``.

    Parameters
    ----------
    initial_learning_rate : float
    step_size : int
        ``>= 1``.
    gamma : float, default 0.1
        ``>= 0``.

    Notes
    -----
    torch ``StepLR`` closed form; Keras ``ExponentialDecay(lr0, step_size,
    gamma, staircase=True)``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.StepDecay(0.1, step_size=30)
    >>> [round(s(t), 6) for t in (0, 29, 30, 60)]
    [0.1, 0.1, 0.01, 0.001]
    """

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        n = "StepDecay"
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.step_size = _int(n, "step_size", step_size, lo=1)
        self.gamma = _real(n, "gamma", gamma, lo=0)

    def _compute(self, t):
        k = t // self.step_size
        if self.initial_learning_rate == 0.0:
            return 0.0
        return self.initial_learning_rate * _pow(self.gamma, k)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "step_size": self.step_size, "gamma": self.gamma}


@_builtin
class MultiStepDecay(Schedule):
    """Multi-step decay: ``lr(t) = lr0 * gamma ** (number of milestones <= t)``.

    Parameters
    ----------
    initial_learning_rate : float
    milestones : sequence of int
        Non-empty, non-decreasing steps ``>= 0``; a milestone listed twice
        counts twice (as in torch).
    gamma : float, default 0.1
        ``>= 0``.

    Notes
    -----
    torch ``MultiStepLR`` closed form (switch AT the milestone).

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.MultiStepDecay(0.1, milestones=[30, 80])
    >>> [round(s(t), 6) for t in (0, 30, 80)]
    [0.1, 0.01, 0.001]
    """

    def __init__(self, initial_learning_rate, milestones, gamma=0.1):
        n = "MultiStepDecay"
        self.initial_learning_rate = _real(n, "initial_learning_rate",
                                           initial_learning_rate)
        self.milestones = _int_list(n, "milestones", milestones, strict=False)
        self.gamma = _real(n, "gamma", gamma, lo=0)

    def _compute(self, t):
        k = bisect.bisect_right(self.milestones, t)
        if self.initial_learning_rate == 0.0:
            return 0.0
        return self.initial_learning_rate * _pow(self.gamma, k)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "milestones": list(self.milestones), "gamma": self.gamma}


# ---------------------------------------------------------------------------
# cyclic schedules
# ---------------------------------------------------------------------------

@_builtin
class CyclicLR(Schedule):
    """Cyclical learning rate (Smith 2017), torch ``CyclicLR`` closed form.

    ``size = up + down``, ``cycle = floor(1 + t/size)``,
    ``x = 1 + t/size - cycle``, ``r = up/size``,
    ``s = x/r`` if ``x <= r`` else ``(x - 1)/(r - 1)`` (a triangle 0 -> 1 -> 0);
    ``lr = base_lr + (max_lr - base_lr) * s * scale(k)`` with
    ``k = cycle`` (``scale_mode="cycle"``) or ``t`` (``"iterations"``) and
    ``scale = 1`` (triangular), ``1/2**(k-1)`` (triangular2),
    ``gamma**k`` (exp_range).

    Parameters
    ----------
    base_lr, max_lr : float
        ``0 <= base_lr <= max_lr``; the lr stays within ``[base_lr, max_lr]``.
    step_size_up : float, default 2000
        Steps of the rising half-cycle, ``> 0``.
    step_size_down : float or None, default None
        Steps of the falling half-cycle (``None``: ``step_size_up``).
    mode : {"triangular", "triangular2", "exp_range"}, default "triangular"
    gamma : float, default 1.0
        ``0 < gamma <= 1``, used by ``exp_range``.
    scale_fn : callable or str or None, default None
        A custom ``scale(k)`` replacing ``mode`` (torch): a function of the
        cycle number or the step (``scale_mode``), or the name of one
        registered with :func:`register_function` (needed to serialise).
    scale_mode : {"cycle", "iterations"} or None
        ``None``: ``"iterations"`` for exp_range, ``"cycle"`` otherwise (torch;
        also ``"cycle"`` with a ``scale_fn``).
    cycle_momentum : bool, default True
        Whether :attr:`momentum` is offered (``False``: it raises), torch's
        switch for cycling the optimizer's momentum.
    base_momentum, max_momentum : float, default 0.8, 0.9
        For the :attr:`momentum` schedule (momentum moves inversely).

    Attributes
    ----------
    momentum : CyclicMomentum
        ``max_momentum - (max_momentum - base_momentum) * s * scale(k)``.

    Notes
    -----
    torch ``CyclicLR`` with the same arguments (less the optimizer; pass
    :attr:`momentum` as the optimizer's momentum to cycle it); the schedule
    does not write the optimizer.  Keras has none.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.CyclicLR(0.001, 0.01, step_size_up=10)
    >>> [round(s(t), 6) for t in (0, 5, 10, 15, 20)]
    [0.001, 0.0055, 0.01, 0.0055, 0.001]
    """

    def __init__(self, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode=None,
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9):
        n = type(self).__name__
        self.base_lr = _real(n, "base_lr", base_lr, lo=0)
        self.max_lr = _real(n, "max_lr", max_lr)
        if self.max_lr < self.base_lr:
            raise ValueError(f"{n}: max_lr must be >= base_lr={self.base_lr}, "
                             f"got {max_lr!r}")
        self.step_size_up = _real(n, "step_size_up", step_size_up, lo=0,
                                  lo_open=True)
        self.step_size_down = (self.step_size_up if step_size_down is None else
                               _real(n, "step_size_down", step_size_down, lo=0,
                                     lo_open=True))
        self.mode = _choice(n, "mode", mode,
                            ("triangular", "triangular2", "exp_range"))
        self.gamma = _real(n, "gamma", gamma, lo=0, lo_open=True, hi=1)
        self.scale_fn = (None if scale_fn is None else
                         _function(n, "scale_fn", scale_fn))
        if scale_mode is None and self.scale_fn is not None:
            scale_mode = "cycle"
        if scale_mode is None:
            scale_mode = "iterations" if self.mode == "exp_range" else "cycle"
        self.scale_mode = _choice(n, "scale_mode", scale_mode,
                                  ("cycle", "iterations"))
        self.cycle_momentum = _bool(n, "cycle_momentum", cycle_momentum)
        self.base_momentum = _real(n, "base_momentum", base_momentum)
        self.max_momentum = _real(n, "max_momentum", max_momentum)

    def _shape(self, t):
        """Return ``s * scale(k)`` in [0, 1]."""
        size = self.step_size_up + self.step_size_down
        ratio = self.step_size_up / size
        cycle = math.floor(1.0 + t / size)
        x = 1.0 + t / size - cycle
        s = x / ratio if x <= ratio else (x - 1.0) / (ratio - 1.0)
        k = cycle if self.scale_mode == "cycle" else t
        if self.scale_fn is not None:
            # a custom scale is the user's: not clamped (as in torch)
            return min(max(s, 0.0), 1.0) * float(self.scale_fn(k))
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = _pow(0.5, k - 1)
        else:
            scale = _pow(self.gamma, k)
        return min(max(s * scale, 0.0), 1.0)

    def _compute(self, t):
        return self.base_lr + (self.max_lr - self.base_lr) * self._shape(t)

    @property
    def momentum(self):
        """The matching inverse momentum schedule (:class:`CyclicMomentum`)."""
        if not self.cycle_momentum:
            raise ValueError(f"{type(self).__name__}: cycle_momentum=False, there is no "
                             f"momentum schedule; pass cycle_momentum=True")
        return CyclicMomentum(**self._config())

    def _config(self):
        return {"base_lr": self.base_lr, "max_lr": self.max_lr,
                "step_size_up": self.step_size_up,
                "step_size_down": self.step_size_down, "mode": self.mode,
                "gamma": self.gamma, "scale_fn": self.scale_fn,
                "scale_mode": self.scale_mode,
                "cycle_momentum": self.cycle_momentum,
                "base_momentum": self.base_momentum,
                "max_momentum": self.max_momentum}


@_builtin
class CyclicMomentum(CyclicLR):
    """Momentum schedule matching :class:`CyclicLR` (same arguments):
    ``m(t) = max_momentum - (max_momentum - base_momentum) * s * scale(k)``.

    Notes
    -----
    torch ``CyclicLR(cycle_momentum=True)`` writes this to ``momentum`` /
    ``betas[0]``.  Usually obtained as ``CyclicLR(...).momentum``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> m = schedules.CyclicMomentum(0.8, 0.9, step_size_up=10)
    >>> [round(m(t), 6) for t in (0, 10, 20)]
    [0.9, 0.8, 0.9]
    """

    def _compute(self, t):
        return self.max_momentum - (self.max_momentum - self.base_momentum) * \
            self._shape(t)


@_builtin
class OneCycle(Schedule):
    """1cycle policy (Smith; Géron ch. 11) with the matching momentum schedule.

    ``initial = max_lr / div_factor``, ``final = initial / final_div_factor``,
    ``N = total_steps``, ``p = pct_start``.  Phases (torch's phase ends):

    * three-phase (default with ``anneal="linear"``): ``initial -> max_lr`` over
      ``[0, p*N - 1]``, ``max_lr -> initial`` over ``[p*N - 1, 2*p*N - 2]``,
      ``initial -> final`` over ``[2*p*N - 2, N - 1]``; momentum
      ``max_m -> base_m -> max_m`` then held.
    * two-phase (default with ``anneal="cos"``; fastai/torch default):
      ``initial -> max_lr`` over ``[0, p*N - 1]``, ``max_lr -> final`` over
      ``[p*N - 1, N - 1]``; momentum ``max_m -> base_m -> max_m``.

    Within a phase from ``a`` to ``b`` with progress ``q`` in [0, 1]:
    linear ``a + (b - a) * q``; cos ``b + (a - b)/2 * (1 + cos(pi * q))``.
    For ``t >= N - 1`` the value is ``final`` (clamped: defined for every
    step, never negative, never raises).

    Parameters
    ----------
    max_lr : float
        Peak learning rate, ``> 0``.
    total_steps : int
        Number of optimizer updates in the cycle, ``>= 1``.
    pct_start : float or None
        Fraction of steps spent rising.  ``None``: 0.45 for three-phase (the
        two first phases are symmetric and take 90% of training, the last 10%
        drop by orders of magnitude, as in Géron), 0.3 for two-phase (torch).
        Three-phase requires ``pct_start <= 0.5``.
    anneal : {"linear", "cos"}, default "linear"
    three_phase : bool or None
        ``None``: ``anneal == "linear"``.
    div_factor : float, default 25.0
        ``>= 1``.
    final_div_factor : float, default 1e4
        ``>= 1``; ``final`` is relative to ``initial`` (as in torch).
    base_momentum, max_momentum : float, default 0.85, 0.95

    Attributes
    ----------
    momentum : OneCycleMomentum
        The inverse momentum schedule (0.95 -> 0.85 -> 0.95 by default).

    Notes
    -----
    ``OneCycle(m, N)`` = torch ``OneCycleLR(max_lr=m, total_steps=N,
    pct_start=0.45, three_phase=True, anneal_strategy="linear")`` and
    ``OneCycle(m, N, anneal="cos")`` = torch's default ``OneCycleLR(max_lr=m,
    total_steps=N)`` for ``t <= N - 1``.  Differences from torch: past the end
    torch extrapolates (negative lr for linear) and raises on the
    ``N+1``-th step; here the final value is held.  Degenerate phases (shorter
    than one step for tiny ``N``) jump to their end value instead of dividing
    by zero.  optax ``linear_onecycle_schedule`` is a similar three-phase
    linear shape with its own phase fractions (``pct_final``).  Keras has no
    1cycle.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> from fastopt import schedules
    >>> s = schedules.OneCycle(max_lr=0.1, total_steps=1000)
    >>> [round(s(t), 6) for t in (0, 449, 898)]
    [0.004, 0.1, 0.004]
    >>> f"{s(999):.1e}", f"{s(10**6):.1e}"   # max_lr/div_factor/final_div_factor, then held
    ('4.0e-07', '4.0e-07')
    >>> [round(s.momentum(t), 6) for t in (0, 449, 898, 999)]
    [0.95, 0.85, 0.95, 0.95]
    >>> w = np.zeros(3)
    >>> opt = fo.SGD([w], learning_rate=s, momentum=s.momentum)
    """

    def __init__(self, max_lr: float, total_steps: int, pct_start: Optional[float] = None,
                 anneal: str = "linear", three_phase: Optional[bool] = None,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 base_momentum: float = 0.85, max_momentum: float = 0.95) -> None:
        n = type(self).__name__
        self.max_lr = _real(n, "max_lr", max_lr, lo=0, lo_open=True)
        self.total_steps = _int(n, "total_steps", total_steps, lo=1)
        self.anneal = _choice(n, "anneal", anneal, ("linear", "cos"))
        if three_phase is None:
            three_phase = self.anneal == "linear"
        self.three_phase = _bool(n, "three_phase", three_phase)
        if pct_start is None:
            pct_start = 0.45 if self.three_phase else 0.3
        self.pct_start = _real(n, "pct_start", pct_start, lo=0,
                               hi=0.5 if self.three_phase else 1.0)
        self.div_factor = _real(n, "div_factor", div_factor, lo=1)
        self.final_div_factor = _real(n, "final_div_factor", final_div_factor,
                                      lo=1)
        self.base_momentum = _real(n, "base_momentum", base_momentum)
        self.max_momentum = _real(n, "max_momentum", max_momentum)
        self._build()

    def _build(self):
        N, p = self.total_steps, self.pct_start
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        self.initial_lr, self.final_lr = initial, final
        bm, mm = self.base_momentum, self.max_momentum
        last = float(N - 1)
        if self.three_phase:
            ends = [p * N - 1.0, 2.0 * p * N - 2.0, last]
            lrs = [(initial, self.max_lr), (self.max_lr, initial), (initial, final)]
            moms = [(mm, bm), (bm, mm), (mm, mm)]
        else:
            ends = [p * N - 1.0, last]
            lrs = [(initial, self.max_lr), (self.max_lr, final)]
            moms = [(mm, bm), (bm, mm)]
        # monotone phase ends inside [.., N-1] (only matters for tiny N)
        fixed, prev = [], -math.inf
        for e in ends[:-1]:
            e = min(max(e, prev), last)
            fixed.append(e)
            prev = e
        fixed.append(last)
        self._phases = []
        start = 0.0
        for e, lr, mom in zip(fixed, lrs, moms):
            self._phases.append((start, e, lr, mom))
            start = max(start, e)

    def _interp(self, a, b, q):
        if self.anneal == "cos":
            v = b + (a - b) / 2.0 * (1.0 + math.cos(math.pi * q))
        else:
            v = a + (b - a) * q
        return min(max(v, min(a, b)), max(a, b))

    def _eval(self, t, which):
        t = float(t)
        phases = self._phases
        for k, (s, e, lr, mom) in enumerate(phases):
            if t <= e or k == len(phases) - 1:
                q = 1.0 if e <= s else (t - s) / (e - s)
                q = min(max(q, 0.0), 1.0)
                a, b = lr if which == 0 else mom
                return self._interp(a, b, q)
        raise AssertionError("unreachable")  # pragma: no cover

    def _compute(self, t):
        return self._eval(t, 0)

    @property
    def momentum(self) -> OneCycleMomentum:
        """The matching inverse momentum schedule (:class:`OneCycleMomentum`)."""
        return OneCycleMomentum(**self._config())

    def _config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "anneal": self.anneal,
                "three_phase": self.three_phase, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor,
                "base_momentum": self.base_momentum,
                "max_momentum": self.max_momentum}


@_builtin
class OneCycleMomentum(OneCycle):
    """Momentum schedule matching :class:`OneCycle` (same arguments).

    ``max_momentum -> base_momentum`` while the lr rises,
    ``base_momentum -> max_momentum`` while it falls back, then held at
    ``max_momentum`` (three-phase); clamped at ``max_momentum`` past the end.

    Notes
    -----
    torch ``OneCycleLR(cycle_momentum=True)`` writes this to ``momentum`` /
    ``betas[0]``.  Usually obtained as ``OneCycle(...).momentum``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> m = schedules.OneCycle(0.1, 100).momentum
    >>> [round(m(t), 4) for t in (0, 44, 88)]
    [0.95, 0.85, 0.95]
    """

    def _compute(self, t):
        return self._eval(t, 1)


# ---------------------------------------------------------------------------
# performance scheduling
# ---------------------------------------------------------------------------

# Keras 3 metrics by direction (their ``_direction``), for mode="auto"
_KERAS_UP = frozenset((
    "accuracy", "auc", "binary_accuracy", "binary_io_u", "categorical_accuracy",
    "concordance_correlation", "cosine_similarity", "f1_score", "fbeta_score",
    "pearson_correlation", "precision", "r2_score", "recall",
    "sparse_categorical_accuracy", "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy"))
_KERAS_DOWN = frozenset((
    "loss", "binary_crossentropy", "categorical_crossentropy",
    "categorical_hinge", "hinge", "kl_divergence", "logcosh",
    "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_error", "mean_squared_logarithmic_error", "poisson",
    "root_mean_squared_error", "sparse_categorical_crossentropy",
    "squared_hinge"))


@_builtin
class ReduceOnPlateau(Schedule):
    """Performance scheduling: reduce a multiplicative scale when a reported
    metric stops improving.

    ``value(t) = max(base(t) * scale, min(min_lr, base(t)))``: the base
    schedule (or float) times the current ``scale``; reductions never take the
    value below ``min_lr`` (and never raise it above ``base(t)``).  The scale
    starts at 1 and changes only in :meth:`report`: ``scale *= factor``.

    Call :meth:`report` after each evaluation (e.g. epoch) with the monitored
    metric.  Improvement (``threshold_mode="abs"``):
    ``cur < best - min_delta`` (min) / ``cur > best + min_delta`` (max);
    ``"rel"``: ``cur < best - min_delta*|best|`` / ``cur > best +
    min_delta*|best|`` (correct for negative metrics, unlike torch).  A NaN
    metric never improves.

    ``convention="keras"`` (default, Keras ``ReduceLROnPlateau`` callback)::

        if cooldown_counter > 0: cooldown_counter -= 1; wait = 0
        if improved: best = cur; wait = 0
        elif cooldown_counter == 0:
            wait += 1
            if wait >= patience and lr > min_lr:
                scale *= factor; cooldown_counter = cooldown; wait = 0

    ``convention="torch"`` (torch ``ReduceLROnPlateau``)::

        if improved: best = cur; wait = 0   else: wait += 1   # wait = num_bad
        if cooldown_counter > 0: cooldown_counter -= 1; wait = 0
        if wait > patience:
            if lr - max(lr*factor, min_lr) > eps: scale *= factor
            cooldown_counter = cooldown; wait = 0

    Keras reduces after ``patience`` bad reports, torch after ``patience+1``.

    Parameters
    ----------
    base : float, Schedule or callable, default 1.0
        What the scale multiplies.
    mode : {"min", "max", "auto"}, default "min"
        ``"auto"`` (Keras 3): from ``monitor`` without its ``val_`` prefix:
        ``"min"`` for ``loss`` and Keras's decreasing metrics (``mean_squared_error``,
        crossentropies, ...), ``"max"`` for its increasing ones (``accuracy``,
        ``auc``, ``precision``, ``recall``, ...); any other name raises, as
        in Keras.
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
    min_delta : float, default 1e-4
        Improvement threshold (torch's ``threshold``), ``>= 0``.
    threshold_mode : {"abs", "rel"} or None
        ``None``: ``"abs"`` for keras, ``"rel"`` for torch.
    cooldown : int, default 0
    min_lr : float, default 0.0
    convention : {"keras", "torch"}, default "keras"
    eps : float, default 1e-8
        torch: skip reductions smaller than ``eps`` (unused for keras).
    monitor : str or None, default None
        The name of the reported metric (Keras's ``monitor``, e.g.
        ``"val_accuracy"``); only ``mode="auto"`` reads it.

    Notes
    -----
    "lr" in the conditions above is ``value(step)`` at the ``step`` passed to
    :meth:`report`; without a step it is exact for a float base, and for a
    schedule base the condition is taken as true (the value is still clamped
    at ``min_lr``).  Keras compares with ``float32(min_lr)``; here float64.
    Unlike the Keras callback, this works with any base schedule (Keras raises
    TypeError when the lr is a schedule).  State: ``best``, ``wait``,
    ``cooldown_counter``, ``scale``, ``num_reports``, ``num_reductions``.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> from fastopt import schedules
    >>> s = schedules.ReduceOnPlateau(0.01, factor=0.5, patience=2)
    >>> opt = fo.SGD([np.zeros(3)], learning_rate=s)
    >>> [s.report(val_loss) for val_loss in (1.0, 0.9, 0.95, 0.93)]
    [False, False, False, True]
    >>> opt.current_hyperparameters()["learning_rate"], s.num_reductions
    (0.005, 1)
    """

    def __init__(self, base: Union[float, Callable[[int], float]] = 1.0, mode: str = "min",
                 factor: float = 0.1, patience: int = 10, min_delta: float = 1e-4,
                 threshold_mode: Optional[str] = None, cooldown: int = 0, min_lr: float = 0.0,
                 convention: str = "keras", eps: float = 1e-8,
                 monitor: Optional[str] = None) -> None:
        n = "ReduceOnPlateau"
        if isinstance(base, Schedule) or (callable(base)
                                          and not isinstance(base, numbers.Real)):
            self.base = _as_schedule(n, "base", base)
        else:
            self.base = _real(n, "base", base)
        self.mode = _choice(n, "mode", mode, ("min", "max", "auto"))
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"{n}: monitor must be a str or None, got {monitor!r}")
        self.monitor = monitor
        self._mode = self.mode
        if self.mode == "auto":
            metric = (monitor or "").removeprefix("val_")
            if metric in _KERAS_DOWN:
                self._mode = "min"
            elif metric in _KERAS_UP:
                self._mode = "max"
            else:
                raise ValueError(
                    f"{n}: mode='auto' cannot tell whether monitor={monitor!r} "
                    f"should be minimized or maximized (known: 'loss' and "
                    f"Keras's metric names, with or without 'val_'); pass "
                    f"mode='min' or mode='max'")
        self.factor = _real(n, "factor", factor, lo=0, lo_open=True, hi=1,
                            hi_open=True)
        self.patience = _int(n, "patience", patience, lo=0)
        self.min_delta = _real(n, "min_delta", min_delta, lo=0)
        self.convention = _choice(n, "convention", convention, ("keras", "torch"))
        if threshold_mode is None:
            threshold_mode = "abs" if self.convention == "keras" else "rel"
        self.threshold_mode = _choice(n, "threshold_mode", threshold_mode,
                                      ("abs", "rel"))
        self.cooldown = _int(n, "cooldown", cooldown, lo=0)
        self.min_lr = _real(n, "min_lr", min_lr, lo=0)
        self.eps = _real(n, "eps", eps, lo=0)
        self.reset()

    # -- evaluation -----------------------------------------------------------
    def _base(self, t):
        return self.base if isinstance(self.base, float) else self.base(t)

    def _compute(self, t):
        b = self._base(t)
        return max(b * self.scale, min(self.min_lr, b))

    # -- reporting ------------------------------------------------------------
    def reset(self):
        """Forget all reports: scale 1, best = +-inf, counters 0."""
        self.best = math.inf if self._mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0
        self.scale = 1.0
        self.num_reports = 0
        self.num_reductions = 0

    @property
    def num_bad(self):
        """torch's name for :attr:`wait`."""
        return self.wait

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _improved(self, cur):
        if math.isnan(cur):
            return False
        best = self.best
        if not math.isfinite(best):
            return cur < best if self._mode == "min" else cur > best
        thr = self.min_delta * (abs(best) if self.threshold_mode == "rel" else 1.0)
        if self._mode == "min":
            return cur < best - thr
        return cur > best + thr

    def report(self, metric: float, step: Optional[int] = None) -> None:
        """Record one evaluation of the monitored metric.

        Parameters
        ----------
        metric : float
            The metric (a NaN counts as no improvement).
        step : int, optional
            The optimizer step at which the lr would next be used; makes the
            ``min_lr``/``eps`` conditions exact for a schedule base.

        Returns
        -------
        bool
            Whether the scale was reduced.
        """
        if isinstance(metric, np.ndarray) and metric.size == 1:
            metric = metric.reshape(()).item()
        if isinstance(metric, (bool, np.bool_)) or not isinstance(
                metric, numbers.Real):
            raise TypeError(
                f"ReduceOnPlateau.report: metric must be a real number, got "
                f"{metric!r}")
        cur = float(metric)
        t = None if step is None else _as_step(step)
        if t is not None:
            lr = self._compute(t)
        elif isinstance(self.base, float):
            lr = self._compute(0)
        else:
            lr = None
        self.num_reports += 1
        reduced = False
        if self.convention == "keras":
            if self.cooldown_counter > 0:
                self.cooldown_counter -= 1
                self.wait = 0
            if self._improved(cur):
                self.best = cur
                self.wait = 0
            elif self.cooldown_counter == 0:
                self.wait += 1
                if self.wait >= self.patience:
                    if lr is None or lr > self.min_lr:
                        self.scale *= self.factor
                        self.cooldown_counter = self.cooldown
                        self.wait = 0
                        reduced = True
        else:
            if self._improved(cur):
                self.best = cur
                self.wait = 0
            else:
                self.wait += 1
            if self.cooldown_counter > 0:
                self.cooldown_counter -= 1
                self.wait = 0
            if self.wait > self.patience:
                if lr is None or lr - max(lr * self.factor, self.min_lr) > self.eps:
                    self.scale *= self.factor
                    reduced = True
                self.cooldown_counter = self.cooldown
                self.wait = 0
        if reduced:
            self.num_reductions += 1
        return reduced

    # -- state ----------------------------------------------------------------
    _STATE_KEYS = ("best", "wait", "cooldown_counter", "scale", "num_reports",
                   "num_reductions")

    def _own_state(self):
        return {"best": float(self.best), "wait": int(self.wait),
                "cooldown_counter": int(self.cooldown_counter),
                "scale": float(self.scale), "num_reports": int(self.num_reports),
                "num_reductions": int(self.num_reductions)}

    def _load_own_state(self, state):
        n = "ReduceOnPlateau.load_state_dict"
        missing = [k for k in self._STATE_KEYS if k not in state]
        extra = [k for k in state if k not in self._STATE_KEYS]
        if missing or extra:
            raise ValueError(f"{n}: missing keys {missing}, unknown keys {extra}")
        best = _real(n, "best", state["best"], finite=False)
        scale = _real(n, "scale", state["scale"], lo=0)
        counters = {k: _int(n, k, state[k], lo=0)
                    for k in ("wait", "cooldown_counter", "num_reports",
                              "num_reductions")}
        self.best, self.scale = best, scale
        for k, v in counters.items():
            setattr(self, k, v)

    def _children(self):
        return [self.base] if isinstance(self.base, Schedule) else []

    def _config(self):
        return {"base": self.base, "mode": self.mode, "factor": self.factor,
                "patience": self.patience, "min_delta": self.min_delta,
                "threshold_mode": self.threshold_mode, "cooldown": self.cooldown,
                "min_lr": self.min_lr, "convention": self.convention,
                "eps": self.eps, "monitor": self.monitor}


# ---------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------

@_builtin
class Sequential(Schedule):
    """Schedules one after another; each later schedule restarts at step 0.

    With ``i = number of boundaries <= t``:
    ``value(t) = schedules[i](t - boundaries[i-1])`` (``schedules[0](t)`` for
    ``i = 0``).  At ``t == boundaries[i-1]`` schedule ``i`` is at its step 0.

    Parameters
    ----------
    schedules : sequence of Schedule, float or callable
        ``len(boundaries) + 1`` entries (numbers become :class:`Constant`).
    boundaries : sequence of int
        Non-empty, strictly increasing, ``>= 0``.  A boundary 0 means the first
        schedule is never used.

    Notes
    -----
    torch ``SequentialLR(schedulers, milestones)`` (restart semantics, closed
    form; also correct for a milestone at 0), optax ``join_schedules``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> warm = schedules.LinearWarmup(10, target=0.1)
    >>> s = schedules.Sequential([warm, schedules.CosineDecay(0.1, 100)], boundaries=[10])
    >>> [round(s(t), 6) for t in (0, 5, 10, 60, 110)]
    [0.0, 0.05, 0.1, 0.05, 0.0]
    """

    def __init__(self, schedules: Sequence[Union[float, Schedule, Callable[[int], float]]],
                 boundaries: Sequence[int]) -> None:
        n = "Sequential"
        if isinstance(schedules, (Schedule, str, bytes)) or not hasattr(
                schedules, "__iter__"):
            raise TypeError(f"{n}: schedules must be a sequence, got {schedules!r}")
        self.schedules = [_as_schedule(n, f"schedules[{i}]", s)
                          for i, s in enumerate(schedules)]
        self.boundaries = _int_list(n, "boundaries", boundaries)
        if len(self.schedules) != len(self.boundaries) + 1:
            raise ValueError(
                f"{n}: len(schedules) must be len(boundaries) + 1 = "
                f"{len(self.boundaries) + 1}, got {len(self.schedules)} schedules "
                f"for {len(self.boundaries)} boundaries")

    def _compute(self, t):
        i = bisect.bisect_right(self.boundaries, t)
        offset = self.boundaries[i - 1] if i > 0 else 0
        return self.schedules[i](t - offset)

    def _children(self):
        return list(self.schedules)

    def _config(self):
        return {"schedules": list(self.schedules),
                "boundaries": list(self.boundaries)}


@_builtin
class Product(Schedule):
    """Product of factors: ``value(t) = f1(t) * f2(t) * ...``.

    Parameters
    ----------
    *factors : Schedule, float or callable
        At least one; numbers become :class:`Constant`.

    Notes
    -----
    ``a * b``, ``a * 0.5`` and ``0.5 * a`` build a flat ``Product``.  The
    closed-form equivalent of torch ``ChainedScheduler`` (product of
    multiplicative factors), e.g. ``PiecewiseConstant([2], [.5, 1]) *
    ExponentialDecay(1, 1, .9)`` = ``ChainedScheduler(ConstantLR(.5, 2),
    ExponentialLR(.9))``; optax multiplies schedules the same way.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.ExponentialDecay(0.1, 10, 0.5) * 2
    >>> type(s).__name__, [round(s(t), 6) for t in (0, 10)]
    ('Product', [0.2, 0.1])
    """

    def __init__(self, *factors):
        n = "Product"
        if len(factors) == 1 and isinstance(factors[0], (list, tuple)):
            factors = tuple(factors[0])
        if not factors:
            raise ValueError(f"{n}: needs at least one factor, got none")
        self.factors = [_as_schedule(n, f"factors[{i}]", f)
                        for i, f in enumerate(factors)]

    def _compute(self, t):
        v = 1.0
        for f in self.factors:
            v *= f(t)
        return v

    def _children(self):
        return list(self.factors)

    def _config(self):
        return {"factors": list(self.factors)}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or not (
                {"factors"} <= set(config) <= {"factors", "name"}):
            raise TypeError(
                f"Product.from_config: expected {{'factors': [...]}}, got {config!r}")
        return cls(*_decode(config["factors"]), name=config.get("name"))

    def __repr__(self):
        return "Product(" + ", ".join(repr(f) for f in self.factors) + ")"


# ---------------------------------------------------------------------------
# torch's scheduler names with torch's arguments
# ---------------------------------------------------------------------------
#
# Each value at step t equals torch's ``get_last_lr()`` after t calls of
# ``scheduler.step()`` (to rounding: torch multiplies the previous lr, these
# are closed forms), for an optimizer whose lr was ``base_lr``.

def _base_lr(owner, base_lr):
    return _real(owner, "base_lr", base_lr, lo=0)


@_builtin
class LinearLR(LinearWarmup):
    """torch ``LinearLR``: a factor ramped linearly from ``start_factor`` to
    ``end_factor`` over ``total_iters`` steps, then held.

    ``lr(t) = base_lr * (start_factor + (end_factor - start_factor) *
    min(t, total_iters) / total_iters)``.

    Parameters
    ----------
    start_factor : float, default 1/3
        In ``(0, 1]`` (torch).
    end_factor : float, default 1.0
        In ``[0, 1]``.
    total_iters : int, default 5
        ``>= 1``.
    base_lr : float
        Keyword only: the optimizer's learning rate the factor multiplies.

    Notes
    -----
    Equal to ``LinearWarmup(total_iters, end_factor*base_lr,
    start=start_factor*base_lr)`` to rounding; torch's own arithmetic is a
    running product of ratios, these values are its closed form.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.LinearLR(start_factor=0.25, total_iters=4, base_lr=0.1)
    >>> [round(s(t), 6) for t in (0, 2, 4, 100)]
    [0.025, 0.0625, 0.1, 0.1]
    """

    def __init__(self, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, *,
                 base_lr):
        n = "LinearLR"
        self.start_factor = _real(n, "start_factor", start_factor, lo=0,
                                  lo_open=True, hi=1)
        self.end_factor = _real(n, "end_factor", end_factor, lo=0, hi=1)
        self.total_iters = _int(n, "total_iters", total_iters, lo=1)
        self.base_lr = _base_lr(n, base_lr)
        super().__init__(self.total_iters, self.end_factor * self.base_lr,
                         start=self.start_factor * self.base_lr)

    def _compute(self, t):
        sf, ef = self.start_factor, self.end_factor
        if t >= self.total_iters:
            return self.base_lr * ef       # exact, as torch's ramp ends
        f = sf + (ef - sf) * t / self.total_iters
        return self.base_lr * min(max(f, min(sf, ef)), max(sf, ef))

    def _config(self):
        return {"start_factor": self.start_factor, "end_factor": self.end_factor,
                "total_iters": self.total_iters, "base_lr": self.base_lr}


@_builtin
class ConstantLR(PiecewiseConstant):
    """torch ``ConstantLR``: ``base_lr * factor`` for ``t < total_iters``,
    then ``base_lr``.

    Parameters
    ----------
    factor : float, default 1/3
        In ``[0, 1]`` (torch).
    total_iters : int, default 5
        ``>= 1``.
    base_lr : float
        Keyword only.

    Notes
    -----
    A :class:`PiecewiseConstant` with one boundary.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.ConstantLR(factor=0.5, total_iters=2, base_lr=0.1)
    >>> [s(t) for t in range(4)]
    [0.05, 0.05, 0.1, 0.1]
    """

    def __init__(self, factor=1.0 / 3, total_iters=5, *, base_lr):
        n = "ConstantLR"
        self.factor = _real(n, "factor", factor, lo=0, hi=1)
        self.total_iters = _int(n, "total_iters", total_iters, lo=1)
        self.base_lr = _base_lr(n, base_lr)
        super().__init__([self.total_iters],
                         [self.base_lr * self.factor, self.base_lr])

    def _config(self):
        return {"factor": self.factor, "total_iters": self.total_iters,
                "base_lr": self.base_lr}


@_builtin
class MultiplicativeLR(Schedule):
    """torch ``MultiplicativeLR``: ``lr(0) = base_lr``,
    ``lr(t) = lr(t-1) * lr_lambda(t)``.

    The running product is the schedule's state: consecutive steps cost one
    call of ``lr_lambda`` each (an earlier step recomputes from 0), and
    :meth:`state_dict` holds ``{"step", "lr"}`` so that a resumed run continues
    the product bit for bit, as torch's scheduler state does.

    Parameters
    ----------
    lr_lambda : callable or str
        ``f(step) -> factor``, or the name of a function registered with
        :func:`register_function` (needed to serialise).
    base_lr : float
        Keyword only.

    Notes
    -----
    The factor for step ``t`` is ``lr_lambda(t)`` for ``t >= 1`` (torch never
    calls it with 0).  Multiply in this order, as torch does, so the values
    equal torch's bit for bit.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.MultiplicativeLR(lambda t: 0.5, base_lr=1.0)
    >>> [s(t) for t in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """

    def __init__(self, lr_lambda, *, base_lr):
        n = "MultiplicativeLR"
        self.lr_lambda = _function(n, "lr_lambda", lr_lambda)
        self.base_lr = _base_lr(n, base_lr)
        self._step, self._lr = 0, self.base_lr

    def _compute(self, t):
        if t < self._step:
            self._step, self._lr = 0, self.base_lr
        while self._step < t:
            self._step += 1
            self._lr = self._lr * float(self.lr_lambda(self._step))
        return self._lr

    def _own_state(self):
        return {"step": self._step, "lr": self._lr}

    def _load_own_state(self, state):
        n = "MultiplicativeLR.load_state_dict"
        if set(state) != {"step", "lr"}:
            raise ValueError(f"{n}: expected keys ['lr', 'step'], got "
                             f"{sorted(state)}")
        self._step = _int(n, "step", state["step"], lo=0)
        self._lr = _real(n, "lr", state["lr"], finite=False)

    def _config(self):
        return {"lr_lambda": self.lr_lambda, "base_lr": self.base_lr}


@_builtin
class PolynomialLR(PolynomialDecay):
    """torch ``PolynomialLR``:
    ``lr(t) = base_lr * (1 - min(t, total_iters)/total_iters) ** power``
    (0 from ``total_iters`` on; torch has no end value and no cycle).

    Parameters
    ----------
    total_iters : int, default 5
        ``>= 1``.
    power : float, default 1.0
        ``>= 0``.
    base_lr : float
        Keyword only.

    Notes
    -----
    A :class:`PolynomialDecay` with ``end_learning_rate=0``; Keras's and
    optax's polynomial schedules have an end value (``PolynomialDecay``).

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.PolynomialLR(total_iters=4, power=2.0, base_lr=1.0)
    >>> [s(t) for t in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    def __init__(self, total_iters=5, power=1.0, *, base_lr):
        n = "PolynomialLR"
        self.total_iters = _int(n, "total_iters", total_iters, lo=1)
        self.base_lr = _base_lr(n, base_lr)
        super().__init__(self.base_lr, self.total_iters, end_learning_rate=0.0,
                         power=_real(n, "power", power, lo=0))

    def _config(self):
        return {"total_iters": self.total_iters, "power": self.power,
                "base_lr": self.base_lr}


@_builtin
class StepLR(StepDecay):
    """torch ``StepLR``: ``lr(t) = base_lr * gamma ** floor(t / step_size)``.

    Notes
    -----
    A :class:`StepDecay` with torch's argument names.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.StepLR(step_size=2, gamma=0.5, base_lr=1.0)
    >>> [s(t) for t in range(5)]
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, step_size, gamma=0.1, *, base_lr):
        super().__init__(_base_lr("StepLR", base_lr), step_size, gamma)
        self.base_lr = self.initial_learning_rate

    def _config(self):
        return {"step_size": self.step_size, "gamma": self.gamma,
                "base_lr": self.base_lr}


@_builtin
class MultiStepLR(MultiStepDecay):
    """torch ``MultiStepLR``: ``lr(t) = base_lr * gamma ** (number of
    milestones <= t)``; milestones in any order, a repeated one counts twice.

    Notes
    -----
    A :class:`MultiStepDecay` with torch's argument names.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.MultiStepLR([3, 1], gamma=0.1, base_lr=1.0)
    >>> [round(s(t), 6) for t in range(4)]
    [1.0, 0.1, 0.1, 0.01]
    """

    def __init__(self, milestones, gamma=0.1, *, base_lr):
        n = "MultiStepLR"
        if isinstance(milestones, (str, bytes)) or not hasattr(
                milestones, "__iter__"):
            raise TypeError(f"{n}: milestones must be a sequence of integers, "
                            f"got {milestones!r}")
        ms = sorted(_int(n, f"milestones[{i}]", m, lo=0)
                    for i, m in enumerate(milestones))
        super().__init__(_base_lr(n, base_lr), ms, gamma)
        self.base_lr = self.initial_learning_rate

    def _config(self):
        return {"milestones": list(self.milestones), "gamma": self.gamma,
                "base_lr": self.base_lr}


@_builtin
class ExponentialLR(ExponentialDecay):
    """torch ``ExponentialLR``: ``lr(t) = base_lr * gamma ** t``.

    Notes
    -----
    An :class:`ExponentialDecay` with ``decay_steps=1``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.ExponentialLR(gamma=0.5, base_lr=1.0)
    >>> [s(t) for t in range(4)]
    [1.0, 0.5, 0.25, 0.125]
    """

    def __init__(self, gamma, *, base_lr):
        super().__init__(_base_lr("ExponentialLR", base_lr), 1, gamma)
        self.base_lr, self.gamma = self.initial_learning_rate, self.decay_rate

    def _config(self):
        return {"gamma": self.gamma, "base_lr": self.base_lr}


@_builtin
class CosineAnnealingLR(Schedule):
    """torch ``CosineAnnealingLR``:
    ``lr(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2``.

    Past ``T_max`` torch's cosine rises again (period ``2 * T_max``); that is
    the default here too.  ``hold=True`` keeps ``eta_min`` from ``T_max`` on
    (as :class:`CosineDecay` does).

    Parameters
    ----------
    T_max : int
        Half period, ``>= 1``.
    eta_min : float, default 0.0
    hold : bool, default False
        Hold ``eta_min`` after ``T_max`` instead of rising again.
    base_lr : float
        Keyword only.

    Notes
    -----
    torch's ``get_last_lr()`` is a recursive product whose values are this
    closed form to rounding, including the rise after ``T_max``.  With
    ``eta_min = alpha * base_lr`` and ``hold=True`` this is
    ``CosineDecay(base_lr, T_max, alpha)``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.CosineAnnealingLR(T_max=4, base_lr=1.0)
    >>> [round(s(t), 6) for t in (0, 2, 4, 6, 8)]
    [1.0, 0.5, 0.0, 0.5, 1.0]
    >>> h = schedules.CosineAnnealingLR(T_max=4, base_lr=1.0, hold=True)
    >>> [round(h(t), 6) for t in (0, 2, 4, 6, 8)]
    [1.0, 0.5, 0.0, 0.0, 0.0]
    """

    def __init__(self, T_max: int, eta_min: float = 0.0, *, base_lr: float,
                 hold: bool = False) -> None:
        n = "CosineAnnealingLR"
        self.T_max = _int(n, "T_max", T_max, lo=1)
        self.eta_min = _real(n, "eta_min", eta_min)
        self.base_lr = _base_lr(n, base_lr)
        self.hold = _bool(n, "hold", hold)

    def _compute(self, t):
        if self.hold:
            t = min(t, self.T_max)
        else:
            t = t % (2 * self.T_max)        # exact period, no large-t drift
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * t / self.T_max)) / 2

    def _config(self):
        return {"T_max": self.T_max, "eta_min": self.eta_min,
                "base_lr": self.base_lr, "hold": self.hold}


@_builtin
class CosineAnnealingWarmRestarts(Schedule):
    """torch ``CosineAnnealingWarmRestarts`` (SGDR):
    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``,
    with ``T_i = T_0 * T_mult**i`` the length of the current cycle and
    ``T_cur`` the steps since its start (integers, as torch counts them).

    Parameters
    ----------
    T_0 : int
        First cycle, ``>= 1``.
    T_mult : int, default 1
        ``>= 1``.
    eta_min : float, default 0.0
    base_lr : float
        Keyword only.

    Notes
    -----
    :class:`CosineDecayRestarts` is the Keras form (``m_mul``, ``alpha``,
    real ``t_mul``).

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.CosineAnnealingWarmRestarts(T_0=2, T_mult=2, base_lr=1.0)
    >>> [round(s(t), 6) for t in range(7)]
    [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """

    def __init__(self, T_0, T_mult=1, eta_min=0.0, *, base_lr):
        n = "CosineAnnealingWarmRestarts"
        self.T_0 = _int(n, "T_0", T_0, lo=1)
        self.T_mult = _int(n, "T_mult", T_mult, lo=1)
        self.eta_min = _real(n, "eta_min", eta_min)
        self.base_lr = _base_lr(n, base_lr)

    def _compute(self, t):
        t_i = self.T_0
        if self.T_mult == 1:
            t %= t_i
        else:
            while t >= t_i:
                t -= t_i
                t_i *= self.T_mult
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * t / t_i)) / 2

    def _config(self):
        return {"T_0": self.T_0, "T_mult": self.T_mult, "eta_min": self.eta_min,
                "base_lr": self.base_lr}


@_builtin
class OneCycleLR(OneCycle):
    """torch ``OneCycleLR`` with torch's arguments and defaults (two-phase
    cosine, ``pct_start=0.3``); ``total_steps`` or ``epochs *
    steps_per_epoch``.  See :class:`OneCycle` for the phases; past the end the
    final value is held (torch raises).

    Parameters
    ----------
    max_lr : float
    total_steps : int or None
    epochs, steps_per_epoch : int or None
        Used when ``total_steps`` is None: ``total_steps = epochs *
        steps_per_epoch``.
    pct_start : float, default 0.3
    anneal_strategy : {"cos", "linear"}, default "cos"
    cycle_momentum : bool, default True
        Whether :attr:`momentum` is offered (``False``: it raises).
    base_momentum, max_momentum : float, default 0.85, 0.95
    div_factor, final_div_factor : float, default 25.0, 1e4
    three_phase : bool, default False

    Notes
    -----
    An :class:`OneCycle` with torch's argument names and defaults; the values
    are torch's at every step up to ``total_steps - 1``.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.OneCycleLR(1.0, epochs=2, steps_per_epoch=5)
    >>> round(s(0), 6), round(s(2), 6), s.total_steps
    (0.04, 1.0, 10)
    """

    def __init__(self, max_lr, total_steps=None, epochs=None,
                 steps_per_epoch=None, pct_start=0.3, anneal_strategy="cos",
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False):
        n = "OneCycleLR"
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError(
                    f"{n}: give total_steps, or epochs and steps_per_epoch "
                    f"(got total_steps=None, epochs={epochs!r}, "
                    f"steps_per_epoch={steps_per_epoch!r})")
            self.epochs = _int(n, "epochs", epochs, lo=1)
            self.steps_per_epoch = _int(n, "steps_per_epoch", steps_per_epoch,
                                        lo=1)
            total = self.epochs * self.steps_per_epoch
        else:
            if epochs is not None or steps_per_epoch is not None:
                raise ValueError(
                    f"{n}: give total_steps or epochs and steps_per_epoch, not "
                    f"both (got total_steps={total_steps!r}, epochs={epochs!r}, "
                    f"steps_per_epoch={steps_per_epoch!r})")
            self.epochs = self.steps_per_epoch = None
            total = total_steps
        self.cycle_momentum = _bool(n, "cycle_momentum", cycle_momentum)
        self.given_total_steps = total_steps
        super().__init__(max_lr, total, pct_start=pct_start,
                         anneal=_choice(n, "anneal_strategy", anneal_strategy,
                                        ("cos", "linear")),
                         three_phase=three_phase, div_factor=div_factor,
                         final_div_factor=final_div_factor,
                         base_momentum=base_momentum, max_momentum=max_momentum)

    @property
    def momentum(self):
        """The matching momentum schedule (``cycle_momentum=True`` only)."""
        if not self.cycle_momentum:
            raise ValueError("OneCycleLR: cycle_momentum=False, there is no "
                             "momentum schedule; pass cycle_momentum=True")
        return OneCycleMomentum(**OneCycle._config(self))

    def _config(self):
        return {"max_lr": self.max_lr, "total_steps": self.given_total_steps,
                "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
                "pct_start": self.pct_start, "anneal_strategy": self.anneal,
                "cycle_momentum": self.cycle_momentum,
                "base_momentum": self.base_momentum,
                "max_momentum": self.max_momentum,
                "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor,
                "three_phase": self.three_phase}


@_builtin
class SWALR(Schedule):
    """torch ``swa_utils.SWALR``: anneal from ``base_lr`` to ``swa_lr`` over
    ``anneal_epochs`` steps, then hold ``swa_lr``.

    ``q = clip(t / max(1, anneal_epochs), 0, 1)`` (``t >= 1`` when
    ``anneal_epochs == 0``), ``a = (1 - cos(pi q))/2`` (``"cos"``) or ``q``
    (``"linear"``), ``lr = swa_lr * a + base_lr * (1 - a)``.

    Parameters
    ----------
    swa_lr : float
        ``>= 0``.
    anneal_epochs : int, default 10
        ``>= 0``.
    anneal_strategy : {"cos", "linear"}, default "cos"
    base_lr : float
        Keyword only: the rate it anneals from (torch: the optimizer's lr when
        the scheduler is made).

    Notes
    -----
    Usually joined after the pre-SWA schedule with :class:`Sequential`; the
    averaging itself is the optimizers' ``use_swa=True`` option.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.SWALR(0.05, anneal_epochs=2, anneal_strategy="linear",
    ...                     base_lr=0.1)
    >>> [round(s(t), 6) for t in range(4)]
    [0.1, 0.075, 0.05, 0.05]
    """

    def __init__(self, swa_lr: float, anneal_epochs: int = 10, anneal_strategy: str = "cos", *,
                 base_lr: float) -> None:
        n = "SWALR"
        self.swa_lr = _real(n, "swa_lr", swa_lr, lo=0)
        self.anneal_epochs = _int(n, "anneal_epochs", anneal_epochs, lo=0)
        self.anneal_strategy = _choice(n, "anneal_strategy", anneal_strategy,
                                       ("cos", "linear"))
        self.base_lr = _base_lr(n, base_lr)

    def _compute(self, t):
        if self.anneal_epochs == 0:
            t = max(1, t)
        q = max(0.0, min(1.0, t / max(1, self.anneal_epochs)))
        a = (1 - math.cos(math.pi * q)) / 2 if self.anneal_strategy == "cos" \
            else q
        return self.swa_lr * a + self.base_lr * (1 - a)

    def _config(self):
        return {"swa_lr": self.swa_lr, "anneal_epochs": self.anneal_epochs,
                "anneal_strategy": self.anneal_strategy, "base_lr": self.base_lr}


# ---------------------------------------------------------------------------
# optax's interpolations and warmup presets; warmup-stable-decay
# ---------------------------------------------------------------------------

@_builtin
class PiecewiseInterpolate(Schedule):
    """optax ``piecewise_interpolate_schedule``: values interpolated between
    boundaries, each boundary multiplying the value by its scale.

    With sorted boundaries ``b_1 < ... < b_n`` (``b_0 = 0``) and values
    ``v_0 = init_value``, ``v_i = v_{i-1} * scale_i``: for
    ``b_i <= t < b_{i+1}``, ``q = (t - b_i) / max(b_{i+1} - b_i, 1)`` and the
    value is ``v_i + (v_{i+1} - v_i) * q`` (``"linear"``) or
    ``v_{i+1} + (v_i - v_{i+1})/2 * (1 + cos(pi q))`` (``"cosine"``);
    ``v_n`` from ``b_n`` on.

    Parameters
    ----------
    interpolate_type : {"linear", "cosine"}
    init_value : float
    boundaries_and_scales : dict int -> float, or list of [boundary, scale]
        Boundaries ``>= 0`` (distinct), scales ``>= 0``; may be empty.

    Notes
    -----
    optax computes the same per step; a boundary 0 makes ``init_value`` unused
    (the first interval is empty).

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.PiecewiseInterpolate("linear", 1.0, {4: 0.5, 8: 0.0})
    >>> [s(t) for t in (0, 2, 4, 6, 8, 9)]
    [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """

    def __init__(self, interpolate_type, init_value, boundaries_and_scales=None):
        n = type(self).__name__
        self.interpolate_type = _choice(n, "interpolate_type", interpolate_type,
                                        ("linear", "cosine"))
        self.init_value = _real(n, "init_value", init_value)
        pairs = boundaries_and_scales or []
        if isinstance(pairs, dict):
            pairs = list(pairs.items())
        if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
            raise TypeError(f"{n}: boundaries_and_scales must be a dict or a "
                            f"list of [boundary, scale] pairs, got {pairs!r}")
        pairs = list(pairs)
        for i, p in enumerate(pairs):
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise TypeError(f"{n}: boundaries_and_scales[{i}] must be a "
                                f"[boundary, scale] pair, got {p!r}")
        keys = [_int(n, f"boundary[{i}]", int(p[0]) if isinstance(p[0], str)
                     else p[0], lo=0) for i, p in enumerate(pairs)]
        pairs = sorted((k, _real(n, f"scale for boundary {k}", p[1], lo=0))
                       for k, p in zip(keys, pairs))
        _int_list(n, "boundaries", [k for k, _ in pairs], allow_empty=True)
        self.boundaries_and_scales = pairs
        self._bounds = [0] + [k for k, _ in pairs]
        self._values = [self.init_value]
        for _, sc in pairs:
            self._values.append(self._values[-1] * sc)

    def _compute(self, t):
        b, v = self._bounds, self._values
        if t >= b[-1]:
            return v[-1]
        i = bisect.bisect_right(b, t) - 1
        q = (t - b[i]) / max(b[i + 1] - b[i], 1)
        a, c = v[i], v[i + 1]
        if self.interpolate_type == "linear":
            return (c - a) * q + a
        return c + (a - c) / 2.0 * (math.cos(math.pi * q) + 1)

    def _config(self):
        return {"interpolate_type": self.interpolate_type,
                "init_value": self.init_value,
                "boundaries_and_scales": [list(p) for p in
                                          self.boundaries_and_scales]}


@_builtin
class LinearOneCycle(PiecewiseInterpolate):
    """optax ``linear_onecycle_schedule``: linear
    ``peak/div_factor -> peak`` until ``int(pct_start*T)``, back to
    ``peak/div_factor`` at ``int(pct_final*T)``, down to
    ``peak/div_factor/final_div_factor`` at ``T``, then held.

    Notes
    -----
    :class:`OneCycle` is torch's phase layout (and momentum); this is optax's.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.LinearOneCycle(100, peak_value=1.0)
    >>> round(s(0), 6), round(s(30), 6), round(s(85), 6), f"{s(100):.1e}"
    (0.04, 1.0, 0.04, '4.0e-06')
    """

    def __init__(self, transition_steps, peak_value, pct_start=0.3,
                 pct_final=0.85, div_factor=25.0, final_div_factor=1e4):
        n = "LinearOneCycle"
        self.transition_steps = _int(n, "transition_steps", transition_steps,
                                     lo=1)
        self.peak_value = _real(n, "peak_value", peak_value)
        self.pct_start = _real(n, "pct_start", pct_start, lo=0, hi=1)
        self.pct_final = _real(n, "pct_final", pct_final, lo=0, hi=1)
        self.div_factor = _real(n, "div_factor", div_factor, lo=0, lo_open=True)
        self.final_div_factor = _real(n, "final_div_factor", final_div_factor,
                                      lo=0, lo_open=True)
        T = self.transition_steps
        scales = {}         # a dict, as optax: a later equal boundary wins
        scales[int(self.pct_start * T)] = self.div_factor
        scales[int(self.pct_final * T)] = 1.0 / self.div_factor
        scales[T] = 1.0 / self.final_div_factor
        super().__init__("linear", self.peak_value / self.div_factor, scales)

    def _config(self):
        return {"transition_steps": self.transition_steps,
                "peak_value": self.peak_value, "pct_start": self.pct_start,
                "pct_final": self.pct_final, "div_factor": self.div_factor,
                "final_div_factor": self.final_div_factor}


class _Joined(Schedule):
    """A preset defined as a :class:`Sequential` of simpler schedules."""

    def _compute(self, t):
        return self._joined._compute(t)


def _linear(init_value, end_value, steps):
    """optax ``linear_schedule`` (a 0-step ramp is its end value)."""
    if steps == 0:
        return Constant(end_value)
    return PolynomialDecay(init_value, steps, end_learning_rate=end_value)


@_builtin
class WarmupCosineDecay(_Joined):
    """optax ``warmup_cosine_decay_schedule``: linear ``init_value ->
    peak_value`` over ``warmup_steps``, then cosine decay to ``end_value`` at
    ``decay_steps`` (the total, warmup included), then held.

    Parameters
    ----------
    init_value, peak_value : float
    warmup_steps : int
        ``>= 0``.
    decay_steps : int
        ``> warmup_steps``.
    end_value : float, default 0.0
    exponent : float, default 1.0

    Notes
    -----
    Built as ``Sequential([linear ramp, CosineDecay(peak_value,
    decay_steps - warmup_steps, alpha=end_value/peak_value, exponent)],
    [warmup_steps])``, as optax joins its two schedules.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.WarmupCosineDecay(0.0, 1.0, warmup_steps=2, decay_steps=6)
    >>> [round(s(t), 6) for t in range(8)]
    [0.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    """

    def __init__(self, init_value, peak_value, warmup_steps, decay_steps,
                 end_value=0.0, exponent=1.0):
        n = "WarmupCosineDecay"
        self.init_value = _real(n, "init_value", init_value)
        self.peak_value = _real(n, "peak_value", peak_value)
        self.warmup_steps = _int(n, "warmup_steps", warmup_steps, lo=0)
        self.decay_steps = _int(n, "decay_steps", decay_steps,
                                lo=self.warmup_steps + 1)
        self.end_value = _real(n, "end_value", end_value)
        self.exponent = _real(n, "exponent", exponent, lo=0, lo_open=True)
        alpha = 0.0 if self.peak_value == 0.0 else self.end_value / self.peak_value
        self._joined = Sequential(
            [_linear(self.init_value, self.peak_value, self.warmup_steps),
             CosineDecay(self.peak_value, self.decay_steps - self.warmup_steps,
                         alpha=alpha, exponent=self.exponent)],
            [self.warmup_steps])

    def _config(self):
        return {"init_value": self.init_value, "peak_value": self.peak_value,
                "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "end_value": self.end_value,
                "exponent": self.exponent}


@_builtin
class WarmupExponentialDecay(_Joined):
    """optax ``warmup_exponential_decay_schedule``: linear ``init_value ->
    peak_value`` over ``warmup_steps``, then :class:`ExponentialDecay` from
    ``peak_value`` (restarting its count at the end of the warmup).

    Parameters
    ----------
    init_value, peak_value : float
    warmup_steps : int
        ``>= 0``.
    transition_steps : float
        ``> 0``.
    decay_rate : float
        ``> 0``.
    transition_begin : int, default 0
    staircase : bool, default False
    end_value : float or None, default None

    Notes
    -----
    Built as ``Sequential([linear ramp, ExponentialDecay(peak_value, ...)],
    [warmup_steps])``, as optax joins its two schedules.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.WarmupExponentialDecay(0.0, 1.0, 2, 1, 0.5, end_value=0.2)
    >>> [s(t) for t in range(6)]
    [0.0, 0.5, 1.0, 0.5, 0.25, 0.2]
    """

    def __init__(self, init_value, peak_value, warmup_steps, transition_steps,
                 decay_rate, transition_begin=0, staircase=False,
                 end_value=None):
        n = "WarmupExponentialDecay"
        self.init_value = _real(n, "init_value", init_value)
        self.peak_value = _real(n, "peak_value", peak_value)
        self.warmup_steps = _int(n, "warmup_steps", warmup_steps, lo=0)
        decay = ExponentialDecay(self.peak_value, transition_steps, decay_rate,
                                 staircase=staircase,
                                 transition_begin=transition_begin,
                                 end_value=end_value)
        self.transition_steps, self.decay_rate = decay.decay_steps, decay.decay_rate
        self.transition_begin, self.staircase = (decay.transition_begin,
                                                 decay.staircase)
        self.end_value = decay.end_value
        self._joined = Sequential(
            [_linear(self.init_value, self.peak_value, self.warmup_steps), decay],
            [self.warmup_steps])

    def _config(self):
        return {"init_value": self.init_value, "peak_value": self.peak_value,
                "warmup_steps": self.warmup_steps,
                "transition_steps": self.transition_steps,
                "decay_rate": self.decay_rate,
                "transition_begin": self.transition_begin,
                "staircase": self.staircase, "end_value": self.end_value}


@_builtin
class WarmupStableDecay(Schedule):
    """Warmup-stable-decay (WSD, "trapezoidal"): a linear warmup, a long
    constant phase at the peak, a short decay of a chosen shape, then held.

    With ``W, S, D`` the three lengths and ``q = (t - W - S) / D``:

    * ``t < W``: ``init_value + (peak_value - init_value) * t / W``
    * ``W <= t < W + S``: ``peak_value``
    * ``W + S <= t < W + S + D``: ``end + (peak - end) * f(q)`` with
      ``f = 1 - q`` (``"linear"``), ``(1 + cos(pi q))/2`` (``"cosine"``),
      ``1 - sqrt(q)`` (``"1-sqrt"``), ``1 - q**2`` (``"square"``)
    * ``t >= W + S + D``: ``end_value``

    A pure function of the step: resuming from a checkpoint in any phase
    continues exactly (and the stable phase can be extended by loading the
    same step into a schedule with a longer ``stable_steps``).

    Parameters
    ----------
    peak_value : float
    warmup_steps, stable_steps, decay_steps : int
        ``>= 0`` each.
    decay_shape : {"linear", "cosine", "1-sqrt", "square"}, default "linear"
    init_value : float, default 0.0
    end_value : float, default 0.0

    Notes
    -----
    The schedule of recent LLM pre-training (MiniCPM; Hägele et al. 2024 for
    ``"1-sqrt"``); Keras, torch and optax have no single schedule for it.

    Examples
    --------
    >>> from fastopt import schedules
    >>> s = schedules.WarmupStableDecay(1.0, warmup_steps=2, stable_steps=3,
    ...                                 decay_steps=4)
    >>> [s(t) for t in range(11)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """

    _SHAPES = ("linear", "cosine", "1-sqrt", "square")

    def __init__(self, peak_value, warmup_steps, stable_steps, decay_steps,
                 decay_shape="linear", init_value=0.0, end_value=0.0):
        n = "WarmupStableDecay"
        self.peak_value = _real(n, "peak_value", peak_value)
        self.warmup_steps = _int(n, "warmup_steps", warmup_steps, lo=0)
        self.stable_steps = _int(n, "stable_steps", stable_steps, lo=0)
        self.decay_steps = _int(n, "decay_steps", decay_steps, lo=0)
        self.decay_shape = _choice(n, "decay_shape", decay_shape, self._SHAPES)
        self.init_value = _real(n, "init_value", init_value)
        self.end_value = _real(n, "end_value", end_value)

    def _compute(self, t):
        w, s, d = self.warmup_steps, self.stable_steps, self.decay_steps
        peak, end = self.peak_value, self.end_value
        if t < w:
            return self.init_value + (peak - self.init_value) * t / w
        if t < w + s:
            return peak
        if t >= w + s + d:
            return end
        q = (t - w - s) / d
        shape = self.decay_shape
        if shape == "linear":
            f = 1.0 - q
        elif shape == "cosine":
            f = (1.0 + math.cos(math.pi * q)) / 2
        elif shape == "1-sqrt":
            f = 1.0 - math.sqrt(q)
        else:
            f = 1.0 - q * q
        return end + (peak - end) * f

    def _config(self):
        return {"peak_value": self.peak_value, "warmup_steps": self.warmup_steps,
                "stable_steps": self.stable_steps,
                "decay_steps": self.decay_steps, "decay_shape": self.decay_shape,
                "init_value": self.init_value, "end_value": self.end_value}


# ---------------------------------------------------------------------------
# plotting
# ---------------------------------------------------------------------------

def plot(schedules, steps, ax=None, path=None, logy=False):
    """Plot schedule values against the step (matplotlib, imported lazily).

    Parameters
    ----------
    schedules : Schedule or callable, list of them, or dict label -> schedule
    steps : int or iterable of int
        ``n`` plots steps ``0 .. n-1``.
    ax : matplotlib Axes, optional
        Drawn into if given, else a new figure is created.
    path : str or path-like, optional
        Save the figure there.
    logy : bool, default False
        Logarithmic value axis.

    Returns
    -------
    (fig, ax)
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "fastopt.schedules.plot needs matplotlib, which is not installed; "
            "install it with `pip install matplotlib`") from e
    if isinstance(steps, (numbers.Integral, np.integer)) and not isinstance(
            steps, bool):
        xs = list(range(_int("plot", "steps", steps, lo=0)))
    else:
        xs = [_as_step(s) for s in steps]
    if isinstance(schedules, dict):
        items = list(schedules.items())
    elif isinstance(schedules, (list, tuple)):
        items = [(None, s) for s in schedules]
    else:
        items = [(None, schedules)]
    if ax is None:
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
    else:
        fig = ax.figure
    for label, s in items:
        if not callable(s):
            raise TypeError(f"plot: expected a schedule or callable, got {s!r}")
        if label is None:
            label = repr(s)
            if len(label) > 60:
                label = label[:57] + "..."
        ys = [float(s(x)) for x in xs]
        ax.plot(xs, ys, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    if path is not None:
        fig.savefig(path)
    return fig, ax
