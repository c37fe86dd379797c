"""Report layout (issue 13 part 1) without a browser: method text with every step, column settings,
masked values in cells and plots, silent weights, integer ticks, stable colours, 2x images, print CSS."""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection

from sturdynet.report import plots as plots_mod
from sturdynet.report import render_report, summary_rows
from sturdynet.report.format import method_steps
from sturdynet.report.html import png_size
from sturdynet.report.schema import validate_results
from sturdynet.report.tables import main_table, variants_table
from sturdynet.report.view import RunView

FIXTURE = Path(__file__).parent / "data" / "threats-digits-results.json"


@pytest.fixture(scope="module")
def results():
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def view(results):
    return RunView(validate_results(copy.deepcopy(results)))


def test_method_text_names_every_step(view):
    t = main_table(view)
    methods = dict(zip(t.column("Variant"), t.column("Method")))
    assert methods["pruned-90"] == "prune.global_magnitude → fine-tuning"
    assert methods["pruned-90-at"] == "prune.global_magnitude → adversarial fine-tuning (pgd)"
    details = {r[0].text: r[1].detail for r in t.rows}
    assert "fine-tuning: 2 epochs, lr=0.02, pgd eps=0.1, steps=5" in details["pruned-90-at"]
    assert details["pruned-90"].startswith("sparsity=0.9")
    rows = {r["variant"]: r["method"] for r in summary_rows(view.results)}  # the CLI summary too
    assert rows["pruned-90-at"] != rows["pruned-90"] and "adversarial fine-tuning (pgd)" in rows["pruned-90-at"]
    steps = method_steps("a+b", {"steps": [{"method": "a", "x": 1}, {"method": "b", "y": 2}]})
    assert steps == ("a → b", "a: x=1; b: y=2")
    assert method_steps(None, {}) == ("dense", "")


def test_headers_name_their_setting(view):
    heads = {c.title: c.setting for c in main_table(view).columns}
    assert heads["Robust"] == "eps=0.1, linf, 5 steps, 100 queries"
    assert heads["Bit-flip attack"] == "10 flips"
    assert heads["Bit-error rate"] == "BER=0.0001"
    assert heads["Corruptions"] == "severity mean 1,3,5"
    assert heads["Certified (smoothing)"] == "σ=0.25, radius 0"
    assert "Bytes" not in heads  # moved to the Variants table, the main table stays narrow


def test_masked_values_marked_in_cells(view):
    t = main_table(view)
    robust = dict(zip(t.column("Variant"), [r[[c.title for c in t.columns].index("Robust")] for r in t.rows]))
    assert robust["binary"].mark == "⚠" and robust["binary"].cls == "masked"
    assert all(robust[n].mark == "" for n in ("dense", "int4", "pruned-90"))
    assert any("gradient-masking warning" in "".join(x.text for x in p.parts) for p in t.footnotes)


def test_silent_weights_for_binary_variants(view):
    t = variants_table(view)
    silent = dict(zip(t.column("Variant"), t.column("Silent weights")))
    assert silent["dense"] == "—" and re.fullmatch(r"\d+\.\d%", silent["binary"])
    assert view.silent_fraction(next(v for v in view.variants if v["name"] == "binary")) > 0.5
    assert "OvSW" in "".join(x.text for x in t.footnotes[0].parts)


def test_masked_points_get_their_own_marker_in_every_plot(results, tmp_path, monkeypatch):
    saved = {}
    real = plots_mod._save

    def keep(fig, path):
        saved[path.name] = fig
        real(fig, path)

    monkeypatch.setattr(plots_mod, "_save", keep)
    shutil.copy(FIXTURE, tmp_path / "results.json")
    render_report(tmp_path)

    def has_mask_marker(fig) -> bool:
        for ax in fig.axes:
            for col in ax.collections:
                if isinstance(col, PathCollection) and len(col.get_facecolors()) and \
                        tuple(round(c, 3) for c in col.get_facecolors()[0][:3]) == (0.776, 0.157, 0.157):
                    return True
        return False

    for name in ("frontier.png", "size_robust.png", "curve_robust.png"):
        assert has_mask_marker(saved[name]), name
    assert not has_mask_marker(saved["size_clean.png"])  # the clean check raised no masking flag
    legend = [t.get_text() for t in saved["curve_robust.png"].axes[0].get_legend().get_texts()]
    assert "⚠ gradient masking suspected" in legend


def test_integer_axes_have_integer_ticks(results, tmp_path, monkeypatch):
    saved = {}
    real = plots_mod._save

    def keep(fig, path):
        saved[path.name] = fig
        real(fig, path)

    monkeypatch.setattr(plots_mod, "_save", keep)
    shutil.copy(FIXTURE, tmp_path / "results.json")
    render_report(tmp_path)
    for name in ("curve_bfa.png", "curve_corruptions.png", "training_base.png"):
        ax = saved[name].axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)


def test_colours_are_stable_by_name():
    a = plots_mod._Palette(["dense", "int4", "binary"])
    b = plots_mod._Palette(["zeta", "binary", "dense", "pruned-90", "int8"])
    assert a("binary") == b("binary") and a("dense") == b("dense")
    many = plots_mod._Palette([f"v{i}" for i in range(12)])
    assert len({many(f"v{i}")[0] for i in range(12)}) == 12  # collisions take a free colour


def test_images_at_2x_and_print_stylesheet(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "results.json")
    render_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    png = (tmp_path / "plots" / "frontier.png").read_bytes()
    w, h = png_size(png)
    assert w > 1100  # 6.4 in at 220 dpi
    assert f'width="{w // 2}" height="{h // 2}"' in html
    assert "@page{size:A4 landscape" in html and "@media print{" in html
    assert '<table class="main">' in html and "position:sticky" in html
