"""Faults that must lose nothing: a soak of threads stepping, checkpointing,
refusing bad steps and loads, and restoring, against a twin run without
faults; and an optimizer whose state does not fit in memory.

The short soak runs in the default suite (seconds); ``pytest --soak`` runs
the long one (``--soak-steps`` steps per optimizer, default 100000) and
prints its figures."""
import functools
import gc
import os
import subprocess
import sys
import textwrap
import threading

from typing import Any, NamedTuple

import numpy as np
import pytest

import fastopt as fo

try:
    from ml_dtypes import bfloat16
except ImportError:          # the fastopt[bf16] extra: its kinds are left out
    bfloat16 = None

SHAPES = [(33, 17), (130,), (5000,)]


class Kind(NamedTuple):
    cls: type
    kwargs: dict
    shapes: list = SHAPES
    dtype: Any = np.float64
    rows: bool = False          # params[0] gets a RowGrad of a few repeated rows


# several kernels and every option path, the optimizers added since the first
# version, compact state, 16-bit params (stochastic rounding, master weights) and
# row gradients
KINDS = {
    "adam_clipnorm": Kind(fo.Adam, dict(learning_rate=1e-3, clipnorm=1.0)),
    "sgd_torch_nesterov": Kind(fo.SGD, dict(convention="torch", learning_rate=1e-2, momentum=0.9,
                                            nesterov=True, weight_decay=1e-4)),
    "lamb_global": Kind(fo.Lamb, dict(learning_rate=1e-3, global_clipnorm=2.0)),
    "nadam_ema": Kind(fo.Nadam, dict(learning_rate=1e-3, use_ema=True, ema_overwrite_frequency=7)),
    "adagrad_accum_skip": Kind(fo.Adagrad, dict(learning_rate=1e-2, gradient_accumulation_steps=3,
                                                skip_nonfinite=True)),
    "rmsprop_torch": Kind(fo.RMSprop, dict(convention="torch", learning_rate=1e-3, momentum=0.5,
                                           centered=True)),
    "adafactor_torch": Kind(fo.Adafactor, dict(convention="torch", learning_rate=1e-2,
                                               weight_decay=1e-3)),
    "muon_keras": Kind(fo.Muon, dict(learning_rate=1e-2), shapes=[(33, 17), (13, 10), (40, 125)]),
    "schedule_free_adamw": Kind(fo.ScheduleFreeAdamW, dict(learning_rate=1e-2, warmup_steps=20)),
    "adam_int8_state": Kind(fo.Adam, dict(learning_rate=1e-3, state_dtype="int8", min_8bit_size=0,
                                          seed=5), dtype=np.float32),
    "adam_rows": Kind(fo.Adam, dict(convention="torch", learning_rate=1e-3, weight_decay=1e-2),
                      rows=True),
}
if bfloat16 is not None:
    KINDS.update({
        "adamw_bf16_stochastic": Kind(fo.AdamW, dict(learning_rate=1e-3, state_dtype="bfloat16",
                                                     seed=11), dtype=bfloat16),
        "sgd_bf16_master": Kind(fo.SGD, dict(learning_rate=1e-2, momentum=0.9,
                                             master_weights=True), dtype=bfloat16),
    })


# the gradients repeat with this period (a multiple of the NaN and None
# periods below): drawing fresh ones each step would cost more than the step
PERIOD = 110


@functools.lru_cache(maxsize=None)
def _grad_bank(kind_index, kind):
    """The gradients of steps 0..PERIOD-1, read-only (one set serves every
    thread): a NaN every 11th step (skipped by skip_nonfinite, else a zero, as
    a NaN would end the comparison), a None every 5th."""
    k = KINDS[kind]
    bank = []
    for t in range(PERIOD):
        rng = np.random.default_rng([kind_index, t])
        out = [(rng.standard_normal(s) * 0.1).astype(k.dtype) for s in k.shapes]
        if t % 11 == 5:
            out[2].flat[7] = np.nan if k.kwargs.get("skip_nonfinite") else 0.0
        if t % 5 == 2:
            out[1] = None
        if k.rows:
            rows, width = k.shapes[0]
            out[0] = fo.RowGrad(rng.integers(0, rows, 6),
                                (rng.standard_normal((6, width)) * 0.1).astype(k.dtype))
        for g in out:
            for a in ((g.indices, g.values) if isinstance(g, fo.RowGrad) else
                      () if g is None else (g,)):
                a.flags.writeable = False
        bank.append(out)
    return bank


