"""The implementations the benchmark times side by side, behind one interface.

Every implementation is built over its own copy of the same parameters and
state and the same gradients, and exposes ``run(k)``: perform ``k`` steps and
return the seconds per step.  All of them compute the torch-convention update
with torch's defaults (``lr=1e-3``, betas ``(0.9, 0.999)``, ``eps=1e-8``,
AdamW ``weight_decay=0.01``, SGD ``momentum=0.9``) so the figures compare
equal work; :func:`check_agreement` verifies that before anything is timed.
"""
import ctypes
import math
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time

import numpy as np

import fastopt as fo

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WD = 0.01
MOMENTUM = 0.9


# ---- NumPy in-place ufunc implementations ------------------------------------
#
# The best one can do in plain NumPy: every operation writes into an existing
# array (``out=``) and one scratch buffer per step is shared by all tensors,
# so there is no allocation per step; each ufunc is still one pass over memory.

class NumpyAdam:
    """torch-convention Adam (AdamW with ``weight_decay``: decoupled) in NumPy ufuncs."""

    def __init__(self, params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0):
        self.params = params
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.tmp = np.empty(max((p.size for p in params), default=0), dtype=params[0].dtype)
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.wd = weight_decay
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2, lr = self.b1, self.b2, self.lr
        bc1 = 1.0 - b1 ** self.t
        inv_sbc2 = 1.0 / math.sqrt(1.0 - b2 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            tmp = self.tmp[:p.size].reshape(p.shape)
            if self.wd:
                np.multiply(p, 1.0 - lr * self.wd, out=p)
            np.multiply(m, b1, out=m)
            np.multiply(g, 1.0 - b1, out=tmp)
            np.add(m, tmp, out=m)
            np.multiply(v, b2, out=v)
            np.multiply(g, g, out=tmp)
            np.multiply(tmp, 1.0 - b2, out=tmp)
            np.add(v, tmp, out=v)
            np.sqrt(v, out=tmp)
            np.multiply(tmp, inv_sbc2, out=tmp)
            np.add(tmp, self.eps, out=tmp)
            np.divide(m, tmp, out=tmp)
            np.multiply(tmp, lr / bc1, out=tmp)
            np.subtract(p, tmp, out=p)


class NumpySGD:
    """torch-convention SGD with momentum (no dampening) in NumPy ufuncs."""

    def __init__(self, params, lr=LR, momentum=MOMENTUM):
        self.params = params
        self.b = [np.zeros_like(p) for p in params]
        self.tmp = np.empty(max((p.size for p in params), default=0), dtype=params[0].dtype)
        self.lr, self.mu = lr, momentum
        self.t = 0

    def step(self, grads):
        self.t += 1
        for p, g, b in zip(self.params, grads, self.b):
            tmp = self.tmp[:p.size].reshape(p.shape)
            if self.t == 1:
                np.copyto(b, g)
            else:
                np.multiply(b, self.mu, out=b)
                np.add(b, g, out=b)
            np.multiply(b, self.lr, out=tmp)
            np.subtract(p, tmp, out=p)


# ---- the optimizers both libraries have ------------------------------------------

class Spec:
    """One optimizer as every implementation builds it.  ``nstate`` state
    arrays make its traffic ``(3 + 2*nstate) * itemsize`` bytes per element:
    read p, g and the state, write p and the state."""

    def __init__(self, name, nstate, fastopt, numpy, torch):
        self.name, self.nstate = name, nstate
        self.fastopt, self.numpy, self.torch = fastopt, numpy, torch

    def bytes_per_element(self, itemsize):
        return (3 + 2 * self.nstate) * itemsize


SPECS = {
    "adam": Spec(
        "adam", 2,
        lambda ps, **kw: fo.Adam(ps, learning_rate=LR, betas=BETAS, epsilon=EPS,
                                 convention="torch", **kw),
        lambda ps: NumpyAdam(ps),
        lambda tp, **kw: _torch().optim.Adam(tp, lr=LR, betas=BETAS, eps=EPS, **kw)),
    "adamw": Spec(
        "adamw", 2,
        lambda ps, **kw: fo.AdamW(ps, learning_rate=LR, betas=BETAS, epsilon=EPS,
                                  weight_decay=WD, convention="torch", **kw),
        lambda ps: NumpyAdam(ps, weight_decay=WD),
        lambda tp, **kw: _torch().optim.AdamW(tp, lr=LR, betas=BETAS, eps=EPS,
                                              weight_decay=WD, **kw)),
    "sgd": Spec(
        "sgd", 1,
        lambda ps, **kw: fo.SGD(ps, learning_rate=LR, momentum=MOMENTUM,
                                convention="torch", **kw),
        lambda ps: NumpySGD(ps),
        lambda tp, **kw: _torch().optim.SGD(tp, lr=LR, momentum=MOMENTUM, **kw)),
}

TORCH_VARIANTS = {"torch_loop": {"foreach": False}, "torch_foreach": {"foreach": True},
                  "torch_fused": {"fused": True}}


def _torch():
    import torch
    return torch


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ---- implementations with run(k) ----------------------------------------------

class Timed:
    """A step function timed as a batch of ``k`` calls."""

    def __init__(self, step, params, threads_hook=None):
        self.step, self.params, self.threads_hook = step, params, threads_hook

    def run(self, k):
        if self.threads_hook is not None:
            self.threads_hook()
        step = self.step
        t0 = time.perf_counter()
        for _ in range(k):
            step()
        return (time.perf_counter() - t0) / k

    def result(self):
        return [np.array(p, copy=True) for p in self.params]


def build(impl, spec, params0, grads, threads, floor=None):
    """Build implementation ``impl`` of ``spec`` over copies of ``params0``."""
    if impl == "floor":
        return floor.instance(params0, spec.nstate, threads)
    if impl.startswith("fastopt"):
        params = [p.copy() for p in params0]
        kw = {"num_threads": threads}
        if impl == "fastopt_keras":
            opt = fo.Adam(params, convention="keras", **kw)
        else:
            opt = spec.fastopt(params, **kw)
        gl = list(grads)
        return Timed(lambda: opt.step(gl), params)
    if impl == "numpy":
        params = [p.copy() for p in params0]
        opt = spec.numpy(params)
        return Timed(lambda: opt.step(grads), params)
    if impl in TORCH_VARIANTS:
        torch = _torch()
        tp = [torch.from_numpy(p.copy()).requires_grad_(True) for p in params0]
        for t, g in zip(tp, grads):
            t.grad = torch.from_numpy(g)
        opt = spec.torch(tp, **TORCH_VARIANTS[impl])
        return Timed(opt.step, [t.detach().numpy() for t in tp],
                     threads_hook=lambda: torch.set_num_threads(threads))
    raise ValueError(f"unknown implementation {impl!r}")


def check_agreement(spec, impls, steps=3, size=1031):
    """Run every implementation (except the probe) a few steps from the same
    start on float32 data and raise if any result differs from fastopt's:
    the timings compare equal work only if the updates agree."""
    rng = np.random.default_rng(1)
    params0 = [rng.standard_normal(size).astype(np.float32),
               rng.standard_normal((7, 9)).astype(np.float32)]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params0]
    ref = build("fastopt", spec, params0, grads, 1)
    ref.run(steps)
    want = ref.result()
    for impl in impls:
        if impl in ("floor", "fastopt", "fastopt_keras"):
            continue
        b = build(impl, spec, params0, grads, 1)
        b.run(steps)
        for k, (got, exp) in enumerate(zip(b.result(), want)):
            if not np.allclose(got, exp, rtol=2e-5, atol=1e-6):
                err = float(np.max(np.abs(got - exp)))
                raise AssertionError(f"{spec.name}: {impl} disagrees with fastopt on tensor {k} "
                                     f"after {steps} steps (max abs difference {err:.3g})")


