"""Muon beyond the shared suites: live trajectories on matrices of every
orientation against torch.optim.Muon and Keras 3's Muon (when installed),
what the Newton-Schulz iteration's dtype changes (torch's bfloat16, Keras's
float32 norm, fastopt's float32), Keras's AdamW route on a mixed model (live,
known answers, the float64 reference, threads and SIMD variants, checkpoints)
and the refusals."""
import os

import numpy as np
import pytest

import fastopt as fo

import golden_muon
import optim_db
import reference

SHAPES = [(5, 3), (3, 7), (4, 4), (1, 6)]     # tall, wide, square, one row


def lr_at(step):
    return 0.02 * (0.95 ** step) * (1.0 + 0.4 * (step % 3))


def _problem(seed, nsteps=30):
    """Params of SHAPES and their grads; params[1] has no grad every fourth step."""
    rng = np.random.default_rng(seed)
    w0 = [rng.standard_normal(s) for s in SHAPES]
    grads = []
    for step in range(nsteps):
        g = [rng.standard_normal(s) * (0.5 + step % 2) for s in SHAPES]
        if step % 4 == 1:
            g[1] = None
        grads.append(g)
    return w0, grads


def _fastopt_run(convention, kwargs, w0, grads, dtype=np.float64):
    mine = [w.astype(dtype) for w in w0]
    opt = fo.Muon(mine, learning_rate=lr_at, convention=convention, **kwargs)
    for g in grads:
        opt.step([None if x is None else x.astype(dtype) for x in g])
    return mine


TORCH_CASES = [
    {},
    {"nesterov": False, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.05},
    {"momentum": 0.3, "ns_coefficients": (2.0, -1.5, 0.5), "ns_steps": 3, "eps": 1e-3},
]


def _torch_run(kwargs, w0, grads, float64_iteration=True):
    import contextlib

    import torch
    theirs = [torch.tensor(w) for w in w0]
    opt = torch.optim.Muon(theirs, lr=lr_at(0), **kwargs)
    context = optim_db.torch_muon_float64 if float64_iteration else contextlib.nullcontext
    for step, g in enumerate(grads):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        for p, x in zip(theirs, g):
            p.grad = None if x is None else torch.tensor(x)
        with context():
            opt.step()
    return [t.numpy() for t in theirs]


@pytest.mark.parametrize("kwargs", TORCH_CASES, ids=lambda kw: ",".join(kw) or "default")
def test_trajectory_matches_torch_on_every_orientation(kwargs):
    """30 steps, a learning rate that changes every step, a param without a
    grad some steps: to 1e-10 relative (measured: about 1e-15) against torch
    with its iteration in float64; fastopt's is the same arithmetic."""
    pytest.importorskip("torch")
    w0, grads = _problem(1)
    mine = _fastopt_run("torch", kwargs, w0, grads)
    theirs = _torch_run(kwargs, w0, grads)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"params[{i}]")


