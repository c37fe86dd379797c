"""``sturdynet report RUN_DIR``: re-render report.md / report.html from results.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="render the report of a run folder from its results.json")
    p.add_argument("run_dir", help="a run folder holding results.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .summary import finish_report

    path = Path(args.run_dir) / "results.json"
    if not path.is_file():
        raise ValueError(f"no results.json in {args.run_dir}")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    finish_report(Path(args.run_dir), results)
    return 0
