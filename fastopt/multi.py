"""Several optimizers over one parameter list, stepped as one (Keras 3's
``MultiOptimizer``, optax's ``multi_transform``)."""
import re
import threading

import numpy as np

from . import _statedict
from ._hyper import group_names, is_schedule, split_param_groups
from .optimizer import pairs_to_grads

ROUTE_KEY = "optimizer"


class MultiOptimizer:
    r"""Route each parameter to one of several fastopt optimizers; step, save
    and load them as one.

    Parameters
    ----------
    params : list of ndarray, or list of dict
        The parameters, in the order their grads are given to :meth:`step`;
        or param groups (``{"params": [...], "name"/"names": ..., "optimizer":
        label, <hyper-parameter overrides>}``).  A group's ``"optimizer"``
        routes all its parameters; its overrides go to that optimizer's group.
    optimizers : dict
        ``{label: factory}``; ``factory(params)`` builds the optimizer of
        ``label`` over the parameters routed to it (as param groups: one per
        group of ``params`` that has any), e.g. ``fo.Adam`` or
        ``functools.partial(fo.SGD, learning_rate=0.1, momentum=0.9)``.
    routes : dict, optional
        ``{name or pattern: label}``: routes parameters by name (names come
        from param groups).  A name equal to a key takes that key's label;
        otherwise the patterns that ``re.fullmatch`` the name (as Keras's
        ``OptimizerMap``).
    default : str, optional
        The label of parameters no group and no route names.

    Every parameter must be routed exactly once: a parameter that two routes
    (or a group and a route) claim, or that none claims without a
    ``default``, is refused, as is an array passed twice or a label that
    gets no parameter.

    Notes
    -----
    :meth:`step` checks every grad of every optimizer (and their
    hyper-parameters and schedules) before any optimizer writes: a refused
    step changes nothing.  Each optimizer then runs its own whole step
    (clipping, ``skip_nonfinite`` and ``iterations`` are per optimizer;
    ``global_clipnorm`` is the norm over its own grads).  One
    :meth:`state_dict` holds every optimizer's; :func:`fastopt.save` and
    :func:`fastopt.load` take a MultiOptimizer like any optimizer.

    Examples
    --------
    >>> import functools, numpy as np, fastopt as fo
    >>> W, b = np.ones((2, 2)), np.zeros(2)
    >>> opt = fo.MultiOptimizer(
    ...     [{"params": [W], "name": "dense/kernel"}, {"params": [b], "name": "dense/bias"}],
    ...     optimizers={"adam": functools.partial(fo.Adam, learning_rate=0.1),
    ...                 "sgd": functools.partial(fo.SGD, learning_rate=0.5)},
    ...     routes={".*/kernel": "adam"}, default="sgd")
    >>> opt.step([np.ones((2, 2)), np.ones(2)])
    >>> np.round(W, 3), b
    (array([[0.9, 0.9],
           [0.9, 0.9]]), array([-0.5, -0.5]))
    >>> opt.labels
    ['adam', 'sgd']
    """

    def __init__(self, params, optimizers, routes=None, default=None):
        if not isinstance(optimizers, dict) or not optimizers:
            raise TypeError("optimizers must be a non-empty dict {label: factory}; got "
                            f"{type(optimizers).__name__}")
        for label, factory in optimizers.items():
            if not isinstance(label, str) or not callable(factory):
                raise TypeError(f"optimizers: expected {{str label: callable factory}}; got "
                                f"{label!r}: {factory!r:.60}")
        routes = dict(routes or {})
        for key, label in list(routes.items()) + [("default", default)]:
            if label is not None and label not in optimizers:
                raise ValueError(f"routes: {key!r} names the label {label!r}, which is not "
                                 f"one of the optimizers {sorted(optimizers)}")
        groups = split_param_groups(params)
        flat, labels, where = [], [], []
        for gi, (plist, over) in enumerate(groups):
            over = dict(over)
            names = group_names(over, len(plist), gi)
            by_group = over.pop(ROUTE_KEY, None)
            if by_group is not None and by_group not in optimizers:
                raise ValueError(f"param group {gi}: optimizer {by_group!r} is not one of "
                                 f"{sorted(optimizers)}")
            for k, p in enumerate(plist):
                i = len(flat)
                claims = ([f"param group {gi} ('optimizer': {by_group!r})"]
                          if by_group is not None else [])
                label = by_group
                routed = _route(routes, names[k])
                if routed is not None:
                    claims.append(f"routes[{routed[0]!r}] -> {routed[1]!r}")
                    label = routed[1]
                if len(claims) > 1 or (routed is not None and routed[2] > 1):
                    what = "; ".join(claims) if len(claims) > 1 else routed[3]
                    raise ValueError(f"params[{i}] (name {names[k]!r}) is routed twice: "
                                     f"{what}. Route every parameter to one optimizer")
                if label is None:
                    label = default
                if label is None:
                    raise ValueError(f"params[{i}] (name {names[k]!r}, param group {gi}) is "
                                     f"routed to no optimizer: give its group an "
                                     f"'{ROUTE_KEY}' entry, a route matching its name, or "
                                     f"default=")
                flat.append(p)
                labels.append(label)
                where.append((gi, names[k], over))
        seen = {}
        for i, p in enumerate(flat):
            if id(p) in seen:
                raise ValueError(f"params[{seen[id(p)]}] and params[{i}] are the same array; "
                                 f"pass each parameter once")
            seen[id(p)] = i
        unused = [label for label in optimizers if label not in labels]
        if unused:
            raise ValueError(f"optimizers {unused} get no parameter: drop them or route "
                             f"parameters to them")
        self._params = flat
        self._labels = labels
        self._index = {id(p): i for i, p in enumerate(flat)}
        self.optimizers = {}
        # the parameters of each optimizer, as positions in the flat list
        self._members = {}
        for label, factory in optimizers.items():
            members = [i for i, lab in enumerate(labels) if lab == label]
            sub_groups = []
            for i in members:
                gi, name, over = where[i]
                if not sub_groups or sub_groups[-1][0] != gi:
                    sub_groups.append((gi, dict(over, params=[], names=[])))
                sub_groups[-1][1]["params"].append(flat[i])
                sub_groups[-1][1]["names"].append(name)
            for _, g in sub_groups:
                if all(n is None for n in g["names"]):
                    del g["names"]
            opt = factory([g for _, g in sub_groups])
            if not all(a is b for a, b in zip(getattr(opt, "params", ()),
                                              [flat[i] for i in members])) \
                    or len(opt.params) != len(members):
                raise ValueError(f"optimizers[{label!r}]: the factory must build an optimizer "
                                 f"over exactly the parameters it is given")
            self.optimizers[label] = opt
            self._members[label] = members
        self._lock = threading.RLock()
        self._iterations = 0
        # per optimizer and group: the version whose values were checked last,
        # None for a group with schedules (checked at every step)
        self._versions = {label: [None if _scheduled(g) else g.version
                                  for g in opt.param_groups]
                          for label, opt in self.optimizers.items()}

    # ---- attributes --------------------------------------------------------

    @property
    def params(self):
        """The parameters, in the order their grads are expected."""
        return list(self._params)

    @property
    def labels(self):
        """The optimizers' labels, in the order they were given."""
        return list(self.optimizers)

    def label_of(self, i):
        """The label of the optimizer that updates ``params[i]``."""
        return self._labels[i]

    @property
    def iterations(self):
        """Calls to :meth:`step` applied."""
        return self._iterations

    @property
    def lock(self):
        """Held by step, state_dict and load_state_dict."""
        return self._lock

    # ---- the step ------------------------------------------------------------

    def _split(self, grads):
        if isinstance(grads, np.ndarray):
            raise TypeError(f"grads: expected a list of {len(self._params)} gradients; got an "
                            f"ndarray. Wrap a single gradient in a list: step([g])")
        grads = list(grads)
        if len(grads) != len(self._params):
            raise ValueError(f"expected {len(self._params)} grads (one per parameter, in the "
                             f"order the parameters were given; None skips one); got "
                             f"{len(grads)}")
        return {label: [grads[i] for i in members] for label, members in self._members.items()}

    def step(self, grads):
        """Apply one update of every optimizer in place.  Every grad is
        checked (by the optimizer that owns it, with its hyper-parameters of
        this step) before any optimizer writes."""
        with self._lock:
            parts = self._split(grads)
            for label, opt in self.optimizers.items():
                try:
                    _precheck(opt, parts[label], self._versions[label])
                except (TypeError, ValueError) as e:
                    raise type(e)(f"optimizer {label!r} ({type(opt).__name__}, whose grads "
                                  f"are params{self._members[label]} in this order): {e}") from e
            for label, opt in self.optimizers.items():
                opt.step(parts[label])
            self._iterations += 1

    def apply_gradients(self, grads_and_vars):
        """Keras-style: pairs matched to the parameters by identity; parameters
        without a pair are skipped this step."""
        grads, _ = pairs_to_grads(grads_and_vars, self._params, self._index)
        self.step(grads)

    # ---- state -----------------------------------------------------------

    def state_dict(self):
        """Every optimizer's state dict, with the routing and the counter."""
        with self._lock:
            return {"format_version": 1, "class": "MultiOptimizer",
                    "iterations": self._iterations, "labels": list(self._labels),
                    "optimizers": {label: opt.state_dict()
                                   for label, opt in self.optimizers.items()}}

    def check_state_dict(self, sd, hyperparameters=None):
        """Validate ``sd`` completely; return a function that applies it and
        cannot fail.  ``hyperparameters`` is passed to every optimizer (see
        :meth:`Optimizer.load_state_dict`)."""
        if not isinstance(sd, dict) or sd.get("format_version") != 1 \
                or sd.get("class") != "MultiOptimizer":
            got = sd.get("class") if isinstance(sd, dict) else type(sd).__name__
            raise ValueError(f"not a MultiOptimizer state (got {got!r}); pass the dict "
                             f"returned by MultiOptimizer.state_dict()")
        if list(sd.get("labels") or ()) != self._labels:
            raise ValueError(f"the state routes its parameters as {sd.get('labels')!r:.200}; "
                             f"this MultiOptimizer routes them as {self._labels}. Build it "
                             f"with the same routing to resume")
        states = sd.get("optimizers")
        if not isinstance(states, dict) or set(states) != set(self.optimizers):
            keys = sorted(states) if isinstance(states, dict) else type(states).__name__
            raise ValueError(f"optimizers: the state has {keys}; this MultiOptimizer has "
                             f"{sorted(self.optimizers)}")
        iterations = _statedict.check_counter(sd.get("iterations"), "iterations")
        applies = []
        for label, opt in self.optimizers.items():
            try:
                applies.append(opt.check_state_dict(states[label], hyperparameters))
            except ValueError as e:
                raise ValueError(f"optimizers[{label!r}]: {e}") from e

        def apply():
            for f in applies:
                f()
            self._iterations = iterations

        return apply

    def load_state_dict(self, sd, hyperparameters=None):
        """Restore :meth:`state_dict`; everything is checked first."""
        with self._lock:
            self.check_state_dict(sd, hyperparameters)()

    def __repr__(self):
        parts = ", ".join(f"{label!r}: {type(o).__name__} ({len(self._members[label])} params)"
                          for label, o in self.optimizers.items())
        return f"MultiOptimizer({{{parts}}}, iterations={self._iterations})"


