"""Build and runtime information."""
import os
from typing import Any

from . import _core, _openmp, _threads
from ._version import __version__


def config() -> dict[str, Any]:
    """Build and runtime facts as a dict (what :func:`show_config` prints)."""
    return {
        "version": __version__,
        "openmp": _core.openmp(),
        "simd": _core.get_simd(),
        "simd_supported": _core.simd_supported(),
        "threads": _threads.get_num_threads(),
        "threads_measured": _threads.measured(),
        "omp_max_threads": _core.max_threads(),
        "max_team": _core.max_team(),
        "parallel_threshold": _core.parallel_threshold(),
        "kernels": sorted(_core.KERNELS),
        "cpu_count": os.cpu_count(),
        "omp_wait": _openmp.describe(),
        "omp_spincount": _openmp.state["spincount"],
    }


def show_config() -> None:
    """Print fastopt's version, OpenMP on/off, the SIMD variant in use and threads."""
    c = config()
    print(f"fastopt {c['version']}")
    print(f"  OpenMP             : {'on' if c['openmp'] else 'OFF (serial build)'}")
    print(f"  SIMD variant       : {c['simd']} (this CPU supports: {', '.join(c['simd_supported'])})")
    print(f"  threads            : {c['threads']} (OpenMP default {c['omp_max_threads']}, "
          f"{c['cpu_count']} CPUs; a step uses at most {c['max_team']})")
    if c["threads_measured"] and c["threads"] > 1:
        print(f"  team of a step     : measured per optimizer: 1 or {c['threads']} threads, "
              f"whichever gives the shorter period between steps (fo.set_num_threads(n) or "
              f"num_threads=n fixes it)")
    print(f"  OpenMP wait        : {c['omp_wait']}")
    print(f"  parallel threshold : {c['parallel_threshold']} elements for SGD, "
          f"{c['parallel_threshold'] // 2} for Adam-like kernels")
    print(f"  kernels            : {', '.join(c['kernels'])}")


def _apply_env_simd():
    name = os.environ.get("FASTOPT_SIMD", "").strip().lower()
    if name and name != "auto":
        try:
            _core.set_simd(name)
        except ValueError as e:
            raise ImportError(f"FASTOPT_SIMD={name}: {e}") from None
