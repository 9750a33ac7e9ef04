"""Editors and mypy see fastopt's API: py.typed and the stubs of the compiled
module are installed, the stubs match the module, and mypy accepts the
package and typical user code (and rejects code the stubs make wrong)."""
import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastopt
from fastopt import _core

PKG = Path(fastopt.__file__).resolve().parent
STUB = PKG / "_core.pyi"


def _stub_tree():
    assert STUB.is_file(), f"{STUB} is not installed (package-data must ship *.pyi)"
    return ast.parse(STUB.read_text())


def _defined(body):
    names = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def test_py_typed_is_installed():
    assert (PKG / "py.typed").is_file()


def test_stub_names_match_the_compiled_module():
    stub = _defined(_stub_tree().body)
    public = {n for n in dir(_core) if not n.startswith("_") and n != "np"}
    assert public - set(stub) == set(), "in fastopt._core but not in _core.pyi"
    assert set(stub) - public == set(), "in _core.pyi but not in fastopt._core"
    engine = _defined(stub["Engine"].body)
    methods = {n for n in dir(_core.Engine) if not n.startswith("_")}
    assert methods - set(engine) == set(), "Engine members missing from _core.pyi"
    assert set(engine) - methods - {"__init__"} == set(), "stubbed Engine members that do not exist"


def _params(fn):
    args = fn.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]


def test_stub_signatures_match_the_compiled_module():
    stub = _defined(_stub_tree().body)
    checked = 0
    for name, node in stub.items():
        if not isinstance(node, ast.FunctionDef):
            continue
        try:
            sig = inspect.signature(getattr(_core, name))
        except (TypeError, ValueError):
            continue
        assert list(sig.parameters) == _params(node), f"_core.{name}: stub {_params(node)}, " \
                                                      f"module {list(sig.parameters)}"
        checked += 1
    for name, node in _defined(stub["Engine"].body).items():
        member = getattr(_core.Engine, name, None)
        if not isinstance(node, ast.FunctionDef) or not callable(member) or name == "__init__":
            continue
        try:
            sig = inspect.signature(member)
        except (TypeError, ValueError):
            continue
        assert list(sig.parameters) == _params(node), f"Engine.{name}"
        checked += 1
    assert checked >= 10


@pytest.fixture(scope="module")
def mypy(tmp_path_factory):
    pytest.importorskip("mypy.api", reason="mypy is not installed")
    work = tmp_path_factory.mktemp("mypy")
    env = dict(os.environ)
    root = PKG.parent
    if root.name not in ("site-packages", "dist-packages"):
        # fastopt imported from a source tree (PYTHONPATH); mypy finds only
        # installed packages by itself
        env["MYPYPATH"] = str(root)

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(work / "cache"),
                            "--no-error-summary", "--hide-error-context", *args],
                           cwd=work, env=env, capture_output=True, text=True, timeout=300)
        return r.returncode, r.stdout + r.stderr

    run.work = work
    return run


USER_CODE = '''
import numpy as np
import numpy.typing as npt

import fastopt as fo
from fastopt import _core, schedules


def train(w: npt.NDArray[np.float32], steps: int) -> int:
    lr = schedules.ExponentialDecay(1e-3, decay_steps=100, decay_rate=0.5)
    opt = fo.Adam([w], learning_rate=lr)
    for _ in range(steps):
        opt.step([np.ones_like(w)])
    fo.set_num_threads(2)
    return int(opt.iterations)


variants: list[str] = _core.simd_supported()
threshold: int = _core.parallel_threshold()
openmp: bool = _core.openmp()
'''


def test_mypy_accepts_the_package(mypy):
    code, out = mypy("-p", "fastopt")
    assert code == 0, out


def test_mypy_accepts_user_code(mypy):
    (mypy.work / "user_ok.py").write_text(USER_CODE)
    code, out = mypy("user_ok.py")
    assert code == 0, out


def test_mypy_sees_the_stub_types(mypy):
    (mypy.work / "user_bad.py").write_text(
        "from fastopt import _core\n"
        "name: int = _core.get_simd()\n"
        "_core.set_parallel_threshold('many')\n")
    code, out = mypy("user_bad.py")
    assert code == 1, out
    assert "user_bad.py:2: error: Incompatible types in assignment" in out, out
    assert "user_bad.py:3: error: Argument 1 to \"set_parallel_threshold\"" in out, out
