"""Prompt suites as versioned lists of records (STYLE §8): DrawBench, PartiPrompts, a user's file.

    DrawBench     the Imagen authors' sheet as CSV (columns Prompts, Category): 200 prompts in 11
                  categories (Saharia et al. 2022, §3 and App. C), read from a file or downloaded
                  once from the sheet's public CSV export into a cache folder.
    PartiPrompts  the Parti authors' TSV (Prompt, Category, Challenge, Note): 1,632 prompts in 12
                  categories (Yu et al. 2022). Quotes are literal text in that file (one prompt
                  begins with one), so it is read with quoting off.
    a user file   CSV, TSV or JSONL with a text column (text | prompt | prompts | caption), an
                  optional category and an optional id (prompt_id | id).

A suite's version is the sha256 of its file's bytes; runs record it with the source (path or
URL, download date). Prompt ids are stable: `drawbench-<category>-<NN>` (position inside the
category), `parti-<NNNN>` (data row), or the file's own ids (else `prompt-<NNNN>`).
Prompt texts are stripped of surrounding whitespace (10 PartiPrompts carry some); categories are
normalised ('Gary Marcus et al. ' -> 'Gary Marcus et al.') and the raw DrawBench label is kept.
Every malformed input stops with one SuiteFormatError naming the file and the line.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SUITE_FORMAT = 1  # version of these loaders' record layout (ids, fields)

# the public CSV export of the authors' sheet (linked as "DrawBench" from imagen.research.google)
DRAWBENCH_URL = ("https://docs.google.com/spreadsheets/d/"
                 "1y7nAbmR4FREi6npB1u-Bo3GFdwdOPYJc617rBOxIRHY/gviz/tq?tqx=out:csv&sheet=Sheet1")
PARTI_URL = "https://raw.githubusercontent.com/google-research/parti/main/PartiPrompts.tsv"

# Rows per (normalised) category of the authors' sheet; the sheet spells the Gary Marcus label
# "Gary Marcus et al. " with a trailing space.
DRAWBENCH_COUNTS = {"Colors": 25, "Conflicting": 10, "Counting": 19, "DALL-E": 20,
                    "Descriptions": 20, "Gary Marcus et al.": 10, "Misspellings": 10,
                    "Positional": 20, "Rare Words": 7, "Reddit": 38, "Text": 21}
PARTI_COUNTS = {"Abstract": 51, "Animals": 314, "Artifacts": 287, "Arts": 66,
                "Food & Beverage": 74, "Illustrations": 124, "Indoor Scenes": 40,
                "Outdoor Scenes": 131, "People": 177, "Produce & Plants": 50, "Vehicles": 104,
                "World Knowledge": 214}
DRAWBENCH_HEADER = ("Prompts", "Category")
PARTI_HEADER = ("Prompt", "Category", "Challenge", "Note")
TEXT_COLUMNS = ("text", "prompt", "prompts", "caption")
ID_COLUMNS = ("prompt_id", "id")


class SuiteFormatError(ValueError):
    """A prompt file that cannot be used; the message names the file, the line and what to do."""


class SuiteNotAvailableError(SuiteFormatError):
    """A named suite has no local copy and cannot be downloaded (offline)."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a suite (a line of a run's prompts.jsonl)."""

    prompt_id: str                              # stable id, unique in the suite
    text: str                                   # the prompt given to the model
    category: str                               # normalised category ('' when the file has none)
    extra: dict = field(default_factory=dict)   # suite columns: category_raw, challenge, note, line

    def to_json(self) -> dict:
        return {"prompt_id": self.prompt_id, "text": self.text, "category": self.category,
                **self.extra}


