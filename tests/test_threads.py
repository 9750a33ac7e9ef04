"""Threads and processes (DESIGN.md §4): deterministic reductions for any
thread count and SIMD variant, the GIL released during kernels, threadpoolctl
and OMP_NUM_THREADS honoured, fork after use, and concurrent use of ONE
optimizer serialised (never torn, never corrupted).
"""
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastopt as fo
from fastopt import _core
from fastopt.optimizers import REGISTRY

import optim_db
from conftest import SIMD_VARIANTS, expected_team
from robust_util import NAMES, TALLY, accepts, build, default_convention

SPLITS = [(1, 10**9), (2, 0), (4, 0), (2, None), (4, None)]   # (threads, threshold)


# ---- determinism of the reductions -------------------------------------------------

def _reduction_problem(dtype):
    rng = np.random.default_rng(21)
    sizes = [0, 1, 7, 4097, 65537, 10**6]
    params = [(rng.standard_normal(n) * 3).astype(dtype) for n in sizes]
    grads = [(rng.standard_normal(n) * 1e3).astype(dtype) for n in sizes]
    grads[3][[5, 4096]] = [np.nan, np.inf]
    grads[5][[0, 123456, 999999]] = [-np.inf, np.nan, np.nan]
    return params, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_bit_identical_across_threads_and_simd(dtype):
    """Global norm and finite checks: the same bits for 1, 2, 4 threads, every
    split point and every SIMD variant (fixed-order chunk partials)."""
    params, grads = _reduction_problem(dtype)
    opt = fo.SGD(params, learning_rate=0.0)
    eng = opt._engine
    default = _core.parallel_threshold()
    results = set()
    for simd in SIMD_VARIANTS:
        _core.set_simd(simd)
        for threads, threshold in SPLITS:
            _core.set_parallel_threshold(default if threshold is None else threshold)
            eng.set_grads(grads)
            _core.team_seen()
            try:
                key = (eng.sumsq(0, threads).tobytes(), eng.sumsq(1, threads).tobytes(),
                       eng.nonfinite(threads).tobytes())
            finally:
                eng.clear_grads()
            # 10**6 elements: above the default threshold too, so every split ran
            assert _core.team_seen() == expected_team(threads), (simd, threads, threshold)
            results.add(key)
            TALLY["reductions_compared"] += 1
    assert len(results) == 1
    sq_g, sq_p, nonfinite = (np.frombuffer(k, t) for k, t in
                             zip(results.pop(), (np.float64, np.float64, np.int64)))
    assert nonfinite.tolist() == [int((~np.isfinite(g)).sum()) for g in grads]
    with np.errstate(invalid="ignore", over="ignore"):
        expect_p = [float(np.sum(p.astype(np.float64) ** 2)) for p in params]
    np.testing.assert_allclose(sq_p, expect_p, rtol=1e-12)
    assert np.isnan(sq_g[3]) and np.isnan(sq_g[5]) and sq_g[0] == 0.0


def _option_sets(cls, conv):
    """Reduction-driven options this version has (global_clipnorm, clipnorm,
    skip_nonfinite); an optimizer that is not elementwise (Lamb's trust ratios)
    reduces whatever the options."""
    out = [opts for opts in ({"global_clipnorm": 1.0}, {"clipnorm": 0.5},
                             {"skip_nonfinite": True}) if accepts(cls, conv, **opts)]
    if not cls.elementwise:
        out.append({})
    return out


REDUCING = [(name, opts) for name in NAMES
            for opts in _option_sets(REGISTRY[name], default_convention(REGISTRY[name]))]


@pytest.mark.skipif(not REDUCING, reason="no optimizer option reduces over tensors in this version")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("name", "opts"), REDUCING,
                         ids=[f"{n}-{','.join(o) or 'default'}" for n, o in REDUCING])
