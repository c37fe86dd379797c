"""``sturdynet list [FAMILY] [PATTERN] [--json]``: what can go into a recipe, with parameters and
defaults, and the shipped recipes (``sturdynet list recipes``)."""
from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
from typing import Any, Dict, List

from ..core.registry import REGISTRIES

RECIPES = "recipes"


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list data sets, models, methods, checks, ..., shipped recipes and parameters")
    p.add_argument("family", nargs="?", choices=sorted([*REGISTRIES, RECIPES]), help="only this family")
    p.add_argument("pattern", nargs="?", default="*", help="glob on names, e.g. 'prune.*'")
    p.add_argument("--json", action="store_true", help="print JSON: {family: [{name, params | summary, path}]}")
    p.set_defaults(func=run)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _fields(pcls) -> str:
    if pcls is None:
        return ""
    out = []
    for f in dataclasses.fields(pcls):
        d = _default(f)
        out.append(f"{f.name} (required)" if d is dataclasses.MISSING else f"{f.name}={d!r}")
    return ", ".join(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return repr(x)


def _field_records(pcls) -> List[Dict[str, Any]]:
    if pcls is None:
        return []
    out = []
    for f in dataclasses.fields(pcls):
        d = _default(f)
        rec: Dict[str, Any] = {"name": f.name, "required": d is dataclasses.MISSING}
        if d is not dataclasses.MISSING:
            rec["default"] = _jsonable(d)
        out.append(rec)
    return out


def collect(families: List[str], pattern: str = "*") -> Dict[str, List[Dict[str, Any]]]:
    """``{family: [{"name", "params": [{"name", "required", "default"?}]}]}``; the ``recipes``
    family lists ``{"name", "summary", "path"}``."""
    from ..recipes import shipped, summary

    out: Dict[str, List[Dict[str, Any]]] = {}
    for fam in families:
        if fam == RECIPES:
            out[fam] = [{"name": n, "summary": summary(p), "path": str(p)} for n, p in shipped().items()
                        if fnmatch.fnmatchcase(n, pattern)]
            continue
        reg = REGISTRIES[fam]
        out[fam] = [{"name": n, "params": _field_records(reg.params(n))} for n in reg.names(pattern)]
    return out


def run(args: argparse.Namespace) -> int:
    fams = [args.family] if args.family else sorted([*REGISTRIES, RECIPES])
    if args.json:
        print(json.dumps(collect(fams, args.pattern), indent=2))
        return 0
    for fam in fams:
        print(f"{fam}:")
        if fam == RECIPES:
            items = collect([fam], args.pattern)[fam]
            if not items:
                print("  (none)")
            width = max([len(r["name"]) for r in items] + [0])
            for r in items:
                print(f"  {r['name']:<{width}}  {r['summary']}".rstrip())
            continue
        reg = REGISTRIES[fam]
        names = reg.names(args.pattern)
        if not names:
            print("  (none)")
        for n in names:
            fields = _fields(reg.params(n))
            print(f"  {n}" + (f"  [{fields}]" if fields else ""))
    return 0
