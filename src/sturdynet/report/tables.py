"""Tables of the report (one table model for Markdown, HTML and the CLI summary)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .format import (DASH, fmt_bits, fmt_bytes, fmt_int, fmt_num, fmt_params, fmt_pct, fmt_ratio, fmt_seconds,
                     method_steps)
from .model import Cell, Column, Para, Table, Text, para
from .schema import validate_results
from .uncertainty import fmt_acc, interval
from .view import RunView

#: metric keys that are not shown as scalar extras in the per-check tables
_NOT_EXTRAS = ("accuracy", "per_sample", "curve", "flags", "error", "check_key", "ci95")
_MAX_CURVE_COLUMNS = 12
#: parameters shown beside the method in the summary (all of them in the variants table)
KEY_PARAMS = 3
#: the mark of a value from a check that raised a gradient-masking warning
MASK_MARK = "⚠"


def _status_cell(status: str) -> Cell:
    return Cell(status, cls="ok" if status == "ok" else "failed" if status == "failed" else "pending")


def variant_values(view: RunView, v: Mapping[str, Any], key_params: int = KEY_PARAMS) -> Dict[str, str]:
    """The formatted summary fields of one variant (shared by the main table and :func:`summary_rows`);
    ``key_params`` parameters are shown beside the method."""
    rob = view.robust(v)
    robust = fmt_pct(rob.accuracy)
    steps, detail = method_steps(v.get("method"), v.get("params"), view.recipe_variant(v["name"]), key_params)
    if rob.accuracy is not None and rob.from_min and rob.source:
        robust = f"{robust} ({rob.source}{'; incomplete' if rob.incomplete else ''})"
    return {
        "variant": v["name"],
        "method": steps + (f" ({detail})" if detail else ""),
        "size": fmt_bytes(v.get("size_bytes")),
        "bytes": fmt_int(v.get("size_bytes")),
        "ratio": fmt_ratio(view.ratio(v)),
        "sparsity": fmt_pct(v.get("sparsity")),
        "bits": fmt_bits(v.get("bits")),
        "clean": fmt_pct(view.accuracy(v, view.clean_id)),
        "robust": robust,
        "status": v.get("status", DASH),
    }


def summary_rows(results: Mapping[str, Any]) -> List[Dict[str, str]]:
    """One dict per variant for a console table, values already formatted.

    Keys, in display order: ``variant, method, size, ratio, clean, robust, status``
    (``method`` with its first parameter, ``size`` in B/KiB/MiB, ``ratio`` like ``"7.07x"``,
    accuracies like ``"99.2%"``; a robust value taken as the minimum over checks names that
    check in parentheses).

    Raises:
        ValueError: ``results`` does not follow the results.json schema.
    """
    view = RunView(validate_results(results))
    keys = ("variant", "method", "size", "ratio", "clean", "robust", "status")
    return [{k: variant_values(view, v, key_params=1)[k] for k in keys} for v in view.variants]


def _accuracy_cell(view: RunView, v: Mapping[str, Any], cid: str) -> Cell:
    if view.check_error(v, cid) is not None:
        return Cell("error", cls="failed")
    masked = view.masked(v, cid) and view.accuracy(v, cid) is not None
    return Cell(fmt_acc(view.metrics(v).get(cid)),  # with its interval / spread when recorded
                cls="masked" if masked else "", mark=MASK_MARK if masked else "")


def check_title(view: RunView, cid: str) -> str:
    """Column title of a check with its setting, e.g. ``"PGD @ eps=0.1, linf, 20 steps"``."""
    return check_column(view, cid).heading


def check_column(view: RunView, cid: str) -> Column:
    """The main table's column of a check: its label, and the setting its accuracy is measured at."""
    return Column(view.label(cid), "right", view.setting_text(cid))


