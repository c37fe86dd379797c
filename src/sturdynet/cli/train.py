"""``sturdynet train RECIPE --out CKPT``: train only the recipe's base model."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from .progress import ProgressDisplay
from .recipe_args import add_recipe_args


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the base model of a recipe and save a checkpoint")
    add_recipe_args(p)
    p.add_argument("--out", default="model.safetensors",
                   help="checkpoint path (default: model.safetensors)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--device", help="override the recipe's device")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.params import MAX_INT, ConfigError
    from ..data import load_data
    from ..models.common import model_for_data
    from . import recipe_args
    from ..run.runner import resolve_device
    from ..models.arch import arch_of
    from ..run.checkpoint import save_checkpoint
    from ..train.loop import evaluate_accuracy, fit

    from ..core.atomic import check_writable

    recipe = recipe_args.load(args)
    check_writable(Path(args.out))
    cfg = recipe.train
    if args.epochs is not None:
        if not 0 <= args.epochs <= MAX_INT:
            raise ConfigError("--epochs", f"must be in [0, {MAX_INT}], got {args.epochs}")
        cfg = dataclasses.replace(cfg, epochs=args.epochs)
    device = resolve_device(args.device or recipe.device)
    data = load_data(recipe.data, recipe.seed)
    import torch

    torch.manual_seed(recipe.seed)
    model = model_for_data(recipe.model, data).to(device)
    with ProgressDisplay(enabled=not args.quiet) as progress:
        progress({"event": "stage", "stage": "train", "epochs": cfg.epochs})
        history = fit(model, data, cfg, seed=recipe.seed, progress=progress, device=device)
    save_checkpoint(Path(args.out), model, arch_of(recipe.model, data, (), recipe.data), {"history": history})
    acc = evaluate_accuracy(model, data.test, device=device)["accuracy"]
    print(f"test accuracy {acc:.4f}; checkpoint: {args.out}")
    return 0
