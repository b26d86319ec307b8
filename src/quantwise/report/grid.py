"""A table of cells (display text + exact value) that both the terminal and the HTML report
render, so the two always show the same numbers."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.table import Table as RichTable
from rich.text import Text

RICH_STYLES = {"good": "green", "bad": "red", "muted": "yellow", "": ""}


@dataclass(frozen=True)
class Cell:
    """Display text and, for numbers, the exact value behind it."""

    text: str
    value: float | None = None


def number(value: float | None, digits: int = 4) -> Cell:
    """A number cell: significant digits shown, the exact value kept; '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Cell("–")
    return Cell("inf" if math.isinf(value) else f"{value:.{digits}g}", value)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    row_styles: list[str] = field(default_factory=list)  # per row: "", "good", "bad", "muted"
    right_from: int = 0  # columns from this index on are right-aligned in the terminal

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"a table row has {len(row)} cells for {len(self.columns)} columns")
        if self.row_styles and len(self.row_styles) != len(self.rows):
            raise ValueError(f"{len(self.row_styles)} row styles for {len(self.rows)} rows")


def rich_table(table: Table, title: str) -> RichTable:
    """The terminal rendering; cell text is taken literally (no rich markup)."""
    out = RichTable(title=title, caption=table.caption or None)
    for i, name in enumerate(table.columns):
        out.add_column(name, justify="right" if table.right_from and i >= table.right_from else "left")
    for i, row in enumerate(table.rows):
        style = table.row_styles[i] if table.row_styles else ""
        out.add_row(*(Text(c.text) for c in row), style=RICH_STYLES[style])
    return out
