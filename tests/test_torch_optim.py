"""fastopt.torch: fastopt's kernels behind torch.optim's interface, checked
live against torch.optim (skipped when torch is not installed; what runs
without torch is in test_torch_layer.py)."""
import copy
import inspect
import io
import subprocess
import sys

import numpy as np
import pytest

from optim_db import info, optim_db, param_shape

# torch.optim classes fastopt has but fastopt.torch does not wrap; the test
# below fails when this list and the module disagree
NOT_WRAPPED = set()
ANCHORED = [e for e in optim_db if e.torch_name is not None and e.torch_module == "torch.optim"]
TORCH_ENTRIES = [e for e in ANCHORED if e.torch_name not in NOT_WRAPPED]
CASES = [(e.name, kw) for e in TORCH_ENTRIES for kw in e.torch_cases]
CASE_IDS = [f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in CASES]

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastopt.torch")   # noqa: E402


@pytest.fixture
def float64_default():
    # torch keeps NAdam's mu_product and the step counts in the default dtype
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


class _Embeddings(torch.nn.Module):
    """Two embedding tables with sparse grads (rows repeat within a batch;
    some rows get no grad in a step): the model of the sparse optimizers."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Embedding(11, 3, sparse=True)
        self.b = torch.nn.Embedding(5, 3, sparse=True)

    def forward(self, x):
        idx = (x.abs() * 7).long() % 11
        return self.a(idx).sum(1) + self.b(idx[:, :2] % 5).mean(1)


def _single_tensor(tname, params, tkw):
    """torch.optim's class on its single-tensor (for-loop) path."""
    cls = getattr(torch.optim, tname)
    extra = {"foreach": False} if "foreach" in inspect.signature(cls.__init__).parameters else {}
    return cls(params, **tkw, **extra)


def _pair(name, kwargs, dtype=torch.float64, seed=0, model=None, torch_names=False):
    """The same small model twice: one for fastopt.torch, one for torch.optim."""
    torch.manual_seed(seed)
    if model is None and info(name).torch_sparse:
        model = _Embeddings
    # an optimizer of matrices only (Muon, optim_db.param_shape) gets a model without biases
    bias = param_shape(name, 3) == (3,)
    m = model() if model else torch.nn.Sequential(
        torch.nn.Linear(7, 13, bias=bias), torch.nn.Tanh(), torch.nn.Linear(13, 3, bias=bias))
    m = m.to(dtype)
    m2 = copy.deepcopy(m)
    tname = info(name).torch_name
    tkw = dict(kwargs) if torch_names else info(name).torch_kwargs(kwargs)
    return m, getattr(ft, tname)(m.parameters(), **tkw), m2, tkw


def _loss(m, k, dtype):
    g = torch.Generator().manual_seed(100 + k)
    x = torch.randn(16, 7, generator=g, dtype=dtype)
    y = torch.randn(16, 3, generator=g, dtype=dtype)
    return ((m(x) - y) ** 2).mean()


def _steps(pairs, n, dtype, skip=None):
    for k in range(n):
        for m, opt, sched in pairs:
            opt.zero_grad()
            _loss(m, k, dtype).backward()
            if skip and k % skip == 1:
                list(m.parameters())[1].grad = None    # a param without a grad this step
            opt.step()
            if sched is not None:
                sched.step()


def _assert_params(m, m2, rtol, atol=0.0):
    for i, (a, b) in enumerate(zip(m.parameters(), m2.parameters())):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=rtol,
                                   atol=atol, err_msg=f"param {i}")


def test_every_torch_optimizer_has_a_drop_in():
    wrapped = {e.torch_name for e in ANCHORED} & set(ft.__all__)
    assert {e.torch_name for e in ANCHORED} - wrapped == NOT_WRAPPED


