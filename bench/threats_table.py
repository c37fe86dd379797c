"""The threat-frontier table of a run of ``recipes/threats-*.yaml``, from its results.json.

One row per variant: size, clean accuracy, the robust ensemble's worst case and its
true-gradient-only accuracy at the first eps, bit-flip attack (mean flips to random guess,
a lower bound marked ">=" when some trial hit ``max_flips``, and accuracy after ``accuracy_at`` flips), accuracy at each bit-error rate, mean corruption
accuracy, certified accuracy at each radius.

    sturdynet run recipes/threats-cifar10.yaml --out bench/logs/threats_cifar10
    python bench/threats_table.py bench/logs/threats_cifar10/results.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def row(v: dict) -> tuple:
    m = v.get("metrics") or {}
    cells = [v["name"], f"{v.get('size_bytes', 0) / 1024:.1f} KiB", pct(m.get("clean", {}).get("accuracy"))]
    heads = ["variant", "size", "clean"]
    r = m.get("robust")
    if r:
        for p in r["curve"]:
            heads += [f"robust @ {p['eps']:.4g}"]
            cells += [pct(p["accuracy"])]
        heads += ["true grads only @ first eps"]
        cells += [pct(r.get("accuracy_by_grad_mode", {}).get("true"))]
    b = m.get("bfa")
    if b:
        f = b.get("flips_to_random", {})
        heads += ["BFA flips to random", f"BFA acc @ {b['flips']} flips"]
        ftr = f"{f.get('mean', 0):.1f} ± {f.get('std', 0):.1f}"
        if f.get("censored"):  # some trial stopped at max_flips: the mean is a lower bound
            ftr = f"≥ {f.get('mean', 0):.1f} ({f.get('reached')}/{f.get('trials')} reached)"
        cells += [ftr, pct(b["accuracy"])]
    e = m.get("ber")
    if e:
        for p in e["curve"]:
            if p.get("ber"):
                heads += [f"BER {p['ber']:g}"]
                cells += [pct(p["accuracy"])]
    c = m.get("corruptions")
    if c:
        heads += ["corruptions (mean)", "mCE"]
        cells += [pct(c["accuracy"]), "—" if c.get("mce") is None else f"{c['mce']:.2f}"]
    s = m.get("certify")
    if s:
        for p in s["curve"]:
            heads += [f"certified r={p['radius']:g}"]
            cells += [pct(p["accuracy"])]
    return heads, cells


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path)
    args = ap.parse_args()
    res = json.loads(args.results.read_text())
    rows = [row(v) for v in res["variants"] if v.get("status") == "ok"]
    if not rows:
        raise SystemExit(f"{args.results}: no finished variant")
    heads = max((h for h, _ in rows), key=len)
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for h, cells in rows:
        by = dict(zip(h, cells))
        print("| " + " | ".join(by.get(k, "—") for k in heads) + " |")


if __name__ == "__main__":
    main()
