"""fastopt's kernels as ``torch.optim`` optimizers, for CPU training loops.

The one-line port of a torch loop::

    from fastopt.torch import AdamW          # was: from torch.optim import AdamW
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)

Each class here is a :class:`torch.optim.Optimizer` with the name, signature
and defaults of its ``torch.optim`` namesake (read from the installed torch),
so ``param_groups``, ``add_param_group``, ``zero_grad``, the step hooks,
every ``lr_scheduler`` and ``state_dict()``/``load_state_dict()`` behave as
torch's do, and the trajectories are torch's (fastopt's ``convention="torch"``).

How a step runs: each param group is bound once to a fastopt optimizer over
zero-copy NumPy views of its parameters (``p.detach().numpy()``), whose state
arrays are in turn the tensors of ``opt.state[p]`` (``torch.from_numpy``).
Per step, each ``p.grad`` is handed to the kernels by its address; no NumPy
view, no copy.  That per-tensor work (read ``p.grad``, check it, take its
address, keep it alive, move the param's version counter) runs in one C++
loop, ``fastopt/_torch_binder.cpp``, which torch's extension builder compiles
the first time an optimizer is made (about 20 s; then cached for this torch
version; it needs a C++ compiler and ``ninja``, ``pip install
'fastopt[torch]'``).  Without it (or with ``FASTOPT_TORCH_BINDER=0``) the
same work runs in Python, with the same results, at about 0.4 us more per
tensor and step; :func:`binder` says which.  A group is bound again when a
parameter's ``data_ptr`` changes (a parameter re-assigned in the group,
``model.double()``, ``p.data = ...``) or its state layout changes
(``amsgrad`` switched on); the state is carried over, cast to the new dtype.  A change of dtype or device
always moves the memory; a reshape in place (``p.data = p.data.view(...)``,
same memory and size) keeps the binding, which is right for these
element-wise updates.  Each grad's layout and size are checked every step,
and the updated parameters' version counters are moved as torch's in-place
updates move them (autograd then refuses a graph that saved an old value).  Hyper-parameter edits of
``param_groups`` (``lr``, ``betas``, ``momentum``, ``weight_decay``, ...) take
effect at the next step.

What differs from ``torch.optim``:

* CPU only, float32 and float64 parameters, dense C-contiguous parameters
  and gradients (SparseAdam: sparse COO grads of whole rows of a 2-D
  parameter, as ``nn.Embedding(sparse=True)`` gives); anything else is
  refused with the group and index of the parameter (use ``torch.optim`` for
  GPU tensors, ``channels_last`` weights, half precision and other sparse
  layouts).
* ``foreach`` and ``fused`` are accepted (and kept in the param groups and
  state dicts, so that checkpoints stay torch's) but change nothing: there is
  one implementation.  ``differentiable=True`` (the step is not
  differentiable) and ``capturable=True`` (CUDA graphs) are refused, as
  settings that would do nothing; ``False``, torch's default, is kept.
* Keys a param group has that the optimizer does not know (a scheduler's
  ``initial_lr``, ``max_momentum``) are ignored, as torch ignores them.
* Mixed precision: :class:`torch.amp.GradScaler` unscales the grads and
  skips the step on Inf/NaN through its generic path (``unscale_`` then
  ``step``); its fused protocol (``_step_supports_amp_scaling``, which would
  fold the unscale into the update) is not used.
* ``state["step"]`` (a float tensor, as torch keeps it) is updated in place
  after every step; :meth:`state_dict` re-reads the engine's own integer
  counts first, so a checkpoint is exact even if the tensors were edited.

Adding an optimizer: a fastopt class with ``convention="torch"`` and one line
in ``_TABLE`` (its torch name, the fastopt class, the names torch gives its
state arrays and any keyword torch names differently).
"""
import functools
import inspect
import itertools
import operator
import os
import re
import shutil
import warnings

import numpy as np

try:
    import torch  # type: ignore[import-not-found, unused-ignore]
    from torch.optim import (  # type: ignore[import-not-found, unused-ignore]
        optimizer as _torch_optimizer)
    from torch.optim.optimizer import (  # type: ignore[import-not-found, unused-ignore]
        _get_scalar_dtype)