@pytest.mark.parametrize("entry", TORCH_ENTRIES, ids=lambda e: e.name)
def test_signature_defaults_and_groups_are_torchs(entry):
    mine, theirs = getattr(ft, entry.torch_name), getattr(torch.optim, entry.torch_name)
    assert inspect.signature(mine.__init__) == inspect.signature(theirs.__init__)
    shape = param_shape(entry.name, 3)
    w = torch.nn.Parameter(torch.zeros(shape))
    a, b = mine([w]), theirs([torch.nn.Parameter(torch.zeros(shape))])
    assert isinstance(a, torch.optim.Optimizer)
    assert a.defaults == b.defaults
    assert {k: v for k, v in a.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in b.param_groups[0].items() if k != "params"}
    # fastopt's own torch-convention defaults are torch's: a group given torch's
    # defaults (under torch's names, aliases and pairs) equals a group given none
    hp, opts = mine._spec.translate(b.defaults, "")
    given = entry.cls([{"params": [np.zeros(shape)], **hp}], convention="torch", **opts)
    own = entry.cls([np.zeros(shape)], convention="torch")
    assert {k: v for k, v in given.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in own.param_groups[0].items() if k != "params"}


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_float64_trajectory_equals_torch(name, kwargs, float64_default):
    m, opt, m2, tkw = _pair(name, kwargs)
    topt = _single_tensor(info(name).torch_name, m2.parameters(), tkw)
    with info(name).torch_context():
        _steps([(m, opt, None), (m2, topt, None)], 12, torch.float64, skip=4)
    _assert_params(m, m2, rtol=1e-12, atol=1e-15)
    # the state as torch keeps it
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert [dict(g, foreach=None) for g in sd["param_groups"]] == \
        [dict(g, foreach=None) for g in tsd["param_groups"]]
    assert sd["state"].keys() == tsd["state"].keys()
    for i, st in tsd["state"].items():
        assert list(sd["state"][i]) == list(st), i
        for key, value in st.items():
            assert type(sd["state"][i][key]) is type(value), (i, key)
            if not isinstance(value, torch.Tensor):
                assert sd["state"][i][key] == value, (i, key)
            else:
                assert sd["state"][i][key].dtype == value.dtype, (i, key)
                np.testing.assert_allclose(sd["state"][i][key].numpy(), value.numpy(),
                                           rtol=1e-12, atol=1e-15, err_msg=f"{i} {key}")


# Options the optim_db cases leave out, in torch's own keyword names.
EXTRA_CASES = [
    ("Rprop", {"etas": (0.4, 1.3), "step_sizes": (1e-4, 0.05), "maximize": True}),
    ("Adamax", {"maximize": True, "betas": (0.8, 0.99)}),
    ("Adagrad", {"maximize": True, "eps": 1e-3}),
    ("RAdam", {"maximize": True, "eps": 1e-4}),
    ("Nadam", {"maximize": True, "betas": (0.95, 0.9)}),
    ("Adadelta", {"eps": 1e-3, "lr": 0.5}),
    ("SGD", {"momentum": 0.8, "nesterov": True, "maximize": True}),
    ("AdamW", {"maximize": True, "eps": 1e-3, "weight_decay": 0.2}),
    ("RMSprop", {"centered": True, "alpha": 0.9}),
]


@pytest.mark.parametrize(("name", "tkw"), EXTRA_CASES,
                         ids=[f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})"
                              for n, kw in EXTRA_CASES])
def test_float64_trajectory_equals_torch_more_options(name, tkw, float64_default):
    m, opt, m2, tkw = _pair(name, tkw, torch_names=True)
    topt = getattr(torch.optim, info(name).torch_name)(m2.parameters(), **tkw, foreach=False)
    _steps([(m, opt, None), (m2, topt, None)], 12, torch.float64, skip=3)
    _assert_params(m, m2, rtol=1e-12, atol=1e-15)


def test_deepcopy_and_pickle_keep_the_state(float64_default):
    import pickle
    m, opt, _, _ = _pair("RMSprop", {"momentum": 0.9, "centered": True})
    _steps([(m, opt, None)], 3, torch.float64)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        a, b = opt.state_dict(), clone.state_dict()
        assert a["param_groups"] == b["param_groups"]
        for i, st in a["state"].items():
            for k, v in st.items():
                assert torch.equal(b["state"][i][k], v)
    # the copy steps its own arrays, not the original's
    m2 = copy.deepcopy(m)
    opt2 = ft.RMSprop(m2.parameters(), lr=0.01, momentum=0.9, centered=True)
    opt2.load_state_dict(copy.deepcopy(opt).state_dict())
    _steps([(m, opt, None), (m2, opt2, None)], 2, torch.float64)
    _assert_params(m, m2, rtol=0, atol=0)


