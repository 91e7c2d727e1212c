"""Tables of the report: raw values (written as CSV next to the HTML) and their display text.

A table keeps the numbers as read from the run files; formatting happens only for display,
so the CSV a reader opens holds the same values the benchmark wrote.
"""
from __future__ import annotations

import csv
import math
import re
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
    key_col: bool = False  # config keys / system names: shown compact, break at separators


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
    css: str = ""       # extra class of the table (e.g. 'kv': long values break anywhere)

    def display(self) -> list[dict]:
        """Per row: {'cls': css class, 'key': the row's config key (data-key), 'cells':
        [(text | Thumb, css class, title)]} for the template; a cell's text may hold line
        breaks ('\\n'), and a key column shows the compact form with the full key as title."""
        out = []
        for row in self.rows:
            cells = []
            for c in self.columns:
                value = row.get(c.key, "")
                css = " ".join(x for x in ("num" if c.numeric else "", "key" if c.key_col else "",
                                           c.cell_class(row) if c.cell_class else "") if x)
                if c.cell is not None:
                    cells.append((c.cell(row), css, ""))
                elif isinstance(value, Thumb) or value is None:
                    cells.append((value, "", ""))
                elif c.key_col:
                    shown = (c.fmt or compact_key)(value)
                    cells.append((shown, css, text(value) if shown != text(value) else ""))
                else:
                    cells.append(((c.fmt or text)(value), css, ""))
            out.append({"cls": self.row_class(row) if self.row_class else "",
                        "key": text(row.get("config_key", "")), "cells": cells})
        return out

    def write_csv(self, folder: Path) -> Path:
        """The raw values as CSV; every cell a scalar (a dict or list here is a bug)."""
        path = folder / f"{self.name}.csv"
        keys = [c.key for c in self.columns] + self.extra_csv
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(keys)
            for row in self.rows:
                cells = [row.get(k, "") for k in keys]
                bad = [k for k, v in zip(keys, cells) if isinstance(v, (dict, list, tuple, set))]
                if bad:
                    raise TypeError(f"table {self.name}: column {bad[0]} holds a "
                                    f"{type(row[bad[0]]).__name__}, not a scalar")
                writer.writerow(["" if v is None else str(v) for v in cells])
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
    """A two-column table of (field, value), e.g. provenance; nested values become one row
    per leaf ('device cuda', 'device name'), so the CSV holds scalars only."""
    rows = [{"field": k, "value": "" if v is None else v} for k, v in flatten_items(items)]
    return Table(name, title, [Column("field", "field"), Column("value", "value")], rows, note,
                 css="kv")


def flatten_items(items, sep: str = " ") -> list[tuple[str, object]]:
    """[(name, value)] with dict values spread into (name + sep + key, leaf) and list values of
    scalars joined by ', ' (lists of dicts numbered)."""
    out: list[tuple[str, object]] = []
    for k, v in items:
        if isinstance(v, dict) and v:
            out += flatten_items([(f"{k}{sep}{kk}", vv) for kk, vv in v.items()], sep)
        elif isinstance(v, (list, tuple)) and any(isinstance(x, (dict, list, tuple)) for x in v):
            out += flatten_items([(f"{k}{sep}{i}", x) for i, x in enumerate(v)], sep)
        elif isinstance(v, (list, tuple)):
            out.append((k, ", ".join(text(x) for x in v)))
        else:
            out.append((k, "" if isinstance(v, dict) else v))
    return out


KEY = re.compile(r"^(?:(?P<run>[^:]+):)?w(?P<w>[^-]+)-(?P<mode>[a-z][a-z0-9.]*)-aug(?P<aug>[0-9.]+)"
                 r"-(?P<sampler>ddim|ddpm)(?P<steps>\d+)$")


def compact_key(value) -> str:
    """'w3-static-aug0-ddim12' -> 'w3 · static · 12 steps' (aug level and sampler only where not
    the defaults 0 and ddim; per-stage weights '1.35_8' as '1.35/8'; a 'run:' prefix kept).
    Anything that is not a config key is returned as it is."""
    s = text(value)
    m = KEY.match(s)
    if not m:
        return s
    parts = [f"w{m['w'].replace('_', '/')}", m["mode"], f"{m['steps']} steps"]
    if float(m["aug"]) != 0:
        parts.insert(2, f"aug {m['aug']}")
    if m["sampler"] != "ddim":
        parts.insert(-1, m["sampler"])
    return (f"{m['run']}: " if m["run"] else "") + " · ".join(parts)
