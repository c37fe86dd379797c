"""Render the report of a run folder and print its summary table."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from rich.console import Console
from rich.table import Table


def print_table(results: Dict[str, Any], console: Console) -> None:
    from ..report import summary_rows

    rows = summary_rows(results)
    if not rows:
        return
    table = Table(title=f"{results.get('name', 'run')}")
    for key in rows[0]:
        table.add_column(str(key))
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    console.print(table)


def finish_report(out: Path, results: Dict[str, Any]) -> int:
    """Render report.md / report.html, print the table and the report path.

    Returns the exit code: 1 when any variant failed, else 0.
    """
    from ..report import render_report

    import sys

    console = Console(width=None if sys.stdout.isatty() else 140)
    paths = render_report(out)
    print_table(results, console)
    console.print(f"report: {paths['report.html']}")
    failed = [v["name"] for v in results.get("variants", []) if v.get("status") != "ok"]
    if failed:
        console.print(f"[red]failed variants: {', '.join(failed)} (see results.json)[/red]")
        return 1
    return 0