def _fused_or_foreach(tname):
    """torch's fused or foreach implementation where the class has the switch
    (Muon and SparseAdam have one implementation)."""
    params = inspect.signature(getattr(torch.optim, tname).__init__).parameters
    if "fused" in params and tname in ("Adam", "AdamW", "SGD", "Adagrad"):
        return {"fused": True}
    return {"foreach": True} if "foreach" in params else {}


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=CASE_IDS)
def test_float32_trajectory_equals_torch_to_rounding(name, kwargs):
    m, opt, m2, tkw = _pair(name, kwargs, dtype=torch.float32)
    tname = info(name).torch_name
    topt = getattr(torch.optim, tname)(m2.parameters(), **tkw, **_fused_or_foreach(tname))
    with info(name).torch_context():
        _steps([(m, opt, None), (m2, topt, None)], 10, torch.float32)
    _assert_params(m, m2, rtol=2e-5, atol=2e-6)


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.05, total_steps=15, cycle_momentum=True),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)),
    "CosineAnnealingWarmRestarts": lambda o: (
        torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=4)),
}


@pytest.mark.parametrize("sched", sorted(SCHEDULERS))
@pytest.mark.parametrize(("name", "kwargs"), [("Adam", {}), ("SGD", {"momentum": 0.9}),
                                              ("RMSprop", {"momentum": 0.5})])
def test_lr_schedulers_drive_it_as_torch(sched, name, kwargs, float64_default):
    m, opt, m2, tkw = _pair(name, kwargs)
    topt = getattr(torch.optim, info(name).torch_name)(m2.parameters(), **tkw, foreach=False)
    make = SCHEDULERS[sched]
    _steps([(m, opt, make(opt)), (m2, topt, make(topt))], 15, torch.float64)
    _assert_params(m, m2, rtol=1e-12, atol=1e-15)
    if sched == "OneCycleLR":     # momentum (or beta_1) was cycled, not only lr
        key = "betas" if name == "Adam" else "momentum"
        assert opt.param_groups[0][key] == topt.param_groups[0][key]


def test_reduce_lr_on_plateau_and_hyper_parameter_edits(float64_default):
    m, opt, m2, tkw = _pair("Adam", {"weight_decay": 0.01})
    topt = torch.optim.Adam(m2.parameters(), **tkw, foreach=False)
    scheds = [torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5)
              for o in (opt, topt)]
    for k in range(12):
        for mm, o, s in ((m, opt, scheds[0]), (m2, topt, scheds[1])):
            o.zero_grad()
            loss = _loss(mm, k % 2, torch.float64)
            loss.backward()
            o.step()
            s.step(1.0 if k < 3 else float(k))      # a plateau from step 3 on
            if k == 6:     # edits of every kind, by hand
                o.param_groups[0]["betas"] = (0.8, 0.99)
                o.param_groups[0]["weight_decay"] = 0.1
                o.param_groups[0]["eps"] = 1e-6
                o.param_groups[0]["maximize"] = k > 9
    assert opt.param_groups[0]["lr"] < 1e-3
    _assert_params(m, m2, rtol=1e-12, atol=1e-15)


def test_amsgrad_switched_on_keeps_the_state(float64_default):
    m, opt, m2, _ = _pair("Adam", {})
    topt = torch.optim.Adam(m2.parameters(), foreach=False)
    _steps([(m, opt, None), (m2, topt, None)], 3, torch.float64)
    for o in (opt, topt):
        o.param_groups[0]["amsgrad"] = True
        for p in o.param_groups[0]["params"]:     # torch needs the array made by hand
            if "max_exp_avg_sq" not in o.state[p]:
                o.state[p]["max_exp_avg_sq"] = torch.zeros_like(p)
    _steps([(m, opt, None), (m2, topt, None)], 3, torch.float64)
    _assert_params(m, m2, rtol=1e-12, atol=1e-15)