def test_torch_bfloat16_iteration_is_about_one_percent_off():
    """torch runs Newton-Schulz in bfloat16 whatever the dtype; fastopt never
    does.  One step of torch's own Muon, bf16 against float64: the updates
    differ by 1.1e-2 to 1.6e-2 (Frobenius, relative; 64x32 to 1024x512, see
    README), far beyond float32 rounding, so fastopt follows the float64 one."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w0, g = rng.standard_normal((64, 32)), rng.standard_normal((64, 32))
    steps = {}
    for float64_iteration in (False, True):
        out = _torch_run({"weight_decay": 0.0}, [w0], [[g]], float64_iteration)[0]
        steps[float64_iteration] = w0 - out
    mine = [w0.copy()]
    fo.Muon(mine, learning_rate=lr_at, weight_decay=0.0, convention="torch").step([g])
    gap = np.linalg.norm(steps[False] - steps[True]) / np.linalg.norm(steps[True])
    assert 3e-3 < gap < 5e-2, gap
    np.testing.assert_allclose(w0 - mine[0], steps[True], rtol=1e-12, atol=1e-15)
    assert torch.get_default_dtype() == torch.float32     # nothing leaked


KERAS_CASES = [
    {},
    {"nesterov": False, "rms_rate": None, "weight_decay": 0.05},
    {"momentum": 0.3, "ns_steps": 3, "muon_a": 2.0, "muon_b": -1.5, "muon_c": 0.5},
]


def _keras_run(kwargs, w0, grads, float64_norm=True):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from keras.src.backend.common import dtypes
    saved, demotion = keras.config.floatx(), dict(dtypes.BIT64_TO_BIT32_DTYPE)
    keras.config.set_floatx("float64")
    if float64_norm:
        dtypes.BIT64_TO_BIT32_DTYPE.clear()
    try:
        variables = [keras.Variable(w, dtype="float64") for w in w0]
        opt = keras.optimizers.Muon(learning_rate=lr_at(0), **kwargs)
        for step, g in enumerate(grads):
            opt.learning_rate = lr_at(step)
            opt.apply_gradients([(keras.ops.convert_to_tensor(x, dtype="float64"), v)
                                 for x, v in zip(g, variables) if x is not None])
        return [keras.ops.convert_to_numpy(v) for v in variables]
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE.update(demotion)
        keras.config.set_floatx(saved)


@pytest.mark.parametrize("kwargs", KERAS_CASES, ids=lambda kw: ",".join(kw) or "default")
def test_trajectory_matches_keras_on_every_orientation(kwargs):
    """Keras 3 on its torch backend, floatx float64, its float64 norm kept (see
    the next test): to 1e-10 relative (measured: about 2e-15)."""
    w0, grads = _problem(3)
    theirs = _keras_run(kwargs, w0, grads)
    mine = _fastopt_run("keras", kwargs, w0, grads)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"params[{i}]")


def test_keras_takes_the_norm_of_float64_in_float32():
    """Keras's ``ops.norm`` casts to ``result_type(x.dtype, float)``, which maps
    float64 to float32 (its JAX-like 64-to-32 rule): with floatx float64 its
    Muon moves by ~1e-7 relative from the float64 formulas fastopt follows."""
    w0, grads = _problem(3, nsteps=10)
    demoted = _keras_run({}, w0, grads, float64_norm=False)
    kept = _keras_run({}, w0, grads, float64_norm=True)
    gap = max(float(np.max(np.abs(a - b) / np.abs(b))) for a, b in zip(demoted, kept))
    assert 1e-10 < gap < 1e-5, gap


@pytest.mark.parametrize("convention", ["keras", "torch"])
def test_float32_iteration_is_float32_accurate(convention):
    """The iteration runs in the param's dtype: float32 params stay within
    float32's reach of the float64 reference over 30 steps."""
    w0, grads = _problem(4)
    mine = _fastopt_run(convention, {}, w0, grads, dtype=np.float32)
    opt = fo.Muon([w.copy() for w in w0], learning_rate=lr_at, convention=convention)
    ref = reference.Reference("Muon", convention, w0, lambda s: opt.hyperparameters(step=s))
    for g in grads:
        ref.step(g)
    for i, (a, b) in enumerate(zip(mine, ref.w)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"params[{i}]")


def test_state_is_the_momentum_only():
    """The Newton-Schulz matrix is scratch: no part of the state or a checkpoint."""
    w = np.ones((3, 2))
    opt = fo.Muon([w], convention="torch")
    opt.step([np.full((3, 2), 0.5)])
    assert list(opt.state[0]) == ["momentum_buffer"]
    assert [a.shape for a in opt.state_dict()["state"][0]] == [(3, 2)]


# ---- refusals: a clear message, nothing changed ------------------------------------------

def _image(opt):
    return ([p.tobytes() for p in opt.params] +
            [a.tobytes() for s in opt.state_arrays() for a in s] + [opt.iterations])


def _stepped(convention):
    rng = np.random.default_rng(5)
    params = [rng.standard_normal((4, 3)), rng.standard_normal((2, 5))]
    opt = fo.Muon(params, convention=convention, learning_rate=0.05)
    opt.step([rng.standard_normal((4, 3)), rng.standard_normal((2, 5))])
    return opt, rng


