"""``sturdynet report RUN_DIR``: re-render report.md / report.html from results.json."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="render the report of a run folder from its results.json")
    p.add_argument("run_dir", help="a run folder holding results.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import load_results
    from .summary import finish_report

    results = load_results(Path(args.run_dir))
    finish_report(Path(args.run_dir), results)
    return 0
