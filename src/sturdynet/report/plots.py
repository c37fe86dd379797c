"""Plots of a run, drawn with matplotlib's Agg canvas (no pyplot, no display needed).

Files go to ``<run>/plots/*.png``; PNG metadata carries no software/date stamp, so the same
results render to the same bytes. Every check gets an accuracy-against-size plot; every check
with a ``curve`` gets a line per variant; the base model (and fine-tuned variants) get
training curves.
"""
from __future__ import annotations

import math
import re
import zlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from .format import fmt_bytes, fmt_num, x_label
from .model import Figure
from .uncertainty import interval
from .view import RunView

PLOT_DIR = "plots"
#: 2x the 110 dpi the report displays them at (the HTML shows them at half their pixel size)
_DPI = 220
_MARKERS = "os^Dv<>pP*h"
#: the marker drawn over a value whose check raised a gradient-masking warning
MASK_MARKER = dict(marker="x", color="#c62828", s=70, linewidths=2.0, zorder=5)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "check"


def _name_slot(name: str, n: int) -> int:
    return zlib.crc32(name.encode("utf-8")) % n


class _Palette:
    """A colour and marker per variant, stable by name: the same variant name gets the same
    colour in every report. A CRC32 of the name picks one of tab20's ten dark colours; names
    that collide take the next free colour (the dark ones first, then the light ones), in
    name order."""

    def __init__(self, names: Sequence[str]) -> None:
        from matplotlib import colormaps

        cmap = colormaps["tab20"]
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # dark shades, then their light partners
        taken: Dict[int, str] = {}
        for name in sorted(set(names)):
            slot = _name_slot(name, 10)
            for _ in range(len(order)):
                if slot not in taken:
                    break
                slot = (slot + 1) % len(order)
            taken.setdefault(slot, name)
        by_name = {name: slot for slot, name in taken.items()}
        self._style = {name: (cmap(order[by_name.get(name, _name_slot(name, 10))]),
                              _MARKERS[_name_slot(name, len(_MARKERS))]) for name in names}

    def __call__(self, name: str) -> Tuple[Any, str]:
        return self._style[name]


def _new(figsize: Tuple[float, float] = (6.4, 4.2)) -> MplFigure:
    fig = MplFigure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: MplFigure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _percent_axis(ax) -> None:
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.grid(True, alpha=0.3)


def _bytes_axis(ax, sizes: Sequence[float]) -> None:
    """Log-scaled size axis with ticks at powers of two labelled in B/KiB/MiB."""
    ax.set_xscale("log", base=2)
    lo, hi = min(sizes), max(sizes)
    ax.set_xlim(lo / 1.8, hi * 1.8)
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=9))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_bytes(x, 0)))
    ax.set_xlabel("model size (packed, log scale)")


def label_offsets(pts: List[Tuple[str, float, float]], near_x: float = 1.0, step: float = 6.0) -> List[float]:
    """Vertical offsets (accuracy %) that keep point labels apart and inside the axes.

    Each label takes the first of +1.5, -step, +1.5 + step, -2 step, ... (points of accuracy
    from its point) that keeps it ``step`` away from every earlier label within ``near_x``
    octaves of size (a label is about one octave wide on the log2 size axis) and its
    baseline within [-2, 97] %.
    """
    placed: List[Tuple[float, float]] = []
    out = []
    for _, size, acc in pts:
        x, y0 = math.log2(max(size, 1e-9)), 100 * acc
        tries = [1.5] + [o for k in range(1, 12) for o in (-k * step, 1.5 + k * step)]
        ok = [o for o in tries if -2 <= y0 + o <= 97
              and not any(abs(x - px) < near_x and abs(y0 + o - py) < step for px, py in placed)]
        off = ok[0] if ok else 1.5
        placed.append((x, y0 + off))
        out.append(off)
    return out