@pytest.mark.parametrize("shape", [(5,), (), (2, 3, 4)])
def test_torch_convention_refuses_params_that_are_not_matrices(shape):
    """torch.optim.Muon takes matrices only; the message names Keras's route."""
    ok, bad = np.ones((3, 2)), np.ones(shape)
    with pytest.raises(ValueError, match=rf"params\[1\]: Muon in the torch convention takes "
                                         rf"2-D params .*got shape "
                                         rf"{__import__('re').escape(str(shape))}.*"
                                         rf"convention='keras'.*AdamW"):
        fo.Muon([ok, bad], convention="torch")
    assert (ok == 1).all() and (bad == 1).all()
    opt, rng = _stepped("torch")
    before = _image(opt)
    with pytest.raises(ValueError, match=r"params\[2\]: Muon in the torch convention takes 2-D"):
        opt.add_param_group({"params": [np.ones(shape)]})
    assert _image(opt) == before and len(opt.param_groups) == 1


BAD = [
    ("torch", {"ns_coefficients": (3.4, -4.7)}, ValueError, r"ns_coefficients"),
    ("torch", {"ns_coefficients": (1.0, 2.0, 3.0, 4.0)}, ValueError, r"ns_coefficients"),
    ("torch", {"adjust_lr_fn": "spectral"}, ValueError, r"adjust_lr_fn .*'spectral'"),
    ("torch", {"ns_steps": 100}, ValueError, r"ns_steps .*\[0, 100\)"),
    ("keras", {"ns_steps": 2.5}, ValueError, r"ns_steps .*whole number"),
    ("torch", {"momentum": -0.1}, ValueError, r"momentum"),
    ("keras", {"rms_rate": -0.2}, ValueError, r"rms_rate"),
    ("torch", {"rms_rate": 0.2}, TypeError, r"rms_rate"),            # Keras's, not torch's
    ("keras", {"adjust_lr_fn": "original"}, TypeError, r"adjust_lr_fn"),   # torch's
    ("torch", {"adam_beta_1": 0.9}, TypeError, r"adam_beta_1"),      # no AdamW route
    ("torch", {"adam_weight_decay": 0.1}, TypeError, r"adam_weight_decay"),
    ("torch", {"adam_lr_ratio": 0.1}, TypeError, r"adam_lr_ratio"),
    ("keras", {"adam_beta_1": 1.0}, ValueError, r"adam_beta_1 must be in \[0, 1\)"),
    ("keras", {"adam_beta_2": -0.1}, ValueError, r"adam_beta_2"),
    ("keras", {"adam_lr_ratio": -1.0}, ValueError, r"adam_lr_ratio"),
    ("keras", {"adam_weight_decay": -0.1}, ValueError, r"adam_weight_decay"),
    ("keras", {"epsilon": -1e-3}, ValueError, r"epsilon"),
]


@pytest.mark.parametrize(("convention", "kwargs", "exc", "pattern"), BAD,
                         ids=[f"{c}-{next(iter(kw))}" for c, kw, _, _ in BAD])
