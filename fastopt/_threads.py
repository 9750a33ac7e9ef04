"""Process-wide thread count for fastopt kernels."""
from . import _core

_num_threads = None


def set_num_threads(n):
    """Use ``n`` threads for every optimizer without its own ``num_threads``.

    ``None`` restores the default: OpenMP's current team size, which follows
    ``OMP_NUM_THREADS`` and threadpoolctl's limits.
    """
    global _num_threads
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_threads must be a positive int or None; got {n!r}")
    _num_threads = n


def get_num_threads():
    """Threads a step uses when its optimizer has no ``num_threads`` of its own."""
    return _num_threads if _num_threads is not None else _core.max_threads()
