"""An optimizer's state as a dict: built, checked completely, then applied.

``check(opt, sd)`` validates everything (format, class, convention, shapes,
dtypes, counters, schedule state, the options' arrays, the host values of
the kernel) and returns a function that applies it and cannot fail, so a
refused load leaves the optimizer as it was.
"""
import copy
import json
import warnings

import numpy as np

COUNTER_MAX = 2 ** 63 - 1     # counters are int64 in the kernels and in checkpoints


def check_counter(value, name):
    """``value`` as an int if it can be a step counter (an int, not a bool,
    in [0, 2**63)); else ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        got = f"{value!r:.60}"
    elif not 0 <= value <= COUNTER_MAX:
        bits = abs(int(value)).bit_length()
        got = value if bits <= 128 else f"an int of {bits} bits"
    else:
        return int(value)
    raise ValueError(f"{name}: step counters must be ints >= 0 and < 2**63; got {got}. "
                     f"Pass a state written by state_dict() (or fastopt.save)")


def iter_schedules(opt, hyper=None):
    """``(path, schedule)`` of every schedule among the optimizer's
    hyper-parameters (or among ``hyper = (defaults, overrides)``)."""
    from ._hyper import is_schedule
    defaults, overrides = hyper or (opt._defaults, opt._overrides)
    for key, value in defaults.items():
        if is_schedule(value):
            yield f"defaults.{key}", value
    for gi, over in enumerate(overrides):
        for key, value in over.items():
            if is_schedule(value):
                yield f"group{gi}.{key}", value


def schedule_states(opt):
    return {path: s.state_dict() for path, s in iter_schedules(opt) if hasattr(s, "state_dict")}


def check_schedule_states(opt, states, hyper=None):
    """Refuse schedule state that does not fit: loaded into a copy of each
    schedule first, so a bad entry raises before anything is restored."""
    mine = {path: s for path, s in iter_schedules(opt, hyper) if hasattr(s, "state_dict")}
    extra = set(states) - set(mine)
    if extra:
        raise ValueError(f"state carries schedule state for {sorted(extra)}, which this "
                         f"optimizer's hyper-parameters are not schedules for")
    for path, sched in mine.items():
        if path in states and hasattr(sched, "load_state_dict"):
            try:
                copy.deepcopy(sched).load_state_dict(states[path])
            except (TypeError, ValueError, KeyError, AttributeError, OverflowError,
                    RecursionError) as e:
                raise ValueError(f"schedule state for {path} does not fit the schedule "
                                 f"{type(sched).__name__}: {e}") from e


def load_schedule_states(opt, states):
    for path, sched in iter_schedules(opt, None):
        if path in states and hasattr(sched, "load_state_dict"):
            sched.load_state_dict(states[path])


def _refuse_swapped(opt, what):
    if opt._stepper.swapped:
        raise ValueError(f"{what}: the parameters hold the averages (swap_averages() was "
                         f"called); call swap_averages() again first")


def build(opt, config=True):
    s = opt._stepper
    _refuse_swapped(opt, "state_dict")
    extra = {"micro_steps": int(opt.micro_steps), "skipped_steps": int(s.skipped)}
    if opt._ema is not None:
        extra["ema"] = [a.copy() for a in opt._ema]
    if opt._accum is not None:
        extra["accumulators"] = [a.copy() for a in opt._accum]
    if opt._swa is not None:
        extra["swa"] = [a.copy() for a in opt._swa]
        extra["swa_n_averaged"] = int(s.n_averaged)
    if opt.aux_state is not None:
        extra[opt.aux_state] = np.array(s.get_aux(), dtype=np.float64)
    masters = _masters(opt)
    if masters is not None:
        extra["masters"] = [m.copy() for m in masters]
    return {
        "format_version": 1,
        "class": type(opt).__name__,
        **({"config": opt.get_config()} if config else {}),
        "iterations": int(s.iterations),
        "steps": s.get_steps(),
        "shapes": [list(p.shape) for p in opt._params],
        "dtypes": [p.dtype.str for p in opt._params],
        "state": [[a.copy() for a in st] for st in opt._state],
        "schedules": schedule_states(opt),
        "extra": extra,
    }


def _check_arrays(mine, theirs, key):
    if mine is None:
        if theirs is not None:
            raise ValueError(f"state has {key} but this optimizer keeps none (were the "
                             f"optimizer options the same?)")
        return None
    if theirs is None or len(theirs) != len(mine):
        raise ValueError(f"state lacks the {len(mine)} {key} arrays this optimizer "
                         f"keeps (were the optimizer options the same?)")
    arrays = []
    for i, (a, b) in enumerate(zip(mine, theirs)):
        b = np.asarray(b)
        if b.shape != a.shape or b.dtype != a.dtype:
            raise ValueError(f"params[{i}] {key}: expected {a.dtype} {a.shape}; got "
                             f"{b.dtype} {b.shape}")
        arrays.append(b)
    return arrays


def _dtype_name(dtype):
    from ._core import Q8_DTYPE
    return "int8 blocks" if dtype == Q8_DTYPE else str(dtype)


def _storage_hint(mine, theirs):
    """What to do when a state array was saved in another storage."""
    from ._core import Q8_DTYPE
    names = {np.dtype(np.float16): "float16", Q8_DTYPE: "int8"}
    saved = names.get(theirs) or ("bfloat16" if theirs.name == "bfloat16" else None)
    if saved is None and mine not in names and mine.name != "bfloat16":
        return ""
    return (f". The state was saved with state_dtype={saved or 'None'!r}"
            f" for this param (int8 applies to params of at least min_8bit_size elements);"
            f" build the optimizer with the same state_dtype and min_8bit_size to load it")


def _masters(opt):
    """The float32 master copies the optimizer keeps (None if none)."""
    kept = [m for m in opt._masters if m is not None]
    return kept or None


def _check_extra(opt, extra):
    if not isinstance(extra, dict):
        raise ValueError("state 'extra' must be a dict")
    out = {key: check_counter(extra.get(key, 0), f"extra.{key}")
           for key in ("micro_steps", "skipped_steps")}
    out["ema"] = _check_arrays(opt._ema, extra.get("ema"), "ema")
    out["accumulators"] = _check_arrays(opt._accum, extra.get("accumulators"), "accumulators")
    out["swa"] = _check_arrays(opt._swa, extra.get("swa"), "swa")
    out["masters"] = _check_arrays(_masters(opt), extra.get("masters"), "masters")
    if opt._swa is not None:
        out["swa_n_averaged"] = check_counter(extra.get("swa_n_averaged"),
                                              "extra.swa_n_averaged")
    key = opt.aux_state
    if key is not None:
        shape = np.shape(opt._stepper.get_aux())
        values = extra.get(key, ())
        try:
            if np.shape(values) != shape:     # first: converting a huge array costs its size
                raise ValueError(f"shape {np.shape(values)}")
            values = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as e:
            what = f"{shape[0]} values" if len(shape) == 1 else f"values of shape {shape}"
            raise ValueError(f"extra.{key}: expected {what}; got {e}") from e
        if not np.isfinite(values).all():
            raise ValueError(f"extra.{key}: expected finite values; got {values}")
        out["aux"] = values.tolist()
    return out


# ---- the hyper-parameters a state holds ----------------------------------------------

POLICIES = ("checkpoint", "optimizer")


def _comparable(value):
    """A value as it can be compared with a checkpoint's config entry."""
    from . import schedules
    from ._hyper import is_schedule
    if is_schedule(value):
        try:
            value = schedules.serialize(value)
        except TypeError:
            return ("callable", id(value))
    if isinstance(value, dict) and "class_name" in value:
        return ("schedule", value.get("class_name"),
                json.dumps(value.get("config"), sort_keys=True, default=repr))
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _raw_hyper(opt, config):
    """Per group, the hyper-parameters as the config gives them (serialized)."""
    defaults = {k: config[k] for k in opt._defaults if k in config}
    entries = config.get("param_groups")
    if entries is None:
        entries = [{}] * len(opt.param_groups)
    if not isinstance(entries, list) or len(entries) != len(opt.param_groups) or not all(
            isinstance(e, dict) for e in entries):
        n = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise ValueError(f"config.param_groups: {n} groups; this optimizer has "
                         f"{len(opt.param_groups)}. Build it with the param groups it was "
                         f"saved with (or add them with add_param_group)")
    return defaults, [{k: v for k, v in e.items() if k in opt._defaults} for e in entries]


