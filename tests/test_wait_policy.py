"""How fastopt's OpenMP threads wait between steps (fastopt/_openmp.py).

Each case runs in a fresh interpreter: libgomp reads its wait policy once,
when it loads.  The spin is observed as CPU time: while the main thread
sleeps after a step, the process's CPU time is what the team's worker burns
spinning, a count of ``pause`` instructions that does not depend on how
busy the machine is (a busy machine only lowers it: a spin that gets no
core in the window burns less).  A long reference spin (``LONG``, about 0.1-1 s
of ``pause``) shows that libgomp took a setting.
"""
import json
import os
import subprocess
import sys

import pytest

import fastopt as fo

LONG = "30000000"

needs_openmp = pytest.mark.skipif(not fo.config()["openmp"], reason="serial build: no threads wait")

_PROBE = r"""
import json, os, subprocess, sys, time
import numpy as np
import fastopt as fo
from fastopt import _core
_core.set_parallel_threshold(1)
p = np.zeros(1 << 16, np.float32); g = np.ones_like(p)
opt = fo.SGD([p], learning_rate=0.1, num_threads=2)
opt.step([g])
spins = []
for _ in range(15):
    opt.step([g])
    t0 = time.process_time(); time.sleep(0.05); spins.append(time.process_time() - t0)
spins.sort()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('GOMP_SPINCOUNT'))"],
                       capture_output=True, text=True).stdout.strip()
print(json.dumps({"spin_s": spins[len(spins) // 2], "config": fo.config(),
                  "env_after": os.environ.get("GOMP_SPINCOUNT"), "child_env": child}))
"""


def _probe(**env):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FASTOPT_SPINCOUNT")}
    clean.update(env)
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                       env=clean, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@needs_openmp
def test_default_leaves_libgomps_own_wait_and_the_environment():
    """fastopt sizes the team instead of setting a wait: libgomp keeps its own
    (300 000 pauses; how much CPU time that is varies too much between
    machines and hypervisors to be asserted), and nothing is put in the
    environment, here or for a child."""
    mine = _probe()
    cfg = mine["config"]
    assert cfg["omp_spincount"] is None and fo._openmp.SPINCOUNT is None
    assert "libgomp's own settings [fastopt default" in cfg["omp_wait"]
    assert mine["env_after"] is None and mine["child_env"] == "None"


@needs_openmp
def test_users_own_settings_win():
    passive = _probe(OMP_WAIT_POLICY="passive")
    assert passive["config"]["omp_spincount"] is None
    assert "user: OMP_WAIT_POLICY=passive" in passive["config"]["omp_wait"]
    long = _probe(GOMP_SPINCOUNT=LONG)
    assert f"user: GOMP_SPINCOUNT={LONG}" in long["config"]["omp_wait"]
    assert long["env_after"] == LONG                # the user's variable is left in place
    assert long["spin_s"] > 10 * max(passive["spin_s"], 1e-4)


@needs_openmp
def test_fastopt_spincount_knob():
    zero = _probe(FASTOPT_SPINCOUNT="0")
    assert zero["config"]["omp_spincount"] == 0
    assert "sleep at once" in zero["config"]["omp_wait"]
    assert zero["child_env"] == "None"
    long = _probe(FASTOPT_SPINCOUNT=LONG)
    assert long["config"]["omp_spincount"] == int(LONG)
    assert long["env_after"] is None and long["child_env"] == "None"
    assert long["spin_s"] > 10 * max(zero["spin_s"], 1e-4)


@needs_openmp
@pytest.mark.parametrize("value", ["x", "-1", "1e4", "10 000"])
def test_malformed_fastopt_spincount_is_refused_at_import(value):
    env = dict(os.environ, FASTOPT_SPINCOUNT=value)
    r = subprocess.run([sys.executable, "-c", "import fastopt"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode != 0
    assert "FASTOPT_SPINCOUNT must be a non-negative integer" in r.stderr
    assert repr(value.strip()) in r.stderr


@needs_openmp
def test_libgomp_loaded_before_fastopt_keeps_its_settings():
    """A libgomp another library loaded first was configured then: fastopt says
    so instead of claiming a spin count it could not set."""
    code = ("import ctypes, ctypes.util, json\n"
            "name = ctypes.util.find_library('gomp')\n"
            "ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)\n"
            "import fastopt as fo\n"
            "print(json.dumps(fo.config()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads(r.stdout.strip().splitlines()[-1])
    if fo._openmp.state["private"]:
        # a private copy (the repaired wheel) is fastopt's own whatever else is loaded
        assert cfg["omp_spincount"] == fo._openmp.SPINCOUNT
    else:
        assert cfg["omp_spincount"] is None
        assert "already loaded by another library" in cfg["omp_wait"]


def test_show_config_says_how_threads_wait(capsys):
    fo.show_config()
    line = [x for x in capsys.readouterr().out.splitlines() if "OpenMP wait" in x]
    assert line and fo._openmp.describe() in line[0]


def test_python_m_fastopt_warns_when_the_timing_looks_contended():
    from fastopt.__main__ import contention
    assert contention(0.3, 2, [1.1, 1.3]) == []
    busy = contention(3.5, 2, [1.1])
    assert len(busy) == 1 and "load average is 3.50 on 2 usable cores" in busy[0]
    varied = contention(None, 2, [1.2, 3.4])
    assert len(varied) == 1 and "varied by up to 3.4x" in varied[0]
    assert len(contention(2.0, 2, [2.5])) == 2