def main_table(view: RunView) -> Table:
    """Variants against size, compression facts and the accuracy of every check.

    The method column names every step that made the variant (fine-tuning included), with the
    parameters as a detail line; a value from a check that raised a gradient-masking warning
    carries :data:`MASK_MARK`.
    """
    has_robust = any(view.robust(v).accuracy is not None for v in view.variants)
    cols = [Column("Variant"), Column("Method"), Column("Size", "right"), Column("Ratio", "right"),
            Column("Sparsity", "right"), Column("Bits", "right"), Column("Clean", "right")]
    if has_robust:
        budgets = robust_budgets(view)
        title = f"Robust ({', '.join(budgets)})" if budgets else "Robust"
        cols.append(Column(title, "right", view.robust_setting()))
    cols += [check_column(view, c) for c in view.other_ids]
    cols.append(Column("Status"))
    rows = []
    for v in view.variants:
        f = variant_values(view, v)
        steps, detail = method_steps(v.get("method"), v.get("params"), view.recipe_variant(v["name"]), KEY_PARAMS)
        cells = [Cell(f["variant"], strong=True), Cell(steps, cls="method", detail=detail), Cell(f["size"]),
                 Cell(f["ratio"]), Cell(f["sparsity"]), Cell(f["bits"]),
                 _accuracy_cell(view, v, view.clean_id) if view.clean_id else Cell(f["clean"])]
        if has_robust:
            masked = view.robust_masked(v) and f["robust"] != DASH
            cells.append(Cell(f["robust"] + _robust_interval(view, v), strong=f["robust"] != DASH,
                              cls="masked" if masked else "", mark=MASK_MARK if masked else ""))
        cells += [_accuracy_cell(view, v, c) for c in view.other_ids]
        cells.append(_status_cell(f["status"]))
        rows.append(tuple(cells))
    return Table(tuple(cols), tuple(rows), tuple(_main_notes(view, has_robust, rows)), cls="main")


def _robust_interval(view: RunView, v: Mapping[str, Any]) -> str:
    src = view.robust(v).source
    m = view.metrics(v).get(src) if src else None
    text = fmt_acc(m) if m else ""
    return text[len(fmt_pct(m["accuracy"])):] if m and "accuracy" in m else ""


def robust_budgets(view: RunView) -> List[str]:
    """The attack budgets (``standard``, ``rand``, ``custom``) behind the robust column."""
    rid = view.robust_id
    ms = [view.metrics(v).get(rid) or {} for v in view.variants] if rid else []
    return sorted({f"budget: {m['budget']}" for m in ms if m.get("budget")})


def _budget_note(view: RunView) -> str:
    """``; budget custom: ...`` with the numbers, and the scoring rule on randomized models."""
    rid = view.robust_id
    out = []
    for v in view.variants:
        m = (view.metrics(v).get(rid) or {}) if rid else {}
        d = m.get("budget_detail")
        if m.get("budget") == "custom" and d and not any("custom" in o for o in out):
            out.append("; budget custom = " + ", ".join(f"{k} {fmt_num(d[k])}" for k in sorted(d)))
        if m.get("random_forward") and not any("draws" in o for o in out):
            out.append("; on randomized models the robust value is the mean correctness over forward draws "
                       "(majority-vote and every-draw values are in the check's table)")
    return "".join(out)


def _main_notes(view: RunView, has_robust: bool, rows: List[Tuple[Cell, ...]] = ()) -> List[Para]:
    notes = []
    if any(c.mark == MASK_MARK for r in rows for c in r):
        notes.append(para(Text(MASK_MARK, "strong"), " the check raised a gradient-masking warning for this "
                          "variant: a gradient attack alone may overstate its robustness (see Warnings; plots "
                          "mark these values with a red ×).", cls="note"))
    if any(interval(m) for v in view.variants for m in view.metrics(v).values() if isinstance(m, Mapping)):
        seeds = view.results.get("seeds") or []
        notes.append(para("Accuracies show their 95 % interval [low, high]: Wilson's, from the number of test "
                          "samples" + (f"; over {len(seeds)} seeds the value is the mean, ± the std over seeds, "
                                       "and the interval also covers the spread over seeds (per-seed values in "
                                       "the check tables)" if len(seeds) > 1 else "")
                          + ". Fault checks (means over random trials) show ± the std over trials.", cls="note"))
    ref_name, ref_size = view.reference
    if ref_name is not None:
        what = "the dense variant" if view.reference_is_dense else "the largest variant (no dense variant)"
        notes.append(para("Ratio = size of ", Text(ref_name, "code"), f" ({what}, {fmt_int(ref_size)} B) / size of the "
                          "variant. Sizes are packed storage: 1 KiB = 1024 B, 1 MiB = 1024 KiB.", cls="note"))
    if has_robust:
        rid, others = view.robust_id, ", ".join(view.attack_ids) or DASH
        text = ("Robust = accuracy of the ", Text(rid, "code"),
                " check (per-sample worst case over its attacks)" + _budget_note(view)) if rid else ()
        if any(view.robust(v).from_min and view.robust(v).accuracy is not None for v in view.variants):
            sep = "; where it is missing, " if rid else "Robust = "
            text += (f"{sep}the minimum accuracy over the input-attack checks ({others}); the check that gave the "
                     "minimum is named in parentheses",)
            if any(view.robust(v).incomplete for v in view.variants):
                text += ("; \"incomplete\": a check failed or is missing for that variant, so the worst case may "
                         "be lower",)
        notes.append(para(*text, ".", cls="note"))
    if view.other_ids:
        notes.append(para("Check columns give each check's accuracy at the setting under its name (its first "
                          "setting); curves below. Method parameters: the Variants table.", cls="note"))
    return notes


