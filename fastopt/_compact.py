"""Compact storage settings: the dtype each state array and param is held in.

The kernels always compute in float32 (csrc/compact.c); this module decides,
per param, which state arrays are stored as bfloat16, float16 or int8 blocks
(``state_dtype``, per optimizer and per param group), whether a 16-bit param
keeps a float32 master copy (``master_weights``), how it is rounded
(``rounding``) and the seed of the stochastic roundings (``seed``).

Which state may be compact is declared by each optimizer class
(``compact_state``: name -> "signed" or "unsigned"); other state arrays stay
in float32 (or the param's dtype when that is float32/float64).  int8 state
is kept in full precision for params smaller than ``min_8bit_size``
elements, as bitsandbytes does.
"""
import numpy as np

from . import _core

STATE_DTYPES = ("float32", "bfloat16", "float16", "int8")
ROUNDINGS = ("stochastic", "nearest")
_HALF = {_core.FMT_BF16: "bfloat16", _core.FMT_F16: "float16"}


def bfloat16():
    """ml_dtypes' bfloat16 dtype (the one NumPy programs share)."""
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError("bfloat16 arrays need the ml_dtypes package: "
                          "pip install 'fastopt[bf16]' (or pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def half_name(dtype):
    """'bfloat16' or 'float16' for a 16-bit float param dtype, else None."""
    return _HALF.get(_core.storage_format(dtype))


def grad_dtype_names(p):
    """The grad dtypes an elementwise kernel reads for a param of dtype ``p``:
    its own; bfloat16 and float16 for float32; float32 for 16-bit."""
    p = np.dtype(p)
    if p == np.float32:
        return ["float32", "bfloat16", "float16"]
    return [p.name] + (["float32"] if half_name(p) else [])


def grad_dtype_ok(g, p):
    """Whether a grad of dtype ``g`` is read for a param of dtype ``p``."""
    g = np.dtype(g)
    return g.isnative and g.name in grad_dtype_names(p)


def param_dtype(s):
    """The dtype of a param recorded as its ``dtype.str`` (in a state dict or a
    sharded checkpoint's layout): ``'<V2'`` is bfloat16, the only 2-byte
    structured dtype a param may have."""
    return bfloat16() if s == "<V2" else np.dtype(s)


def check_state_dtype(value, where):
    # a str: np.dtype("int8") == "int8" holds, but would not be a name in the config
    if value is None or (isinstance(value, str) and value in STATE_DTYPES):
        if value == "bfloat16":
            bfloat16()
        return value
    raise ValueError(f"{where}state_dtype must be None (the param's dtype) or one of "
                     f"{', '.join(map(repr, STATE_DTYPES))}; got {value!r}")


class Storage:
    """The optimizer-wide storage options, checked."""

    def __init__(self, cls, state_dtype, min_8bit_size, seed, rounding, master_weights):
        name = cls.__name__
        self.state_dtype = check_state_dtype(state_dtype, f"{name}: ")
        if (isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, (int, np.integer))
                or min_8bit_size < 0):
            raise ValueError(f"{name}: min_8bit_size must be an int >= 0 (elements); got "
                             f"{min_8bit_size!r}")
        self.min_8bit_size = int(min_8bit_size)
        if (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                or not 0 <= seed < 2 ** 64):
            raise ValueError(f"{name}: seed must be an int in [0, 2**64); got {seed!r}")
        self.seed = int(seed)
        if rounding is not None and rounding not in ROUNDINGS:
            raise ValueError(f"{name}: rounding must be 'stochastic' or 'nearest' (or None: "
                             f"stochastic, nearest with master_weights); got {rounding!r}")
        self.rounding = rounding
        if not isinstance(master_weights, (bool, np.bool_)):
            raise ValueError(f"{name}: master_weights must be True or False; got "
                             f"{master_weights!r}")
        self.master_weights = bool(master_weights)
        if (self.master_weights or rounding is not None) and not cls.compact_params:
            raise ValueError(f"{name} takes float32/float64 params only, so "
                             f"{'master_weights' if self.master_weights else 'rounding'} "
                             f"would do nothing")

    def __eq__(self, other):
        return isinstance(other, Storage) and self.config() == other.config()

    __hash__ = None     # type: ignore[assignment]

    def __repr__(self):
        return f"Storage({self.config()})"

    def config(self):
        return {"state_dtype": self.state_dtype, "min_8bit_size": self.min_8bit_size,
                "seed": self.seed, "rounding": self.rounding,
                "master_weights": self.master_weights}

    def param_rounding(self):
        if self.rounding is not None:
            return self.rounding
        return "nearest" if self.master_weights else "stochastic"

    def check_param(self, opt, p, i, group_dtype):
        """Refuse params[i] if its dtype and these settings would not work or
        would do nothing (checked with the other rules on each param, in order)."""
        cls, half = type(opt), half_name(p.dtype)
        if half and not cls.compact_params:
            raise TypeError(f"params[{i}] is {p.dtype}: {cls.__name__} takes float32 or float64 "
                            f"params ({cls.compact_reason or 'its update is not elementwise'}); "
                            f"convert the weights once with w.astype(np.float32)")
        if half and (opt._opt_use_ema or opt._opt_use_swa):
            raise ValueError(f"params[{i}] is {p.dtype}: use_ema and use_swa take "
                             f"float32/float64 params (the averages would be rounded to 16 "
                             f"bits every step); average a float32 copy yourself")
        if half and opt._opt_gradient_accumulation_steps:
            raise ValueError(f"params[{i}] is {p.dtype}: gradient_accumulation_steps sums "
                             f"grads in the param's dtype, which would round each sum to 16 "
                             f"bits; accumulate in float32 yourself and step with the mean")
        sd = self.state_dtype if group_dtype is None else group_dtype
        if sd is not None and sd != "float32" and p.dtype == np.float64:
            raise TypeError(f"params[{i}] is float64: state_dtype={sd!r} is for float32, "
                            f"bfloat16 and float16 params")

    def check_all(self, cls, params):
        """After every group is made: the param options must act on some param."""
        check_param_options(cls, self.master_weights, self.rounding, params)

    def check_names(self, cls, names, group_dtype, where):
        sd = self.state_dtype if group_dtype is None else group_dtype
        if sd in (None, "float32"):
            return
        if not any(n in cls.compact_state for n in names):
            why = cls.compact_reason or "it keeps no state that may be compact"
            kept = f"its state {list(names)}" if names else "no state with these settings"
            raise ValueError(f"{where}state_dtype={sd!r}: {cls.__name__} has {kept}, and "
                             f"{why}. Leave state_dtype unset")

    def formats(self, cls, names, group_dtype, p, size):
        """The storage code of each state array of param ``p`` (of a param of
        ``size`` elements: a shard's piece follows the whole param)."""
        sd = self.state_dtype if group_dtype is None else group_dtype
        if sd is None:
            sd = half_name(p.dtype)
        out = []
        for n in names:
            sign = cls.compact_state.get(n)
            if sign is None or sd in (None, "float32"):
                out.append(_core.FMT_NATIVE)
            elif sd == "int8":
                small = size < self.min_8bit_size
                out.append(_core.FMT_NATIVE if small else
                           _core.FMT_Q8S if sign == "signed" else _core.FMT_Q8U)
            else:
                out.append(_core.FMT_BF16 if sd == "bfloat16" else _core.FMT_F16)
        return out


def check_param_options(cls, master_weights, rounding, params):
    """Refuse ``master_weights`` or ``rounding`` when no param is 16-bit."""
    if (master_weights or rounding is not None) and not any(
            half_name(p.dtype) for p in params):
        opt_name = "master_weights" if master_weights else "rounding"
        raise ValueError(f"{cls.__name__}: {opt_name} is for bfloat16 or float16 params, "
                         f"and every param is float32/float64, so it would do nothing")


def compute_dtype(p):
    """The dtype a param's full-precision state is kept in."""
    return np.dtype(np.float32) if half_name(p.dtype) else p.dtype


def encode(values, fmt, shape):
    """A new array of storage ``fmt`` holding float32 ``values`` (rounded to
    nearest for 16-bit floats; int8 blocks as the kernel writes them)."""
    if fmt == _core.FMT_NATIVE:
        return values
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel()
    if fmt == _core.FMT_F16:
        return flat.astype(np.float16).reshape(shape)
    if fmt == _core.FMT_BF16:
        return flat.astype(bfloat16()).reshape(shape)
    return _core.compact_encode(fmt, "stochastic", flat, 0, 0, 0, 0)
