"""The build is what it claims: OpenMP when required, SIMD choice and override."""
import os
import subprocess
import sys
import tempfile

import pytest

import fastopt as fo
from fastopt import _core


def test_openmp_present_when_required():
    """CI builds with FASTOPT_REQUIRE_OPENMP=1: a build that silently lost
    OpenMP must fail here."""
    if os.environ.get("FASTOPT_REQUIRE_OPENMP", "") in ("", "0"):
        pytest.skip("FASTOPT_REQUIRE_OPENMP not set")
    assert _core.openmp(), "fastopt was built without OpenMP"
    assert fo.config()["openmp"]


def test_best_simd_is_default():
    if os.environ.get("FASTOPT_SIMD"):
        pytest.skip("FASTOPT_SIMD forces a variant")
    assert _core.get_simd() == _core.simd_best()
    assert "baseline" in _core.simd_supported()


def _run(code, **env):
    """Run code in a fresh interpreter OUTSIDE the source tree (so it imports
    the installed package, as the tests do)."""
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())


@pytest.mark.parametrize("variant", _core.simd_supported())
def test_env_forces_variant(variant):
    r = _run("import fastopt; print(fastopt._core.get_simd())", FASTOPT_SIMD=variant)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == variant


def test_env_unsupported_variant_is_a_clear_error():
    unsupported = [v for v in _core.SIMD_NAMES if v not in _core.simd_supported()]
    r = _run("import fastopt", FASTOPT_SIMD=unsupported[0] if unsupported else "sse9")
    assert r.returncode != 0
    assert "FASTOPT_SIMD" in r.stderr


def test_set_simd_rejects_unknown():
    with pytest.raises(ValueError, match="SIMD variant must be one of"):
        _core.set_simd("neon9")


def test_show_config_prints_build_facts(capsys):
    fo.show_config()
    out = capsys.readouterr().out
    assert fo.__version__ in out
    assert "OpenMP" in out and _core.get_simd() in out


def test_tests_run_against_the_installed_package():
    """pytest must import the installed fastopt, never the source tree."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source_pkg = os.path.join(here, "fastopt")
    installed = os.path.dirname(os.path.abspath(fo.__file__))
    if os.environ.get("CI") != "true":
        pytest.skip("only meaningful in CI (developers may use an in-place build)")
    assert installed != source_pkg, f"tests imported the source tree at {installed}"