@dataclass
class PromptSuite:
    """A loaded suite: its records and where they came from."""

    name: str              # drawbench | parti | file
    records: list          # [PromptRecord] in file order
    sha256: str            # of the file's bytes: the suite version
    source: dict           # path, and url + downloaded date for a downloaded copy

    @property
    def version(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"

    def categories(self) -> dict[str, int]:
        """Records per category, in order of first appearance."""
        out: dict[str, int] = {}
        for r in self.records:
            out[r.category] = out.get(r.category, 0) + 1
        return out

    def describe(self) -> dict:
        """JSON-ready provenance for run.json."""
        return {"suite": self.name, "version": self.version, "format": SUITE_FORMAT,
                "sha256": self.sha256, "n": len(self.records), "categories": self.categories(),
                **self.source}


def normalize_category(raw: str) -> str:
    """'Gary Marcus et al. ' -> 'Gary Marcus et al.' (whitespace stripped and collapsed)."""
    return " ".join(raw.split())


def slug(text: str) -> str:
    """'Gary Marcus et al.' -> 'gary-marcus-et-al' (path- and id-safe)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "none"


# ---------------------------------------------------------------------------------------------
# reading files with line numbers


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a BOM is dropped); a bad byte names its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SuiteFormatError(f"{path}, line {line}: not UTF-8 (byte 0x{data[e.start]:02x}); "
                               "save the file as UTF-8") from None


def _rows(path: Path, text: str, delimiter: str, quoting: int):
    """(line number, fields) of every non-blank row; the header is the first."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=True)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise SuiteFormatError(f"{path}, line {line}: {e}") from None
        if any(cell.strip() for cell in row):
            yield line, row


def _table(path: Path, text: str, delimiter: str, quoting: int, required: tuple[str, ...]):
    """(header, [(line, {column: value})]) with every `required` column present."""
    rows = _rows(path, text, delimiter, quoting)
    try:
        _, header = next(rows)
    except StopIteration:
        raise SuiteFormatError(f"{path}, line 1: the file is empty; expected a header with "
                               f"{', '.join(required)}") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise SuiteFormatError(f"{path}, line 1: missing column {missing[0]!r} (header: "
                               f"{', '.join(header)}); expected columns {', '.join(required)}")
    out = []
    for line, row in rows:
        if len(row) != len(header):
            raise SuiteFormatError(f"{path}, line {line}: {len(row)} fields, the header has "
                                   f"{len(header)}" + ("; quote fields that contain the "
                                                       "delimiter" if delimiter == "," else ""))
        out.append((line, dict(zip(header, row))))
    return header, out


def _text(path: Path, line: int, value, column: str) -> str:
    text = str(value if value is not None else "").strip()
    if not text:
        raise SuiteFormatError(f"{path}, line {line}: empty prompt in column {column!r}; remove "
                               "the row or fill it in")
    return text


def _check_unique(path: Path, records: list[tuple[int, PromptRecord]]) -> list[PromptRecord]:
    seen: dict[str, int] = {}
    for line, r in records:
        if r.prompt_id in seen:
            raise SuiteFormatError(f"{path}, line {line}: duplicate id {r.prompt_id!r} (first on "
                                   f"line {seen[r.prompt_id]}); every prompt needs a unique id")
        seen[r.prompt_id] = line
    return [r for _, r in records]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# the suites


def parse_drawbench(path: Path, data: bytes, *, verify: bool = True) -> list[PromptRecord]:
    """The authors' sheet as CSV: ids `drawbench-<category>-<NN>`, raw category kept."""
    _, rows = _table(path, _decode(path, data), ",", csv.QUOTE_MINIMAL, DRAWBENCH_HEADER)
    position: dict[str, int] = {}
    records = []
    for line, row in rows:
        text = _text(path, line, row["Prompts"], "Prompts")
        raw = row["Category"]
        category = normalize_category(raw)
        if not category:
            raise SuiteFormatError(f"{path}, line {line}: empty category")
        position[category] = position.get(category, 0) + 1
        records.append((line, PromptRecord(f"drawbench-{slug(category)}-{position[category]:02d}",
                                           text, category, {"category_raw": raw, "line": line})))
    records = _check_unique(path, records)
    if verify:
        _verify(path, records, DRAWBENCH_COUNTS, "DrawBench")
    return records


def parse_parti(path: Path, data: bytes, *, verify: bool = True) -> list[PromptRecord]:
    """PartiPrompts TSV, quoting off: ids `parti-<NNNN>` (data row), challenge and note kept."""
    _, rows = _table(path, _decode(path, data), "\t", csv.QUOTE_NONE, PARTI_HEADER)
    records = []
    for i, (line, row) in enumerate(rows, start=1):
        text = _text(path, line, row["Prompt"], "Prompt")
        category = normalize_category(row["Category"])
        records.append((line, PromptRecord(
            f"parti-{i:04d}", text, category,
            {"challenge": normalize_category(row["Challenge"]), "note": row["Note"].strip(),
             "line": line})))
    records = _check_unique(path, records)
    if verify:
        _verify(path, records, PARTI_COUNTS, "PartiPrompts")
    return records


def _verify(path: Path, records: list[PromptRecord], expected: dict[str, int], name: str) -> None:
    """The published counts per category, exactly."""
    got: dict[str, int] = {}
    for r in records:
        got[r.category] = got.get(r.category, 0) + 1
    if got == expected:
        return
    diffs = [f"{c}: {got.get(c, 0)} (expected {expected.get(c, 0)})"
             for c in sorted(set(got) | set(expected)) if got.get(c, 0) != expected.get(c, 0)]
    raise SuiteFormatError(
        f"{path}: not the published {name} ({len(records)} prompts in {len(got)} categories; "
        f"expected {sum(expected.values())} in {len(expected)}): {'; '.join(diffs[:5])}; pass the "
        "original file, or use it as your own prompt file (file:PATH) to skip this check")


def parse_prompt_file(path: Path, data: bytes) -> list[PromptRecord]:
    """A user's CSV / TSV / JSONL: a text column, optional category and id; other columns kept."""
    suffix = path.suffix.lower()
    text = _decode(path, data)
    if suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path, text)
    elif suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        quoting = csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL
        header, table = _table(path, text, delimiter, quoting, ())
        if not any(h.lower() in TEXT_COLUMNS for h in header):
            raise SuiteFormatError(f"{path}, line 1: missing column 'text' (header: "
                                   f"{', '.join(header)}); name the prompt column one of "
                                   f"{', '.join(TEXT_COLUMNS)}")
        rows = table
    else:
        raise SuiteFormatError(f"{path}: unknown prompt file type {suffix!r}; use .csv, .tsv or "
                               ".jsonl with a 'text' column")
    records = []
    for i, (line, row) in enumerate(rows, start=1):
        lower = {k.lower(): k for k in row}
        text_col = next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
        if text_col is None:
            raise SuiteFormatError(f"{path}, line {line}: no 'text' field; each record needs one "
                                   f"of {', '.join(TEXT_COLUMNS)}")
        id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
        prompt_id = str(row[id_col]).strip() if id_col else f"prompt-{i:04d}"
        if not prompt_id or "/" in prompt_id or prompt_id in (".", ".."):
            raise SuiteFormatError(f"{path}, line {line}: bad id {prompt_id!r}; ids name folders "
                                   "(non-empty, no '/')")
        cat_col = lower.get("category")
        category = normalize_category(str(row[cat_col] or "")) if cat_col else ""
        used = {text_col, id_col, cat_col}
        extra = {k: v for k, v in row.items() if k not in used and k not in
                 ("text", "category", "prompt_id")}
        extra["line"] = line
        records.append((line, PromptRecord(prompt_id, _text(path, line, row[text_col], text_col),
                                           category, extra)))
    if not records:
        raise SuiteFormatError(f"{path}: no prompts")
    return _check_unique(path, records)