# state torch keeps otherwise than as param-shaped arrays: ASGD's per-param
# eta and mu, Adafactor's factored (r, 1) and (1, c) rows and columns
ROUND_TRIPS = [("AdamW", {"amsgrad": True}), ("ASGD", {"t0": 2.0, "lambd": 0.05}),
               ("Adafactor", {"weight_decay": 0.05}), ("SparseAdam", {"betas": (0.8, 0.99)})]


@pytest.mark.parametrize(("name", "tkw"), ROUND_TRIPS, ids=[n for n, _ in ROUND_TRIPS])
def test_state_dict_round_trips_through_torch_and_torch_load(name, tkw, float64_default):
    m, opt, m2, _ = _pair(name, tkw, torch_names=True)
    _steps([(m, opt, None)], 4, torch.float64)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    # fastopt -> torch.optim: continues as fastopt does
    m2.load_state_dict(m.state_dict())
    topt = _single_tensor(name, m2.parameters(), tkw)
    topt.load_state_dict(sd)
    _steps([(m, opt, None), (m2, topt, None)], 3, torch.float64)
    _assert_params(m, m2, rtol=1e-12, atol=1e-15)
    # torch.optim -> a fresh fastopt.torch optimizer: continues as torch does
    m3 = copy.deepcopy(m2)
    opt3 = getattr(ft, name)(m3.parameters(), **tkw)
    opt3.load_state_dict(copy.deepcopy(topt.state_dict()))
    assert int(opt3.state[list(m3.parameters())[0]]["step"]) == 7
    _steps([(m3, opt3, None), (m2, topt, None)], 3, torch.float64)
    _assert_params(m3, m2, rtol=1e-12, atol=1e-15)
    for i, st in topt.state_dict()["state"].items():
        mine = opt3.state_dict()["state"][i]
        assert list(mine) == list(st)
        for key, value in st.items():
            assert type(mine[key]) is type(value), (i, key)    # SparseAdam's step: an int
            if not isinstance(value, torch.Tensor):
                assert mine[key] == value, (i, key)
                continue
            assert mine[key].shape == value.shape, (i, key)
            np.testing.assert_allclose(mine[key].numpy(), value.numpy(), rtol=1e-12,
                                       atol=1e-15, err_msg=f"{i} {key}")


def test_factored_state_of_another_shape_is_refused(float64_default):
    m, opt, _, _ = _pair("Adafactor", {}, torch_names=True)
    _steps([(m, opt, None)], 2, torch.float64)
    bad = copy.deepcopy(opt.state_dict())
    bad["state"][0]["row_var"] = bad["state"][0]["row_var"].reshape(-1)   # (13,), not (13, 1)
    with pytest.raises(ValueError, match=r"params\[0\]: 'row_var' must be a tensor of shape "
                                         r"\(13, 1\); got \(13,\)"):
        opt.load_state_dict(bad)


def test_load_state_dict_refused_leaves_it_as_it_was(float64_default):
    m, opt, _, _ = _pair("Adam", {})
    _steps([(m, opt, None)], 2, torch.float64)
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(before)
    bad["state"][0]["exp_avg"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"param group 0: state of params\[0\]: 'exp_avg'"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    for i, st in before["state"].items():
        for k, v in st.items():
            assert torch.equal(after["state"][i][k], v)
    _steps([(m, opt, None)], 1, torch.float64)      # and it still steps
    assert opt.state_dict()["state"][0]["step"].item() == 3


def test_rebinds_when_params_move_and_skips_params_without_grad():
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 3)
    opt = ft.Adam(m.parameters(), lr=0.1)
    _steps([(torch.nn.Sequential(m, torch.nn.Linear(3, 3)), opt, None)], 0, torch.float32)
    x = torch.randn(8, 4)
    m(x).sum().backward()
    opt.step()
    st = opt.state[m.weight]
    assert st["step"].item() == 1
    # grads set to None: nothing moves, the count stays
    opt.zero_grad()
    w = m.weight.detach().clone()
    opt.step()
    assert torch.equal(m.weight, w) and opt.state[m.weight]["step"].item() == 1
    # model.double(): new memory and dtype; the state follows, cast
    m.double()
    m(x.double()).sum().backward()
    opt.step()
    assert opt.state[m.weight]["exp_avg"].dtype == torch.float64
    assert opt.state[m.weight]["step"].item() == 2
    assert not torch.equal(m.weight.detach().float(), w)
    # a param re-assigned in the group: the new tensor is the one updated
    new = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt.param_groups[0]["params"][1] = new
    new.grad = torch.ones(3, dtype=torch.float64)
    m.weight.grad = None
    opt.step()
    np.testing.assert_allclose(new.detach().numpy(), -0.1 / (1 + 1e-8), rtol=1e-12)


