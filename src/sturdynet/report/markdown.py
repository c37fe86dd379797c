"""Write a report :class:`~sturdynet.report.model.Document` as GitHub-flavoured Markdown."""
from __future__ import annotations

import re
from typing import List

from .model import Bullets, Code, Document, Figure, Heading, Para, Table, Text

_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def escape(text: str) -> str:
    """Escape Markdown syntax characters (underscores stay: GFM ignores intraword ``_``)."""
    return _SPECIAL.sub(r"\\\1", text)


def _code_span(text: str) -> str:
    runs = [len(m) for m in re.findall(r"`+", text)]
    fence = "`" * (max(runs) + 1 if runs else 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def inline(t: Text, in_table: bool = False) -> str:
    text = t.text.replace("\r", "").replace("\n", " ")
    if t.style == "code":
        out = _code_span(text)
        return out.replace("|", "\\|") if in_table else out
    body = escape(text)
    if t.style == "strong":
        return f"**{body}**" if body.strip() else body
    if t.style == "danger":
        return f"**⚠ {body}**"
    return body


def _para(p: Para, in_table: bool = False, block: bool = True) -> str:
    text = "".join(inline(t, in_table) for t in p.parts)
    if p.cls == "danger" and block and not in_table:
        return f"> ⚠ {text}" if not text.startswith("**⚠") else f"> {text}"
    return text


def _table(t: Table) -> List[str]:
    def cell(text: str, strong: bool = False) -> str:
        return inline(Text(text, "strong" if strong else ""), in_table=True) or " "

    def value(c) -> str:
        text = cell(c.text, c.strong) + (f" {c.mark}" if c.mark else "")
        return text + (" " + cell(f"({c.detail})") if c.detail else "")

    lines = ["| " + " | ".join(cell(c.heading) for c in t.columns) + " |",
             "|" + "|".join("---:" if c.align == "right" else "---" for c in t.columns) + "|"]
    for row in t.rows:
        lines.append("| " + " | ".join(value(c) for c in row) + " |")
    if t.footnotes:
        lines.append("")
        lines += [_para(p) + "  " for p in t.footnotes]
        lines[-1] = lines[-1].rstrip()
    return lines


def _fence(text: str, lang: str) -> List[str]:
    runs = [len(m) for m in re.findall(r"^\s*(`{3,})", text, flags=re.M)]
    fence = "`" * max([3] + [r + 1 for r in runs])
    return [fence + lang, text, fence]


def render_markdown(doc: Document) -> str:
    """The document as Markdown text (figures link to their PNG files by relative path)."""
    out: List[str] = [f"# {escape(doc.title)}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {escape(b.text)}"]
        elif isinstance(b, Para):
            out += [_para(b)]
        elif isinstance(b, Table):
            out += _table(b)
        elif isinstance(b, Bullets):
            out += ["- " + _para(p, block=False) for p in b.items]
        elif isinstance(b, Figure):
            out += [f"![{escape(b.title)}]({b.path})"]
            if b.caption:
                out += ["", f"*{escape(b.caption)}*"]
        elif isinstance(b, Code):
            out += _fence(b.text, b.lang)
        else:  # pragma: no cover - the model has no other blocks
            raise TypeError(f"unknown block {type(b).__name__}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
