"""Guards of the table that drives the suites (tests/optim_db.py): one entry
per registered optimizer, and each entry agrees with its class."""
from fastopt.optimizers import REGISTRY

from optim_db import BOTH, OPTION_CASES, optim_db

WHAT_AN_ENTRY_NEEDS = (
    "add an OptimizerInfo to tests/optim_db.py with rules (its reference functions in "
    "tests/reference.py, one per convention), initial_state, cases, golden rows (or "
    "golden_missing with the reason), stateful kwargs and its torch/Keras class names")


def test_every_registered_optimizer_has_an_entry():
    names = [entry.name for entry in optim_db]
    assert len(names) == len(set(names)), f"duplicate entries: {sorted(names)}"
    missing = sorted(set(REGISTRY) - set(names))
    assert not missing, f"no entry for {', '.join(missing)}: {WHAT_AN_ENTRY_NEEDS}"
    assert {entry.name for entry in optim_db} == set(REGISTRY), \
        f"entries for unregistered optimizers: {sorted(set(names) - set(REGISTRY))}"


def test_each_entry_agrees_with_its_class():
    for entry in optim_db:
        cls = REGISTRY.get(entry.name)
        if cls is None:
            continue      # reported by test_every_registered_optimizer_has_an_entry
        name = entry.name
        assert entry.conventions == tuple(cls.conventions), (
            f"{name}: tests/optim_db.py has rules for {entry.conventions}, the class has "
            f"conventions {cls.conventions}")
        assert set(entry.rules) <= set(BOTH), f"{name}: unknown convention in rules"
        for conv in cls.conventions:
            assert callable(entry.rules.get(conv)), \
                f"{name}: no reference rule for the {conv} convention in tests/optim_db.py"
            assert any(conv in convs for _, convs in entry.cases), \
                f"{name}: no case in the {conv} convention in tests/optim_db.py"
            has_golden = any(kw_conv == conv for _, kw_conv, _ in entry.golden_rows())
            if conv in entry.golden_missing:
                assert not has_golden, f"{name}: golden rows and golden_missing for {conv}"
            else:
                assert has_golden, (
                    f"{name}: no golden row in the {conv} convention: add one produced by "
                    f"the anchor library itself (or a golden_missing reason) in "
                    f"tests/optim_db.py")
        for kw, convs in entry.cases:
            assert convs and set(convs) <= set(cls.conventions), \
                f"{name}{kw}: case conventions {convs} not among {cls.conventions}"
        for kw, keras, torch in entry.golden:
            for conv, expected in (("keras", keras), ("torch", torch)):
                assert (expected is not None) <= (conv in cls.conventions), \
                    f"{name}{kw}: golden {conv} column for a convention it lacks"
        assert (entry.torch_name is not None) == ("torch" in cls.conventions), \
            f"{name}: torch_name is set exactly when it has the torch convention"
        assert (entry.keras_name is not None) == ("keras" in cls.conventions), \
            f"{name}: keras_name is set exactly when it has the keras convention"
        assert bool(entry.torch_cases) == ("torch" in cls.conventions), \
            f"{name}: torch_cases are needed exactly when it has the torch convention"
        for key in entry.stateful:
            assert key in cls.hyper, f"{name}: stateful key {key!r} is not a hyper-parameter"
    for name, kw, convs in OPTION_CASES:
        assert name in REGISTRY and set(convs) <= set(REGISTRY[name].conventions), (name, kw)