def test_set_to_none_false_and_closure_and_hooks():
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 1)
    opt = ft.SGD(m.parameters(), lr=0.1, momentum=0.9)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    x = torch.randn(8, 4)

    def closure():
        opt.zero_grad(set_to_none=False)
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(5)]
    assert calls == ["pre", "post"] * 5
    assert losses[-1] < losses[0]
    assert opt.state[m.weight]["momentum_buffer"].shape == m.weight.shape


def _hook_log(make):
    """The calls of global and per-optimizer step hooks around a step of the
    optimizer ``make`` builds, as (hook, optimizer class, args, kwargs)."""
    from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                       register_optimizer_step_pre_hook)
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    opt = make(m.parameters())
    log = []

    def rec(tag):
        return lambda o, a, k: log.append((tag, type(o).__name__, len(a), sorted(k)))

    handles = [register_optimizer_step_pre_hook(rec("global pre")),
               opt.register_step_pre_hook(rec("pre")),
               opt.register_step_post_hook(rec("post")),
               register_optimizer_step_post_hook(rec("global post"))]
    try:
        m(torch.ones(2, 3)).sum().backward()
        opt.step(closure=None)
        opt.step()
    finally:
        for h in handles:
            h.remove()
    return log, m.weight.detach().clone()


def test_step_hooks_run_as_torch_runs_them():
    """Global and per-optimizer pre/post hooks see the same calls, in the same
    order and with the same arguments, as around torch.optim's step."""
    ours, w_ours = _hook_log(lambda ps: ft.SGD(ps, lr=0.1))
    theirs, w_theirs = _hook_log(lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert [c[0] for c in ours] == ["global pre", "pre", "post", "global post"] * 2
    assert ours == theirs
    torch.testing.assert_close(w_ours, w_theirs, rtol=0, atol=0)


def test_step_pre_hook_may_replace_the_arguments():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    opt = ft.Adam(m.parameters(), lr=0.1)
    before = m.weight.detach().clone()
    losses = []

    def closure():
        opt.zero_grad()
        loss = m(torch.ones(2, 3)).sum()
        loss.backward()
        losses.append(loss)
        return loss

    opt.register_step_pre_hook(lambda o, a, k: (a, {"closure": closure}))
    loss = opt.step()
    assert len(losses) == 1 and loss is losses[0]
    assert not torch.equal(m.weight.detach(), before)


def test_step_pre_hook_bad_return_is_refused_and_changes_nothing():
    m = torch.nn.Linear(3, 1)
    opt = ft.Adam(m.parameters(), lr=0.1)
    m(torch.ones(2, 3)).sum().backward()
    before = [p.detach().clone() for p in m.parameters()]
    opt.register_step_pre_hook(lambda o, a, k: "no")
    with pytest.raises(RuntimeError, match="must return None or a tuple of"):
        opt.step()
    for p, b in zip(m.parameters(), before):
        assert torch.equal(p.detach(), b)
    assert not opt.state


def test_step_is_labelled_for_the_profiler_as_torch_labels_it():
    """Under the profiler, the step records torch's label for it; torch's own
    wrapper does not wrap the class again (its mark is set)."""
    m = torch.nn.Linear(3, 1)
    opt = ft.AdamW(m.parameters(), lr=0.1)
    m(torch.ones(2, 3)).sum().backward()
    assert getattr(type(opt).step, "hooked", False)
    assert not hasattr(type(opt).step.__wrapped__, "__wrapped__")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = [e.name for e in prof.events()]
    assert names.count("Optimizer.step#AdamW.step") == 1
    opt.step()      # the profiler is off again: the step runs without the label


def test_add_param_group_and_per_group_options(float64_default):
    torch.manual_seed(0)
    a, b = (torch.nn.Linear(5, 5) for _ in range(2))
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    opt = ft.Adam(a.parameters(), lr=1e-2)
    topt = torch.optim.Adam(a2.parameters(), lr=1e-2, foreach=False)
    for o, mod in ((opt, b), (topt, b2)):
        o.add_param_group({"params": mod.parameters(), "lr": 3e-2, "maximize": True,
                           "weight_decay": 0.1, "decoupled_weight_decay": True})
    x = torch.randn(6, 5)
    for _ in range(4):
        for o, (p, q) in ((opt, (a, b)), (topt, (a2, b2))):
            o.zero_grad()
            q(torch.tanh(p(x))).pow(2).mean().backward()
            o.step()
    for u, v in ((a, a2), (b, b2)):
        _assert_params(u, v, rtol=1e-12, atol=1e-15)


def _bad_param(kind):
    if kind == "non-contiguous":
        return torch.nn.Parameter(torch.zeros(4, 3).t())
    if kind == "float16":
        return torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))
    return torch.nn.Parameter(torch.zeros(3, device="meta"))   # stands for a GPU tensor


