"""Row gradients (fastopt.RowGrad) of 2-D params: every elementwise optimizer
against the float64 lazy reference (tests/reference.py: the rule on the rows
given, alone), bit for bit against a dense step with the untouched rows put
back, across thread counts and SIMD variants; what is refused; SparseAdam
against torch.optim.SparseAdam (recorded answers, and live where torch is
installed); state dicts and checkpoints."""
import json
from pathlib import Path

import numpy as np
import pytest

import fastopt as fo
from fastopt import _core
from fastopt.optimizers import REGISTRY

import optim_db
import reference
from conftest import SIMD_VARIANTS
from robust_util import assert_same_optimizer, assert_unchanged, snapshot

PAIRS = optim_db.expand()
GOLDEN = json.loads((Path(__file__).resolve().parent / "data" /
                     "sparse_adam_golden.json").read_text())


def lr_schedule(step):
    return 0.01 * (0.93 ** step) * (1.0 + 0.3 * (step % 3))


def lazy_capable(case):
    """False for a case a RowGrad has no lazy form for (refused: see test_refused)."""
    name, kwargs, _ = case
    return REGISTRY[name].elementwise and not kwargs.get("gradient_accumulation_steps")


def make_rows(rng, rows, dim, n, dtype, idx_dtype=np.int64):
    """n row indices in random order with repeats, and their values."""
    idx = rng.integers(0, rows, n).astype(idx_dtype)
    if n > 2:
        idx[1] = idx[0]          # a repeat in every step
    return fo.RowGrad(idx, (rng.standard_normal((n, dim)) * 0.3).astype(dtype))


def build(case, convention, params, **extra):
    name, kwargs, _ = case
    return REGISTRY[name](params, learning_rate=lr_schedule, convention=convention,
                          **kwargs, **extra)


LAZY = [(p, i) for p, i in PAIRS if lazy_capable(p[0])]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("case", "convention"), [p for p, _ in LAZY], ids=[i for _, i in LAZY])
def test_matches_lazy_reference(case, convention, dtype, rng):
    """Two tables with RowGrads (int32 and int64 indices, repeats, an empty
    one, a skipped one) beside a dense 1-D param."""
    name, kwargs, _ = case
    params = [rng.standard_normal((30, 6)).astype(dtype), rng.standard_normal(7).astype(dtype),
              rng.standard_normal((5, 3)).astype(dtype)]
    opt = build(case, convention, params)
    options = {k: kwargs[k] for k in reference.OPTIONS if k in kwargs}
    ref = reference.Reference(name, convention, params,
                              lambda step: opt.hyperparameters(step=step), **options)
    for s in range(8):
        grads = [make_rows(rng, 30, 6, 0 if s == 3 else 12, dtype),
                 (rng.standard_normal(7) * 0.3).astype(dtype),
                 None if s % 3 == 1 else make_rows(rng, 5, 3, 4, dtype, np.int32)]
        ref.step(grads)
        opt.step(grads)
    rtol, atol = (1e-11, 1e-13) if dtype == np.float64 else (3e-5, 3e-6)
    for i, (w, r) in enumerate(zip(params, ref.w)):
        np.testing.assert_allclose(w, r, rtol=rtol, atol=atol, err_msg=f"params[{i}]")


def _masked_dense_twin(case, convention, table, rows, dim, grads_rows, nthreads):
    """The dense step of the summed rows, with every untouched row of the param
    and its state put back: what a lazy update must equal bit for bit."""
    twin_table = table.copy()
    twin = build(case, convention, [twin_table], num_threads=nthreads)
    for rg in grads_rows:
        g = np.zeros_like(twin_table)
        np.add.at(g, rg.indices, rg.values)       # in the order given, like the coalescing
        keep = np.ones(rows, bool)
        keep[rg.indices] = False
        saved = [twin_table[keep].copy()] + [a[keep].copy() for a in twin.state_arrays()[0]]
        twin.step([g])
        for a, old in zip([twin_table] + twin.state_arrays()[0], saved):
            a[keep] = old
    return twin_table, twin


ELEMENTWISE_CASES = [(p, i) for p, i in PAIRS if lazy_capable(p[0]) and not any(
    k in p[0][1] for k in ("clipnorm", "global_clipnorm", "use_ema", "skip_nonfinite"))]


@pytest.mark.parametrize(("case", "convention"), [p for p, _ in ELEMENTWISE_CASES],
                         ids=[i for _, i in ELEMENTWISE_CASES])
def test_bit_identical_to_masked_dense_step(case, convention):
    """Large enough for a team of threads; every thread count and SIMD variant."""
    rng = np.random.default_rng(5)
    rows, dim = 3000, 17
    table = rng.standard_normal((rows, dim)).astype(np.float32)
    steps = [make_rows(rng, rows, dim, 1500, np.float32) for _ in range(3)]
    expected, twin = _masked_dense_twin(case, convention, table, rows, dim, steps, 1)
    saved = _core.get_simd()
    try:
        for simd in SIMD_VARIANTS:
            _core.set_simd(simd)
            for nthreads in (1, 2, 3):
                mine = table.copy()
                opt = build(case, convention, [mine], num_threads=nthreads)
                for rg in steps:
                    opt.step([rg])
                assert mine.tobytes() == expected.tobytes(), f"{simd}, {nthreads} threads"
                for k, (x, y) in enumerate(zip(opt.state_arrays()[0], twin.state_arrays()[0])):
                    assert x.tobytes() == y.tobytes(), f"state {k}: {simd}, {nthreads} threads"
    finally:
        _core.set_simd(saved)


