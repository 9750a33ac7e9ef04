"""Slow, obviously-correct float64 references, written straight from the formulas.

Every optimizer class in ``fastopt.optimizers.REGISTRY`` has an entry in
``tests/optim_db.py`` that names its rule here for each convention it
supports, and the state it starts from; ``tests/test_optim_db.py`` fails for
one that has none.  A rule takes ``(w, g, state, hp, t)`` — float64 arrays, a
dict of evaluated hyper-parameters, the 1-based step — and returns the new
``w`` (updating ``state`` in place).  The options shared by every optimizer
(maximize, clipvalue, weight decay, and the optimizer-wide ones in
:data:`OPTIONS`) are applied around the rule by ``Reference.step`` in the
order of the library being reproduced.
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


def adagrad_keras(w, g, st, hp, t):
    st["acc"] = st["acc"] + g * g
    return w - hp["learning_rate"] * g / np.sqrt(st["acc"] + hp["epsilon"])


def adagrad_torch(w, g, st, hp, t):
    clr = hp["learning_rate"] / (1 + (t - 1) * hp["lr_decay"])
    st["acc"] = st["acc"] + g * g
    return w - clr * g / (np.sqrt(st["acc"]) + hp["epsilon"])


def rmsprop_keras(w, g, st, hp, t):
    rho, lr = hp["rho"], hp["learning_rate"]
    st["v"] = rho * st["v"] + (1 - rho) * g * g
    if "mg" in st:
        st["mg"] = rho * st["mg"] + (1 - rho) * g
        den = np.maximum(st["v"] - st["mg"] ** 2, 0.0) + hp["epsilon"]
    else:
        den = st["v"] + hp["epsilon"]
    inc = lr * g / np.sqrt(den)
    if "mom" in st:
        st["mom"] = hp["momentum"] * st["mom"] + inc
        return w - st["mom"]
    return w - inc


def rmsprop_torch(w, g, st, hp, t):
    alpha, lr = hp["rho"], hp["learning_rate"]
    st["v"] = alpha * st["v"] + (1 - alpha) * g * g
    if "mg" in st:
        st["mg"] = st["mg"] + (1 - alpha) * (g - st["mg"])
        avg = np.sqrt(np.maximum(st["v"] - st["mg"] ** 2, 0.0))
    else:
        avg = np.sqrt(st["v"])
    avg = avg + hp["epsilon"]
    if "mom" in st:
        st["mom"] = hp["momentum"] * st["mom"] + g / avg
        return w - lr * st["mom"]
    return w - lr * g / avg


def adamax_keras(w, g, st, hp, t):
    b1 = hp["beta_1"]
    st["m"] = st["m"] + (1 - b1) * (g - st["m"])
    st["u"] = np.maximum(hp["beta_2"] * st["u"], np.abs(g))
    return w - hp["learning_rate"] * st["m"] / ((1 - b1 ** t) * (st["u"] + hp["epsilon"]))


def adamax_torch(w, g, st, hp, t):
    b1 = hp["beta_1"]
    st["m"] = st["m"] + (1 - b1) * (g - st["m"])
    st["u"] = np.maximum(hp["beta_2"] * st["u"], np.abs(g) + hp["epsilon"])
    return w - (hp["learning_rate"] / (1 - b1 ** t)) * st["m"] / st["u"]


def _nadam_mu(hp, t):
    return hp["beta_1"] * (1 - 0.5 * 0.96 ** (t * hp["momentum_decay"]))


def nadam_keras(w, g, st, hp, t):
    # hp["_u_product"]: the optimizer-wide product, already advanced for this step
    b1, b2 = hp["beta_1"], hp["beta_2"]
    u_t, u_t1 = _nadam_mu(hp, t), _nadam_mu(hp, t + 1)
    u_prod = hp["_u_product"]
    u_prod1 = u_prod * u_t1
    st["m"] = st["m"] + (g - st["m"]) * (1 - b1)
    st["v"] = st["v"] + (g * g - st["v"]) * (1 - b2)
    m_hat = u_t1 * st["m"] / (1 - u_prod1) + (1 - u_t) * g / (1 - u_prod)
    v_hat = st["v"] / (1 - b2 ** t)
    return w - m_hat * hp["learning_rate"] / (np.sqrt(v_hat) + hp["epsilon"])


def nadam_torch(w, g, st, hp, t):
    b1, b2, lr = hp["beta_1"], hp["beta_2"], hp["learning_rate"]
    mu, mu_next = _nadam_mu(hp, t), _nadam_mu(hp, t + 1)
    st["mu_product"] *= mu
    st["m"] = st["m"] + (1 - b1) * (g - st["m"])
    st["v"] = b2 * st["v"] + (1 - b2) * g * g
    denom = np.sqrt(st["v"] / (1 - b2 ** t)) + hp["epsilon"]
    w = w - lr * (1 - mu) / (1 - st["mu_product"]) * g / denom
    return w - lr * mu_next / (1 - st["mu_product"] * mu_next) * st["m"] / denom


def adadelta(w, g, st, hp, t):
    rho, eps = hp["rho"], hp["epsilon"]
    st["eg"] = rho * st["eg"] + (1 - rho) * g * g
    delta = np.sqrt(st["edx"] + eps) / np.sqrt(st["eg"] + eps) * g
    st["edx"] = rho * st["edx"] + (1 - rho) * delta * delta
    return w - hp["learning_rate"] * delta


def lion_keras(w, g, st, hp, t):
    b1, b2 = hp["beta_1"], hp["beta_2"]
    w = w - hp["learning_rate"] * np.sign(b1 * st["m"] + (1 - b1) * g)
    st["m"] = b2 * st["m"] + (1 - b2) * g
    return w


def lamb_keras(w, g, st, hp, t):
    b1, b2 = hp["beta_1"], hp["beta_2"]
    st["m"] = st["m"] + (g - st["m"]) * (1 - b1)
    st["v"] = st["v"] + (g * g - st["v"]) * (1 - b2)
    r = (st["m"] / (1 - b1 ** t)) / (np.sqrt(st["v"] / (1 - b2 ** t)) + hp["epsilon"])
    wn, rn = np.linalg.norm(w), np.linalg.norm(r)
    phi = wn / rn if wn > 0 and rn > 0 else 1.0
    return w - hp["learning_rate"] * phi * r


def ftrl_keras(w, g, st, hp, t):
    lr, p = hp["learning_rate"], -hp["learning_rate_power"]
    l2 = hp["l2_regularization_strength"] + hp["beta"] / (2 * lr)
    l1 = hp["l1_regularization_strength"]
    g_shrunk = g + 2 * hp["l2_shrinkage_regularization_strength"] * w
    n_new = st["n"] + g * g
    st["z"] = st["z"] + g_shrunk - (n_new ** p - st["n"] ** p) / lr * w
    quad = n_new ** p / lr + 2 * l2
    st["n"] = n_new
    return (np.clip(st["z"], -l1, l1) - st["z"]) / quad


def radam_torch(w, g, st, hp, t):
    b1, b2, lr = hp["beta_1"], hp["beta_2"], hp["learning_rate"]
    st["m"] = st["m"] + (1 - b1) * (g - st["m"])
    st["v"] = b2 * st["v"] + (1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    m_hat = st["m"] / bc1
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2 ** t / bc2
    if rho_t > 5:
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                         / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        adaptive = math.sqrt(bc2) / (np.sqrt(st["v"]) + hp["epsilon"])
        return w - m_hat * lr * adaptive * rect
    return w - m_hat * lr


def rprop_torch(w, g, st, hp, t):
    # torch reads lr only on a tensor's first step, to fill step_size; a NaN
    # product g*prev counts as 0 (torch's sign(NaN) is 0), as does a NaN g.
    if t == 1:
        st["prev"] = np.zeros_like(w)
        st["step_size"] = np.full_like(w, hp["learning_rate"])
    prod = g * st["prev"]
    eta = np.where(prod > 0, hp["etaplus"], np.where(prod < 0, hp["etaminus"], 1.0))
    st["step_size"] = np.clip(st["step_size"] * eta, hp["step_size_min"], hp["step_size_max"])
    g = np.where(prod < 0, 0.0, g)
    st["prev"] = g
    return w - np.where(g > 0, 1.0, np.where(g < 0, -1.0, 0.0)) * st["step_size"]

def asgd_torch(w, g, st, hp, t):
    # eta and mu are computed at the end of a step and used at the next one
    lr, lambd = hp["learning_rate"], hp["lambd"]
    eta = lr if t == 1 else st["eta"]
    mu = 1.0 if t == 1 else 1.0 / max(1.0, (t - 1) - hp["t0"])
    w = w * (1 - lambd * eta) - eta * g
    st["ax"] = w.copy() if mu == 1 else st["ax"] + (w - st["ax"]) * mu
    st["eta"] = lr / (1 + lambd * lr * t) ** hp["alpha"]
    return w

def _lerp(a, b, wt):
    # torch's lerp: the form depends on the size of the weight
    return a + wt * (b - a) if abs(wt) < 0.5 else b - (b - a) * (1 - wt)


def _sf_lr(hp, t):
    steps = hp["warmup_steps"]
    return hp["learning_rate"] * (t / steps if t - 1 < steps else 1.0)


def schedule_free_weights(shared, hp, t):
    """Once per update (the package's per-group k, lr_max, weight_sum): the
    warmed-up rate ``_lr`` and the average's weight ``_ckp1``."""
    lr = _sf_lr(hp, t)
    shared["lr_max"] = max(lr, shared.get("lr_max", -1.0))
    weight = t ** hp["r"] * shared["lr_max"] ** hp["weight_lr_power"]
    shared["weight_sum"] = shared.get("weight_sum", 0.0) + weight
    hp["_lr"] = lr
    hp["_ckp1"] = weight / shared["weight_sum"] if shared["weight_sum"] else 0.0


def schedule_free_keras_weights(shared, hp, t):
    # Keras on its torch backend rounds min(t/W, 1) to float32
    steps = hp["warmup_steps"]
    factor = float(np.float32(min(t / steps, 1.0))) if steps > 0 else 1.0
    hp["_lr"] = hp["learning_rate"] * factor
    hp["_ckp1"] = 1.0 / t


def sfadamw_torch(w, g, st, hp, t):
    b1, b2, lr, ck = hp["beta_1"], hp["beta_2"], hp["_lr"], hp["_ckp1"]
    st["v"] = st["v"] * b2 + (1 - b2) * g * g
    d = g / (np.sqrt(st["v"] / (1 - b2 ** t)) + hp["epsilon"]) + hp["_wd"] * w
    y = _lerp(w, st["z"], ck) + lr * (b1 * (1 - ck) - 1) * d
    st["z"] = st["z"] - lr * d
    return y


def sfadamw_keras(w, g, st, hp, t):
    # x from the new z: Keras on its torch backend (see csrc/kernels/sfadamw.c)
    b1, b2, lr, ck = hp["beta_1"], hp["beta_2"], hp["_lr"], hp["_ckp1"]
    st["v"] = st["v"] + (g * g - st["v"]) * (1 - b2)
    z = st["z"] - lr * g / (np.sqrt(st["v"] / (1 - b2 ** t)) + hp["epsilon"])
    x = (w - (1 - b1) * z) / b1
    st["z"] = z
    return (1 - b1) * z + b1 * ((1 - ck) * x + ck * z)


def sfsgd_torch(w, g, st, hp, t):
    lr, ck = hp["_lr"], hp["_ckp1"]
    y = _lerp(w, st["z"], ck) + lr * (hp["momentum"] * (1 - ck) - 1) * g
    st["z"] = st["z"] - lr * g
    return y


def sparse_adam_torch(w, g, st, hp, t):
    # torch.optim.SparseAdam on the elements given (a dense g gives every one)
    b1, b2 = hp["beta_1"], hp["beta_2"]
    st["m"] = st["m"] + (g - st["m"]) * (1 - b1)
    st["v"] = st["v"] + (g * g - st["v"]) * (1 - b2)
    step_size = hp["learning_rate"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    return w - step_size * (st["m"] / (np.sqrt(st["v"]) + hp["epsilon"]))
def _rms(x):
    return math.sqrt(float(np.mean(x * x))) if x.size else 0.0


def _adafactor_state(w, st):
    """True when there is anything to update (an empty param keeps its state)."""
    if w.ndim >= 2 and not st:
        st["row"] = np.zeros(w.shape[:-1])
        st["col"] = np.zeros(w.shape[:-2] + w.shape[-1:])
    return w.size > 0


def adafactor_keras(w, g, st, hp, t):
    if not _adafactor_state(w, st):
        return w
    b = 1 - t ** hp["beta_2_decay"]
    q = g * g + hp["epsilon_1"]
    if w.ndim >= 2:
        st["row"] = b * st["row"] + (1 - b) * q.mean(axis=-1)
        st["col"] = b * st["col"] + (1 - b) * q.mean(axis=-2)
        v = ((st["row"] / st["row"].mean(axis=-1, keepdims=True))[..., None]
             * st["col"][..., None, :])
    else:
        st["v"] = b * st["v"] + (1 - b) * q
        v = st["v"]
    u = g / np.sqrt(v)
    alpha = max(hp["epsilon_2"], _rms(w)) * min(hp["learning_rate"], 1 / math.sqrt(t))
    return w - alpha * u / max(1.0, _rms(u) / hp["clip_threshold"])


def adafactor_torch(w, g, st, hp, t):
    if not _adafactor_state(w, st):
        return w
    a = t ** hp["beta_2_decay"]
    e1 = hp["epsilon_1"]
    if e1 < 0:      # torch's None: the machine epsilon of the param's dtype
        e1 = float(np.finfo(hp["_dtype"]).eps)
    q = g * g
    if w.ndim >= 2:
        st["row"] = st["row"] + a * (q.mean(axis=-1) - st["row"])
        st["col"] = st["col"] + a * (q.mean(axis=-2) - st["col"])
        den = np.maximum(st["row"].mean(axis=-1), e1)[..., None, None]
        v = st["row"][..., None] * st["col"][..., None, :] / den
    else:
        st["v"] = st["v"] + a * (q - st["v"])
        v = st["v"]
    u = g / np.sqrt(np.maximum(v, e1 * e1))
    w0 = hp["_w_before_decay"]      # torch measures RMS(w) before the weight decay
    alpha = max(hp["epsilon_2"], _rms(w0)) * min(hp["learning_rate"], 1 / math.sqrt(t))
    return w - alpha * u / max(1.0, _rms(u) / hp["clip_threshold"])


def _newton_schulz(u, hp, denom):
    """Muon's quintic iteration on ``u / denom``, over its transpose when it
    has more rows than columns."""
    a, b, c = hp["muon_a"], hp["muon_b"], hp["muon_c"]
    tall = u.shape[0] > u.shape[1]
    x = (u.T if tall else u) / denom
    for _ in range(int(hp["ns_steps"])):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def muon_keras(w, g, st, hp, t):
    mu = hp["momentum"]
    st["m"] = mu * st["m"] + g
    u = g + mu * st["m"] if hp["nesterov"] else st["m"]
    if w.size == 0:
        return w
    o = _newton_schulz(u, hp, np.linalg.norm(u) + 1e-7)
    ratio = 1.0 if hp["rms_rate"] == -1.0 else math.sqrt(max(w.shape)) * hp["rms_rate"]
    return w - hp["learning_rate"] * ratio * o


def muon_keras_adamw(w, g, st, hp, t):
    """Keras's Muon on a param of its AdamW route (``_adamw_update_step``, with
    the learning rate times ``adam_lr_ratio``); ``w`` is already decayed (see
    :class:`KerasMuon`)."""
    b1, b2 = hp["adam_beta_1"], hp["adam_beta_2"]
    alpha = (hp["learning_rate"] * hp["adam_lr_ratio"] * math.sqrt(1 - b2 ** t)
             / (1 - b1 ** t))
    st["m"] = st["m"] + (g - st["m"]) * (1 - b1)
    st["v"] = st["v"] + (g * g - st["v"]) * (1 - b2)
    return w - st["m"] * alpha / (np.sqrt(st["v"]) + hp["epsilon"])


class KerasMuon:
    """Keras 3's Muon over params of both routes, in float64: per step, each
    param with a grad is decayed by ``w - w*wd*lr`` (``wd``: ``weight_decay``
    on the Muon route, ``adam_weight_decay`` on the AdamW route; none for the
    indices in ``excluded``), then updated by :func:`muon_keras` or
    :func:`muon_keras_adamw` with the optimizer's step count.  ``routes``:
    "muon" or "adamw" per param; ``hyper(step)``: the evaluated
    hyper-parameters at the 0-based step."""

    def __init__(self, params, routes, hyper, excluded=()):
        self.w = [np.array(p, dtype=np.float64) for p in params]
        self.routes = list(routes)
        self.hyper = hyper
        self.excluded = set(excluded)
        self.state = [{"m": np.zeros_like(w), **({"v": np.zeros_like(w)} if r == "adamw"
                                                  else {})}
                      for w, r in zip(self.w, self.routes)]
        self.iterations = 0

    def step(self, grads):
        hp = dict(self.hyper(self.iterations))
        t = self.iterations + 1
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = np.array(g, dtype=np.float64)
            adamw = self.routes[i] == "adamw"
            w = self.w[i]
            wd = hp["adam_weight_decay"] if adamw else hp["weight_decay"]
            if i not in self.excluded:
                w = w - w * wd * hp["learning_rate"]
            rule = muon_keras_adamw if adamw else muon_keras
            self.w[i] = rule(w, g, self.state[i], hp, t)
        self.iterations += 1


def muon_torch(w, g, st, hp, t):
    mu = hp["momentum"]
    st["m"] = st["m"] + (1 - mu) * (g - st["m"])
    u = g + mu * (st["m"] - g) if hp["nesterov"] else st["m"]
    if w.size == 0:
        return w
    o = _newton_schulz(u, hp, max(np.linalg.norm(u), hp["epsilon"]))
    rows, cols = w.shape
    ratio = (0.2 * math.sqrt(max(rows, cols)) if hp["adjust_lr_fn"] == 1.0
             else math.sqrt(max(1.0, rows / cols)))
    return w - hp["learning_rate"] * ratio * o


# ---- the driver --------------------------------------------------------------

class Rows:
    """A row gradient in float64, coalesced: the distinct rows in ascending
    order and the sum of the values given for each (in the order given)."""

    def __init__(self, indices, values):
        indices = np.asarray(indices, dtype=np.int64)
        self.rows = np.unique(indices)
        self.g = np.zeros((len(self.rows), np.shape(values)[1]))
        np.add.at(self.g, np.searchsorted(self.rows, indices), np.asarray(values, np.float64))


def _as_float64(g):
    if g is None:
        return None
    if hasattr(g, "indices") and hasattr(g, "values"):
        return Rows(g.indices, g.values)
    return np.array(g, dtype=np.float64)


def _values(g):
    return g.g if isinstance(g, Rows) else g

#: Options the driver applies itself (keyword arguments of :class:`Reference`)
#: rather than passing them to the rule as hyper-parameters.
OPTIONS = ("maximize", "clipvalue", "decoupled_weight_decay", "clipnorm", "global_clipnorm",
           "use_ema", "ema_momentum", "ema_overwrite_frequency", "gradient_accumulation_steps",
           "skip_nonfinite")


class Reference:
    """float64 re-implementation of one optimizer over a list of arrays.

    ``hyper(step)`` returns the evaluated hyper-parameters at the 0-based
    step (a schedule's view); options are keyword arguments as in fastopt.
    Per call, in Keras 3's order (spec §1.0): refuse non-finite grads
    (``skip_nonfinite``), accumulate (``gradient_accumulation_steps``), clip
    (``clipnorm`` / ``global_clipnorm``, then per element maximize and
    ``clipvalue``), weight decay (except the indices in ``exclude``), the rule,
    then the moving average (``use_ema``).
    """

    def __init__(self, name, convention, params, hyper, *, maximize=False, clipvalue=None,
                 decoupled_weight_decay=None, clipnorm=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 gradient_accumulation_steps=None, skip_nonfinite=False, exclude=()):
        import optim_db     # the table names the rules; it imports this module
        info = optim_db.info(name)
        self.name = name
        self.convention = convention
        self.rule = info.rules[convention]
        self.hyper = hyper
        self.maximize = maximize
        self.clipvalue = clipvalue
        self.clipnorm = clipnorm
        self.global_clipnorm = global_clipnorm
        if decoupled_weight_decay is None:
            decoupled_weight_decay = convention == "keras" or info.decoupled_always
        self.decoupled = decoupled_weight_decay
        self.exclude = set(exclude)
        self.w = [np.array(p, dtype=np.float64) for p in params]
        self.dtypes = [np.asarray(p).dtype for p in params]
        hp0 = hyper(0)
        self.state = [info.initial_state(hp0, w) for w in self.w]
        self.iterations = 0
        self.micro = 0
        self.skipped = 0
        self.steps = [0] * len(self.w)
        self.u_product = 1.0
        self.k = gradient_accumulation_steps
        self.acc = [np.zeros_like(w) for w in self.w] if self.k else None
        self.use_ema = use_ema
        self.ema_momentum = ema_momentum
        self.ema_freq = ema_overwrite_frequency
        self.skip_nonfinite = skip_nonfinite
        self.avg = [w.copy() for w in self.w] if use_ema else None
        self.info = info
        self.shared = {}

    def step(self, grads):
        grads = [_as_float64(g) for g in grads]
        if self.skip_nonfinite and any(g is not None and not np.isfinite(_values(g)).all()
                                       for g in grads):
            self.skipped += 1
            return
        updates_before = self.iterations
        if self.k and any(isinstance(g, Rows) for g in grads):
            raise ValueError("a row gradient is not accumulated")
        if self.k and (self.micro + 1) % self.k:
            for a, g in zip(self.acc, grads):
                if g is not None:
                    a += g
        else:
            self._update(grads)
        if self.use_ema:
            mom = self.ema_momentum if updates_before else 0.0
            for i, w in enumerate(self.w):
                self.avg[i] = mom * self.avg[i] + (1 - mom) * w
            if self.ema_freq and (updates_before + 1) % self.ema_freq == 0:
                self.w = [a.copy() for a in self.avg]
        self.micro += 1

    def _update(self, grads):
        sched = self.micro if self.k and self.convention == "keras" else self.iterations
        hp = dict(self.hyper(sched))
        if self.k:
            grads = [None if g is None else (g + a) / self.k for g, a in zip(grads, self.acc)]
            for a in self.acc:
                a[...] = 0
        # a row gradient: the rule runs on the rows given, alone (lazy); the
        # norms are those of the rows given
        rows = [g.rows if isinstance(g, Rows) else None for g in grads]
        grads = [_values(g) for g in grads]
        if self.clipnorm is not None:
            c = self.clipnorm
            grads = [None if g is None else g * c / max(np.linalg.norm(g), c) for g in grads]
        if self.global_clipnorm is not None:
            c = self.global_clipnorm
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads if g is not None))
            scale = c * min(1 / norm if norm > 0 else math.inf, 1 / c)
            grads = [None if g is None else g * scale for g in grads]
        if self.name == "Nadam" and self.convention == "keras":
            self.u_product *= _nadam_mu(hp, self.iterations + 1)
            hp["_u_product"] = self.u_product
        per_update = self.info.per_update.get(self.convention)
        if per_update is not None:
            per_update(self.shared, hp, self.iterations + 1)
        for i, g in enumerate(grads):
            if g is None:
                continue
            self.steps[i] += 1
            t = (self.iterations + 1 if self.convention == "keras" or self.info.shared_clock
                 else self.steps[i])
            w, st = self.w[i], self.state[i]
            if rows[i] is not None:
                w, st = w[rows[i]], {k: v[rows[i]] if np.shape(v) == w.shape else v
                                     for k, v in st.items()}
            if self.maximize:
                g = -g
            if self.clipvalue is not None:
                g = np.clip(g, -self.clipvalue, self.clipvalue)
            wd = hp.get("weight_decay", 0.0)
            hp["_wd"] = 0.0
            hp["_w_before_decay"], hp["_dtype"] = w, self.dtypes[i]
            if wd and i not in self.exclude:
                if self.decoupled:
                    w = w * (1 - hp["learning_rate"] * wd)
                elif self.convention in self.info.coupled_decay_in_rule:
                    hp["_wd"] = wd
                else:
                    g = g + wd * w
            if rows[i] is None:
                self.w[i] = self.rule(w, g, st, hp, t)
            else:
                self.w[i][rows[i]] = self.rule(w, g, st, hp, t)
                for k, v in st.items():
                    if np.shape(self.state[i].get(k)) == self.w[i].shape:
                        self.state[i][k][rows[i]] = v
                    else:       # a value per tensor (Nadam's product)
                        self.state[i][k] = v
        self.iterations += 1
