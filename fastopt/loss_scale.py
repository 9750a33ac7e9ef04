"""Dynamic loss scaling around a fastopt optimizer, with Keras 3's semantics
(``keras.optimizers.LossScaleOptimizer``)."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterable, Mapping, Optional, Tuple

import numpy as np

from . import _statedict
from ._core import RowGrad
from ._threads import get_num_threads
from ._types import Array, Grads, HyperValue, LoadPolicy, Params
from .optimizer import REGISTRY, Optimizer, pairs_to_grads


_QUIET = contextlib.nullcontext()


def _in_eval_mode(inner: Optimizer) -> bool:
    """Whether ``inner`` has train/eval modes (schedule-free) and is in eval mode."""
    return (getattr(type(inner), "training", None) is not None
            and getattr(inner, "training") is False)


class LossScaleOptimizer:
    r"""Scale the loss up so that low-precision gradients do not underflow;
    unscale the gradients, skip steps whose gradients overflowed, and adapt
    the scale (Keras 3's ``LossScaleOptimizer``).

    Parameters
    ----------
    inner_optimizer : fastopt.Optimizer
        The optimizer that applies the unscaled gradients (any fastopt
        optimizer, either convention).  Its ``skip_nonfinite`` must be off:
        the loss scale skips non-finite steps itself, and must see them to
        lower the scale.
    initial_scale : float
        The scale of the first steps, positive and finite in float32 (Keras's
        default ``2**15``).  The scale is held in float32, as Keras holds it.
    dynamic_growth_steps : int
        The scale doubles after this many consecutive steps with finite
        gradients (>= 1; Keras's default 2000).

    Notes
    -----
    With scale ``S`` (:attr:`dynamic_scale`) and counter ``c``
    (:attr:`step_counter`, initially 0), a :meth:`step` with gradients
    ``g_i`` (those of ``scale_loss(loss)``) does, as Keras does:

    * if any ``g_i`` holds NaN or Inf: nothing else changes (parameters,
      the inner optimizer's state and ``iterations``), ``S <- S/2``, ``c <- 0``;
    * else the inner optimizer steps with ``g_i / S`` (divided in the
      promotion of the grad's dtype with float32, rounded to the
      parameter's dtype), then ``S <- 2*S, c <- 0`` if
      ``c = dynamic_growth_steps - 1``, otherwise ``c <- c + 1``.

    :attr:`iterations` and :attr:`learning_rate` are the inner optimizer's.
    Like Keras's, the scale is not capped: doubling past float32's range
    makes it inf, halving it long enough makes it 0.

    The check reads every gradient once (in C, on the inner optimizer's
    threads); the division writes the unscaled gradients into buffers that
    the wrapper keeps (one per parameter, of its dtype and shape) and that
    the inner step reads in place of the gradients.  ``None`` grads stay
    ``None``; a :class:`fastopt.RowGrad` is checked once its repeated rows
    are summed (as the inner step sums them) and its values are divided.  :meth:`state_dict`,
    :func:`fastopt.save` and :func:`fastopt.load` hold the scale, the counter
    and the inner optimizer's state, so a resumed run continues bit for bit.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> w = np.ones(2, dtype=np.float32)
    >>> opt = fo.LossScaleOptimizer(fo.SGD([w], learning_rate=0.5), initial_scale=8.0,
    ...                             dynamic_growth_steps=2)
    >>> opt.scale_loss(1.5)
    12.0
    >>> opt.step([np.full(2, 8.0, dtype=np.float32)])     # the grads of 8 * loss
    >>> w, opt.iterations, opt.dynamic_scale
    (array([0.5, 0.5], dtype=float32), 1, 8.0)
    >>> opt.step([np.array([np.inf, 1.0], dtype=np.float32)])   # skipped, scale halved
    >>> w, opt.iterations, opt.dynamic_scale
    (array([0.5, 0.5], dtype=float32), 1, 4.0)
    >>> opt.step([np.full(2, 4.0, dtype=np.float32)]); opt.step([np.zeros(2, np.float32)])
    >>> w, opt.iterations, opt.dynamic_scale                      # two finite steps: doubled
    (array([0., 0.], dtype=float32), 3, 8.0)
    """

    def __init__(self, inner_optimizer: Optimizer, initial_scale: float = 2.0 ** 15,
                 dynamic_growth_steps: int = 2000) -> None:
        if not isinstance(inner_optimizer, Optimizer):
            what = type(inner_optimizer).__name__
            hint = ("it already scales the loss: wrap the optimizer inside once"
                    if isinstance(inner_optimizer, LossScaleOptimizer)
                    else "pass an optimizer such as fo.Adam(params) or fo.SGD(params)")
            raise TypeError(f"inner_optimizer: expected a fastopt optimizer (an instance of "
                            f"fastopt.Optimizer); got {what}: {hint}")
        if isinstance(initial_scale, (bool, np.bool_)) or not isinstance(
                initial_scale, (int, float, np.integer, np.floating)):
            raise TypeError(f"initial_scale must be a positive float; got {_show(initial_scale)}")
        try:
            with np.errstate(over="ignore", under="ignore"):
                scale = np.float32(initial_scale)
            fine = initial_scale > 0 and math.isfinite(initial_scale) and 0 < scale < np.inf
        except OverflowError:       # an int beyond any float
            fine = False
        if not fine:
            raise ValueError(f"initial_scale must be a positive float that is finite and not "
                             f"zero in float32 (the scale is held in float32, up to about "
                             f"3.4e38); got {_show(initial_scale)}. Keras's default is 2**15")
        if isinstance(dynamic_growth_steps, (bool, np.bool_)) or not isinstance(
                dynamic_growth_steps, (int, np.integer)) or not (
                1 <= dynamic_growth_steps <= _statedict.COUNTER_MAX):
            raise ValueError(f"dynamic_growth_steps must be an int >= 1 (the finite steps "
                             f"after which the scale doubles); got {_show(dynamic_growth_steps)}")
        _refuse_skip(inner_optimizer)
        self._inner = inner_optimizer
        self._initial_scale = float(initial_scale)
        self._growth_steps = int(dynamic_growth_steps)
        self._scale = scale
        self._counter = 0
        self._buffers: dict[int, Any] = {}

    # ---- attributes --------------------------------------------------------

    @property
    def inner_optimizer(self) -> Optimizer:
        """The wrapped optimizer."""
        return self._inner

    @property
    def initial_scale(self) -> float:
        """The scale given at construction."""
        return self._initial_scale

    @property
    def dynamic_growth_steps(self) -> int:
        """Consecutive finite steps after which the scale doubles."""
        return self._growth_steps

    @property
    def dynamic_scale(self) -> float:
        """The current loss scale (a float32 value, as a float)."""
        return float(self._scale)

    @property
    def step_counter(self) -> int:
        """Finite steps since the scale last changed (Keras's ``step_counter``)."""
        return self._counter

    @property
    def iterations(self) -> int:
        """The inner optimizer's ``iterations``: updates applied (a skipped
        step is not one)."""
        return self._inner.iterations

    @property
    def learning_rate(self) -> HyperValue:
        """The inner optimizer's learning rate (settable, as in Keras)."""
        return self._inner.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: HyperValue) -> None:
        self._inner.learning_rate = value

    @property
    def params(self) -> list[Array]:
        """The inner optimizer's parameters, in the order their grads are expected."""
        return self._inner.params

    @property
    def lock(self) -> Any:
        """The inner optimizer's lock, held by step, state_dict and load_state_dict."""
        return self._inner.lock

    def scale_loss(self, loss: Any) -> Any:
        """``loss * dynamic_scale``: take the gradients of this, then :meth:`step`.
        ``loss`` may be a number, a NumPy array or another framework's tensor
        (its own multiplication by a Python float, which keeps its dtype)."""
        return loss * float(self._scale)

    # ---- the step ------------------------------------------------------------

    def step(self, grads: Grads) -> None:
        """One step with the gradients of :meth:`scale_loss`: skipped (scale
        halved) if any holds NaN or Inf, else applied unscaled by the inner
        optimizer.  Bad input raises before anything changes."""
        inner = self._inner
        with inner.lock:
            if isinstance(grads, np.ndarray):
                raise TypeError(f"grads: expected a list of {len(inner.params)} gradients; got "
                                f"an ndarray. Wrap a single gradient in a list: step([g])")
            try:
                grads = list(grads)
            except TypeError:
                raise TypeError(f"grads: expected a list of {len(inner.params)} gradients (one "
                                f"per parameter, None skips one); got "
                                f"{type(grads).__name__}") from None
            _refuse_skip(inner)
            if _in_eval_mode(inner):
                raise ValueError(f"inner_optimizer {type(inner).__name__} is in eval mode: "
                                 f"call its train() first; nothing was changed")
            if inner.swapped:
                raise RuntimeError("the parameters hold the averages (swap_averages() was "
                                   "called): call swap_averages() again before the next step; "
                                   "nothing was changed")
            if not self._finite(grads):
                with np.errstate(under="ignore"):
                    self._scale = np.float32(self._scale * np.float32(0.5))
                self._counter = 0
                return
            inner.step(self._unscaled(grads))
            if self._counter == self._growth_steps - 1:
                with np.errstate(over="ignore"):
                    self._scale = np.float32(self._scale * np.float32(2.0))
                self._counter = 0
            else:
                self._counter += 1

    def _finite(self, grads: list[Any]) -> bool:
        """Whether every grad is finite (None grads do not count); the grads
        are checked as the inner step checks them first (count, types,
        shapes, dtypes, memory), so bad input raises here."""
        inner = self._inner
        engine = inner._stepper.engine
        engine.set_grads(grads)
        try:
            counts = engine.nonfinite(inner.num_threads or get_num_threads())
        finally:
            engine.clear_grads()
        return np.count_nonzero(counts) == 0      # quicker than counts.any() on a few tensors

    def _unscaled(self, grads: list[Any]) -> list[Any]:
        """``g / scale`` for every grad, into this wrapper's buffers."""
        scale = np.array(self._scale)     # float32; a 0-d array: NumPy's quickest operand
        buffers = self._buffers
        out: list[Any] = []
        # a scale below 1 may overflow a finite grad to inf, as Keras's division does
        # (the grads are finite here: nothing else can warn)
        with (np.errstate(over="ignore", divide="ignore", invalid="ignore")
              if self._scale < 1 else _QUIET):
            for i, (g, p) in enumerate(zip(grads, self._inner.params)):
                if g is None:
                    out.append(None)
                    continue
                rows = isinstance(g, RowGrad)
                values = g.values if rows else g
                buf = buffers.get(i)
                if buf is None or buf.shape != values.shape or buf.dtype != p.dtype:
                    buf = buffers[i] = np.empty(values.shape, dtype=p.dtype)
                np.divide(values, scale, out=buf)
                out.append(RowGrad(g.indices, buf) if rows else buf)
        return out

    def apply_gradients(self, grads_and_vars: Iterable[Tuple[Optional[Array], Array]]
                        ) -> None:
        """Keras-style: pairs matched to the parameters by identity; parameters
        without a pair get no gradient this step."""
        params = self._inner.params
        grads, pairs = pairs_to_grads(grads_and_vars, params,
                                      {id(p): i for i, p in enumerate(params)})
        if pairs:
            self.step(grads)

    def finalize(self) -> None:
        """The inner optimizer's :meth:`~fastopt.Optimizer.finalize`."""
        self._inner.finalize()

    finalize_variable_values = finalize

    # ---- configuration and state -------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """As Keras's: the inner optimizer (its class name and
        :meth:`~fastopt.Optimizer.get_config`), ``initial_scale`` and
        ``dynamic_growth_steps``; JSON-able."""
        return {"inner_optimizer": {"class_name": type(self._inner).__name__,
                                    "config": self._inner.get_config()},
                "initial_scale": self._initial_scale,
                "dynamic_growth_steps": self._growth_steps}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], params: Params) -> LossScaleOptimizer:
        """Rebuild a LossScaleOptimizer from :meth:`get_config` over ``params``
        (the scale starts at ``initial_scale``; :meth:`load_state_dict`
        restores the current one)."""
        inner = config.get("inner_optimizer")
        if not isinstance(inner, dict) or inner.get("class_name") not in REGISTRY \
                or not isinstance(inner.get("config"), dict):
            raise ValueError(f"inner_optimizer: expected {{'class_name': <a fastopt optimizer>, "
                             f"'config': {{...}}}} as get_config() gives it; got {inner!r:.80}. "
                             f"Optimizers: {sorted(REGISTRY)}")
        rest = {k: v for k, v in config.items() if k != "inner_optimizer"}
        return cls(REGISTRY[inner["class_name"]].from_config(inner["config"], params), **rest)

    def state_dict(self) -> dict[str, Any]:
        """The scale, the counter and the inner optimizer's state dict."""
        with self._inner.lock:
            return {"format_version": 1, "class": "LossScaleOptimizer",
                    "config": {"initial_scale": self._initial_scale,
                               "dynamic_growth_steps": self._growth_steps},
                    "dynamic_scale": float(self._scale), "step_counter": self._counter,
                    "inner_optimizer": self._inner.state_dict()}

    def check_state_dict(self, sd: Mapping[str, Any], hyperparameters: LoadPolicy = None
                         ) -> Callable[[], None]:
        """Validate ``sd`` completely; return a function that applies it and
        cannot fail.  ``hyperparameters`` goes to the inner optimizer (see
        :meth:`fastopt.Optimizer.load_state_dict`)."""
        if not isinstance(sd, dict) or sd.get("format_version") != 1 \
                or sd.get("class") != "LossScaleOptimizer":
            got = sd.get("class") if isinstance(sd, dict) else type(sd).__name__
            raise ValueError(f"not a LossScaleOptimizer state (got {_show(got)}); pass the dict "
                             f"returned by LossScaleOptimizer.state_dict()")
        scale = _saved_scale(sd.get("dynamic_scale"))
        counter = _statedict.check_counter(sd.get("step_counter"), "step_counter")
        if counter >= self._growth_steps:
            raise ValueError(f"step_counter: {counter} finite steps counted, but this "
                             f"optimizer doubles the scale after dynamic_growth_steps="
                             f"{self._growth_steps}; build it with the dynamic_growth_steps "
                             f"it was saved with (config: {sd.get('config')!r:.80})")
        if "inner_optimizer" not in sd:
            raise ValueError("the state lacks 'inner_optimizer'; it was not written by "
                             "LossScaleOptimizer.state_dict() (or was edited)")
        try:
            apply_inner = self._inner.check_state_dict(sd["inner_optimizer"], hyperparameters)
        except ValueError as e:
            raise ValueError(f"inner_optimizer: {e}") from e

        def apply() -> None:
            apply_inner()
            self._scale = scale
            self._counter = counter

        return apply

    def load_state_dict(self, sd: Mapping[str, Any], hyperparameters: LoadPolicy = None
                        ) -> None:
        """Restore :meth:`state_dict`; everything is checked first."""
        with self._inner.lock:
            self.check_state_dict(sd, hyperparameters)()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_buffers"] = {}      # scratch: refilled by the next step
        return state

    def __repr__(self) -> str:
        return (f"LossScaleOptimizer({self._inner!r}, dynamic_scale={float(self._scale)!r}, "
                f"step_counter={self._counter}, dynamic_growth_steps={self._growth_steps})")


def _refuse_skip(inner: Optimizer) -> None:
    if inner.skip_nonfinite:
        raise ValueError("inner_optimizer has skip_nonfinite=True: a LossScaleOptimizer skips "
                         "steps with NaN or Inf gradients itself and halves the scale; an inner "
                         "skip would hide them from the scale. Set the inner optimizer's "
                         "skip_nonfinite=False")


def _saved_scale(value: Any) -> np.float32:
    """A saved ``dynamic_scale`` as float32, or ValueError: a value the
    scale can take (>= 0, exact in float32; inf after an overflow)."""
    fine = not isinstance(value, (bool, np.bool_)) and isinstance(
        value, (int, float, np.integer, np.floating))
    if fine:
        try:
            with np.errstate(over="ignore", under="ignore"):
                scale = np.float32(value)
            fine = value >= 0 and float(scale) == value
        except OverflowError:       # an int beyond any float
            fine = False
    if not fine:
        raise ValueError(f"dynamic_scale: expected a float32 value >= 0 (the scale a "
                         f"LossScaleOptimizer saves); got {_show(value)}")
    return scale


def _show(value: Any) -> str:
    """``value`` for a message: its repr, cut short (a huge int by its size)."""
    if isinstance(value, (int, np.integer)) and abs(int(value)).bit_length() > 128:
        return f"an int of {abs(int(value)).bit_length()} bits"
    return f"{value!r:.60}"
