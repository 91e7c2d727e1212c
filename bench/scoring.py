"""The metric stage of a run: per-image features and CLIP cosines, then the statistics.

Metrics are computed after generation and only from the files listed in samples.jsonl, so a
resumed run, an uninterrupted one and `--model images:DIR` over the same images give the same
numbers. For each config the FID network's features are stored in
metrics/features/<config_key>/<network>.npy (bench.feature_store) and the per-image cosines in
metrics/configs/<config_key>.csv; metrics/configs/<config_key>.json, written last, marks the
config done, so a crash in this stage resumes at the next config. Once every config is done,
rank 0 writes metrics/per_image.csv, and bench.statistics computes every number with its
interval from the stored files alone (summary.csv, comparisons.csv): the same code
`python -m bench.rescore` runs.

Under torchrun each config's images are split over the ranks; each rank stores the features of
its share and rank 0 merges them in row order; the per-image CLIP cosines are gathered to rank 0.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapters import load_rgb
from .feature_store import (RowWriter, clear_partial, features_dir, keys_sha256, merge_parts,
                            part_path)
from .runner import Dist, shard
from .runs import RunDir, atomic_write_json, atomic_write_text, csv_text, read_csv
from .sampling import SamplingConfig
from .statistics import REFERENCE_FILE, SUMMARY_FIELDS, StatsOptions, reference_path, summarize

PER_IMAGE_FIELDS = ["config_key", "prompt_id", "k", "clip_cosine"]
# Test hook: a process SIGKILLs itself after writing this many feature batches (a crash while
# features are being written).
KILL_IN_METRICS_ENV = "IMAGEN_BENCH_KILL_IN_METRICS_AFTER"
_batches_written = 0


def _maybe_kill() -> None:
    global _batches_written
    _batches_written += 1
    limit = os.environ.get(KILL_IN_METRICS_ENV, "").strip()
    if limit and _batches_written >= int(limit):
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Scorers:
    """What the metric stage needs: the FID network and its reference, a CLIP scorer, and the
    other metrics' networks and references (bench.metrics.suite)."""

    extractor: object | None           # FID feature network (bench.metrics.networks)
    clip: object                       # ClipScorer (bench.metrics.clip_score)
    reference: object | None = None    # coco.reference.ReferenceStats of the extractor's protocol
    options: StatsOptions = field(default_factory=StatsOptions)
    protocol: dict | None = None       # flat protocol fields added to every summary row
    plan: object | None = None         # bench.metrics.suite.MetricPlan (None: FID and CLIP only)
    networks: dict = field(default_factory=dict)    # {name: feature network}, FID's included
    references: dict = field(default_factory=dict)  # {name: ReferenceStats}

    @property
    def feature_name(self) -> str | None:
        """The stored features' file name: the network's `feature_name` (default inception)."""
        if self.extractor is None:
            return None
        return getattr(self.extractor, "feature_name", "inception")

    def all_networks(self) -> dict:
        """{stored file name: network} of every network whose features the run stores."""
        out = {self.feature_name: self.extractor} if self.extractor is not None else {}
        for name, net in self.networks.items():
            if net is not self.extractor:
                out[name] = net
        return out


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
    """Features and CLIP cosines of one config's images; rank 0 writes its files.

    Returns: the config's record (n_images, clip_truncated, seconds) on rank 0, else None.
    """
    key = config.config_key
    nets = scorers.all_networks()
    mine = shard(records, dist)
    folder = features_dir(run.metrics, key)
    if dist.rank == 0:
        clear_partial(folder)  # what a killed attempt at this config left
    dist.barrier()
    writers = {name: RowWriter(part_path(folder, name, dist.rank), len(mine), net.dims)
               for name, net in nets.items()}
    cosines = np.zeros(len(mine))
    truncated = 0
    for idx, images in _image_batches([run.root / r["path"] for r in mine], batch_size):
        for name, net in nets.items():
            writers[name].write(idx.start, net(images).float().cpu().numpy())
            _maybe_kill()
        cos, n_trunc = scorers.clip.cosines(images, [texts[mine[i]["prompt_id"]] for i in idx])
        cosines[idx.start:idx.stop] = np.asarray(cos, dtype=np.float64)
        truncated += int(n_trunc)
        if bar is not None:
            bar.update(len(idx) * dist.world_size)
    for writer in writers.values():
        writer.close()
    keys = [(r["prompt_id"], int(r["k"])) for r in mine]
    parts = dist.gather((keys, cosines.tolist(), truncated))
    dist.barrier()  # every rank's part is in place
    if dist.rank != 0:
        return None
    all_keys = [(r["prompt_id"], int(r["k"])) for r in records]
    for name, net in nets.items():
        merge_parts(folder, name, dist.world_size, len(records), net.dims,
                    {"rows": len(records), "dims": net.dims, "network": name,
                     "keys_sha256": keys_sha256(all_keys), "protocol": net.protocol})
    per_image = {}
    for keys, values, _ in parts:
        per_image.update(zip(keys, values))
    rows = [{"config_key": key, "prompt_id": p, "k": k, "clip_cosine": repr(float(per_image[(p, k)]))}
            for p, k in all_keys]
    record = {**config.to_dict(), "n_images": len(records),
              "clip_truncated": sum(p[2] for p in parts),
              "seconds": round(sum(float(r["seconds"]) for r in records), 3)}
    atomic_write_text(run.config_metrics / f"{key}.csv", csv_text(rows, PER_IMAGE_FIELDS))
    atomic_write_json(run.config_metrics / f"{key}.json", record)
    return record


