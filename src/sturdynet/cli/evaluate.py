"""``sturdynet evaluate CHECKPOINT --check pgd ...``: run checks on a saved model."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="run checks on a checkpoint",
                       description="Run checks on a checkpoint written by `sturdynet train` or `sturdynet run`. "
                                   "A check is a name (clean) or a YAML mapping as in a recipe, e.g. "
                                   "--check '{check: pgd, eps: [0.05, 0.1], steps: 20}'.")
    p.add_argument("checkpoint")
    p.add_argument("--check", action="append", dest="checks", metavar="CHECK",
                   help="check name or YAML mapping (repeatable; default: clean)")
    p.add_argument("--data", help="data set as a name or YAML mapping (default: the one the checkpoint was "
                                  "trained on)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and the attacks (default 0)")
    p.add_argument("--out", help="write the metrics to this JSON file")
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

    from ..core.params import ConfigError, component, to_dict
    from ..data import load_data
    from ..checks.base import CheckContext
    from ..run.recipe import parse_check
    from ..core.registry import CHECKS, DATASETS
    from ..core.atomic import write_json_atomic
    from ..run.checkpoint import load_checkpoint

    model, blob = load_checkpoint(args.checkpoint)

    def parse(text: str, what: str):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(what, f"not valid YAML: {text!r}") from None

    data_raw = parse(args.data, "--data") if args.data else blob["arch"].get("data_spec")
    if data_raw is None:
        raise ConfigError("--data", "the checkpoint does not name its data set; give --data")
    data = load_data(component(DATASETS, data_raw, "--data"), args.seed)
    checks = [parse_check(parse(c, "--check"), f"--check[{i}]") for i, c in enumerate(args.checks or ["clean"])]
    ctx = CheckContext(device=next(model.parameters()).device, seed=args.seed, models={"dense": model})
    out = {}
    for c in checks:
        m = CHECKS.create_from(c.check, model, data, ctx)
        m.pop("per_sample", None)
        out[c.id] = to_dict(m)
        ctx.results[c.id] = out[c.id]
        print(describe(c.id, out[c.id]))
    if args.out:
        write_json_atomic(Path(args.out), {"checkpoint": str(args.checkpoint), "metrics": out})
    return 0
