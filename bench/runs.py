"""The run directory: the files every stage reads and writes (DESIGN.md "Run directory").

    runs/<name>/
      run.json                   spec and provenance (written first, updated as stages finish)
      prompts.jsonl              prompt_id, text, category (+ suite-specific fields)
      images/<config_key>/<prompt_id>/<k>.png
      samples.jsonl              one line per finished image (merged log; see below)
      samples.rank<r>.jsonl      per-rank logs of a generation still in progress
      metrics/per_image.csv      config_key, prompt_id, k, clip_cosine
      metrics/summary.csv        one row per config
      metrics/configs/<key>.*    per-config partial results (the metric stage resumes from them)
      pareto.png

Sample logs: while generating, rank r appends one JSON line per image to its own
`samples.rank<r>.jsonl` (no locks, no interleaved writes), each line only after the image's
atomic rename. When every rank is done, rank 0 merges all logs into `samples.jsonl` (sorted,
deduplicated, written atomically) and removes the rank logs. A reader always takes the union of
`samples.jsonl` and any rank logs, so a rerun after a crash — with any number of ranks — skips
every recorded image. Every file is written atomically: a stage is complete only when its file
exists (STYLE §9).
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

RUN_FORMAT = "imagen_bench.run"
RUN_VERSION = 1
SAMPLE_FIELDS = ("config_key", "prompt_id", "k", "seed", "path", "sha256", "seconds")


LIBRARIES = ("torch", "torchvision", "numpy", "pillow", "transformers", "safetensors",
             "torchmetrics", "torch-fidelity", "open-clip-torch", "pycocotools", "scipy",
             "matplotlib", "imagen-bench")


def provenance(device, world_size: int = 1) -> dict:
    """run.json provenance of this invocation: library versions, git commit, device, host."""
    import importlib.metadata as md
    import platform
    import subprocess

    import torch

    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    git = {}
    repo = Path(__file__).resolve().parent.parent  # the source checkout, if this is one
    try:
        git["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                       text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        git["dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        git = {"commit": None}
    dev = {"device": str(device), "world_size": world_size, "host": platform.node(),
           "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        dev["gpu"] = torch.cuda.get_device_name(device)
    return {"versions": versions, "git": git, "device": dev}


class RunSpecError(ValueError):
    """An existing run directory was made with a different spec; the message says what differs."""


# ---------------------------------------------------------------------------------------------
# atomic writes


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file next to `path`, fsync, then os.replace it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def csv_text(rows: list[dict], fields: list[str]) -> str:
    """Rows as CSV text with a header; missing fields are empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def read_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSONL file; a torn last line (a crash mid-append) is skipped."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # only a torn write makes such a line; its image is redone
    return out


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line and flush it to disk; repairs a torn last line first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")  # end the torn line so this record stays parseable
        f.write((json.dumps(record) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# the directory


class RunDir:
    """Paths and readers/writers of one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.run_json = self.root / "run.json"
        self.prompts = self.root / "prompts.jsonl"
        self.images = self.root / "images"
        self.samples = self.root / "samples.jsonl"
        self.metrics = self.root / "metrics"
        self.per_image = self.metrics / "per_image.csv"
        self.summary = self.metrics / "summary.csv"
        self.config_metrics = self.metrics / "configs"
        self.pareto = self.root / "pareto.png"

    def image_path(self, config_key: str, prompt_id: str, k: int) -> Path:
        return self.images / config_key / prompt_id / f"{k}.png"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def rank_log(self, rank: int) -> Path:
        return self.root / f"samples.rank{rank}.jsonl"

    def rank_logs(self) -> list[Path]:
        return sorted(self.root.glob("samples.rank*.jsonl"))

    # prompts ----------------------------------------------------------------------------------

    def write_prompts(self, records: list[dict]) -> None:
        atomic_write_text(self.prompts, "".join(json.dumps(r) + "\n" for r in records))

    def read_prompts(self) -> list[dict]:
        return read_jsonl(self.prompts)

    # run.json ---------------------------------------------------------------------------------

    def read_run(self) -> dict | None:
        if not self.run_json.is_file():
            return None
        return json.loads(self.run_json.read_text())

    def check(self, spec: dict) -> dict:
        """Raise RunSpecError if an existing run.json has another spec (read-only, so every
        rank can call it). Returns: `spec` as JSON sees it (tuples become lists)."""
        spec = json.loads(json.dumps(spec))
        old = self.read_run()
        if old is not None:
            # new metric settings are fine once the old metrics are gone (the images stay valid)
            rescore = not self.metrics.exists()
            check_same_spec(self.run_json, old.get("spec", {}), spec,
                            ignore=("metrics",) if rescore else ())
        return spec

    def start(self, spec: dict, record: dict) -> dict:
        """Create or reopen the run: check `spec` against an existing run.json, then write it.

        Args:
            spec: what determines the results (model, prompts, grid, seeds, metric protocol);
                a rerun must have the same.
            record: the rest of the provenance (versions, device, argv, ...), replaced each run.
        Returns: the run.json contents written.
        Raises: RunSpecError naming the fields that differ.
        """
        spec = self.check(spec)
        old = self.read_run()
        # a stage stays marked complete only while its file exists (STYLE §9)
        files = {"generation": self.samples, "metrics": self.summary}
        stages = {k: v for k, v in (old or {}).get("stages", {}).items()
                  if k in files and files[k].is_file()}
        run = {"format": RUN_FORMAT, "version": RUN_VERSION, "spec": spec, **record,
               "stages": stages,
               "history": (old or {}).get("history", []) + [record.get("started")]}
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_json, run)
        return run

    def update_run(self, **fields) -> dict:
        run = self.read_run() or {}
        run.update(fields)
        atomic_write_json(self.run_json, run)
        return run

    def mark_stage(self, stage: str, info: dict) -> None:
        run = self.read_run() or {}
        run.setdefault("stages", {})[stage] = info
        atomic_write_json(self.run_json, run)

    # samples ----------------------------------------------------------------------------------

    def read_samples(self) -> dict[tuple[str, str, int], dict]:
        """Every recorded image {(config_key, prompt_id, k): record}, merged over all logs."""
        out: dict[tuple[str, str, int], dict] = {}
        for path in [self.samples] + self.rank_logs():
            if path.is_file():
                for r in read_jsonl(path):
                    if all(f in r for f in SAMPLE_FIELDS):
                        out[(r["config_key"], r["prompt_id"], int(r["k"]))] = r
        return out

    def finished(self) -> dict[tuple[str, str, int], dict]:
        """Recorded images whose files still exist (a deleted file is redone)."""
        return {key: r for key, r in self.read_samples().items()
                if (self.root / r["path"]).is_file()}

    def merge_samples(self, order: list[tuple[str, str, int]]) -> list[dict]:
        """Merge all logs into samples.jsonl in `order` (atomic) and remove the rank logs.

        Returns: the merged records.
        """
        done = self.read_samples()
        rank = {key: i for i, key in enumerate(order)}

        def position(r: dict) -> int:
            return rank.get((r["config_key"], r["prompt_id"], int(r["k"])), len(rank))

        records = sorted(done.values(), key=position)
        atomic_write_text(self.samples, "".join(json.dumps(r) + "\n" for r in records))
        for path in self.rank_logs():
            path.unlink(missing_ok=True)
        return records


def check_same_spec(where: Path, old: dict, new: dict, ignore: tuple[str, ...] = ()) -> None:
    """Raise RunSpecError listing the top-level spec fields whose values differ."""
    differ = [k for k in sorted(set(old) | set(new))
              if old.get(k) != new.get(k) and k not in ignore]
    if not differ:
        return
    parts = []
    for k in differ[:4]:
        a, b = json.dumps(old.get(k))[:80], json.dumps(new.get(k))[:80]
        parts.append(f"{k}: {a} (recorded) vs {b} (now)")
    hint = ("delete its metrics/ folder to rescore it with the new metric settings"
            if differ == ["metrics"] else "pass a new --out to start a fresh run")
    raise RunSpecError(f"{where} was made with a different spec ({'; '.join(parts)}); rerun with "
                       f"the same arguments to resume it, or {hint}")
