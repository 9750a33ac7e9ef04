"""Types of the public API, for editors and type checkers.

``HyperValue`` is what a hyper-parameter takes: a number or a schedule (a
callable of the step, or of nothing, returning a float).  ``Options`` lists
the keywords every optimizer takes besides its own hyper-parameters, so an
editor completes them on every class (``**kwargs: Unpack[Options]``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ._core import RowGrad

try:
    from typing import Literal
except ImportError:  # pragma: no cover - Python < 3.8
    from typing_extensions import Literal  # type: ignore[assignment]

#: A parameter or gradient: a C-contiguous float32 or float64 ndarray.
Array = npt.NDArray[Any]
#: A schedule: ``fn(step) -> float`` or ``fn() -> float``.
Schedule = Union[Callable[[int], float], Callable[[], float]]
#: A float hyper-parameter: a number or a schedule.
HyperValue = Union[float, Schedule]
#: Two hyper-parameters given at once (``betas=(0.9, 0.999)``).
HyperPair = Tuple[HyperValue, HyperValue]
#: The constructor's ``params``: arrays, or param groups ``{"params": [...], ...}``.
Params = Union[Iterable[Array], Iterable[Mapping[str, Any]]]
#: ``step``'s grads: one per parameter, None skips it.
Grads = Iterable[Optional[Union[Array, "RowGrad"]]]
ConventionName = Literal["keras", "torch"]
LoadPolicy = Optional[Literal["checkpoint", "optimizer"]]


class CommonOptions(TypedDict, total=False):
    """The option keywords every optimizer takes (see :class:`fastopt.Optimizer`)."""

    decoupled_weight_decay: Optional[bool]
    maximize: bool
    clipvalue: Optional[float]
    clipnorm: Optional[float]
    global_clipnorm: Optional[float]
    num_threads: Optional[int]
    name: Optional[str]
    use_ema: bool
    ema_momentum: float
    ema_overwrite_frequency: Optional[int]
    gradient_accumulation_steps: Optional[int]
    skip_nonfinite: bool
    use_swa: bool
    swa_start: int
    swa_freq: int
    swa_decay: Optional[float]
    state_dtype: Optional[Literal["float32", "bfloat16", "float16", "int8"]]
    min_8bit_size: int
    seed: int
    rounding: Optional[Literal["stochastic", "nearest"]]
    master_weights: bool


class Options(CommonOptions, total=False):
    """Keywords every optimizer takes: the options, and the aliases ``lr`` and ``eps``."""

    lr: HyperValue
    eps: HyperValue


class OptionsEpsPair(CommonOptions, total=False):
    """As :class:`Options` with ``weight_decay``, for an optimizer whose ``eps``
    is a pair (Adafactor) and so a keyword of its own."""

    lr: HyperValue
    weight_decay: Optional[HyperValue]


class OptionsWithDecay(Options, total=False):
    """:class:`Options` and ``weight_decay`` (AdamW lists it among its own)."""

    weight_decay: Optional[HyperValue]


__all__ = ["Array", "Schedule", "HyperValue", "HyperPair", "Params", "Grads",
           "ConventionName", "LoadPolicy", "CommonOptions", "Options", "OptionsEpsPair",
           "OptionsWithDecay", "np"]
