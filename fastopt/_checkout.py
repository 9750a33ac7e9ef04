"""Imports of fastopt from a source checkout whose extension is not built.

``python -m fastopt.demo`` run in the repository root puts the root first on
``sys.path``, so Python finds the source package ``fastopt/`` (no compiled
``_core`` there) before the installed one.  :func:`use_installed_copy` then
imports the installed package in its place.
"""
import importlib.machinery
import importlib.util
import os
import sys


def use_installed_copy(source_init, error):
    """Replace ``sys.modules["fastopt"]`` by an installed fastopt found on
    ``sys.path`` outside the checkout that holds ``source_init``; return it.

    Raises ImportError, chained to ``error``, when there is none.
    """
    here = os.path.dirname(os.path.abspath(source_init))
    root = os.path.dirname(here)
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("fastopt", path)
    if spec is None or spec.origin is None or spec.loader is None or \
            os.path.dirname(os.path.abspath(spec.origin)) == here:
        raise ImportError(
            f"fastopt was imported from the source checkout {root}, whose compiled module "
            f"fastopt._core is not built, and no installed fastopt was found. Install it "
            f"with `pip install .` (or build in place: python setup.py build_ext --inplace)"
        ) from error
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastopt"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["fastopt"]
        raise
    return module
