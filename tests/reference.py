"""Slow, obviously-correct float64 references, written straight from the formulas.

Every optimizer class in ``fastopt.optimizers.REGISTRY`` must have an entry in
``RULES`` for each convention it supports; the parametrised suites fail for
one that has none.  A rule takes ``(w, g, state, hp, t)`` — float64 arrays, a
dict of evaluated hyper-parameters, the 1-based step — and returns the new
``w`` (updating ``state`` in place).  The options shared by every optimizer
(maximize, clipvalue, weight decay) are applied around the rule by
``Reference.step`` in the order of the library being reproduced.
"""
import math

import numpy as np


# ---- the update rules --------------------------------------------------------

def sgd_keras(w, g, st, hp, t):
    mu = hp["momentum"]
    if "b" not in st:
        return w - hp["learning_rate"] * g
    st["b"] = mu * st["b"] - hp["learning_rate"] * g
    if hp["nesterov"]:
        return w + mu * st["b"] - hp["learning_rate"] * g
    return w + st["b"]


def sgd_torch(w, g, st, hp, t):
    mu = hp["momentum"]
    if "b" not in st:
        return w - hp["learning_rate"] * g
    if t == 1:
        st["b"] = g.copy()
    else:
        st["b"] = mu * st["b"] + (1 - hp["dampening"]) * g
    d = g + mu * st["b"] if hp["nesterov"] else st["b"]
    return w - hp["learning_rate"] * d


def _adam_moments(g, st, hp):
    b1, b2 = hp["beta_1"], hp["beta_2"]
    st["m"] = st["m"] + (1 - b1) * (g - st["m"])
    st["v"] = b2 * st["v"] + (1 - b2) * g * g
    if hp["amsgrad"]:
        st["vhat"] = np.maximum(st["vhat"], st["v"])
        return st["vhat"]
    return st["v"]


def adam_keras(w, g, st, hp, t):
    vv = _adam_moments(g, st, hp)
    alpha = hp["learning_rate"] * math.sqrt(1 - hp["beta_2"] ** t) / (1 - hp["beta_1"] ** t)
    return w - alpha * st["m"] / (np.sqrt(vv) + hp["epsilon"])


def adam_torch(w, g, st, hp, t):
    vv = _adam_moments(g, st, hp)
    bc1 = 1 - hp["beta_1"] ** t
    bc2 = 1 - hp["beta_2"] ** t
    denom = np.sqrt(vv) / math.sqrt(bc2) + hp["epsilon"]
    return w - (hp["learning_rate"] / bc1) * st["m"] / denom


RULES = {
    ("SGD", "keras"): sgd_keras,
    ("SGD", "torch"): sgd_torch,
    ("Adam", "keras"): adam_keras,
    ("Adam", "torch"): adam_torch,
    ("AdamW", "keras"): adam_keras,
    ("AdamW", "torch"): adam_torch,
}


def initial_state(name, hp, w):
    """State a fresh optimizer starts from, by the formulas' definitions."""
    z = np.zeros_like(w)
    if name == "SGD":
        return {"b": z} if hp["momentum"] != 0 or hp.get("_momentum_scheduled") else {}
    if name in ("Adam", "AdamW"):
        st = {"m": z.copy(), "v": z.copy()}
        if hp["amsgrad"]:
            st["vhat"] = z.copy()
        return st
    raise KeyError(f"no reference state for {name}")


# ---- the driver --------------------------------------------------------------

class Reference:
    """float64 re-implementation of one optimizer over a list of arrays.

    ``hyper(step)`` returns the evaluated hyper-parameters at the 0-based
    step (a schedule's view); options are keyword arguments as in fastopt.
    """

    def __init__(self, name, convention, params, hyper, *, maximize=False, clipvalue=None,
                 decoupled_weight_decay=None):
        self.name = name
        self.convention = convention
        self.rule = RULES[(name, convention)]
        self.hyper = hyper
        self.maximize = maximize
        self.clipvalue = clipvalue
        if decoupled_weight_decay is None:
            decoupled_weight_decay = convention == "keras" or name == "AdamW"
        self.decoupled = decoupled_weight_decay
        self.w = [np.array(p, dtype=np.float64) for p in params]
        hp0 = hyper(0)
        self.state = [initial_state(name, hp0, w) for w in self.w]
        self.iterations = 0
        self.steps = [0] * len(self.w)

    def step(self, grads):
        hp = self.hyper(self.iterations)
        for i, g in enumerate(grads):
            if g is None:
                continue
            self.steps[i] += 1
            t = self.iterations + 1 if self.convention == "keras" else self.steps[i]
            g = np.array(g, dtype=np.float64)
            w = self.w[i]
            if self.maximize:
                g = -g
            if self.clipvalue is not None:
                g = np.clip(g, -self.clipvalue, self.clipvalue)
            wd = hp.get("weight_decay", 0.0)
            if wd:
                if self.decoupled:
                    w = w * (1 - hp["learning_rate"] * wd)
                else:
                    g = g + wd * w
            self.w[i] = self.rule(w, g, self.state[i], hp, t)
        self.iterations += 1
