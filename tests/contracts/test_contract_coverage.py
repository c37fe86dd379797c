"""The contract tests cover 100% of the registered names of every registry.

Each ``test_contract_*.py`` file says which registries its tests are parametrised over
(``COVERS = {"<registry>": names}``, the very lists its ``parametrize`` uses). This test
imports them all and fails when a registry of ``REGISTRIES`` has no contract file, or when
a name registered there is missing from the parametrisation (a new built-in or plugin is
then a failure, never a skip).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from sturdynet.core.registry import REGISTRIES

HERE = Path(__file__).parent


def _covered() -> dict:
    out: dict = {}
    for path in sorted(HERE.glob("test_contract_*.py")):
        if path.stem == Path(__file__).stem:
            continue
        mod = importlib.import_module(path.stem)
        for family, names in getattr(mod, "COVERS", {}).items():
            assert family not in out, f"{family} is covered by two contract files"
            out[family] = set(names)
    return out


def test_every_registry_has_a_contract_file():
    covered = _covered()
    missing = sorted(set(REGISTRIES) - set(covered))
    assert not missing, f"no contract tests for the registries {missing}"
    assert not set(covered) - set(REGISTRIES), f"contract files name unknown registries {sorted(set(covered) - set(REGISTRIES))}"


def test_every_registered_name_is_parametrised():
    covered = _covered()
    for family, reg in REGISTRIES.items():
        untested = sorted(set(reg.names()) - covered.get(family, set()))
        assert not untested, f"{family}: registered but not under contract: {untested}"
