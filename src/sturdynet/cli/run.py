"""``sturdynet run [RECIPE] [--out DIR]``: the main job."""
from __future__ import annotations

import argparse
from pathlib import Path

from .progress import ProgressDisplay


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train, compress, evaluate and report a recipe",
                       description="Train the base model, build every variant of the recipe, evaluate each with "
                                   "every check, and write results.json, report.md and report.html into the run "
                                   "folder. Running again into the same folder resumes.")
    p.add_argument("recipe", nargs="?", help="recipe YAML (default: the built-in digits recipe)")
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in the run folder")
    p.add_argument("--device", help="override the recipe's device (auto, cpu, cuda)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..run.recipe import load_recipe
    from ..run.runner import run_recipe
    from .summary import finish_report

    recipe = load_recipe(args.recipe)
    if args.device:
        recipe = dataclasses.replace(recipe, device=args.device)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    with ProgressDisplay(enabled=not args.quiet) as progress:
        results = run_recipe(recipe, out, progress=progress, fresh=args.fresh)
    return finish_report(out, results)