def test_bad_settings_refused_and_nothing_changes(convention, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fo.Muon([np.ones((2, 2))], convention=convention, **kwargs)
    opt, rng = _stepped(convention)
    twin, _ = _stepped(convention)
    before = _image(opt)
    from fastopt.optimizer import _known_names
    for key, value in kwargs.items():
        with pytest.raises((TypeError, ValueError), match=pattern):
            opt.param_groups[0][key] = value
        if key in _known_names():       # a name some optimizer has (not Keras's own extras)
            with pytest.raises((TypeError, ValueError, AttributeError), match=key):
                setattr(opt, key, value)
    assert _image(opt) == before
    g = [rng.standard_normal((4, 3)), rng.standard_normal((2, 5))]
    opt.step(g)
    twin.step([x.copy() for x in g])
    assert _image(opt) == _image(twin)


def test_sharded_by_whole_matrices():
    """The iteration needs whole matrices: ShardedOptimizer gives each to one
    rank (tests/mpi/run_options.py checks it bit for bit)."""
    from fastopt.distributed import _inputs
    assert _inputs.whole_tensors(fo.Muon)


def test_keras_adamw_route_is_adamw_beside_muon_in_a_multioptimizer():
    """Keras's Muon sends params that are not 2-D, embeddings and exclude_layers
    to its AdamW step (lr * adam_lr_ratio, adam_beta_1/2, epsilon, decay
    adam_weight_decay * lr).  Besides Muon's own route (the tests above), a
    MultiOptimizer that routes them by name to AdamW(lr * adam_lr_ratio,
    weight_decay=adam_weight_decay / adam_lr_ratio) and the rest to Muon
    (what the torch convention's users can do) gives Keras's trajectory."""
    import functools
    names = ["dense_kernel", "dense_bias", "token_embedding", "head_kernel"]
    shapes = [(5, 3), (3,), (6, 4), (3, 2)]
    ratio, adam_wd = 0.5, 0.01
    keras_kw = {"adam_lr_ratio": ratio, "adam_weight_decay": adam_wd, "weight_decay": 0.02,
                "adam_beta_1": 0.8, "adam_beta_2": 0.99, "epsilon": 1e-6,
                "exclude_layers": ["head"]}
    rng = np.random.default_rng(6)
    w0 = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(25)]

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from keras.src.backend.common import dtypes
    saved, demotion = keras.config.floatx(), dict(dtypes.BIT64_TO_BIT32_DTYPE)
    keras.config.set_floatx("float64")
    dtypes.BIT64_TO_BIT32_DTYPE.clear()
    try:
        variables = [keras.Variable(w, dtype="float64", name=n) for w, n in zip(w0, names)]
        kopt = keras.optimizers.Muon(learning_rate=lr_at(0), **keras_kw)
        for step, g in enumerate(grads):
            kopt.learning_rate = lr_at(step)
            kopt.apply_gradients([(keras.ops.convert_to_tensor(x, dtype="float64"), v)
                                  for x, v in zip(g, variables)])
        theirs = [keras.ops.convert_to_numpy(v) for v in variables]
    finally:
        dtypes.BIT64_TO_BIT32_DTYPE.update(demotion)
        keras.config.set_floatx(saved)

    mine = [w.copy() for w in w0]
    opt = fo.MultiOptimizer(
        [{"params": mine, "names": names}],
        optimizers={
            "muon": functools.partial(fo.Muon, learning_rate=lr_at, weight_decay=0.02),
            "adamw": functools.partial(fo.AdamW, learning_rate=lambda s: lr_at(s) * ratio,
                                       weight_decay=adam_wd / ratio, beta_1=0.8, beta_2=0.99,
                                       epsilon=1e-6)},
        routes={"dense_bias": "adamw", ".*embedding.*": "adamw", "head.*": "adamw"},
        default="muon")
    for g in grads:
        opt.step(g)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=names[i])


# ---- Keras's AdamW route inside Muon --------------------------------------------------

def _mixed(w0=None, grads=None, dtype=np.float64, learning_rate=golden_muon.lr_at, **options):
    """fastopt's Muon over golden_muon's mixed model (names as Keras's paths),
    its params and its grads (in ``dtype``)."""
    if w0 is None:
        w0, grads = golden_muon.problem()
    mine = [w.astype(dtype) for w in w0]
    opt = fo.Muon([{"params": mine, "names": golden_muon.NAMES}],
                  learning_rate=learning_rate, **golden_muon.KWARGS, **options)
    opt.exclude_from_weight_decay(var_names=golden_muon.EXCLUDED)
    return opt, mine, [[None if x is None else x.astype(dtype) for x in g] for g in grads]


def _close(mine, theirs, rtol):
    for name, a, b in zip(golden_muon.NAMES, mine, theirs):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-2, err_msg=name)


MIXED_LIVE = [{}, {"global_clipnorm": 1.0}, {"clipnorm": 0.5},
              {"clipvalue": 0.3, "nesterov": False, "rms_rate": None}]


@pytest.mark.parametrize("options", MIXED_LIVE, ids=lambda kw: ",".join(kw) or "plain")
def test_adamw_route_matches_keras_live(options):
    """Keras 3's Muon on the mixed model (a bias, a 3-D kernel, a scalar, an
    embedding, an excluded layer beside two matrices): 30 steps, a learning
    rate that changes every step, both weight decays and an exclusion, with
    clipping over every grad: to 1e-10 relative (measured: about 3e-15)."""
    pytest.importorskip("keras")
    w0, grads = golden_muon.problem()
    theirs = golden_muon.run_keras(w0, grads, kwargs=dict(golden_muon.KWARGS, **options))
    opt, mine, grads = _mixed(w0, grads, **options)
    assert opt.routes == golden_muon.ROUTES
    for g in grads:
        opt.step(g)
    _close(mine, theirs, 1e-10)