except ImportError as exc:     # pragma: no cover - exercised without torch only
    raise ImportError("fastopt.torch needs PyTorch, which is not installed: "
                      "pip install 'fastopt[torch]' (or pip install torch)") from exc

from . import optimizers as _fo
from ._core import RowGrad as _RowGrad

__all__ = ["binder"]

_grad = operator.attrgetter("grad")
_data_ptr = torch.Tensor.data_ptr
_is_contiguous = torch.Tensor.is_contiguous
_nbytes = operator.attrgetter("nbytes")

#: torch keywords that are fastopt hyper-parameters under another name; a
#: pair (``betas``) gives two.
_RENAMES = {"lr": "learning_rate", "eps": "epsilon", "betas": ("beta_1", "beta_2")}
#: torch keywords that are fastopt options of the whole (per-group) optimizer.
_OPTIONS = ("maximize", "decoupled_weight_decay")
#: torch keywords that select one of torch's implementations: accepted, no effect.
_IGNORED = ("foreach", "fused", "capturable", "differentiable")
#: ... of which these ask for what fastopt's step cannot be: refused when true.
_REFUSED = {"capturable": "CUDA-graph capture of the step",
            "differentiable": "a step autograd differentiates through"}
_FLOAT_DTYPES = (torch.float32, torch.float64)


_BINDER_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_binder.cpp")
_binder_state: dict = {}     # "module": the compiled binder, or None; "why": why not


def _binder_module():
    """The compiled C++ binder (built on first use), or None."""
    if "module" not in _binder_state:
        _binder_state["module"], _binder_state["why"] = _build_binder()
        if _binder_state["module"] is None and _binder_state["why"] is not None:
            warnings.warn(f"fastopt.torch: {_binder_state['why']}. Steps bind each tensor in "
                          f"Python instead: the same results, about 0.4 us more per tensor. "
                          f"pip install 'fastopt[torch]' (ninja) and a C++ compiler enable "
                          f"the binder; FASTOPT_TORCH_BINDER=0 uses Python without this "
                          f"warning", RuntimeWarning, stacklevel=4)
    return _binder_state["module"]


def _build_binder():
    """(module, None), or (None, why not); why is None when turned off."""
    setting = os.environ.get("FASTOPT_TORCH_BINDER", "1").strip()
    if setting == "0":
        return None, None
    if setting != "1":
        return None, f"FASTOPT_TORCH_BINDER={setting!r} is neither 0 nor 1"
    path = os.environ.get("PATH")
    try:
        from torch.utils import cpp_extension  # type: ignore[import-not-found, unused-ignore]
        if shutil.which("ninja") is None:
            # the ninja of `pip install ninja` in an environment not activated
            import ninja  # type: ignore[import-not-found, unused-ignore]
            os.environ["PATH"] = os.pathsep.join(p for p in (ninja.BIN_DIR, path) if p)
        # one build per torch version: the cache is keyed by name only
        name = "fastopt_torch_binder_" + re.sub(r"\W", "_", torch.__version__)
        return cpp_extension.load(name=name, sources=[_BINDER_SOURCE],
                                  extra_cflags=["-O2"], verbose=False), None
    except Exception as exc:     # a missing compiler or ninja, a failed build
        lines = str(exc).strip().splitlines()
        return None, (f"the C++ step binder could not be built ({type(exc).__name__}: "
                      f"{lines[0] if lines else ''})")
    finally:
        if path is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = path


def binder():
    """How steps bind their tensors: ``"C++"`` (the compiled binder),
    ``"Python"`` (``FASTOPT_TORCH_BINDER=0``), or ``"Python: <why the
    binder could not be built>"``.  Builds the binder if no optimizer has
    yet."""
    if _binder_module() is not None:
        return "C++"
    why = _binder_state["why"]
    return "Python" if why is None else f"Python: {why}"


def _takes_a_list():
    try:
        torch.autograd.graph.increment_version([torch.zeros(1)])
    except TypeError:      # pragma: no cover - torch before 2.3 takes one tensor
        return False
    return True


