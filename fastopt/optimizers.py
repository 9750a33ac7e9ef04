"""The optimizers: one declaration per algorithm.

Each class names its kernel (``csrc/kernels/<kernel>.c``, whose scalar
function turns the hyper-parameters and the step into the kernel's scalars),
its table of hyper-parameters (defaults per convention, ranges, aliases; in
the order the kernel reads them, checked at import) and its state arrays.
The base class (:mod:`fastopt.optimizer`) does everything else.  Adding an
optimizer: see CONTRIBUTING.md.
"""
import math

from ._hyper import (CONVENTIONS, HP, NONNEG, NONPOS, POSITIVE, UNIT, UNIT_OPEN,  # noqa: F401
                     ParamGroup, is_schedule)
from .optimizer import REGISTRY, Optimizer  # noqa: F401

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
    hyper = {
        "learning_rate": HP(keras=0.01, torch=1e-3, check=NONNEG),
        "momentum": HP(0.0, check=UNIT),
        "nesterov": HP(False, kind=bool),
        "dampening": HP(torch=0.0, check=UNIT),
    }
    check_conventions = ("torch",)

    def __init__(self, params, learning_rate=None, momentum=None, nesterov=None, *,
                 dampening=None, convention="keras", **kwargs):
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
    hyper = {
        "learning_rate": HP(1e-3, check=NONNEG),
        "beta_1": HP(0.9, check=UNIT_OPEN),
        "beta_2": HP(0.999, check=UNIT_OPEN),
        "epsilon": HP(keras=1e-7, torch=1e-8, check=NONNEG),
        "amsgrad": HP(False, kind=bool),
    }
    tuple_aliases = BETAS

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None,
                 amsgrad=None, *, betas=None, convention="keras", **kwargs):
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
                                             kernel=False))
    decoupled_only = True

    def __init__(self, params, learning_rate=None, weight_decay=None, beta_1=None,
                 beta_2=None, epsilon=None, amsgrad=None, **kwargs):
        super().__init__(params, learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, weight_decay=weight_decay,
                         **kwargs)


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
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=1e-2, check=NONNEG),
        "initial_accumulator_value": HP(keras=0.1, torch=0.0, check=NONNEG,
                                        schedulable=False, kernel=False),
        "epsilon": HP(keras=1e-7, torch=1e-10, check=NONNEG),
        "lr_decay": HP(torch=0.0, check=NONNEG),
    }
    variables = ("accumulator",)
    initial = {"accumulator": "initial_accumulator_value"}

    def __init__(self, params, learning_rate=None, initial_accumulator_value=None,
                 epsilon=None, *, lr_decay=None, convention="keras", **kwargs):
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
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=1e-2, check=NONNEG),
        "rho": HP(keras=0.9, torch=0.99, check=UNIT, aliases=("alpha",)),
        "momentum": HP(0.0, check=UNIT),
        "epsilon": HP(keras=1e-7, torch=1e-8, check=NONNEG),
        "centered": HP(False, kind=bool),
    }

    def __init__(self, params, learning_rate=None, rho=None, momentum=None, epsilon=None,
                 centered=None, *, alpha=None, convention="keras", **kwargs):
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
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=2e-3, check=NONNEG),
        "beta_1": HP(0.9, check=UNIT_OPEN),
        "beta_2": HP(0.999, check=UNIT_OPEN),
        "epsilon": HP(keras=1e-7, torch=1e-8, check=NONNEG),
    }
    variables = ("m", "u")
    tuple_aliases = BETAS

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 betas=None, convention="keras", **kwargs):
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

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 momentum_decay=None, betas=None, convention="keras", **kwargs):
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
    hyper = {
        "learning_rate": HP(keras=1e-3, torch=1.0, check=NONNEG),
        "rho": HP(keras=0.95, torch=0.9, check=UNIT),
        "epsilon": HP(keras=1e-7, torch=1e-6, check=NONNEG),
    }
    variables = ("accumulated_grad", "accumulated_delta")

    def __init__(self, params, learning_rate=None, rho=None, epsilon=None, *,
                 convention="keras", **kwargs):
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
    hyper = {
        "learning_rate": HP(keras=1e-3, check=NONNEG),
        "beta_1": HP(keras=0.9, check=UNIT),
        "beta_2": HP(keras=0.99, check=UNIT),
    }
    variables = ("momentum",)
    tuple_aliases = BETAS

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, *, betas=None,
                 convention="keras", **kwargs):
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
    hyper = {
        "learning_rate": HP(keras=1e-3, check=NONNEG),
        "beta_1": HP(keras=0.9, check=UNIT_OPEN),
        "beta_2": HP(keras=0.999, check=UNIT_OPEN),
        "epsilon": HP(keras=1e-7, check=NONNEG),
    }
    variables = ("m", "v")
    elementwise = False
    tuple_aliases = BETAS

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 betas=None, convention="keras", **kwargs):
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
    hyper = {
        "learning_rate": HP(torch=1e-3, check=NONNEG),
        "beta_1": HP(torch=0.9, check=UNIT_OPEN),
        "beta_2": HP(torch=0.999, check=UNIT_OPEN),
        "epsilon": HP(torch=1e-8, check=NONNEG),
    }
    variables = ("m", "v")
    tuple_aliases = BETAS

    def __init__(self, params, learning_rate=None, beta_1=None, beta_2=None, epsilon=None, *,
                 betas=None, convention="torch", **kwargs):
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

    def __init__(self, params, learning_rate=None, etaminus=None, etaplus=None,
                 step_size_min=None, step_size_max=None, *, etas=None, step_sizes=None,
                 convention="torch", **kwargs):
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min,
                         step_size_max=step_size_max, etas=etas, step_sizes=step_sizes,
                         **kwargs)


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
    needs the whole tensor: ``ShardedOptimizer`` refuses Adafactor.

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

    def __init__(self, params, learning_rate=None, beta_2_decay=None, epsilon_1=None,
                 epsilon_2=None, clip_threshold=None, relative_step=None, *, eps=None,
                 convention="keras", **kwargs):
        super().__init__(params, convention=convention, learning_rate=learning_rate,
                         beta_2_decay=beta_2_decay, epsilon_1=epsilon_1, epsilon_2=epsilon_2,
                         clip_threshold=clip_threshold, relative_step=relative_step, eps=eps,
                         **kwargs)

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

    def _resolve_aliases(self, hyper):
        out = super()._resolve_aliases(hyper)
        if "eps" in hyper and hyper["eps"] is not None and hyper["eps"][0] is None:
            out["epsilon_1"] = -1.0 if self.convention == "torch" else None
        return out

    def state_layout(self, group, p):
        if p.ndim >= 2:
            return [("row", p.shape[:-1]), ("col", p.shape[:-2] + p.shape[-1:])]
        return [("v", p.shape)]
