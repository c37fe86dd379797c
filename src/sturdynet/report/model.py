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
    """A column. ``setting`` names what the values are measured at (``"eps=0.1, linf, 20 steps"``);
    HTML puts it on its own line under the title, Markdown appends it after ``@``."""

    title: str
    align: str = "left"  # "left" or "right"
    setting: str = ""

    @property
    def heading(self) -> str:
        """The title with its setting, as one line (Markdown, the CLI, tests)."""
        return f"{self.title} @ {self.setting}" if self.setting else self.title


@dataclass(frozen=True)
class Cell:
    """A table cell. ``cls`` styles it in HTML (``"failed"``, ``"ok"``, ``"masked"``...);
    ``detail`` is a second, smaller line (HTML) or a parenthesis (Markdown), e.g. a
    method's parameters; ``mark`` is a symbol appended to the value (``"⚠"`` for a value
    that gradient masking may inflate)."""

    text: str
    cls: str = ""
    strong: bool = False
    detail: str = ""
    mark: str = ""


@dataclass(frozen=True)
class Table:
    columns: Tuple[Column, ...]
    rows: Tuple[Tuple[Cell, ...], ...]
    footnotes: Tuple[Para, ...] = ()
    cls: str = ""  # "main": the results table (HTML lays it out to fit, with a sticky first column)

    def column(self, title: str) -> Tuple[str, ...]:
        """The texts of one column, by title or title with setting (handy in tests and the CLI)."""
        i = next(i for i, c in enumerate(self.columns) if title in (c.title, c.heading))
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