def _differs(opt, raw):
    defaults, overrides = raw
    for gi, (group, over) in enumerate(zip(opt.param_groups, overrides)):
        for key in opt._defaults:
            theirs = over.get(key, defaults.get(key))
            if theirs is not None and _comparable(group[key]) != _comparable(theirs):
                return key
    return None


def checkpoint_hyper(opt, raw):
    """``(defaults, overrides)`` rebuilt from a checkpoint's config and checked
    against ``opt`` (ranges, rules across fields, state arrays) without changing
    it.  Where the checkpoint holds the schedule the optimizer already has (same
    class and config) the optimizer's own object is kept, so a ReduceOnPlateau
    the user reports to stays the one that drives the optimizer."""
    from . import schedules

    def rebuild(v, where):
        if not (isinstance(v, dict) and "class_name" in v):
            return v
        try:
            return schedules.deserialize(v)
        except Exception as e:     # crafted metadata may fail any way
            raise ValueError(f"config.{where}: cannot rebuild the schedule "
                             f"({type(e).__name__}: {e})") from e

    def keep_mine(mine, theirs):
        return mine if _comparable(mine) == _comparable(theirs) else theirs

    raw_defaults, raw_overrides = raw
    defaults = dict(opt._defaults)
    for key, v in raw_defaults.items():
        defaults[key] = keep_mine(opt._defaults[key], rebuild(v, key))
    overrides = []
    for gi, (over, mine) in enumerate(zip(raw_overrides, opt._overrides)):
        group = opt.param_groups[gi]
        overrides.append({k: keep_mine(group[k], rebuild(v, f"param_groups[{gi}].{k}"))
                          for k, v in over.items()})
    try:
        opt._check_group(defaults, "checkpoint hyper-parameters: ")
        for gi, over in enumerate(overrides):
            cand = dict(defaults, **over, params=opt.param_groups[gi]["params"])
            opt._check_group(cand, f"checkpoint hyper-parameters, param group {gi}: ")
            opt._check_state_layout(gi, cand, restoring=True)
    except TypeError as e:
        raise ValueError(str(e)) from e
    return defaults, overrides