def test_adamw_route_known_answers():
    """Keras's own numbers for the mixed model (tests/golden_muon.py records
    them), without Keras."""
    data = golden_muon.load()
    assert data["names"] == golden_muon.NAMES and data["kwargs"] == golden_muon.KWARGS
    assert data["excluded"] == golden_muon.EXCLUDED
    opt, mine, grads = _mixed(data["w0"], data["grads"])
    for g in grads:
        opt.step(g)
    _close(mine, data["w"], 1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adamw_route_matches_the_float64_reference(dtype):
    """Both routes against reference.KerasMuon, in both dtypes (float32 to
    float32's reach)."""
    opt, mine, grads = _mixed(dtype=dtype)
    excluded = [i for i, n in enumerate(golden_muon.NAMES)
                if any(e in n for e in golden_muon.EXCLUDED)]
    assert excluded == [1, 4]
    w0, _ = golden_muon.problem()
    ref = reference.KerasMuon(w0, opt.routes, lambda s: opt.hyperparameters(step=s), excluded)
    for g in grads:
        opt.step(g)
        ref.step(g)
    assert all(a.dtype == dtype for a in mine)
    _close(mine, ref.w, 1e-11 if dtype == np.float64 else 1e-4)


def _big_mixed(dtype):
    """The mixed model's routes at sizes that split into many chunks."""
    rng = np.random.default_rng(11)
    shapes = [(300, 70), (5000,), (7, 9, 130), (4100, 8), (1,)]
    names = ["dense_kernel", "bias", "conv", "word_embedding", "head"]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(3)]
    return params, grads, names


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_route_bit_identical_across_threads_and_simd(dtype):
    """Both routes, every SIMD variant, serial and forced splits: the same
    bits (the AdamW route runs in the elementwise pass, the Muon route's
    norm is a fixed-order reduction)."""
    from conftest import SIMD_VARIANTS
    from fastopt import _core
    params0, grads, names = _big_mixed(dtype)
    saved_simd, saved_threshold = _core.get_simd(), _core.parallel_threshold()
    runs = []
    try:
        for simd in SIMD_VARIANTS:
            for threads, threshold in [(1, 10**9), (3, 0), (4, saved_threshold)]:
                _core.set_simd(simd)
                _core.set_parallel_threshold(threshold)
                params = [p.copy() for p in params0]
                opt = fo.Muon([{"params": params, "names": names}], learning_rate=0.01,
                              adam_lr_ratio=0.3, adam_weight_decay=0.05, num_threads=threads,
                              clipvalue=1.5, exclude_layers=["^head$"])
                assert opt.routes == ["muon", "adamw", "adamw", "adamw", "adamw"]
                for g in grads:
                    opt.step(g)
                runs.append((simd, threads, [a.tobytes() for a in params] +
                             [a.tobytes() for s in opt.state_arrays() for a in s]))
    finally:
        _core.set_simd(saved_simd)
        _core.set_parallel_threshold(saved_threshold)
    for simd, threads, image in runs[1:]:
        assert image == runs[0][2], (simd, threads)


def test_routes_follow_keras_should_use_adamw():
    """Not 2-D: AdamW.  2-D: AdamW when the name holds "embedding" (any case;
    exclude_embeddings=False turns that off) or an exclude_layers pattern
    searches it; unnamed matrices take the Muon step."""
    shapes = [(3, 2), (3, 2), (3, 2), (3, 2), (2,), (3, 2)]
    names = ["dense/kernel", "Token_Embedding/embeddings", "head/kernel", "block_3/kernel",
             "dense/bias", None]
    def routes(**kw):
        params = [np.zeros(s) for s in shapes]
        groups = [{"params": params[:5], "names": names[:5]}, {"params": params[5:]}]
        return fo.Muon(groups, **kw).routes
    assert routes() == ["muon", "adamw", "muon", "muon", "adamw", "muon"]
    assert routes(exclude_embeddings=False) == ["muon", "muon", "muon", "muon", "adamw", "muon"]
    assert routes(exclude_layers=["head", r"block_\d"]) == \
        ["muon", "adamw", "adamw", "adamw", "adamw", "muon"]
    opt = fo.Muon([{"params": [np.zeros((3, 2)), np.zeros(4)], "names": ["w", "b"]}])
    assert [list(s) for s in opt.state] == [["momentum_buffer"], ["momentum_buffer", "velocity"]]
    assert [len(s) for s in opt.state_dict()["state"]] == [1, 2]     # scratch left out
    assert opt.exclude_layers == [] and opt.exclude_embeddings is True
    # a group added later is routed the same way
    opt.add_param_group({"params": [np.zeros((2, 2))], "name": "pos_embedding"})
    assert opt.routes == ["muon", "adamw", "adamw"]


