"""Weight averaging (use_swa): torch swa_utils' arithmetic bit for bit, the
torchcontrib clock, swap_averages, checkpoints, refusals, and the live
comparison with torch's AveragedModel."""

from fractions import Fraction

import numpy as np
import pytest

import fastopt as fo
from conftest import SIMD_VARIANTS
from fastopt import _core

DTYPES = [np.float32, np.float64]


def _grads(rng, shapes, n, dtype):
    return [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(n)]


def _fma(a, b, c, dtype):
    """Correctly rounded a*b + c (what C's fma returns)."""
    return dtype(float(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))))


def reference_average(snapshots, start, freq, decay, dtype):
    """AveragedModel.update_parameters after update u (from 1) when
    u > start and u % freq == 0: copy, then get_swa_avg_fn or torch's lerp."""
    avg, n = None, 0
    for u, w in enumerate(snapshots, start=1):
        if not (u > start and u % freq == 0):
            continue
        if n == 0:
            avg = [x.copy() for x in w]
        elif decay is None:
            avg = [a + (x - a) / dtype(n + 1) for a, x in zip(avg, w)]
        else:
            wt = dtype(1.0 - decay)
            out = []
            for a, x in zip(avg, w):
                d = (x - a).ravel()
                if wt < 0.5:
                    r = [_fma(wt, di, ai, dtype) for di, ai in zip(d, a.ravel())]
                else:
                    r = [_fma(wt - dtype(1), di, xi, dtype) for di, xi in zip(d, x.ravel())]
                out.append(np.array(r, dtype=dtype).reshape(a.shape))
            avg = out
        n += 1
    return avg, n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decay", [None, 0.9, 0.3])