def _store_reference(run: RunDir, reference, path=None) -> None:
    """metrics/reference.npz: the FID reference statistics (with root) the run is scored against
    (other networks: metrics/references/<network>.npz, with features where a metric needs them)."""
    path = path or run.metrics / REFERENCE_FILE
    if path.is_file():
        from coco.reference import ReferenceStats

        old = ReferenceStats.load(path)
        if old.protocol == reference.protocol and np.array_equal(old.mu, reference.mu) and \
                (old.features is not None or reference.features is None):
            return
    reference.with_root().save(path)


def score_run(run: RunDir, configs: Sequence[SamplingConfig], scorers: Scorers, *, batch_size: int,
              dist: Dist = Dist(), progress: bool = True) -> list[dict] | None:
    """Extract every config not already done, then write per_image.csv and the statistics.

    Args:
        run: a run directory whose generation stage is complete (samples.jsonl).
        configs: the grid, in summary order.
        scorers: the FID network (with its reference statistics) and CLIP scorer.
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
    if dist.rank == 0 and scorers.extractor is not None:
        _store_reference(run, scorers.reference)
    if dist.rank == 0:
        for name, ref in scorers.references.items():
            if scorers.plan is not None and any(s.network == name for s in scorers.plan.extra):
                _store_reference(run, ref, reference_path(run, name))
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
    return write_tables(run, configs, scorers.protocol or {}, scorers.options,
                        feature_name=scorers.feature_name, progress=progress, plan=scorers.plan)


def write_tables(run: RunDir, configs: Sequence[SamplingConfig], protocol: dict,
                 options: StatsOptions, *, feature_name: str | None,
                 progress: bool = True, plan=None) -> list[dict]:
    """metrics/per_image.csv from the per-config files, then the statistics (summary.csv last
    among the tables that mark the stage; bench.statistics)."""
    per_image = []
    for c in configs:
        per_image += read_csv(run.config_metrics / f"{c.config_key}.csv")
    atomic_write_text(run.per_image, csv_text(per_image, PER_IMAGE_FIELDS))
    return summarize(run, configs, protocol, options, feature_name=feature_name,
                     progress=progress, plan=plan)


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