@pytest.mark.parametrize(("kind", "match"), [
    ("non-contiguous", r"param group 1, params\[0\] \(shape \(3, 4\).*not contiguous"),
    ("float16", r"param group 1, params\[0\] .*float32 or float64"),
    ("device", r"param group 1, params\[0\] .*device meta.*CPU tensors"),
])
def test_bad_params_are_refused_with_their_place(kind, match):
    ok = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises((ValueError, TypeError), match=match):
        ft.AdamW([{"params": [ok]}, {"params": [_bad_param(kind)]}])


def test_bad_grads_are_refused_and_change_nothing():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    lin = torch.nn.Linear(3, 2)
    opt = ft.Adam(list(lin.parameters()) + list(emb.parameters()))
    lin(emb(torch.tensor([1, 2]))).sum().backward()
    w = lin.weight.detach().clone()
    with pytest.raises(ValueError, match=r"param group 0, params\[2\] \(shape \(10, 3\).*sparse"):
        opt.step()
    assert torch.equal(lin.weight, w) and not opt.state
    emb.weight.grad = None
    lin.weight.grad = torch.zeros(3, 2).t()
    with pytest.raises(ValueError, match=r"params\[0\] \(shape \(2, 3\).*not contiguous"):
        opt.step()
    assert torch.equal(lin.weight, w) and not opt.state


def test_bad_hyper_parameters_name_the_group():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        ft.SGD([p], lr=-1.0)
    opt = ft.Adam([p])
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    opt.param_groups[1]["betas"] = (0.9, 1.5)
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="param group 1: beta_2 must be in"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(2))


@pytest.mark.parametrize("key", ["differentiable", "capturable"])
def test_settings_that_would_do_nothing_are_refused(key):
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=rf"param group 0: {key}=True asks for .* leave it "
                                         rf"False .* or use torch.optim.Adam$"):
        ft.Adam([p], **{key: True})
    opt = ft.Adam([p], foreach=True, fused=True)       # implementation choices: no effect
    opt.param_groups[0][key] = True
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match=rf"param group 0: {key}=True"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(2))
    opt.param_groups[0][key] = False
    opt.step()
    assert not torch.equal(p.detach(), torch.zeros(2))


def test_sparse_adam_refuses_what_torch_refuses_and_changes_nothing():
    torch.manual_seed(0)
    emb, lin = torch.nn.Embedding(6, 2, sparse=True), torch.nn.Linear(2, 1)
    opt = ft.SparseAdam([{"params": [emb.weight]}, {"params": list(lin.parameters())}])
    before = [p.detach().clone() for p in (emb.weight, *lin.parameters())]
    lin(emb(torch.tensor([1, 4, 1]))).sum().backward()
    # group 1's dense grads are refused before group 0 is stepped
    with pytest.raises(RuntimeError, match=r"param group 1, params\[0\] .*SparseAdam does not "
                                           r"support dense gradients"):
        opt.step()
    for a, b in zip(before, (emb.weight, *lin.parameters())):
        assert torch.equal(a, b.detach())
    vec = torch.nn.Parameter(torch.zeros(4))
    opt = ft.SparseAdam([vec])
    vec.grad = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.ones(2), (4,),
                                      check_invariants=True)
    with pytest.raises(ValueError, match=r"params\[0\] \(shape \(4,\).*whole rows of a 2-D"):
        opt.step()
    assert torch.equal(vec.detach(), torch.zeros(4))


