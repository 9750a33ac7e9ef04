"""The examples in fastopt's docstrings run, against the installed package,
and every public class documents its math (Notes) and shows an example."""
import doctest
import importlib
import importlib.util
import inspect
import io
import pkgutil

import pytest

import fastopt
from fastopt import optimizers, schedules

#: Modules that need an optional dependency (an extra) to import.
OPTIONAL = {"fastopt.torch": "torch"}
MODULES = ["fastopt"] + sorted(
    m.name for m in pkgutil.walk_packages(fastopt.__path__, "fastopt.")
    if m.name not in OPTIONAL or importlib.util.find_spec(OPTIONAL[m.name]) is not None)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, out.getvalue()


def test_the_examples_are_many():
    """A finder that silently found nothing would pass the test above."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    total = sum(len(t.examples) for name in MODULES
                for t in finder.find(importlib.import_module(name), name))
    assert total >= 100


def _public_classes():
    seen = {}
    for name in fastopt.__all__:
        obj = getattr(fastopt, name)
        if inspect.isclass(obj):
            seen[obj.__qualname__] = obj
    for cls in optimizers.REGISTRY.values():
        seen[cls.__qualname__] = cls
    for name in schedules.__all__:
        obj = getattr(schedules, name)
        if inspect.isclass(obj):
            seen[obj.__qualname__] = obj
    return sorted(seen.items())


@pytest.mark.parametrize("name,cls", _public_classes())
def test_public_class_has_math_and_example(name, cls):
    doc = inspect.getdoc(cls) or ""
    for section in ("Notes", "Examples"):
        assert f"\n{section}\n{'-' * len(section)}\n" in doc, \
            f"{name}'s docstring has no numpydoc {section} section"
    assert ">>> " in doc.split("\nExamples\n", 1)[1], f"{name}: the Examples section has no example"
