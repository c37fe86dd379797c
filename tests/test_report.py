"""Tests of the report renderer: results.json -> report.md, report.html, plots."""
from __future__ import annotations

import copy
import json
import re
import struct

import pytest

from sturdynet.report import load_results, render_report, summary_rows, validate_results

MASKING = "gradient masking: gradient-free attack stronger than gradient attacks"


def _ok(name, method, params, size, clean, pgd_curve, ber_curve, sparsity=0.0, bits=32, flags=()):
    return {
        "name": name, "method": method, "params": params, "status": "ok", "error": None,
        "size_bytes": size, "dense_size_bytes": 264880, "compression_ratio": 264880 / size,
        "sparsity": sparsity, "bits": bits, "params_count": 65834,
        "seconds": {"compress": 0.1, "finetune": 2.0, "evaluate": 3.2},
        "finetune_history": [{"epoch": 1, "train_loss": 0.3, "val_accuracy": 0.9},
                             {"epoch": 2, "train_loss": 0.2, "val_accuracy": 0.93}] if method else [],
        "metrics": {
            "clean": {"accuracy": clean, "loss": 0.05, "samples": 359, "per_sample": "01" * 3},
            "pgd": {"accuracy": pgd_curve[1][1], "eps": 0.1, "grad_mode": "true", "samples": 359,
                    "curve": [{"eps": e, "accuracy": a} for e, a in pgd_curve], "flags": list(flags)},
            "ber": {"kind": "fault", "accuracy": ber_curve[0][1], "curve": [{"ber": b, "accuracy": a} for b, a in ber_curve]},
        },
    }


def make_results() -> dict:
    """Dense, pruned (7.07x), binary (with a gradient-masking flag) and a failed variant."""
    ber = [1e-7, 1e-5, 1e-3]
    return {
        "schema": 1, "name": "digits-demo",
        "recipe": {"name": "digits-demo", "seed": 0, "data": {"name": "digits"}, "model": {"name": "small_cnn"},
                   "train": {"epochs": 3, "lr": 0.05},
                   "variants": [{"name": "dense"}, {"name": "pruned-90", "method": "prune.global_magnitude",
                                                    "sparsity": 0.9}],
                   "evaluate": [{"check": "clean"}, {"check": "pgd", "eps": 0.1}, {"check": "ber"}]},
        "seed": 0,
        "versions": {"sturdynet": "0.1.0", "torch": "2.13.0", "python": "3.11.7"},
        "git_commit": "abc123def",
        "machine": {"platform": "Linux-x86_64", "device": "cpu", "threads": 2},
        "data": {"name": "digits", "train": 1294, "val": 144, "test": 359, "num_classes": 10, "input_size": [8, 8]},
        "base": {"seconds": 12.3, "history": [{"epoch": e, "train_loss": 1.0 / e, "val_accuracy": 0.8 + 0.05 * e,
                                               "seconds": 4.0} for e in (1, 2, 3)]},
        "variants": [
            _ok("dense", None, {}, 264880, 0.9916, [(0.05, 0.7), (0.1, 0.31)], list(zip(ber, [0.99, 0.9, 0.2]))),
            _ok("pruned-90", "prune.global_magnitude", {"sparsity": 0.9, "scope": "global"}, 37466, 0.9721,
                [(0.05, 0.6), (0.1, 0.25)], list(zip(ber, [0.2, 0.1, 0.05])), sparsity=0.9),
            _ok("bin<&>", "binarize", {"scheme": "ste"}, 8278, 0.9, [(0.05, 0.5), (0.1, 0.45)],
                list(zip(ber, [0.88, 0.8, 0.1])), bits=1, flags=(MASKING, "few samples")),
            {"name": "pruned-99", "method": "prune.global_magnitude", "params": {"sparsity": 0.99},
             "status": "failed", "error": "loss became nan at epoch 2, step 10", "metrics": {}},
        ],
        "started": "2026-11-22T04:00:00Z", "updated": "2026-11-22T04:05:00Z",
    }


def write(tmp_path, results) -> None:
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")


