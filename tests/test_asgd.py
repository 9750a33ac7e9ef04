"""ASGD's averaged parameters: against torch.optim.ASGD's ``ax`` (when torch
is installed), the float64 reference, and how they are exposed and resumed."""
import numpy as np
import pytest

import fastopt as fo

import reference


def lr_at(step):
    return 0.05 * (0.9 ** step) * (1.0 + 0.4 * (step % 3))


def _problem(seed=5, sizes=(17, 4, 300), nsteps=30):
    rng = np.random.default_rng(seed)
    w0 = [rng.standard_normal(n) for n in sizes]
    grads = []
    for s in range(nsteps):
        g = [rng.standard_normal(n) * (0.5 + s % 2) for n in sizes]
        if s % 4 == 1:
            g[1] = None
        grads.append(g)
    return w0, grads


KW = {"lambd": 0.02, "alpha": 0.6, "t0": 4.0, "weight_decay": 0.03}


def test_averages_match_torch():
    torch = pytest.importorskip("torch")
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)     # torch keeps eta and mu in the default dtype
    try:
        w0, grads = _problem()
        mine = [w.copy() for w in w0]
        theirs = [torch.tensor(w) for w in w0]
        opt = fo.ASGD(mine, learning_rate=lr_at, **KW)
        topt = torch.optim.ASGD(theirs, lr=lr_at(0), foreach=False, **KW)
        for step, g in enumerate(grads):
            topt.param_groups[0]["lr"] = lr_at(step)
            for p, gi in zip(theirs, g):
                p.grad = None if gi is None else torch.tensor(gi)
            topt.step()
            opt.step(g)
        for i, (p, t) in enumerate(zip(mine, theirs)):
            st = topt.state[t]
            np.testing.assert_allclose(p, t.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(opt.averaged_params[i], st["ax"].numpy(), rtol=1e-10,
                                       atol=1e-12, err_msg=f"ax {i}")
            assert opt._stepper.get_aux()[i] == pytest.approx(st["eta"].item(), rel=1e-12)
    finally:
        torch.set_default_dtype(saved)


def test_averages_match_the_reference_and_are_live():
    w0, grads = _problem(nsteps=12)
    params = [w.copy() for w in w0]
    opt = fo.ASGD(params, learning_rate=lr_at, **KW)
    ref = reference.Reference("ASGD", "torch", w0, lambda s: opt.hyperparameters(step=s))
    for g in grads:
        ref.step(g)
        opt.step(g)
    avg = opt.averaged_params
    for i, (a, st) in enumerate(zip(avg, ref.state)):
        np.testing.assert_allclose(a, st["ax"], rtol=1e-12, atol=1e-14, err_msg=f"ax {i}")
        assert a is opt.state[i]["ax"]          # live: the state array itself
    before = [a.copy() for a in avg]
    opt.use_averaged_params()
    for p, a in zip(params, before):
        assert np.array_equal(p, a)


def test_use_averaged_params_leaves_params_not_stepped_yet():
    w, b = np.ones(3), np.full(2, 5.0)
    opt = fo.ASGD([w, b], learning_rate=0.1, t0=0.0)
    opt.step([np.ones(3), None])
    opt.use_averaged_params()
    assert np.array_equal(b, [5.0, 5.0])        # no average yet (torch: zeros)
    assert np.array_equal(w, opt.averaged_params[0])


def test_checkpoint_resumes_the_step_size_exactly(tmp_path):
    w0, grads = _problem(nsteps=20)
    a = [w.copy() for w in w0]
    lr = fo.schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.7)
    opt = fo.ASGD(a, learning_rate=lr, **KW)
    for g in grads[:9]:
        opt.step(g)
    fo.save(tmp_path / "asgd.npz", opt)
    b = [w.copy() for w in a]
    twin = fo.ASGD(b, learning_rate=lr, **KW)
    fo.load(tmp_path / "asgd.npz", twin)
    for g in grads[9:]:
        opt.step(g)
        twin.step(g)
    for x, y in zip(a + opt.averaged_params, b + twin.averaged_params):
        assert x.tobytes() == y.tobytes()


def test_keras_convention_does_not_exist():
    with pytest.raises(ValueError, match="ASGD exists in torch.optim only"):
        fo.ASGD([np.zeros(2)], convention="keras")
