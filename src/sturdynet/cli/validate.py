"""``sturdynet validate RECIPE [--set PATH=VALUE ...]``: parse and validate a recipe, print a summary.

Nothing is trained, loaded or written; a bad field exits 2 with its path, like ``run``.
"""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

from .recipe_args import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="check a recipe (with --set overrides) and print a summary",
                       description="Parse and validate a recipe file or shipped recipe, with the same "
                                   "--set overrides as `run`, and print what it would run. Nothing is "
                                   "trained or written.")
    add_recipe_args(p, required=True)
    p.add_argument("--json", action="store_true", help="print the resolved recipe as JSON")
    p.set_defaults(func=run)


def summary_lines(recipe, source: str) -> List[str]:
    """The recipe's summary: source, data, model, training, variants with methods, checks."""
    from ..report.format import fmt_params

    tr = recipe.train
    model_facts = {k: v for k, v in recipe.model.to_dict().items() if k not in ("name", "factory")}
    lines = [f"recipe {recipe.name!r} from {source}: valid",
             f"  seed {recipe.seed}, device {recipe.device}",
             f"  data   {recipe.data.name}" + (f" ({fmt_params(recipe.data.kwargs())})" if recipe.data.params else ""),
             f"  model  {recipe.model.label}" + (f" ({fmt_params(model_facts)})" if model_facts else ""),
             f"  train  {tr.epochs} epochs, batch {tr.batch_size}, lr {tr.lr:g}",
             f"  {len(recipe.variants)} variants:"]
    for v in recipe.variants:
        d: Dict[str, Any] = v.to_dict()
        params = {k: x for k, x in d.items() if k not in ("name", "method", "finetune_epochs", "finetune")}
        text = v.method or "dense"
        if len(v.steps) == 1 and params:
            text += f" ({fmt_params(params)})"
        elif len(v.steps) > 1:
            text = fmt_params({"steps": d["steps"]})
        if v.finetune_epochs:
            adv = getattr(v.finetune, "adversarial", None)
            text += f" + fine-tune {v.finetune_epochs} epochs" + (" (adversarial)" if adv else "")
        lines.append(f"    {v.name:<20} {text}")
    lines.append(f"  {len(recipe.evaluate)} checks: " + ", ".join(
        c.id if c.id == c.check.name else f"{c.id} ({c.check.name})" for c in recipe.evaluate))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..recipes import find
    from . import recipe_args

    recipe = recipe_args.load(args)
    source = str(find(args.recipe))
    if args.json:
        print(json.dumps(recipe.to_dict(), indent=2, default=str))
    else:
        print("\n".join(summary_lines(recipe, source)))
    return 0
