import pytest

from sturdynet.registry import Registry


def test_register_create_and_glob():
    reg = Registry("thing")

    @reg.register("prune.a")
    def a(x=1):
        return ("a", x)

    @reg.register("prune.b")
    def b():
        return "b"

    @reg.register("quant.c")
    def c():
        return "c"

    assert reg.create("prune.a", x=3) == ("a", 3)
    assert reg.names("prune.*") == ["prune.a", "prune.b"]
    assert reg.names() == ["prune.a", "prune.b", "quant.c"]
    assert "quant.c" in reg and len(reg) == 3


def test_duplicate_refused_and_unknown_lists_available():
    reg = Registry("thing")
    reg.register("x")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(object)
    with pytest.raises(ValueError, match="unknown thing 'y'; available: x"):
        reg.get("y")


def test_builtin_families_populated():
    import sturdynet.plugins  # noqa: F401
    from sturdynet.registry import CHECKS, DATASETS, METHODS, MODELS

    assert {"digits"} <= set(DATASETS.names())
    assert {"mlp", "small_cnn"} <= set(MODELS.names())
    assert {"prune.global_magnitude", "quant.uniform"} <= set(METHODS.names())
    assert {"clean", "pgd"} <= set(CHECKS.names())