@pytest.mark.parametrize("kwargs", [{"clipnorm": 0.05}, {"global_clipnorm": 0.1},
                                    {"skip_nonfinite": True}])
def test_reductions_over_rows_do_not_depend_on_threads(kwargs):
    rng = np.random.default_rng(8)
    table = rng.standard_normal((5000, 33))
    dense = rng.standard_normal(40000)
    steps = [[make_rows(rng, 5000, 33, 2500, np.float64), rng.standard_normal(40000)]
             for _ in range(3)]
    results = []
    for nthreads in (1, 2, 4):
        params = [table.copy(), dense.copy()]
        opt = fo.Adam(params, num_threads=nthreads, **kwargs)
        for grads in steps:
            opt.step(grads)
        results.append(b"".join(p.tobytes() for p in params))
    assert results[0] == results[1] == results[2]


def test_clipnorm_is_the_norm_of_the_summed_rows():
    table = np.zeros((4, 2))
    opt = fo.SGD([table], learning_rate=1.0, clipnorm=1.0)
    # row 1 given twice: its gradient is (3, 4), norm 5, clipped to norm 1
    opt.step([fo.RowGrad(np.array([1, 1]), np.array([[1.0, 2.0], [2.0, 2.0]]))])
    np.testing.assert_allclose(table[1], [-0.6, -0.8])
    assert not table[[0, 2, 3]].any()


def test_repeated_rows_summed_in_the_order_given():
    """float32 sums that differ by order: (a + b) + c, as given."""
    a, b, c = np.float32(1e8), np.float32(-1e8), np.float32(1.0)
    table = np.zeros((3, 1), np.float32)
    opt = fo.SGD([table], learning_rate=1.0)
    opt.step([fo.RowGrad(np.array([2, 0, 2, 2]),
                         np.array([[a], [5.0], [b], [c]], np.float32))])
    assert table[2, 0] == -((a + b) + c) and table[0, 0] == -5.0


def test_empty_rowgrad_counts_a_step_and_moves_nothing():
    """torch.optim.SparseAdam counts a step of a param whose sparse grad is empty."""
    table = np.ones((4, 2))
    opt = fo.SparseAdam([table])
    opt.step([fo.RowGrad(np.zeros(0, np.int64), np.zeros((0, 2)))])
    assert opt._stepper.get_steps().tolist() == [1] and opt.iterations == 1
    assert (table == 1).all() and not any(a.any() for a in opt.state_arrays()[0])


def test_apply_gradients_takes_rowgrads():
    table, bias = np.zeros((3, 2)), np.zeros(2)
    opt = fo.SGD([table, bias], learning_rate=0.5)
    opt.apply_gradients([(fo.RowGrad(np.array([1]), np.ones((1, 2))), table)])
    assert table[1].tolist() == [-0.5, -0.5] and not table[[0, 2]].any()


def test_ema_averages_every_row():
    """The moving average is of the parameters, touched or not."""
    table = np.arange(8.0).reshape(4, 2)
    opt = fo.Adam([table], use_ema=True, ema_momentum=0.5)
    opt.step([fo.RowGrad(np.array([0]), np.ones((1, 2)))])
    before = table.copy()
    avg0 = opt.averages[0].copy()
    opt.step([fo.RowGrad(np.array([0]), np.ones((1, 2)))])
    np.testing.assert_allclose(opt.averages[0][1:], 0.5 * avg0[1:] + 0.5 * before[1:])


def _refused_step(opt, grads, match):
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.step(grads)
    assert_unchanged(before, opt, [], match)


@pytest.mark.parametrize(("case", "convention"), [p for p, _ in PAIRS if not lazy_capable(p[0])],
                         ids=[i for p, i in PAIRS if not lazy_capable(p[0])])
def test_refused(case, convention, rng):
    """No lazy form: Lamb's trust ratio reads the whole tensor; gradient
    accumulation keeps a dense sum.  A refused step changes nothing."""
    s4 = optim_db.param_shape(case[0], 4)
    params = [rng.standard_normal((6, 3)), rng.standard_normal(s4)]
    opt = build(case, convention, params)
    opt.step([rng.standard_normal((6, 3)), rng.standard_normal(s4)])
    match = ("accumulated" if case[1].get("gradient_accumulation_steps")
             else "reads the whole tensor")
    _refused_step(opt, [make_rows(rng, 6, 3, 4, np.float64), rng.standard_normal(s4)], match)