def _mask_legend(ax, masked: bool, handles: Optional[List[Any]] = None, **kw) -> None:
    """A legend with the masking marker's entry when a point is masked (plus ``handles``)."""
    handles = list(handles or [])
    if masked:
        handles.append(Line2D([], [], color=MASK_MARKER["color"], marker="x", linestyle="", markersize=7,
                              markeredgewidth=2, label="⚠ gradient masking suspected"))
    if handles:
        ax.legend(handles=handles, **kw)


def _labelled_points(ax, pts: List[Tuple[str, float, float]], palette: _Palette, marker: Optional[str] = None,
                     label_points: bool = True, hollow: bool = False, masked: Sequence[str] = ()) -> None:
    offsets = label_offsets(pts)
    for (name, size, acc), off in zip(pts, offsets):
        color, m = palette(name)
        ax.scatter([size], [100 * acc], color="none" if hollow else color, edgecolors=color, marker=marker or m,
                   s=46, zorder=3, linewidths=1.4)
        if name in masked:
            ax.scatter([size], [100 * acc], **MASK_MARKER)
        if label_points:
            ax.annotate(name, (size, 100 * acc), xytext=(size * 2 ** 0.08, 100 * acc + off), textcoords="data",
                        fontsize=8, color=color, va="bottom",
                        arrowprops=dict(arrowstyle="-", color=color, lw=0.5, alpha=0.6) if abs(off) > 3 else None)


def _error_bars(ax, view: RunView, pts: List[Tuple[str, float, float]], check_of, palette: _Palette) -> None:
    """95 % interval of each point (from results.json's ``ci95``) as a vertical bar."""
    by_name = {v["name"]: v for v in view.ok_variants}
    for name, size, acc in pts:
        cid = check_of(by_name[name])
        iv = interval(view.metrics(by_name[name]).get(cid)) if cid else None
        if iv is not None:
            y = 100 * acc
            ax.errorbar([size], [y], yerr=[[max(0.0, y - 100 * iv[0])], [max(0.0, 100 * iv[1] - y)]], fmt="none",
                        ecolor=palette(name)[0], elinewidth=1, capsize=2, alpha=0.8, zorder=2)


def size_plot(view: RunView, cid: str, path: Path, palette: _Palette) -> bool:
    """Accuracy of one check against model size, one labelled point per ok variant."""
    pts = [(v["name"], v["size_bytes"], view.accuracy(v, cid)) for v in view.ok_variants]
    pts = [p for p in pts if isinstance(p[2], (int, float)) and not math.isnan(p[2])]
    if not pts:
        return False
    fig = _new()
    ax = fig.add_subplot()
    masked = [v["name"] for v in view.ok_variants if view.masked(v, cid)]
    _labelled_points(ax, pts, palette, masked=masked)
    _error_bars(ax, view, pts, lambda v: cid, palette)
    _bytes_axis(ax, [p[1] for p in pts])
    _percent_axis(ax)
    _mask_legend(ax, bool(masked), loc="lower right", fontsize=8)
    ax.set_title(f"{view.label(cid)}: accuracy against size")
    _save(fig, path)
    return True


