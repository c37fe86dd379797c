"""The recipe argument shared by ``run``, ``train`` and ``validate``: a file or a shipped
recipe's name, plus ``--set PATH=VALUE`` overrides validated with the recipe."""
from __future__ import annotations

import argparse
from typing import Any, Sequence, Tuple


def add_recipe_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("recipe", nargs=None if required else "?",
                   help="recipe YAML file or the name of a shipped recipe (`sturdynet list recipes`)"
                        + ("" if required else "; default: the built-in digits recipe"))
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="PATH=VALUE",
                   help="override a recipe field, e.g. --set train.epochs=1 --set 'variants[1].bits=4' "
                        "(repeatable; VALUE is YAML; items can be named: 'variants[int4].bits=3')")


def _mentions(path: str, override_path: str) -> bool:
    return path == override_path or path.startswith(override_path + ".") or path.startswith(override_path + "[")


def load_raw(args: argparse.Namespace) -> Tuple[Any, str]:
    """The recipe mapping with the overrides applied, and the file it came from."""
    from ..core.overrides import apply_overrides
    from ..core.params import load_yaml
    from ..recipes import find

    path = find(getattr(args, "recipe", None))
    return apply_overrides(load_yaml(path), getattr(args, "overrides", None) or []), str(path)


def load(args: argparse.Namespace):
    """The validated :class:`~sturdynet.run.recipe.Recipe` named by ``args`` (file or shipped
    name, overrides applied).

    Raises:
        ConfigError: naming the field path; when an override set that field, the message says so.
    """
    from ..core.overrides import parse_override
    from ..core.params import ConfigError
    from ..run.recipe import parse_recipe

    raw, _ = load_raw(args)
    try:
        return parse_recipe(raw)
    except ConfigError as e:
        overrides: Sequence[str] = getattr(args, "overrides", None) or []
        hit = [o for o in overrides if _mentions(e.path, parse_override(o)[0])]
        if hit:
            raise ConfigError(e.path, f"{e.message} (from --set {hit[-1]})") from None
        raise
