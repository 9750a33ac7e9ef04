"""Below the float32 floor: Adam with compact state, params and grads.

One float32 problem of ``n`` elements (default 1.6e7), Adam (lr 1e-3), timed
side by side in one process, in rotating rounds, medians:

* the memory-traffic floor of float32 Adam (bench/floor.c: 28 B/element);
* fastopt Adam with float32 params, grads and state;
* fastopt with bfloat16 state, with int8 state (blocks of 256, min_8bit_size
  0), with bfloat16 params, grads and state, with bfloat16 params and grads
  and int8 state, and with bfloat16 params and grads, int8 state and a
  float32 master copy;
* torch.optim.AdamW(fused=True) in float32 (weight_decay 0), when torch is
  installed;
* bitsandbytes' ``AdamW8bit`` on CPU tensors (its 8-bit blockwise state),
  when bitsandbytes is installed;
* torchao's ``AdamW8bit`` (``torchao.optim``: blocks of 256, built by
  torch.compile; its first step compiles, before the timing), when torchao
  is installed and runs on the CPU.

    python bench/run.py --compact [--compact-size 1.6e7] [--threads 2]

Bytes per element are what a step must move: params read and written,
grads read, state read and written (int8 blocks: 260 bytes per 256 values).
"""
import numpy as np

import fastopt as fo

#: label -> (param dtype, grad dtype, fastopt keywords, bytes per element)
Q8 = 2 * 2 * 260 / 256      # m and v as int8 blocks, read and written
MODES = {
    "fastopt float32": ("float32", "float32", {}, 28.0),
    "fastopt bf16 state": ("float32", "float32", {"state_dtype": "bfloat16"}, 20.0),
    "fastopt int8 state": ("float32", "float32", {"state_dtype": "int8"}, 12.0 + Q8),
    "fastopt bf16 params, grads, state": ("bfloat16", "bfloat16", {}, 14.0),
    "fastopt bf16 params, grads + int8 state": ("bfloat16", "bfloat16",
                                                 {"state_dtype": "int8"}, 6.0 + Q8),
    "fastopt bf16 params, grads + int8 state + f32 master": (
        "bfloat16", "bfloat16", {"state_dtype": "int8", "master_weights": True},
        12.0 + Q8),
}
NGRADS = 4


def _dtype(name):
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class _Timed:
    def run(self, k):
        import time
        t0 = time.perf_counter()
        for _ in range(k):
            self.step()
        return (time.perf_counter() - t0) / k


class Fastopt(_Timed):
    def __init__(self, w0, grads, threads, pdtype, gdtype, kw):
        self.w = w0.astype(_dtype(pdtype))
        self.grads = [g.astype(_dtype(gdtype)) for g in grads]
        self.opt = fo.Adam([self.w], learning_rate=1e-3, num_threads=threads, min_8bit_size=0,
                           **kw)
        self.i = 0

    def step(self):
        self.opt.step([self.grads[self.i % NGRADS]])
        self.i += 1

    def state_bytes(self):
        return sum(np.asarray(a).nbytes for a in self.opt.state_arrays()[0])


class TorchFused(_Timed):
    def __init__(self, w0, grads, threads):
        import torch
        torch.set_num_threads(threads)
        self.p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        self.grads = [torch.from_numpy(g) for g in grads]
        self.opt = torch.optim.AdamW([self.p], lr=1e-3, weight_decay=0.0, fused=True)
        self.i = 0

    def step(self):
        self.p.grad = self.grads[self.i % NGRADS]
        self.opt.step()
        self.i += 1


class BnbAdamW8bit(_Timed):
    def __init__(self, w0, grads, threads):
        import bitsandbytes as bnb
        import torch
        torch.set_num_threads(threads)
        self.p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        self.grads = [torch.from_numpy(g) for g in grads]
        self.opt = bnb.optim.AdamW8bit([self.p], lr=1e-3, weight_decay=0.0, min_8bit_size=0)
        self.i = 0

    def step(self):
        self.p.grad = self.grads[self.i % NGRADS]
        self.opt.step()
        self.i += 1

    def state_bytes(self):
        st = self.opt.state[self.p]
        return sum(v.numel() * v.element_size() for v in st.values() if hasattr(v, "numel")
                   and v.numel() > 1)


