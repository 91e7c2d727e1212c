"""COCO 2014 captions and the caption sampling rule of the zero-shot FID benchmark.

Imagen evaluates on "30K prompts drawn randomly from the validation set" (arXiv 2205.11487 §3).
The rule here: N distinct val2014 images drawn with `random.Random(seed)` from the images sorted
by id, then one of each image's captions drawn with the same generator; the seed goes into the
run record. A user's own caption list (`read_caption_file`) replaces the rule.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

CAPTION_COLUMNS = ("caption", "prompt", "text")   # first match (case-insensitive) is the caption
ID_COLUMNS = ("prompt_id", "id")
REQUIRED = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "caption")}


class CocoFormatError(ValueError):
    """A malformed annotation or caption file; the message names the file and the key."""


@dataclass(frozen=True)
class CaptionRecord:
    """One image and all its captions."""

    image_id: int
    file_name: str
    captions: list[str]


@dataclass(frozen=True)
class Prompt:
    """One prompt of a benchmark run."""

    prompt_id: str                  # "coco-<image_id>" or from the caption file
    text: str
    image_id: int | None = None     # the COCO image whose caption this is; None for a file
    caption_index: int | None = None  # which of its captions (annotation-id order)


def clean_text(text: str) -> str:
    """Collapse whitespace (newlines, tabs, runs of spaces) and strip the ends."""
    return " ".join(text.split())


def annotation_path(coco_root: str | Path, split: str = "val2014") -> Path:
    """<coco_root>/annotations/captions_<split>.json, or `coco_root` itself when it is a file."""
    root = Path(coco_root)
    return root if root.is_file() else root / "annotations" / f"captions_{split}.json"


def _validate(data, path: Path) -> None:
    """Stop with a message naming the first missing key (pycocotools would skip or KeyError)."""
    if not isinstance(data, dict):
        raise CocoFormatError(f"{path}: expected a JSON object with 'images' and 'annotations', "
                              f"got {type(data).__name__}")
    for key, fields in REQUIRED.items():
        if key not in data:
            raise CocoFormatError(f"{path}: missing key '{key}' (not a COCO captions file?)")
        if not isinstance(data[key], list):
            raise CocoFormatError(f"{path}: '{key}' must be a list")
        for i, item in enumerate(data[key]):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise CocoFormatError(f"{path}: {key}[{i}] has no key '{missing[0]}'")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann["caption"], str):
            raise CocoFormatError(f"{path}: annotations[{i}]['caption'] is not a string")


def load_val_captions(coco_root: str | Path, split: str = "val2014") -> list[CaptionRecord]:
    """Images of the split with their captions, sorted by image id (pycocotools index).

    Images without a caption are left out; captions are whitespace-normalised, in annotation-id order.
    Raises:
        FileNotFoundError: no annotation file.
        CocoFormatError: invalid JSON or a missing key (named).
    """
    from pycocotools.coco import COCO

    path = annotation_path(coco_root, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such annotation file (expected <coco-root>/annotations/"
                                f"captions_{split}.json, from annotations_trainval2014.zip)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: "
                              f"{e.msg})") from None
    _validate(data, path)
    coco = COCO()  # empty, then index our validated data: pycocotools' own loadRes pattern
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # it prints progress lines
        coco.createIndex()
    records = []
    for image_id in sorted(coco.imgs):
        anns = sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"])
        captions = [clean_text(a["caption"]) for a in anns]
        captions = [c for c in captions if c]
        if captions:
            records.append(CaptionRecord(int(image_id), coco.imgs[image_id]["file_name"], captions))
    return records


def sample_captions(records: list[CaptionRecord], n: int, seed: int) -> list[Prompt]:
    """N distinct images drawn with `random.Random(seed)`, one random caption each.

    Deterministic given (records, n, seed), whatever the order of `records`.
    """
    if n < 1:
        raise ValueError(f"number of prompts must be positive, got {n}")
    pool = sorted(records, key=lambda r: r.image_id)
    if n > len(pool):
        raise ValueError(f"asked for {n} prompts but only {len(pool)} captioned images are available")
    rng = random.Random(seed)
    chosen = rng.sample(pool, n)
    prompts = []
    for rec in chosen:
        k = rng.randrange(len(rec.captions))
        prompts.append(Prompt(f"coco-{rec.image_id}", rec.captions[k], rec.image_id, k))
    return prompts


def read_caption_file(path: str | Path) -> list[Prompt]:
    """Prompts from a CSV/TSV (a caption, prompt or text column; optional prompt_id or id)
    or from plain text, one caption per line. Blank lines and surrounding whitespace are
    dropped; CRLF and quoted multi-line CSV fields are fine.

    Raises:
        FileNotFoundError: no such file.
        CocoFormatError: no caption column, a blank or repeated id, or no captions at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such caption file")
    text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM
    if path.suffix.lower() in (".csv", ".tsv"):
        prompts = _read_csv(text, path, "\t" if path.suffix.lower() == ".tsv" else ",")
    else:
        lines = [clean_text(line) for line in text.splitlines()]
        prompts = [Prompt(f"cap-{i:05d}", t) for i, t in enumerate(t for t in lines if t)]
    if not prompts:
        raise CocoFormatError(f"{path}: no captions")
    seen = set()
    for p in prompts:
        if p.prompt_id in seen:
            raise CocoFormatError(f"{path}: prompt id {p.prompt_id!r} appears twice")
        seen.add(p.prompt_id)
    return prompts


def _read_csv(text: str, path: Path, delimiter: str) -> list[Prompt]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    caption_col = next((columns[c] for c in CAPTION_COLUMNS if c in columns), None)
    if caption_col is None:
        raise CocoFormatError(f"{path}: no caption column; expected one of {', '.join(CAPTION_COLUMNS)}, "
                              f"found {', '.join(repr(c) for c in columns) or 'no header'}")
    id_col = next((columns[c] for c in ID_COLUMNS if c in columns), None)
    prompts = []
    for row in reader:
        caption = clean_text(row.get(caption_col) or "")
        if not caption:
            continue
        if id_col is None:
            prompt_id = f"cap-{len(prompts):05d}"
        else:
            prompt_id = (row.get(id_col) or "").strip()
            if not prompt_id:
                raise CocoFormatError(f"{path}, line {reader.line_num}: empty '{id_col}'")
        prompts.append(Prompt(prompt_id, caption))
    return prompts
