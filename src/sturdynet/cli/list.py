"""``sturdynet list [FAMILY]``: what can go into a recipe, with parameters and defaults."""
from __future__ import annotations

import argparse
import dataclasses

from ..core.registry import REGISTRIES


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list data sets, models, methods, checks, ... and their parameters")
    p.add_argument("family", nargs="?", choices=sorted(REGISTRIES), help="only this family")
    p.add_argument("pattern", nargs="?", default="*", help="glob on names, e.g. 'prune.*'")
    p.set_defaults(func=run)


def _fields(pcls) -> str:
    if pcls is None:
        return ""
    out = []
    for f in dataclasses.fields(pcls):
        if f.default is not dataclasses.MISSING:
            out.append(f"{f.name}={f.default!r}")
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out.append(f"{f.name}={f.default_factory()!r}")  # type: ignore[misc]
        else:
            out.append(f"{f.name} (required)")
    return ", ".join(out)


def run(args: argparse.Namespace) -> int:
    fams = [args.family] if args.family else sorted(REGISTRIES)
    for fam in fams:
        reg = REGISTRIES[fam]
        names = reg.names(args.pattern)
        print(f"{fam}:")
        if not names:
            print("  (none)")
        for n in names:
            fields = _fields(reg.params(n))
            print(f"  {n}" + (f"  [{fields}]" if fields else ""))
    return 0
