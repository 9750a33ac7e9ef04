"""Trajectories against torch.optim itself, for every optimizer torch has
(skipped when torch is not installed).  float64, a learning rate that changes
every step, and parameters whose grad is None on some steps (torch counts
steps per parameter)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastopt.optimizers import REGISTRY  # noqa: E402

from optim_db import info, optim_db, param_shape  # noqa: E402

# (fastopt class, keyword arguments in fastopt's names): each entry's torch_cases;
# every hyper-parameter the two sides could default differently is spelled out
# by _torch_kwargs.
CASES = [(entry.name, kw) for entry in optim_db for kw in entry.torch_cases]


def _torch_kwargs(name, kwargs):
    import inspect
    # SparseAdam and Muon have one implementation, no foreach switch
    if "foreach" not in inspect.signature(_torch_class(name)).parameters:
        return info(name).torch_kwargs(kwargs)
    return dict(info(name).torch_kwargs(kwargs), foreach=False)


def _torch_class(name):
    """The anchor class; skips when its package (schedulefree) is not installed."""
    entry = info(name)
    module = pytest.importorskip(entry.torch_module)
    return getattr(module, entry.torch_name)


def _torch_grad(name, g):
    t = torch.tensor(g)
    if info(name).torch_sparse:     # every element named, zeros included
        return torch.sparse_coo_tensor(torch.arange(len(t))[None], t, t.shape)
    return t


def lr_at(step):
    return 0.02 * (0.95 ** step) * (1.0 + 0.4 * (step % 3))


def test_every_torch_optimizer_is_compared():
    covered = {name for name, _ in CASES}
    has_torch = {n for n, cls in REGISTRY.items() if "torch" in cls.conventions}
    named = {entry.name for entry in optim_db if entry.torch_name is not None}
    assert has_torch == covered == named


@pytest.fixture
def float64_default():
    # torch keeps NAdam's mu_product in the default dtype; float64 makes it exact
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


@pytest.mark.parametrize(("name", "kwargs"), CASES,
                         ids=[f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})"
                              for n, kw in CASES])
def test_trajectory_matches_torch(name, kwargs, float64_default):
    rng = np.random.default_rng(11)
    sizes = [param_shape(name, n) for n in [17, 5, 300]]
    w0 = [rng.standard_normal(n) for n in sizes]
    mine = [w.copy() for w in w0]
    theirs = [torch.tensor(w, requires_grad=False) for w in w0]
    opt = REGISTRY[name](mine, learning_rate=lr_at, convention="torch", **kwargs)
    topt = _torch_class(name)(theirs, lr=lr_at(0), **_torch_kwargs(name, kwargs))
    if hasattr(topt, "train"):
        topt.train()        # schedulefree's optimizers start in eval mode
    for step in range(25):
        grads = [rng.standard_normal(n) * (0.5 + step % 2) for n in sizes]
        if step % 4 == 1:
            grads[1] = None
        if step % 5 == 2:
            grads[2] = None
        for group in topt.param_groups:
            group["lr"] = lr_at(step)
        for p, g in zip(theirs, grads):
            p.grad = None if g is None else _torch_grad(name, g)
        with info(name).torch_context():
            topt.step()
        opt.step(grads)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"params[{i}]")


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "Nadam"])
def test_float32_trajectory_close_to_torch(name):
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(4099).astype(np.float32)
    mine = [w0.copy()]
    theirs = [torch.tensor(w0)]
    opt = REGISTRY[name](mine, learning_rate=1e-2, convention="torch")
    topt = getattr(torch.optim, info(name).torch_name)(theirs, lr=1e-2, foreach=False)
    for _ in range(20):
        g = rng.standard_normal(4099).astype(np.float32)
        theirs[0].grad = torch.tensor(g)
        topt.step()
        opt.step([g])
    np.testing.assert_allclose(mine[0], theirs[0].numpy(), rtol=2e-5, atol=2e-6)
