"""The optimizers: one declaration per algorithm.

Each class names its kernel (``csrc/kernels/<kernel>.c``, whose scalar
function turns the hyper-parameters and the step into the kernel's scalars),
its table of hyper-parameters (defaults per convention, ranges, aliases; in
the order the kernel reads them, checked at import) and its state arrays.
The base class (:mod:`fastopt.optimizer`) does everything else.  Adding an
optimizer: see CONTRIBUTING.md.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import numpy as np

from ._hyper import (CONVENTIONS, DEFAULT, HP, NONNEG, NONPOS, POSITIVE, UNIT,  # noqa: F401
                     UNIT_LEFT_OPEN, UNIT_OPEN, ParamGroup, is_schedule)
from .optimizer import REGISTRY, Optimizer  # noqa: F401

if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Sequence

    from typing_extensions import Unpack

    from ._types import (ConventionName, HyperPair, HyperValue, LoadPolicy, Options,
                         OptionsEpsPair, OptionsWithDecay, Params)

BETAS: "dict[str, tuple[tuple[str, ...], str]]" = {"betas": (("beta_1", "beta_2"), "(b1, b2)")}


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

    kernel = "sgd"
    compact_state = {"momentum": "signed"}
    compact_params = True
    momentum: HyperValue
    nesterov: bool
    dampening: HyperValue
    hyper = {
        "learning_rate": HP(keras=0.01, torch=1e-3, check=NONNEG),
        "momentum": HP(0.0, check=UNIT),
        "nesterov": HP(False, kind=bool),
        "dampening": HP(torch=0.0, check=UNIT),
    }
    check_conventions = ("torch",)

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 momentum: HyperValue | None = None, nesterov: bool | None = None, *,
                 dampening: HyperValue | None = None, convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         momentum=momentum, nesterov=nesterov, dampening=dampening,
                         **kwargs)

    def check(self, hp, where):
        if self.convention == "torch" and hp.get("nesterov"):
            mom, damp = hp.get("momentum", 0.0), hp.get("dampening", 0.0)
            if (not is_schedule(mom) and mom <= 0) or (not is_schedule(damp) and damp != 0):
                raise ValueError(f"{where}nesterov=True needs momentum > 0 and dampening = 0 "
                                 f"in the torch convention (as torch.optim.SGD)")

    def state_names(self, group):
        mom = group["momentum"]
        return ("momentum",) if is_schedule(mom) or mom != 0 else ()


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

    kernel = "adam"
    compact_state = {"m": "signed", "v": "unsigned", "vhat": "unsigned"}
    compact_params = True
    beta_1: HyperValue
    beta_2: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    amsgrad: bool
    betas: HyperPair
    hyper = {
        "learning_rate": HP(1e-3, check=NONNEG),
        "beta_1": HP(0.9, check=UNIT_OPEN),
        "beta_2": HP(0.999, check=UNIT_OPEN),
        "epsilon": HP(keras=1e-7, torch=1e-8, check=NONNEG),
        "amsgrad": HP(False, kind=bool),
    }
    tuple_aliases = BETAS

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 beta_1: HyperValue | None = None, beta_2: HyperValue | None = None,
                 epsilon: HyperValue | None = None, amsgrad: bool | None = None, *,
                 betas: HyperPair | None = None, convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad,
                         betas=betas, **kwargs)

    def state_names(self, group):
        return ("m", "v", "vhat") if group["amsgrad"] else ("m", "v")


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

    hyper = dict(Adam.hyper, weight_decay=HP(keras=0.004, torch=0.01, check=NONNEG,
                                             none_refused=True,
                                             kernel=False))
    decoupled_only = True

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 weight_decay: HyperValue = DEFAULT, beta_1: HyperValue | None = None,
                 beta_2: HyperValue | None = None, epsilon: HyperValue | None = None,
                 amsgrad: bool | None = None, *, betas: HyperPair | None = None,
                 convention: ConventionName = "keras", **kwargs: Unpack[Options]) -> None:
        super().__init__(params, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, weight_decay=weight_decay,
                         betas=betas, convention=convention, **kwargs)


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

    kernel = "adagrad"
    compact_state = {"accumulator": "unsigned"}
    compact_params = True
    initial_accumulator_value: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    lr_decay: HyperValue
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=1e-2, check=NONNEG),
        "initial_accumulator_value": HP(keras=0.1, torch=0.0, check=NONNEG,
                                        schedulable=False, kernel=False),
        "epsilon": HP(keras=1e-7, torch=1e-10, check=NONNEG),
        "lr_decay": HP(torch=0.0, check=NONNEG),
    }
    variables = ("accumulator",)
    initial = {"accumulator": "initial_accumulator_value"}

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 initial_accumulator_value: HyperValue | None = None,
                 epsilon: HyperValue | None = None, *, lr_decay: HyperValue | None = None,
                 convention: ConventionName = "keras", **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         initial_accumulator_value=initial_accumulator_value,
                         epsilon=epsilon, lr_decay=lr_decay, **kwargs)


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

    kernel = "rmsprop"
    compact_state = {"v": "unsigned", "mg": "signed", "momentum": "signed"}
    compact_params = True
    alpha: HyperValue
    rho: HyperValue
    momentum: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    centered: bool
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=1e-2, check=NONNEG),
        "rho": HP(keras=0.9, torch=0.99, check=UNIT, aliases=("alpha",)),
        "momentum": HP(0.0, check=UNIT),
        "epsilon": HP(keras=1e-7, torch=1e-8, check=NONNEG),
        "centered": HP(False, kind=bool),
    }

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 rho: HyperValue | None = None, momentum: HyperValue | None = None,
                 epsilon: HyperValue | None = None, centered: bool | None = None, *,
                 alpha: HyperValue | None = None, convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate, rho=rho,
                         alpha=alpha, momentum=momentum, epsilon=epsilon, centered=centered,
                         **kwargs)

    def state_names(self, group):
        mom = group["momentum"]
        names = ("v", "mg") if group["centered"] else ("v",)
        return names + ("momentum",) if is_schedule(mom) or mom != 0 else names


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

    kernel = "adamax"
    compact_state = {"m": "signed", "u": "unsigned"}
    compact_params = True
    beta_1: HyperValue
    beta_2: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    betas: HyperPair
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=2e-3, check=NONNEG),
        "beta_1": HP(0.9, check=UNIT_OPEN),
        "beta_2": HP(0.999, check=UNIT_OPEN),
        "epsilon": HP(keras=1e-7, torch=1e-8, check=NONNEG),
    }
    variables = ("m", "u")
    tuple_aliases = BETAS

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 beta_1: HyperValue | None = None, beta_2: HyperValue | None = None,
                 epsilon: HyperValue | None = None, *, betas: HyperPair | None = None,
                 convention: ConventionName = "keras", **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, betas=betas, **kwargs)


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

    kernel = "nadam"
    compact_state = {"m": "signed", "v": "unsigned"}
    compact_params = True
    beta_1: HyperValue
    beta_2: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    momentum_decay: HyperValue
    betas: HyperPair
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=2e-3, check=NONNEG),
        "beta_1": HP(0.9, check=UNIT_OPEN),
        "beta_2": HP(0.999, check=UNIT_OPEN),
        "epsilon": HP(keras=1e-7, torch=1e-8, check=NONNEG),
        "momentum_decay": HP(keras=1.0, torch=4e-3, check=NONNEG),
    }
    variables = ("m", "v")
    aux_state = "momentum_products"
    tuple_aliases = BETAS

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 beta_1: HyperValue | None = None, beta_2: HyperValue | None = None,
                 epsilon: HyperValue | None = None, *, momentum_decay: HyperValue | None = None,
                 betas: HyperPair | None = None, convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         momentum_decay=momentum_decay, betas=betas, **kwargs)


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

    kernel = "adadelta"
    compact_state = {"accumulated_grad": "unsigned", "accumulated_delta": "unsigned"}
    compact_params = True
    rho: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=1.0, check=NONNEG),
        "rho": HP(keras=0.95, torch=0.9, check=UNIT),
        "epsilon": HP(keras=1e-7, torch=1e-6, check=NONNEG),
    }
    variables = ("accumulated_grad", "accumulated_delta")

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 rho: HyperValue | None = None, epsilon: HyperValue | None = None, *,
                 convention: ConventionName = "keras", **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate, rho=rho,
                         epsilon=epsilon, **kwargs)


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

    kernel = "lion"
    compact_state = {"momentum": "signed"}
    compact_params = True
    beta_1: HyperValue
    beta_2: HyperValue
    betas: HyperPair
    hyper = {
        "learning_rate": HP(keras=1e-3, check=NONNEG),
        "beta_1": HP(keras=0.9, check=UNIT_LEFT_OPEN,
                     note=" (Keras: beta_1 = 0 degenerates Lion to SignSGD)"),
        "beta_2": HP(keras=0.99, check=UNIT),
    }
    variables = ("momentum",)
    tuple_aliases = BETAS

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 beta_1: HyperValue | None = None, beta_2: HyperValue | None = None, *,
                 betas: HyperPair | None = None, convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, betas=betas, **kwargs)


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

    kernel = "lamb"
    compact_reason = "its trust ratio reads each tensor twice"
    beta_1: HyperValue
    beta_2: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    betas: HyperPair
    hyper = {
        "learning_rate": HP(keras=1e-3, check=NONNEG),
        "beta_1": HP(keras=0.9, check=UNIT_OPEN),
        "beta_2": HP(keras=0.999, check=UNIT_OPEN),
        "epsilon": HP(keras=1e-7, check=NONNEG),
    }
    variables = ("m", "v")
    elementwise = False
    tuple_aliases = BETAS

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 beta_1: HyperValue | None = None, beta_2: HyperValue | None = None,
                 epsilon: HyperValue | None = None, *, betas: HyperPair | None = None,
                 convention: ConventionName = "keras", **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, betas=betas, **kwargs)


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

    kernel = "ftrl"
    compact_state = {"accumulator": "unsigned"}
    compact_params = True
    learning_rate_power: HyperValue
    initial_accumulator_value: HyperValue
    l1_regularization_strength: HyperValue
    l2_regularization_strength: HyperValue
    l2_shrinkage_regularization_strength: HyperValue
    beta: HyperValue
    hyper = {
        "learning_rate": HP(keras=1e-3, check=POSITIVE, note=" for Ftrl (it divides by it)"),
        "learning_rate_power": HP(keras=-0.5, check=NONPOS, schedulable=False),
        "initial_accumulator_value": HP(keras=0.1, check=NONNEG, schedulable=False,
                                        kernel=False),
        "l1_regularization_strength": HP(keras=0.0, check=NONNEG),
        "l2_regularization_strength": HP(keras=0.0, check=NONNEG),
        "l2_shrinkage_regularization_strength": HP(keras=0.0, check=NONNEG),
        "beta": HP(keras=0.0, check=NONNEG),
    }
    variables = ("accumulator", "linear")
    initial = {"accumulator": "initial_accumulator_value"}

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 learning_rate_power: HyperValue | None = None,
                 initial_accumulator_value: HyperValue | None = None,
                 l1_regularization_strength: HyperValue | None = None,
                 l2_regularization_strength: HyperValue | None = None,
                 l2_shrinkage_regularization_strength: HyperValue | None = None,
                 beta: HyperValue | None = None, *, convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         learning_rate_power=learning_rate_power,
                         initial_accumulator_value=initial_accumulator_value,
                         l1_regularization_strength=l1_regularization_strength,
                         l2_regularization_strength=l2_regularization_strength,
                         l2_shrinkage_regularization_strength=(
                             l2_shrinkage_regularization_strength),
                         beta=beta, **kwargs)


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

    kernel = "radam"
    compact_state = {"m": "signed", "v": "unsigned"}
    compact_params = True
    beta_1: HyperValue
    beta_2: HyperValue
    eps: HyperValue
    epsilon: HyperValue
    betas: HyperPair
    hyper = {
        "learning_rate": HP(torch=1e-3, check=NONNEG),
        "beta_1": HP(torch=0.9, check=UNIT_OPEN),
        "beta_2": HP(torch=0.999, check=UNIT_OPEN),
        "epsilon": HP(torch=1e-8, check=NONNEG),
    }
    variables = ("m", "v")
    tuple_aliases = BETAS

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 beta_1: HyperValue | None = None, beta_2: HyperValue | None = None,
                 epsilon: HyperValue | None = None, *, betas: HyperPair | None = None,
                 convention: ConventionName = "torch", **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, betas=betas, **kwargs)


class Rprop(Optimizer):
    r"""Rprop: resilient backpropagation, per-element step sizes from gradient signs (torch.optim).

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-2: every element's first step size.  ``lr`` is an alias.
    etaminus, etaplus : float
        Factors of the step size when the gradient's sign flips (0.5) or
        stays (1.2); ``0 < etaminus < 1 < etaplus``.  ``etas=(etaminus,
        etaplus)`` is accepted.
    step_size_min, step_size_max : float
        Bounds of the step sizes (1e-6, 50).  ``step_sizes=(min, max)`` is
        accepted.
    convention : {"torch"}
        The default: only torch.optim has Rprop; ``"keras"`` raises ValueError.
    **kwargs
        The options of :class:`Optimizer` (``maximize`` negates the gradient
        first, as torch).

    Notes
    -----
    Per element, with ``prev`` the previous (possibly zeroed) gradient::

        f = etaplus if g*prev > 0, etaminus if g*prev < 0, else 1
        step_size <- clip(step_size * f, step_size_min, step_size_max)
        g <- 0 where f == etaminus
        w <- w - sign(g) * step_size;   prev <- g

    As in torch, a parameter's step sizes start at the learning rate of its
    first step; the learning rate is not read again.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.Rprop([w], learning_rate=0.1)
    >>> opt.step([np.array([2.0, -0.5])])
    >>> w
    array([-0.1,  0.1])
    """

    kernel = "rprop"
    compact_state = {"prev": "signed", "step_size": "unsigned"}
    compact_params = True
    etaminus: HyperValue
    etaplus: HyperValue
    step_size_min: HyperValue
    step_size_max: HyperValue
    etas: HyperPair
    step_sizes: HyperPair
    hyper = {
        "learning_rate": HP(torch=1e-2, check=NONNEG),
        "etaminus": HP(torch=0.5, check=(0.0, False, 1.0, False)),
        "etaplus": HP(torch=1.2, check=(1.0, False, math.inf, False)),
        "step_size_min": HP(torch=1e-6, check=NONNEG),
        "step_size_max": HP(torch=50.0, check=NONNEG),
    }
    variables = ("prev", "step_size")
    tuple_aliases = {"etas": (("etaminus", "etaplus"), "(etaminus, etaplus)"),
                     "step_sizes": (("step_size_min", "step_size_max"), "(min, max)")}

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 etaminus: HyperValue | None = None, etaplus: HyperValue | None = None,
                 step_size_min: HyperValue | None = None, step_size_max: HyperValue | None = None,
                 *, etas: HyperPair | None = None, step_sizes: HyperPair | None = None,
                 convention: ConventionName = "torch", **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min,
                         step_size_max=step_size_max, etas=etas, step_sizes=step_sizes,
                         **kwargs)


class ASGD(Optimizer):
    r"""ASGD: averaged stochastic gradient descent (torch.optim.ASGD).

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-2.  ``lr`` is an alias.
    lambd : float or schedule
        Decay term (1e-4): shrinks the weights by ``1 - lambd*eta`` per step
        and slows the step size ``eta`` down.
    alpha : float or schedule
        Power of the step-size decay (0.75).
    t0 : float or schedule
        Step at which averaging starts (1e6): before it the average is a copy
        of the weights.
    convention : {"torch"}
        The default: only torch.optim has ASGD; ``"keras"`` raises ValueError.
    **kwargs
        The options of :class:`Optimizer` (``weight_decay`` is coupled L2, as
        torch; ``maximize``).

    Notes
    -----
    Per parameter, with ``t`` its 1-based step::

        w  <- w*(1 - lambd*eta_t) - eta_t*g
        ax <- w  if mu_t == 1,  else  ax + (w - ax)*mu_t
        eta_1 = lr_1,  eta_{t+1} = lr_t / (1 + lambd*lr_t*t)^alpha
        mu_1 = 1,      mu_{t+1} = 1 / max(1, t - t0)

    As in torch, ``eta`` is computed at the end of a step and used at the
    next one, so a learning-rate schedule reaches the update one step late.
    ``eta`` and ``mu`` are kept in double (torch keeps them in its default
    dtype: the numbers agree with ``torch.set_default_dtype(torch.float64)``).
    The averaged weights ``ax`` are :attr:`averaged_params` (live arrays,
    as :attr:`~Optimizer.averages` are for ``use_ema``);
    :meth:`use_averaged_params` copies them into the parameters.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.ASGD([w], learning_rate=0.1, t0=0.0)
    >>> for g in ([1.0, -1.0], [1.0, -1.0], [1.0, -1.0]):
    ...     opt.step([np.array(g)])
    >>> np.round(w, 6), np.round(opt.averaged_params[0], 6)
    (array([-0.299995,  0.299995]), array([-0.249997,  0.249997]))
    """

    kernel = "asgd"
    compact_reason = "its average ax is a copy of the weights"
    hyper = {
        "learning_rate": HP(torch=1e-2, check=NONNEG),
        "lambd": HP(torch=1e-4, check=NONNEG),
        "alpha": HP(torch=0.75, check=NONNEG),
        "t0": HP(torch=1e6, check=NONNEG),
    }
    variables = ("ax",)
    aux_state = "etas"
    param_methods = ("swap_averages", "use_averaged_params")

    lambd: HyperValue
    alpha: HyperValue
    t0: HyperValue

    def __init__(self, params: Params, learning_rate: HyperValue | None = None, lambd: HyperValue | None = None,
                 alpha: HyperValue | None = None, t0: HyperValue | None = None, *,
                 convention: ConventionName = "torch", **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         lambd=lambd, alpha=alpha, t0=t0, **kwargs)

    @property
    def averaged_params(self) -> list[np.ndarray]:
        """The running averages ``ax`` of the parameters (live arrays; a
        parameter not stepped yet has zeros, as torch's fresh state)."""
        return [st[0] for st in self._state]

    def use_averaged_params(self) -> None:
        """Copy the averages ``ax`` into the parameters (parameters not
        stepped yet keep their values)."""
        with self._lock:
            steps = self._stepper.get_steps()
            for p, st, n in zip(self._params, self._state, steps):
                if n:
                    np.copyto(p, st[0])


OPEN_UNIT = (0.0, False, 1.0, False)     # (0, 1)


class _ScheduleFree(Optimizer):
    """The train/eval modes of the schedule-free methods.

    The parameters hold ``y`` while training and ``x`` (the average, the
    point to evaluate) in eval mode.  :meth:`eval` keeps ``y`` aside and
    writes ``x`` into the parameters; :meth:`train` puts the kept ``y``
    back, so a round trip restores the parameters bit for bit (recomputing
    ``y`` from ``x`` and ``z`` would not).
    """

    shared_clock = True
    initial = {"z": "param"}
    param_methods = ("swap_averages", "eval", "train")
    #: the hyper-parameter that interpolates y between z and x
    interpolation = "beta_1"

    def _start_modes(self):
        self._training = True
        self._kept_y = None

    @property
    def training(self) -> bool:
        """True in train mode (the parameters hold y), False in eval mode (x)."""
        return self._training

    def check(self, hp, where):
        steps = hp.get("warmup_steps", 0.0)
        if not is_schedule(steps) and steps != math.floor(steps):
            raise ValueError(f"{where}warmup_steps must be a whole number of steps (an int in "
                             f"both libraries); got {steps!r}")

    def _x_of(self, gi, y, z):
        """x from y and z in the param's dtype, as the library computes it."""
        b1 = dict(zip(self._hp_order, self._stepper.group_values(gi)))[self.interpolation]
        if self.convention == "keras":
            one = y.dtype.type(1)
            b = y.dtype.type(b1)
            return (y - (one - b) * z) / b
        wt = y.dtype.type(1.0 - 1.0 / b1)
        if abs(wt) < 0.5:
            return y + wt * (z - y)
        return z - (z - y) * (y.dtype.type(1) - wt)

    def _averages(self):
        out = []
        i = 0
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                z = self._state[i][0]
                out.append(p.copy() if self.iterations == 0 else self._x_of(gi, p, z))
                i += 1
        return out

    def eval_params(self) -> list[np.ndarray]:
        """The averaged parameters x (new arrays), whichever the mode; the
        parameters are not touched."""
        with self._lock:
            if not self._training:
                return [p.copy() for p in self._params]
            return self._averages()

    def eval(self) -> None:
        """Switch the parameters to x (the point to evaluate and to ship);
        ``y`` is kept for :meth:`train`.  A no-op in eval mode."""
        with self._lock:
            if not self._training:
                return
            xs = self._averages()
            if self._kept_y is None:
                self._kept_y = [np.empty_like(p) for p in self._params]
            for p, y, x in zip(self._params, self._kept_y, xs):
                np.copyto(y, p)
                np.copyto(p, x)
            self._training = False

    def train(self) -> None:
        """Switch the parameters back to y, exactly as they were before
        :meth:`eval`.  A no-op in train mode."""
        with self._lock:
            if self._training:
                return
            for p, y in zip(self._params, self._kept_y):
                np.copyto(p, y)
            self._training = True

    def step(self, grads):
        if not self._training:
            raise ValueError(f"{type(self).__name__} is in eval mode: the parameters hold the "
                             f"average x, not the point y that gradients are taken at. Call "
                             f"opt.train() before computing gradients and stepping; nothing "
                             f"was changed")
        super().step(grads)

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`Optimizer.state_dict`, with the mode (and, in eval mode,
        the kept y) in ``extra``."""
        with self._lock:
            sd = super().state_dict()
            sd["extra"]["mode"] = "train" if self._training else "eval"
            if not self._training:
                sd["extra"]["train_params"] = [y.copy() for y in self._kept_y]
            return sd

    def load_state_dict(self, sd: Mapping[str, Any], hyperparameters: LoadPolicy = None) -> None:
        with self._lock:
            self.check_state_dict(sd, hyperparameters)()

    def check_state_dict(self, sd: Mapping[str, Any],
                         hyperparameters: LoadPolicy = None) -> Callable[[], None]:
        apply = super().check_state_dict(sd, hyperparameters)
        extra = sd.get("extra") or {}
        mode = extra.get("mode", "train")
        if mode not in ("train", "eval"):
            raise ValueError(f"extra.mode: expected 'train' or 'eval'; got {mode!r:.40}")
        kept = None
        if mode == "eval":
            ys = extra.get("train_params")
            if not isinstance(ys, (list, tuple)) or len(ys) != len(self._params):
                raise ValueError(f"extra.train_params: a state saved in eval mode keeps the "
                                 f"{len(self._params)} train-mode parameters y; got "
                                 f"{type(ys).__name__}")
            kept = []
            for i, (p, y) in enumerate(zip(self._params, ys)):
                y = np.asarray(y)
                if y.shape != p.shape or y.dtype != p.dtype:
                    raise ValueError(f"extra.train_params[{i}]: expected {p.dtype} {p.shape}; "
                                     f"got {y.dtype} {y.shape}")
                kept.append(y.copy())

        def apply_all():
            apply()
            self._training = mode == "train"
            if kept is not None:
                self._kept_y = kept

        return apply_all


class ScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-free AdamW: no learning-rate schedule to set, an average to evaluate.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place (they hold ``y`` while training), or param
        groups.
    learning_rate : float or schedule
        Default 0.0025.  ``lr`` is an alias.
    beta_1 : float or schedule
        In (0, 1), default 0.9: the interpolation between ``z`` and ``x``.
    beta_2 : float or schedule
        0.999, the decay of the second moment.  ``betas=(b1, b2)`` is accepted.
    epsilon : float
        1e-8, added to the bias-corrected ``sqrt(v)``.  ``eps`` is an alias.
    warmup_steps : int
        Linear warmup of the learning rate over the first steps (0).
    r, weight_lr_power : float
        torch convention only: the average's weights ``t^r * lr_max^power``
        (0 and 2).
    convention : {"keras", "torch"}
        ``"torch"`` reproduces the ``schedulefree`` package
        (``AdamWScheduleFree``), ``"keras"`` ``keras.optimizers.ScheduleFreeAdamW``.
    weight_decay : float or schedule
        torch: added to the normalised gradient at ``y`` (the package's form;
        ``decoupled_weight_decay=True`` decays ``y`` by ``1 - lr*wd`` before
        the step instead).  Keras: decoupled, before the step.
    **kwargs
        The options of :class:`Optimizer`.

    Notes
    -----
    With ``t`` the optimizer's step (one clock in both conventions, as both
    libraries count), ``lr_t`` the warmed-up rate and ``c`` the average's
    weight::

        v <- beta_2*v + (1 - beta_2)*g^2
        d  = g / (sqrt(v/(1 - beta_2^t)) + eps)   (torch: + weight_decay*y)
        z' = z - lr_t*d
        x' = (1 - c)*x + c*z'                      (x is implicit: never stored)
        y' = (1 - beta_1)*z' + beta_1*x'

    torch: ``c = t^r*lr_max^p / sum of those weights`` (``lr_max`` the
    largest ``lr_t`` so far; ``c = 0`` while every weight is 0, so a learning
    rate of 0 at the first steps divides by nothing), ``y`` updated in place
    as the package does.  Keras: ``c = 1/t``, ``x`` recovered from ``y`` and
    ``z`` as ``(y - (1 - beta_1)*z)/beta_1``.  Keras's numbers are those of
    its torch backend: there ``x`` is recovered from the new ``z'`` (Keras
    reads ``momentum.value`` before updating it, and the torch backend
    updates that tensor in place; on JAX and TensorFlow it is the old
    ``z``), and the warmup factor ``min(t/W, 1)`` is rounded to float32.

    The parameters hold ``y``, where gradients are taken.  :meth:`eval`
    writes ``x`` into them (for evaluation and checkpoints to ship),
    :meth:`train` restores ``y`` exactly; stepping in eval mode raises;
    :meth:`eval_params` returns ``x`` without touching the parameters.  An
    optimizer starts in train mode (the package starts in eval mode and
    needs ``train()`` first; Keras has no modes).  :meth:`state_dict` records
    the mode.  The package's own ``train()`` recomputes ``y`` from ``x`` with
    a rounding error; fastopt keeps ``y`` instead, so its numbers agree with
    the package's for runs without an eval/train round trip.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.ScheduleFreeAdamW([w], learning_rate=0.1, convention="torch")
    >>> for _ in range(2):
    ...     opt.step([np.array([1.0, -1.0])])
    >>> np.round(w, 6)                  # y
    array([-0.155,  0.155])
    >>> opt.eval(); np.round(w, 6)      # x
    array([-0.15,  0.15])
    >>> opt.train(); np.round(w, 6)     # y again, bit for bit
    array([-0.155,  0.155])
    """

    kernel = "sfadamw"
    compact_state = {"v": "unsigned"}
    compact_reason = "its eval/train modes compute x from y and z in the param's dtype"
    hyper = {
        "learning_rate": HP(0.0025, check=NONNEG),
        "beta_1": HP(0.9, check=OPEN_UNIT),
        "beta_2": HP(0.999, check=UNIT_OPEN),
        "epsilon": HP(1e-8, check=NONNEG),
        "warmup_steps": HP(0.0, check=NONNEG, schedulable=False),
        "r": HP(torch=0.0),
        "weight_lr_power": HP(torch=2.0, check=NONNEG),
    }
    variables = ("z", "v")
    aux_state = "weight_sum_lr_max"
    tuple_aliases = BETAS

    beta_1: HyperValue
    beta_2: HyperValue
    epsilon: HyperValue
    warmup_steps: HyperValue
    r: HyperValue
    weight_lr_power: HyperValue
    betas: HyperPair

    def __init__(self, params: Params, learning_rate: HyperValue | None = None, beta_1: HyperValue | None = None,
                 beta_2: HyperValue | None = None, epsilon: HyperValue | None = None,
                 warmup_steps: HyperValue | None = None, *, r: HyperValue | None = None,
                 weight_lr_power: HyperValue | None = None, betas: HyperPair | None = None,
                 convention: ConventionName = "keras", **kwargs: Unpack[OptionsWithDecay]) -> None:
        self._start_modes()
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                         betas=betas, **kwargs)


class ScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-free SGD (the ``schedulefree`` package's ``SGDScheduleFree``).

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place (they hold ``y`` while training), or param
        groups.
    learning_rate : float or schedule
        Default 1.0.  ``lr`` is an alias.
    momentum : float or schedule
        In (0, 1), default 0.9: the interpolation between ``z`` and ``x``.
    warmup_steps : int
        Linear warmup of the learning rate over the first steps (0).
    r, weight_lr_power : float
        The average's weights ``t^r * lr_max^power`` (0 and 2).
    convention : {"torch"}
        The default: only the schedulefree package has it; ``"keras"`` raises
        ValueError.
    **kwargs
        The options of :class:`Optimizer` (``weight_decay`` is L2 at ``y``, as
        the package).

    Notes
    -----
    With ``t`` the optimizer's step, ``lr_t`` the warmed-up rate and ``c``
    the average's weight (see :class:`ScheduleFreeAdamW`)::

        z' = z - lr_t*g
        x' = (1 - c)*x + c*z'
        y' = (1 - momentum)*z' + momentum*x'

    computed in place on ``y`` as the package does.  Modes, :meth:`eval`,
    :meth:`train`, :meth:`eval_params` and checkpoints as in
    :class:`ScheduleFreeAdamW`.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.zeros(2)
    >>> opt = fo.ScheduleFreeSGD([w], learning_rate=0.5)
    >>> for _ in range(2):
    ...     opt.step([np.array([1.0, -1.0])])
    >>> np.round(w, 6), np.round(opt.eval_params()[0], 6)     # y, and x
    (array([-0.775,  0.775]), array([-0.75,  0.75]))
    """

    kernel = "sfsgd"
    compact_reason = ("its only state z is a point of the parameter space, and its eval/train "
                      "modes compute x from y and z in the param's dtype")
    hyper = {
        "learning_rate": HP(torch=1.0, check=NONNEG),
        "momentum": HP(torch=0.9, check=OPEN_UNIT),
        "warmup_steps": HP(torch=0.0, check=NONNEG, schedulable=False),
        "r": HP(torch=0.0),
        "weight_lr_power": HP(torch=2.0, check=NONNEG),
    }
    variables = ("z",)
    aux_state = "weight_sum_lr_max"
    interpolation = "momentum"

    momentum: HyperValue
    warmup_steps: HyperValue
    r: HyperValue
    weight_lr_power: HyperValue

    def __init__(self, params: Params, learning_rate: HyperValue | None = None, momentum: HyperValue | None = None,
                 warmup_steps: HyperValue | None = None, *, r: HyperValue | None = None,
                 weight_lr_power: HyperValue | None = None, convention: ConventionName = "torch",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        self._start_modes()
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         momentum=momentum, warmup_steps=warmup_steps, r=r,
                         weight_lr_power=weight_lr_power, **kwargs)


class SparseAdam(Optimizer):
    r"""SparseAdam: lazy Adam for embedding tables (torch.optim.SparseAdam).

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        Default 1e-3.  ``lr`` is an alias.
    beta_1, beta_2 : float or schedule
        Decay rates of the moments (0.9, 0.999), in [0, 1).  ``betas`` is
        accepted.
    epsilon : float
        Default 1e-8, added to ``sqrt(v)`` outside the bias correction (> 0).
        ``eps`` is an alias.
    convention : {"torch"}
        The default: only torch.optim has SparseAdam; ``"keras"`` raises
        ValueError.
    **kwargs
        The options of :class:`Optimizer` (see "Embedding tables" in the
        README for what each means with a :class:`RowGrad`).

    Notes
    -----
    Give the gradient of a ``(rows, dim)`` table as
    ``fastopt.RowGrad(indices, values)``: repeated indices are summed first,
    then only the rows named move, with their moments (untouched rows keep
    their ``m`` and ``v`` as they are).  With ``t`` the parameter's step
    count (every step that gives it a gradient, however few rows)::

        m <- m + (g - m)*(1 - beta_1)
        v <- v + (g*g - v)*(1 - beta_2)
        w <- w - lr*sqrt(1 - beta_2^t)/(1 - beta_1^t) * m/(sqrt(v) + eps)

    in torch's order of operations.  A dense gradient updates every element
    by the same rule (torch refuses dense gradients; a RowGrad naming every
    row gives the same result).  Any other elementwise optimizer accepts a
    RowGrad too, with the same lazy meaning.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> table = np.zeros((4, 2))
    >>> opt = fo.SparseAdam([table], learning_rate=0.1)
    >>> opt.step([fo.RowGrad(np.array([2, 0, 2]), np.ones((3, 2)))])
    >>> np.round(table, 6)
    array([[-0.1, -0.1],
           [ 0. ,  0. ],
           [-0.1, -0.1],
           [ 0. ,  0. ]])
    """

    kernel = "sparse_adam"
    compact_reason = "it updates rows of its state"
    hyper = {
        "learning_rate": HP(torch=1e-3, check=NONNEG),
        "beta_1": HP(torch=0.9, check=UNIT_OPEN),
        "beta_2": HP(torch=0.999, check=UNIT_OPEN),
        "epsilon": HP(torch=1e-8, check=POSITIVE),
    }
    variables = ("m", "v")
    tuple_aliases = BETAS

    beta_1: HyperValue
    beta_2: HyperValue
    epsilon: HyperValue
    betas: HyperPair

    def __init__(self, params: Params, learning_rate: HyperValue | None = None, beta_1: HyperValue | None = None,
                 beta_2: HyperValue | None = None, epsilon: HyperValue | None = None, *,
                 betas: HyperPair | None = None, convention: ConventionName = "torch",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, betas=betas, **kwargs)


class Adafactor(Optimizer):
    r"""Adafactor: Adam-like steps with a factored second moment and relative step sizes.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups.
    learning_rate : float or schedule
        The cap of the relative step ``rho = min(lr, 1/sqrt(t))`` and the
        factor of weight decay.  Keras default 1e-3, torch 1e-2.  ``lr`` is an
        alias.
    beta_2_decay : float or schedule
        ``<= 0``: the second moment's decay is ``1 - t^beta_2_decay`` (-0.8).
        torch's name ``beta2_decay`` is an alias.
    epsilon_1 : float
        Keras: added to ``g^2`` (1e-30).  torch: the floor of the row mean
        and, squared, of the second moment estimate; its default ``None``
        (kept as ``-1.0`` in the param group) is the machine epsilon of each
        param's dtype, as in torch.
    epsilon_2 : float
        Floor of the parameter's RMS in the step size (1e-3).
    clip_threshold : float
        ``d``: the update is scaled down to RMS ``d`` at most (1.0).  torch's
        name ``d`` is an alias (torch requires ``d >= 1``).
    eps : tuple
        torch's pair ``(epsilon_1, epsilon_2)``, e.g. ``(None, 1e-3)``.
    relative_step : bool
        Keras's flag.  Keras 3 applies ``rho = min(lr, 1/sqrt(t))`` whatever
        it says, so only ``True`` is accepted: ``False`` would change nothing.
    convention : {"keras", "torch"}
        Keras 3 or torch.optim formulas and defaults.
    weight_decay : float or schedule
        Decoupled in both conventions: ``w <- w*(1 - lr*weight_decay)``.

    Notes
    -----
    With ``t`` the 1-based step (Keras: ``iterations + 1``; torch: the
    param's own count), ``rho = min(lr, 1/sqrt(t))``::

        keras: b = 1 - t^decay,  q = g^2 + eps1
               r <- b*r + (1-b)*mean(q, axis=-1);  c <- b*c + (1-b)*mean(q, axis=-2)
               v  = r/mean(r) (outer) c;  for params of < 2 axes: v <- b*v + (1-b)*q
               u  = g/sqrt(v)
        torch: a = t^decay,  q = g^2,  eps1 = dtype epsilon unless given
               r <- lerp(r, mean(q, axis=-1), a);  c <- lerp(c, mean(q, axis=-2), a)
               v  = r (outer) c / max(mean(r), eps1);  for < 2 axes: v <- lerp(v, q, a)
               u  = g/sqrt(max(v, eps1^2))
        alpha = max(eps2, RMS(w))*rho       (keras: RMS after weight decay, torch: before)
        w <- w - alpha/max(1, RMS(u)/d) * u

    A param of two or more axes is factored over its last two axes, as both
    libraries do: its state is ``row`` (shape ``shape[:-1]``) and ``col``
    (``shape[:-2] + shape[-1:]``), O(rows + cols) per matrix; Keras also
    allocates a full-size ``velocity`` it only overwrites, fastopt does not.
    Params of fewer axes keep ``v``.  The row and column sums run in C in a
    fixed order (blocks of rows whose column sums are added in block order),
    so the result is the same for any thread count.  The RMS of the update
    needs the whole tensor: ``ShardedOptimizer`` shards Adafactor by whole
    tensors.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> W = np.ones((2, 3))
    >>> opt = fo.Adafactor([W], learning_rate=0.01)
    >>> opt.step([np.full((2, 3), 0.5)])
    >>> np.round(W, 4)
    array([[0.99, 0.99, 0.99],
           [0.99, 0.99, 0.99]])
    >>> [a.shape for a in opt.state_arrays()[0]]
    [(2,), (3,)]
    """

    kernel = "adafactor"
    compact_reason = "its state is factored into row and column statistics"
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=1e-2, check=NONNEG),
        "beta_2_decay": HP(-0.8, check=NONPOS, aliases=("beta2_decay",)),
        "epsilon_1": HP(keras=1e-30, torch=-1.0),
        "epsilon_2": HP(1e-3, check=NONNEG),
        "clip_threshold": HP(1.0, check=POSITIVE, aliases=("d",)),
        "relative_step": HP(keras=True, kind=bool, kernel=False),
    }
    tuple_aliases = {"eps": (("epsilon_1", "epsilon_2"), "(eps1, eps2)")}
    variables = ("row", "col", "v")
    elementwise = False
    decoupled_only = True
    check_conventions = ("keras", "torch")

    beta_2_decay: HyperValue
    epsilon_1: HyperValue
    epsilon_2: HyperValue
    clip_threshold: HyperValue
    relative_step: bool
    eps: HyperPair
    beta2_decay: HyperValue
    d: HyperValue

    def __init__(self, params: Params, learning_rate: HyperValue | None = None, beta_2_decay: HyperValue | None = None,
                 epsilon_1: HyperValue | None = None, epsilon_2: HyperValue | None = None,
                 clip_threshold: HyperValue | None = None, relative_step: bool | None = None, *,
                 eps: Any = None, beta2_decay: HyperValue | None = None,
                 d: HyperValue | None = None, convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsEpsPair]) -> None:
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_2_decay=beta_2_decay, epsilon_1=epsilon_1, epsilon_2=epsilon_2,
                         clip_threshold=clip_threshold, relative_step=relative_step, eps=eps,
                         beta2_decay=beta2_decay, d=d, **kwargs)

    def check(self, hp, where):
        eps1 = hp.get("epsilon_1")
        if eps1 is not None and not is_schedule(eps1) and eps1 < 0:
            if not (self.convention == "torch" and eps1 == -1.0):
                raise ValueError(f"{where}epsilon_1 must be >= 0"
                                 f"{' (or None: the dtype epsilon)' if self.convention == 'torch' else ''}"
                                 f"; got {eps1!r}")
        d = hp.get("clip_threshold")
        if self.convention == "torch" and d is not None and not is_schedule(d) and d < 1:
            raise ValueError(f"{where}clip_threshold (torch's d) must be >= 1 in the torch "
                             f"convention (as torch.optim.Adafactor); got {d!r}")
        if hp.get("relative_step") is False:
            raise ValueError(f"{where}relative_step=False is not supported: Keras 3 applies "
                             f"rho = min(learning_rate, 1/sqrt(t)) whether it is set or not, "
                             f"so False would change nothing. Leave it True")

    def _canonical_items(self, items, where, caller):
        # torch's eps=(None, eps2): None is each dtype's machine epsilon, kept as -1.0
        def torch_eps(key, value):
            if (key == "eps" and self.convention == "torch" and isinstance(value, (tuple, list))
                    and len(value) == 2 and value[0] is None):
                return (-1.0, value[1])
            return value
        return super()._canonical_items([(k, torch_eps(k, v)) for k, v in items], where,
                                        caller)

    def state_layout(self, group, p):
        if p.ndim >= 2:
            return [("row", p.shape[:-1]), ("col", p.shape[:-2] + p.shape[-1:])]
        return [("v", p.shape)]


#: torch.optim.Muon's ``adjust_lr_fn`` values, as a param group holds them.
_MUON_ADJUST = {None: 0.0, "original": 0.0, "match_rms_adamw": 1.0}


class Muon(Optimizer):
    r"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for matrices.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        Arrays updated in place, or param groups of them (``"name"`` or
        ``"names"`` give the names the AdamW route reads).  Keras: any shape;
        matrices take the Muon step, other params Keras's AdamW step (see
        Notes).  torch: 2-D arrays (matrices) only, as ``torch.optim.Muon``.
    learning_rate : float or schedule
        1e-3.  ``lr`` is an alias.
    momentum : float or schedule
        0.95.
    nesterov : bool
        True: the Newton-Schulz input is the Nesterov blend of the gradient
        and the momentum, else the momentum.
    muon_a, muon_b, muon_c : float
        The quintic's coefficients (3.4445, -4.7750, 2.0315).  torch's
        ``ns_coefficients=(a, b, c)`` sets all three.
    ns_steps : int
        Newton-Schulz iterations (5; torch requires fewer than 100).
    epsilon : float
        1e-7 (``eps`` is an alias).  torch: the floor of the Frobenius norm.
        Keras: the AdamW route's epsilon (its Muon step adds a fixed 1e-7 to
        the norm).
    adjust_lr_fn : {None, "original", "match_rms_adamw"}
        torch only: the step is ``lr*sqrt(max(1, A/B))`` (None, "original") or
        ``lr*0.2*sqrt(max(A, B))`` for an ``A x B`` param.  A param group
        holds 0.0 for the first and 1.0 for the second.
    rms_rate : float or None
        Keras only: the step is ``lr*rms_rate*sqrt(max(A, B))`` (0.2); None:
        ``lr`` (a param group holds -1.0).
    weight_decay : float or schedule
        Decoupled: ``w <- w*(1 - lr*weight_decay)`` before the update, with
        the learning rate before any adjustment.  Keras 0.004, torch 0.1.
        Keras: the Muon route's.
    adam_beta_1, adam_beta_2 : float or schedule
        Keras only: the AdamW route's moment decay rates (0.9, 0.999).
    adam_lr_ratio : float or schedule
        Keras only: the AdamW route's learning rate is ``lr*adam_lr_ratio`` (1).
    adam_weight_decay : float, schedule or None
        Keras only: the AdamW route's decoupled decay, ``w <- w*(1 -
        lr*adam_weight_decay)`` with the learning rate itself, not times
        ``adam_lr_ratio``, as Keras decays (0.004; None: no decay, as 0.0).
    exclude_layers : list of str
        Keras only: regular expressions; a matrix whose name any of them
        ``re.search``-matches takes the AdamW route (none).  Fixed at
        construction.
    exclude_embeddings : bool
        Keras only: a matrix whose name holds "embedding" (any case) takes the
        AdamW route (True).  Fixed at construction.
    convention : {"keras", "torch"}
        Keras 3 or torch.optim formulas and defaults.
    **kwargs
        The options of :class:`Optimizer`.

    Notes
    -----
    ::

        keras: m <- m + (g + m*(mu - 1));   u = g + mu*m  (nesterov)  or  m
               X = u / (||u||_F + 1e-7)
        torch: m <- lerp(m, g, 1 - mu);     u = lerp(g, m, mu) (nesterov)  or  m
               X = u / max(||u||_F, eps)
        X is transposed first when it has more rows than columns; then ns_steps times
               G = X X^T;   X <- a*X + (b*G + c*G G) X
        w <- w*(1 - lr*weight_decay) - lr*ratio*X

    with ``ratio`` from ``adjust_lr_fn`` (torch) or ``rms_rate`` (Keras).  The
    two conventions differ in the momentum (Keras sums, torch averages: with
    the same momentum torch's buffer is ``1 - mu`` times Keras's, which the
    normalisation cancels when the learning rate is constant), the
    norm's epsilon, the step's ratio and the weight decay default.

    The Newton-Schulz iteration runs in the param's dtype (float32 or
    float64) through NumPy's matmul (its BLAS), between two C passes: the
    momentum pass (which returns ``||u||_F`` from a deterministic reduction)
    and the update.  torch runs the iteration in bfloat16 whatever the
    param's dtype; fastopt never does, so on float64 params its result is
    the float64 one, and torch's bf16 result differs from it by about 1e-2
    (relative, after one step: bench/run.py --muon measures it).

    Keras's AdamW route.  In the Keras convention a param takes Keras's AdamW
    step instead of the Muon step when it is not 2-D, when
    ``exclude_embeddings`` is on and its name holds "embedding", or when an
    ``exclude_layers`` pattern searches its name (Keras's
    ``_should_use_adamw``, which reads variable paths: name the params as
    Keras names the variables, ``{"params": [...], "names": ["dense/kernel",
    ...]}``; an unnamed matrix takes the Muon step)::

        m <- m + (g - m)*(1 - adam_beta_1);   v <- v + (g^2 - v)*(1 - adam_beta_2)
        w <- w*(1 - lr*adam_weight_decay)
             - lr*adam_lr_ratio*sqrt(1 - b2^t)/(1 - b1^t) * m/(sqrt(v) + epsilon)

    Both routes run in the same step (one ``step(grads)``, one state dict,
    one checkpoint; clipping and ``global_clipnorm`` see every grad).
    :attr:`routes` says which step each param gets; a param on the AdamW route
    keeps ``velocity`` beside ``momentum_buffer``.  The route is fixed at
    construction (``add_param_group`` routes the new params the same way); a
    checkpoint restores into an optimizer that routes the params alike.
    ``exclude_from_weight_decay`` turns off either route's decay.  The AdamW
    route is elementwise but, as Muon's step reads whole tensors, takes no
    :class:`RowGrad`.  torch's Muon has no such route: in the torch
    convention, optimize the other params with :class:`AdamW` beside Muon in
    a :class:`fastopt.MultiOptimizer` (routing by name).

    The iteration needs whole matrices: ``ShardedOptimizer`` shards Muon by
    whole tensors (each matrix on one rank).

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> W = np.ones((2, 3))
    >>> opt = fo.Muon([W], learning_rate=0.1, weight_decay=0.0, convention="torch")
    >>> opt.step([np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])])
    >>> np.round(W, 3)
    array([[0.889, 1.   , 1.   ],
           [1.   , 0.889, 1.   ]])
    >>> W, b, E = np.ones((2, 3)), np.ones(3), np.ones((4, 2))
    >>> opt = fo.Muon([{"params": [W, b, E], "names": ["dense/kernel", "dense/bias",
    ...                                                 "token_embedding/embeddings"]}])
    >>> opt.routes
    ['muon', 'adamw', 'adamw']
    """

    kernel = "muon"
    compact_reason = "its Newton-Schulz iteration runs between two passes"
    hyper = {
        "learning_rate": HP(1e-3, check=NONNEG),
        "momentum": HP(0.95, check=NONNEG),
        "nesterov": HP(True, kind=bool),
        "muon_a": HP(3.4445, kernel=False, schedulable=False),
        "muon_b": HP(-4.7750, kernel=False, schedulable=False),
        "muon_c": HP(2.0315, kernel=False, schedulable=False),
        "ns_steps": HP(5, check=NONNEG, kernel=False, schedulable=False),
        "epsilon": HP(1e-7, check=NONNEG, schedulable=False),
        "adjust_lr_fn": HP(torch=0.0, kernel=False, schedulable=False),
        "rms_rate": HP(keras=0.2, kernel=False, schedulable=False, none_refused=True),
        "adam_beta_1": HP(keras=0.9, check=UNIT_OPEN),
        "adam_beta_2": HP(keras=0.999, check=UNIT_OPEN),
        "adam_lr_ratio": HP(keras=1.0, check=NONNEG),
        "adam_weight_decay": HP(keras=0.004, check=NONNEG, none_refused=True),
        "weight_decay": HP(keras=0.004, torch=0.1, check=NONNEG, kernel=False),
    }
    tuple_aliases = {"ns_coefficients": (("muon_a", "muon_b", "muon_c"), "(a, b, c)")}
    #: hyper-parameters given by name (held as floats): a string not named is a ValueError
    named_values = {"adjust_lr_fn": _MUON_ADJUST}
    variables = ("momentum_buffer",)
    elementwise = False
    decoupled_only = True

    momentum: HyperValue
    nesterov: bool
    muon_a: HyperValue
    muon_b: HyperValue
    muon_c: HyperValue
    ns_steps: HyperValue
    epsilon: HyperValue
    eps: HyperValue
    adjust_lr_fn: HyperValue
    rms_rate: HyperValue
    adam_beta_1: HyperValue
    adam_beta_2: HyperValue
    adam_lr_ratio: HyperValue
    adam_weight_decay: HyperValue
    ns_coefficients: Any

    def __init__(self, params: Params, learning_rate: HyperValue | None = None,
                 momentum: HyperValue | None = None, nesterov: bool | None = None,
                 muon_a: float | None = None, muon_b: float | None = None,
                 muon_c: float | None = None, ns_steps: float | None = None, *,
                 ns_coefficients: Any = None, epsilon: float | None = None,
                 adjust_lr_fn: str | None = None, rms_rate: Any = DEFAULT,
                 adam_beta_1: HyperValue | None = None, adam_beta_2: HyperValue | None = None,
                 adam_lr_ratio: HyperValue | None = None,
                 adam_weight_decay: Any = DEFAULT,
                 exclude_layers: Sequence[str] | None = None,
                 exclude_embeddings: bool | None = None,
                 convention: ConventionName = "keras",
                 **kwargs: Unpack[OptionsWithDecay]) -> None:
        # the AdamW route's selection, fixed at construction: a param's route
        # decides which state arrays it keeps
        self._exclude_layers, self._exclude_embeddings = self._route_settings(
            convention, exclude_layers, exclude_embeddings)
        # the routes of params being added, until their state arrays hold them
        self._routing: dict[int, bool] = {}
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         momentum=momentum, nesterov=nesterov, muon_a=muon_a, muon_b=muon_b,
                         muon_c=muon_c, ns_steps=ns_steps, ns_coefficients=ns_coefficients,
                         epsilon=epsilon, adjust_lr_fn=adjust_lr_fn, rms_rate=rms_rate,
                         adam_beta_1=adam_beta_1, adam_beta_2=adam_beta_2,
                         adam_lr_ratio=adam_lr_ratio, adam_weight_decay=adam_weight_decay,
                         **kwargs)

    @staticmethod
    def _route_settings(convention, exclude_layers, exclude_embeddings):
        """``exclude_layers`` as a tuple of compiled patterns and
        ``exclude_embeddings`` as a bool (Keras's defaults: none, True);
        refused in the torch convention, whose Muon has no AdamW route."""
        if convention == "torch":
            for key, value in (("exclude_layers", exclude_layers),
                               ("exclude_embeddings", exclude_embeddings)):
                if value is not None:
                    raise TypeError(f"Muon() got an unexpected keyword argument {key!r}: "
                                    f"torch.optim.Muon has no AdamW route (it takes 2-D "
                                    f"params only); use convention='keras' for Keras's")
            return (), False
        if exclude_embeddings is None:
            exclude_embeddings = True
        if not isinstance(exclude_embeddings, (bool, np.bool_)):
            raise TypeError(f"exclude_embeddings must be a bool; got {exclude_embeddings!r}")
        if isinstance(exclude_layers, str):
            raise TypeError(f"exclude_layers must be a list of strings (regular expressions "
                            f"searched in each param's name); got a single string: pass "
                            f"[{exclude_layers!r}]")
        patterns = []
        for k, pattern in enumerate(exclude_layers or ()):
            if not isinstance(pattern, str):
                raise TypeError(f"exclude_layers[{k}] must be a string (a regular expression "
                                f"searched in each param's name); got {pattern!r}")
            try:
                patterns.append(re.compile(pattern))
            except re.error as e:
                raise ValueError(f"exclude_layers[{k}] is not a regular expression: "
                                 f"{pattern!r} ({e}). Escape it with re.escape to match "
                                 f"the text as it is") from None
        return tuple(patterns), bool(exclude_embeddings)

    @property
    def exclude_layers(self) -> list[str]:
        """Keras only: the patterns whose params take the AdamW route (fixed at
        construction)."""
        return [p.pattern for p in self._exclude_layers]

    @exclude_layers.setter
    def exclude_layers(self, value: Any) -> None:
        self._refuse_route_change("exclude_layers")

    @property
    def exclude_embeddings(self) -> bool:
        """Keras only: whether a param named ``*embedding*`` takes the AdamW
        route (fixed at construction)."""
        return self._exclude_embeddings

    @exclude_embeddings.setter
    def exclude_embeddings(self, value: Any) -> None:
        self._refuse_route_change("exclude_embeddings")

    def _refuse_route_change(self, key):
        raise AttributeError(f"{key} cannot change after construction: it decides which "
                             f"params take the AdamW route, and so which state arrays each "
                             f"keeps. Build a new Muon with {key}=...; nothing was changed")

    @property
    def routes(self) -> list[str]:
        """Per param, in order, ``"muon"`` or ``"adamw"``: the update it gets."""
        return ["adamw" if len(st) == 2 else "muon" for st in self._state]

    def _to_adamw(self, p, name):
        """Keras's ``_should_use_adamw``, with the param's name (from its param
        group) as the variable's path."""
        if self.convention != "keras":
            return False
        if p.ndim != 2:
            return True
        if name is None:
            return False
        if self._exclude_embeddings and "embedding" in name.lower():
            return True
        return any(pattern.search(name) for pattern in self._exclude_layers)

    def _new_group(self, gi, plist, over, start):
        made = super()._new_group(gi, plist, over, start)
        for p, name in zip(plist, made[2]):
            self._routing[id(p)] = self._to_adamw(p, name)
        return made

    def _add_groups(self, groups):
        try:
            super()._add_groups(groups)
        finally:
            # added: their state arrays say their routes; refused: nothing is kept
            self._routing.clear()

    def state_layout(self, group, p):
        # the AdamW route keeps Keras's velocity after the momentum
        adamw = self._routing.get(id(p))
        if adamw is None:       # a param of the optimizer: its route is its state
            i = self._index.get(id(p))
            adamw = i is not None and self._params[i] is p and len(self._state[i]) == 2
        shapes = [("momentum_buffer", p.shape)]
        if adamw:
            shapes.append(("velocity", p.shape))
        return shapes

    def get_config(self) -> dict[str, Any]:
        cfg = super().get_config()
        if self.convention == "keras":
            cfg["exclude_layers"] = self.exclude_layers
            cfg["exclude_embeddings"] = self._exclude_embeddings
        return cfg

    def __reduce__(self):
        rebuild, args = super().__reduce__()
        if self.convention == "keras":
            args[2]["exclude_layers"] = self.exclude_layers
            args[2]["exclude_embeddings"] = self._exclude_embeddings
        return rebuild, args

    def _canonical_items(self, items, where, caller):
        # torch's adjust_lr_fn names and Keras's rms_rate=None, as the floats a group holds
        def code(key, value):
            if key == "adjust_lr_fn" and (value is None or isinstance(value, str)):
                if value not in _MUON_ADJUST:
                    raise ValueError(f"{where}adjust_lr_fn must be None, 'original' or "
                                     f"'match_rms_adamw' (as torch.optim.Muon); got {value!r}")
                return _MUON_ADJUST[value]
            if key == "rms_rate" and value is None:
                return -1.0
            if key == "adam_weight_decay" and value is None:
                return 0.0      # Keras's None: no decay on the AdamW route
            return value
        return super()._canonical_items([(k, code(k, v)) for k, v in items], where, caller)

    def check(self, hp, where):
        n = hp.get("ns_steps")
        if n is not None and (n != int(n) or not 0 <= n < 100):
            raise ValueError(f"{where}ns_steps must be a whole number in [0, 100) (torch "
                             f"refuses 100 or more); got {n!r}")
        adjust = hp.get("adjust_lr_fn")
        if adjust is not None and adjust not in (0.0, 1.0):
            raise ValueError(f"{where}adjust_lr_fn must be None, 'original' (0.0) or "
                             f"'match_rms_adamw' (1.0); got {adjust!r}")
        rms = hp.get("rms_rate")
        if rms is not None and rms < 0 and rms != -1.0:
            raise ValueError(f"{where}rms_rate must be >= 0, or None (kept as -1.0) for no "
                             f"adjustment; got {rms!r}")

    def check_param(self, p, i):
        if p.ndim != 2 and self.convention == "torch":
            raise ValueError(
                f"params[{i}]: Muon in the torch convention takes 2-D params (matrices), as "
                f"torch.optim.Muon does; got shape {p.shape}. Use convention='keras', whose "
                f"Muon gives the other params its AdamW step (at learning_rate*adam_lr_ratio), "
                f"or optimize them with fastopt.AdamW beside Muon in a fastopt.MultiOptimizer "
                f"(see help(fastopt.Muon))")

    def scratch_layout(self, group, p):
        return [("update", p.shape)]

    def host_stage(self, stepped, sums):
        """The Newton-Schulz iteration on each stepped param's scratch array
        (the momentum pass left ``u`` there and ``||u||^2`` in ``sums[i, 0]``);
        leaves the orthogonalised ``X`` there and the step's ratio in
        ``sums[i, 1]``.  A param on the AdamW route gets 1.0 there when its
        decay applies, else 0.0."""
        owner = [g for g in self.param_groups for _ in g["params"]]
        torch = self.convention == "torch"
        for i in stepped:
            if len(self._state[i]) == 2:
                # the AdamW route: whether its own decay applies (the kernel
                # cannot tell an excluded param from a weight_decay of 0)
                sums[i, 1] = 0.0 if i in self._wd_excluded else 1.0
                continue
            group, x = owner[i], self._scratch[i][0]
            rows, cols = x.shape
            if torch:
                adjust = group["adjust_lr_fn"]
                ratio = (0.2 * math.sqrt(max(rows, cols)) if adjust == 1.0
                         else math.sqrt(max(1.0, rows / cols)) if cols else 1.0)
            else:
                rms = group["rms_rate"]
                ratio = 1.0 if rms == -1.0 else math.sqrt(max(rows, cols)) * rms
            sums[i, 1] = ratio
            if x.size == 0:
                continue
            norm = math.sqrt(sums[i, 0])
            denom = max(norm, group["epsilon"]) if torch else norm + 1e-7
            a, b, c = group["muon_a"], group["muon_b"], group["muon_c"]
            tall = rows > cols
            # a non-finite grad gives NaNs, as in both libraries, without a warning
            with np.errstate(all="ignore"):
                X = (x.T if tall else x) / x.dtype.type(denom)
                for _ in range(int(group["ns_steps"])):
                    G = X @ X.T
                    # torch: addmm(G, G, G, beta=b, alpha=c); Keras: b*G + (c*G) @ G
                    G = b * G + (c * (G @ G) if torch else (c * G) @ G)
                    X = a * X + G @ X
            x[...] = X.T if tall else X