def _flatten(metrics: Mapping[str, Any]) -> Dict[str, Any]:
    """Scalar extras of a check, one level of mappings flattened as ``parent.key``."""
    out: Dict[str, Any] = {}
    for k, v in metrics.items():
        if k in _NOT_EXTRAS:
            continue
        if isinstance(v, Mapping):
            for k2, v2 in v.items():
                if not isinstance(v2, (Mapping, list)):
                    out[f"{k}.{k2}"] = v2
        elif isinstance(v, list):
            if all(not isinstance(x, (Mapping, list)) for x in v) and len(v) <= 8:
                out[k] = v
        else:
            out[k] = v
    return out


def _fmt_extra(key: str, value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            "accuracy" in key or key.endswith("success_rate") or key.startswith("per_attack.")) and 0 <= value <= 1:
        return fmt_pct(value)
    return fmt_num(value)


def check_table(view: RunView, cid: str) -> Table:
    """Per-variant details of one check: accuracy and every scalar extra it recorded
    (every variant that has this check, finished or not)."""
    with_check = [v for v in view.variants if cid in view.metrics(v)]
    flat = {v["name"]: _flatten(view.metrics(v)[cid]) for v in with_check}
    keys: List[str] = []
    for f in flat.values():
        keys += [k for k in f if k not in keys]
    cols = (Column("Variant"), Column("Accuracy", "right")) + tuple(Column(k, "right") for k in keys)
    rows = []
    for v in with_check:
        f = flat[v["name"]]
        rows.append((Cell(v["name"], strong=True), _accuracy_cell(view, v, cid))
                    + tuple(Cell(_fmt_extra(k, f[k]) if k in f else DASH) for k in keys))
    return Table(cols, tuple(rows))


def curve_table(view: RunView, cid: str) -> Optional[Table]:
    """Accuracy at every curve setting (variants x settings); None if the settings do not fit a table."""
    key = view.curve_x_key(cid)
    if key is None:
        return None
    xs: List[Any] = []
    per: List[Tuple[str, Dict[Any, float]]] = []
    for v in view.ok_variants:
        k, pts = view.curve(v, cid)
        if not pts or k != key:
            continue
        row = {}
        for p in pts:
            x = p.get(key)
            if isinstance(x, float) and math.isnan(x):
                continue
            row.setdefault(x, p["accuracy"])
            if x not in xs:
                xs.append(x)
        per.append((v["name"], row))
    if not xs or len(xs) > _MAX_CURVE_COLUMNS:
        return None
    cols = (Column("Variant"),) + tuple(Column(f"{key}={fmt_num(x)}", "right") for x in xs)
    rows = tuple((Cell(name, strong=True),) + tuple(Cell(fmt_pct(row.get(x))) for x in xs) for name, row in per)
    return Table(cols, rows)


def variants_table(view: RunView) -> Table:
    """Every variant's steps with all their parameters (fine-tuning included), weight count,
    packed bytes and, for binary variants, the silent-weight diagnostic."""
    silent = {v["name"]: view.silent_fraction(v) for v in view.variants}
    has_silent = any(s is not None for s in silent.values())
    rows = []
    for v in view.variants:
        spec = view.recipe_variant(v["name"])
        if not spec and v.get("finetune_history"):
            spec = {"finetune_epochs": len(v["finetune_history"])}
        steps, detail = method_steps(v.get("method"), v.get("params"), spec, limit=None)
        row = (Cell(v["name"], strong=True), Cell(steps), Cell(detail or DASH), Cell(fmt_int(v.get("params_count"))),
               Cell(fmt_int(v.get("macs"))), Cell(fmt_int(v.get("size_bytes"))))
        if has_silent:
            row += (Cell(fmt_pct(silent[v["name"]])),)
        rows.append(row)
    cols = (Column("Variant"), Column("Steps"), Column("Parameters"), Column("Weights", "right"),
            Column("MACs", "right"), Column("Bytes", "right")) + ((Column("Silent weights", "right"),) if has_silent else ())
    notes = ()
    if has_silent:
        notes = (para("Silent weights: the fraction of binary latent weights whose sign-flip average (OvSW, "
                      "arXiv 2407.05257: EMA with m = 0.999 of sign changes per step) is below 1e-4 after the "
                      "last training epoch. Near 100% means the binary weights barely changed sign while training, "
                      "so the variant is close to its initial binarization.", cls="note"),)
    return Table(cols, tuple(rows), notes)