@pytest.mark.parametrize("start,freq", [(0, 1), (3, 2), (1, 3)])
def test_matches_swa_utils_arithmetic(rng, dtype, decay, start, freq):
    shapes = [(7,), (3, 5), (1,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    opt = fo.Adam(params, learning_rate=0.05, use_swa=True, swa_start=start,
                  swa_freq=freq, swa_decay=decay)
    snaps = []
    for g in _grads(rng, shapes, 11, dtype):
        opt.step(g)
        snaps.append([p.copy() for p in params])
    ref, n = reference_average(snaps, start, freq, decay, dtype)
    assert opt.n_averaged == n > 0
    for a, r in zip(opt.averages, ref):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decay", [None, 0.99, 0.2])
def test_same_bits_for_every_simd_variant_and_thread_count(rng, dtype, decay):
    shapes = [(40_001,), (1_003,)]
    p0 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = _grads(rng, shapes, 5, dtype)
    results = []
    for simd in SIMD_VARIANTS:
        for threads in (1, 2):
            _core.set_simd(simd)
            _core.set_parallel_threshold(1)
            params = [p.copy() for p in p0]
            opt = fo.SGD(params, learning_rate=0.1, momentum=0.9, num_threads=threads,
                         use_swa=True, swa_decay=decay)
            for g in grads:
                opt.step(g)
            results.append([a.copy() for a in opt.averages] + params)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()
    if decay is None:    # the uniform average in NumPy, same dtype, same order
        ref = [p.copy() for p in p0]
        params = [p.copy() for p in p0]
        opt = fo.SGD(params, learning_rate=0.1, momentum=0.9)
        for n, g in enumerate(grads):
            opt.step(g)
            ref = ([p.copy() for p in params] if n == 0 else
                   [a + (p - a) / dtype(n + 1) for a, p in zip(ref, params)])
        for a, r in zip(results[0], ref):
            np.testing.assert_array_equal(a, r)


def test_swap_is_exact_and_guards_the_step(rng):
    params = [rng.standard_normal(9), rng.standard_normal((2, 3)).astype(np.float32)]
    opt = fo.RMSprop(params, learning_rate=0.01, use_swa=True, swa_start=2)
    with pytest.raises(ValueError, match="no average yet"):
        opt.swap_averages()
    grads = _grads(rng, [(9,), (2, 3)], 6, np.float64)
    grads = [[g[0], g[1].astype(np.float32)] for g in grads]
    for g in grads:
        opt.step(g)
    w_bytes = [p.tobytes() for p in params]
    a_bytes = [a.tobytes() for a in opt.averages]
    assert opt.swap_averages() is True and opt.swapped
    assert [p.tobytes() for p in params] == a_bytes
    assert [a.tobytes() for a in opt.averages] == w_bytes
    it = opt.iterations
    with pytest.raises(RuntimeError, match="swap_averages"):
        opt.step(grads[0])
    with pytest.raises(ValueError, match="swap_averages"):
        opt.state_dict()
    assert opt.iterations == it and [p.tobytes() for p in params] == a_bytes
    assert opt.swap_averages() is False
    assert [p.tobytes() for p in params] == w_bytes
    assert [a.tobytes() for a in opt.averages] == a_bytes
    opt.step(grads[0])
    assert opt.iterations == it + 1


@pytest.mark.parametrize("decay", [None, 0.95])
def test_checkpoint_resumes_exactly(rng, tmp_path, decay):
    shapes = [(13,), (4, 4)]
    p0 = [rng.standard_normal(s) for s in shapes]
    grads = _grads(rng, shapes, 12, np.float64)
    kw = dict(learning_rate=0.02, use_swa=True, swa_start=2, swa_freq=2, swa_decay=decay,
              gradient_accumulation_steps=2)
    straight = [p.copy() for p in p0]
    a = fo.Adam(straight, **kw)
    for g in grads:
        a.step(g)
    first = [p.copy() for p in p0]
    b = fo.Adam(first, **kw)
    for g in grads[:9]:
        b.step(g)
    fo.save(tmp_path / "ck.npz", b)
    resumed = [np.zeros_like(p) for p in p0]
    c = fo.Adam(resumed, **kw)
    fo.load(tmp_path / "ck.npz", c)
    assert c.n_averaged == b.n_averaged > 0
    for g in grads[9:]:
        c.step(g)
    assert c.n_averaged == a.n_averaged
    for x, y in zip(straight + a.averages, resumed + c.averages):
        assert x.tobytes() == y.tobytes()
    # a checkpoint without averages does not fit, nor one with them into no SWA
    sd = b.state_dict()
    with pytest.raises(ValueError, match="swa"):
        fo.Adam([p.copy() for p in p0], learning_rate=0.02,
                gradient_accumulation_steps=2).load_state_dict(sd)
    del sd["extra"]["swa"]
    with pytest.raises(ValueError, match="swa"):
        fo.Adam([p.copy() for p in p0], **kw).load_state_dict(sd)


def test_config_round_trip():
    w = [np.zeros(3)]
    opt = fo.Lion(w, use_swa=True, swa_start=5, swa_freq=3, swa_decay=0.9)
    cfg = opt.get_config()
    assert (cfg["use_swa"], cfg["swa_start"], cfg["swa_freq"], cfg["swa_decay"]) == (
        True, 5, 3, 0.9)
    clone = fo.Lion.from_config(cfg, [np.zeros(3)])
    assert clone.get_config() == cfg
    opt.swa_start, opt.swa_freq = 0, 1          # settable between steps
    opt.step([np.ones(3)])
    assert opt.n_averaged == 1


@pytest.mark.parametrize("kw,exc,pattern", [
    (dict(use_ema=True, use_swa=True), ValueError, "choose one"),
    (dict(swa_start=3), ValueError, "use_swa=True"),
    (dict(swa_freq=2), ValueError, "use_swa=True"),
    (dict(swa_decay=0.9), ValueError, "use_swa=True"),
    (dict(use_swa=True, swa_decay=1.5), ValueError, r"swa_decay must be None .* \[0, 1\]"),
    (dict(use_swa=True, swa_freq=0), ValueError, "swa_freq must be an int >= 1"),
    (dict(use_swa=True, swa_start=-1), ValueError, "swa_start must be an int >= 0"),
    (dict(use_swa=True, swa_start=None), ValueError, "swa_start must be an int"),
    (dict(use_swa=1), TypeError, "use_swa must be a bool"),
])
def test_refused(kw, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fo.SGD([np.zeros(2)], **kw)


def test_refused_after_construction():
    opt = fo.SGD([np.zeros(2)])
    with pytest.raises(ValueError, match="use_swa=True"):
        opt.swa_start = 4
    with pytest.raises(AttributeError, match="construction"):
        opt.use_swa = True
    with pytest.raises(ValueError, match="needs use_swa=True"):
        opt.swap_averages()
    with pytest.raises(AttributeError, match="use_swa=True"):
        opt.n_averaged


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("decay", [None, 0.9, 0.3])
def test_live_torch_averaged_model(rng, dtype, decay):
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    tdt = getattr(torch, dtype)
    model = torch.nn.Linear(17, 9).to(tdt)
    params = [p.detach().numpy().copy() for p in model.parameters()]
    avg_model = AveragedModel(model, multi_avg_fn=(
        None if decay is None else get_ema_multi_avg_fn(decay)))
    start, freq = 2, 2
    opt = fo.SGD(params, learning_rate=0.1, momentum=0.9, use_swa=True, swa_start=start,
                 swa_freq=freq, swa_decay=decay)
    for u in range(1, 14):
        opt.step([rng.standard_normal(p.shape).astype(dtype) for p in params])
        with torch.no_grad():
            for tp, p in zip(model.parameters(), params):
                tp.copy_(torch.from_numpy(p))
        if u > start and u % freq == 0:
            avg_model.update_parameters(model)
    assert opt.n_averaged == int(avg_model.n_averaged)
    for a, t in zip(opt.averages, avg_model.module.parameters()):
        np.testing.assert_array_equal(a, t.detach().numpy())


def test_optimizer_checkpoint_with_swa_and_a_stateful_schedule(tmp_path):
    import json
    from fastopt import schedules as S

    @S.register_function(name="test_averaging.alternate")
    def alternate(t):
        return 0.9 if t % 2 else 1.0

    def run(cut=None):
        w = [np.ones(5)]
        opt = fo.SGD(w, learning_rate=S.MultiplicativeLR(alternate, base_lr=0.1),
                     use_swa=True, swa_decay=0.5, swa_start=1)
        for k in range(10):
            if k == cut:
                fo.save(tmp_path / "ck.npz", opt)
                w = [np.zeros(5)]
                opt = fo.SGD.from_config(json.loads(json.dumps(opt.get_config())), w)
                fo.load(tmp_path / "ck.npz", opt)
            opt.step([np.full(5, 0.3)])
        return w[0].tobytes(), opt.averages[0].tobytes(), opt.n_averaged, \
            opt.hyperparameters()["learning_rate"]

    assert run() == run(4) == run(7)
