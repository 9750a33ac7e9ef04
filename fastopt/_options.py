"""The options every optimizer takes, as validated attributes.

Each option is a property whose setter checks the value (one message per
option); a settable option takes effect at the next step, a ``fixed`` one
decides which arrays the optimizer keeps and is set at construction only.
After an assignment the optimizer pushes the options to its engine again.
"""
import math
import operator
from typing import Optional

import numpy as np

from . import _threads

CLIPS = ("clipnorm", "global_clipnorm", "clipvalue")


def option(name, check, fixed=False):
    """An optimizer-wide option attribute, validated on every assignment.

    ``check(opt, value)`` returns the value to store or raises.  The getter is
    C-level (attrgetter), so reading an option costs no Python call."""
    attr = "_opt_" + name

    def set_option(opt, value):
        built = "_stepper" in opt.__dict__
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
            opt._configure()

    return property(operator.attrgetter(attr), set_option)


def check_bool(key):
    def check(opt, value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{key} must be a bool; got {value!r}")
        return bool(value)
    return check


def check_truthy(opt, value):
    return bool(value)


def check_num_threads(opt, value):
    return _threads.check_num_threads(value)


def check_decoupled(opt, value):
    value = bool(value)
    if not value and opt.decoupled_only:
        raise ValueError(f"{type(opt).__name__}'s weight decay is decoupled; use Adam for "
                         f"coupled L2")
    return value


def check_clip(key):
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
        others = [k for k in CLIPS if k != key and opt.__dict__.get("_opt_" + k) is not None]
        if others:
            raise ValueError(f"only one of clipnorm, global_clipnorm and clipvalue may be set; "
                             f"{others[0]} is set: set it to None first")
        return float(value)
    return check


def check_ema_momentum(opt, value):
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
            or not 0.0 <= value <= 1.0):
        raise ValueError(f"ema_momentum must be a float in [0, 1]; got {value!r}")
    return float(value)


def check_count(key, low):
    def check(opt, value):
        if value is not None and (isinstance(value, bool) or
                                  not isinstance(value, (int, np.integer)) or value < low):
            raise ValueError(f"{key} must be an int >= {low} or None; got {value!r}")
        return None if value is None else int(value)
    return check


def check_int(key, low):
    def check(opt, value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{key} must be an int >= {low}; got {value!r}")
        return int(value)
    return check


def check_swa(key, default, check):
    """An averaging setting: refused unless use_swa=True (it would do nothing)."""
    def checked(opt, value):
        value = check(opt, value)
        if value != default and not opt.__dict__.get("_opt_use_swa"):
            raise ValueError(f"{key}={value!r} sets up weight averaging, which is off: pass "
                             f"use_swa=True with it (or leave {key} at {default!r})")
        return value
    return checked


def check_swa_decay(opt, value):
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
            or not 0.0 <= value <= 1.0):
        raise ValueError(f"swa_decay must be None (a uniform average) or a float in [0, 1] "
                         f"(torch's EMA decay); got {value!r}")
    return float(value)


def check_use_swa(opt, value):
    value = check_bool("use_swa")(opt, value)
    if value and opt.__dict__.get("_opt_use_ema"):
        raise ValueError("use_ema and use_swa both keep an average of the parameters; choose "
                         "one (an exponential average in torch's form is use_swa=True with "
                         "swa_decay=...)")
    return value


class Options:
    """Mixin: the option attributes (see :class:`fastopt.Optimizer`)."""

    # the values behind the properties (for type checkers)
    _opt_maximize: bool
    _opt_decoupled_weight_decay: bool
    _opt_clipvalue: Optional[float]
    _opt_clipnorm: Optional[float]
    _opt_global_clipnorm: Optional[float]
    _opt_skip_nonfinite: bool
    _opt_num_threads: Optional[int]
    _opt_use_ema: bool
    _opt_ema_momentum: float
    _opt_ema_overwrite_frequency: Optional[int]
    _opt_gradient_accumulation_steps: Optional[int]
    _opt_use_swa: bool
    _opt_swa_start: int
    _opt_swa_freq: int
    _opt_swa_decay: Optional[float]

    maximize = option("maximize", check_truthy)
    decoupled_weight_decay = option("decoupled_weight_decay", check_decoupled)
    clipvalue = option("clipvalue", check_clip("clipvalue"))
    clipnorm = option("clipnorm", check_clip("clipnorm"))
    global_clipnorm = option("global_clipnorm", check_clip("global_clipnorm"))
    skip_nonfinite = option("skip_nonfinite", check_bool("skip_nonfinite"))
    num_threads = option("num_threads", check_num_threads)
    use_ema = option("use_ema", check_bool("use_ema"), fixed=True)
    ema_momentum = option("ema_momentum", check_ema_momentum)
    ema_overwrite_frequency = option("ema_overwrite_frequency",
                                     check_count("ema_overwrite_frequency", 1))
    use_swa = option("use_swa", check_use_swa, fixed=True)
    swa_start = option("swa_start", check_swa("swa_start", 0, check_int("swa_start", 0)))
    swa_freq = option("swa_freq", check_swa("swa_freq", 1, check_int("swa_freq", 1)))
    swa_decay = option("swa_decay", check_swa("swa_decay", None, check_swa_decay))
    gradient_accumulation_steps = option("gradient_accumulation_steps",
                                         check_count("gradient_accumulation_steps", 2),
                                         fixed=True)

    def _set_options(self, clipvalue, clipnorm, global_clipnorm, **rest):
        clips = [k for k, v in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm),
                                ("clipvalue", clipvalue)) if v is not None]
        if len(clips) > 1:
            raise ValueError(f"only one of clipnorm, global_clipnorm and clipvalue may be set; "
                             f"got {', '.join(clips)}")
        self.clipvalue = clipvalue
        self.clipnorm = clipnorm
        self.global_clipnorm = global_clipnorm
        for key, value in rest.items():
            setattr(self, key, value)

    def _options_config(self):
        return {"clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm,
                "use_ema": self.use_ema, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "use_swa": self.use_swa, "swa_start": self.swa_start,
                "swa_freq": self.swa_freq, "swa_decay": self.swa_decay,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "skip_nonfinite": self.skip_nonfinite}