def test_adamw_route_decay_follows_keras():
    """Keras decays an AdamW-route param by lr*adam_weight_decay (not by
    lr*adam_lr_ratio*adam_weight_decay), also when weight_decay is 0, and not
    at all when it is excluded; the Muon route by lr*weight_decay."""
    def one_step(**kw):
        w, b = np.ones((2, 2)), np.ones(3)
        opt = fo.Muon([{"params": [w, b], "names": ["w", "b"]}], learning_rate=0.1,
                      adam_lr_ratio=0.5, **kw)
        excluded = kw.pop("excluded", None)
        if excluded:
            opt.exclude_from_weight_decay(var_names=excluded)
        opt.step([np.zeros((2, 2)), np.zeros(3)])    # zero grads: the decay alone moves
        return w, b
    w, b = one_step(weight_decay=0.0, adam_weight_decay=0.2)
    assert (w == 1).all() and np.allclose(b, 1 - 0.1 * 0.2, rtol=1e-15)
    w, b = one_step(weight_decay=0.3, adam_weight_decay=0.0)
    assert np.allclose(w, 1 - 0.1 * 0.3, rtol=1e-15) and (b == 1).all()
    w, b = one_step(weight_decay=0.0, adam_weight_decay=None)      # Keras's None: no decay
    assert (w == 1).all() and (b == 1).all()


def test_adamw_route_decay_exclusion():
    w, b = np.ones((2, 2)), np.ones(3)
    opt = fo.Muon([{"params": [w, b], "names": ["w", "b"]}], learning_rate=0.1,
                  weight_decay=0.0, adam_weight_decay=0.2)
    opt.exclude_from_weight_decay(var_names=["b"])
    opt.step([np.zeros((2, 2)), np.zeros(3)])
    assert (w == 1).all() and (b == 1).all()
    opt.exclude_from_weight_decay()
    opt.step([np.zeros((2, 2)), np.zeros(3)])
    assert np.allclose(b, 1 - 0.1 * 0.2, rtol=1e-15)


def _image_mixed(opt, params):
    return ([p.tobytes() for p in params] + [a.tobytes() for s in opt.state_arrays() for a in s]
            + [opt.iterations])


def test_adamw_route_checkpoint_round_trip_is_bit_exact(tmp_path):
    """state_dict, fastopt.save/load, pickle and get_config/from_config: a run
    resumed at step 15 ends with the bits of one that never stopped."""
    import pickle

    from fastopt import schedules
    lr = schedules.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.7)    # moves every step
    w0, grads = golden_muon.problem()
    whole, params, grads = _mixed(w0, grads, learning_rate=lr)
    for g in grads:
        whole.step(g)
    expected = _image_mixed(whole, params)

    for how in ("state_dict", "file", "pickle", "config"):
        opt, mine, _ = _mixed(w0, grads, learning_rate=lr)
        for g in grads[:15]:
            opt.step(g)
        if how == "state_dict":
            sd = opt.state_dict()
            opt, mine, _ = _mixed([w.copy() for w in mine], grads, learning_rate=lr)
            opt.load_state_dict(sd)
        elif how == "file":
            fo.save(tmp_path / "muon.npz", opt)
            opt, mine, _ = _mixed([w.copy() for w in mine], grads, learning_rate=lr)
            fo.load(tmp_path / "muon.npz", opt)
        elif how == "pickle":
            opt = pickle.loads(pickle.dumps(opt))
            mine = opt.params
        else:
            sd = opt.state_dict()
            copies = [w.copy() for w in mine]
            cfg = opt.get_config()
            assert cfg["exclude_layers"] == ["output_dense"] and cfg["exclude_embeddings"]
            opt = fo.Muon.from_config(cfg, copies)
            opt.exclude_from_weight_decay(var_names=golden_muon.EXCLUDED)
            opt.load_state_dict(sd)
            mine = copies
        assert opt.routes == golden_muon.ROUTES, how
        for g in grads[15:]:
            opt.step(g)
        assert _image_mixed(opt, mine) == expected, how


