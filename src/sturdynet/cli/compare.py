"""``sturdynet compare RUN_A RUN_B [...]``: one table and one frontier plot across runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare the results of several run folders",
                       description="Match variants by name and method across run folders and show clean and "
                                   "robust accuracy with 95%% intervals side by side; a value is marked only where "
                                   "its interval does not overlap the first run's. Writes compare.md, compare.html "
                                   "and plots/compare_frontier.png into --out.")
    p.add_argument("runs", nargs="+", help="run folders (or their results.json), the first is the reference")
    p.add_argument("--out", default="compare", help="folder for compare.md / compare.html (default: ./compare)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..report.compare import compare_table, load_runs, render_compare

    runs = load_runs(args.runs)
    written = render_compare(args.runs, Path(args.out))
    t = compare_table(runs)
    table = Table(title="comparison")
    for c in t.columns:
        table.add_column(c.title, justify="right" if c.align == "right" else "left")
    for row in t.rows:
        table.add_row(*[f"[bold]{c.text}[/bold]" if c.strong else c.text for c in row])
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for note in t.footnotes:
        console.print("".join(p.text for p in note.parts), style="dim")
    console.print(f"report: {written['compare.html']}")
    return 0
