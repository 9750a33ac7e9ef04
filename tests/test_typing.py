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


# ---- the README's examples under mypy --strict ------------------------------------
# A block may use names the prose defines ("params", "model", "loader"): each is
# declared before the block when it uses the name without assigning it.  A
# side-by-side comparison ("# Keras 3 ... # fastopt") is checked on its fastopt
# column.

README = Path(__file__).resolve().parent.parent / "README.md"    # the repository's, also in
                                                               # the wheel job
FREE_NAMES = {
    "params": "params: list[npt.NDArray[np.float32]] = []",
    "epochs": "epochs: int = 2",
    "steps_per_epoch": "steps_per_epoch: int = 10",
    "val_loss": "val_loss: float = 0.0",
    "n": "n: int = 100",
    "model": "model: Any = None",
    "loader": "loader: list[tuple[Any, Any]] = []",
    "batches": "batches: list[tuple[Any, Any]] = []",
    "global_batches": "global_batches: list[tuple[Any, Any]] = []",
    "loss_fn": "loss_fn: Any = None",
    "x": "x: Any = None",
    "y": "y: Any = None",
    "my_backward": "def my_backward(params: list[npt.NDArray[np.float32]], x: Any, y: Any"
                   ") -> list[npt.NDArray[np.float32]]:\n    return params",
    "init": "def init(params: list[npt.NDArray[np.float32]]) -> None:\n    pass",
    "grads": "def grads(params: list[npt.NDArray[np.float32]], x: Any, y: Any"
             ") -> list[npt.NDArray[np.float32]]:\n    return params",
    "opt": "opt = fo.Adam([np.zeros(3, np.float32)])",
    "dense_weights": "dense_weights = np.zeros(8, np.float32)",
    "g_dense": "g_dense = np.zeros(8, np.float32)",
    "indices": "indices = np.array([3, 1, 3])",
    "values": "values = np.zeros((3, 64), np.float32)",
}
PREAMBLE = ("from typing import Any\n\nimport numpy as np\nimport numpy.typing as npt\n\n"
            "import fastopt as fo\nfrom fastopt import schedules\n")


def readme_blocks():
    import re
    if not README.is_file():
        pytest.skip("README.md is not beside tests/ (tests copied elsewhere)")
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    out = []
    for k, block in enumerate(blocks):
        if re.search(r"^\s*(import torch|from fastopt\.torch import|import fastopt\.torch)", block,
                     re.M):
            # torch code: fastopt.torch builds its classes from torch.optim at import,
            # which a type checker does not see (test_torch_optim.py tests what they do)
            continue
        lines = block.splitlines()
        col = lines[0].find("# fastopt") if lines else -1
        if col > 0 and lines[0].lstrip().startswith("#"):
            # a line of the left column may run past the right one's start
            block = "\n".join(line[col:] if line[col - 1:col] in ("", " ") else ""
                              for line in lines[1:]) + "\n"
        head = [decl for name, decl in FREE_NAMES.items()
                if re.search(rf"\b{name}\b", block)
                and not re.search(rf"^\s*(for\s+)?{name}\s*(=|,)", block, re.M)]
        out.append((k, PREAMBLE + "\n".join(head) + "\n\n" + block))
    assert len(out) >= 6, "README lost its examples?"
    return out


def test_mypy_strict_accepts_the_readme_examples(mypy):
    files = []
    for k, code in readme_blocks():
        name = f"readme_{k}.py"
        (mypy.work / name).write_text(code)
        files.append(name)
    # mpi4py and torch are optional: their absence is not the examples' fault
    code, out = mypy("--strict", "--ignore-missing-imports", *files)
    assert code == 0, out


def test_every_keyword_and_hyperparameter_is_visible_to_a_type_checker(mypy):
    """An editor completes what mypy sees: every class's own hyper-parameters
    and aliases as keywords, the options every optimizer takes (convention=
    included), and every hyper-parameter as an attribute; a misspelt keyword
    is an error."""
    from fastopt.optimizers import REGISTRY
    from fastopt.optimizer import _GLOBAL_ALIASES
    option_names = ["maximize", "clipnorm", "global_clipnorm", "clipvalue", "num_threads",
                    "use_ema", "ema_momentum", "ema_overwrite_frequency",
                    "gradient_accumulation_steps", "skip_nonfinite", "decoupled_weight_decay",
                    "name", "weight_decay"]
    values = {"maximize": "False", "use_ema": "False", "skip_nonfinite": "False",
              "num_threads": "2", "ema_overwrite_frequency": "None",
              "gradient_accumulation_steps": "None", "decoupled_weight_decay": "None",
              "name": "'opt'"}
    lines = [PREAMBLE, "w = np.zeros(3)", "s = schedules.ExponentialDecay(0.1, 10, 0.5)"]
    bad = []
    for cname, cls in sorted(REGISTRY.items()):
        conv = cls.conventions[0]
        known = cls.defaults(conv)
        for key in sorted(known):
            h = cls.hyper[key]
            v = "True" if h.kind is bool else "s" if h.schedulable else "0.5"
            lines.append(f"fo.{cname}([w], {key}={v}, convention={conv!r})")
            lines.append(f"a_{cname}_{key}: {'bool' if h.kind is bool else 'object'} = "
                         f"fo.{cname}([w]).{key}")
        for alias in list(cls.tuple_aliases) + [a for k in known for a in cls.hyper[k].aliases]:
            v = "(0.5, 0.5)" if alias in cls.tuple_aliases else "0.5"
            lines.append(f"fo.{cname}([w], {alias}={v})")
        for alias, target in _GLOBAL_ALIASES.items():
            if target in known:
                lines.append(f"fo.{cname}([w], {alias}=0.5)")
        kw = ", ".join(f"{k}={values.get(k, '1.0')}" for k in option_names)
        lines.append(f"fo.{cname}([w], {kw})")
        bad.append(f"fo.{cname}([w], convntion='torch')")
    (mypy.work / "keywords_ok.py").write_text("\n".join(lines) + "\n")
    code, out = mypy("--strict", "keywords_ok.py")
    assert code == 0, out
    (mypy.work / "keywords_bad.py").write_text(PREAMBLE + "w = np.zeros(3)\n" +
                                               "\n".join(bad) + "\n")
    code, out = mypy("--strict", "keywords_bad.py")
    assert code == 1
    for k in range(len(bad)):
        assert f"keywords_bad.py:{PREAMBLE.count(chr(10)) + 2 + k}: error: Unexpected keyword " \
               f"argument \"convntion\"" in out, out
