"""The metric stage of a run: FID and CLIP score of every config, from the image files.

Metrics are computed after generation and only from the files listed in samples.jsonl, so a
resumed run, an uninterrupted one and `--model images:DIR` over the same images give the same
numbers. Each config's results go to metrics/configs/<config_key>.{csv,json} (the .json last:
it marks the config done), so a crash in this stage resumes at the next config. Once every
config is done, rank 0 writes metrics/per_image.csv and metrics/summary.csv atomically; the
stage is complete only when summary.csv exists.

Under torchrun each config's images are split over the ranks; FID states are sums reduced
across ranks by torchmetrics, and the per-image CLIP cosines are gathered to rank 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapters import load_rgb
from .runner import Dist, shard
from .runs import RunDir, atomic_write_json, atomic_write_text, csv_text, read_csv
from .sampling import SamplingConfig

PER_IMAGE_FIELDS = ["config_key", "prompt_id", "k", "clip_cosine"]
SUMMARY_FIELDS = ["config_key", "guidance", "thresholding", "aug_level", "sampler", "steps",
                  "n_images", "fid", "kid", "kid_std", "clip_score", "clip_score_std",
                  "clip_truncated", "seconds"]


@dataclass
class Scorers:
    """What the metric stage needs: a FID metric factory and a CLIP scorer."""

    new_fid: Callable[[], object] | None  # () -> bench.metrics.fid.FIDMetric; None: no FID
    clip: object                       # ClipScorer (bench.metrics.clip_score)
    kid: bool = False                  # also report KID
    protocol: dict | None = None       # flat protocol fields added to every summary row


def _image_batches(paths: Sequence, batch_size: int):
    """uint8 (B, 3, H, W) tensors of consecutive same-size images, with their indices."""
    start = 0
    while start < len(paths):
        arrays = [load_rgb(p) for p in paths[start:start + batch_size]]
        # split at the first size change so every tensor stacks
        n = next((i for i, a in enumerate(arrays) if a.shape != arrays[0].shape), len(arrays))
        batch = torch.from_numpy(np.stack(arrays[:n])).permute(0, 3, 1, 2).contiguous()
        yield range(start, start + n), batch
        start += n


def clip_score_of(cosines: np.ndarray) -> tuple[float, float]:
    """(100 · mean(max(cos, 0)), its std over images) [Hessel et al. 2021 with w = 100]."""
    scaled = 100.0 * np.maximum(np.asarray(cosines, dtype=np.float64), 0.0)
    std = float(scaled.std(ddof=1)) if len(scaled) > 1 else 0.0
    return float(scaled.mean()), std


def score_config(run: RunDir, config: SamplingConfig, records: list[dict], texts: dict[str, str],
                 scorers: Scorers, *, batch_size: int, dist: Dist, bar=None) -> dict | None:
    """FID, KID and CLIP cosines of one config's images; rank 0 writes its partial files.

    Returns: the summary row on rank 0, None on the other ranks.
    """
    mine = shard(records, dist)
    fid = scorers.new_fid() if scorers.new_fid is not None else None
    cosines = np.zeros(len(mine))
    truncated = 0
    for idx, images in _image_batches([run.root / r["path"] for r in mine], batch_size):
        if fid is not None:
            fid.update(images)
        cos, n_trunc = scorers.clip.cosines(images, [texts[mine[i]["prompt_id"]] for i in idx])
        cosines[idx.start:idx.stop] = np.asarray(cos, dtype=np.float64)
        truncated += int(n_trunc)
        if bar is not None:
            bar.update(len(idx) * dist.world_size)
    # torchmetrics reduces the sums across ranks
    fid_value = float(fid.compute()) if fid is not None else ""
    kid = fid.compute_kid() if scorers.kid and fid is not None else None
    keys = [(r["prompt_id"], int(r["k"])) for r in mine]
    parts = dist.gather((keys, cosines.tolist(), truncated))
    if dist.rank != 0:
        return None
    per_image = {}
    for keys, values, _ in parts:
        per_image.update(zip(keys, values))
    rows = [{"config_key": config.config_key, "prompt_id": r["prompt_id"], "k": int(r["k"]),
             "clip_cosine": repr(float(per_image[(r["prompt_id"], int(r["k"]))]))} for r in records]
    score, std = clip_score_of([float(row["clip_cosine"]) for row in rows])
    summary = {**config.to_dict(), "n_images": len(records), "fid": fid_value,
               "kid": kid[0] if kid else "", "kid_std": kid[1] if kid else "",
               "clip_score": score, "clip_score_std": std,
               "clip_truncated": sum(p[2] for p in parts),
               "seconds": round(sum(float(r["seconds"]) for r in records), 3)}
    atomic_write_text(run.config_metrics / f"{config.config_key}.csv",
                      csv_text(rows, PER_IMAGE_FIELDS))
    atomic_write_json(run.config_metrics / f"{config.config_key}.json", summary)
    return summary


def score_run(run: RunDir, configs: Sequence[SamplingConfig], scorers: Scorers, *, batch_size: int,
              dist: Dist = Dist(), progress: bool = True) -> list[dict] | None:
    """Score every config not already scored, then write per_image.csv and summary.csv.

    Args:
        run: a run directory whose generation stage is complete (samples.jsonl).
        configs: the grid, in summary order.
        scorers: the FID factory and CLIP scorer.
        batch_size: images per feature-extractor call.
        dist: this process's rank; every rank must call this.
    Returns: the summary rows on rank 0, None elsewhere.
    """
    samples = run.read_samples()
    texts = {p["prompt_id"]: p["text"] for p in run.read_prompts()}
    by_config: dict[str, list[dict]] = {c.config_key: [] for c in configs}
    for record in samples.values():
        if record["config_key"] in by_config:
            by_config[record["config_key"]].append(record)
    order = {p: i for i, p in enumerate(texts)}
    for records in by_config.values():
        records.sort(key=lambda r: (order[r["prompt_id"]], int(r["k"])))
    # every rank decides from the same files, before rank 0 writes anything new
    todo = [c for c in configs if not (run.config_metrics / f"{c.config_key}.json").is_file()]
    dist.barrier()
    total = sum(len(by_config[c.config_key]) for c in todo)
    bar = tqdm(total=total, desc="metrics", unit="img", dynamic_ncols=True,
               disable=not progress or dist.rank != 0)
    for config in todo:
        score_config(run, config, by_config[config.config_key], texts, scorers,
                     batch_size=batch_size, dist=dist, bar=bar)
    bar.close()
    dist.barrier()
    if dist.rank != 0:
        return None
    return write_tables(run, configs, scorers.protocol or {}, kid=scorers.kid,
                        fid=scorers.new_fid is not None)


def write_tables(run: RunDir, configs: Sequence[SamplingConfig], protocol: dict, *,
                 kid: bool, fid: bool = True) -> list[dict]:
    """Assemble metrics/per_image.csv and metrics/summary.csv (last) from the per-config files
    (without the fid column when `fid` is False)."""
    rows, per_image = [], []
    for c in configs:
        summary = json.loads((run.config_metrics / f"{c.config_key}.json").read_text())
        rows.append({**protocol, **summary})
        per_image += read_csv(run.config_metrics / f"{c.config_key}.csv")
    fields = [f for f in SUMMARY_FIELDS if (kid or f not in ("kid", "kid_std"))
              and (fid or f != "fid")] + list(protocol)
    numbers = ("fid", "clip_score", "clip_score_std") if fid else ("clip_score", "clip_score_std")
    for row in rows:
        for f in numbers:
            row[f] = _fmt(row[f])
    atomic_write_text(run.per_image, csv_text(per_image, PER_IMAGE_FIELDS))
    atomic_write_text(run.summary, csv_text(rows, fields))
    return rows


def _fmt(x) -> str:
    """Full-precision text of a float ('nan' for NaN)."""
    x = float(x)
    return "nan" if math.isnan(x) else repr(x)


def flatten_protocol(prefix: str, protocol: dict) -> dict:
    """{'resize': 'x', ...} -> {'<prefix>_resize': 'x', ...}; nested values as JSON.

    A name that is also a metric column gets '_def' appended ('clip_score' -> 'clip_score_def').
    """
    out = {}
    for k, v in protocol.items():
        name = f"{prefix}_{k}"
        if name in SUMMARY_FIELDS or name in PER_IMAGE_FIELDS:
            name += "_def"
        scalar = isinstance(v, (str, int, float, bool)) or v is None
        out[name] = v if scalar else json.dumps(v, sort_keys=True)
    return out
