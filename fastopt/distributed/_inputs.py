"""Checks of what is passed to :class:`ShardedOptimizer`: the optimizer class
and options, the parameters, the gradients and ``(grad, param)`` pairs.  The
gradient checks return their verdict instead of raising, for the agreement
protocol."""
import numpy as np

from .. import _core
from .._core import RowGrad
from ..optimizers import REGISTRY, Optimizer

def shardable_class(opt_class):
    """The optimizer class given (or named), refused if its update of an
    element depends on other elements in a way a shard cannot reproduce."""
    if isinstance(opt_class, str):
        if opt_class not in REGISTRY:
            raise ValueError(f"unknown optimizer {opt_class!r}; known: "
                             f"{', '.join(sorted(REGISTRY))}")
        opt_class = REGISTRY[opt_class]
    if not (isinstance(opt_class, type) and issubclass(opt_class, Optimizer)):
        raise TypeError(f"opt_class must be a fastopt optimizer class (e.g. fastopt.Adam); "
                        f"got {opt_class!r}")
    name = opt_class.__name__
    # a reduction pass (per-tensor sums, then the elementwise update) is combined
    # over the ranks; any other dependence between elements needs whole tensors
    if not opt_class.elementwise and (not _core.kernel_reduces(opt_class.kernel)
                                      or _core.kernel_factored(opt_class.kernel)
                                      or opt_class.host_stage is not None):
        raise ValueError(f"ShardedOptimizer cannot shard {name}: its update of an element "
                         f"depends on other elements of the tensor beyond per-tensor sums; "
                         f"use allreduce_gradients with a plain {name} instead")
    return opt_class


def check_disjoint(params):
    """Raise if two of ``params`` overlap in memory."""
    spans = sorted((p.__array_interface__["data"][0], p.nbytes, i)
                   for i, p in enumerate(params) if p.nbytes)
    for (a, n, i), (b, _, j) in zip(spans, spans[1:]):
        if a + n > b:
            i, j = sorted((i, j))
            raise ValueError(f"params[{i}] and params[{j}] share memory; each parameter must "
                             f"be its own array")


def check_grads(grads, params):
    """``(0, None)`` if ``grads`` fit ``params`` (one ndarray of the same dtype
    and shape, or None, per parameter), else ``(index + 1, message)``."""
    if len(grads) != len(params):
        return 1, (f"expected {len(params)} grads (one per parameter, in order; "
                   f"None skips one); got {len(grads)}")
    for i, (g, p) in enumerate(zip(grads, params)):
        if g is None:
            continue
        if isinstance(g, RowGrad):
            return i + 1, (f"grads[{i}]: a RowGrad; ShardedOptimizer splits each table's "
                           f"elements, not its rows, over the ranks, so it has no lazy row "
                           f"update. Use allreduce_gradients (it gathers every rank's rows) "
                           f"with a plain optimizer, or pass the dense gradient")
        if not isinstance(g, np.ndarray):
            return i + 1, (f"grads[{i}]: expected a numpy.ndarray of dtype {p.dtype} and "
                           f"shape {p.shape}; got {type(g).__name__}")
        if g.dtype != p.dtype:
            return i + 1, (f"grads[{i}]: expected dtype {p.dtype} (the dtype of "
                           f"params[{i}]); got {g.dtype}. Cast it with g.astype(p.dtype)")
        if g.shape != p.shape:
            return i + 1, (f"grads[{i}]: expected shape {p.shape} (the shape of "
                           f"params[{i}]); got {g.shape}")
    return 0, None


def pairs_to_grads(grads_and_vars, params):
    """One gradient per parameter from ``(grad, param)`` pairs matched to
    ``params`` by identity (``None`` for a parameter without a pair).

    Returns ``(grads, None)``, or ``(grads, message)`` naming the first item
    that is not a pair, names an unknown parameter or names one twice.
    """
    index = {id(p): i for i, p in enumerate(params)}
    grads = [None] * len(params)
    paired = set()
    for k, pair in enumerate(grads_and_vars):
        try:
            g, p = pair
        except (TypeError, ValueError):
            return grads, (f"apply_gradients expects (grad, param) pairs; item {k} is "
                           f"{type(pair).__name__}")
        i = index.get(id(p))
        if i is None or params[i] is not p:
            return grads, (f"apply_gradients: pair {k} names a parameter this optimizer "
                           f"was not built with; pass the same array objects as at "
                           f"construction")
        if i in paired:
            return grads, f"apply_gradients: params[{i}] appears twice"
        paired.add(i)
        grads[i] = g
    return grads, None