def _route(routes, name):
    """``(key, label, number of matches, description)`` of the route that
    names ``name``, or None."""
    if name is None or not routes:
        return None
    if name in routes:
        return name, routes[name], 1, ""
    hits = [k for k in routes if re.fullmatch(k, name)]
    if not hits:
        return None
    return hits[0], routes[hits[0]], len(hits), \
        f"routes {hits} all match it (to {[routes[k] for k in hits]})"


def _precheck(opt, grads, versions):
    """Raise what ``opt.step(grads)`` would raise before writing anything:
    the grads (types, shapes, memory), the mode, groups edited since the last
    step (``versions``: their versions then) and the schedules of this step."""
    if getattr(opt, "training", True) is False:
        raise ValueError(f"{type(opt).__name__} is in eval mode: call its train() first; "
                         f"nothing was changed")
    if opt._conv.refuse_no_grads and grads and all(g is None for g in grads):
        raise ValueError(f"No gradients provided for any variable: all {len(grads)} grads are "
                         f"None, and Keras 3 refuses such a step (as its MultiOptimizer does "
                         f"for each optimizer it routes to); nothing was changed")
    engine = opt._stepper.engine
    engine.set_grads(grads)
    engine.clear_grads()
    for gi, group in enumerate(opt.param_groups):
        if group.version != versions[gi]:
            opt._sync(gi)
            versions[gi] = None if _scheduled(group) else group.version
        if versions[gi] is None:
            opt._stepper.evaluate(gi, opt._stepper.schedule_step)


def _scheduled(group):
    return any(is_schedule(v) for k, v in group.items() if k != "params")
