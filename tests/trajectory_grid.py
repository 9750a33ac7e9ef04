"""A broad grid of optimizer runs whose exact bytes are pinned.

Each configuration (optimizer x convention x dtype x option, with schedules,
param groups, ``None`` grads, a non-finite step and a state-dict round trip)
runs a few dozen tiny steps; its digest is the SHA-256 of the params and of
everything ``state_dict()`` holds.  ``tests/data/trajectories.json`` records
the digests; ``test_trajectories.py`` fails when any of them moves, so a
refactor that changes a single bit of any trajectory is caught.  After a
deliberate change of the numbers, regenerate the file with

    python tests/trajectory_grid.py --write
"""
import hashlib
import json
import os
import sys
import zlib

import numpy as np

import fastopt as fo
from fastopt import schedules
from fastopt.optimizers import REGISTRY

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import optim_db  # noqa: E402

DATA = os.path.join(HERE, "data", "trajectories.json")
STEPS = 24
SHAPES = ((7, 5), (13,), (3,))

# Options added to every optimizer in each of its conventions.
OPTION_VARIANTS = {
    "plain": {},
    "maximize": {"maximize": True},
    "clipvalue": {"clipvalue": 0.05},
    "clipnorm": {"clipnorm": 0.3},
    "global_clipnorm": {"global_clipnorm": 0.4},
    "weight_decay": {"weight_decay": 0.05},
    "ema": {"use_ema": True, "ema_momentum": 0.8, "ema_overwrite_frequency": 5},
    "accumulation": {"gradient_accumulation_steps": 3},
    "skip_nonfinite": {"skip_nonfinite": True},
    "decoupled": {"weight_decay": 0.03, "decoupled_weight_decay": True},
    "coupled": {"weight_decay": 0.03, "decoupled_weight_decay": False},
}


def _shapes(name):
    """SHAPES in the shapes optimizer ``name`` takes (optim_db.param_shape)."""
    return [optim_db.param_shape(name, s) for s in SHAPES]


def _grads(seed, dtype, step, nonfinite_at=None, name=None):
    rng = np.random.default_rng(seed * 1000 + step)
    gs = [(rng.standard_normal(s) * 0.5).astype(dtype) for s in _shapes(name)]
    # a None grad now and then: per-parameter step counts drift apart (torch)
    if step % 5 == 3:
        gs[1] = None
    if step % 7 == 6:
        gs[2] = None
    if nonfinite_at is not None and step == nonfinite_at:
        gs[0] = gs[0].copy()
        gs[0][1, 2] = np.nan
    return gs


def _params(seed, dtype, name=None):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in _shapes(name)]


