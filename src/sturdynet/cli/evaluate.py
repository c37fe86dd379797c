"""``sturdynet evaluate``: run checks on a saved model.

The model is a sturdynet checkpoint (``sturdynet evaluate run/base.safetensors``), or any model
spec with its weights: ``--model torchvision.resnet18 --weights w.pt``, ``--model-factory
pkg.mod:fn --model-kwargs '{width: 32}' --weights w.pt``, or ``--recipe r.yaml`` (its
``model`` and ``data``). ``--device`` picks where the model is loaded and run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="run checks on a checkpoint",
                       description="Run checks on a checkpoint written by `sturdynet train` or `sturdynet run`. "
                                   "A check is a name (clean) or a YAML mapping as in a recipe, e.g. "
                                   "--check '{check: pgd, eps: [0.05, 0.1], steps: 20}'.")
    p.add_argument("checkpoint", nargs="?", help="a sturdynet checkpoint (or give --model / --recipe)")
    p.add_argument("--model", help="model spec: a built-in name, torchvision.<name>, timm.<name>, or a YAML "
                                   "mapping as in a recipe")
    p.add_argument("--model-factory", metavar="PKG.MOD:FN",
                   help="build the model with this callable (also allows a checkpoint built by it to load)")
    p.add_argument("--model-kwargs", metavar="YAML", help="keyword arguments of the model / factory")
    p.add_argument("--weights", help="state_dict or checkpoint to load into the model (weights_only=True)")
    p.add_argument("--input-normalization", metavar="YAML",
                   help="'{mean: [...], std: [...]}' when the network expects normalized input")
    p.add_argument("--recipe", help="take the model and data from this recipe")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the recipe's, else auto)")
    p.add_argument("--check", action="append", dest="checks", metavar="CHECK",
                   help="check name or YAML mapping (repeatable; default: clean)")
    p.add_argument("--data", help="data set as a name or YAML mapping (default: the one the checkpoint was "
                                  "trained on)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and the attacks (default 0)")
    p.add_argument("--out", help="write the metrics to this JSON file")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout (no text lines)")
    p.set_defaults(func=run)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def describe(check_id: str, m: dict) -> str:
    """A check's metrics as terminal lines: accuracy and scalar facts, then the curve, the
    per-attack accuracies (robust) and every flag, one per line."""
    extras = {k: v for k, v in m.items() if k != "accuracy" and not isinstance(v, (list, dict))}
    lines = [f"{check_id}: accuracy {m['accuracy']:.4f}  " + "  ".join(f"{k}={_fmt(v)}" for k, v in extras.items())]
    curve = m.get("curve") or []
    if len(curve) > 1:
        x = next((k for k in curve[0] if k not in ("accuracy", "per_attack")), None)
        if x is not None:
            lines.append("  curve: " + ", ".join(f"{x}={_fmt(p[x])}: {p['accuracy']:.4f}" for p in curve))
    per = m.get("per_attack")
    if isinstance(per, dict) and per:
        lines.append("  per attack: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in per.items()
                                                 if isinstance(v, dict) and "accuracy" in v))
    lines += [f"  ! {f}" for f in m.get("flags") or []]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..checks.base import CheckContext
    from ..core import progress
    from .progress import ProgressDisplay
    from ..core.atomic import check_writable, write_json_atomic
    from ..core.params import ConfigError, to_dict
    from ..core.registry import CHECKS
    from ..core.tensors import model_device
    from ..run.recipe import MAX_SEED, parse_check

    def parse(text: str, what: str):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(what, f"not valid YAML: {text!r}") from None

    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError("--seed", f"must be an integer in [0, {MAX_SEED}], got {args.seed}")
    if args.out:
        check_writable(Path(args.out))
    model, data, source = _load_model(args, parse)
    checks = [parse_check(parse(c, "--check"), f"--check[{i}]") for i, c in enumerate(args.checks or ["clean"])]
    ctx = CheckContext(device=model_device(model), seed=args.seed, models={"dense": model})
    out = {}
    display = ProgressDisplay(enabled=not args.quiet)
    ctx.progress = display
    for c in checks:
        with display, progress.reporting(display, c.id):
            display({"event": "stage", "stage": c.id})
            m = CHECKS.create_from(c.check, model, data, ctx)
        m.pop("per_sample", None)
        out[c.id] = to_dict(m)
        ctx.results[c.id] = out[c.id]
        if not args.json:
            print(describe(c.id, out[c.id]))
    if args.json:
        print(json.dumps({"checkpoint": source, "device": str(ctx.device), "metrics": out}, indent=2))
    if args.out:
        write_json_atomic(Path(args.out), {"checkpoint": source, "device": str(ctx.device), "metrics": out})
    return 0


def _spec_from_args(args: argparse.Namespace, parse) -> dict:
    """The model spec mapping given by --model / --model-factory and their options."""
    kwargs = parse(args.model_kwargs, "--model-kwargs") if args.model_kwargs else {}
    if args.model_factory:
        raw = {"factory": args.model_factory, "kwargs": kwargs or {}}
    else:
        raw = parse(args.model, "--model")
        raw = dict(raw) if isinstance(raw, dict) else {"name": raw}
        raw.update(kwargs or {})
    if args.weights:
        raw["weights"] = args.weights
    if args.input_normalization:
        raw["input_normalization"] = parse(args.input_normalization, "--input-normalization")
    return raw


def _load_model(args: argparse.Namespace, parse):
    """(model on the chosen device, data bundle, description of the source)."""
    import dataclasses

    from ..core.params import ConfigError, component
    from ..core.registry import DATASETS
    from ..data import load_data
    from ..models.common import model_for_data
    from ..models.spec import normalization_warning, parse_model_spec
    from ..run.checkpoint import load_checkpoint
    from ..run.recipe import load_recipe
    from ..run.runner import resolve_device

    recipe = load_recipe(args.recipe) if args.recipe else None
    device = resolve_device(args.device or (recipe.device if recipe else "auto"))
    data_raw = parse(args.data, "--data") if args.data else None
    if args.checkpoint and not args.model and not args.recipe:
        trusted = args.model_factory or ""
        model, blob = load_checkpoint(args.checkpoint, device, trusted_factory=trusted)
        data_raw = data_raw or blob["arch"].get("data_spec")
        if data_raw is None:
            raise ConfigError("--data", "the checkpoint does not name its data set; give --data")
        return model, load_data(component(DATASETS, data_raw, "--data"), args.seed), str(args.checkpoint)
    if args.checkpoint:
        raise ConfigError("checkpoint", "give either a CHECKPOINT or a model spec (--model / --recipe), not both")
    if recipe is not None:
        spec = recipe.model
        if args.weights:
            spec = dataclasses.replace(spec, weights=args.weights)
        data_spec = component(DATASETS, data_raw, "--data") if data_raw is not None else recipe.data
    elif args.model or args.model_factory:
        spec = parse_model_spec(_spec_from_args(args, parse), "--model")
        if data_raw is None:
            raise ConfigError("--data", "give the data set to evaluate on (e.g. --data digits)")
        data_spec = component(DATASETS, data_raw, "--data")
    else:
        raise ConfigError("checkpoint", "give a CHECKPOINT, --model NAME --weights FILE, --model-factory or --recipe")
    if not spec.weights:
        raise ConfigError("--weights", f"model {spec.label} has no weights to evaluate; give --weights FILE")
    data = load_data(data_spec, args.seed)
    model = model_for_data(spec, data).to(device).eval()
    warning = normalization_warning(model, spec)
    if warning:
        print(f"sturdynet: warning: {warning}", file=sys.stderr)
    return model, data, spec.weights
