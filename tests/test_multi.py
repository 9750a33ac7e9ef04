"""MultiOptimizer: routing by param group and by name, one step, one state
dict and checkpoint, and the refusals (a parameter routed twice or not at
all, a refused step that changes nothing)."""
import functools

import numpy as np
import pytest

import fastopt as fo

ADAM = functools.partial(fo.Adam, learning_rate=0.01)
# torch convention: it skips a parameter without a grad (g[1] is None on some steps)
SGD = functools.partial(fo.SGD, learning_rate=0.1, momentum=0.9, convention="torch")
SF = functools.partial(fo.ScheduleFreeAdamW, learning_rate=0.02, convention="torch")


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in ((4, 3), (3,), (3, 2), (2,))]


def _grads(seed, n=12):
    rng = np.random.default_rng(seed + 100)
    out = []
    for s in range(n):
        g = [rng.standard_normal(p.shape) for p in _params()]
        if s % 3 == 1:
            g[1] = None
        out.append(g)
    return out


def _named(params):
    return [{"params": [params[0]], "name": "enc/kernel"}, {"params": [params[1]], "name": "enc/bias"},
            {"params": [params[2]], "name": "dec/kernel"}, {"params": [params[3]], "name": "dec/bias"}]


def test_routing_by_name_matches_the_optimizers_stepped_alone():
    params = _params()
    multi = fo.MultiOptimizer(_named(params), {"adam": ADAM, "sgd": SGD, "sf": SF},
                              routes={".*/kernel": "adam", "enc/bias": "sgd"}, default="sf")
    assert [multi.label_of(i) for i in range(4)] == ["adam", "sgd", "adam", "sf"]
    alone = [p.copy() for p in _params()]
    adam, sgd, sf = ADAM([alone[0], alone[2]]), SGD([alone[1]]), SF([alone[3]])
    for g in _grads(0):
        multi.step(g)
        adam.step([g[0], g[2]])
        sgd.step([g[1]])
        sf.step([g[3]])
    for a, b in zip(params, alone):
        assert a.tobytes() == b.tobytes()
    assert multi.iterations == 12 and multi.optimizers["sgd"].iterations == 12


def test_routing_by_param_group_keeps_the_group_overrides():
    params = _params()
    multi = fo.MultiOptimizer(
        [{"params": params[:2], "optimizer": "adam", "learning_rate": 0.5},
         {"params": params[2:], "optimizer": "sgd"}],
        {"adam": ADAM, "sgd": SGD})
    adam = multi.optimizers["adam"]
    assert adam.params[0] is params[0] and adam.param_groups[0]["learning_rate"] == 0.5
    twin = [p.copy() for p in _params()]
    a2 = fo.Adam([{"params": twin[:2], "learning_rate": 0.5}], learning_rate=0.01)
    s2 = SGD([{"params": twin[2:]}])
    for g in _grads(1):
        multi.apply_gradients(zip(g, params))
        a2.step(g[:2])
        s2.step(g[2:])
    for a, b in zip(params, twin):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"routes": {"enc/.*": "adam", ".*/bias": "sgd"}, "default": "adam"},
     r"params\[1\] \(name 'enc/bias'\) is routed twice: routes \['enc/\.\*', '\.\*/bias'\]"),
    ({"routes": {".*/kernel": "adam"}},
     r"params\[1\] \(name 'enc/bias', param group 1\) is routed to no optimizer"),
    ({"routes": {".*": "nadam"}}, r"'nadam', which is not one of the optimizers"),
    ({"routes": {".*": "adam"}}, r"optimizers \['sgd'\] get no parameter"),
])
def test_bad_routing_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fo.MultiOptimizer(_named(_params()), {"adam": ADAM, "sgd": SGD}, **kwargs)


def test_a_group_and_a_route_claiming_one_param_is_routed_twice():
    p = _params()
    with pytest.raises(ValueError, match=r"params\[0\] .* routed twice: param group 0"):
        fo.MultiOptimizer([{"params": p[:2], "name": "w", "optimizer": "adam"},
                           {"params": p[2:], "optimizer": "sgd"}],
                          {"adam": ADAM, "sgd": SGD}, routes={"w": "sgd"})


def test_the_same_array_twice_is_refused():
    p = _params()
    with pytest.raises(ValueError, match=r"params\[0\] and params\[2\] are the same array"):
        fo.MultiOptimizer([{"params": p[:2], "optimizer": "adam"},
                           {"params": [p[0]], "optimizer": "sgd"}], {"adam": ADAM, "sgd": SGD})