def _feed(value, h):
    if isinstance(value, np.ndarray):
        h.update(value.dtype.str.encode())
        h.update(str(value.shape).encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(repr(k).encode())
            _feed(value[k], h)
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for v in value:
            _feed(v, h)
        h.update(b"]")
    elif isinstance(value, float):
        h.update(value.hex().encode())
    else:
        h.update(repr(value).encode())


def digest(opt, params):
    sd = opt.state_dict()
    h = hashlib.sha256()
    _feed([p for p in params], h)
    for key in ("iterations", "steps", "state", "extra", "schedules"):
        _feed(sd.get(key), h)
    return h.hexdigest()


def _run(make, seed, dtype, nonfinite_at=None, round_trip=False, name=None):
    params = _params(seed, dtype, name)
    opt = make(params)
    for step in range(STEPS):
        if round_trip and step == STEPS // 2:
            sd = opt.state_dict()
            fresh = [p.copy() for p in params]
            opt = make(fresh)
            opt.load_state_dict(sd)
            params = fresh
        opt.step(_grads(seed, dtype, step, nonfinite_at, name))
    return digest(opt, params)


def configurations(only=None):
    """(id, make(params) -> optimizer, options of _run) for the whole grid."""
    out = []
    names = [n for n in REGISTRY if only is None or n in only]
    for (case, conv), cid in optim_db.expand():
        if case[0] not in names:
            continue
        name, kwargs, _ = case
        cls = REGISTRY[name]
        nonfinite = 9 if kwargs.get("skip_nonfinite") else None
        out.append((f"case:{cid}",
                    lambda p, cls=cls, kw=kwargs, conv=conv: cls(p, convention=conv, **kw),
                    {"nonfinite_at": nonfinite}))
    for name in names:
        cls = REGISTRY[name]
        info = optim_db.info(name)
        for conv in info.conventions:
            for label, opts in OPTION_VARIANTS.items():
                # coupled weight decay: torch's L2 form, which AdamW does not have
                if label == "coupled" and (conv == "keras" or info.decoupled_always):
                    continue
                nonfinite = 9 if opts.get("skip_nonfinite") else None
                out.append((f"{name}-{conv}-{label}",
                            lambda p, cls=cls, conv=conv, o=opts: cls(p, convention=conv, **o),
                            {"nonfinite_at": nonfinite}))
            lr = 0.01 if name != "Adadelta" else 0.5

            def scheduled(p, cls=cls, conv=conv, lr=lr):
                sched = schedules.ExponentialDecay(lr, decay_steps=4, decay_rate=0.8)
                return cls(p, convention=conv, learning_rate=sched, weight_decay=0.02)
            out.append((f"{name}-{conv}-schedule", scheduled, {}))

            def lam(p, cls=cls, conv=conv, lr=lr):
                sched = schedules.PiecewiseConstant([5, 12], [lr, lr / 2, lr / 4])
                return cls(p, convention=conv, learning_rate=sched)
            out.append((f"{name}-{conv}-function", lam, {}))

            def grouped(p, cls=cls, conv=conv, lr=lr):
                return cls([{"params": p[:1], "learning_rate": lr * 0.5, "name": "w"},
                            {"params": p[1:], "weight_decay": 0.1, "name": "b"}],
                           convention=conv, learning_rate=lr)
            out.append((f"{name}-{conv}-groups", grouped, {}))

            def excluded(p, cls=cls, conv=conv, lr=lr):
                opt = cls([{"params": p[:2], "name": "kernel"},
                           {"params": p[2:], "name": "bias"}],
                          convention=conv, learning_rate=lr, weight_decay=0.1)
                opt.exclude_from_weight_decay(var_names=["bias"])
                return opt
            out.append((f"{name}-{conv}-excluded", excluded, {}))

            out.append((f"{name}-{conv}-round-trip",
                        lambda p, cls=cls, conv=conv: cls(p, convention=conv, weight_decay=0.01),
                        {"round_trip": True}))
            out.append((f"{name}-{conv}-round-trip-ema-accum",
                        lambda p, cls=cls, conv=conv: cls(p, convention=conv, use_ema=True,
                                                          gradient_accumulation_steps=2),
                        {"round_trip": True}))
    one = schedules.OneCycle(0.05, 30)
    out.append(("SGD-keras-onecycle",
                lambda p: fo.SGD(p, learning_rate=one, momentum=one.momentum), {}))
    out.append(("SGD-torch-onecycle",
                lambda p: fo.SGD(p, learning_rate=one, momentum=one.momentum,
                                 convention="torch"), {}))
    for conv in ("keras", "torch"):
        out.append((f"Adam-{conv}-scheduled-beta",
                    lambda p, conv=conv: fo.Adam(p, convention=conv,
                                                 beta_1=schedules.CosineDecay(0.9, 20, alpha=0.5)),
                    {}))
        out.append((f"RMSprop-{conv}-scheduled-momentum",
                    lambda p, conv=conv: fo.RMSprop(p, convention=conv,
                                                    momentum=schedules.ExponentialDecay(0.5, 3, 0.5)),
                    {}))
    # Keras's Muon with its AdamW route (by name and by exclude_layers) beside matrices
    for label, opts in (("adamw-route", {}), ("adamw-route-round-trip", {"round_trip": True})):
        out.append((f"Muon-keras-{label}",
                    lambda p: fo.Muon([{"params": p, "names": ["kernel", "token_embedding",
                                                                "head"]}],
                                      exclude_layers=["head"], adam_lr_ratio=0.5,
                                      adam_weight_decay=0.02, weight_decay=0.01,
                                      clipvalue=0.4),
                    opts))
    # the configurations of the optimizers asked for (their ids start with the name)
    return [c for c in out if _name(c[0]) in names]


def _name(cid):
    """The optimizer a configuration id starts with."""
    return cid.split("-")[0].split(":")[-1].split("(")[0]


def compute(only=None):
    out = {}
    for cid, make, opts in configurations(only):
        for dtype in (np.float32, np.float64):
            key = f"{cid}-{np.dtype(dtype).name}"
            assert key not in out, key
            # seeded by the name: adding a configuration moves no other digest
            out[key] = _run(make, seed=zlib.crc32(key.encode()) % 9973, dtype=dtype,
                            name=_name(cid), **opts)
    return out


if __name__ == "__main__":
    digests = compute()
    if "--write" in sys.argv:
        os.makedirs(os.path.dirname(DATA), exist_ok=True)
        with open(DATA, "w") as f:
            json.dump(digests, f, indent=0, sort_keys=True)
            f.write("\n")
        print(f"wrote {len(digests)} digests to {DATA}")
    else:
        with open(DATA) as f:
            expected = json.load(f)
        bad = sorted(k for k in expected if digests.get(k) != expected[k])
        missing = sorted(set(expected) - set(digests))
        print(f"{len(expected)} recorded, {len(bad)} differ, {len(missing)} missing")
        for k in bad[:40]:
            print("  differs:", k)
        sys.exit(1 if bad or missing else 0)