def _grads(kind_index, kind, t):
    """The gradients of step ``t``: a function of the step alone, so a restored
    optimizer that replays steps sees the same ones."""
    return list(_grad_bank(kind_index, kind)[t % PERIOD])


def _build(kind):
    k = KINDS[kind]
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(s).astype(k.dtype) for s in k.shapes]
    return params, k.cls(params, **k.kwargs)


def _image(params, opt):
    """Every byte the optimizer and its parameters hold, and its counters."""
    out = [p.tobytes() for p in params]
    out += [a.tobytes() for s in opt.state_arrays() for a in s]
    out += [m.tobytes() for m in opt.master_params if m is not None]
    if opt._ema is not None:
        out += [a.tobytes() for a in opt.averages]
    if opt._accum is not None:
        out += [a.tobytes() for a in opt._accum]
    return out + [opt.iterations, opt.micro_steps, opt.skipped_steps]


# a dtype each param dtype refuses as its grad's
OTHER_DTYPE = {np.dtype(np.float64): np.float32, np.dtype(np.float32): np.float64}


def _bad_step(rng, params):
    """A step the optimizer must refuse, changing nothing."""
    g = [np.zeros_like(p) for p in params]
    choice = rng.integers(6)
    if choice == 0:
        g[0] = np.zeros((2, 2), params[0].dtype)
    elif choice == 1:
        g[1] = g[1].astype(OTHER_DTYPE.get(g[1].dtype, np.float16))
    elif choice == 2:
        g = g[:-1]
    elif choice == 3:
        g[2] = params[2]                      # aliases the parameter
    elif choice == 4:
        g[0] = np.asfortranarray(np.zeros(params[0].shape, params[0].dtype))[:, ::2]
    else:
        native = g[2].dtype if g[2].dtype in OTHER_DTYPE else np.dtype(np.float32)
        g[2] = g[2].astype(native.newbyteorder(">"))
    return g


def _faulty(kind_index, kind, steps, directory, seed, counts):
    """Steps 0..steps-1 with random checkpoints (files and state dicts),
    refused steps and loads, and restores that replay from the checkpoint."""
    rng = np.random.default_rng(seed)
    params, opt = _build(kind)
    saved = None          # (t, kind, payload)
    path = os.path.join(directory, f"{kind}.npz")
    t = 0
    while t < steps:
        r = rng.random()
        if r < 0.05:
            if rng.random() < 0.5:
                fo.save(path, opt)
                saved = (t, "file", path)
            else:
                saved = (t, "dict", ([p.copy() for p in params], opt.state_dict()))
            counts["checkpoints"] += 1
        elif r < 0.10:
            before = _image(params, opt)
            with pytest.raises((ValueError, TypeError)):
                opt.step(_bad_step(rng, params))
            assert _image(params, opt) == before
            counts["refused_steps"] += 1
        elif r < 0.12 and saved is not None and saved[1] == "file":
            before = _image(params, opt)
            with open(path, "rb") as f:
                data = f.read()
            cut = os.path.join(directory, f"{kind}.cut.npz")
            with open(cut, "wb") as f:
                f.write(data[:int(rng.integers(1, len(data)))])
            with pytest.raises(ValueError):
                fo.load(cut, opt)
            assert _image(params, opt) == before
            counts["refused_loads"] += 1
        elif r < 0.14 and saved is not None:
            t, how, payload = saved
            if how == "file":
                fo.load(payload, opt)
            else:
                for p, q in zip(params, payload[0]):
                    p[...] = q
                opt.load_state_dict(payload[1])
            if not getattr(opt, "training", True):
                opt.train()                   # a checkpoint taken in eval mode
            counts["restores"] += 1
            continue
        elif r < 0.16 and "eval" in type(opt).param_methods:
            # schedule-free's evaluation point and back: train() restores the
            # weights it stepped bit for bit
            opt.eval()
            if rng.random() < 0.5:
                fo.save(path, opt)            # a checkpoint taken in eval mode
                saved = (t, "file", path)
                counts["checkpoints"] += 1
            opt.train()
            counts["mode_switches"] += 1
        opt.step(_grads(kind_index, kind, t))
        t += 1
    return _image(params, opt)