def test_rowgrad_of_a_1d_param_refused():
    opt = fo.Adam([np.zeros((3, 2)), np.zeros(5)])
    _refused_step(opt, [None, fo.RowGrad(np.array([0]), np.ones((1, 5)))],
                  r"grads\[1\]: a RowGrad updates rows of a 2-D parameter")


# ---- SparseAdam against torch.optim.SparseAdam ----------------------------------

def _golden_lr(step):
    return 0.05 * (0.9 ** step) * (1.0 + 0.5 * (step % 3))


def _run_golden_problem(kwargs, dtype, idx_dtype=np.int64):
    rows = GOLDEN["rows"]
    table = np.array(rows["w0"], dtype=dtype)
    opt = fo.SparseAdam([table], learning_rate=_golden_lr, **kwargs)
    for idx, vals in rows["steps"]:
        opt.step([fo.RowGrad(np.array(idx, dtype=idx_dtype),
                             np.array(vals, dtype=dtype).reshape(len(idx), table.shape[1]))])
    return table, opt


@pytest.mark.parametrize("case", range(len(GOLDEN["rows"]["trajectories"])))
def test_sparse_adam_matches_recorded_torch(case):
    """torch 2.13's answers (tests/golden_sparse_adam.py): 30 steps, repeats, an
    empty step, a learning rate that changes every step."""
    expected = GOLDEN["rows"]["trajectories"][case]
    for dtype, idx_dtype, rtol in ((np.float64, np.int64, 1e-12), (np.float64, np.int32, 1e-12),
                                   (np.float32, np.int64, 2e-4)):
        table, opt = _run_golden_problem(expected["kwargs"], dtype, idx_dtype)
        atol = 0 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(table, expected["w"], rtol=rtol, atol=atol)
        state = opt.state[0]
        np.testing.assert_allclose(state["m"], expected["m"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(state["v"], expected["v"], rtol=rtol, atol=atol)
        assert opt._stepper.get_steps().tolist() == [expected["steps"]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_adam_matches_torch_live(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    rows, dim = 50, 7
    w0 = rng.standard_normal((rows, dim)).astype(dtype)
    mine = w0.copy()
    theirs = torch.tensor(w0.copy())
    opt = fo.SparseAdam([mine], learning_rate=_golden_lr, betas=(0.8, 0.99), maximize=True)
    topt = torch.optim.SparseAdam([theirs], lr=_golden_lr(0), betas=(0.8, 0.99), maximize=True)
    for step in range(30):
        rg = make_rows(rng, rows, dim, int(rng.integers(0, 60)), dtype)
        for group in topt.param_groups:
            group["lr"] = _golden_lr(step)
        theirs.grad = torch.sparse_coo_tensor(torch.tensor(rg.indices)[None],
                                              torch.tensor(rg.values), (rows, dim))
        topt.step()
        opt.step([rg])
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(mine, theirs.numpy(), rtol=rtol, atol=0)
    st = topt.state[theirs]
    np.testing.assert_allclose(opt.state[0]["m"], st["exp_avg"].numpy(), rtol=rtol, atol=0)
    np.testing.assert_allclose(opt.state[0]["v"], st["exp_avg_sq"].numpy(), rtol=rtol, atol=0)


# ---- state dicts and checkpoints ---------------------------------------------------

@pytest.mark.parametrize("name", ["SparseAdam", "Adam", "SGD", "Ftrl"])
def test_resume_with_rowgrads_is_bit_identical(name, tmp_path):
    rng = np.random.default_rng(4)
    cls = REGISTRY[name]
    kw = dict(optim_db.info(name).stateful)
    steps = [make_rows(rng, 20, 4, 9, np.float32) for _ in range(6)]
    table = rng.standard_normal((20, 4)).astype(np.float32)
    a = cls([table], **kw)
    for rg in steps[:3]:
        a.step([rg])
    sd = a.state_dict()
    fo.save(tmp_path / "ck.npz", a)
    b_table, c_table = table.copy(), table.copy()
    b, c = cls([b_table], **kw), cls([c_table], **kw)
    b.load_state_dict(sd)
    fo.load(tmp_path / "ck.npz", c)
    for rg in steps[3:]:
        for opt in (a, b, c):
            opt.step([rg])
    assert_same_optimizer(a, b, f"{name} state_dict")
    assert_same_optimizer(a, c, f"{name} checkpoint")


def test_skip_nonfinite_reads_the_summed_rows():
    table = np.ones((5, 2))
    opt = fo.Adam([table], skip_nonfinite=True)
    before = snapshot(opt)
    opt.step([fo.RowGrad(np.array([3, 1, 3]), np.array([[1.0, 2.0], [0.5, 0.5], [np.inf, 0.0]]))])
    assert opt.skipped_steps == 1 and opt.iterations == 0
    assert (table == 1).all() and not any(a.any() for a in opt.state_arrays()[0])
    # finite rows whose sum overflows are not finite either
    big = np.finfo(np.float64).max
    opt.step([fo.RowGrad(np.array([2, 2]), np.array([[big, 0.0], [big, 0.0]]))])
    assert opt.skipped_steps == 2 and opt.iterations == 0
    del before
