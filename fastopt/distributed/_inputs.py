"""Checks of what is passed to :class:`ShardedOptimizer`: the optimizer class
and options, the parameters, the gradients and ``(grad, param)`` pairs.  The
gradient checks return their verdict instead of raising, for the agreement
protocol."""
import numpy as np

from .._core import RowGrad
from ..optimizers import REGISTRY, Optimizer

# Options whose value depends on whole tensors (a norm) or on the whole
# gradient (a global norm, a finite check): a rank holding a shard cannot
# compute them alone.
_NON_ELEMENTWISE_OPTIONS = {
    "clipnorm": "clips each tensor by its own norm",
    "global_clipnorm": "clips by the norm of the whole gradient",
    "skip_nonfinite": "skips a step when any gradient element is not finite",
}


def shardable_class(opt_class, kwargs):
    """The optimizer class given (or named), refused if its update or an option
    in ``kwargs`` needs whole tensors."""
    if isinstance(opt_class, str):
        if opt_class not in REGISTRY:
            raise ValueError(f"unknown optimizer {opt_class!r}; known: "
                             f"{', '.join(sorted(REGISTRY))}")
        opt_class = REGISTRY[opt_class]
    if not (isinstance(opt_class, type) and issubclass(opt_class, Optimizer)):
        raise TypeError(f"opt_class must be a fastopt optimizer class (e.g. fastopt.Adam); "
                        f"got {opt_class!r}")
    name = opt_class.__name__
    if not opt_class.elementwise:
        raise ValueError(f"ShardedOptimizer cannot shard {name}: its update of an element "
                         f"depends on other elements of the tensor (a per-tensor trust ratio "
                         f"or norm), which needs whole tensors; use allreduce_gradients with "
                         f"a plain {name} instead")
    for key, why in _NON_ELEMENTWISE_OPTIONS.items():
        if kwargs.get(key) not in (None, False):
            raise ValueError(f"ShardedOptimizer does not support {key}: it {why}, but a "
                             f"rank holds only a shard of each gradient. Use clipvalue, "
                             f"or allreduce_gradients with a plain optimizer")
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
