"""Plain-NumPy in-place optimizers (Keras 3 convention), for timing comparisons.

These are the fastest straightforward NumPy versions of the update rules:
in-place ufuncs with ``out=`` and preallocated scratch buffers, so no array
is allocated per step.  ``python -m fastopt`` and ``python -m fastopt.demo``
time fastopt's C kernels against them on the same arrays; they are not the
test oracle (that is ``tests/reference.py``, in float64).

The formulas are those of the optimizer classes' docstrings (Keras 3).
"""
import math

import numpy as np

__all__ = ["numpy_sgd", "numpy_momentum", "numpy_adagrad", "numpy_rmsprop", "numpy_adam",
           "numpy_adamax", "numpy_nadam", "NumpyOptimizer"]


def numpy_sgd(p, g, lr, tmp):
    """``p -= lr*g``."""
    np.multiply(g, lr, out=tmp)
    np.subtract(p, tmp, out=p)


def numpy_momentum(p, g, vel, lr, momentum, nesterov, tmp, tmp2):
    """Keras momentum: ``v = momentum*v - lr*g``; ``p += v`` (Nesterov:
    ``p += momentum*v - lr*g``)."""
    np.multiply(g, lr, out=tmp)
    np.multiply(vel, momentum, out=vel)
    np.subtract(vel, tmp, out=vel)
    if nesterov:
        np.multiply(vel, momentum, out=tmp2)
        np.subtract(tmp2, tmp, out=tmp2)
        np.add(p, tmp2, out=p)
    else:
        np.add(p, vel, out=p)


def numpy_adagrad(p, g, acc, lr, eps, tmp):
    """Keras Adagrad: ``acc += g^2``; ``p -= lr*g/sqrt(acc + eps)``."""
    np.multiply(g, g, out=tmp)
    np.add(acc, tmp, out=acc)
    np.add(acc, eps, out=tmp)
    np.sqrt(tmp, out=tmp)
    np.divide(g, tmp, out=tmp)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(p, tmp, out=p)


def numpy_rmsprop(p, g, v, lr, rho, eps, tmp):
    """Keras RMSprop (no momentum, not centered):
    ``v = rho*v + (1-rho)*g^2``; ``p -= lr*g/sqrt(v + eps)``."""
    np.multiply(v, rho, out=v)
    np.multiply(g, g, out=tmp)
    np.multiply(tmp, 1 - rho, out=tmp)
    np.add(v, tmp, out=v)
    np.add(v, eps, out=tmp)
    np.sqrt(tmp, out=tmp)
    np.divide(g, tmp, out=tmp)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(p, tmp, out=p)


def numpy_adam(p, g, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, tmp=None):
    """The best plain-NumPy Adam: in-place ufuncs with one scratch buffer."""
    if tmp is None:
        tmp = np.empty_like(p)
    np.multiply(m, b1, out=m)
    np.multiply(g, 1 - b1, out=tmp)
    np.add(m, tmp, out=m)
    np.multiply(v, b2, out=v)
    np.multiply(g, g, out=tmp)
    np.multiply(tmp, 1 - b2, out=tmp)
    np.add(v, tmp, out=v)
    np.sqrt(v, out=tmp)
    np.add(tmp, eps, out=tmp)
    np.divide(m, tmp, out=tmp)
    np.multiply(tmp, lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t), out=tmp)
    np.subtract(p, tmp, out=p)


def numpy_adamax(p, g, m, u, t, lr, b1, b2, eps, tmp):
    """Keras Adamax: ``m += (1-b1)*(g-m)``; ``u = max(b2*u, |g|)``;
    ``p -= lr/(1-b1^t) * m/(u + eps)``."""
    np.subtract(g, m, out=tmp)
    np.multiply(tmp, 1 - b1, out=tmp)
    np.add(m, tmp, out=m)
    np.multiply(u, b2, out=u)
    np.abs(g, out=tmp)
    np.maximum(u, tmp, out=u)
    np.add(u, eps, out=tmp)
    np.divide(m, tmp, out=tmp)
    np.multiply(tmp, lr / (1 - b1 ** t), out=tmp)
    np.subtract(p, tmp, out=p)


def numpy_nadam(p, g, m, v, t, lr, b1, b2, eps, u_t, u_t1, u_prod, u_prod1, tmp, tmp2):
    """Keras 3 Nadam; ``u_t``, ``u_t1``, ``u_prod`` (product of ``u_1..u_t``)
    and ``u_prod1 = u_prod*u_t1`` are the optimizer-wide momentum cache
    (``u_t = b1*(1 - 0.5*0.96^(t*momentum_decay))``, momentum_decay 1 in Keras 3)::

        m += (1-b1)*(g-m);  v += (1-b2)*(g^2-v)
        p -= lr * (u_t1*m/(1-u_prod1) + (1-u_t)*g/(1-u_prod)) / (sqrt(v/(1-b2^t)) + eps)
    """
    np.subtract(g, m, out=tmp)
    np.multiply(tmp, 1 - b1, out=tmp)
    np.add(m, tmp, out=m)
    np.multiply(g, g, out=tmp)
    np.subtract(tmp, v, out=tmp)
    np.multiply(tmp, 1 - b2, out=tmp)
    np.add(v, tmp, out=v)
    np.multiply(v, 1 / (1 - b2 ** t), out=tmp2)
    np.sqrt(tmp2, out=tmp2)
    np.add(tmp2, eps, out=tmp2)
    np.multiply(m, u_t1 / (1 - u_prod1), out=tmp)
    np.divide(tmp, tmp2, out=tmp)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(p, tmp, out=p)
    np.multiply(g, (1 - u_t) / (1 - u_prod), out=tmp)
    np.divide(tmp, tmp2, out=tmp)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(p, tmp, out=p)