def frontier_plot(view: RunView, path: Path, palette: _Palette) -> bool:
    """Clean and robust accuracy against size (filled: clean, hollow squares: robust)."""
    clean = [(v["name"], v["size_bytes"], view.accuracy(v, view.clean_id)) for v in view.ok_variants]
    rob = [(v["name"], v["size_bytes"], view.robust(v).accuracy) for v in view.ok_variants]
    clean = [p for p in clean if isinstance(p[2], (int, float)) and not math.isnan(p[2])]
    rob = [p for p in rob if isinstance(p[2], (int, float)) and not math.isnan(p[2])]
    if not clean or not rob:
        return False
    fig = _new()
    ax = fig.add_subplot()
    masked = [v["name"] for v in view.ok_variants if view.robust_masked(v)]
    _labelled_points(ax, clean, palette, marker="o", masked=[v["name"] for v in view.ok_variants
                                                             if view.masked(v, view.clean_id)])
    _labelled_points(ax, rob, palette, marker="s", label_points=False, hollow=True, masked=masked)
    _error_bars(ax, view, clean, lambda v: view.clean_id, palette)
    _error_bars(ax, view, rob, lambda v: view.robust(v).source, palette)
    robust_of = {name: r for name, _, r in rob}
    for name, s, a in clean:
        if name in robust_of:
            ax.plot([s, s], [100 * a, 100 * robust_of[name]], color=palette(name)[0], alpha=0.35, linewidth=1, zorder=2)
    _bytes_axis(ax, [p[1] for p in clean + rob])
    _percent_axis(ax)
    proxies = [Line2D([], [], color="0.35", marker="o", linestyle="", label="clean"),
               Line2D([], [], color="0.35", marker="s", markerfacecolor="none", linestyle="", label="robust")]
    _mask_legend(ax, bool(masked), proxies, loc="lower right", fontsize=8)
    ax.set_title("Clean and robust accuracy against size")
    _save(fig, path)
    return True


def _x_scale(ax, xs: List[float]) -> None:
    """Log x when the positive x values span two decades or more (symlog if 0 is present);
    integer x values (flips, severities, steps) get integer ticks on a linear axis."""
    pos = [x for x in xs if x > 0]
    if len(pos) < 2 or max(pos) / min(pos) < 100 or any(x < 0 for x in xs):
        if xs and all(float(x).is_integer() for x in xs):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return
    if len(pos) < len(xs):
        ax.set_xscale("symlog", linthresh=min(pos), linscale=0.5)
    else:
        ax.set_xscale("log")
    if all(float(x).is_integer() for x in xs):  # counts (flips, steps): plain numbers, not 10^k
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt_num(int(round(x)))))


def curve_plot(view: RunView, cid: str, path: Path, palette: _Palette) -> bool:
    """Accuracy along a check's curve, one line per ok variant."""
    key = view.curve_x_key(cid)
    lines = []
    for v in view.ok_variants:
        k, pts = view.curve(v, cid)
        if pts and k == key:
            lines.append((v["name"], [p[key] for p in pts], [p["accuracy"] for p in pts]))
    if not lines:
        return False
    all_x = [x for _, xs, _ in lines for x in xs]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in all_x)
    cats: List[Any] = []
    if not numeric:
        for x in all_x:
            if x not in cats:
                cats.append(x)
    fig = _new()
    ax = fig.add_subplot()
    masked = {v["name"] for v in view.ok_variants if view.masked(v, cid)}
    for name, xs, ys in lines:
        color, marker = palette(name)
        pos = xs if numeric else [cats.index(x) for x in xs]
        ax.plot(pos, [100 * y for y in ys], marker=marker, color=color, label=name, linewidth=1.6, markersize=5)
        if name in masked:
            ax.scatter(pos, [100 * y for y in ys], **MASK_MARKER)
    if numeric:
        _x_scale(ax, [float(x) for x in all_x])
    else:
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels([fmt_num(c) for c in cats], rotation=30 if len(cats) > 5 else 0, ha="right"
                           if len(cats) > 5 else "center", fontsize=8)
    ax.set_xlabel(x_label(key))
    _percent_axis(ax)
    handles, _ = ax.get_legend_handles_labels()
    _mask_legend(ax, bool(masked), handles, fontsize=8, loc="best", ncol=1 if len(lines) <= 8 else 2)
    ax.set_title(f"{view.label(cid)}: accuracy against {x_label(key)}")
    _save(fig, path)
    return True


def _history_keys(history: List[Mapping[str, Any]], word: str) -> List[str]:
    keys: List[str] = []
    for h in history:
        keys += [k for k, v in h.items() if word in k and isinstance(v, (int, float)) and k not in keys]
    return keys