def _twin(kind_index, kind, steps):
    params, opt = _build(kind)
    for t in range(steps):
        opt.step(_grads(kind_index, kind, t))
    return _image(params, opt)


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def soak(directory, steps, threads=4, rounds=2):
    """Each of ``threads`` threads runs every kind (its own optimizers) through
    ``steps`` faulty steps, ``rounds`` times over; returns the figures, with
    the RSS after each round.  Raises on any difference from the twin."""
    counts = [dict(checkpoints=0, refused_steps=0, refused_loads=0, restores=0,
                   mode_switches=0)
              for _ in range(threads)]
    results, errors = {}, []

    def worker(w):
        try:
            for k, kind in enumerate(KINDS):
                results[(w, kind)] = _faulty(k, kind, steps, os.path.join(directory, str(w)),
                                             seed=[w, k], counts=counts[w])
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    for w in range(threads):
        os.makedirs(os.path.join(directory, str(w)), exist_ok=True)
    # one warm-up round: what the allocator keeps after it is not growth
    worker(0)
    gc.collect()
    rss = [_rss()]
    for _ in range(rounds):
        pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
        if errors:
            raise errors[0]
        gc.collect()
        rss.append(_rss())
    twins = {kind: _twin(k, kind, steps) for k, kind in enumerate(KINDS)}
    for (w, kind), image in results.items():
        assert image == twins[kind], f"thread {w}, {kind}: differs from the run without faults"
    total = {key: sum(c[key] for c in counts) for key in counts[0]}
    return dict(total, threads=threads, optimizers=threads * len(KINDS), steps=steps,
                rounds=rounds, rss=rss)


def _check_flat(figures):
    """The first round may grow the heap (each new thread gets its own malloc
    arena); a later round, repeating the same work, must not."""
    rss = figures["rss"]
    assert rss[1] - rss[0] < 32 << 20, figures
    assert max(rss[2:]) - rss[1] < 4 << 20, figures


def test_soak_short(tmp_path):
    figures = soak(str(tmp_path), steps=100)
    assert figures["restores"] > 0 and figures["refused_steps"] > 0
    assert figures["checkpoints"] > 0 and figures["refused_loads"] > 0
    _check_flat(figures)


@pytest.mark.soak
def test_soak_long(tmp_path, request):
    steps = request.config.getoption("--soak-steps")
    figures = soak(str(tmp_path), steps=steps)
    print(f"\nsoak: {figures}")
    _check_flat(figures)


# ---- allocation failure -------------------------------------------------------------

ALLOC_SCRIPT = textwrap.dedent("""
    import gc, resource, sys, weakref
    import numpy as np
    import fastopt as fo

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    w = np.ones(16 << 20)                    # 128 MiB parameter: Adam's state needs 256 MiB
    small = [np.ones(1000)]
    fo.Adam(small).step([np.ones(1000)])     # threads, kernels and caches exist before the limit
    gc.collect()
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (160 << 20), resource.RLIM_INFINITY))
    before = rss()
    try:
        fo.Adam([w], learning_rate=0.1, use_ema=True)
        print("built")
    except MemoryError as e:
        print("MemoryError:", e)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, fo.Adam)]
    print("alive", len(alive))
    print("rss_growth", rss() - before)
    print("params_unchanged", bool((w == 1).all()))
    opt = fo.Adam([np.zeros(1000)])          # memory is usable again
    opt.step([np.ones(1000)])
    print("after", opt.iterations)
""")


def test_state_that_does_not_fit_raises_memory_error_and_builds_nothing():
    if sys.platform != "linux":
        pytest.skip("RLIMIT_AS and /proc are Linux's")
    proc = subprocess.run([sys.executable, "-c", ALLOC_SCRIPT], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    need = 3 * (16 << 20) * 8                 # m, v and the moving average
    assert f"MemoryError: Adam: its state for 1 parameters needs {need} bytes (384.0 MiB)" \
        in out, out
    assert "nothing was built" in out
    assert "alive 0" in out
    growth = int(out.split("rss_growth ")[1].split()[0])
    assert growth < 8 << 20, out
    assert "params_unchanged True" in out and "after 1" in out
