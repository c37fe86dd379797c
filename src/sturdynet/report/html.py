"""Write a report :class:`~sturdynet.report.model.Document` as one self-contained HTML page.

Styles are inline, plots are embedded as ``data:image/png;base64`` URIs, and the only links
are in-page anchors: the file can be mailed or archived on its own.

Layout: the results table (``Table.cls == "main"``) fits the page at 1280 px for the
shipped threat recipe (headers wrap, each column's setting on its own line, method
parameters on a detail line); a wider one scrolls inside its own box with the variant
column sticky, never the page. Print: A4 landscape pages, the table unclipped.
"""
from __future__ import annotations

import base64
import struct
from html import escape
from pathlib import Path
from typing import List, Optional, Tuple

from .model import Bullets, Code, Column, Document, Figure, Heading, Para, Table, Text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
 background:#fafbfc;line-height:1.45}
main{max-width:1360px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:0 0 .4em}h2{margin-top:1.8em;border-bottom:1px solid #d8dde6;padding-bottom:.2em}
h3{margin-top:1.4em}
nav{font-size:.92em;margin-bottom:1em}nav a{margin-right:1em;color:#2456a6;text-decoration:none}
.wrap{overflow-x:auto;margin:.6em 0;max-width:100%}
table{border-collapse:collapse;font-size:.9em;background:#fff}
th,td{border:1px solid #d8dde6;padding:4px 9px;vertical-align:top}
th{background:#eef1f6;text-align:left;white-space:nowrap}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#f7f9fc}
td.ok{color:#1b7f3b;font-weight:600}td.failed{color:#fff;background:#c62828 !important;font-weight:600}
td.pending{color:#8a6d00;font-weight:600}
td.masked{background:#fff4e5 !important}
span.mark{color:#c62828;font-weight:700;margin-left:.2em}
.detail{display:block;font-size:.8em;font-weight:400;color:#4a5468;white-space:normal}
table.main{font-size:.86em}
table.main th{white-space:normal;vertical-align:bottom;min-width:3.6em}
table.main th,table.main td{padding:4px 6px}
table.main td.method{min-width:10em;max-width:17em;white-space:normal}
table.main th:first-child,table.main td:first-child{position:sticky;left:0;z-index:1;background:#fff;
 box-shadow:1px 0 0 #d8dde6}
table.main th:first-child{background:#eef1f6}
table.main td:first-child{white-space:nowrap}
p.note{font-size:.85em;color:#4a5468;margin:.25em 0}
.danger{background:#fdecea;border-left:5px solid #c62828;padding:8px 12px;margin:.6em 0}
li.danger{list-style-position:inside}
span.danger{color:#fff;background:#c62828;border-radius:3px;padding:1px 6px;font-weight:700;font-size:.85em}
code{background:#eef1f6;border-radius:3px;padding:0 3px;font-size:.92em}
pre{background:#f1f3f7;border:1px solid #d8dde6;padding:10px;overflow-x:auto;font-size:.85em;white-space:pre-wrap;
 overflow-wrap:anywhere}
figure{margin:1em 0;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #e2e6ee;background:#fff}
figcaption{font-size:.85em;color:#4a5468}
ul{padding-left:1.3em}
td,li,p{overflow-wrap:anywhere}
@page{size:A4 landscape;margin:10mm}
@media print{
 body{background:#fff;font-size:10pt}
 main{max-width:none;padding:0}
 nav{display:none}
 .wrap{overflow:visible}
 table{font-size:8pt;page-break-inside:auto}
 table.main{font-size:7.5pt}
 tr,figure{break-inside:avoid}
 th,td,table.main th,table.main td{padding:2px 4px}
 table.main th:first-child,table.main td:first-child{position:static;box-shadow:none}
 thead{display:table-header-group}
 figure{max-width:48%}
 h2,h3{break-after:avoid}
 pre{white-space:pre-wrap}
}
"""


def _inline(t: Text) -> str:
    text = escape(t.text)
    if t.style == "code":
        return f"<code>{text}</code>"
    if t.style == "strong":
        return f"<strong>{text}</strong>"
    if t.style == "danger":
        return f'<span class="danger">&#9888; {text}</span>'
    return text


def _parts(p: Para) -> str:
    return "".join(_inline(t) for t in p.parts)


def _cls(name: str) -> str:
    return f' class="{escape(name)}"' if name else ""


def _th(c: Column, main: bool) -> str:
    setting = f'<span class="detail">{escape(c.setting)}</span>' if c.setting else ""
    cls = "r" if c.align == "right" and not main else ""  # main table: headers wrap, values stay right
    style = ' style="text-align:right"' if c.align == "right" and main else ""
    return f"<th{_cls(cls)}{style}>{escape(c.title)}{setting}</th>"


def _table(t: Table) -> List[str]:
    main = t.cls == "main"
    out = [f'<div class="wrap{" main" if main else ""}"><table{_cls(t.cls)}>', "<thead><tr>"]
    out += [_th(c, main) for c in t.columns]
    out += ["</tr></thead>", "<tbody>"]
    for row in t.rows:
        cells = []
        for col, c in zip(t.columns, row):
            cls = " ".join(x for x in ("r" if col.align == "right" else "", c.cls) if x)
            text = f"<strong>{escape(c.text)}</strong>" if c.strong else escape(c.text)
            if c.mark:
                text += f'<span class="mark" title="gradient masking suspected">{escape(c.mark)}</span>'
            if c.detail:
                text += f'<span class="detail">{escape(c.detail)}</span>'
            cells.append(f"<td{_cls(cls)}>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody></table></div>"]
    out += [f'<p class="note">{_parts(p)}</p>' for p in t.footnotes]
    return out


def png_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) in pixels from a PNG's IHDR chunk (None if it is not a PNG)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def _figure(f: Figure, run_dir: Path) -> List[str]:
    raw = (run_dir / f.path).read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    size = png_size(raw)
    # plots are drawn at 2x: shown at half their pixel size, sharp on high-density screens and in print
    dims = f' width="{size[0] // 2}" height="{size[1] // 2}"' if size else ""
    cap = escape(f.title) + (f" &mdash; {escape(f.caption)}" if f.caption else "")
    return [f'<figure><img alt="{escape(f.title)}"{dims} src="data:image/png;base64,{data}">'
            f"<figcaption>{cap}</figcaption></figure>"]


def render_html(doc: Document, run_dir: Path) -> str:
    """The document as a self-contained HTML page; figures are read from ``run_dir`` and embedded."""
    run_dir = Path(run_dir)
    nav = [f'<a href="#{escape(b.anchor)}">{escape(b.text)}</a>'
           for b in doc.blocks if isinstance(b, Heading) and b.level == 2]
    body: List[str] = [f"<h1>{escape(doc.title)}</h1>", f"<nav>{''.join(nav)}</nav>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            body.append(f'<h{b.level} id="{escape(b.anchor)}">{escape(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            body.append(f"<p{_cls(b.cls)}>{_parts(b)}</p>")
        elif isinstance(b, Table):
            body += _table(b)
        elif isinstance(b, Bullets):
            body += ["<ul>"] + [f"<li{_cls(p.cls)}>{_parts(p)}</li>" for p in b.items] + ["</ul>"]
        elif isinstance(b, Figure):
            body += _figure(b, run_dir)
        elif isinstance(b, Code):
            lang = f' class="language-{escape(b.lang)}"' if b.lang else ""
            body.append(f"<pre><code{lang}>{escape(b.text)}</code></pre>")
        else:  # pragma: no cover - the model has no other blocks
            raise TypeError(f"unknown block {type(b).__name__}")
    head = ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(doc.title)}</title>", f"<style>{CSS}</style>", "</head>"]
    return "\n".join(head + ["<body><main>"] + body + ["</main></body>", "</html>"]) + "\n"
