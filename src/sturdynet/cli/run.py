"""``sturdynet run [RECIPE] [--set PATH=VALUE ...] [--out DIR]``: the main job (RECIPE: a file or a
shipped recipe's name; a sweep when the recipe has ``sweep:``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .progress import ProgressDisplay
from .recipe_args import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train, compress, evaluate and report a recipe",
                       description="Train the base model, build every variant of the recipe, evaluate each with "
                                   "every check, and write results.json, report.md and report.html into the run "
                                   "folder. Running again into the same folder resumes. A recipe with a 'sweep:' "
                                   "section (seeds, grid) runs every (seed, variant) cell.")
    add_recipe_args(p)
    p.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in the run folder")
    p.add_argument("--device", help="override the recipe's device (auto, cpu, cuda)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the expanded cells (seed x variant), what each needs, and their count; run nothing")
    p.add_argument("--executor", choices=("inprocess", "pool", "ray"), default=None,
                   help="where cells run: in this process (default), a local process pool, or Ray "
                        "(pip install -e '.[ray]')")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (pool) or CPUs of a local Ray instance; >1 implies --executor pool")
    p.add_argument("--address", help="with --executor ray: address of an existing Ray cluster (e.g. auto)")
    p.set_defaults(func=run)


def dry_run(recipe, out: Path) -> int:
    from ..run.runner import plan

    steps = plan(recipe, out)
    specs = {v.name: v for v in recipe.all_variants}
    width = max([len(c.variant) for c, _ in steps] + [7])
    print(f"{'seed':>4}  {'variant':<{width}}  {'method':<28}  todo")
    for c, todo in steps:
        spec = specs[c.variant]
        print(f"{c.seed:>4}  {c.variant:<{width}}  {(spec.method or 'dense'):<28}  {todo}")
    n_run = sum(t != "skip" for _, t in steps)
    print(f"{len(steps)} cells ({len(recipe.seeds)} seed{'s' * (len(recipe.seeds) != 1)} x "
          f"{len(recipe.all_variants)} variants): {n_run} to run, {len(steps) - n_run} done, into {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ..run.executor import make_executor
    from ..core.atomic import check_writable
    from ..run.runner import run_recipe
    from . import recipe_args
    from .summary import finish_report

    recipe = recipe_args.load(args)
    if args.device:
        recipe = dataclasses.replace(recipe, device=args.device)
    out = Path(args.out) if args.out else Path("runs") / recipe.name
    if args.dry_run:
        return dry_run(recipe, out)
    check_writable(out, folder=True)
    with ProgressDisplay(enabled=not args.quiet) as progress:
        executor = make_executor(args.executor or "inprocess", args.workers, args.address, progress=progress)
        try:
            results = run_recipe(recipe, out, progress=progress, fresh=args.fresh, executor=executor)
        finally:
            executor.shutdown()
    return finish_report(out, results)