def timing_table(view: RunView) -> Optional[Table]:
    """Seconds spent per variant and phase; None when no variant recorded any."""
    keys: List[str] = []
    for v in view.variants:
        keys += [k for k in (v.get("seconds") or {}) if k not in keys]
    if not keys:
        return None
    cols = (Column("Variant"),) + tuple(Column(k, "right") for k in keys)
    rows = tuple((Cell(v["name"], strong=True),) + tuple(Cell(fmt_seconds((v.get("seconds") or {}).get(k)))
                                                          for k in keys) for v in view.variants)
    return Table(cols, rows)


def _join_scalars(m: Mapping[str, Any], skip: Tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k}={fmt_num(v)}" for k, v in m.items()
                     if k not in skip and not isinstance(v, (Mapping, list)) and v is not None)


def _data_fact(d: Mapping[str, Any]) -> str:
    parts = [str(d.get("name", "?"))]
    splits = [f"{k} {fmt_int(d[k])}" for k in ("train", "val", "test") if isinstance(d.get(k), int)]
    if splits:
        parts.append(" / ".join(splits))
    if d.get("num_classes") is not None:
        parts.append(f"{d['num_classes']} classes")
    if isinstance(d.get("input_size"), list):
        parts.append("input " + "×".join(str(s) for s in d["input_size"]))
    rest = _join_scalars(d, ("name", "train", "val", "test", "num_classes"))
    return ", ".join(parts + ([rest] if rest else []))


def facts_table(view: RunView) -> Table:
    """The run's facts: recipe, seed, data, model, training, versions, commit, machine, times."""
    r, recipe = view.results, view.recipe
    seeds = r.get("seeds") if isinstance(r.get("seeds"), list) and len(r["seeds"]) > 1 else None
    rows: List[Tuple[str, str]] = [("Recipe", str(r["name"])), ("Seeds", ", ".join(fmt_num(x) for x in seeds))
                                   if seeds else ("Seed", fmt_num(r.get("seed")))]
    envs = r.get("environments") if isinstance(r.get("environments"), list) else []
    if len(envs) > 1:  # resumed under another thread count / device / library versions
        rows.append(("Environments", "; ".join(
            f"#{e.get('id')}: {(e.get('env') or {}).get('threads')} threads, {(e.get('env') or {}).get('device')}, "
            f"torch {((e.get('env') or {}).get('versions') or {}).get('torch')}" for e in envs if isinstance(e, Mapping))
            + " (each variant's cells name theirs in results.json)"))
    if r.get("data"):
        rows.append(("Data", _data_fact(r["data"])))
    model = recipe.get("model")
    if isinstance(model, Mapping):
        rest = fmt_params({k: v for k, v in model.items() if k not in ("name", "factory")})
        label = model.get("name") or model.get("factory") or "?"
        rows.append(("Model", f"{label}" + (f" ({rest})" if rest else "")))
    if isinstance(recipe.get("train"), Mapping):
        rows.append(("Training", _join_scalars(recipe["train"])))
    base = r.get("base") or {}
    hist = base.get("history") or []
    if base:
        last = hist[-1] if hist else {}
        text = f"{len(hist)} epoch{'' if len(hist) == 1 else 's'} in {fmt_seconds(base.get('seconds'))}"
        if isinstance(last.get("val_accuracy"), (int, float)):
            text += f", final val accuracy {fmt_pct(last['val_accuracy'])}"
        rows.append(("Base model", text))
    if r.get("versions"):
        rows.append(("Versions", ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v is not None)))
    rows.append(("Git commit", r.get("git_commit") or "unknown (not recorded)"))
    if r.get("machine"):
        rows.append(("Machine", _join_scalars(r["machine"])))
    for key in ("started", "updated"):
        if r.get(key):
            rows.append((key.capitalize(), r[key]))
    return Table((Column("Fact"), Column("Value")), tuple((Cell(a, strong=True), Cell(b)) for a, b in rows))