class TorchaoAdamW8bit(BnbAdamW8bit):
    def __init__(self, w0, grads, threads):
        import torch
        from torchao.optim import AdamW8bit
        torch.set_num_threads(threads)
        self.p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
        self.grads = [torch.from_numpy(g) for g in grads]
        self.opt = AdamW8bit([self.p], lr=1e-3, weight_decay=0.0)
        self.i = 0
        self.step()         # torch.compile builds the step here

    def state_bytes(self):
        # 8-bit state is a tensor subclass of codes and scales; a param whose
        # size is not a multiple of the block keeps float32 state
        st = self.opt.state[self.p]
        return sum(t.numel() * t.element_size() for k in ("exp_avg", "exp_avg_sq")
                   for t in ((st[k].codes, st[k].scale) if hasattr(st[k], "codes") else (st[k],)))


def _available(module):
    try:
        __import__(module)
    except Exception:       # an install that cannot load counts as absent
        return False
    return True


def run(n, threads, measure, reps, batch_s, pause_s, floor, torch_ok, log):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(n).astype(np.float32)
    grads = [(rng.standard_normal(n) * 1e-2).astype(np.float32) for _ in range(NGRADS)]
    built = {"float32 traffic floor": floor.instance([w0], 2, threads)}
    for label, (pd, gd, kw, _) in MODES.items():
        built[label] = Fastopt(w0, grads, threads, pd, gd, kw)
    if torch_ok:
        built["torch AdamW fused (float32)"] = TorchFused(w0, grads, threads)
    if torch_ok and _available("bitsandbytes"):
        built["bitsandbytes AdamW8bit (CPU)"] = BnbAdamW8bit(w0, grads, threads)
    if torch_ok and _available("torchao"):
        try:
            built["torchao AdamW8bit (CPU)"] = TorchaoAdamW8bit(w0, grads, threads)
        except Exception as e:      # torchao without a working CPU build of its step
            log(f"torchao AdamW8bit left out: {type(e).__name__}: {e}")
    res = measure(built, reps, batch_s, pause_s)
    out = []
    for label, r in res.items():
        b = built[label]
        r.update(impl=label, n=n, threads=threads,
                 bytes_per_element=MODES[label][3] if label in MODES else
                 None if "AdamW8bit" in label else 28.0,
                 state_bytes_per_param=(b.state_bytes() / n
                                        if hasattr(b, "state_bytes") else
                                        8.0 if "float32" in label else None))
        out.append(r)
        log(f"{label}: {r['median_s'] * 1e3:.3g} ms")
    return out


def markdown(results, n, threads):
    by = {r["impl"]: r for r in results}
    floor = by["float32 traffic floor"]["median_s"]
    f32 = by["fastopt float32"]["median_s"]
    torch = by.get("torch AdamW fused (float32)", {}).get("median_s")
    out = [f"Adam over {n:.3g} elements, {threads} thread(s), ms per step (median); "
           f"ratios in one run:", "",
           "| implementation | B/element | state B/param | ms/step | ns/element | "
           "x float32 floor | speed-up over fastopt float32 | speed-up over torch fused |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        t = r["median_s"]
        bpe = "" if r["bytes_per_element"] is None else f"{r['bytes_per_element']:.2f}"
        sb = r.get("state_bytes_per_param")
        out.append(f"| {r['impl']} | {bpe} | {'' if sb is None else f'{sb:.3f}'} | "
                   f"{t * 1e3:.2f} | {t / n * 1e9:.3f} | {t / floor:.2f}x | "
                   f"{f32 / t:.2f}x | {'' if torch is None else f'{torch / t:.2f}x'} |")
    return "\n".join(out)
