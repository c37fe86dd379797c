"""A tiny document model: the report is built once as blocks, then written as Markdown or HTML.

Both writers walk the same :class:`Document`, so content and numbers cannot drift apart
between ``report.md`` and ``report.html``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union


@dataclass(frozen=True)
class Text:
    """An inline run of text. ``style``: ``""``, ``"code"``, ``"strong"`` or ``"danger"``."""

    text: str
    style: str = ""


@dataclass(frozen=True)
class Para:
    """A paragraph. ``cls``: ``""``, ``"note"`` (small print) or ``"danger"`` (a call-out)."""

    parts: Tuple[Text, ...]
    cls: str = ""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str


@dataclass(frozen=True)
class Column:
    title: str
    align: str = "left"  # "left" or "right"


@dataclass(frozen=True)
class Cell:
    """A table cell. ``cls`` styles it in HTML (``"failed"``, ``"ok"``, ``"danger"``...)."""

    text: str
    cls: str = ""
    strong: bool = False


@dataclass(frozen=True)
class Table:
    columns: Tuple[Column, ...]
    rows: Tuple[Tuple[Cell, ...], ...]
    footnotes: Tuple[Para, ...] = ()

    def column(self, title: str) -> Tuple[str, ...]:
        """The texts of one column (handy in tests and the CLI)."""
        i = [c.title for c in self.columns].index(title)
        return tuple(r[i].text for r in self.rows)


@dataclass(frozen=True)
class Bullets:
    items: Tuple[Para, ...]


@dataclass(frozen=True)
class Figure:
    """A plot written to ``path`` (relative to the run folder, POSIX separators)."""

    path: str
    title: str
    caption: str = ""


@dataclass(frozen=True)
class Code:
    text: str
    lang: str = ""


Block = Union[Heading, Para, Table, Bullets, Figure, Code]


@dataclass(frozen=True)
class Document:
    title: str
    blocks: Tuple[Block, ...]


def para(*parts: Union[str, Text], cls: str = "") -> Para:
    """Build a paragraph from plain strings and :class:`Text` runs."""
    return Para(tuple(p if isinstance(p, Text) else Text(p) for p in parts if p != ""), cls)