def test_checkpoint_of_other_routes_is_refused():
    """A checkpoint whose params were routed otherwise holds other state
    arrays: refused, nothing changed."""
    w, e = np.ones((3, 2)), np.ones((4, 2))
    opt = fo.Muon([{"params": [w, e], "names": ["w", "embedding"]}])
    opt.step([np.ones((3, 2)), np.ones((4, 2))])
    other = fo.Muon([{"params": [w.copy(), e.copy()], "names": ["w", "embedding"]}],
                    exclude_embeddings=False)
    before = _image_mixed(other, other.params)
    with pytest.raises(ValueError, match=r"params\[1\]: state has 2 arrays; expected 1"):
        other.load_state_dict(opt.state_dict())
    assert _image_mixed(other, other.params) == before


ROUTE_BAD = [
    ({"exclude_layers": ["head", "dense("]}, ValueError,
     r"exclude_layers\[1\] is not a regular expression: 'dense\('"),
    ({"exclude_layers": "head"}, TypeError, r"exclude_layers must be a list .*\['head'\]"),
    ({"exclude_layers": [3]}, TypeError, r"exclude_layers\[0\] must be a string"),
    ({"exclude_embeddings": "yes"}, TypeError, r"exclude_embeddings must be a bool"),
    ({"exclude_layers": ["head"], "convention": "torch"}, TypeError,
     r"exclude_layers.*torch.optim.Muon has no AdamW route"),
    ({"exclude_embeddings": True, "convention": "torch"}, TypeError,
     r"exclude_embeddings.*torch.optim.Muon has no AdamW route"),
]


@pytest.mark.parametrize(("kwargs", "exc", "pattern"), ROUTE_BAD,
                         ids=[f"{i}-{next(iter(kw))}" for i, (kw, _, _) in enumerate(ROUTE_BAD)])
def test_bad_route_settings_refused_and_nothing_changes(kwargs, exc, pattern):
    w, b = np.ones((3, 2)), np.ones(2)
    params = [w] if kwargs.get("convention") == "torch" else [w, b]
    with pytest.raises(exc, match=pattern):
        fo.Muon([{"params": params, "names": ["head", "b"][:len(params)]}], **kwargs)
    assert (w == 1).all() and (b == 1).all()


def test_route_settings_are_fixed_at_construction():
    """They decide which state arrays each param keeps: read-only after."""
    opt = fo.Muon([np.ones((2, 2))], exclude_layers=["head"])
    for key, value in (("exclude_layers", ["x"]), ("exclude_embeddings", False)):
        with pytest.raises(AttributeError, match=rf"{key} cannot change after construction"):
            setattr(opt, key, value)
        with pytest.raises(TypeError, match=key):
            opt.param_groups[0][key] = value
    assert opt.exclude_layers == ["head"] and opt.exclude_embeddings is True


def test_route_keywords_default_as_keras():
    """exclude_layers and exclude_embeddings are keywords, not hyper-parameters
    (tests/anchor_defaults.py holds those): their defaults against Keras's
    signature."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    import inspect
    sig = inspect.signature(keras.optimizers.Muon).parameters
    assert sig["exclude_layers"].default is None and sig["exclude_embeddings"].default is True
    opt = fo.Muon([np.ones((2, 2))])
    assert opt.exclude_layers == [] and opt.exclude_embeddings is True
    extra = set(sig) - {"self", "kwargs", "name", "clipnorm", "clipvalue", "global_clipnorm",
                        "use_ema", "ema_momentum", "ema_overwrite_frequency",
                        "loss_scale_factor", "gradient_accumulation_steps"}
    missing = extra - set(fo.Muon.defaults("keras")) - {"exclude_layers", "exclude_embeddings"}
    assert not missing, f"Keras's Muon has keywords fastopt's lacks: {sorted(missing)}"