def test_reducing_options_bit_identical_across_threads_and_simd(name, opts, dtype):
    rng = np.random.default_rng(22)
    shapes = [optim_db.param_shape(name, n) for n in [7, 65537, 10**6]]
    params0 = [rng.standard_normal(sh).astype(dtype) for sh in shapes]
    steps = [[(rng.standard_normal(sh) * 2).astype(dtype) for sh in shapes] for _ in range(3)]
    steps[1][2].flat[17] = np.nan     # exercises skip_nonfinite where present
    default = _core.parallel_threshold()
    images = set()
    for simd in SIMD_VARIANTS:
        _core.set_simd(simd)
        for threads, threshold in SPLITS:
            _core.set_parallel_threshold(default if threshold is None else threshold)
            params = [p.copy() for p in params0]
            opt = build(name, params, num_threads=threads, **opts)
            _core.team_seen()
            for g in steps:
                opt.step(g)
            assert _core.team_seen() == expected_team(threads), (simd, threads, threshold)
            images.add(tuple(p.tobytes() for p in params) +
                       tuple(a.tobytes() for s in opt.state_arrays() for a in s))
    assert len(images) == 1


# ---- the GIL --------------------------------------------------------------------------

def _big_adam(n, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    return fo.Adam([w], num_threads=1), w, g


def _python_progress_during(call, repeats=8):
    """For each of ``repeats`` calls, how many times another Python thread ran in
    the middle half of the call.  The sampler yields the GIL after every sample,
    so the calling thread never waits for it: a call that holds the GIL sees 0."""
    intervals, samples, stop = [], [], threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append(time.perf_counter())
            time.sleep(0)

    t = threading.Thread(target=sampler)
    t.start()
    try:
        time.sleep(0.01)
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            intervals.append((t0, time.perf_counter()))
    finally:
        stop.set()
        t.join()
    s = np.array(samples)
    return [int(((s > a + (b - a) / 4) & (s < b - (b - a) / 4)).sum()) for a, b in intervals]


def test_gil_released_during_kernels():
    """While one thread is inside a kernel, another runs Python code.  The control
    (list.sort, which holds the GIL throughout) shows the probe sees a held GIL."""
    opt, _, g = _big_adam(4_000_000, 1)
    opt.step([g])                      # first touch of the state pages
    big = np.random.default_rng(0).integers(0, 10**9, 300_000).tolist()
    control = _python_progress_during(lambda: sorted(big), repeats=4)
    assert control == [0] * 4, control
    for attempt in range(3):
        progress = _python_progress_during(lambda: opt.step([g]))
        covered = sum(k > 0 for k in progress)
        if covered >= len(progress) // 2:
            break
    TALLY["gil_probe_kernels_with_concurrent_python"] += covered
    assert covered >= len(progress) // 2, progress


def _two_optimizers_wall(concurrent, n=1 << 16, steps=300):
    (o1, _, g1), (o2, _, g2) = _big_adam(n, 2), _big_adam(n, 3)
    o1.step([g1])
    o2.step([g2])

    def work(o, g):
        for _ in range(steps):
            o.step([g])

    t0 = time.perf_counter()
    if concurrent:
        ts = [threading.Thread(target=work, args=a) for a in ((o1, g1), (o2, g2))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    else:
        work(o1, g1)
        work(o2, g2)
    return time.perf_counter() - t0


def test_two_threads_two_optimizers_speed_up(record_property):
    """Two Python threads stepping two optimizers (num_threads=1 each, in-cache
    tensors so the kernels are compute-bound) overlap: the concurrent wall time
    is reported as a ratio of the sequential one (~0.5-0.6 on 2 idle cores) and
    must be below 0.9 in the best of up to 12 tries (a busy moment passes; a GIL
    held during kernels gives >= 1.0 every time).  On a machine known to be
    shared, FASTOPT_BUSY_MACHINE=1 turns a miss into a reported xfail, never a
    silent skip; CI does not set it."""
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert ncpu and ncpu >= 2, "the suite needs 2 CPUs to test concurrent stepping"
    ratios = []
    deadline = time.monotonic() + 30
    while len(ratios) < 12 and time.monotonic() < deadline:
        seq = _two_optimizers_wall(False)
        con = _two_optimizers_wall(True)
        ratios.append(con / seq)
        if ratios[-1] < 0.75:
            break
    best = min(ratios)
    record_property("concurrent_over_sequential", best)
    TALLY["gil_speedup_ratio_x1000"] = int(best * 1000)
    report = (f"two threads / sequential wall time: {best:.2f} (tries: "
              f"{', '.join(f'{r:.2f}' for r in ratios)}; load {os.getloadavg()[0]:.1f} "
              f"on {ncpu} CPUs)")
    print("\n" + report)
    if best >= 0.9 and os.environ.get("FASTOPT_BUSY_MACHINE") == "1":
        pytest.xfail("FASTOPT_BUSY_MACHINE=1, speed-up missed: " + report)
    assert best < 0.9, report


def test_two_threads_two_optimizers_correct():
    """Concurrent steps on different optimizers give exactly the serial results."""
    def trajectory(concurrent):
        opts = [_big_adam(300_000, s) for s in (4, 5)]
        for o, _, _ in opts:
            o.num_threads = 2

        def work(o, g):
            for k in range(20):
                o.step([g * np.float32(1 + k % 3)])

        if concurrent:
            ts = [threading.Thread(target=work, args=(o, g)) for o, _, g in opts]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        else:
            for o, _, g in opts:
                work(o, g)
        return [w.tobytes() for _, w, _ in opts]

    _core.set_parallel_threshold(0)     # both threads open parallel regions at once
    assert trajectory(True) == trajectory(False)


# ---- thread-count controls ------------------------------------------------------------

def test_threadpoolctl_limits_are_honoured():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not _core.openmp():
        pytest.skip("serial build")
    info = threadpoolctl.threadpool_info()
    assert any(i["user_api"] == "openmp" for i in info), info
    for limit in (1, 2, 3):
        with threadpoolctl.threadpool_limits(limits=limit, user_api="openmp"):
            assert _core.max_threads() == limit
            assert fo.get_num_threads() == limit
            w = np.zeros(70000)
            fo.SGD([w], learning_rate=1.0).step([np.ones(70000)])
            assert (w == -1.0).all()
    fo.set_num_threads(1)     # an explicit setting wins over the OpenMP default
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert fo.get_num_threads() == 1


@pytest.mark.parametrize("n", ["1", "3"])
def test_omp_num_threads_is_the_default(n):
    env = dict(os.environ, OMP_NUM_THREADS=n)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(fo.__file__))] +
                                        [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                         if p])
    out = subprocess.run([sys.executable, "-c",
                          "import fastopt as fo; print(fo.get_num_threads())"],
                         env=env, capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    expect = n if _core.openmp() else "1"
    assert out.stdout.strip() == expect


# ---- the measured team at the default thread count ----------------------------------------

def _simulate(tuner, periods, steps, most=2, start=0):
    """Step ``tuner`` on a clock where a step with one thread lasts
    ``periods(i)[0]`` ns and one with the team ``periods(i)[1]``; the teams
    it picked, in order."""
    now, picks = start, []
    for i in range(steps):
        k = tuner.pick_at(most, now)
        picks.append(k)
        now += periods(i)[0 if k == 1 else 1]
    return picks, now


@pytest.mark.parametrize("one, team, winner", [(100_000, 60_000, 4), (100_000, 150_000, 1),
                                                (3_050_000, 3_200_000, 1)])
def test_measured_team_runs_the_shorter_period(one, team, winner):
    """After a run of each, the team with the shorter period runs; the other is
    tried again at growing intervals, so it costs a small share of steps."""
    tuner = _core.TeamTuner()
    picks, _ = _simulate(tuner, lambda i: (one, team), 3000, most=4)
    assert picks[:5] == [4] * 5 and picks[5:10] == [1] * 5    # a first run of each
    assert picks[10:25] == [winner] * 15       # then the better one, 16 steps before a retry
    loser = 5 - winner
    # its first run, then runs of 3 after 16, 64, 256, 1024, 1024 ... steps
    assert picks.count(loser) <= 5 + 3 * 5, picks.count(loser)
    assert picks[-1000:].count(loser) <= 3
    est = tuner.estimates()
    assert est["one thread"] == pytest.approx(one * 1e-9)
    assert est["team"] == pytest.approx(team * 1e-9)


def test_measured_team_follows_a_change_and_ignores_a_pause():
    tuner = _core.TeamTuner()
    # the team is faster, then another process takes a core: one thread is
    picks, now = _simulate(tuner, lambda i: (100_000, 50_000), 2000)
    assert picks[-100:].count(2) >= 96
    picks, now = _simulate(tuner, lambda i: (100_000, 400_000), 1200, start=now)
    assert picks[:12].count(1) >= 6         # the team's own periods show it at once
    assert picks[-100:].count(1) >= 96
    # a single long pause (an evaluation, a collection) does not flip a clear choice
    picks, _ = _simulate(tuner, lambda i: (10**9 if i == 50 else 100_000, 400_000), 100,
                         start=now)
    assert picks[40:100].count(1) >= 56


def test_measured_team_is_not_misled_by_a_new_optimizers_first_steps():
    """The first steps of a new optimizer fault in its state and fill caches:
    the team's first run is slow for a step or two, which must not hand the
    choice to one thread (a 1e6-element Adam here: 16.7 ms, 605 us, then
    285 us a step on two threads, 560-650 us on one, less on a quiet core)."""
    tuner = _core.TeamTuner()
    first = {0: 16_700_000, 1: 705_000, 2: 560_000}
    picks, _ = _simulate(tuner, lambda i: (500_000, first.get(i, 285_000)), 40)
    assert picks[10:26].count(2) == 16, picks


def test_measured_team_with_one_thread_and_a_new_team_size():
    tuner = _core.TeamTuner()
    assert [tuner.pick_at(1, t) for t in range(0, 10**7, 10**5)] == [1] * 100
    assert tuner.most == 0
    picks, now = _simulate(tuner, lambda i: (100_000, 60_000), 50, most=2)
    assert picks[-5:] == [2] * 5
    # a new default team size (threadpoolctl, OMP_NUM_THREADS): the estimates start anew
    picks, _ = _simulate(tuner, lambda i: (100_000, 60_000), 10, most=3, start=now)
    assert picks == [3] * 5 + [1] * 5 and tuner.most == 3


def test_default_threads_use_the_measured_team_and_keep_the_bits():
    """At the default thread count a step runs the measured team (both teams
    run while it measures), with the bits of a one-thread run; an explicit
    count bypasses it."""
    if not _core.openmp() or fo.get_num_threads() < 2:
        pytest.skip("needs an OpenMP build and at least 2 threads")
    _core.set_parallel_threshold(0)
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(50_000)
    grads = [rng.standard_normal(50_000) for _ in range(24)]
    runs = {}
    for threads in (1, None):
        w = w0.copy()
        opt = fo.Adam([w], learning_rate=1e-2, clipnorm=1.0, num_threads=threads)
        teams = set()
        _core.team_seen()
        for g in grads:
            opt.step([g])
            teams.add(_core.team_seen())
        runs[threads] = (w.tobytes(), [a.tobytes() for a in opt.state_arrays()[0]], teams)
        assert opt._stepper.tuner.most == (0 if threads else fo.get_num_threads())
    assert runs[None][:2] == runs[1][:2]
    assert runs[1][2] == {1}
    assert runs[None][2] == {1, expected_team(fo.get_num_threads())}
    fo.set_num_threads(1)
    opt = fo.Adam([w0.copy()])
    opt.step([grads[0]])
    assert opt._stepper.tuner.most == 0


# ---- fork ------------------------------------------------------------------------------

def _child_trajectory(seed):
    """Runs in a forked child (and in the parent): steps asking for 2 threads
    over a tensor above the threshold; the bits and the largest team that ran."""
    _core.set_parallel_threshold(0)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(200_000)
    opt = fo.Adam([w], num_threads=2)
    _core.team_seen()
    for _ in range(5):
        opt.step([rng.standard_normal(200_000)])
    return w.tobytes(), _core.team_seen()


def test_fork_after_use_works_in_the_child():
    """The parent has run parallel regions (libgomp's pool exists); a child forked
    afterwards steps without hanging and gets the parent's bits."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    _core.set_parallel_threshold(0)
    warm = np.zeros(200_000)
    fo.SGD([warm], learning_rate=1.0, num_threads=2).step([np.ones(200_000)])
    fo.SGD([warm], learning_rate=1.0).step([np.ones(200_000)])   # default threads too
    expected = [_child_trajectory(s) for s in (1, 2, 3)]
    assert {team for _, team in expected} == {expected_team(2)}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map_async(_child_trajectory, (1, 2, 3)).get(timeout=120)
    # the children run serial (libgomp's pool does not survive fork) with the same bits
    assert [bits for bits, _ in got] == [bits for bits, _ in expected]
    assert [team for _, team in got] == [1, 1, 1]
    # the parent keeps its parallel pool after forking: a team of 2 still runs here
    bits, team = _child_trajectory(1)
    assert (bits, team) == expected[0], f"the parent ran a team of {team} after fork"
    TALLY["forked_children_ok"] += 3


# ---- one optimizer, two threads ----------------------------------------------------------

def test_concurrent_steps_on_one_optimizer_are_serialised():
    """Two threads stepping the SAME optimizer: every update lands whole, in some
    serial order.  The order is recorded by the learning-rate schedule (evaluated
    under the step lock) and replayed serially: the bits must agree."""
    n, per_thread = 200_000, 60
    rng = np.random.default_rng(6)
    w0 = rng.standard_normal(n).astype(np.float32)
    grads = {name: rng.standard_normal(n).astype(np.float32) for name in ("a", "b")}
    order = []

    def recording_lr(step):
        order.append(threading.current_thread().name)
        return 1e-3

    w = w0.copy()
    opt = fo.Adam([w], learning_rate=recording_lr, num_threads=2)
    barrier = threading.Barrier(2)

    def work(name):
        barrier.wait()
        for _ in range(per_thread):
            opt.step([grads[name]])

    ts = [threading.Thread(target=work, args=(name,), name=name) for name in grads]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert opt.iterations == 2 * per_thread
    assert sorted(order) == ["a"] * per_thread + ["b"] * per_thread
    switches = sum(x != y for x, y in zip(order, order[1:]))
    TALLY["concurrent_order_switches"] += switches

    w_serial = w0.copy()
    serial = fo.Adam([w_serial], learning_rate=1e-3, num_threads=2)
    for name in order:
        serial.step([grads[name]])
    assert w.tobytes() == w_serial.tobytes()
    for a, b in zip(opt.state_arrays()[0], serial.state_arrays()[0]):
        assert a.tobytes() == b.tobytes()


def test_checkpoint_while_another_thread_steps_is_never_torn(tmp_path):
    """fo.save takes the step lock: params and counters in a file always match
    (w == iterations for SGD with lr 1 and grad -1)."""
    n = 300_000
    w = np.zeros(n, dtype=np.float32)
    opt = fo.SGD([w], learning_rate=1.0)
    minus_one = np.full(n, -1.0, dtype=np.float32)
    stop = threading.Event()

    def stepper():
        while not stop.is_set():
            opt.step([minus_one])

    t = threading.Thread(target=stepper)
    t.start()
    try:
        seen = set()
        for k in range(15):
            path = tmp_path / f"ck{k}.npz"
            fo.save(path, opt)
            sd = fo.checkpoint.read(path)
            it = sd["iterations"]
            assert (sd["params"][0] == np.float32(it)).all(), it
            seen.add(it)
            other = fo.SGD([np.zeros(n, dtype=np.float32)], learning_rate=1.0)
            fo.load(path, other)
            assert (other.params[0] == np.float32(it)).all()
    finally:
        stop.set()
        t.join()
    assert len(seen) > 1        # the stepper really ran in between
