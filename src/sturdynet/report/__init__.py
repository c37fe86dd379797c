"""Reports: ``results.json`` -> report.md, report.html and plots (never from objects in memory).

Public API:
    render_report(run_dir) -> {relative path: Path}  write report.md, report.html, plots/*.png
    summary_rows(results) -> [dict]                   formatted rows for a console table
    load_results(run_dir) -> dict                     read and validate results.json
    validate_results(results) -> dict                 validate an in-memory results mapping
"""
from .render import HTML_FILE, MARKDOWN_FILE, render_report
from .schema import RESULTS_FILE, SCHEMA_VERSION, load_results, validate_results
from .tables import summary_rows

__all__ = ["render_report", "summary_rows", "load_results", "validate_results", "RESULTS_FILE", "SCHEMA_VERSION",
           "MARKDOWN_FILE", "HTML_FILE"]
