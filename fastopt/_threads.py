"""Process-wide thread count for fastopt kernels."""
from typing import Optional

from . import _core

_num_threads = None


def check_num_threads(n):
    """``n`` if it is a valid thread count (a positive int or None), else raise."""
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < 2**31:
            raise ValueError(f"num_threads must be a positive int (below 2**31) or None; got "
                             f"{n!r}")
    return n


def set_num_threads(n: Optional[int]) -> None:
    """Use ``n`` threads for every optimizer without its own ``num_threads``.

    ``None`` restores the default: each optimizer steps on one thread or on
    OpenMP's current team (which follows ``OMP_NUM_THREADS`` and threadpoolctl's
    limits), whichever has been giving the shorter period between its steps.
    A step never runs more than 4 threads per available processor, nor more
    than ``OMP_THREAD_LIMIT``: libgomp ends the process when it cannot start a
    team's threads.
    """
    global _num_threads
    _num_threads = check_num_threads(n)
    _core.set_default_threads(_num_threads)


def measured() -> bool:
    """Whether optimizers without their own ``num_threads`` measure their team
    (no :func:`set_num_threads` in force): see :class:`fastopt._core.TeamTuner`."""
    return _num_threads is None


def get_num_threads() -> int:
    """Threads a step uses when its optimizer has no ``num_threads`` of its own:
    the count :func:`set_num_threads` set, or OpenMP's default team (then each
    optimizer measures whether one thread or this many steps its loop faster)."""
    return _num_threads if _num_threads is not None else _core.max_threads()