def _jsonl_rows(path: Path, text: str):
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SuiteFormatError(f"{path}, line {line}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise SuiteFormatError(f"{path}, line {line}: expected a JSON object per line")
        rows.append((line, obj))
    return rows


# ---------------------------------------------------------------------------------------------
# local copies and the download cache


def default_cache_dir() -> Path:
    """$IMAGEN_BENCH_CACHE/prompts, else ~/.cache/imagen_bench/prompts."""
    root = os.environ.get("IMAGEN_BENCH_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "imagen_bench") / "prompts"


def fetch(name: str, url: str, filename: str, cache_dir: str | os.PathLike | None = None,
          *, download: bool = True) -> tuple[Path, dict]:
    """The cached copy of a suite's file, downloading it on first use.

    Returns: (path, source record {path, url, sha256, downloaded}).
    Raises: SuiteNotAvailableError when there is no copy and the download fails.
    """
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / filename
    meta_path = path.with_name(path.name + ".source.json")
    if path.is_file():
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        return path, {"path": str(path), "url": meta.get("url", url),
                      "downloaded": meta.get("downloaded")}
    hint = (f"download it by hand from {url} and pass --prompts {name}:PATH, or put it at {path}")
    if not download:
        raise SuiteNotAvailableError(f"{name}: no local copy at {path}; {hint}")
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise SuiteNotAvailableError(f"{name}: no local copy at {path} and the download from "
                                     f"{url} failed ({e}); {hint}") from None
    meta = {"url": url, "sha256": _sha256(data),
            "downloaded": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    return path, {"path": str(path), "url": url, "downloaded": meta["downloaded"]}


def _read(path: str | os.PathLike) -> tuple[Path, bytes]:
    path = Path(path)
    if not path.is_file():
        raise SuiteFormatError(f"prompt file {path} does not exist")
    return path, path.read_bytes()


def load_drawbench(path=None, *, cache_dir=None, download: bool = True,
                   verify: bool = True) -> PromptSuite:
    """DrawBench from `path`, else the cached (first use: downloaded) copy of the sheet."""
    source = {}
    if path is None:
        path, source = fetch("drawbench", DRAWBENCH_URL, "DrawBench.csv", cache_dir,
                             download=download)
    path, data = _read(path)
    return PromptSuite("drawbench", parse_drawbench(path, data, verify=verify), _sha256(data),
                       {"path": str(path), **source})


def load_parti(path=None, *, cache_dir=None, download: bool = True,
               verify: bool = True) -> PromptSuite:
    """PartiPrompts from `path`, else the cached (first use: downloaded) copy of the TSV."""
    source = {}
    if path is None:
        path, source = fetch("parti", PARTI_URL, "PartiPrompts.tsv", cache_dir, download=download)
    path, data = _read(path)
    return PromptSuite("parti", parse_parti(path, data, verify=verify), _sha256(data),
                       {"path": str(path), **source})


def load_prompt_file(path) -> PromptSuite:
    """A user's own CSV / TSV / JSONL prompt file."""
    path, data = _read(path)
    return PromptSuite("file", parse_prompt_file(path, data), _sha256(data), {"path": str(path)})


def _header(path: Path) -> list[str]:
    """The first line's fields (tab or comma separated), for recognising the named suites."""
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    fields = first.split("\t") if "\t" in first else first.split(",")
    return [h.strip().strip('"') for h in fields]  # a sheet export quotes its header


def load_suite(spec: str, *, cache_dir=None, download: bool = True) -> PromptSuite:
    """A --prompts value: drawbench | parti (cached or downloaded), drawbench:PATH, parti:PATH,
    file:PATH, or a PATH (a DrawBench or PartiPrompts file is recognised by its header)."""
    name, _, rest = spec.partition(":")
    if spec in ("drawbench", "parti", "partiprompts"):
        loader = load_drawbench if spec == "drawbench" else load_parti
        return loader(cache_dir=cache_dir, download=download)
    if name in ("drawbench", "parti", "file") and rest:
        return {"drawbench": load_drawbench, "parti": load_parti,
                "file": load_prompt_file}[name](rest)
    path, _ = _read(spec)
    header = _header(path)
    if tuple(header) == DRAWBENCH_HEADER:
        return load_drawbench(path)
    if tuple(header) == PARTI_HEADER:
        return load_parti(path)
    return load_prompt_file(path)


def select(records: list[PromptRecord], categories=None,
           limit_per_category: int | None = None) -> list[PromptRecord]:
    """The records of some categories (case-insensitive names), the first N of each.

    Raises: ValueError naming an unknown category and listing the suite's.
    """
    known = {}
    for r in records:
        known.setdefault(r.category.lower(), r.category)
    wanted = None
    if categories:
        wanted = set()
        for c in categories:
            key = normalize_category(c).lower()
            if key not in known:
                raise ValueError(f"unknown category {c!r}; this suite has: "
                                 f"{', '.join(known.values())}")
            wanted.add(known[key])
    taken: dict[str, int] = {}
    out = []
    for r in records:
        if wanted is not None and r.category not in wanted:
            continue
        if limit_per_category is not None and taken.get(r.category, 0) >= limit_per_category:
            continue
        taken[r.category] = taken.get(r.category, 0) + 1
        out.append(r)
    return out
