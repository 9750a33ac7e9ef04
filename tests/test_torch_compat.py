"""Trajectories against torch.optim itself, for every optimizer torch has
(skipped when torch is not installed).  float64, a learning rate that changes
every step, and parameters whose grad is None on some steps (torch counts
steps per parameter)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastopt.optimizers import REGISTRY  # noqa: E402

TORCH_NAMES = {"SGD": "SGD", "Adagrad": "Adagrad", "RMSprop": "RMSprop", "Adam": "Adam",
               "AdamW": "AdamW", "Adamax": "Adamax", "Nadam": "NAdam",
               "Adadelta": "Adadelta", "RAdam": "RAdam"}

# (fastopt class, keyword arguments in fastopt's names); every hyper-parameter
# the two sides could default differently is spelled out by _torch_kwargs.
CASES = [
    ("SGD", {}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.03}),
    ("SGD", {"momentum": 0.7, "dampening": 0.4, "maximize": True}),
    ("Adagrad", {}),
    ("Adagrad", {"lr_decay": 0.1, "initial_accumulator_value": 0.2, "weight_decay": 0.05}),
    ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.9, "centered": True, "weight_decay": 0.02}),
    ("RMSprop", {"rho": 0.8, "epsilon": 1e-4, "momentum": 0.5, "maximize": True}),
    ("Adam", {}),
    ("Adam", {"amsgrad": True, "weight_decay": 0.05}),
    ("Adam", {"weight_decay": 0.05, "decoupled_weight_decay": True, "maximize": True}),
    ("AdamW", {}),
    ("AdamW", {"amsgrad": True, "weight_decay": 0.1, "beta_1": 0.8}),
    ("Adamax", {}),
    ("Adamax", {"weight_decay": 0.05, "epsilon": 1e-3}),
    ("Nadam", {}),
    ("Nadam", {"momentum_decay": 1.0, "weight_decay": 0.05}),
    ("Nadam", {"weight_decay": 0.05, "decoupled_weight_decay": True}),
    ("Adadelta", {}),
    ("Adadelta", {"rho": 0.5, "weight_decay": 0.05, "maximize": True}),
    ("RAdam", {}),
    ("RAdam", {"beta_2": 0.9, "weight_decay": 0.05}),
    ("RAdam", {"weight_decay": 0.05, "decoupled_weight_decay": True}),
]


def _torch_kwargs(name, kwargs):
    out = {}
    for key, value in kwargs.items():
        if key == "epsilon":
            out["eps"] = value
        elif key == "rho" and name == "RMSprop":
            out["alpha"] = value
        elif key in ("beta_1", "beta_2"):
            continue
        else:
            out[key] = value
    if "beta_1" in kwargs or "beta_2" in kwargs:
        cls = REGISTRY[name]
        out["betas"] = (kwargs.get("beta_1", cls._hyper["torch"]["beta_1"]),
                        kwargs.get("beta_2", cls._hyper["torch"]["beta_2"]))
    out["foreach"] = False
    return out


def lr_at(step):
    return 0.02 * (0.95 ** step) * (1.0 + 0.4 * (step % 3))


def test_every_torch_optimizer_is_compared():
    covered = {name for name, _ in CASES}
    has_torch = {n for n, cls in REGISTRY.items() if "torch" in cls._hyper}
    assert has_torch == covered == set(TORCH_NAMES)


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
    sizes = [17, 5, 300]
    w0 = [rng.standard_normal(n) for n in sizes]
    mine = [w.copy() for w in w0]
    theirs = [torch.tensor(w, requires_grad=False) for w in w0]
    opt = REGISTRY[name](mine, learning_rate=lr_at, convention="torch", **kwargs)
    topt = getattr(torch.optim, TORCH_NAMES[name])(theirs, lr=lr_at(0),
                                                   **_torch_kwargs(name, kwargs))
    for step in range(25):
        grads = [rng.standard_normal(n) * (0.5 + step % 2) for n in sizes]
        if step % 4 == 1:
            grads[1] = None
        if step % 5 == 2:
            grads[2] = None
        for group in topt.param_groups:
            group["lr"] = lr_at(step)
        for p, g in zip(theirs, grads):
            p.grad = None if g is None else torch.tensor(g)
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
    topt = getattr(torch.optim, TORCH_NAMES[name])(theirs, lr=1e-2, foreach=False)
    for _ in range(20):
        g = rng.standard_normal(4099).astype(np.float32)
        theirs[0].grad = torch.tensor(g)
        topt.step()
        opt.step([g])
    np.testing.assert_allclose(mine[0], theirs[0].numpy(), rtol=2e-5, atol=2e-6)
