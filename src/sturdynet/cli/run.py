"""``sturdynet run [RECIPE] [--set PATH=VALUE ...] [--out DIR]``: the main job (RECIPE: a file or a
shipped recipe's name)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .progress import ProgressDisplay
from .recipe_args import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train, compress, evaluate and report a recipe",
                       description="Train the base model, build every variant of the recipe, evaluate each with "
                                   "every check, and write results.json, report.md and report.html into the run "
                                   "folder. Running again into the same folder resumes.")
    add_recipe_args(p)
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in the run folder")
    p.add_argument("--device", help="override the recipe's device (auto, cpu, cuda)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..run.runner import run_recipe
    from . import recipe_args
    from .summary import finish_report

    recipe = recipe_args.load(args)
    if args.device:
        recipe = dataclasses.replace(recipe, device=args.device)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    with ProgressDisplay(enabled=not args.quiet) as progress:
        results = run_recipe(recipe, out, progress=progress, fresh=args.fresh)
    return finish_report(out, results)
