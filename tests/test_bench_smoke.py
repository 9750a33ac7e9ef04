"""The benchmark runs (tiny sizes, a few seconds) and writes what it promises.

Structure only: timings on a shared CI machine mean nothing, so nothing here
asserts a speed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"

pytestmark = pytest.mark.skipif(not RUN.exists(), reason="bench/ is not in this checkout")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # torch, when installed, would add seconds of import and fused-kernel
    # warm-up; the smoke run checks the bench itself, so it leaves torch out
    env = dict(os.environ, OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, str(RUN), "--smoke", "--no-torch", "--no-plot",
                        "--threshold", "--out", str(out), "--name", "smoke"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out / "smoke.json") as f:
        data = json.load(f)
    return out, data, r.stdout


def test_outputs_written(smoke):
    out, data, stdout = smoke
    assert (out / "smoke.md").exists()
    assert "wrote" in stdout
    assert set(data) == {"meta", "targets", "results", "threshold"}


def test_every_case_every_implementation(smoke):
    _, data, _ = smoke
    res = data["results"]
    opts = {r["optimizer"] for r in res}
    assert opts == {"adam", "adamw", "sgd"}
    cases = {r["case"] for r in res}
    assert {"1e3", "4096", "resnet50[:12]"} <= cases
    for opt in opts:
        for case in cases:
            for threads in (1, 2):
                got = {r["impl"] for r in res if (r["optimizer"], r["case"], r["threads"])
                       == (opt, case, threads)}
                want = {"floor", "fastopt", "numpy"} | ({"fastopt_keras"} if opt == "adam"
                                                        else set())
                assert got == want, (opt, case, threads, got)
    for r in res:
        assert r["median_s"] > 0 and r["ns_per_element"] > 0
        assert r["q1_s"] <= r["median_s"] <= r["q3_s"]
        assert r["bytes_per_element"] == (28 if r["optimizer"] != "sgd" else 20)


def test_targets_and_machine_reported(smoke):
    out, data, _ = smoke
    md = (out / "smoke.md").read_text()
    assert "## Targets" in md and "load average" in md
    kinds = {t["target"] for t in data["targets"]}
    assert "<= 3 us per step (torch convention)" in kinds
    assert "<= 3 us per step (keras convention)" in kinds
    for t in data["targets"]:
        assert isinstance(t["met"], bool) and t["value"] > 0
    m = data["meta"]["machine"]
    for key in ("numpy", "fastopt", "fastopt_simd", "logical_cpus"):
        assert key in m
    assert data["meta"]["load_before"] is None or len(data["meta"]["load_before"]) == 3


def test_threshold_sweep_structure(smoke):
    _, data, _ = smoke
    th = data["threshold"]
    assert set(th) == {"adam", "adamw", "sgd"}
    for v in th.values():
        assert [r["elements"] for r in v["rows"]] == [2 ** e for e in range(9, 13)]
        assert v["crossover"] is None or v["crossover"] in [r["elements"] for r in v["rows"]]


def test_implementations_agree():
    """The bench refuses to time implementations that compute different updates."""
    sys.path.insert(0, str(RUN.parent))
    try:
        import impls
    finally:
        sys.path.remove(str(RUN.parent))
    for spec in impls.SPECS.values():
        impls.check_agreement(spec, ["fastopt", "numpy"])
    bad = impls.Spec("adam", 2, impls.SPECS["adam"].fastopt,
                     lambda ps: impls.NumpyAdam(ps, lr=2e-3), None)
    with pytest.raises(AssertionError, match="numpy disagrees with fastopt"):
        impls.check_agreement(bad, ["fastopt", "numpy"])


def test_in_loop_smoke():
    """--in-loop runs every configuration in its own process and reports each
    loop, the step-only figures and the targets."""
    r = subprocess.run([sys.executable, str(RUN), "--in-loop", "--smoke", "--no-torch"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    for part in ("BLAS 1 thread", "BLAS 2 thread", "Two processes", "Step alone", "Targets"):
        assert part in out, out
    for config in ("default", "1 thread", "passive", "bounded spin", "fixed team",
                   "fastopt 1 thread"):
        assert f"  {config} " in out, out
    # each configuration's process reports the wait policy it ran with
    assert "user: OMP_WAIT_POLICY=passive" in out and "spin 10000 pauses" in out
    assert "fastopt default: libgomp's own wait, the team measured" in out


def test_rows_comparison_runs(tmp_path):
    """bench/run.py --rows on a small table: every fastopt implementation and the
    row-update floor at both densities, in the printed table."""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, str(RUN), "--rows", "--smoke", "--no-torch",
                        "--rows-table", "4000x16", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for impl in ("fastopt SparseAdam (RowGrad)", "fastopt Adam (RowGrad)",
                 "fastopt Adam (dense step)", "row-update floor (bench/floor.c)"):
        for density in ("1.0% (40 indices", "0.1% (4 indices"):
            assert any(impl in line and density in line for line in r.stdout.splitlines()), \
                (impl, density, r.stdout)


def test_matrix_table_runs():
    r = subprocess.run([sys.executable, str(RUN), "--matrix", "--smoke", "--no-torch",
                        "--matrix-rows", "8", "--matrix-cols", "9", "--threads", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "| fastopt Adafactor (torch convention) |" in r.stdout
    assert "| fastopt Adafactor (keras convention) |" in r.stdout


def test_compact_table_runs():
    """bench/run.py --compact on a small problem: every storage mode in the table
    with its bytes per element and state bytes per parameter."""
    pytest.importorskip("ml_dtypes")
    r = subprocess.run([sys.executable, str(RUN), "--compact", "--smoke", "--no-torch",
                        "--compact-size", "65536", "--threads", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for row in ("| fastopt float32 | 28.00 | 8.000 |", "| fastopt bf16 state | 20.00 | 4.000 |",
                "| fastopt int8 state | 16.06 | 2.031 |",
                "| fastopt bf16 params, grads, state | 14.00 | 4.000 |",
                "| float32 traffic floor | 28.00 |"):
        assert row in r.stdout, (row, r.stdout)


def test_compact_quality_runs(tmp_path):
    """bench/compact_quality.py --quick: every mode of both problems in the table."""
    pytest.importorskip("ml_dtypes")
    pytest.importorskip("sklearn")
    script = RUN.parent / "compact_quality.py"
    r = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = (tmp_path / "compact_quality.md").read_text()
    for mode in ("float32", "bf16 state", "int8 state", "bf16 weights, nearest"):
        assert table.count(f"| {mode} |") == 2, (mode, table)