def _apply_hyper(opt, hyper):
    defaults, overrides = hyper
    opt._defaults.clear()
    opt._defaults.update(defaults)
    for gi, (group, over) in enumerate(zip(opt.param_groups, overrides)):
        opt._overrides[gi] = dict(over)
        group._set(dict(defaults, **over))
        # the state arrays now come from the state: so do the values that filled them
        record = opt._group_state[gi][0]
        record.update({k: group[k] for k in opt.initial.values() if k in record})


def check(opt, sd, hyperparameters=None):
    """Validate ``sd`` completely; return a function that applies it and cannot fail.

    ``hyperparameters``: ``"checkpoint"`` restores the hyper-parameters ``sd``
    holds (its config), ``"optimizer"`` keeps the optimizer's; None: the
    convention's choice (torch restores, Keras keeps)."""
    explicit = hyperparameters is not None
    policy = hyperparameters if explicit else opt._conv.load_hyperparameters
    if policy not in POLICIES:
        raise ValueError(f"hyperparameters must be 'checkpoint' (restore the saved "
                         f"hyper-parameters), 'optimizer' (keep the optimizer's) or None "
                         f"(the convention's choice); got {hyperparameters!r}")
    _refuse_swapped(opt, "load_state_dict")
    if not isinstance(sd, dict) or sd.get("format_version") != 1:
        version = sd.get("format_version") if isinstance(sd, dict) else None
        raise ValueError(f"not a fastopt optimizer state: format_version 1 expected, got "
                         f"{version!r}. Pass the dict returned by state_dict()")
    missing = [k for k in ("class", "iterations", "steps", "state") if k not in sd]
    if missing:
        raise ValueError(f"optimizer state is missing {missing}; it was not written by "
                         f"state_dict() (or was edited)")
    name = type(opt).__name__
    if sd["class"] != name:
        raise ValueError(f"state is of a {sd['class']} optimizer; this is a {name}. Load it "
                         f"into a {sd['class']} built over the same parameters")
    config = sd.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"config: expected a dict; got {type(config).__name__}")
    conv = config.get("convention", opt.convention)
    if conv != opt.convention:
        raise ValueError(f"state is of a convention={conv!r} {name}; this one has "
                         f"convention={opt.convention!r}. Build the optimizer with "
                         f"convention={conv!r} to resume it")
    for key, mine in (("shapes", [list(p.shape) for p in opt._params]),
                      ("dtypes", [p.dtype.str for p in opt._params])):
        theirs = sd.get(key)
        if theirs is None:
            continue
        if not isinstance(theirs, (list, tuple)) or (key == "shapes" and not all(
                isinstance(t, (list, tuple)) for t in theirs)):
            raise ValueError(f"{key}: expected a list with one entry per parameter; got "
                             f"{theirs!r:.80}")
        theirs = [list(t) if key == "shapes" else t for t in theirs]
        if len(theirs) != len(mine):
            raise ValueError(f"state has {len(theirs)} parameters; this optimizer has "
                             f"{len(mine)}. Build it over the parameters it was saved with")
        for i, (a, b) in enumerate(zip(mine, theirs)):
            if a != b:
                raise ValueError(f"params[{i}]: the state was saved for {key[:-1]} {b}; "
                                 f"this optimizer's params[{i}] has {key[:-1]} {a}. Build "
                                 f"it over the parameters it was saved with, in order")
    state = sd["state"]
    if not isinstance(state, (list, tuple)) or len(state) != len(opt._state):
        n = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
        raise ValueError(f"state has {n} parameters; this optimizer has "
                         f"{len(opt._state)}. Build it over the parameters it was saved "
                         f"with")
    for i, (mine, theirs) in enumerate(zip(opt._state, state)):
        if not isinstance(theirs, (list, tuple)) or len(theirs) != len(mine):
            n = len(theirs) if isinstance(theirs, (list, tuple)) else type(theirs).__name__
            raise ValueError(f"params[{i}]: state has {n} arrays; expected "
                             f"{len(mine)} (were the optimizer options the same?)")
        for k, (a, b) in enumerate(zip(mine, theirs)):
            b = np.asarray(b)
            if b.shape != a.shape or b.dtype != a.dtype:
                raise ValueError(f"params[{i}] state {k}: expected {_dtype_name(a.dtype)} "
                                 f"{a.shape}; got {_dtype_name(b.dtype)} {b.shape}"
                                 f"{_storage_hint(a.dtype, b.dtype)}")
    nparams = len(opt._params)
    steps = np.asarray(sd["steps"])
    if (steps.dtype.kind not in "iu" and steps.size) or steps.shape != (nparams,):
        raise ValueError(f"steps: expected {nparams} integer counts; got "
                         f"{steps.dtype} {steps.shape}")
    if steps.size and (steps.min() < 0 or steps.max() > COUNTER_MAX):
        raise ValueError(f"steps: step counters must be >= 0 and < 2**63; got "
                         f"{steps.min()} .. {steps.max()}")
    iterations = check_counter(sd["iterations"], "iterations")
    sched_states = sd.get("schedules") or {}
    if not isinstance(sched_states, dict):
        raise ValueError(f"schedules: expected a dict; got {type(sched_states).__name__}")
    extra = _check_extra(opt, sd.get("extra", {}))
    raw = _raw_hyper(opt, config) if config else None
    hyper = checkpoint_hyper(opt, raw) if raw is not None and policy == "checkpoint" else None
    differs = _differs(opt, raw) if raw is not None and not explicit else None
    if hyper is not None:
        check_schedule_states(opt, sched_states, hyper)
    else:
        check_schedule_states(opt, sched_states)

    def apply():
        if differs is not None:
            kept = "restored from the state" if hyper is not None else "kept the optimizer's"
            warnings.warn(
                f"the state's hyper-parameters differ from this optimizer's (first: "
                f"{differs!r}); the {opt._conv.library} convention {kept}. Pass "
                f"hyperparameters='checkpoint' or 'optimizer' to choose (and silence this)",
                UserWarning, stacklevel=3)
        if hyper is not None:
            _apply_hyper(opt, hyper)
        for mine, theirs in zip(opt._state, state):
            for a, b in zip(mine, theirs):
                np.copyto(a, np.asarray(b))
        s = opt._stepper
        s.set_steps([int(k) for k in steps])
        s.iterations = iterations
        load_schedule_states(opt, sched_states)
        s.micro = extra["micro_steps"]
        s.skipped = extra["skipped_steps"]
        for mine, key in ((opt._ema, "ema"), (opt._accum, "accumulators"),
                          (opt._swa, "swa"), (_masters(opt), "masters")):
            if mine is not None:
                for a, b in zip(mine, extra[key]):
                    np.copyto(a, b)
        if opt._swa is not None:
            s.n_averaged = extra["swa_n_averaged"]
        if "aux" in extra:
            s.set_aux(extra["aux"])

    return apply
