"""fastopt: in-place optimizer updates for NumPy arrays on the CPU.

>>> import numpy as np, fastopt as fo
>>> w = np.zeros(4, dtype=np.float32)
>>> opt = fo.Adam([w], learning_rate=1e-3)
>>> opt.step([np.ones(4, dtype=np.float32)])
>>> opt.iterations
1
"""
from . import _openmp

_wait = _openmp.spincount_setting()
try:
    _openmp.import_core(__name__, _wait)
    from . import _core
except ImportError as _error:     # a source checkout without the built extension
    from ._checkout import use_installed_copy
    _core = use_installed_copy(__file__, _error)._core
from . import schedules
from ._info import _apply_env_simd, config, show_config
from ._threads import get_num_threads, set_num_threads
from ._version import __version__
from ._core import RowGrad
from .checkpoint import load, save
from .optimizers import (SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW, Ftrl, Lamb,
                         Lion, Nadam, Optimizer, RAdam, RMSprop, Rprop, SparseAdam)
from .optimizers import ASGD, Muon, ScheduleFreeAdamW, ScheduleFreeSGD
from .multi import MultiOptimizer
from .loss_scale import LossScaleOptimizer

_apply_env_simd()

__all__ = [
    "Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Adamax", "Nadam", "Adadelta",
    "Lion", "Lamb", "Ftrl", "RAdam", "Rprop", "Adafactor", "ASGD", "SparseAdam", "Muon", "RowGrad",
    "ScheduleFreeAdamW", "ScheduleFreeSGD", "MultiOptimizer", "LossScaleOptimizer",
    "schedules",
    "save", "load", "set_num_threads", "get_num_threads", "show_config", "config",
    "__version__",
]
