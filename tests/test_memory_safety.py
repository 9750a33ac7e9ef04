"""Memory safety and integrity of the engine and the optimizer layer.

Each test pins one defect of the 2026-12 audit (its number in the test name).
A case whose failure mode is a crash or a hang runs in a child process with
a timeout, so that it fails this suite instead of killing it.  Checkpoint and
MPI cases live in test_checkpoint.py and test_distributed.py.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastopt as fo
from fastopt import _core
from robust_util import assert_unchanged, snapshot


def isolated(tmp_path, code, timeout=60, limit_as=None):
    """Run ``code`` in a fresh interpreter (outside the source tree, so the
    installed fastopt is imported); a crash or hang fails the calling test."""
    def limit():
        if limit_as is not None:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))
    try:
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=str(tmp_path),
                           capture_output=True, text=True, timeout=timeout, preexec_fn=limit)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child hung for {timeout} s; output so far: {e.stdout!r} {e.stderr!r}")
    assert r.returncode == 0, (f"child died with status {r.returncode} (negative: killed by "
                               f"that signal)\nstdout: {r.stdout}\nstderr: {r.stderr}")
    return r.stdout


# ---- 1: editing a hyper-parameter that decides the state ------------------------------

STATE_EDITS = [
    ("SGD", {}, "momentum", 0.9, "keras"),
    ("SGD", {}, "momentum", 0.9, "torch"),
    ("Adam", {}, "amsgrad", True, "keras"),
    ("RMSprop", {}, "centered", True, "keras"),
    ("RMSprop", {}, "momentum", 0.5, "torch"),
    # the silent swap: without mg the kernel would take mg as the momentum buffer
    ("RMSprop", {"centered": True, "momentum": 0.9}, "centered", False, "keras"),
]


@pytest.mark.parametrize(("cls", "kwargs", "key", "value", "conv"), STATE_EDITS,
                         ids=[f"{c}-{k}-{v}-{cv}" for c, _, k, v, cv in STATE_EDITS])
def test_01_state_shaping_edit_is_refused(tmp_path, cls, kwargs, key, value, conv):
    out = isolated(tmp_path, f"""
        import numpy as np, fastopt as fo
        w = np.ones(10, np.float32)
        opt = fo.{cls}([w], convention={conv!r}, **{kwargs!r})
        opt.step([np.full(10, 0.5, np.float32)])
        before = (w.tobytes(), [a.tobytes() for s in opt.state_arrays() for a in s],
                  opt.iterations)
        try:
            opt.param_groups[0][{key!r}] = {value!r}     # refused at the assignment
        except ValueError as e:
            print("refused:", e)
        print("kept:", opt.param_groups[0][{key!r}] != {value!r})
        after = (w.tobytes(), [a.tobytes() for s in opt.state_arrays() for a in s],
                 opt.iterations)
        print("unchanged:", before == after)
    """)
    assert f"refused: param group 0: {key} cannot change" in out
    assert "Build a new optimizer" in out
    assert "unchanged: True" in out and "kept: True" in out


def test_01_dropping_unused_state_keeps_working():
    """An edit that only stops using state (momentum 0.9 -> 0) is allowed and
    gives plain SGD from then on."""
    w = np.array([1.0, 2.0])
    opt = fo.SGD([w], learning_rate=0.1, momentum=0.9)
    opt.step([np.ones(2)])
    opt.param_groups[0]["momentum"] = 0.0
    expected = w - 0.1 * np.array([3.0, -1.0])
    opt.step([np.array([3.0, -1.0])])
    np.testing.assert_array_equal(w, expected)


def test_01_setting_it_back_is_allowed(tmp_path):
    out = isolated(tmp_path, """
        import numpy as np, fastopt as fo
        w = np.zeros(3)
        opt = fo.Adam([w])
        try:
            opt.param_groups[0]["amsgrad"] = True
        except ValueError as e:
            print("refused:", e)
        opt.param_groups[0]["amsgrad"] = False
        opt.step([np.ones(3)])
        print("iterations:", opt.iterations)
    """)
    assert "refused: param group 0: amsgrad" in out and "iterations: 1" in out


def test_01_group_params_cannot_be_swapped():
    w, other = np.zeros(3), np.zeros(3)
    opt = fo.SGD([w], learning_rate=1.0)
    with pytest.raises(ValueError, match="'params' cannot change after construction"):
        opt.param_groups[0]["params"] = [other]
    assert opt.param_groups[0]["params"][0] is w
    opt.step([np.ones(3)])
    assert (w == -1.0).all() and not other.any()


def test_18_engine_refuses_a_step_without_the_state_its_kernel_reads(tmp_path):
    out = isolated(tmp_path, """
        import numpy as np
        from fastopt import _core
        w = np.zeros(8)
        e = _core.Engine("adam", [w], [[]])
        e.set_grads([np.ones(8)])
        try:
            e.run([[0.0] * 16], 1)
        except ValueError as err:
            print("refused:", err)
        amsgrad = [0.0] * 16
        amsgrad[5 + 6] = 1.0
        e = _core.Engine("adam", [w], [[np.zeros(8), np.zeros(8)]])
        e.set_grads([np.ones(8)])
        try:
            e.run([amsgrad], 1)
        except ValueError as err:
            print("refused:", err)
        print("w untouched:", not w.any())
    """)
    assert out.count("refused: params[0]: kernel 'adam' reads") == 2
    assert "w untouched: True" in out


def test_18_engine_refuses_swapped_or_misaligned_state():
    w = np.zeros(4)
    for bad in (np.zeros(4, dtype=">f8"),
                np.frombuffer(bytearray(40), dtype=np.float64, count=4, offset=1)):
        if not bad.flags.writeable:
            continue
        with pytest.raises(ValueError, match="aligned, C-contiguous ndarray"):
            _core.Engine("sgd", [w], [[bad]])
    misaligned = np.frombuffer(bytearray(40), dtype=np.float64, count=4, offset=1)
    assert not misaligned.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        _core.Engine("sgd", [w], [[misaligned]])


def test_18_failed_set_rows_changes_no_row(tmp_path):
    out = isolated(tmp_path, """
        import numpy as np
        from fastopt import _core
        a, b = np.zeros(4), np.zeros(4)
        e = _core.Engine("sgd", [a, b], [[], []])
        for rows in ([50_000_000, -1], [1, 2**40], [0.5, 0]):
            try:
                e.set_rows(rows)
            except (ValueError, TypeError) as err:
                print("refused:", err)
        e.set_grads([np.ones(4), np.ones(4)])
        row = [0.0] * 16
        row[5] = 1.0
        e.run([row], 1)          # rows stay at 0: only one scalar row is needed
        print("a:", a.tolist())
    """)
    assert out.count("refused:") == 3
    assert "a: [-1.0, -1.0, -1.0, -1.0]" in out


# ---- 2: grads in a sequence whose items are made on access --------------------------

def test_02_sequence_that_converts_on_access(tmp_path):
    out = isolated(tmp_path, """
        import numpy as np, fastopt as fo

        class Fresh(list):               # a new array object on every indexing
            def __getitem__(self, i):
                return np.array(list.__getitem__(self, i), dtype=np.float32)

        class AsFloat32(list):           # the audit's container: float64 items converted
            def __getitem__(self, i):
                return np.asarray(list.__getitem__(self, i), dtype=np.float32)

        class FreshTuple(tuple):
            def __getitem__(self, i):
                return np.array(tuple.__getitem__(self, i), dtype=np.float32)

        for n in (5000, 4_000_000):
            w = np.zeros(n, np.float32)
            opt = fo.SGD([w], learning_rate=1.0)
            opt.step(Fresh([np.ones(n, np.float32)]))
            opt.step(FreshTuple([np.ones(n, np.float32)]))
            print(n, "values:", np.unique(w).tolist())
            try:
                opt.step(AsFloat32([np.ones(n)]))
            except TypeError as e:
                print(n, "refused:", e)
            print(n, "after:", np.unique(w).tolist())
    """)
    for n in (5000, 4_000_000):
        assert f"{n} values: [-2.0]" in out
        assert f"{n} refused: grads[0]: expected dtype float32" in out
        assert f"{n} after: [-2.0]" in out


def test_02_engine_keeps_its_own_list():
    w = np.zeros(3)
    opt = fo.SGD([w], learning_rate=1.0)
    grads = [np.ones(3)]
    opt._engine.set_grads(grads)
    try:
        assert opt._engine.bound == grads and opt._engine.bound is not grads
    finally:
        opt._engine.clear_grads()


# ---- 3 and 4: params and state changed in place after construction -------------------

def test_03_reallocated_param_is_refused(tmp_path):
    out = isolated(tmp_path, """
        import numpy as np, fastopt as fo
        w, g = np.zeros(1000), np.ones(1000)
        opt = fo.SGD([w], learning_rate=1.0)
        w.__setstate__((1, (1000,), np.dtype("f8"), False, bytes(8000)))
        victim = np.full(1000, 7.0)
        try:
            opt.step([g])
        except ValueError as e:
            print("refused:", e)
        print("victim:", np.unique(victim).tolist(), "w:", np.unique(w).tolist())

        w = np.zeros(1000)
        opt = fo.Adam([w])
        w.resize(100000, refcheck=False)
        victim = np.full(1000, 7.0)
        try:
            opt.step([np.ones(1000)])
        except ValueError as e:
            print("refused:", e)
        print("victim:", np.unique(victim).tolist())
    """)
    assert out.count("refused: params[0] no longer holds the memory") == 2
    assert out.count("victim: [7.0]") == 2
    assert "w: [0.0]" in out


def test_03_reallocated_state_is_refused(tmp_path):
    out = isolated(tmp_path, """
        import numpy as np, fastopt as fo
        w = np.zeros(100)
        opt = fo.Adam([w])
        opt.step([np.ones(100)])
        m = opt.state[0]["m"]
        m.resize(200, refcheck=False)
        before = (w.tobytes(), opt.state[0]["v"].tobytes(), opt.iterations)
        try:
            opt.step([np.ones(100)])
        except ValueError as e:
            print("refused:", e)
        print("unchanged:", before == (w.tobytes(), opt.state[0]["v"].tobytes(), opt.iterations))
    """)
    assert "refused: state array 0 of params[0] no longer holds" in out
    assert "unchanged: True" in out


def test_04_param_made_read_only_is_refused():
    w = np.ones(4, np.float32)
    opt = fo.SGD([w], learning_rate=0.5, use_ema=True, ema_overwrite_frequency=1)
    w.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] was made read-only"):
        opt.step([np.ones(4, np.float32)])
    assert (w == 1).all()
    w.flags.writeable = True
    opt.step([np.ones(4, np.float32)])
    assert (w != 1).all()


def test_04_dtype_or_layout_changed_in_place_is_refused():
    w = np.zeros(8)
    opt = fo.SGD([w], learning_rate=1.0)
    w.dtype = np.int64
    with pytest.raises(ValueError, match="changed dtype, byte order or layout"):
        opt.step([np.ones(8)])
    w.dtype = np.float64
    opt.step([np.ones(8)])
    assert (w == -1).all()


def test_04_ema_engine_checks_its_averages():
    w = np.ones(4)
    opt = fo.SGD([w], learning_rate=0.5, use_ema=True)
    avg = opt.averages[0]
    avg.flags.writeable = False
    before = snapshot(opt)
    with pytest.raises(ValueError, match="read-only"):
        opt.step([np.ones(4)])
    assert_unchanged(before, opt, what="read-only EMA average")


# ---- 8 and 9: fork --------------------------------------------------------------------

OMP_TOUCH = r"""
#include <omp.h>
int omp_touch(void) {
    int n = 0;
    #pragma omp parallel num_threads(2) reduction(+:n)
    n += 1;
    return n;
}
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.skipif(not _core.openmp(), reason="a serial build has no OpenMP runtime to share")
def test_08_fork_after_another_libgomp_user(tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build another OpenMP library")
    src = tmp_path / "omptest.c"
    src.write_text(OMP_TOUCH)
    lib = tmp_path / "libomptest.so"
    subprocess.run([cc, "-fopenmp", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    out = isolated(tmp_path, f"""
        import ctypes, os, signal
        import numpy as np, fastopt as fo
        print("team:", ctypes.CDLL({str(lib)!r}).omp_touch())   # libgomp used, not by fastopt
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)
            w = np.zeros(1_000_000, np.float32)
            fo.SGD([w], learning_rate=1.0, num_threads=2).step([np.ones_like(w)])
            os._exit(0 if (w == -1).all() else 3)
        _, status = os.waitpid(pid, 0)
        print("child:", os.waitstatus_to_exitcode(status))
    """)
    assert "child: 0" in out, out


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_09_fork_while_another_thread_steps(tmp_path):
    out = isolated(tmp_path, """
        import os, signal, threading, warnings
        import numpy as np, fastopt as fo
        warnings.simplefilter("ignore", DeprecationWarning)   # 3.12: fork with threads
        w = np.zeros(4_000_000, np.float32)
        g = np.ones_like(w)
        opt = fo.SGD([w], learning_rate=1e-6)
        stop = threading.Event()

        def loop():
            while not stop.is_set():
                opt.step([g])

        t = threading.Thread(target=loop)
        t.start()
        codes = []
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                signal.alarm(10)
                opt.step([g])
                os._exit(0)
            codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        stop.set()
        t.join()
        print("children:", codes)
    """, timeout=120)
    assert "children: [0, 0, 0, 0, 0]" in out, out


# ---- 10: thread counts --------------------------------------------------------------

@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer reserves more address space than the limit")
def test_10_thread_count_beyond_the_machine_is_cut_down(tmp_path):
    out = isolated(tmp_path, """
        import numpy as np, fastopt as fo
        w = np.zeros(1 << 16, np.float32)
        opt = fo.SGD([w], num_threads=1000)
        opt.step([np.ones_like(w)])
        print("step ok", float(w[0]))
    """, limit_as=3_000_000_000)
    assert "step ok" in out


@pytest.mark.parametrize("n", [2**40, 2**31, 0, -1, 2.0, True])
def test_10_thread_count_out_of_range_is_refused(n):
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        fo.SGD([np.zeros(2)], num_threads=n)
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        fo.set_num_threads(n)
    opt = fo.SGD([np.zeros(2)])
    with pytest.raises(ValueError, match="num_threads must be a positive int"):
        opt.num_threads = n
    assert opt.num_threads is None


# ---- 11: options set after construction -----------------------------------------------

OPTION_EDITS = [
    ("maximize", True, {}),
    ("clipvalue", 0.1, {}),
    ("clipnorm", 0.1, {}),
    ("global_clipnorm", 0.1, {}),
    ("skip_nonfinite", True, {}),
    ("decoupled_weight_decay", True, {"weight_decay": 0.1, "convention": "torch"}),
]


@pytest.mark.parametrize(("key", "value", "base"), OPTION_EDITS, ids=[k for k, _, _ in OPTION_EDITS])
@pytest.mark.parametrize("when", ["before the first step", "after a step"])
def test_11_option_set_later_takes_effect(key, value, base, when):
    """Setting an option on a built optimizer gives exactly what building it
    with the option gives."""
    g = np.array([5.0, np.nan]) if key == "skip_nonfinite" else np.array([5.0, -5.0])
    w = np.array([1.0, 2.0])
    opt = fo.SGD([w], learning_rate=1.0, **base)
    if when == "after a step":
        opt.step([np.array([0.5, 0.25])])
    twin_w = w.copy()
    twin = fo.SGD([twin_w], learning_rate=1.0, **base, **{key: value})
    setattr(opt, key, value)
    assert getattr(opt, key) == value and opt.get_config()[key] == value
    opt.step([g.copy()])
    twin.step([g.copy()])
    np.testing.assert_array_equal(w, twin_w)
    assert not np.isnan(w).any() or key != "skip_nonfinite"


def test_11_option_edits_are_validated():
    opt = fo.SGD([np.zeros(2)], clipvalue=1.0)
    with pytest.raises(ValueError, match="clipvalue is set: set it to None first"):
        opt.clipnorm = 1.0
    with pytest.raises(ValueError, match="clipnorm must be a positive finite float"):
        opt.clipvalue, opt.clipnorm = None, -1.0
    with pytest.raises(TypeError, match="skip_nonfinite must be a bool"):
        opt.skip_nonfinite = "yes"
    with pytest.raises(ValueError, match="ema_momentum must be a float in"):
        opt.ema_momentum = 2.0
    with pytest.raises(AttributeError, match="use_ema decides which arrays"):
        opt.use_ema = True
    with pytest.raises(AttributeError, match="gradient_accumulation_steps decides"):
        opt.gradient_accumulation_steps = 4
    with pytest.raises(ValueError, match="AdamW's weight decay is decoupled"):
        fo.AdamW([np.zeros(2)]).decoupled_weight_decay = False
    assert opt.get_config()["use_ema"] is False


def test_11_option_can_be_turned_off_again():
    w = np.zeros(2)
    opt = fo.SGD([w], learning_rate=1.0, clipvalue=0.5)
    opt.step([np.array([3.0, -3.0])])
    opt.clipvalue = None
    opt.step([np.array([3.0, -3.0])])
    np.testing.assert_array_equal(w, [-3.5, 3.5])


# ---- 12: every way of editing a param group is seen --------------------------------

def test_12_group_edits_through_every_dict_method():
    w = np.array([0.0])
    opt = fo.SGD([w], learning_rate=1.0)
    opt.step([np.ones(1)])
    group = opt.param_groups[0]
    group |= {"learning_rate": 100.0}
    assert opt.current_hyperparameters()["learning_rate"] == 100.0
    opt.step([np.ones(1)])
    assert w[0] == -101.0
    for edit in (group.popitem, group.clear, lambda: group.pop("learning_rate"),
                 lambda: group.__delitem__("learning_rate")):
        before = snapshot(opt)
        with pytest.raises(ValueError, match="param group 0: .* cannot be removed"):
            edit()
        assert_unchanged(before, opt, what=repr(edit))
        assert group["learning_rate"] == 100.0
    group.update(lr=2.0)                     # the constructor's aliases
    assert group["learning_rate"] == 2.0 and group.setdefault("lr", 5.0) == 2.0


# ---- 14: norms beyond the float64 range of a sum of squares ------------------------

def test_14_clipnorm_with_a_sum_of_squares_beyond_float64():
    w = np.zeros(2)
    opt = fo.SGD([w], learning_rate=1.0, clipnorm=1.0)
    opt.step([np.array([1e200, 1e200])])
    np.testing.assert_allclose(w, [-np.sqrt(0.5)] * 2, rtol=1e-15)


def test_14_global_clipnorm_with_a_sum_of_squares_beyond_float64():
    a, b = np.zeros(3), np.zeros(1)
    opt = fo.SGD([a, b], learning_rate=1.0, global_clipnorm=2.0)
    big = np.array([3e200, 4e200, 0.0])
    opt.step([big, np.array([12e200])])
    np.testing.assert_allclose(a, -2.0 * big / 13e200, rtol=1e-15)
    np.testing.assert_allclose(b, [-2.0 * 12 / 13], rtol=1e-15)


def test_14_non_finite_grads_keep_their_meaning():
    w = np.zeros(2)
    fo.SGD([w], learning_rate=1.0, clipnorm=1.0).step([np.array([np.inf, 1.0])])
    assert np.isnan(w[0]) and w[1] == 0.0
    w = np.zeros(2)
    fo.SGD([w], learning_rate=1.0, global_clipnorm=1.0).step([np.array([np.inf, 1e200])])
    assert np.isnan(w).all()


def test_14_scaled_norm_matches_numpy_where_both_are_finite():
    rng = np.random.default_rng(14)
    g = rng.standard_normal(10_001) * 1e160
    w = np.zeros_like(g)
    opt = fo.SGD([w], learning_rate=1.0)
    opt._engine.set_grads([g])
    try:
        norm = opt._engine.norms(0, 1)[0]
    finally:
        opt._engine.clear_grads()
    scale = np.abs(g).max()
    np.testing.assert_allclose(norm, scale * np.linalg.norm(g / scale), rtol=1e-13)


# ---- 16: masked arrays ----------------------------------------------------------------

def test_16_masked_arrays_are_refused():
    with pytest.raises(TypeError, match=r"params\[0\]: a masked array"):
        fo.SGD([np.ma.array([1.0, 2.0], mask=[0, 1])])
    w = np.zeros(3)
    opt = fo.SGD([w], learning_rate=1.0)
    with pytest.raises(TypeError, match=r"grads\[0\]: a masked array.*g.filled\(0\)"):
        opt.step([np.ma.array([1.0, 1e30, 1.0], mask=[0, 1, 0])])
    assert not w.any()
    opt.step([np.ma.array([1.0, 1e30, 1.0], mask=[0, 1, 0]).filled(0)])
    np.testing.assert_array_equal(w, [-1.0, 0.0, -1.0])


# ---- 13: crafted state given to load_state_dict directly -------------------------------

@pytest.mark.parametrize("bad", [{"best": 10**400}, {"num_reports": 1e999}, [], "x", None],
                         ids=["huge-int", "inf-count", "list", "str", "none"])
def test_13_crafted_schedule_state_is_a_value_error(bad):
    from fastopt import schedules
    w = np.zeros(3)
    opt = fo.SGD([w], learning_rate=schedules.ReduceOnPlateau(0.1))
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    (path,) = sd["schedules"]
    sd["schedules"][path] = dict(sd["schedules"][path], **bad) if isinstance(bad, dict) else bad
    before = snapshot(opt)
    with pytest.raises(ValueError, match="schedule state for defaults.learning_rate"):
        opt.load_state_dict(sd)
    assert_unchanged(before, opt, what=f"schedule state {bad!r}")
