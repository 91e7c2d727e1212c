"""Read one run directory (DESIGN.md "Run directory") and check what the report relies on.

Every problem is a ReportInputError whose message names the file (and line) and what to do.
Missing optional files (metrics not computed yet, no categories.csv) are not errors: the
sections that need them are left out.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import ReportInputError

SUMMARY_REQUIRED = ("config_key", "guidance", "thresholding", "n_images", "clip_score")
# summary.csv columns holding measured values; the other fid_* / clip_* columns are protocol
# fields. Runs made before the intervals existed lack the *_ci_* and fid_inf* columns.
SUMMARY_VALUES = ("fid", "fid_ci_low", "fid_ci_high", "fid_inf", "fid_inf_slope", "fid_inf_ci_low",
                  "fid_inf_ci_high", "clip_score", "clip_score_ci_low", "clip_score_ci_high",
                  "clip_score_std", "clip_truncated")
SUMMARY_NUMBERS = ("n_images", "n_prompts", "kid", "kid_std", "bootstrap_samples", "seconds",
                   *(k for k in SUMMARY_VALUES if k != "clip_truncated"))  # a flag: as written
COMPARISON_REQUIRED = ("config_key", "reference_key", "delta_clip")
COMPARISON_NUMBERS = ("n_prompts", "n_images", "delta_fid", "delta_fid_ci_low", "delta_fid_ci_high",
                      "delta_fid_p", "delta_clip", "delta_clip_ci_low", "delta_clip_ci_high",
                      "delta_clip_p", "bootstrap_samples")
CATEGORY_REQUIRED = ("config_key", "category", "n_prompts", "n_images", "clip_score", "ci_low",
                     "ci_high")
CATEGORY_NUMBERS = ("n_prompts", "n_images", "clip_score", "ci_low", "ci_high")
PER_IMAGE_REQUIRED = ("config_key", "prompt_id", "k", "clip_cosine")
PROMPT_REQUIRED = ("prompt_id", "text")
SAMPLE_REQUIRED = ("config_key", "prompt_id", "k", "path")


def read_table(path: Path, required: tuple[str, ...], numbers: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a CSV file, checked: the header has `required`, every row has every field, and
    the `numbers` columns parse as floats (an empty cell is allowed: a metric not computed)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise ReportInputError(f"{path}: missing column(s) {', '.join(missing)} in the "
                                       f"header; regenerate the file with the benchmark command")
            rows = []
            for row in reader:
                line = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    got = len([v for v in row.values() if v is not None]) + len(row.get(None, []))
                    raise ReportInputError(f"{path}, line {line}: expected {len(header)} fields, "
                                           f"got {got - (1 if None in row else 0)}")
                for c in numbers:
                    if c in row and row[c] != "" and not _is_float(row[c]):
                        raise ReportInputError(f"{path}, line {line}: column {c} is "
                                               f"{row[c]!r}, not a number")
                rows.append(row)
    except csv.Error as e:
        raise ReportInputError(f"{path}: not a readable CSV file ({e})") from None
    except UnicodeDecodeError:
        raise ReportInputError(f"{path}: not a text (UTF-8) CSV file") from None
    return rows


def is_protocol_column(key: str) -> bool:
    """A summary.csv column recording how a metric was measured (fid_resize, clip_model, ...)."""
    return key.startswith(("fid_", "clip_")) and key not in SUMMARY_VALUES


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def number(value) -> float:
    """A CSV cell as a float (NaN for an empty cell)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_jsonl_checked(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Records of a JSONL file; a malformed line other than a torn last one is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):
                continue  # a torn last line (a crash mid-append); the runner redoes that image
            raise ReportInputError(f"{path}, line {i}: not JSON ({e.msg})") from None
        if not isinstance(record, dict) or any(k not in record for k in required):
            raise ReportInputError(f"{path}, line {i}: expected an object with "
                                   f"{', '.join(required)}")
        out.append(record)
    return out