_INCREMENT_LIST = _takes_a_list()


def _bump_versions(tensors):
    """Tell autograd the tensors were written in place (as torch's own
    in-place updates do), so that a graph that saved one of them refuses a
    later backward instead of using the new values silently."""
    if _INCREMENT_LIST:
        torch.autograd.graph.increment_version(tensors)
    else:                  # pragma: no cover
        for t in tensors:
            torch.autograd.graph.increment_version(t)


def _hook_step(func):
    """``func`` wrapped as :meth:`torch.optim.Optimizer.profile_hook_step`
    wraps a step: the global and the optimizer's own step pre-hooks (one may
    return new ``(args, kwargs)``), the step, then the post-hooks, in torch's
    order.  torch's wrapper also enters a ``record_function`` label on every
    step, which costs about 30 us even when no profiler is on (7% of a step of
    404 tensors); here the label is entered only while a profiler runs, under
    torch's name.  With a torch that lacks the pieces used here, ``func`` is
    returned as it is and torch's own wrapper applies."""
    pre = getattr(_torch_optimizer, "_global_optimizer_pre_hooks", None)
    post = getattr(_torch_optimizer, "_global_optimizer_post_hooks", None)
    enabled = getattr(getattr(torch._C, "_autograd", None), "_profiler_enabled", None)
    if not (isinstance(pre, dict) and isinstance(post, dict) and callable(enabled)):
        return func     # pragma: no cover - torch before 2.0

    def hooked(self, args, kwargs):
        for hook in itertools.chain(pre.values(), self._optimizer_step_pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(f"{func} must return None or a tuple of (new_args, "
                                       f"new_kwargs), but got {result}.")
        out = func(*args, **kwargs)
        self._optimizer_step_code()
        for hook in itertools.chain(self._optimizer_step_post_hooks.values(), post.values()):
            hook(self, args, kwargs)
        return out

    @functools.wraps(func)
    def step(*args, **kwargs):
        self = args[0]
        if enabled():
            with torch.autograd.profiler.record_function(
                    f"Optimizer.step#{type(self).__name__}.step"):
                return hooked(self, args, kwargs)
        return hooked(self, args, kwargs)

    step.hooked = True      # type: ignore[attr-defined]  # torch's mark: not wrapped again
    return step


class _Spec:
    """One line of the table: how a torch.optim class maps onto a fastopt one."""

    def __init__(self, torch_name, fastopt_cls, state, renames=None, step=True, aux=None,
                 eager=False, shapes=None, derived=None, sparse=False):
        self.torch_name = torch_name
        self.fastopt_cls = fastopt_cls
        self.state = dict(state)               # fastopt state name -> torch state name
        self.renames = dict(_RENAMES, **(renames or {}))
        self.step = step                       # torch keeps state["step"] (True: a
        # float tensor, "int": a Python int, as SparseAdam)
        self.aux = aux                         # torch's name of the engine's host value
        self.eager = eager                     # torch makes the state at construction
        # fastopt state name -> torch's shape of that array from the param's
        # shape, where torch keeps it with other axes (a factored row: (r, 1))
        self.shapes = dict(shapes or {})
        # torch's per-param scalars that follow from the group and the step
        # count (ASGD's mu): name -> f(group, steps) -> values
        self.derived = dict(derived or {})
        # the torch class takes sparse COO grads only (SparseAdam): each is
        # handed over as a RowGrad of its coalesced rows
        self.sparse = sparse
        cls = getattr(torch.optim, torch_name)
        self.signature = inspect.signature(cls.__init__)
        args = tuple(k for k in self.signature.parameters if k not in ("self", "params"))
        # defaults torch sets beyond its arguments (AdamW: decoupled_weight_decay=True)
        probe = cls([torch.zeros(1, 1, requires_grad=True)]).defaults     # Muon: a matrix
        self.extra = {k: v for k, v in probe.items() if k not in args}
        self.keys = args + tuple(self.extra)

    def translate(self, group, where):
        """fastopt's hyper-parameters and options from a torch param group."""
        hp, opts = {}, {}
        for key in self.keys:
            if key not in group:
                continue
            value = group[key]
            if value and key in _REFUSED:
                raise ValueError(f"{where}{key}=True asks for {_REFUSED[key]}, which "
                                 f"fastopt's in-place C step cannot give; leave it False "
                                 f"(torch's default) or use torch.optim.{self.torch_name}")
            if key in _IGNORED:
                continue
            if key in _OPTIONS:
                opts[key] = value
                continue
            name = self.renames.get(key, key)
            if isinstance(name, tuple):
                try:
                    parts = tuple(value)
                except TypeError:
                    parts = ()
                if len(parts) != len(name):
                    raise TypeError(f"{where}{key} must be a pair ({', '.join(name)}); "
                                    f"got {value!r}")
                hp.update(zip(name, map(_scalar, parts)))
            else:
                named = self.fastopt_cls.named_values.get(name, {})
                # a name (Muon's adjust_lr_fn) as the value fastopt holds for it
                hp[name] = named[value] if isinstance(value, (str, type(None))) and \
                    value in named else _scalar(value)
        return hp, opts


def _scalar(value):
    """torch accepts a one-element tensor where a float is expected."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"a hyper-parameter must be a float or a one-element tensor; got a "
                            f"tensor of shape {tuple(value.shape)}")
        return value.item()
    return value


def _in_group(exc, gi):
    """A bound optimizer's error (it has one group, 0) as one of group ``gi``."""
    msg = str(exc)
    msg = (msg.replace("param group 0: ", f"param group {gi}: ", 1)
           if msg.startswith("param group 0: ") else f"param group {gi}: {msg}")
    return type(exc)(msg)


class _Bound:
    """A param group bound to a fastopt optimizer."""

    __slots__ = ("inner", "stepper", "lock", "params", "pptrs", "nbytes", "key", "names",
                 "tstate", "steps", "steps_np", "aux", "aux_np", "derived", "unstarted",
                 "binder")


class _TorchOptimizer(torch.optim.Optimizer):
    """Base of the classes of :mod:`fastopt.torch` (see the module docstring)."""

    _spec: _Spec

    def __init__(self, params, defaults):
        self._bound = []
        super().__init__(params, defaults)

    # ---- binding -------------------------------------------------------------------

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._bound.append(None)
        try:
            self._bind(len(self.param_groups) - 1)
        except BaseException:
            self.param_groups.pop()
            self._bound.pop()
            raise

    def _view(self, gi, i, p):
        where = (f"param group {gi}, params[{i}] (shape {tuple(p.shape)}, {p.dtype}, "
                 f"device {p.device})")
        if p.device.type != "cpu":
            raise ValueError(f"{where}: fastopt.torch updates CPU tensors in place; use "
                             f"torch.optim.{self._spec.torch_name} for tensors on "
                             f"{p.device.type}")
        if p.layout != torch.strided:
            raise ValueError(f"{where}: a {p.layout} parameter; fastopt.torch updates dense "
                             f"(strided) tensors")
        if p.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{where}: fastopt's kernels take float32 or float64 parameters; "
                            f"use torch.optim.{self._spec.torch_name} for {p.dtype}")
        if not p.is_contiguous():
            raise ValueError(f"{where}: not contiguous (strides {p.stride()}); fastopt updates "
                             f"contiguous memory in place and never a copy. Make the parameter "
                             f"contiguous (p.data = p.data.contiguous(), or no channels_last) "
                             f"before building the optimizer")
        if p.is_conj() or p.is_neg():
            raise ValueError(f"{where}: a lazily conjugated or negated view; pass the "
                             f"materialised tensor")
        return p.detach().numpy()

    def _bind(self, gi):
        """Bind group ``gi`` to a new fastopt optimizer; the state in
        ``self.state`` (torch tensors: loaded, or of the previous binding) is
        copied in, and ``self.state`` then holds views of the new arrays."""
        spec = self._spec
        old = self._bound[gi]
        if old is not None:
            self._sync_mirrors(old)
        group = self.param_groups[gi]
        params = list(group["params"])
        where = f"param group {gi}: "
        views = [self._view(gi, i, p) for i, p in enumerate(params)]
        hp, opts = spec.translate(group, where)
        try:
            inner = spec.fastopt_cls([{"params": views, **hp}], convention="torch", **opts)
        except (TypeError, ValueError) as exc:
            raise _in_group(exc, gi) from None
        g0 = inner.param_groups[0]
        names = inner.state_names(g0)
        arrays = inner.state_arrays()
        b = _Bound()
        b.inner, b.stepper, b.lock = inner, inner._stepper, inner.lock
        b.params = params
        b.pptrs = list(map(_data_ptr, params))
        b.nbytes = list(map(_nbytes, params))
        b.key = tuple(map(group.get, spec.keys))
        b.names = names
        b.tstate = [{spec.state[n]: self._tensor(n, a, p.shape)
                     for (n, _), a in zip(inner.state_layout(g0, v), arrs)}
                    for p, v, arrs in zip(params, views, arrays)]
        n = len(params)
        scalar = _get_scalar_dtype()
        if spec.step == "int":
            b.steps, b.steps_np = None, np.zeros(n, dtype=np.int64)
        else:
            b.steps = torch.zeros(n, dtype=scalar) if spec.step else None
            b.steps_np = None if b.steps is None else b.steps.numpy()
        b.aux = torch.ones(n, dtype=scalar) if spec.aux else None
        b.aux_np = None if b.aux is None else b.aux.numpy()
        b.derived = {k: torch.zeros(n, dtype=scalar) for k in spec.derived}
        steps = np.zeros(n, dtype=np.int64)
        aux = list(b.stepper.get_aux()) if spec.aux else None
        started = []
        for i, p in enumerate(params):
            st = self.state.get(p)
            if not st:
                continue
            pw = f"{where}state of params[{i}]"
            for key, dst in b.tstate[i].items():
                src = st.get(key)
                if src is None:
                    continue
                if not isinstance(src, torch.Tensor) or src.shape != dst.shape:
                    got = (tuple(src.shape) if isinstance(src, torch.Tensor)
                           else type(src).__name__)
                    raise ValueError(f"{pw}: {key!r} must be a tensor of shape "
                                     f"{tuple(dst.shape)}; got {got}")
                dst.copy_(src.detach())
            if "step" in st:
                steps[i] = int(_scalar(st["step"]))
            elif any(st.get(k) is not None for k in b.tstate[i]):
                steps[i] = 1        # torch's SGD keeps no count; a buffer means it has stepped
            if spec.aux and spec.aux in st:
                aux[i] = float(_scalar(st[spec.aux]))
            started.append(i)
        b.stepper.set_steps(steps)
        if spec.aux:
            b.stepper.set_aux(aux)
        b.unstarted = set(range(n))
        module = None if spec.sparse else _binder_module()
        b.binder = module.Binder(params) if module is not None else None
        self._bound[gi] = b
        self._sync_mirrors(b)
        for i in (range(n) if spec.eager else started):
            self._publish(b, i)

    def _publish(self, b, i):
        """``self.state[p]`` as torch has it once ``p`` has been stepped."""
        st, arrays = {}, b.tstate[i]
        if b.steps is not None:
            st["step"] = b.steps[i]
        elif b.steps_np is not None:
            st["step"] = int(b.steps_np[i])
        if b.aux is not None:
            st[self._spec.aux] = b.aux[i]
        for key, values in b.derived.items():
            st[key] = values[i]
        for key in self._spec.state.values():     # in the order torch writes them
            if key in arrays:
                st[key] = arrays[key]
        if st:
            self.state[b.params[i]] = st
        b.unstarted.discard(i)

    def _sync_mirrors(self, b):
        """Write the engine's counters into the ``step`` (and aux) tensors."""
        if b.steps_np is not None:
            b.steps_np[:] = b.stepper.get_steps()
            if b.steps is None:
                self._int_steps(b, range(len(b.params)))
        if b.aux_np is not None:
            b.aux_np[:] = b.stepper.get_aux()
        self._derive(b)

    def _int_steps(self, b, which):
        for i in which:
            st = self.state.get(b.params[i])
            if st:
                st["step"] = int(b.steps_np[i])

    def _derive(self, b):
        if b.derived:
            steps = b.stepper.get_steps()
            group = b.inner.param_groups[0]
            for key, f in self._spec.derived.items():
                b.derived[key].numpy()[:] = f(group, steps)

    def _tensor(self, name, a, shape):
        """The torch tensor of state array ``a`` (a view, in torch's shape)."""
        t = torch.from_numpy(a)
        f = self._spec.shapes.get(name)
        return t if f is None else t.view(f(tuple(shape)))

    def _edit(self, gi, b, group):
        """Hand edited hyper-parameters to the bound optimizer (a change that
        needs other state arrays binds the group again)."""
        hp, opts = self._spec.translate(group, f"param group {gi}: ")
        inner = b.inner
        g = inner.param_groups[0]
        if inner.state_names(dict(g, **hp)) != b.names:
            self._bind(gi)
            return
        try:
            for key, value in hp.items():
                if g.get(key) != value:
                    g[key] = value      # checked when assigned
            for key, value in opts.items():
                if getattr(inner, key) != value:
                    setattr(inner, key, value)
            with inner.lock:
                inner._sync(0)          # checked now, before any group is stepped
        except (TypeError, ValueError) as exc:
            raise _in_group(exc, gi) from None
        b.key = tuple(map(group.get, self._spec.keys))

    # ---- the step ------------------------------------------------------------------

    def _checked(self, gi, b, grads, one):
        """``one(where, p, g)`` of each grad that is not None (None kept)."""
        out = []
        for i, (p, g) in enumerate(zip(b.params, grads)):
            where = f"param group {gi}, params[{i}] (shape {tuple(p.shape)}, {p.dtype})"
            out.append(None if g is None else one(where, p, g))
        return out

    def _grads(self, gi, b, grads):
        """The addresses of ``grads``, each checked (the slow path: a None,
        or a grad the fast check refused)."""
        return self._checked(gi, b, grads, self._address)

    def _address(self, where, p, g):
        if g.layout != torch.strided:
            raise ValueError(f"{where}: a {g.layout} gradient; "
                             f"fastopt.torch.{self._spec.torch_name} takes dense "
                             f"gradients (torch.optim.SparseAdam takes sparse ones)")
        if g.device != p.device:
            raise ValueError(f"{where}: its gradient is on {g.device}")
        if g.dtype != p.dtype or g.shape != p.shape:
            raise ValueError(f"{where}: its gradient has dtype {g.dtype} and shape "
                             f"{tuple(g.shape)}; expected the param's")
        if not g.is_contiguous():
            raise ValueError(f"{where}: its gradient is not contiguous (strides "
                             f"{g.stride()}); fastopt reads contiguous gradients. Make "
                             f"it contiguous (p.grad = p.grad.contiguous())")
        return g.data_ptr()

    def _row_grads(self, gi, b, grads):
        """``fo.RowGrad`` s of coalesced sparse COO grads (SparseAdam): the
        rows of a 2-D param, as ``nn.Embedding(sparse=True)`` gives them."""
        return self._checked(gi, b, grads, self._rows)

    @staticmethod
    def _rows(where, p, g):
        if g.layout != torch.sparse_coo:
            raise RuntimeError(f"{where}: SparseAdam does not support dense gradients "
                               f"(got {g.layout}), please consider Adam instead")
        if g.device != p.device or g.dtype != p.dtype or g.shape != p.shape:
            raise ValueError(f"{where}: its gradient has dtype {g.dtype}, shape "
                             f"{tuple(g.shape)} and device {g.device}; expected the "
                             f"param's")
        if p.dim() != 2 or g.sparse_dim() != 1:
            raise ValueError(f"{where}: a sparse gradient with {g.sparse_dim()} sparse "
                             f"dimension(s); fastopt.torch.SparseAdam updates whole rows of "
                             f"a 2-D parameter (sparse_dim 1, as nn.Embedding(sparse=True) "
                             f"gives); use torch.optim.SparseAdam for other layouts")
        g = g.coalesce()        # torch's sum of repeated rows, in torch's order
        values = g._values()
        if not values.is_contiguous():      # pragma: no cover - coalesce makes them so
            values = values.contiguous()
        return _RowGrad(g._indices()[0].numpy(), values.numpy())

    @_hook_step
    def step(self, closure=None):
        """One update of every parameter that has a ``.grad`` (the others and
        their state are left as they are).  ``closure`` re-evaluates the model
        and returns the loss, as in torch."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # every group is bound and checked before any is stepped: a refused
        # step changes nothing
        work = [self._prepare(gi, group) for gi, group in enumerate(self.param_groups)]
        for gi, b, grads, addrs, full in work:
            self._step_group(gi, b, grads, addrs, full)
        return loss

    def _prepare(self, gi, group):
        """``(gi, bound group, grads, addresses, every grad present)`` of a
        group to step, checked.  ``grads`` holds the grads alive until the
        kernels are done: a list, or the binder's step (``addrs`` an int64
        array then, 0 for a param without a grad)."""
        bound = self._bound
        b = bound[gi]
        params = group["params"]
        if (b is not None and b.binder is not None and type(params) is list
                and tuple(map(group.get, self._spec.keys)) == b.key):
            st = b.binder.gather(params)
            if st.status < 0:
                return gi, b, st, st.addrs, -1 - st.status == len(b.params)
        if b is None or list(map(_data_ptr, params)) != b.pptrs:
            self._bind(gi)
            b = bound[gi]
        elif tuple(map(group.get, self._spec.keys)) != b.key:
            self._edit(gi, b, group)
            b = bound[gi]
        grads = list(map(_grad, params))     # held: alive until the kernels are done
        if self._spec.sparse:
            return gi, b, grads, self._row_grads(gi, b, grads), False
        try:
            addrs, full = list(map(_data_ptr, grads)), True
            if not all(map(_is_contiguous, grads)) or list(map(_nbytes, grads)) != b.nbytes:
                addrs = self._grads(gi, b, grads)
        except (TypeError, RuntimeError):    # a None, or a grad without storage (sparse)
            addrs, full = self._grads(gi, b, grads), False
        return gi, b, grads, addrs, full

    def _step_group(self, gi, b, grads, addrs, full):
        """Step one group prepared by :meth:`_prepare`, then move its params'
        version counters and step counts."""
        try:
            with b.lock:
                b.stepper.step(addrs, not self._spec.sparse)
        except (TypeError, ValueError) as exc:
            raise _in_group(exc, gi) from None
        listed = type(grads) is list        # else the binder's step, which holds them
        stepped = (None if full else [i for i, a in enumerate(addrs) if a is not None] if listed
                   else np.flatnonzero(addrs).tolist())
        if not listed:
            b.binder.bump(grads)            # the versions of the params stepped
        elif full:
            _bump_versions(b.params)
        else:
            _bump_versions([b.params[i] for i in stepped])
        if b.steps_np is not None:
            if full:
                b.steps_np += 1
            else:
                b.steps_np[stepped] += 1
                if b.steps is None:
                    self._int_steps(b, stepped)
        if b.aux_np is not None:
            b.aux_np[:] = b.stepper.get_aux()
        self._derive(b)
        if b.unstarted:
            for i in sorted(b.unstarted if full else b.unstarted.intersection(stepped)):
                self._publish(b, i)

    # ---- state ---------------------------------------------------------------------

    def state_dict(self):
        for b in self._bound:
            if b is not None:
                self._sync_mirrors(b)
        return super().state_dict()

    def load_state_dict(self, state_dict):
        for b in self._bound:
            if b is not None:
                self._sync_mirrors(b)
        saved = (self.state, self.param_groups, list(self._bound))
        super().load_state_dict(state_dict)
        try:
            for gi in range(len(self.param_groups)):
                self._bound[gi] = None
                self._bind(gi)
        except BaseException:
            self.state, self.param_groups, self._bound[:] = saved
            raise

    def __setstate__(self, state):
        super().__setstate__(state)
        self._bound = [None] * len(self.param_groups)


def _make(spec):
    def __init__(self, params, *args, **kwargs):
        bound = spec.signature.bind(self, params, *args, **kwargs)
        bound.apply_defaults()
        defaults = {k: v for k, v in bound.arguments.items() if k not in ("self", "params")}
        defaults.update(spec.extra)
        _TorchOptimizer.__init__(self, params, defaults)

    __init__.__signature__ = spec.signature
    name = spec.torch_name
    doc = (f"torch.optim.{name} on fastopt's kernels: the same arguments, defaults, param "
           f"groups and state dicts, and the trajectory of torch.optim.{name} "
           f"(:class:`fastopt.{spec.fastopt_cls.__name__}` with ``convention=\"torch\"``; "
           f"see its docstring for the math).\n\n"
           f"    Signature: {name}{str(spec.signature).replace('self, ', '')}\n\n"
           f"    ``foreach`` and ``fused`` are accepted and change nothing; "
           f"``capturable=True`` and ``differentiable=True`` are refused.\n    CPU float32/float64 contiguous parameters only; see "
           f":mod:`fastopt.torch` for what differs from torch.optim.\n")
    cls = type(name, (_TorchOptimizer,), {"__init__": __init__, "__doc__": doc,
                                          "_spec": spec, "__module__": __name__})
    globals()[name] = cls
    __all__.append(name)
    return cls


#: One line per optimizer: torch's class name, the fastopt class, torch's names
#: of its state arrays, then torch keywords named otherwise in fastopt, whether
#: torch keeps a per-param ``step``, the engine's host value ``aux`` and
#: whether torch makes the state at construction (Adagrad).
_TABLE = [
    _Spec("SGD", _fo.SGD, {"momentum": "momentum_buffer"}, step=False),
    _Spec("Adam", _fo.Adam, {"m": "exp_avg", "v": "exp_avg_sq", "vhat": "max_exp_avg_sq"}),
    _Spec("AdamW", _fo.AdamW, {"m": "exp_avg", "v": "exp_avg_sq", "vhat": "max_exp_avg_sq"}),
    _Spec("Adagrad", _fo.Adagrad, {"accumulator": "sum"}, eager=True),
    _Spec("RMSprop", _fo.RMSprop, {"v": "square_avg", "momentum": "momentum_buffer",
                                   "mg": "grad_avg"}, renames={"alpha": "rho"}),
    _Spec("Adamax", _fo.Adamax, {"m": "exp_avg", "u": "exp_inf"}),
    _Spec("NAdam", _fo.Nadam, {"m": "exp_avg", "v": "exp_avg_sq"}, aux="mu_product"),
    _Spec("RAdam", _fo.RAdam, {"m": "exp_avg", "v": "exp_avg_sq"}),
    _Spec("Adadelta", _fo.Adadelta, {"accumulated_grad": "square_avg",
                                     "accumulated_delta": "acc_delta"}),
    _Spec("Rprop", _fo.Rprop, {"prev": "prev", "step_size": "step_size"},
          renames={"etas": ("etaminus", "etaplus"),
                   "step_sizes": ("step_size_min", "step_size_max")}),
    _Spec("ASGD", _fo.ASGD, {"ax": "ax"}, aux="eta",
          derived={"mu": lambda g, steps: 1.0 / np.maximum(1.0, steps - g["t0"])}),
    _Spec("SparseAdam", _fo.SparseAdam, {"m": "exp_avg", "v": "exp_avg_sq"}, step="int",
          sparse=True),
    _Spec("Adafactor", _fo.Adafactor, {"row": "row_var", "col": "col_var", "v": "variance"},
          renames={"eps": "eps"},
          shapes={"row": lambda s: s[:-1] + (1,), "col": lambda s: s[:-2] + (1,) + s[-1:]}),
    _Spec("Muon", _fo.Muon, {"momentum_buffer": "momentum_buffer"}, step=False,
          renames={"ns_coefficients": ("muon_a", "muon_b", "muon_c")}),
]

for _spec in _TABLE:
    _make(_spec)
del _spec
