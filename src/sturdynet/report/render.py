"""Render a run folder's ``results.json`` into report.md, report.html and plots/*.png."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

from .document import build_document
from .html import render_html
from .markdown import render_markdown
from .plots import make_plots
from .schema import load_results, results_path
from .view import RunView

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"


def _write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def render_report(run_dir: Union[str, Path]) -> Dict[str, Path]:
    """Render the report of a run from its ``results.json`` alone.

    Args:
        run_dir: the run folder (or the path of its ``results.json``); outputs go next to
            the results file.

    Returns:
        Written files by path relative to the run folder, e.g. ``{"report.md": ...,
        "report.html": ..., "plots/frontier.png": ...}`` (values are absolute paths).

    Raises:
        FileNotFoundError: there is no results file.
        ValueError: the file is not JSON or a field is missing or malformed (the message
            names the file and the field).
    """
    res_file = results_path(run_dir)
    results = load_results(res_file)
    out_dir = res_file.parent.resolve()
    view = RunView(results)
    figs = make_plots(view, out_dir)
    doc = build_document(view, figs)
    written: Dict[str, Path] = {}
    for name, text in ((MARKDOWN_FILE, render_markdown(doc)), (HTML_FILE, render_html(doc, out_dir))):
        _write(out_dir / name, text)
        written[name] = out_dir / name
    for f in figs.values():
        written[f.path] = out_dir / f.path
    return written
