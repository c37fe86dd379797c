"""Assemble the report document from a run view and its figures."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping

import yaml

from .model import Block, Bullets, Code, Document, Figure, Heading, Para, Text, para
from .tables import check_table, curve_table, facts_table, main_table, timing_table, variants_table
from .view import RunView, is_masking_flag


def _anchor(text: str, used: set) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    name, i = base, 2
    while name in used:
        name, i = f"{base}-{i}", i + 1
    used.add(name)
    return name


def _where(variant: str, cid: Any) -> List[Text]:
    parts = [Text(variant, "code")]
    if cid is not None:
        parts += [Text(" / "), Text(cid, "code")]
    return parts


def _alerts(view: RunView) -> List[Block]:
    out: List[Block] = []
    masking = [(v, c) for v, c, f in view.flags() if is_masking_flag(f)]
    if masking:
        where = ", ".join(f"{v} ({c})" if c else v for v, c in dict.fromkeys(masking))
        out.append(para(Text("Gradient masking suspected", "strong"), f" for: {where}. Accuracy under gradient "
                        "attacks alone overstates robustness for these variants; see Warnings.", cls="danger"))
    bad = [v for v in view.variants if v.get("status") != "ok"]
    if bad:
        names = ", ".join(f"{v['name']} ({v.get('status')})" for v in bad)
        out.append(para(Text(f"{len(bad)} of {len(view.variants)} variants did not finish", "strong"), f": {names}.",
                        cls="danger" if any(v.get("status") == "failed" for v in bad) else ""))
    done = {v["name"] for v in view.variants}
    todo = [n for n in view.planned_variants() if n not in done]
    if todo:
        out.append(para(Text("Not run yet", "strong"), ": " + ", ".join(todo) + " (the run is in progress or was "
                        "stopped; rerun it to resume)."))
    return out


def _warnings(view: RunView) -> List[Block]:
    flags = view.flags()
    run_level = list(view.results.get("warnings") or [])  # e.g. an undeclared input normalization
    if not flags and not run_level:
        return [para("No check raised a warning.")]
    items = [Para((Text("model", "strong"), Text(": " + w))) for w in run_level]
    for variant, cid, text in flags:
        lead = [Text("GRADIENT MASKING", "danger"), Text(" ")] if is_masking_flag(text) else []
        items.append(Para(tuple(lead + _where(variant, cid) + [Text(": " + text)]),
                          "danger" if lead else ""))
    return [Bullets(tuple(items))]


def _failures(view: RunView) -> List[Block]:
    out: List[Block] = []
    for v in view.variants:
        if v.get("status") == "ok":
            continue
        method = v.get("method") or "dense"
        out.append(para(Text(v["name"], "strong"), " (", Text(method, "code"), f"): status {v.get('status')}"))
        err = v.get("error")
        out.append(Code(err) if err else para("No error message was recorded.", cls="note"))
    items = []
    for v in view.variants:
        for cid in view.check_ids:
            e = view.check_error(v, cid)
            if e is not None:
                items.append(para(*_where(v["name"], cid), ": " + e))
    if items:
        out += [para(Text("Failed checks", "strong"), " (the other checks of these variants ran):"),
                Bullets(tuple(items))]
    return out


def _check_sections(view: RunView, figs: Mapping[str, Figure], used: set) -> List[Block]:
    out: List[Block] = []
    for cid in view.check_ids:
        title = view.label(cid)
        out.append(Heading(3, title, _anchor(f"check-{cid}", used)))
        name = view.check_name(cid)
        if name != cid:
            out.append(para("Check ", Text(name, "code"), " recorded as ", Text(cid, "code"), ".", cls="note"))
        out.append(check_table(view, cid))
        ct = curve_table(view, cid)
        if ct is not None:
            out.append(ct)
        for key in (f"curve:{cid}", f"size:{cid}"):
            if key in figs:
                out.append(figs[key])
    return out


def build_document(view: RunView, figs: Dict[str, Figure]) -> Document:
    """The whole report as blocks (run facts, summary, warnings, failures, checks, training, recipe)."""
    used: set = set()
    r = view.results
    title = f"sturdynet report: {r['name']}"
    blocks: List[Block] = list(_alerts(view))
    blocks += [Heading(2, "Run", _anchor("run", used)), facts_table(view)]
    blocks += [Heading(2, "Results", _anchor("results", used))]
    blocks += [main_table(view)] if view.variants else [para("No variant has finished yet.")]
    if "frontier" in figs:
        blocks.append(figs["frontier"])
    blocks += [Heading(2, "Warnings", _anchor("warnings", used))] + _warnings(view)
    failures = _failures(view)
    if failures:
        blocks += [Heading(2, "Failed variants", _anchor("failed-variants", used))] + failures
    if view.variants:
        blocks += [Heading(2, "Variants", _anchor("variants", used)), variants_table(view)]
    if view.check_ids:
        blocks += [Heading(2, "Checks", _anchor("checks", used))] + _check_sections(view, figs, used)
    timing = timing_table(view)
    if "training" in figs or "finetune" in figs or timing is not None:
        blocks.append(Heading(2, "Training and timing", _anchor("training", used)))
        blocks += [figs[k] for k in ("training", "finetune") if k in figs]
        if timing is not None:
            blocks += [para("Seconds per variant and phase:"), timing]
    if view.recipe:
        blocks += [Heading(2, "Recipe", _anchor("recipe", used)),
                   para("The resolved recipe of this run (rerun it with the same seed to reproduce):"),
                   Code(yaml.safe_dump(_plain(view.recipe), sort_keys=False, allow_unicode=True).rstrip(), "yaml")]
    return Document(title, tuple(blocks))


def _plain(obj: Any) -> Any:
    """Mappings/lists as plain dicts/lists so that YAML dumps them without tags."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