def md_rows(md: str, first_header: str = "| Variant | Method |"):
    """The main table of report.md as {variant: {column title without its setting: text}}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_header))
    header = [h.strip().split(" @ ")[0] for h in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        rows[cells[0].strip("*")] = dict(zip(header, cells))
    return rows


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    write(run, make_results())
    return run, render_report(run)


def test_writes_files(rendered):
    run, written = rendered
    for name in ("report.md", "report.html", "plots/frontier.png", "plots/size_clean.png", "plots/curve_pgd.png",
                 "plots/curve_ber.png", "plots/training_base.png", "plots/training_finetune.png"):
        assert name in written and (run / name).is_file(), name
    png = (run / "plots" / "curve_ber.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert 400 < w < 1600 and 250 < h < 1200


def test_markdown_main_table(rendered):
    run, _ = rendered
    md = (run / "report.md").read_text()
    rows = md_rows(md)
    assert list(rows) == ["dense", "pruned-90", r"bin\<&\>", "pruned-99"]
    d, p, b, f = rows["dense"], rows["pruned-90"], rows[r"bin\<&\>"], rows["pruned-99"]
    assert d["Ratio"] == "1.00x" and p["Ratio"] == "7.07x" and b["Ratio"] == "32.00x"
    assert d["Size"] == "258.7 KiB" and p["Size"] == "36.6 KiB" and "Bytes" not in d  # bytes: Variants table
    assert p["Clean"] == "97.2%" and d["Clean"] == "99.2%" and p["Sparsity"] == "90.0%" and b["Bits"] == "1"
    assert p["Method"] == "prune.global_magnitude (sparsity=0.9, scope=global)"
    # robust = minimum over the input-attack checks (fault checks stay out), naming the check
    # a value from a check that raised a masking warning is marked in its cell
    assert d["Robust"] == "**31.0% (pgd)**" and p["Robust"] == "**25.0% (pgd)**" and b["Robust"] == "**45.0% (pgd)** ⚠"
    assert p["PGD"] == "25.0%" and b["PGD"] == "45.0% ⚠" and p["Bit-error rate"] == "20.0%"
    # each header names its setting
    assert "| Robust @ eps=0.1 | PGD @ eps=0.1 | Bit-error rate @ BER=1e-07 |" in md
    assert f["Status"] == "failed" and f["Clean"] == "—" and f["Size"] == "—"
    assert "minimum accuracy over the input-attack checks (pgd)" in md


def test_failures_and_flags(rendered):
    run, _ = rendered
    md = (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    for text in (md, html):
        assert "loss became nan at epoch 2, step 10" in text
        assert MASKING in text and "few samples" in text
    assert f"- **⚠ GRADIENT MASKING** `bin<&>` / `pgd`: {MASKING}" in md
    assert "> ⚠ **Gradient masking suspected** for: bin\\<&\\> (pgd)" in md
    assert '<span class="danger">&#9888; GRADIENT MASKING</span>' in html
    assert "- `bin<&>` / `pgd`: few samples" in md


def test_html_self_contained(rendered):
    run, _ = rendered
    html = (run / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    assert "<link" not in html and "<script" not in html
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(imgs) >= 8 and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert "bin&lt;&amp;&gt;" in html and "bin<&>" not in html


def test_render_is_deterministic(rendered):
    run, _ = rendered
    md1, html1 = (run / "report.md").read_text(), (run / "report.html").read_text()
    render_report(run / "results.json")
    assert (run / "report.md").read_text() == md1
    assert (run / "report.html").read_text() == html1


def test_robust_check_wins_and_ratio_without_dense(tmp_path):
    res = make_results()
    for v in res["variants"][:3]:
        v["metrics"]["robust"] = {"accuracy": 0.55, "per_attack": {"apgd-ce/true": 0.6, "square": 0.55},
                                  "flags": []}
    res["variants"] = res["variants"][1:]  # no dense variant: ratio against the largest
    write(tmp_path, res)
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    rows = md_rows(md)
    assert rows["pruned-90"]["Robust"] == "**55.0%**" and rows["pruned-90"]["Ratio"] == "1.00x"
    assert rows[r"bin\<&\>"]["Ratio"] == "4.53x"
    assert "Robust (worst case)" not in rows["pruned-90"]  # no duplicate column
    assert "largest variant (no dense variant)" in md
    assert "| per_attack.square |" in md and "55.0%" in md


def test_summary_rows():
    rows = summary_rows(make_results())
    assert [list(r) for r in rows][0] == ["variant", "method", "size", "ratio", "clean", "robust", "status"]
    assert rows[1] == {"variant": "pruned-90", "method": "prune.global_magnitude (sparsity=0.9, …)",
                       "size": "36.6 KiB", "ratio": "7.07x", "clean": "97.2%", "robust": "25.0% (pgd)",
                       "status": "ok"}
    assert rows[3]["status"] == "failed" and rows[3]["clean"] == "—"


def test_generic_new_check_and_missing_optional_fields(tmp_path):
    res = make_results()
    dense = res["variants"][0]
    dense["metrics"]["corruptions"] = {"accuracy": 0.8, "curve": [{"severity": s, "accuracy": 0.9 - 0.1 * s}
                                                                  for s in (1, 2, 3)], "flags": ["odd severity"]}
    del dense["metrics"]["clean"]["per_sample"]
    for key in ("seconds", "finetune_history", "params", "bits", "sparsity"):
        del res["variants"][1][key]
    del res["recipe"], res["versions"], res["machine"], res["base"]
    write(tmp_path, res)
    written = render_report(tmp_path)
    assert "plots/curve_corruptions.png" in written
    md = (tmp_path / "report.md").read_text()
    assert "Corruptions" in md and "odd severity" in md and "severity=3" in md
    assert md_rows(md)["dense"]["Robust"] == "**31.0% (pgd)**"


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["variants"][1].pop("size_bytes"), "variants[1].size_bytes"),
    (lambda r: r["variants"][0]["metrics"]["pgd"].update(accuracy="high"), "variants[0].metrics.pgd.accuracy"),
    (lambda r: r["variants"][0]["metrics"]["pgd"].update(accuracy=31.0), "variants[0].metrics.pgd.accuracy"),
    (lambda r: r["variants"][2]["metrics"]["ber"]["curve"][1].pop("ber"), "variants[2].metrics.ber.curve[1].ber"),
    (lambda r: r["variants"][0]["metrics"]["pgd"].update(flags="x"), "variants[0].metrics.pgd.flags"),
    (lambda r: r.pop("variants"), "variants"),
    (lambda r: r.update(schema=2), "schema"),
    (lambda r: r["variants"][3].pop("status"), "variants[3].status"),
    (lambda r: r["variants"][1].update(name="dense"), "variants[1].name"),
])
def test_bad_field_names_the_field(tmp_path, mutate, field):
    res = make_results()
    mutate(res)
    write(tmp_path, res)
    with pytest.raises(ValueError, match=re.escape(f"field '{field}'")) as e:
        render_report(tmp_path)
    assert "results.json" in str(e.value)
    assert not (tmp_path / "report.md").exists()


def test_not_json_names_the_file(tmp_path):
    (tmp_path / "results.json").write_text('{"schema": 1, "name": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"results\.json: not valid JSON \(line 1"):
        render_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="results.json"):
        load_results(tmp_path / "elsewhere")


def test_validate_does_not_mutate():
    res = make_results()
    before = copy.deepcopy(res)
    validate_results(res)
    summary_rows(res)
    assert res == before


def test_failed_check_is_shown_and_marks_robust_incomplete(tmp_path):
    """The runner records a check that raised as {"error": ...} and marks the variant failed."""
    res = make_results()
    dense = res["variants"][0]
    dense["metrics"]["pgd"] = {"error": "RuntimeError: boom", "check_key": "abc"}
    dense.update(status="failed", error="check pgd: RuntimeError: boom")
    write(tmp_path, res)
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    row = md_rows(md)["dense"]
    assert row["PGD"] == "error" and row["Clean"] == "99.2%"
    # the only input-attack check failed (ber is a fault check): no robust number to show
    assert row["Robust"] == "—" and row["Status"] == "failed"
    assert "- `dense` / `pgd`: RuntimeError: boom" in md
    assert "check_key" not in md
    html = (tmp_path / "report.html").read_text()
    assert '<td class="r failed">error</td>' in html


def test_curve_x_key_skips_statistics():
    from sturdynet.report.schema import curve_x_key

    assert curve_x_key({"ber": 1e-5, "accuracy": 0.9, "std": 0.01, "trials": 5, "flips": 3.2}) == "ber"
    assert curve_x_key({"accuracy": 0.9, "ber": 1e-5, "flips": 3.2, "std": 0.01, "trials": 5}) == "ber"
    assert curve_x_key({"flips": 0, "accuracy": 0.9, "loss": 0.3}) == "flips"
    with pytest.raises(ValueError):
        curve_x_key({"accuracy": 0.9, "std": 0.1})


def test_formatting_known_answers():
    from sturdynet.report.format import fmt_bits, fmt_bytes, fmt_method, fmt_num, fmt_pct, fmt_ratio

    assert [fmt_bytes(n) for n in (812, 1024, 264880, 3 * 1024 ** 2 + 1)] == ["812 B", "1 KiB", "258.7 KiB", "3.0 MiB"]
    assert fmt_ratio(264880 / 37466) == "7.07x" and fmt_ratio(250.4) == "250x" and fmt_ratio(None) == "—"
    assert fmt_pct(0.99164) == "99.2%" and fmt_pct(None) == "—"
    assert fmt_num(8 / 255) == "8/255" and fmt_num(0.2) == "0.2" and fmt_num(1e-7) == "1e-07"
    assert fmt_num(34112) == "34,112"
    assert fmt_bits({"conv1": 8, "fc": 4}) == "mixed 4–8" and fmt_bits(1) == "1"
    steps = {"steps": [{"method": "prune.global_magnitude", "sparsity": 0.8, "include_first": False, "min_keep": 0.0},
                       {"method": "quant.uniform", "bits": 4, "per_channel": True, "mode": "ptq"}]}
    assert fmt_method("prune.global_magnitude+quant.uniform", steps, limit=3) == \
        "prune.global_magnitude(sparsity=0.8) + quant.uniform(bits=4, per_channel=true, …)"
    assert fmt_method("quant.uniform", {"bits": 4, "act_bits": None, "mode": "ptq"}) == \
        "quant.uniform (bits=4, mode=ptq)"


def test_label_offsets_keep_labels_apart_and_inside():
    from sturdynet.report.plots import label_offsets

    pts = [("a", 10_000, 1.0), ("b", 10_300, 0.99), ("c", 12_000, 1.0), ("far", 160_000, 1.0), ("low", 10_000, 0.3)]
    off = label_offsets(pts)
    ys = [100 * acc + o for (_, _, acc), o in zip(pts, off)]
    assert all(-2 <= y <= 97 for y in ys)
    near = ys[:3]  # within one octave of each other: at least one step apart
    assert all(abs(a - b) >= 6 for i, a in enumerate(near) for b in near[i + 1:])
    assert off[3] == -6.0  # alone: only the axis top moves it
    assert off[4] == 1.5  # far below the others: no move