# ---- the memory-traffic floor ---------------------------------------------------

class FloorProbe:
    """bench/floor.c, compiled with the system C compiler into a temporary
    directory and loaded with ctypes."""

    SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="fastopt-floor-")
        cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
        if shutil.which(cc) is None:
            cc = "cc"
        lib = os.path.join(self.tmp, "floor.so")
        base = [cc, "-O3", "-fno-math-errno", "-std=c99", "-shared", "-fPIC", self.SOURCE,
                "-o", lib]
        self.flags = None
        errors = []
        for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
            r = subprocess.run(base + extra, capture_output=True, text=True)
            if r.returncode == 0:
                self.flags = " ".join(["-O3", "-fno-math-errno"] + extra)
                break
            errors.append(r.stderr.strip())
        if self.flags is None:
            raise RuntimeError("could not compile bench/floor.c:\n" + "\n".join(errors))
        self.compiler = cc
        self.lib = ctypes.CDLL(lib)
        self.lib.floor_probe.restype = ctypes.c_double
        self.lib.floor_probe.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                         ctypes.c_int64, ctypes.c_int, ctypes.c_int,
                                         ctypes.c_int]
        self.openmp = bool(self.lib.floor_openmp())
        self.lib.floor_rows_probe.restype = ctypes.c_double
        self.lib.floor_rows_probe.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                              ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                              ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                              ctypes.c_int, ctypes.c_int]

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def instance(self, params0, nstate, threads):
        """The probe over as many elements as ``params0`` holds, in one array
        (the floor of a many-tensor list is that of its total)."""
        n = sum(p.size for p in params0)
        dtype = params0[0].dtype
        rng = np.random.default_rng(2)
        p = rng.standard_normal(n).astype(dtype)
        g = rng.standard_normal(n).astype(dtype)
        states = [np.zeros(n, dtype) for _ in range(nstate)]
        arr = (ctypes.c_void_p * max(nstate, 1))(*[s.ctypes.data for s in states])
        lib, f64 = self.lib, int(dtype == np.float64)

        class _Probe:
            keep = (p, g, states, arr)
            params = [p]

            def run(self, k):
                # The floor with up to `threads` threads: below a few thousand
                # elements one thread beats a fork/join, so both are timed.
                t = lib.floor_probe(p.ctypes.data, g.ctypes.data, arr, nstate, n, f64,
                                    threads, k)
                if threads > 1:
                    t = min(t, lib.floor_probe(p.ctypes.data, g.ctypes.data, arr, nstate, n,
                                               f64, 1, k))
                return t * 1e-9

        return _Probe()
