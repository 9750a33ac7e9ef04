"""``python -m fastopt.demo`` and the plain-NumPy twins it times fastopt against."""
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastopt as fo
from fastopt import _numpy_ref, demo, schedules

HAVE_EXTRAS = all(importlib.util.find_spec(m) for m in ("sklearn", "matplotlib"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _demo(*args, cwd, env=None, code=None):
    cmd = [sys.executable, "-m", "fastopt.demo", *args] if code is None else \
        [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.skipif(not HAVE_EXTRAS, reason='needs the demo extra: pip install ".[demo]"')
def test_quick_demo_prints_the_table_and_writes_the_figures(tmp_path):
    out = tmp_path / "figures"
    r = _demo("--quick", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    labels = [label for label, cls, _ in demo.OPTIMIZERS if hasattr(fo, cls)]
    labels += [f"SGD+{label}" for label, *_ in demo.schedule_set(100, 10)]
    assert len(labels) >= 9
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(demo.COLUMNS) and cells[0] in labels:
            rows[cells[0]] = cells
    assert sorted(rows) == sorted(labels), r.stdout
    for label, cells in rows.items():
        val_acc = float(cells[demo.COLUMNS.index("val acc")])
        assert val_acc > 0.5, f"{label} did not learn in 2 epochs: {cells}"
        # the NumPy twin saw the same gradients: only float32 rounding apart
        assert float(cells[-1]) < 1e-3, f"{label}: fastopt and its NumPy twin diverged: {cells}"
        fast, numpy_ = (float(x) for x in cells[demo.COLUMNS.index("µs per step: fastopt / NumPy")]
                        .split("/"))
        assert fast > 0 and numpy_ > 0
    table = (out / "results.md").read_text()
    assert table.strip() in r.stdout
    for name in ("curves_optimizers.png", "curves_schedules.png", "schedules.png",
                 "paths_rosenbrock.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name


def test_without_the_extras_the_demo_names_the_install_command(tmp_path):
    code = ("import sys; sys.modules['sklearn'] = None; sys.argv[0] = 'demo'; "
            "from fastopt import demo; demo.main(sys.argv[1:])")
    r = _demo("--quick", "--out", str(tmp_path / "x"), cwd=tmp_path, code=code)
    assert r.returncode != 0
    assert 'pip install ".[demo]"' in r.stderr and "scikit-learn" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_bad_epochs_is_a_usage_error(tmp_path):
    r = _demo("--epochs", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--epochs must be >= 1" in r.stderr


def test_progress_without_tqdm_prints_one_line_per_run(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    p = demo._Progress(4)
    assert p.bar is None
    for k in range(4):
        p.update("Adam" if k < 2 else "SGD", k % 2 == 1, f"val acc 0.{k}")
    p.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "Adam" in err[0] and "[100.0%]" in err[1] and "SGD" in err[1]


def test_table_format():
    run = demo.Run("Adam", "optimizer")
    run.train_loss, run.train_acc, run.val_loss, run.val_acc = [0.5], [0.9], [0.6], [0.8]
    run.t_fast, run.t_numpy = [1e-5, 2e-5, 3e-5], [4e-5, 8e-5, 1e-4]
    text = demo.format_table([run], [])
    header, rule, row = text.splitlines()
    assert [c.strip() for c in header.strip("|").split("|")] == list(demo.COLUMNS)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[demo.COLUMNS.index("µs per step: fastopt / NumPy")] == "20.0 / 80.0"
    assert cells[demo.COLUMNS.index("speed-up")] == "4.0x"
    assert re.fullmatch(r"\|:-+(\|-+:)+\|", rule)


def test_rosenbrock_paths_descend():
    paths = demo.rosenbrock_paths(200)
    assert "Adam" in paths and "SGD" in paths
    f0 = demo.rosenbrock(*demo.ROSENBROCK_START)
    for label, p in paths.items():
        assert p.shape == (201, 2), label
        assert demo.rosenbrock(*p[-1]) < f0, label
    assert demo.rosenbrock(*paths["Adam"][-1]) < f0 / 2


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 4))
    y = np.array([0, 1, 2, 1, 0])
    model = demo.MLP(4, 6, 3, seed=1, dtype=np.float64)
    model.loss_and_grads(X, y)
    for p, g in zip(model.params, model.grads):
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 5)):
            old = flat[i]
            flat[i] = old + 1e-6
            up = model.evaluate(X, y)[0]
            flat[i] = old - 1e-6
            down = model.evaluate(X, y)[0]
            flat[i] = old
            assert gflat[i] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-8)


# -- the NumPy twins -----------------------------------------------------------

TWINS = [
    ("SGD", {"learning_rate": 0.1}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"learning_rate": schedules.OneCycle(0.2, 30),
             "momentum": schedules.OneCycle(0.2, 30).momentum}),
    ("Adagrad", {"learning_rate": 0.1}),
    ("RMSprop", {"learning_rate": 0.01}),
    ("Adam", {"learning_rate": schedules.ExponentialDecay(0.01, 10, 0.5)}),
    ("Adamax", {"learning_rate": 0.01}),
    ("Nadam", {"learning_rate": 0.01}),
    ("Nadam", {"learning_rate": 0.01, "momentum_decay": 0.004}),
]


@pytest.mark.parametrize("cls_name,hyper", TWINS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_twin_follows_fastopt(cls_name, hyper, dtype):
    cls = getattr(fo, cls_name, None)
    if cls is None:
        pytest.skip(f"fastopt.{cls_name} is not in this build")
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(s).astype(dtype) for s in ((7, 5), (5,), (33,))]
    twins = [p.copy() for p in params]
    opt = cls(params, **hyper)
    ref = _numpy_ref.NumpyOptimizer(cls_name.lower(), twins, demo._hyper_of(opt))
    for _ in range(30):
        grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
        opt.step(grads)
        ref.step(grads)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for p, q in zip(params, twins):
        np.testing.assert_allclose(p, q, rtol=tol, atol=tol)


def test_numpy_twin_refuses_options_it_does_not_implement():
    with pytest.raises(ValueError, match="weight_decay"):
        _numpy_ref.NumpyOptimizer("adam", [np.zeros(2)], {"learning_rate": 0.1,
                                                          "weight_decay": 0.01})
    with pytest.raises(ValueError, match="kind must be one of"):
        _numpy_ref.NumpyOptimizer("lion", [np.zeros(2)], {})


def test_readme_set_up_commands():
    """The README's first command runs the demo, its second the tests, each one pasteable line."""
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    if not os.path.exists(readme):
        pytest.skip("README.md is not beside the tests")
    text = open(readme, encoding="utf-8").read()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert blocks[0].strip() == 'pip install ".[demo]" && python -m fastopt.demo'
    assert blocks[1].strip() == 'pip install ".[test]" && pytest'
    for name in re.findall(r"\]\((docs/[^)]+\.png)\)", text):
        assert os.path.exists(os.path.join(os.path.dirname(readme), name)), name


def _checkout_without_extension(tmp_path):
    """A copy of fastopt's Python files laid out like a source checkout, no compiled module."""
    src = os.path.dirname(fo.__file__)
    pkg = tmp_path / "fastopt"
    pkg.mkdir()
    for name in os.listdir(src):
        if name.endswith(".py"):
            (pkg / name).write_bytes(open(os.path.join(src, name), "rb").read())
    return tmp_path


def _env_with_first_on_path(root):
    path = [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def test_python_m_in_a_checkout_uses_the_installed_package(tmp_path):
    """The README runs ``python -m fastopt.demo`` in the source directory, where
    the unbuilt source package comes first on sys.path."""
    root = _checkout_without_extension(tmp_path)
    r = subprocess.run([sys.executable, "-c", "import fastopt, fastopt.demo; "
                        "print(fastopt.__file__); print(fastopt.demo.__file__); "
                        "print(fastopt.Adam.__module__)"],
                       cwd=root, capture_output=True, text=True, timeout=120,
                       env=_env_with_first_on_path(root))
    assert r.returncode == 0, r.stderr
    init, demo_file, module = r.stdout.split()
    assert init == fo.__file__ and os.path.dirname(demo_file) == os.path.dirname(fo.__file__)
    assert module == "fastopt.optimizers"
    r = subprocess.run([sys.executable, "-m", "fastopt.demo", "--help"], cwd=root,
                       capture_output=True, text=True, timeout=120,
                       env=_env_with_first_on_path(root))
    assert r.returncode == 0 and "--quick" in r.stdout, r.stderr


def test_checkout_without_any_build_says_how_to_install(tmp_path):
    root = _checkout_without_extension(tmp_path)
    code = ("import sys, os, numpy; "
            "sys.path[:] = [p for p in sys.path "
            "if not os.path.isdir(os.path.join(p or '.', 'fastopt'))]; "
            f"sys.path.insert(0, {str(root)!r}); import fastopt")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    assert "ImportError: fastopt was imported from the source checkout" in r.stderr
    assert "pip install ." in r.stderr
