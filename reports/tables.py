"""Tables of the report: raw values (written as CSV next to the HTML) and their display text.

A table keeps the numbers as read from the run files; formatting happens only for display,
so the CSV a reader opens holds the same values the benchmark wrote.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .rundata import number


@dataclass(frozen=True)
class Thumb:
    """An embedded image: `src` is a data URI, `path` where the image lies (CSV shows the path)."""

    src: str
    path: str
    alt: str = ""

    def __str__(self) -> str:
        return self.path


@dataclass
class Column:
    key: str
    label: str                                  # header text, with the unit
    fmt: Callable[[object], str] | None = None  # raw value -> display text
    numeric: bool = False
    cell: Callable[[dict], str] | None = None   # display text from the whole row (e.g. with CI)
    cell_class: Callable[[dict], str] | None = None  # css class of one cell (e.g. 'ns')


@dataclass
class Table:
    """Rows of raw values; `name` is the CSV file stem, `row_class` marks rows (best, warn)."""

    name: str
    title: str
    columns: list[Column]
    rows: list[dict]
    note: str = ""
    row_class: Callable[[dict], str] | None = None
    extra_csv: list[str] = field(default_factory=list)  # raw columns only in the CSV

    def display(self) -> list[dict]:
        """Per row: {'cls': css class, 'cells': [(text | Thumb, css class)]} for the template."""
        out = []
        for row in self.rows:
            cells = []
            for c in self.columns:
                value = row.get(c.key, "")
                css = " ".join(x for x in ("num" if c.numeric else "",
                                           c.cell_class(row) if c.cell_class else "") if x)
                if c.cell is not None:
                    cells.append((c.cell(row), css))
                elif isinstance(value, Thumb) or value is None:
                    cells.append((value, ""))
                else:
                    cells.append(((c.fmt or text)(value), css))
            out.append({"cls": self.row_class(row) if self.row_class else "", "cells": cells})
        return out

    def write_csv(self, folder: Path) -> Path:
        path = folder / f"{self.name}.csv"
        keys = [c.key for c in self.columns] + self.extra_csv
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(keys)
            for row in self.rows:
                writer.writerow(["" if row.get(k) is None else str(row.get(k, "")) for k in keys])
        return path


def text(value) -> str:
    return "" if value is None else str(value)


def fixed(digits: int) -> Callable[[object], str]:
    """Formatter: a number with `digits` decimals; empty or NaN shows as an en dash."""
    def fmt(value) -> str:
        x = number(value)
        return "–" if not math.isfinite(x) else f"{x:.{digits}f}"
    return fmt


def signed(digits: int) -> Callable[[object], str]:
    def fmt(value) -> str:
        if isinstance(value, str) and not _numberish(value):
            return value  # a reason the difference is withheld
        x = number(value)
        return "–" if not math.isfinite(x) else f"{x:+.{digits}f}"
    return fmt


def _numberish(value: str) -> bool:
    return math.isfinite(number(value)) or value.strip().lower() in ("nan", "")


def with_ci(value, lo, hi, digits: int = 2) -> str:
    """'24.31 [23.90, 24.75]'."""
    f = fixed(digits)
    if not math.isfinite(number(lo)) or not math.isfinite(number(hi)):
        return f(value)
    return f"{f(value)} [{f(lo)}, {f(hi)}]"


def percent(value, lo=None, hi=None) -> str:
    """A proportion as '41.2% [37.0, 45.5]'."""
    x = number(value)
    if not math.isfinite(x):
        return "–"
    out = f"{100 * x:.1f}%"
    if lo is not None and math.isfinite(number(lo)) and math.isfinite(number(hi)):
        out += f" [{100 * number(lo):.1f}, {100 * number(hi):.1f}]"
    return out


def short_hash(value) -> str:
    s = text(value)
    return s[:12] + "…" if len(s) > 16 and all(ch in "0123456789abcdef" for ch in s) else s


def kv_table(name: str, title: str, items: list[tuple[str, object]], note: str = "") -> Table:
    """A two-column table of (field, value), e.g. provenance."""
    rows = [{"field": k, "value": "" if v is None else v} for k, v in items]
    return Table(name, title, [Column("field", "field"), Column("value", "value")], rows, note)
