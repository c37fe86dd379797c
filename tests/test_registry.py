import ast
import subprocess
import sys
from dataclasses import dataclass

import pytest

from sturdynet.core.params import ConfigError, rng
from sturdynet.core.registry import Registry


@dataclass(frozen=True)
class _AParams:
    x: int = rng(0, 10, default=1)


def test_register_create_and_glob():
    reg = Registry("thing")

    @reg.register("prune.a", params=_AParams)
    def a(x=1):
        return ("a", x)

    @reg.register("prune.b")
    def b():
        return "b"

    @reg.register("quant.c")
    def c():
        return "c"

    assert reg.create("prune.a", x=3) == ("a", 3)
    assert reg.create("prune.a") == ("a", 1)  # the dataclass default, not the function's
    assert reg.create("prune.b") == "b"
    assert reg.names("prune.*") == ["prune.a", "prune.b"]
    assert reg.names() == ["prune.a", "prune.b", "quant.c"]
    assert "quant.c" in reg and len(reg) == 3


def test_create_validates_like_a_recipe():
    reg = Registry("thing")
    reg.register("a", params=_AParams)(lambda x: x)
    reg.register("b")(lambda: 0)
    with pytest.raises(ConfigError, match=r"thing 'a'\.x: must be in \[0, 10\], got 11"):
        reg.create("a", x=11)
    with pytest.raises(ConfigError, match=r"thing 'a'\.x: must be an integer"):
        reg.create("a", x="3")
    with pytest.raises(ConfigError, match=r"thing 'a'\.y: unknown key"):
        reg.create("a", y=1)
    with pytest.raises(ConfigError, match="takes no parameters"):
        reg.create("b", y=1)


def test_duplicate_refused_and_unknown_suggests_nearest():
    reg = Registry("thing")
    reg.register("x")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(object)
    with pytest.raises(ValueError, match=r"unknown thing 'y' \(known: x\)"):
        reg.get("y")
    for n in ("alpha", "beta", "gamma", "delta"):
        reg.register(n)(object)
    with pytest.raises(ValueError, match=r"unknown thing 'gama' \(did you mean gamma"):
        reg.get("gama")


def test_registries_find_builtins_without_plugins():
    """A fresh interpreter that imports only core/registry sees every built-in entry."""
    code = ("from sturdynet.core.registry import REGISTRIES\n"
            "print({k: len(r) for k, r in REGISTRIES.items()})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    counts = ast.literal_eval(out.strip())
    assert set(counts) == {"datasets", "models", "methods", "checks", "attacks", "callbacks", "adversarial",
                           "faults", "corruptions"}
    assert all(n > 0 for n in counts.values()), counts


def test_builtin_families_populated():
    from sturdynet.core.registry import CHECKS, DATASETS, METHODS, MODELS

    assert {"digits"} <= set(DATASETS.names())
    assert {"mlp", "small_cnn"} <= set(MODELS.names())
    assert {"prune.global_magnitude", "quant.uniform"} <= set(METHODS.names())
    assert {"clean", "pgd"} <= set(CHECKS.names())
