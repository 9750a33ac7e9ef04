"""fastopt.distributed: data-parallel training and the sharded optimizer.

The MPI tests launch ``mpiexec -n 2 python tests/mpi/<script>.py`` (one
launch per script, shared by the tests that read its output; the
equivalence of every optimizer and option also at 1 and 3 ranks, and a
launch per kill point of the fault tests) with a timeout,
so a hang fails fast instead of stalling the suite.  They are skipped, with the
reason, when mpi4py or an MPI launcher is missing (``pip install ".[mpi]"``).
"""
import importlib.util
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fastopt as fo
from fastopt import distributed as dist
from fastopt.distributed import _inputs, _layout, _manifest
from fastopt.distributed.__main__ import main as consolidate_cli
from robust_util import add_zeros_member, rebuild_npz, traced_peak

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "mpi")
WORLD = 2
TIMEOUT = 120


def _load_common():
    spec = importlib.util.spec_from_file_location("_fastopt_mpi_common",
                                                  os.path.join(SCRIPTS, "common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load_common()


def _launcher():
    if os.environ.get("FASTOPT_MPIEXEC"):
        return os.environ["FASTOPT_MPIEXEC"]
    # The MPI wheels install mpiexec next to the interpreter; a venv's bin/ may
    # not be on PATH when its pytest is run by full path.
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("mpiexec") or shutil.which("mpirun")


def _skip_reason():
    try:
        import mpi4py  # noqa: F401  (the package only: MPI starts on "from mpi4py import MPI")
    except ImportError:
        return "mpi4py is not installed (pip install '.[mpi]')"
    if _launcher() is None:
        return "no MPI launcher (mpiexec/mpirun) found (pip install '.[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def mpirun(script, directory, *args, n=WORLD):
    """Run ``script directory *args`` on ``n`` ranks; return {rank: report}
    from the ``result.rank<k>.json`` files the ranks wrote into ``directory``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1",
               # Open MPI refuses root and more ranks than cores unless told;
               # MPICH ignores these.
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    directory = str(directory)
    for name in os.listdir(directory):
        if name.startswith("result.rank"):
            os.unlink(os.path.join(directory, name))
    cmd = [_launcher(), "-n", str(n), sys.executable, os.path.join(SCRIPTS, script), directory,
           *args]
    try:
        # cwd outside the source tree: the ranks must import the installed fastopt
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                              cwd=directory)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(cmd)} did not finish in {TIMEOUT} s (a hang?)\n"
                    f"stdout: {e.stdout}\nstderr: {e.stderr}")
    assert proc.returncode == 0, (f"{' '.join(cmd)} failed ({proc.returncode})\n"
                                  f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    results = {}
    for rank in range(n):
        path = os.path.join(directory, f"result.rank{rank}.json")
        if os.path.exists(path):
            with open(path) as f:
                results[rank] = json.load(f)
    return results


def _single_threaded_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(1)


# ---- without MPI: the layout and the flat buffers ------------------------------

@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("sizes", [[0], [1], [15], [103, 0, 7], [1000], [65537],
                                   [5000, 3, 9000, 4096, 1], [40000, 40000, 17], [3] * 50])
def test_shard_bounds_balanced_on_the_chunk_grid(sizes, world):
    """Every boundary is a tensor's start or a multiple of CHUNK elements from
    it (a rank's piece is cut into the chunks of the whole tensor), and every
    shard is within CHUNK elements of total / world."""
    b = _layout.shard_bounds(sizes, world)
    total = sum(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    assert b[0] == 0 and b[-1] == total and len(b) == world + 1
    assert all(x <= y for x, y in zip(b, b[1:]))
    for x in b:
        i = max(k for k in range(len(sizes) + 1) if starts[k] <= x)
        assert x == total or (x - starts[i]) % _layout.CHUNK == 0, (x, starts)
    assert all(abs(n - total / world) <= _layout.CHUNK for n in np.diff(b)), b


def test_chunk_is_the_engines():
    assert _layout.CHUNK == fo._core.CHUNK


def test_classes_that_need_whole_tensors_are_sharded_by_tensor():
    """A class whose update of an element needs other elements of the tensor
    beyond per-tensor sums is sharded by whole tensors; the others in pieces."""

    class Coupled(fo.SGD):
        elementwise = False
    assert _inputs.whole_tensors(Coupled) and _inputs.whole_tensors(fo.Adafactor)
    assert not _inputs.whole_tensors(fo.Lamb)           # per-tensor sums: pieces
    assert not any(_inputs.whole_tensors(c) for c in (fo.Adam, fo.SGD, fo.SparseAdam))
    assert _inputs.shardable_class("Lamb") is fo.Lamb
    with pytest.raises(ValueError, match="unknown optimizer 'Nope'"):
        _inputs.shardable_class("Nope")


@pytest.mark.parametrize("world", [2, 3, 4])
def test_whole_tensor_layout_holds_each_tensor_on_one_rank(world):
    shapes = [(300, 20), (7,), (50, 50), (0, 3), (4, 5, 6), (1000,)]
    dtypes = ["<f4", "<f4", "<f8", "<f4", "<f4", "<f8"]
    buckets = _layout.make_buckets(shapes, dtypes, world, whole=True)
    held = {}
    for rank in range(world):
        for p in _layout.pieces_of(buckets, shapes, rank):
            assert p.start == 0 and p.length == int(np.prod(shapes[p.tensor]))
            assert _layout.piece_shape(p, shapes, (), whole=True) == shapes[p.tensor]
            assert p.tensor not in held
            held[p.tensor] = rank
    assert sorted(held) == list(range(len(shapes)))


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_pieces_cover_every_element_once(world):
    shapes = [(5, 7), (0,), (3,), (40, 2), (1,), (0, 4), (9,)]
    dtypes = ["<f4", "<f8", "<f4", "<f4", "<f8", "<f8", "<f8"]
    buckets = _layout.make_buckets(shapes, dtypes, world)
    seen = [np.zeros(int(np.prod(s)), dtype=int) for s in shapes]
    owners = [0] * len(shapes)
    for rank in range(world):
        for i, bi, start, n in _layout.pieces_of(buckets, shapes, rank):
            assert buckets[bi].dtype == dtypes[i]
            seen[i][start:start + n] += 1
            owners[i] += 1
    assert all((s == 1).all() for s in seen)
    assert all(k >= 1 for k in owners)     # zero-size tensors too (their step counts)


@pytest.mark.parametrize("world", [2, 3, 7])
def test_tables_are_cut_at_whole_rows_and_on_the_chunk_grid(world):
    """A table of row_params is cut at multiples of lcm(4096, width) from its
    start; the other tensors keep the 4096 grid, so their layout is as
    without tables; balance within a table's grid."""
    shapes = [(9000, 6), (50000,), (3000, 100), (700, 64)]
    dtypes = ["<f4"] * 4
    plain = _layout.make_buckets(shapes, dtypes, world)
    tables = _layout.make_buckets(shapes, dtypes, world, (0, 2))
    total = sum(int(np.prod(s)) for s in shapes)
    for k, b in enumerate(tables[0].bounds[1:-1], 1):
        assert abs(b - k * total / world) <= np.lcm(4096, 100)
    for rank in range(world):
        for p in _layout.pieces_of(tables, shapes, rank):
            shape = _layout.piece_shape(p, shapes, (0, 2))
            if p.tensor in (0, 2):
                width = shapes[p.tensor][1]
                assert p.start % np.lcm(4096, width) == 0 and p.length % width == 0
                assert shape == (p.length // width, width)
            else:
                assert p.start % 4096 == 0 and shape == (p.length,)
    # 64 divides 4096: a table of width 64 is cut where it would be anyway
    assert (_layout.make_buckets([(700, 64)], ["<f4"], world, (0,))[0].bounds ==
            _layout.make_buckets([(700, 64)], ["<f4"], world)[0].bounds)
    assert plain[0].bounds != tables[0].bounds or world == 1


@pytest.mark.parametrize(("row_params", "exc", "match"), [
    (0, TypeError, "row_params must be a list of parameter indices; got int"),
    ([1.0], TypeError, r"row_params\[0\] must be an int"),
    ([True], TypeError, r"row_params\[0\] must be an int"),
    ([3], ValueError, r"row_params\[0\] is 3; there are 3 params, indices 0 to 2"),
    ([1], ValueError, r"row_params\[0\]: params\[1\] has shape \(5,\); a RowGrad updates rows"),
    ([2], ValueError, r"params\[2\] has shape \(4, 0\)"),
    ([0, 0], ValueError, r"row_params\[1\]: params\[0\] is named twice"),
])
def test_row_params_are_checked(row_params, exc, match):
    with pytest.raises(exc, match=match):
        _inputs.check_row_params(row_params, [(8, 3), (5,), (4, 0)])
    assert _inputs.check_row_params([np.int64(0)], [(8, 3), (5,), (4, 0)]) == (0,)


def test_flat_arrays_are_views_of_one_aligned_buffer():
    arrays = dist.flat_arrays([(3, 4), (5,), (), (2, 2)], np.float64)
    assert [a.shape for a in arrays] == [(3, 4), (5,), (), (2, 2)]
    assert arrays[0].ctypes.data % dist.ALIGN == 0
    flat = _layout.flat_view(arrays, np.dtype(np.float64))
    assert flat is not None and flat.size == 12 + 5 + 1 + 4
    flat[...] = np.arange(flat.size)
    assert arrays[1][0] == 12 and arrays[3][1, 1] == 21
    assert _layout.flat_view([arrays[0], arrays[2]], np.dtype(np.float64)) is None  # a gap
    assert _layout.flat_view([np.zeros(3), np.zeros(3)], np.dtype(np.float64)) is None
    with pytest.raises(TypeError, match="float32 or float64"):
        dist.flat_arrays([(2,)], np.int32)


def test_clear_error_without_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'fastopt\[mpi\]'"):
        dist.allreduce_gradients([np.zeros(2)], object())


# ---- two ranks: trajectories -----------------------------------------------------

@pytest.fixture(scope="module")
def equivalence(tmp_path_factory):
    if _skip_reason():
        pytest.skip(_skip_reason())
    directory = tmp_path_factory.mktemp("mpi")
    out = directory / "equivalence.npz"
    mpirun("run_equivalence.py", directory, str(out))
    with np.load(out) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    return arrays, meta


@needs_mpi
@pytest.mark.parametrize("name", list(common.CASES))
def test_sharded_equals_data_parallel_bitwise(equivalence, name):
    arrays, _ = equivalence
    for i in range(len(common.SHAPES)):
        ref = arrays[f"{name}/dp/rank0/p{i}"]
        for rank in range(WORLD):
            for mode in ("dp", "sharded"):
                got = arrays[f"{name}/{mode}/rank{rank}/p{i}"]
                assert got.dtype == ref.dtype
                assert np.array_equal(got, ref), f"{mode} rank {rank} params[{i}]"


@needs_mpi
@pytest.mark.parametrize("name", list(common.CASES))
def test_matches_single_process_rank_order_bitwise(equivalence, name):
    """Same summation order as the MPI sum of two ranks: identical bits."""
    arrays, _ = equivalence
    with _single_threaded_blas():
        params, losses = common.run_reference(name, WORLD, "rank-order")
    for i, p in enumerate(params):
        for mode in ("dp", "sharded"):
            assert np.array_equal(arrays[f"{name}/{mode}/rank0/p{i}"], p), f"{mode} params[{i}]"
    assert np.array_equal(arrays[f"{name}/sharded/rank0/losses"], np.array(losses))


@needs_mpi
@pytest.mark.parametrize("name", [n for n, c in common.CASES.items()
                                  if set(c[2]) == {"float64"}])
def test_matches_single_process_global_batch(equivalence, name):
    """The whole batch's gradient in one process: another summation order, so
    float64 agreement to rounding (1e-12 relative)."""
    arrays, _ = equivalence
    with _single_threaded_blas():
        params, losses = common.run_reference(name, WORLD, "global")
    for i, p in enumerate(params):
        got = arrays[f"{name}/sharded/rank0/p{i}"]
        assert np.max(np.abs(got - p)) <= 1e-12 * np.max(np.abs(p)), f"params[{i}]"
    np.testing.assert_allclose(arrays[f"{name}/sharded/rank0/losses"], losses, rtol=1e-12)


@needs_mpi
@pytest.mark.parametrize("name", list(common.CASES))
def test_state_bytes_split_over_ranks(equivalence, name):
    _, meta = equivalence
    full = meta[f"{name}/dp"][0]["state_nbytes"]
    shards = [m["state_nbytes"] for m in meta[f"{name}/sharded"]]
    assert sum(shards) == full and all(s < full for s in shards), shards
    assert all(m["iterations"] == common.STEPS for m in meta[f"{name}/sharded"])


@needs_mpi
def test_state_bytes_per_rank_is_one_over_world(equivalence):
    _, meta = equivalence
    full = meta["memory/plain"]
    shards = [m["state_nbytes"] for m in meta["memory/sharded"]]
    assert full == 2 * 4 * sum(int(np.prod(s)) for s in common.MEMORY_SHAPES)   # Adam m, v
    assert sum(shards) == full
    for s in shards:    # boundaries on the 4096-element chunk grid, 2 float32 state arrays
        assert abs(s - full / WORLD) <= 2 * 4 * _layout.CHUNK, shards


# ---- two ranks: errors ------------------------------------------------------------

@pytest.fixture(scope="module")
def errors(tmp_path_factory):
    if _skip_reason():
        pytest.skip(_skip_reason())
    results = mpirun("run_errors.py", tmp_path_factory.mktemp("errors"))
    assert sorted(results) == list(range(WORLD))
    return results


@needs_mpi
@pytest.mark.parametrize("case,rank,index", [
    ("sharded_shape", 1, "grads[2]: expected shape (10, 3)"),
    ("sharded_dtype", 0, "grads[1]: expected dtype float64"),
    ("sharded_count", 1, "expected 4 grads"),
    ("sharded_none_mismatch", 0, "grads are None at indices [3]"),
    ("sharded_hyper_mismatch", 1, "'learning_rate': 0.5"),
    ("sharded_pair_twice", 1, "apply_gradients: params[0] appears twice"),
    ("sharded_pair_unknown", 0, "apply_gradients: pair 0 names a parameter this optimizer was "
                                "not built with"),
    ("allreduce_shape", 1, "grads[1] is float64 (7,)"),
    ("allreduce_dtype", 1, "grads[0]"),
    ("allreduce_readonly", 1, "grads[2]: the array is read-only"),
])
def test_bad_input_on_one_rank_fails_every_rank(errors, case, rank, index):
    for r in range(WORLD):
        got = errors[r][case]
        assert got["error"] is not None, f"rank {r} did not raise for {case}"
        assert "refused on every rank; nothing was changed" in got["error"]
        assert f"rank {rank}: " in got["error"] and index in got["error"], got["error"]
        assert got["unchanged"], f"rank {r}: {case} changed params, state or grads"
    assert errors[0][case]["error"] == errors[1][case]["error"]


@needs_mpi
@pytest.mark.parametrize("case,fragments", [
    ("build_shape", ["rank 1: params[1] float64 (11,); on rank 0: params[1] float64 (10,)"]),
    ("build_values", ["parameter values differ between ranks", "comm.Bcast"]),
    ("build_option", ["rank 1: beta_1=0.8; on rank 0: beta_1=0.9"]),
])
def test_construction_mismatch_fails_every_rank(errors, case, fragments):
    for r in range(WORLD):
        msg = errors[r][case]
        assert msg is not None and msg.startswith("ValueError: ShardedOptimizer()"), msg
        assert all(f in msg for f in fragments), msg


@needs_mpi
def test_construction_error_on_one_rank_reaches_every_rank(errors):
    assert errors[0]["build_bad_kwarg"].startswith("TypeError: ")      # its own error
    assert "bogus" in errors[0]["build_bad_kwarg"]
    assert errors[1]["build_bad_kwarg"].startswith("ValueError: ")     # told about rank 0
    assert "rank 0: TypeError" in errors[1]["build_bad_kwarg"]
    assert "bogus" in errors[1]["build_bad_kwarg"]
    assert errors[0]["build_threads_may_differ"] is None
    assert errors[1]["build_threads_may_differ"] is None


@needs_mpi
def test_steps_work_after_refused_ones(errors):
    for r in range(WORLD):
        assert errors[r]["sharded_ok_after_errors"]["error"] is None
        assert errors[r]["allreduce_ok_after_errors"]["error"] is None
        assert errors[r]["iterations"] == [1, 2]


# ---- 1, 2 and 3 ranks: every optimizer and option, bit for bit -----------------------



def _world_run(request, tmp_path_factory, script):
    """``(world, results)`` of ``script`` on ``request.param`` ranks."""
    if _skip_reason():
        pytest.skip(_skip_reason())
    world = request.param
    directory = tmp_path_factory.mktemp(f"{script[:-3]}{world}")
    return world, mpirun(script, directory, n=world)


@pytest.fixture(scope="module", params=[1, 2, 3])
def options_run(request, tmp_path_factory):
    return _world_run(request, tmp_path_factory, "run_options.py")


@needs_mpi
def test_every_optimizer_and_option_sharded_equals_one_process(options_run):
    """Every optimizer of optim_db in each convention, with clipnorm,
    global_clipnorm (also where the sums of squares overflow), skip_nonfinite
    (NaN and inf on one rank), accumulation, EMA, param groups and None
    grads, on 1, 2 and 3 ranks (tensors cut by the shards): params, state,
    averages and counters identical to one process given the same gradients
    summed in rank order."""
    world, results = options_run
    assert sorted(results) == list(range(world))
    from optim_db import optim_db
    expected = sum(len(e.conventions) for e in optim_db) * 8
    for r in range(world):
        assert results[r]["cases"] == expected
        assert results[r]["bad"] == [], "\n".join(results[r]["bad"])
    # Adafactor and Muon sharded by whole tensors: each tensor on exactly one rank
    for name in ("Adafactor", "Muon"):
        pieces = [p for r in range(world) for p in results[r]["whole"][name]]
        assert sorted(p[0] for p in pieces) == list(range(5)), pieces
        assert all(p[1] == 0 for p in pieces), pieces


@needs_mpi
def test_sharded_state_is_one_over_world(options_run):
    world, results = options_run
    for key, (_, full) in results[0]["state_bytes"].items():
        shards = [results[r]["state_bytes"][key][0] for r in range(world)]
        assert sum(shards) == full, key
        if key.split("/")[0] in results[0]["whole"]:
            continue        # whole tensors: balanced to within a tensor (checked above)
        # boundaries on the 4096-element chunk grid: within a chunk of 1/world per array
        assert all(abs(s - full / world) <= 8 * 8 * _layout.CHUNK for s in shards), (key, shards)


# ---- two ranks: checkpoints ---------------------------------------------------------

CKPT_CASE = "adam_torch_groups_none"    # param groups, None grads, torch step counts


def _checkpoint_run(tmp_path_factory, case):
    if _skip_reason():
        pytest.skip(_skip_reason())
    directory = tmp_path_factory.mktemp("ckpt")
    results = mpirun("run_checkpoint.py", directory, case)
    with np.load(directory / "result.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return directory, results, arrays


@pytest.fixture(scope="module")
def checkpoint_run(tmp_path_factory):
    return _checkpoint_run(tmp_path_factory, CKPT_CASE)


# Adafactor is sharded by whole tensors (its rows and columns need the whole
# matrix); its rank files keep the factored state arrays in their own shapes
WHOLE_CASE = "adafactor_torch_whole"


@pytest.fixture(scope="module")
def whole_checkpoint_run(tmp_path_factory):
    return _checkpoint_run(tmp_path_factory, WHOLE_CASE)


@needs_mpi
@pytest.mark.parametrize("run", ["checkpoint_run", "whole_checkpoint_run"])
def test_resume_from_sharded_checkpoint_bitwise(run, request):
    _, _, arrays = request.getfixturevalue(run)
    for r in range(WORLD):
        for i in range(len(common.SHAPES)):
            a = arrays[f"rank{r}/A/p{i}"]
            assert np.array_equal(arrays[f"rank{r}/B/p{i}"], a), f"load: rank {r} params[{i}]"
            assert np.array_equal(arrays[f"rank{r}/C/p{i}"], a), \
                f"load_consolidated: rank {r} params[{i}]"


@needs_mpi
def test_torn_checkpoint_refused_on_every_rank(checkpoint_run):
    _, results, _ = checkpoint_run
    for r in range(WORLD):
        assert "belongs to a different save" in results[r]["torn_error"]
        assert "rank 1: " in results[r]["torn_error"]
        assert results[r]["torn_unchanged"]


@needs_mpi
@pytest.mark.parametrize("case,fragments", [
    # passes the shard checks, fails load_state_dict's: rank 0 used to hang
    ("extra", ["rank 1: ", ".npz: extra.micro_steps: step counters must be ints >= 0"]),
    ("consolidated", ["rank 1: ", "consolidated.npz: extra.micro_steps: step counters"]),
    # names the real file of rank 1, outside the checkpoint's directory: used to load it
    ("escape", ["rank 0: ", "rank 1: ", "the file of rank 1 is named '../ckpt.rank1.s5-",
                "a rank file is named without a directory"]),
    ("readonly", ["rank 1: ", "params[1] is read-only"]),
])
def test_load_refused_by_one_rank_fails_every_rank_and_changes_nothing(checkpoint_run, case,
                                                                       fragments):
    _, results, _ = checkpoint_run
    for r in range(WORLD):
        got = results[r][case]
        assert got["error"] is not None, f"rank {r} did not raise for {case}"
        assert "refused on every rank; nothing was changed" in got["error"], got["error"]
        assert all(f in got["error"] for f in fragments), got["error"]
        assert ("rank 0: " in got["error"]) == ("rank 0: " in fragments), got["error"]
        assert got["unchanged"], f"rank {r}: {case} changed params, state or iterations"
    assert results[0][case]["error"] == results[1][case]["error"]


@needs_mpi
def test_ranks_step_together_after_refused_loads(checkpoint_run):
    _, results, _ = checkpoint_run
    assert [results[r]["after_refusals"] for r in range(WORLD)] == [[3, 4]] * WORLD


@needs_mpi
@pytest.mark.parametrize(("run", "case"), [("checkpoint_run", CKPT_CASE),
                                           ("whole_checkpoint_run", WHOLE_CASE)])
def test_consolidated_checkpoint_loads_into_plain_optimizer(run, case, request, tmp_path):
    """consolidate -> fo.load into a single-process optimizer -> the same
    trajectory as the sharded run (rank-order gradients: bit for bit)."""
    directory, _, arrays = request.getfixturevalue(run)
    out = tmp_path / "single.npz"
    proc = subprocess.run([sys.executable, "-m", "fastopt.distributed", "consolidate",
                           str(directory / "ckpt"), str(out)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "merged from 2 ranks" in proc.stdout and not proc.stderr, proc.stderr
    cls, kwargs, dtypes, options = common.CASES[case]
    params = common.init(dtypes, seed=7)
    opt = cls(common.params_arg(params, options), **kwargs)
    fo.load(str(out), opt)
    assert opt.iterations == 5
    X, Y = common.data()
    with _single_threaded_blas():
        for t in range(5, common.STEPS):
            parts = [common.grads_for(params, common.part(X[t], r, WORLD),
                                      common.part(Y[t], r, WORLD), t, options)[1]
                     for r in range(WORLD)]
            grads = [None if g0 is None else (g0 + g1) / WORLD for g0, g1 in zip(*parts)]
            opt.step(grads)
    for i, p in enumerate(params):
        assert np.array_equal(p, arrays[f"rank0/A/p{i}"]), f"params[{i}]"


@needs_mpi
def test_consolidate_refuses_a_torn_checkpoint(checkpoint_run, tmp_path):
    directory, _, _ = checkpoint_run
    with pytest.raises(ValueError, match="belongs to a different save"):
        dist.consolidate(str(directory / "mixed" / "ckpt"), str(tmp_path / "x.npz"))
    assert not (tmp_path / "x.npz").exists()
    assert consolidate_cli(["consolidate", str(directory / "mixed" / "ckpt"),
                       str(tmp_path / "x.npz")]) == 1


@needs_mpi
def test_load_with_another_world_size_refused(checkpoint_run, tmp_path):
    directory, _, _ = checkpoint_run
    results = mpirun("run_load.py", tmp_path, str(directory / "ckpt"), CKPT_CASE, n=1)
    assert "saved by 2 ranks; this run has 1" in results[0]["error"]
    assert "load_consolidated" in results[0]["error"]
    assert results[0]["iterations"] == 0


# ---- crafted sharded checkpoints (no MPI needed) -----------------------------------

TINY_SHAPES = [(4, 3), (5,)]


def _tiny_sharded(directory, prefix="ck", save_id="s1", dtype=np.float64, **kwargs):
    """A sharded checkpoint of world size 1 written as ShardedOptimizer.save
    writes one (without MPI): <prefix>.rank0.npz and <prefix>.manifest.json.
    Returns the prefix and the params it holds."""
    shapes = TINY_SHAPES
    params = [np.linspace(-1, 1, int(np.prod(s))).reshape(s).astype(dtype) for s in shapes]
    dtypes = [p.dtype.str for p in params]
    opt = fo.Adam([p.reshape(-1) for p in params], learning_rate=0.1, **kwargs)
    opt.step([np.ones(p.size, p.dtype) for p in params])
    buckets = _layout.make_buckets(shapes, dtypes, 1)
    sd = opt.state_dict()
    sd["shard"] = {"save_id": save_id, "rank": 0, "world_size": 1,
                   "pieces": _layout.piece_entries(_layout.pieces_of(buckets, shapes, 0))}
    sd["params"] = [p.copy() for p in opt.params]
    fo.checkpoint.write(directory / f"{prefix}.rank0.npz", sd)
    manifest = {"format": dist.MANIFEST_FORMAT, "version": dist.MANIFEST_VERSION,
                "save_id": save_id, "world_size": 1, "class": "Adam",
                "config": opt.get_config(),
                "iterations": 1, "shapes": [list(s) for s in shapes], "dtypes": dtypes,
                "group_sizes": [2], "ranks": [f"{prefix}.rank0.npz"],
                "rank_files": [dict(iterations=1, **_manifest.file_digest(
                    directory / f"{prefix}.rank0.npz"))],
                "buckets": [b.manifest_entry() for b in buckets]}
    _manifest.write_json_atomic(str(directory / f"{prefix}.manifest.json"), manifest)
    return str(directory / prefix), params


def _record_rank_file(prefix):
    """Record the rank file's size and SHA-256 in the manifest, as a save
    that wrote it would: the checks behind the checksum are what is tried."""
    _edit_manifest(prefix, lambda m: m["rank_files"][0].update(
        _manifest.file_digest(prefix + ".rank0.npz")))


def _edit_manifest(prefix, edit):
    with open(prefix + ".manifest.json") as f:
        manifest = json.load(f)
    edit(manifest)
    with open(prefix + ".manifest.json", "w") as f:
        json.dump(manifest, f)


def _refuse_consolidate(prefix, out, pattern, capsys):
    """consolidate raises a ValueError (an OSError for a missing file)
    matching ``pattern`` and writes nothing; the command line prints one line
    and exits with status 1."""
    with traced_peak() as peak:
        with pytest.raises((ValueError, FileNotFoundError), match=pattern):
            dist.consolidate(prefix, out)
    assert peak[0] < 32 << 20, f"consolidate allocated {peak[0] >> 20} MiB before refusing"
    assert not os.path.exists(out)
    capsys.readouterr()
    assert consolidate_cli(["consolidate", prefix, str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(pattern, err), err
    assert not os.path.exists(out)


def test_tiny_sharded_checkpoint_consolidates_and_loads(tmp_path):
    """The crafted-file tests below start from this valid checkpoint."""
    prefix, params = _tiny_sharded(tmp_path)
    out = tmp_path / "single.npz"
    assert consolidate_cli(["consolidate", prefix, str(out)]) == 0
    mine = [np.zeros(s) for s in TINY_SHAPES]
    opt = fo.Adam(mine, learning_rate=0.1)
    fo.load(out, opt)
    assert opt.iterations == 1 and all((p == q).all() for p, q in zip(mine, params))


def test_consolidate_checks_rank_files_before_allocating(tmp_path, capsys):
    """A 1 KB manifest claiming a 373 GiB parameter used to make consolidate
    allocate it before opening a rank file (MemoryError and a traceback)."""
    prefix, _ = _tiny_sharded(tmp_path)

    def huge(m):
        m["shapes"], m["dtypes"] = [[10 ** 11]], ["<f4"]
        m["buckets"] = [b.manifest_entry()
                        for b in _layout.make_buckets([(10 ** 11,)], ["<f4"], 1)]
    _edit_manifest(prefix, huge)
    _refuse_consolidate(prefix, tmp_path / "out.npz",
                        r"ck\.rank0\.npz: its pieces do not match the manifest's layout", capsys)
    proc = subprocess.run([sys.executable, "-m", "fastopt.distributed", "consolidate", prefix,
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr


def test_consolidate_reads_no_piece_larger_than_the_manifest_says(tmp_path, capsys):
    """A rank file whose params piece is a deflated 256 MiB array, or a stored
    piece of the wrong size: refused from its header, before anything is allocated."""
    prefix, _ = _tiny_sharded(tmp_path)
    rank_file = prefix + ".rank0.npz"
    with zipfile.ZipFile(rank_file) as z:
        name = next(n for n in z.namelist() if "params/1" in n)
    original = tmp_path / "original.npz"
    shutil.copy(rank_file, original)
    for deflate, pattern in ((True, "compressed, which fastopt never writes"),
                             (False, r"piece of params\[1\] is float64 \(1048576,\); "
                                     r"expected float64 \(5,\)")):
        rebuild_npz(original, tmp_path / "tmp.npz", drop={name})
        add_zeros_member(tmp_path / "tmp.npz", name, (1 << 25,) if deflate else (1 << 20,),
                         np.float64, deflate=deflate)
        os.replace(tmp_path / "tmp.npz", rank_file)
        _record_rank_file(prefix)
        _refuse_consolidate(prefix, tmp_path / "out.npz", r"ck\.rank0\.npz: .*" + pattern,
                            capsys)


def test_consolidate_refuses_rank_file_names_with_a_directory(tmp_path, capsys):
    """A manifest naming "../x.npz" used to make consolidate read that file."""
    inner = tmp_path / "inner"
    inner.mkdir()
    prefix, _ = _tiny_sharded(inner)
    shutil.copy(prefix + ".rank0.npz", tmp_path / "outside.npz")
    for name in ("../outside.npz", str(tmp_path / "outside.npz"), "..", "", "a\0b"):
        _edit_manifest(prefix, lambda m: m.update(ranks=[name]))
        _refuse_consolidate(prefix, tmp_path / "out.npz",
                            "the file of rank 0 is named .*; a rank file is named without a "
                            "directory", capsys)


@pytest.mark.parametrize("cid,edit,pattern", [
    ("empty", lambda m: m.clear(), "not a fastopt sharded-checkpoint manifest"),
    ("no-ranks", lambda m: m.pop("ranks"), "manifest lacks ranks"),
    ("world-str", lambda m: m.update(world_size="1"), r"bad world_size entry"),
    ("world-zero", lambda m: m.update(world_size=0), r"bad world_size entry"),
    ("shapes-str", lambda m: m.update(shapes="abc"), r"bad shapes or dtypes entry"),
    ("shapes-negative", lambda m: m.update(shapes=[[-12], [5]]), "bad shapes or dtypes"),
    ("dtypes-int8", lambda m: m.update(dtypes=["|i1", "<f8"]), "bad shapes or dtypes"),
    ("ranks-str", lambda m: m.update(ranks="ck.rank0.npz"), "bad ranks entry"),
    ("ranks-int", lambda m: m.update(ranks=[7]), "the file of rank 0 is named 7"),
    ("buckets-ints", lambda m: m.update(buckets=[1]), "bad buckets entry"),
    ("buckets-no-bounds", lambda m: m.update(buckets=[{}]), "shard boundaries"),
    ("iterations-huge", lambda m: m.update(iterations=10 ** 400), "bad iterations entry"),
    ("config-list", lambda m: m.update(config=[]), "bad config entry"),
    ("missing-rank-file", lambda m: m.update(ranks=["nope.npz"]),
     "nope.npz: missing; the manifest"),
    ("dims-huge", lambda m: m.update(shapes=[[2 ** 63, 1], [5]]), "bad shapes or dtypes"),
])
def test_consolidate_cli_refuses_crafted_manifests_with_one_line(tmp_path, capsys, cid, edit,
                                                                 pattern):
    prefix, _ = _tiny_sharded(tmp_path)
    _edit_manifest(prefix, edit)
    _refuse_consolidate(prefix, tmp_path / "out.npz", pattern, capsys)


def _point_rank_file_at(prefix, name):
    """The manifest names ``name`` as the rank file, with its true size and SHA-256."""
    directory = os.path.dirname(prefix)
    _edit_manifest(prefix, lambda m: (m.update(ranks=[name]), m["rank_files"][0].update(
        _manifest.file_digest(os.path.join(directory, name)))))


def _other_save(prefix):
    _tiny_sharded(pathlib.Path(os.path.dirname(prefix)), "other", save_id="s2")
    _point_rank_file_at(prefix, "other.rank0.npz")


def _plain_checkpoint(prefix):
    fo.save(os.path.join(os.path.dirname(prefix), "plain.npz"),
            fo.Adam([np.zeros(12), np.zeros(5)]))
    _point_rank_file_at(prefix, "plain.npz")


def _record(**fields):
    return lambda prefix: _edit_manifest(prefix, lambda m: m["rank_files"][0].update(fields))


@pytest.mark.parametrize("cid,craft,pattern", [
    ("other-save", _other_save, "belongs to a different save than the manifest"),
    ("plain-checkpoint", _plain_checkpoint, "not a shard of a sharded checkpoint"),
    ("sha-differs", _record(sha256="0" * 64), "its SHA-256 .* differs from the manifest's"),
    ("bytes-differ", _record(bytes=10), "bytes; the manifest records 10"),
    ("iterations-differ", _record(iterations=7), "a mix of two saves"),
    ("sha-short", _record(sha256="abc"), "bad rank_files entry"),
    ("no-rank-files", lambda p: _edit_manifest(p, lambda m: m.pop("rank_files")),
     "bad rank_files entry"),
    ("version-3", lambda p: _edit_manifest(p, lambda m: m.update(version=3)),
     "manifest version 3; this fastopt reads versions 1, 2"),
    ("version-true", lambda p: _edit_manifest(p, lambda m: m.update(version=True)),
     "manifest version True"),
])
def test_manifests_that_point_elsewhere_refused(tmp_path, capsys, cid, craft, pattern):
    """A manifest naming another save's rank file, a plain checkpoint, or a
    rank file its records do not describe: refused before the file is used."""
    prefix, _ = _tiny_sharded(tmp_path)
    craft(prefix)
    _refuse_consolidate(prefix, tmp_path / "out.npz", pattern, capsys)


@pytest.mark.parametrize("cid,text,pattern", [
    ("deep", b"[" * 100000 + b"]" * 100000, r"corrupt manifest \(RecursionError"),
    ("utf8", b'{"format": "\xff"}', r"corrupt manifest \(UnicodeDecodeError"),
    ("digits", b'{"format": 1' + b"0" * 5000 + b"}", r"corrupt manifest \(ValueError"),
])
def test_consolidate_cli_refuses_unparseable_manifests(tmp_path, capsys, cid, text, pattern):
    prefix, _ = _tiny_sharded(tmp_path)
    with open(prefix + ".manifest.json", "wb") as f:
        f.write(text)
    _refuse_consolidate(prefix, tmp_path / "out.npz", pattern, capsys)


def _edit_rank_meta(prefix, edit):
    """Edit the metadata of the rank file; arrays it no longer names are dropped."""
    file = prefix + ".rank0.npz"
    with np.load(file) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop(fo.checkpoint._META).tobytes())
    edit(meta)
    text = json.dumps(meta)
    arrays = {k: a for k, a in arrays.items() if f'"__array__": {json.dumps(k)}' in text}
    arrays[fo.checkpoint._META] = np.frombuffer(text.encode(), dtype=np.uint8)
    np.savez(file, **arrays)
    _record_rank_file(prefix)


@pytest.mark.parametrize("cid,edit,pattern", [
    ("pieces-ints", lambda m: m["shard"].update(pieces=[1, 2]), "its pieces do not match"),
    ("pieces-str", lambda m: m["shard"].update(pieces="x"), "its pieces do not match"),
    ("shard-list", lambda m: m.update(shard=[]), "not a shard"),
    ("iterations-inf", lambda m: m.update(iterations=float("inf")), "iterations: step counters"),
    ("iterations-list", lambda m: m.update(iterations=[]), "iterations: step counters"),
    ("state-int", lambda m: m.update(state=3), "does not hold the params, state and step"),
    ("state-piece-int", lambda m: m["state"].__setitem__(0, 3), r"state of the piece of params"),
    ("params-dict", lambda m: m.update(params={}), "does not hold the params"),
    ("steps-list", lambda m: m.update(steps=[1, 1]), "does not hold the params, state and step"),
])
def test_consolidate_cli_refuses_crafted_rank_files_with_one_line(tmp_path, capsys, cid, edit,
                                                                  pattern):
    prefix, _ = _tiny_sharded(tmp_path)
    _edit_rank_meta(prefix, edit)
    _refuse_consolidate(prefix, tmp_path / "out.npz", pattern, capsys)


def _set_masters(value):
    def edit(meta):
        if value is None:
            meta["extra"].pop("masters")
        else:
            meta["extra"]["masters"] = value
    return edit


@pytest.mark.parametrize("cid,edit,pattern", [
    ("masters-dropped", _set_masters(None), "lacks extra.masters, the float32 master copies"),
    ("masters-none-listed", _set_masters([]), "extra.masters does not hold one array per piece"),
    ("masters-two", _set_masters([{"__array__": "a/params/0"}, {"__array__": "a/params/1"}]),
     "extra.masters does not hold one array per piece|more than once"),
])
def test_consolidate_refuses_rank_files_without_their_master_copies(tmp_path, capsys, cid, edit,
                                                                     pattern):
    """16-bit params with master_weights: a rank file must hold the float32
    master copy of each of its 16-bit pieces, or consolidate refuses it."""
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    prefix, _ = _tiny_sharded(tmp_path, dtype=bf16, master_weights=True)
    dist.consolidate(prefix, str(tmp_path / "good.npz"))     # as written, it consolidates
    _edit_rank_meta(prefix, edit)
    _refuse_consolidate(prefix, tmp_path / "out.npz", pattern, capsys)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_manifest_gets_the_mode_open_would_give_and_keeps_it(tmp_path, umask):
    path = str(tmp_path / "ck.manifest.json")
    old = os.umask(umask)
    try:
        _manifest.write_json_atomic(path, {"a": 1})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
        os.chmod(path, 0o640)
        _manifest.write_json_atomic(path, {"a": 2})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


# ---- the example ------------------------------------------------------------------

@needs_mpi
def test_example_matches_single_process(tmp_path):
    script = os.path.join(os.path.dirname(HERE), "examples", "mpi_train.py")
    if not os.path.exists(script):
        pytest.skip("examples/ is not in this checkout")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [_launcher(), "-n", str(WORLD), sys.executable, script, "--steps", "60"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    losses = [float(line.split("final loss ")[1].split()[0]) for line in lines
              if "final loss" in line]
    rel = float(proc.stdout.split("relative difference ")[1].split(")")[0])
    assert len(losses) == 2 and rel <= 1e-12, proc.stdout
    assert losses[0] == losses[1], proc.stdout     # printed to 12 significant digits


# ---- row gradients -----------------------------------------------------------------

@pytest.fixture(scope="module")
def rows_run(tmp_path_factory):
    if _skip_reason():
        pytest.skip(_skip_reason())
    results = mpirun("run_rows.py", tmp_path_factory.mktemp("rows"))
    assert sorted(results) == list(range(WORLD))
    return results


@needs_mpi
@pytest.mark.parametrize("name", ["SparseAdam", "Adam", "SGD"])
def test_allreduce_of_rowgrads_is_one_process_bit_for_bit(rows_run, name):
    """Every rank's rows gathered in rank order: the step equals, bit for bit,
    one process given all of them (repeats within and across ranks, a rank
    with no rows); every rank ends with the same table."""
    for r in range(WORLD):
        got = rows_run[r][name]
        assert got["same"] and got["same_state"] and got["replaced"], (r, got)
    assert rows_run[0][name]["table"] == rows_run[1][name]["table"]


@needs_mpi
@pytest.mark.parametrize("name", ["SparseAdam", "Adam", "SGD", "Adagrad"])
def test_sharded_rowgrads_are_one_process_bit_for_bit(rows_run, name):
    """ShardedOptimizer with row_params: every rank's rows gathered, each rank
    applies those of its rows; params, and the state through save,
    consolidate and load, equal one process given all the rows, bit for bit;
    load_consolidated then continues as that process does."""
    got = [rows_run[r][f"sharded {name}"] for r in range(WORLD)]
    # the first table is cut between the ranks, at a whole row
    owners = [[p for p in g["pieces"] if p[0] == 0] for g in got]
    assert all(owners), owners
    assert all(p[1] % 6 == 0 and p[2] % 6 == 0 for o in owners for p in o)
    for r, g in enumerate(got):
        assert g["same"] and g["same_after_load"], (r, g)
    assert got[0]["same_state"] is True


REFUSED = {
    "not a table": r"grads\[0\]: a RowGrad for a parameter not in row_params; .*"
                   r"row_params=\[\.\.\., 0\]",
    "clipnorm": r"grads\[0\]: a RowGrad, with an option that reduces over whole tensors",
    "kinds differ": r"ranks skip different parameters or give rows for different ones;.*\n"
                    r"rank 0: grads are None at indices \[\], RowGrads at \[0\]\n"
                    r"rank 1: grads are None at indices \[\], RowGrads at \[\]",
    "row out of range": r"rank 1: grads\[0\]\.indices\[0\] is 8; params\[0\] has 8 rows",
    "bad width": r"grads\[0\]\.values: expected float64 of shape \(1, 3\) .* got float64 "
                 r"\(1, 2\)",
}


@needs_mpi
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sharded_rowgrads_refused_on_every_rank_change_nothing(rows_run, case):
    for r in range(WORLD):
        msg = rows_run[r]["refusals"][case]
        assert msg is not None and "refused on every rank; nothing was changed" in msg, (r, msg)
        assert re.search(REFUSED[case], msg, re.S), (r, msg)
        assert rows_run[r]["refusals"][case + " unchanged"], r
        assert "row_params[0]: params[1] has shape (4,)" in rows_run[r]["refusals"]["1-D table"]


MODE_CASES = ["ScheduleFreeAdamW", "ScheduleFreeSGD", "ScheduleFreeAdamW keras", "ASGD",
              "SGD swa"]


@pytest.fixture(scope="module", params=[2, 3])
def modes_run(request, tmp_path_factory):
    return _world_run(request, tmp_path_factory, "run_modes.py")


@needs_mpi
@pytest.mark.parametrize("name", MODE_CASES)
def test_methods_that_rewrite_params_run_sharded_as_one_process(modes_run, name):
    """eval()/train() (schedule-free), use_averaged_params() (ASGD) and
    swap_averages() (SWA) on a ShardedOptimizer: every rank rewrites its shard
    and the shards are gathered; params after each call, and the state, mode,
    kept y and averages through save, consolidate and a plain load, equal one
    process's bit for bit."""
    _every_check_true(*modes_run, name)
    assert "has no attribute 'eval'" in modes_run[1][0]["no eval"]


def _every_check_true(world, results, name):
    """Every check a rank script reported for case ``name`` passed on every rank."""
    for r in range(world):
        got = results[r][name]
        assert all(v is True for v in got.values()), (r, got)


COMPACT_CASES = ["Adam int8", "AdamW bfloat16 amsgrad", "RMSprop float16 centered",
                 "Adam groups", "AdamW bfloat16 params", "Adam bfloat16 params global_clipnorm",
                 "SGD bfloat16 master weights",
                 "Adam float16 params int8 state"]


@pytest.fixture(scope="module", params=[1, 2, 3])
def compact_run(request, tmp_path_factory):
    return _world_run(request, tmp_path_factory, "run_compact.py")


@needs_mpi
@pytest.mark.parametrize("name", COMPACT_CASES)
def test_compact_state_sharded_equals_one_process(compact_run, name):
    """int8, bfloat16 and float16 state and 16-bit params (stochastic and
    nearest rounding, master copies, float32 and 16-bit grads, a mix of 16-bit
    and float32 params) on 1, 2 and 3 ranks (tensors cut by the shards at
    multiples of 4096 elements, one under min_8bit_size, groups of different
    state_dtype): params after every step, the consolidated state and master
    copies (dtypes and bytes), and steps after load_consolidated equal one
    process's bit for bit."""
    _every_check_true(*compact_run, name)


# ---- a rank killed during a sharded save ------------------------------------------

KILL_POINTS = ["before_write", "mid_write", "before_rename", "after_rename",
               "before_manifest", "mid_manifest"]


def _mpirun_killed(directory, point):
    """Run tests/mpi/run_kill.py on 2 ranks; the victim's SIGKILL ends the launch."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [_launcher(), "-n", "2", sys.executable, os.path.join(SCRIPTS, "run_kill.py"),
           str(directory), point]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=directory)
    return proc


def _ckpt_files(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith("ckpt."))


@needs_mpi
@pytest.mark.parametrize("point", KILL_POINTS)
def test_rank_killed_mid_save_leaves_the_previous_checkpoint(tmp_path, point):
    """SIGKILL of one rank at each point of the second save: the manifest
    still names the first save, whose every file is intact (size and SHA-256
    as recorded) and consolidates to exactly what it held; the second save's
    files are named by no manifest, and one that points at them is refused
    as incomplete or corrupt (never loaded as a mix of two steps)."""
    proc = _mpirun_killed(tmp_path, point)
    assert proc.returncode != 0, f"the kill at {point} did not happen: {proc.stdout}"
    manifest = dist.read_manifest(str(tmp_path / "ckpt"))
    assert manifest["iterations"] == 3
    assert [r["iterations"] for r in manifest["rank_files"]] == [3, 3]
    for name, record in zip(manifest["ranks"], manifest["rank_files"]):
        assert ".s3-" in name
        assert _manifest.file_digest(str(tmp_path / name)) == {
            "bytes": record["bytes"], "sha256": record["sha256"]}
    out = tmp_path / "after.npz"
    dist.consolidate(str(tmp_path / "ckpt"), str(out))
    got, want = fo.checkpoint.read(out), fo.checkpoint.read(tmp_path / "reference.npz")
    assert got["iterations"] == want["iterations"] == 3
    for a, b in zip(got["params"] + [x for s in got["state"] for x in s],
                    want["params"] + [x for s in want["state"] for x in s]):
        assert np.array_equal(a, b)
    # the second save's rank files, if any reached their place
    new = [n for n in _ckpt_files(tmp_path) if ".s5-" in n]
    assert all(n.endswith(".npz") for n in new)
    if point in ("before_manifest", "mid_manifest"):
        assert len(new) == 2, new           # the whole new set was written: only uncommitted
    if point in ("before_write", "mid_write", "before_rename"):
        assert not any(".rank1." in n for n in new), new
    for name in new:
        rank = int(name.split(".rank")[1].split(".")[0])
        crafted = dict(manifest, ranks=[name if r == rank else n
                                        for r, n in enumerate(manifest["ranks"])])
        _manifest.write_json_atomic(str(tmp_path / "mixed.manifest.json"), crafted)
        with pytest.raises(ValueError, match="bytes; the manifest records|SHA-256"):
            dist.consolidate(str(tmp_path / "mixed"), str(tmp_path / "mixed.npz"))
    # leftover temporary files are not checkpoint files
    assert all(n.startswith("ckpt.rank") or n == "ckpt.manifest.json"
               for n in _ckpt_files(tmp_path))


@needs_mpi
def test_completed_save_replaces_the_previous_set(tmp_path):
    """The control run: the second save commits, and the first save's files go."""
    proc = _mpirun_killed(tmp_path, "none")
    assert proc.returncode == 0, proc.stderr
    manifest = dist.read_manifest(str(tmp_path / "ckpt"))
    assert manifest["iterations"] == 5
    assert _ckpt_files(tmp_path) == sorted(manifest["ranks"] + ["ckpt.manifest.json"])


@needs_mpi
def test_consolidate_keeps_extra_state(tmp_path):
    """Nadam's momentum products (per group and per parameter), moving
    averages, accumulators saved between micro-steps and the skip counter
    survive consolidate: fo.load of the result equals one process trained
    alike, state dict for state dict, and load_consolidated trains on to
    the same bits."""
    results = mpirun("run_extra.py", tmp_path)
    assert sorted(results) == list(range(WORLD))
    for r in range(WORLD):
        assert len(results[r]) == 3
        for case, bad in results[r].items():
            assert bad == [], f"rank {r}, {case}: {bad}"