def test_grad_scaler_skips_inf_steps_as_with_torch(float64_default):
    m, opt, m2, _ = _pair("AdamW", {})
    topt = torch.optim.AdamW(m2.parameters(), foreach=False)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 8) for _ in range(2)]
    for k in range(6):
        for mm, o, sc in ((m, opt, scalers[0]), (m2, topt, scalers[1])):
            o.zero_grad()
            sc.scale(_loss(mm, k, torch.float64)).backward()
            if k == 2:
                next(mm.parameters()).grad[0, 0] = float("inf")
            sc.step(o)
            sc.update()
    _assert_params(m, m2, rtol=1e-12, atol=1e-15)
    assert opt.state_dict()["state"][0]["step"].item() == 5


def test_bench_smoke_runs_and_the_loss_curves_agree():
    """bench/torch_models.py --smoke: the tables, and fastopt's loss curves
    equal torch fused's to float32 rounding (no speed is asserted)."""
    import os
    import re
    from pathlib import Path
    bench = Path(__file__).resolve().parents[1] / "bench" / "torch_models.py"
    if not bench.exists():
        pytest.skip("bench/ is not in this checkout")
    r = subprocess.run([sys.executable, str(bench), "--smoke", "--threads", "1"],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "| fastopt.torch.AdamW |" in r.stdout and "small CNN" in r.stdout
    worst = float(re.search(r"loss curves: (\S+)", r.stdout).group(1))
    assert worst < 1e-5


def test_binds_once_while_grads_are_new_tensors_each_step(monkeypatch):
    torch.manual_seed(0)
    m = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
    opt = ft.Adam(m.parameters())
    binds = []
    real = ft._TorchOptimizer._bind
    monkeypatch.setattr(ft._TorchOptimizer, "_bind", lambda self, gi: (binds.append(gi),
                                                                       real(self, gi)))
    x = torch.randn(2, 4)
    for k in range(4):
        opt.zero_grad()                      # set_to_none: backward makes new grads
        m(x).sum().backward()
        opt.step()
        opt.param_groups[0]["lr"] = 1e-3 * (k + 2)      # an edit is not a binding
    assert binds == []
    m.float()                                 # same dtype and memory: still bound
    opt.step()
    assert binds == []
    m.double()
    m(x.double()).sum().backward()
    opt.step()
    assert binds == [0]


@pytest.mark.parametrize("make", [ft.SGD, torch.optim.SGD], ids=["fastopt", "torch"])
def test_autograd_sees_the_in_place_update(make):
    """A graph that saved a parameter refuses a backward after the step, as
    with torch's own optimizers (the version counter moves)."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = make([w], lr=0.1)
    loss = (w * w).sum()           # saves w for backward
    loss.backward(retain_graph=True)
    v = w._version
    opt.step()
    assert w._version > v
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---- the C++ binder (fastopt/_torch_binder.cpp) ------------------------------------

def _require_binder():
    """The compiled binder, or a skip (a failure where CI installs it)."""
    import os
    how = ft.binder()
    if how != "C++":
        assert os.environ.get("FASTOPT_REQUIRE_TORCH_BINDER") != "1", how
        pytest.skip(f"no compiled binder here ({how})")


def _python_binding(opt):
    for b in opt._bound:
        b.binder = None


def test_binder_steps_bit_for_bit_as_the_python_path():
    _require_binder()
    runs = []
    for python in (False, True):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        extra = torch.nn.Parameter(torch.randn(3))
        opt = ft.AdamW([{"params": list(m.parameters())},
                        {"params": [extra], "lr": 0.01, "weight_decay": 0.0}],
                       lr=0.05, weight_decay=0.1)
        if python:
            _python_binding(opt)
        assert all((b.binder is None) == python for b in opt._bound)
        x = torch.randn(16, 5)
        for k in range(6):
            opt.zero_grad()
            (m(x).pow(2).sum() + (extra * m(x)).sum()).backward()
            if k == 2:
                m[0].bias.grad = None            # a param without a grad: left as it is
            if k == 4:
                extra.grad = None                # a group without any grad
            opt.step()
        params = [p.detach().clone() for p in list(m.parameters()) + [extra]]
        versions = [p._version for p in list(m.parameters()) + [extra]]
        runs.append((params, versions, opt.state_dict()))
    (pa, va, sa), (pb, vb, sb) = runs
    assert all(torch.equal(a, b) for a, b in zip(pa, pb))
    assert va == vb
    for i, st in sa["state"].items():
        assert st.keys() == sb["state"][i].keys()
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb["state"][i][key])), (i, key)


def test_binder_lets_the_grads_go_after_a_step_and_after_a_refusal():
    import gc
    import weakref
    _require_binder()
    a, c = torch.nn.Parameter(torch.ones(6)), torch.nn.Parameter(torch.ones(2, 3))
    opt = ft.SGD([{"params": [a]}, {"params": [c]}], lr=0.1)
    ga = torch.full((6,), 0.5)
    a.grad, ref = ga, weakref.ref(ga)
    opt.step()
    assert torch.allclose(a.detach(), torch.full((6,), 0.95))
    a.grad = None
    del ga
    gc.collect()
    assert ref() is None
    # group 0 is gathered by the binder, then group 1's grad is refused
    ga = torch.full((6,), 0.5)
    a.grad, ref = ga, weakref.ref(ga)
    c.grad = torch.zeros(3, 2).t()
    before, version = a.detach().clone(), a._version
    with pytest.raises(ValueError, match=r"param group 1, params\[0\].*not contiguous"):
        opt.step()
    assert torch.equal(a.detach(), before) and a._version == version
    a.grad = None
    del ga
    gc.collect()
    assert ref() is None


def test_binder_hands_what_it_does_not_take_to_the_checked_path():
    _require_binder()
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    opt = ft.Adam(lin.parameters(), lr=0.1)
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    b = opt._bound[0]
    assert b.binder is not None
    # a grad resized in place (torch checks the size only when a grad is set):
    # refused by name, nothing changed
    w = lin.weight.detach().clone()
    lin.weight.grad = torch.ones(2, 3)
    lin.weight.grad.resize_(5)
    with pytest.raises(ValueError, match=r"params\[0\] \(shape \(2, 3\).*shape \(5,\)"):
        opt.step()
    assert torch.equal(lin.weight.detach(), w)
    # a param re-pointed in place (p.data = ...), then one replaced in the group
    lin.weight.grad = torch.ones(2, 3)
    lin.weight.data = torch.zeros(2, 3)
    opt.step()
    assert opt._bound[0] is not b and not torch.equal(lin.weight.detach(), torch.zeros(2, 3))
    new = torch.nn.Parameter(torch.zeros(2))
    new.grad = torch.ones(2)
    opt.param_groups[0]["params"][1] = new
    opt.step()
    assert (new.detach() < 0).all()


def test_binder_setting_and_a_failed_build_leave_the_python_path(monkeypatch):
    monkeypatch.setattr(ft, "_binder_state", {})
    monkeypatch.setenv("FASTOPT_TORCH_BINDER", "0")
    assert ft.binder() == "Python"
    monkeypatch.setattr(ft, "_binder_state", {})
    monkeypatch.setenv("FASTOPT_TORCH_BINDER", "yes")
    with pytest.warns(RuntimeWarning, match="FASTOPT_TORCH_BINDER='yes' is neither 0 nor 1"):
        assert ft.binder().startswith("Python: FASTOPT_TORCH_BINDER")
    monkeypatch.setattr(ft, "_binder_state", {})
    monkeypatch.setenv("FASTOPT_TORCH_BINDER", "1")
    monkeypatch.setattr(ft, "_BINDER_SOURCE", "/nonexistent/_torch_binder.cpp")
    with pytest.warns(RuntimeWarning, match="could not be built"):
        opt = ft.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.5)
    assert ft.binder().startswith("Python: the C++ step binder could not be built")
    assert opt._bound[0].binder is None
    opt.param_groups[0]["params"][0].grad = torch.ones(2)
    opt.step()
    assert torch.equal(opt.param_groups[0]["params"][0].detach(), torch.full((2,), 0.5))