# Options the functions above do not implement: each must be at its neutral value.
_NEUTRAL = {"weight_decay": 0.0, "amsgrad": False, "centered": False}


class NumpyOptimizer:
    """A Keras-convention optimizer built from the functions above.

    Parameters
    ----------
    kind : {"sgd", "adagrad", "rmsprop", "adam", "adamax", "nadam"}
    params : list of ndarray
        Updated in place.
    hyper : dict
        Hyper-parameters by their Keras names; floats or schedules (callables
        ``step -> float``, evaluated at :attr:`iterations` before each step,
        as fastopt's optimizers do).  A fastopt optimizer's
        ``param_groups[0]`` (less ``"params"``) can be passed as is.
    """

    _state = {"sgd": 0, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamax": 2, "nadam": 2}

    def __init__(self, kind, params, hyper):
        if kind not in self._state:
            raise ValueError(f"kind must be one of {sorted(self._state)}; got {kind!r}")
        hyper = {k: v for k, v in hyper.items() if k != "params"}
        for key, neutral in _NEUTRAL.items():
            value = hyper.get(key, neutral)
            if callable(value) or value != neutral:
                raise ValueError(f"the NumPy {kind} implements {key}={neutral!r} only; "
                                 f"got {value!r}")
        if kind == "rmsprop" and (callable(hyper.get("momentum", 0.0))
                                  or hyper.get("momentum", 0.0) != 0.0):
            raise ValueError("the NumPy rmsprop implements momentum=0 only")
        self.kind = kind
        self.hyper = hyper
        self.params = list(params)
        init = hyper.get("initial_accumulator_value", 0.0) if kind == "adagrad" else 0.0
        nstate = self._state[kind]
        if kind == "sgd" and (callable(hyper.get("momentum", 0.0))
                              or hyper.get("momentum", 0.0) != 0.0):
            nstate = 1
        self.state = [[np.full_like(p, init) for _ in range(nstate)] for p in self.params]
        self.scratch = [(np.empty_like(p), np.empty_like(p)) for p in self.params]
        self.iterations = 0
        self._u_prod = 1.0

    def _hp(self, key):
        value = self.hyper[key]
        return float(value(self.iterations)) if callable(value) else float(value)

    def step(self, grads):
        """One in-place update of every parameter (``None`` grads are not supported)."""
        t = self.iterations + 1
        kind = self.kind
        lr = self._hp("learning_rate")
        if kind == "sgd":
            mom = self._hp("momentum")
            nesterov = bool(self.hyper.get("nesterov", False))
            for p, g, st, (tmp, tmp2) in zip(self.params, grads, self.state, self.scratch):
                if st:
                    numpy_momentum(p, g, st[0], lr, mom, nesterov, tmp, tmp2)
                else:
                    numpy_sgd(p, g, lr, tmp)
        elif kind == "adagrad":
            eps = self._hp("epsilon")
            for p, g, st, (tmp, _) in zip(self.params, grads, self.state, self.scratch):
                numpy_adagrad(p, g, st[0], lr, eps, tmp)
        elif kind == "rmsprop":
            rho, eps = self._hp("rho"), self._hp("epsilon")
            for p, g, st, (tmp, _) in zip(self.params, grads, self.state, self.scratch):
                numpy_rmsprop(p, g, st[0], lr, rho, eps, tmp)
        else:
            b1, b2, eps = self._hp("beta_1"), self._hp("beta_2"), self._hp("epsilon")
            if kind == "adam":
                for p, g, (m, v), (tmp, _) in zip(self.params, grads, self.state, self.scratch):
                    numpy_adam(p, g, m, v, t, lr, b1, b2, eps, tmp)
            elif kind == "adamax":
                for p, g, (m, u), (tmp, _) in zip(self.params, grads, self.state, self.scratch):
                    numpy_adamax(p, g, m, u, t, lr, b1, b2, eps, tmp)
            else:
                psi = self._hp("momentum_decay") if "momentum_decay" in self.hyper else 1.0
                u_t = b1 * (1 - 0.5 * math.pow(0.96, t * psi))
                u_t1 = b1 * (1 - 0.5 * math.pow(0.96, (t + 1) * psi))
                self._u_prod *= u_t
                u_prod1 = self._u_prod * u_t1
                for p, g, (m, v), (tmp, tmp2) in zip(self.params, grads, self.state,
                                                     self.scratch):
                    numpy_nadam(p, g, m, v, t, lr, b1, b2, eps, u_t, u_t1, self._u_prod,
                                u_prod1, tmp, tmp2)
        self.iterations += 1