def test_a_refused_step_changes_nothing():
    params = _params()
    multi = fo.MultiOptimizer(_named(params), {"adam": ADAM, "sgd": SGD},
                              routes={"enc/.*": "adam"}, default="sgd")
    multi.step(_grads(2)[0])
    before = [p.copy() for p in params] + [
        a.copy() for o in multi.optimizers.values() for s in o.state_arrays() for a in s]
    good = _grads(2)[2]
    bad = list(good)
    bad[3] = bad[3].astype(np.float32)         # the second optimizer's grad
    with pytest.raises(TypeError, match=r"optimizer 'sgd' \(SGD, whose grads are params\[2, 3\]"):
        multi.step(bad)
    with pytest.raises(ValueError, match="expected 4 grads"):
        multi.step(good[:3])
    with pytest.raises(ValueError, match="momentum"):
        multi.optimizers["sgd"].param_groups[0]["momentum"] = 2.0    # refused when assigned
    # a schedule's value is checked by the step: the second optimizer's refusal
    # comes before the first optimizer writes
    multi.optimizers["sgd"].param_groups[0]["learning_rate"] = lambda t: -1.0
    with pytest.raises(ValueError, match="learning_rate"):
        multi.step(good)
    after = [p.copy() for p in params] + [
        a.copy() for o in multi.optimizers.values() for s in o.state_arrays() for a in s]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after))
    assert multi.iterations == 1 and multi.optimizers["adam"].iterations == 1


def test_one_checkpoint_resumes_every_optimizer(tmp_path):
    def build(params):
        return fo.MultiOptimizer(_named(params), {"adam": ADAM, "sgd": SGD, "sf": SF},
                                 routes={".*/kernel": "adam", "enc/bias": "sgd"}, default="sf")

    grads = _grads(3, n=14)
    a = _params()
    multi = build(a)
    for g in grads[:6]:
        multi.step(g)
    fo.save(tmp_path / "multi.npz", multi)
    b = [np.zeros_like(p) for p in a]
    twin = build(b)
    fo.load(tmp_path / "multi.npz", twin)
    assert twin.iterations == 6
    for g in grads[6:]:
        multi.step(g)
        twin.step(g)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    # the same state dict into a MultiOptimizer routed otherwise is refused, unchanged
    other = fo.MultiOptimizer(_named([p.copy() for p in a]), {"adam": ADAM, "sgd": SGD},
                              routes={"enc/.*": "adam"}, default="sgd")
    with pytest.raises(ValueError, match="routes its parameters as"):
        other.load_state_dict(multi.state_dict())
    assert other.iterations == 0
    sd = multi.state_dict()
    sd["optimizers"]["sgd"]["state"][0][0] = np.zeros(5)
    fresh = build([p.copy() for p in a])
    with pytest.raises(ValueError, match=r"optimizers\['sgd'\]: params\[0\] state 0"):
        fresh.load_state_dict(sd)
    assert fresh.iterations == 0 and fresh.optimizers["adam"].iterations == 0


def test_matches_keras_multi_optimizer():
    """Keras 3's MultiOptimizer with an OptimizerMap (patterns over variable
    paths) against routes over param names (Keras on its torch backend)."""
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    multi_mod = pytest.importorskip("keras.src.optimizers.multi_optimizer")
    saved = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        names = ["enc_kernel", "enc_bias", "dec_kernel", "dec_bias"]   # Keras: no "/"
        w0 = _params()
        theirs = [keras.Variable(w.copy(), dtype="float64", name=n) for w, n in zip(w0, names)]
        omap = multi_mod.OptimizerMap(
            default_optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
            optimizer_map={"enc_.*": keras.optimizers.Adam(learning_rate=0.01)})
        kopt = multi_mod.MultiOptimizer(omap)
        mine = [w.copy() for w in w0]
        opt = fo.MultiOptimizer(
            [{"params": mine, "names": names}],
            {"adam": functools.partial(fo.Adam, learning_rate=0.01),
             "sgd": functools.partial(fo.SGD, learning_rate=0.05, momentum=0.9)},
            routes={"enc_.*": "adam"}, default="sgd")
        for g in _grads(5, n=25):
            g = [np.zeros(p.shape) if gi is None else gi for gi, p in zip(g, w0)]
            kopt.apply_gradients([(keras.ops.convert_to_tensor(gi), v)
                                  for gi, v in zip(g, theirs)])
            opt.step(g)
        for i, (p, v) in enumerate(zip(mine, theirs)):
            assert v.path == names[i]
            np.testing.assert_allclose(p, np.asarray(v.numpy()), rtol=1e-10, atol=1e-12,
                                       err_msg=names[i])
    finally:
        keras.config.set_floatx(saved)


def test_keras_optimizer_given_only_none_grads_refuses_the_whole_step():
    """Keras's MultiOptimizer hands each optimizer its pairs, and a Keras
    optimizer refuses a step whose grads are all None: so does the routed one
    here, before any optimizer writes."""
    params = _params()
    multi = fo.MultiOptimizer(_named(params), {"adam": ADAM, "keras_sgd": functools.partial(
        fo.SGD, learning_rate=0.1)}, routes={"enc/bias": "keras_sgd"}, default="adam")
    before = [p.copy() for p in params]
    g = [np.ones(p.shape) for p in params]
    g[1] = None
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        multi.step(g)
    for a, b in zip(params, before):
        assert a.tobytes() == b.tobytes()
    assert multi.iterations == 0
