"""The recipes shipped with the package (``sturdynet run threats-digits``, ``sturdynet list recipes``).

The YAML files live beside this module and install as package data; the repository's
top-level ``recipes/`` is a link to this folder, so ``sturdynet run recipes/x.yaml`` keeps
working from a checkout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

FOLDER = Path(__file__).resolve().parent
DEFAULT = "default"


def shipped() -> Dict[str, Path]:
    """Every shipped recipe by name (the file stem), sorted."""
    return {p.stem: p for p in sorted(FOLDER.glob("*.yaml"))}


def summary(path: Path) -> str:
    """The first line of a recipe's leading comment (empty if it has none)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not s:
            continue
        return s.lstrip("#").strip() if s.startswith("#") else ""
    return ""


def find(recipe: Optional[Union[str, Path]]) -> Path:
    """The recipe file for a path or a shipped recipe's name (``None``: the default recipe).

    An existing file wins; otherwise ``name`` or ``name.yaml`` is looked up among the
    shipped recipes.

    Raises:
        FileNotFoundError: neither a file nor a shipped recipe (the message lists the names).
    """
    if recipe is None:
        return shipped()[DEFAULT]
    p = Path(recipe)
    if p.is_file():
        return p
    name = p.name[:-5] if p.name.endswith(".yaml") else p.name
    found = shipped()
    if str(p.parent) in ("", ".") and name in found:
        return found[name]
    raise FileNotFoundError(f"recipe file not found: {p} (shipped recipes: {', '.join(found)}; "
                            "see `sturdynet list recipes`)")