@dataclass
class RunData:
    """What the report reads from one run directory."""

    root: Path
    run: dict                                      # run.json
    prompts: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    categories: list[dict] = field(default_factory=list)
    per_image: list[dict] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)  # metrics/comparisons.csv, if any
    _images: dict | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def spec(self) -> dict:
        return self.run.get("spec", {})

    @property
    def benchmark(self) -> str:
        return str(self.spec.get("benchmark", "unknown"))

    @property
    def model_id(self) -> str:
        return str(self.spec.get("model", {}).get("model_id", "unknown model"))

    @property
    def grid(self) -> list[dict]:
        return list(self.spec.get("grid", []))

    @property
    def has_fid(self) -> bool:
        return any(math.isfinite(number(r.get("fid"))) for r in self.summary)

    def image_of(self, config_key: str, prompt_id: str, k: int = 0) -> Path | None:
        """The file of a recorded image, or None when it is not recorded or not on disk."""
        if self._images is None:
            self._images = {(s["config_key"], s["prompt_id"], int(s["k"])): s["path"]
                            for s in self.samples}
        rel = self._images.get((config_key, prompt_id, k))
        path = self.root / rel if rel else None
        return path if path is not None and path.is_file() else None


def load_run(root: str | Path) -> RunData:
    """Read a run directory; raise ReportInputError naming the file when it is not one."""
    root = Path(root)
    if not root.is_dir():
        raise ReportInputError(f"{root}: not a run directory (no such folder); pass the --out "
                               "folder of bench.coco_fid or bench.drawbench")
    run_json = root / "run.json"
    if not run_json.is_file():
        raise ReportInputError(f"{run_json} is missing: {root} is not a run directory made by "
                               "bench.coco_fid or bench.drawbench")
    try:
        run = json.loads(run_json.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ReportInputError(f"{run_json}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(run, dict) or not isinstance(run.get("spec"), dict):
        raise ReportInputError(f"{run_json}: no 'spec' object; not a run.json of this suite")
    data = RunData(root=root, run=run)
    metrics = root / "metrics"
    files = [("prompts", root / "prompts.jsonl", lambda p: read_jsonl_checked(p, PROMPT_REQUIRED)),
             ("samples", root / "samples.jsonl", lambda p: read_jsonl_checked(p, SAMPLE_REQUIRED)),
             ("summary", metrics / "summary.csv",
              lambda p: read_table(p, SUMMARY_REQUIRED, SUMMARY_NUMBERS)),
             ("categories", metrics / "categories.csv",
              lambda p: read_table(p, CATEGORY_REQUIRED, CATEGORY_NUMBERS)),
             ("per_image", metrics / "per_image.csv",
              lambda p: read_table(p, PER_IMAGE_REQUIRED, ("k", "clip_cosine"))),
             ("comparisons", metrics / "comparisons.csv",
              lambda p: read_table(p, COMPARISON_REQUIRED, COMPARISON_NUMBERS))]
    for attr, path, reader in files:
        if path.is_file():
            setattr(data, attr, reader(path))
    return data


@dataclass(frozen=True)
class MetricColumn:
    """A measured metric of summary.csv: its column, display name, direction, interval."""

    key: str
    name: str          # 'FID', 'CMMD (calibration-world-clip)'
    lower: bool        # lower is better
    has_ci: bool       # <key>_ci_low / _ci_high columns with values

    @property
    def label(self) -> str:
        return f"{self.name} {'↓' if self.lower else '↑'}"


PAPER_METRICS = {"fid": "FID", "fid_inf": "FID∞", "kid": "KID", "clip_score": "CLIP score"}
QUANTITY_NAMES = {"fid": "FD", "cmmd": "CMMD", "kid": "KID"}


def metric_columns(rows: list[dict]) -> list[MetricColumn]:
    """The metric columns of summary rows that hold a value: the paper's (FID, FID∞, KID, CLIP
    score) first, then every other metric with an interval (`cmmd_clip`, `fid_dinov2`,
    `precision_dinov2`, ...) whose direction the metric registry knows, in file order."""
    from bench.plots import lower_is_better

    if not rows:
        return []
    header = list(rows[0])

    def filled(k: str) -> bool:
        return any(math.isfinite(number(r.get(k))) for r in rows)

    def ci(k: str) -> bool:
        return filled(f"{k}_ci_low") and filled(f"{k}_ci_high")

    out = [MetricColumn(k, name, bool(lower_is_better(k)), ci(k))
           for k, name in PAPER_METRICS.items() if k in header and filled(k)]
    for k in header:
        if k in PAPER_METRICS or f"{k}_ci_low" not in header or not filled(k):
            continue
        lower = lower_is_better(k)
        if lower is None:
            continue
        quantity, _, network = k.partition("_")
        name = QUANTITY_NAMES.get(quantity, quantity)
        out.append(MetricColumn(k, f"{name} ({network.replace('_', '-')})" if network else name,
                                lower, ci(k)))
    return out
