"""The threat recipe's report in a real browser (headless Chromium over the DevTools pipe).

The fixture ``tests/data/threats-digits-results.json`` holds the results of one reduced run of
the shipped threat recipe (same variants and checks, fewer epochs and samples; per-sample
outcomes dropped), so the report has exactly the columns of a full run::

    sturdynet run threats-digits --out /tmp/threats_small --set train.epochs=4 \\
      --set 'variants[binary].epochs=4' --set 'variants[pruned-90-at].finetune_epochs=2' \\
      --set 'variants[pruned-90].finetune_epochs=1' --set 'evaluate[robust].samples=120' \\
      --set 'evaluate[robust].steps=5' --set 'evaluate[robust].n_queries=100' \\
      --set 'evaluate[bfa].trials=1' --set 'evaluate[bfa].max_flips=10' --set 'evaluate[ber].trials=1' \\
      --set 'evaluate[corruptions].samples=120' --set 'evaluate[certify].n=100' --set 'evaluate[certify].samples=30'

Asserted at a 1280 px viewport: no horizontal page overflow and an unclipped results table,
no console error, no request leaving the file, every plot loaded; and the print-to-PDF
(A4 landscape) page of the results holds every column title, Robust included. The same
checks must fail on a deliberately over-wide table. Chromium comes from the Debian package
(``.ci/run`` installs it); without it these tests skip and say so.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cdp import LAYOUT_JS, Chromium, find_chromium, layout_problems
from sturdynet.report import render_report

FIXTURE = Path(__file__).parent / "data" / "threats-digits-results.json"
COLUMNS = ("Variant", "Method", "Size", "Ratio", "Clean", "Robust", "Bit-flip attack", "Bit-error rate",
           "Corruptions", "Certified", "Status")

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (Debian: apt-get install "
                                "chromium; .ci/run installs it when apt-get is available)")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("threats")
    shutil.copy(FIXTURE, run / "results.json")
    render_report(run)
    return run / "report.html"


@pytest.fixture(scope="module")
def browser():
    with Chromium() as c:
        yield c


def _variant(report: Path, tmp_path: Path, old: str, new: str) -> Path:
    html = report.read_text(encoding="utf-8")
    assert old in html
    out = tmp_path / "report.html"
    out.write_text(html.replace(old, new, 1), encoding="utf-8")
    return out


def test_threat_report_layout_console_requests_plots(report, browser):
    browser.open(report, 1280, 900)
    facts = browser.evaluate(LAYOUT_JS)
    assert layout_problems(facts) == []
    assert facts["pageWidth"] <= 1280
    main = next(t for t in facts["tables"] if t["main"])
    headers = " | ".join(main["headers"])
    for col in COLUMNS:
        assert col in headers, (col, headers)
    # every header names its setting
    assert re.search(r"Robust\s*eps=0\.1, linf, 5 steps", headers) and "10 flips" in headers and "BER=" in headers
    assert browser.console_errors() == []
    urls = browser.requests()
    assert urls and all(u.startswith(("data:", report.resolve().as_uri())) for u in urls), urls
    imgs = facts["images"]
    assert len(imgs) >= 10 and all(i["complete"] and i["width"] > 0 for i in imgs)
    assert all(i["shown"] <= i["width"] // 2 + 1 for i in imgs)  # 2x plots, shown at half size or less


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler-utils) is not installed")
def test_print_pdf_results_page_has_every_column(report, browser, tmp_path):
    browser.open(report, 1280, 900)
    pdf = tmp_path / "report.pdf"
    browser.pdf(pdf)
    pages = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout.split("\f")
    page = next(p for p in pages if re.search(r"^\s*Results\s*$", p, re.M))
    table = page[page.index("Results"):]
    for col in COLUMNS:
        assert col in table, col
    assert "Robust" in table and re.search(r"pruned-90-at.*58\.3%", table, re.S)
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout
    w, h = map(float, re.search(r"Page size:\s+([\d.]+) x ([\d.]+)", info).groups())
    assert w > h  # landscape


def test_overwide_table_fails_the_checks(report, browser, tmp_path):
    wide = _variant(report, tmp_path, '<table class="main">', '<table class="main" style="min-width:2600px">')
    browser.open(wide, 1280, 900)
    problems = layout_problems(browser.evaluate(LAYOUT_JS))
    assert any("results table clipped" in p for p in problems), problems
    # an over-wide element outside a scroll box makes the page itself overflow
    page = _variant(report, tmp_path, "<h2 id=\"results\">", '<div style="width:2000px">x</div><h2 id="results">')
    browser.open(page, 1280, 900)
    problems = layout_problems(browser.evaluate(LAYOUT_JS))
    assert any("page overflows horizontally" in p for p in problems), problems


def test_external_request_and_console_error_are_caught(report, browser, tmp_path):
    bad = _variant(report, tmp_path, "</main>", '<img alt="remote" src="http://192.0.2.1/x.png">'
                   "<script>console.error('boom')</script></main>")
    browser.open(bad, 1280, 900)
    assert any(u.startswith("http://192.0.2.1/") for u in browser.requests())
    assert any("boom" in e for e in browser.console_errors())


def test_fixture_has_the_threat_recipe_columns():
    r = json.loads(FIXTURE.read_text())
    checks = [c["check"] for c in r["recipe"]["evaluate"]]
    assert checks == ["clean", "robust", "bfa", "ber", "corruptions", "certify"]
    assert [v["name"] for v in r["variants"]] == ["dense", "pruned-90", "int4", "binary", "pruned-90-at"]