def training_plot(history: List[Mapping[str, Any]], path: Path, title: str) -> bool:
    """Accuracy (left) and loss (right) against epoch for one training history."""
    acc_keys, loss_keys = _history_keys(history, "accuracy"), _history_keys(history, "loss")
    if not history or not (acc_keys or loss_keys):
        return False
    panels = [(k, "accuracy (%)") for k in [acc_keys] if k] + [(k, "loss") for k in [loss_keys] if k]
    fig = _new((6.4 * len(panels) / 1.4 if len(panels) > 1 else 6.4, 4.0))
    for i, (keys, ylabel) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for key in keys:
            pts = [(h["epoch"], h[key]) for h in history if isinstance(h.get(key), (int, float))]
            scale = 100 if ylabel.startswith("accuracy") else 1
            ax.plot([p[0] for p in pts], [scale * p[1] for p in pts], marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)
    return True


def finetune_plot(view: RunView, path: Path, palette: _Palette) -> bool:
    """Validation accuracy during fine-tuning, one line per variant that was fine-tuned."""
    lines = []
    for v in view.variants:
        hist = [h for h in v.get("finetune_history") or [] if isinstance(h.get("val_accuracy"), (int, float))]
        if hist:
            lines.append((v["name"], [h["epoch"] for h in hist], [100 * h["val_accuracy"] for h in hist]))
    if not lines:
        return False
    fig = _new()
    ax = fig.add_subplot()
    for name, xs, ys in lines:
        color, marker = palette(name)
        ax.plot(xs, ys, marker=marker, color=color, label=name, markersize=4)
    ax.set_xlabel("fine-tuning epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_ylabel("val accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title("Fine-tuning: validation accuracy")
    _save(fig, path)
    return True


def make_plots(view: RunView, run_dir: Path) -> Dict[str, Figure]:
    """Draw every plot into ``run_dir/plots``; return figures keyed ``frontier``, ``size:<check>``,
    ``curve:<check>``, ``training``, ``finetune`` (only those that had data).

    Stale ``*.png`` files in the plot folder from earlier renders are removed.
    """
    out_dir = Path(run_dir) / PLOT_DIR
    palette = _Palette([v["name"] for v in view.variants])
    figs: Dict[str, Figure] = {}
    used: set = set()

    def target(stem: str) -> Tuple[str, Path]:
        name, i = stem, 2
        while name in used:
            name, i = f"{stem}-{i}", i + 1
        used.add(name)
        return f"{PLOT_DIR}/{name}.png", out_dir / f"{name}.png"

    def add(key: str, stem: str, title: str, caption: str, draw) -> None:
        rel, path = target(stem)
        if draw(path):
            figs[key] = Figure(rel, title, caption)
        else:
            used.discard(Path(rel).stem)

    add("frontier", "frontier", "Clean and robust accuracy against size",
        "Filled markers: clean accuracy; hollow squares: robust accuracy (see the table's footnote).",
        lambda p: frontier_plot(view, p, palette))
    for cid in view.check_ids:
        add(f"size:{cid}", f"size_{_slug(cid)}", f"{view.label(cid)}: accuracy against size",
            "One point per variant; log-scaled size.", lambda p, c=cid: size_plot(view, c, p, palette))
    for cid in view.curve_ids():
        add(f"curve:{cid}", f"curve_{_slug(cid)}", f"{view.label(cid)}: accuracy curve",
            "One line per variant.", lambda p, c=cid: curve_plot(view, c, p, palette))
    base_hist = (view.results.get("base") or {}).get("history") or []
    add("training", "training_base", "Base model training", "Training history of the dense base model.",
        lambda p: training_plot(base_hist, p, "Base model training"))
    add("finetune", "training_finetune", "Fine-tuning", "Validation accuracy while fine-tuning each variant.",
        lambda p: finetune_plot(view, p, palette))
    if out_dir.is_dir():
        keep = {out_dir / Path(f.path).name for f in figs.values()}
        for old in [*out_dir.glob("*.png"), *out_dir.glob("*.tmp")]:  # .tmp: left by a killed render
            if old not in keep:
                old.unlink(missing_ok=True)
    return figs
