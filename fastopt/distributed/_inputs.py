"""Checks of what is passed to :class:`ShardedOptimizer`: the optimizer class
and options, the parameters, the gradients and ``(grad, param)`` pairs.  The
gradient checks return their verdict instead of raising, for the agreement
protocol."""
import numpy as np

from .. import _core
from .._compact import grad_dtype_names, grad_dtype_ok
from .._core import RowGrad
from ..optimizers import REGISTRY, Optimizer
from ._agree import describe

def shardable_class(opt_class):
    """The optimizer class given (or named), checked to be one."""
    if isinstance(opt_class, str):
        if opt_class not in REGISTRY:
            raise ValueError(f"unknown optimizer {opt_class!r}; known: "
                             f"{', '.join(sorted(REGISTRY))}")
        opt_class = REGISTRY[opt_class]
    if not (isinstance(opt_class, type) and issubclass(opt_class, Optimizer)):
        raise TypeError(f"opt_class must be a fastopt optimizer class (e.g. fastopt.Adam); "
                        f"got {opt_class!r}")
    return opt_class


def whole_tensors(opt_class):
    """Whether ``opt_class`` is sharded by whole tensors: its update of an
    element depends on other elements of the tensor beyond per-tensor sums
    (Adafactor's factored rows and columns, Muon's Newton-Schulz iteration on
    the whole matrix), which a piece of a tensor cannot compute.  Otherwise
    (elementwise, or per-tensor sums combined over the ranks, as Lamb's)
    tensors are cut into pieces."""
    return not opt_class.elementwise and (not _core.kernel_reduces(opt_class.kernel)
                                          or _core.kernel_factored(opt_class.kernel)
                                          or opt_class.host_stage is not None)


def check_disjoint(params):
    """Raise if two of ``params`` overlap in memory."""
    spans = sorted((p.__array_interface__["data"][0], p.nbytes, i)
                   for i, p in enumerate(params) if p.nbytes)
    for (a, n, i), (b, _, j) in zip(spans, spans[1:]):
        if a + n > b:
            i, j = sorted((i, j))
            raise ValueError(f"params[{i}] and params[{j}] share memory; each parameter must "
                             f"be its own array")


def check_row_params(row_params, shapes):
    """The sorted tuple of ``row_params`` (indices of 2-D parameters), or raise."""
    if isinstance(row_params, (str, bytes, np.ndarray)) or not hasattr(row_params, "__iter__"):
        raise TypeError(f"row_params must be a list of parameter indices; got "
                        f"{type(row_params).__name__}")
    out = []
    for k, i in enumerate(row_params):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"row_params[{k}] must be an int (a parameter index); got "
                            f"{type(i).__name__}")
        i = int(i)
        if not 0 <= i < len(shapes):
            raise ValueError(f"row_params[{k}] is {i}; there are {len(shapes)} params, "
                             f"indices 0 to {len(shapes) - 1}")
        if len(shapes[i]) != 2 or shapes[i][1] == 0:
            raise ValueError(f"row_params[{k}]: params[{i}] has shape {shapes[i]}; a RowGrad "
                             f"updates rows of a 2-D parameter (rows x dim, dim > 0)")
        if i in out:
            raise ValueError(f"row_params[{k}]: params[{i}] is named twice")
        out.append(i)
    return tuple(sorted(out))


def _check_rows(i, g, p, tables, reduces):
    """The message for a RowGrad ``g`` of ``params[i]`` that a sharded step
    cannot take, or None."""
    if i not in tables:
        return (f"grads[{i}]: a RowGrad for a parameter not in row_params; its shards are "
                f"not cut at whole rows. Build the ShardedOptimizer with "
                f"row_params=[..., {i}], or pass the dense gradient")
    if reduces:
        return (f"grads[{i}]: a RowGrad, with an option that reduces over whole tensors "
                f"(clipnorm, global_clipnorm, skip_nonfinite) or a per-tensor kernel, which "
                f"a sharded step with RowGrads does not compute; pass the dense gradient, "
                f"or use allreduce_gradients with a plain optimizer")
    idx, vals = g.indices, g.values
    if (not isinstance(idx, np.ndarray) or idx.ndim != 1 or idx.dtype.kind != "i"
            or idx.dtype.itemsize not in (4, 8)):
        return (f"grads[{i}].indices: expected a 1-D int32 or int64 ndarray; got "
                f"{describe(idx)}. Pass np.asarray(indices, dtype=np.int64).ravel()")
    if (not isinstance(vals, np.ndarray) or vals.dtype != p.dtype
            or vals.shape != (len(idx), p.shape[1])):
        return (f"grads[{i}].values: expected {p.dtype} of shape ({len(idx)}, {p.shape[1]}) "
                f"(a row of params[{i}] per index); got {describe(vals)}. Pass one row of "
                f"the param's width per index, in its dtype (values.astype(p.dtype))")
    if len(idx) and (idx.min() < 0 or idx.max() >= p.shape[0]):
        bad = int(np.flatnonzero((idx < 0) | (idx >= p.shape[0]))[0])
        return (f"grads[{i}].indices[{bad}] is {int(idx[bad])}; params[{i}] has "
                f"{p.shape[0]} rows (indices 0 to {p.shape[0] - 1})")
    return None


def check_grads(grads, params, tables=(), reduces=False):
    """``(0, None)`` if ``grads`` fit ``params`` (one ndarray of the same dtype
    and shape, None, or for a parameter of ``tables`` a RowGrad, per
    parameter), else ``(index + 1, message)``."""
    if len(grads) != len(params):
        return 1, (f"expected {len(params)} grads (one per parameter, in order; "
                   f"None skips one); got {len(grads)}")
    for i, (g, p) in enumerate(zip(grads, params)):
        if g is None:
            continue
        if isinstance(g, RowGrad):
            message = _check_rows(i, g, p, tables, reduces)
            if message is not None:
                return i + 1, message
            continue
        if not isinstance(g, np.ndarray):
            return i + 1, (f"grads[{i}]: expected a numpy.ndarray of dtype {p.dtype} and "
                           f"shape {p.shape}; got {type(g).__name__}")
        if not grad_dtype_ok(g.dtype, p.dtype):
            return i + 1, (f"grads[{i}]: expected dtype {' or '.join(grad_dtype_names(p.dtype))} "
                           f"(params[{i}] is {p.dtype}); got {g.dtype}. Cast it with "
                           f"g.astype(p.dtype)")
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
