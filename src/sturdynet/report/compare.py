"""Compare runs: one table and one frontier plot across several run folders.

Variants are matched by (name, method) across runs. Every cell shows the accuracy with its
95 % interval (:mod:`sturdynet.report.uncertainty`); a value is marked (bold, ▲ higher /
▼ lower) only where its interval does not overlap the interval of the same variant in the
first run that has it, the reference. Overlapping intervals are not called a difference.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from matplotlib.lines import Line2D

from ..core.stats import overlap
from .format import DASH, fmt_method
from .model import Cell, Column, Document, Figure, Heading, Table, para
from .schema import load_results, results_path
from .uncertainty import fmt_acc, interval
from .view import RunView

Key = Tuple[str, Optional[str]]


def run_labels(runs: Sequence[Any]) -> List[str]:
    """Short labels of run folders: their names, or more of the path where names repeat."""
    paths = [results_path(r).parent.resolve() for r in runs]
    labels = [p.name for p in paths]
    for depth in range(2, 6):
        if len(set(labels)) == len(labels):
            break
        labels = ["/".join(p.parts[-depth:]) for p in paths]
    return labels


def load_runs(runs: Sequence[Any]) -> List[Tuple[str, RunView]]:
    """``(label, view)`` for each run folder (or results.json path), validated."""
    if len(runs) < 2:
        raise ValueError("compare: give at least two run folders")
    return [(label, RunView(load_results(r))) for label, r in zip(run_labels(runs), runs)]


def _key(v: Mapping[str, Any]) -> Key:
    return v["name"], v.get("method")


def matched_keys(runs: Sequence[Tuple[str, RunView]]) -> List[Key]:
    """Every (name, method) in order of first appearance across the runs."""
    out: List[Key] = []
    for _, view in runs:
        out += [_key(v) for v in view.variants if _key(v) not in out]
    return out


def _metric(view: RunView, v: Mapping[str, Any], what: str) -> Optional[Mapping[str, Any]]:
    """The metrics block behind ``clean`` or ``robust`` of a variant."""
    if v.get("status") != "ok" and not v.get("metrics"):
        return None
    cid = view.clean_id if what == "clean" else view.robust(v).source
    return (view.metrics(v).get(cid) or None) if cid else None


def _find(view: RunView, key: Key) -> Optional[Mapping[str, Any]]:
    return next((v for v in view.variants if _key(v) == key), None)


def compare_table(runs: Sequence[Tuple[str, RunView]]) -> Table:
    """Variants (rows) against clean and robust accuracy of each run (columns)."""
    cols = [Column("Variant"), Column("Method")]
    for label, _ in runs:
        cols += [Column(f"Clean ({label})", "right"), Column(f"Robust ({label})", "right")]
    rows = []
    marked = 0
    for key in matched_keys(runs):
        first = next((_find(view, key) for _, view in runs if _find(view, key) is not None), None)
        cells = [Cell(key[0], strong=True), Cell(fmt_method(key[1], (first or {}).get("params"), limit=1))]
        ref: Dict[str, Optional[Mapping[str, Any]]] = {}
        per_run: List[Cell] = []
        for _, view in runs:
            v = _find(view, key)
            for what in ("clean", "robust"):
                m = _metric(view, v, what) if v is not None else None
                if m is None or "accuracy" not in m:
                    per_run.append(Cell(DASH if v is None or v.get("status") == "ok" else str(v.get("status"))))
                    continue
                text, cls, strong = fmt_acc(m, fallback=True), "", False
                if what not in ref:
                    ref[what] = m
                else:
                    a, b = interval(ref[what], True), interval(m, True)
                    if a is not None and b is not None and not overlap(a, b):
                        up = m["accuracy"] > ref[what]["accuracy"]
                        text, cls, strong = f"{'▲' if up else '▼'} {text}", "ok" if up else "danger", True
                        marked += 1
                per_run.append(Cell(text, cls=cls, strong=strong))
        rows.append(tuple(cells + per_run))
    notes = [para("Accuracy with its 95 % interval [low, high] (Wilson, from the number of test samples; with "
                  "several seeds the interval also covers the spread over seeds and ± gives the std over seeds). "
                  "Variants are matched by name and method; the first run that has a variant is its reference. "
                  "▲/▼ mark values whose interval does not overlap the reference's"
                  + (f" ({marked} marked)." if marked else "; none does, so no difference is claimed."),
                  cls="note")]
    return Table(tuple(cols), tuple(rows), tuple(notes))


def compare_plot(runs: Sequence[Tuple[str, RunView]], path: Path) -> bool:
    """Clean (filled) and robust (hollow) accuracy against size, one colour per run, 95 % error bars."""
    from matplotlib import colormaps

    from .plots import _bytes_axis, _new, _percent_axis, _save

    cmap = colormaps["tab10"]
    fig = _new((7.0, 4.6))
    ax = fig.add_subplot()
    sizes: List[float] = []
    handles = []
    for i, (label, view) in enumerate(runs):
        color = cmap(i % 10)
        nudge = 2 ** (0.04 * (i - (len(runs) - 1) / 2))  # runs side by side at equal sizes
        for what, hollow in (("clean", False), ("robust", True)):
            for v in view.ok_variants:
                m = _metric(view, v, what)
                if not m or not isinstance(m.get("accuracy"), (int, float)) or math.isnan(m["accuracy"]) \
                        or not v.get("size_bytes"):
                    continue
                x, y = v["size_bytes"] * nudge, 100 * m["accuracy"]
                iv = interval(m, True)
                if iv is not None:
                    ax.errorbar([x], [y], yerr=[[y - 100 * iv[0]], [100 * iv[1] - y]], fmt="none", ecolor=color,
                                elinewidth=1, capsize=2, alpha=0.8, zorder=2)
                ax.scatter([x], [y], color="none" if hollow else color, edgecolors=color,
                           marker="s" if hollow else "o", s=36, linewidths=1.3, zorder=3)
                sizes.append(v["size_bytes"])
        handles.append(Line2D([], [], color=color, marker="o", linestyle="", label=label))
    if not sizes:
        return False
    handles += [Line2D([], [], color="0.35", marker="o", linestyle="", label="clean"),
                Line2D([], [], color="0.35", marker="s", markerfacecolor="none", linestyle="", label="robust")]
    _bytes_axis(ax, sizes)
    _percent_axis(ax)
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_title("Clean and robust accuracy against size, by run (95 % intervals)")
    _save(fig, path)
    return True


def compare_document(runs: Sequence[Tuple[str, RunView]], fig: Optional[Figure]) -> Document:
    blocks: List[Any] = [Heading(2, "Runs", "runs")]
    blocks.append(Table((Column("Run"), Column("Recipe"), Column("Seeds", "right"), Column("Variants", "right")),
                        tuple((Cell(label, strong=True), Cell(str(view.results.get("name"))),
                               Cell(", ".join(str(s) for s in view.results.get("seeds") or [view.results.get("seed")])),
                               Cell(str(len(view.variants)))) for label, view in runs)))
    blocks += [Heading(2, "Results", "results"), compare_table(runs)]
    if fig is not None:
        blocks.append(fig)
    return Document("sturdynet comparison: " + " vs ".join(label for label, _ in runs), tuple(blocks))


def render_compare(run_dirs: Sequence[Any], out_dir: Any) -> Dict[str, Path]:
    """Write compare.md, compare.html and plots/compare_frontier.png into ``out_dir``."""
    from .html import render_html
    from .markdown import render_markdown
    from .render import _write

    runs = load_runs(run_dirs)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rel = "plots/compare_frontier.png"
    fig = Figure(rel, "Frontier across runs", "error bars: 95 % intervals") \
        if compare_plot(runs, out / rel) else None
    doc = compare_document(runs, fig)
    written = {}
    for name, text in (("compare.md", render_markdown(doc)), ("compare.html", render_html(doc, out))):
        _write(out / name, text)
        written[name] = out / name
    if fig is not None:
        written[rel] = out / rel
    return written
