"""Which metric tracks the truth: every distribution metric against what the world knows.

Two checks, written by `python -m calibration_world.checks` into a run's metrics/ folder:

metric_degradations.csv   the degradation ladder for every metric: the first half of the world's
    real images is the reference, the second half is degraded by each kind at each strength
    (strength 0: both clean), and every metric of METRICS is computed on its network (the world's
    own networks stand in for Inception, CLIP and DINOv2). Columns: metric, column, network,
    better (lower/higher), kind, strength, n_reference, n, value, monotonic. `monotonic` is
    "yes" when every step of the kind makes the metric no better and the last step makes it
    worse than the clean one (a bounded metric such as recall may sit at 0 for two steps).

metric_validity.csv   per metric column of the sweep's summary.csv: its Spearman correlation with
    the oracle's all-right accuracy across the sweep's configs, with a 95% bootstrap interval
    over configs (re-centred percentile, bench.metrics.resample.interval, clipped to [-1, 1]);
    `agreement` is the correlation signed so that +1 means "better by the metric is better by
    the oracle"; `ladder` is how many degradation kinds the metric orders monotonically. Rows are
    ranked by agreement (rank 1 tracks the truth best). Columns: rank, column, metric, network,
    better, n_configs, spearman, agreement, ci_low, ci_high, ladder, ladder_kinds, n_boot, seed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .defaults import CALIBRATION_WORLD

# the ladder's metrics: (kind, network) of bench.metrics.suite
METRICS = [("fid", CALIBRATION_WORLD), ("kid", CALIBRATION_WORLD), ("cmmd", f"{CALIBRATION_WORLD}-clip"),
           ("prdc", CALIBRATION_WORLD)]
LADDER_FIELDS = ["metric", "column", "network", "better", "kind", "strength", "n_reference", "n",
                 "value", "monotonic"]
VALIDITY_FIELDS = ["rank", "column", "metric", "network", "better", "n_configs", "spearman",
                   "agreement", "ci_low", "ci_high", "ladder", "ladder_kinds", "n_boot", "seed"]
# the paper's columns of summary.csv (FID on the run's FID network, CLIP score)
PAPER_COLUMNS = {"fid": ("fid", "lower"), "fid_inf": ("fid", "lower"), "kid": ("kid", "lower"),
                 "clip_score": ("clip_score", "higher")}


def _spec_columns(kind: str, network: str) -> list[tuple[str, str, str]]:
    """[(column, quantity, better)] of a metric: the paper's FID keeps `fid`, others are suffixed."""
    from bench.metrics.suite import KINDS, MetricSpec

    spec = MetricSpec(kind, network)
    k = KINDS[kind]
    out = []
    for q in k.quantities:
        if q not in k.lower_is_better:
            continue  # kid_std: not a score
        out.append((spec.column(q), q, "lower" if k.lower_is_better[q] else "higher"))
    return out


def _worse(a: float, b: float, better: str) -> bool:
    """b is worse than a."""
    return b > a if better == "lower" else b < a


def _monotonic(values: list[float], better: str) -> bool:
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return False
    steps_ok = all(not _worse(b, a, better) for a, b in zip(values, values[1:]))  # never better
    return steps_ok and _worse(values[0], values[-1], better)


def metric_ladder(images: np.ndarray, *, metrics: Sequence[tuple[str, str]] = METRICS,
                  kinds: dict | None = None, seed: int = 0, batch_size: int = 64,
                  progress: bool = True, device: str = "cpu") -> list[dict]:
    """metric_degradations.csv rows (module doc) for uint8 (N, H, W, 3) real images, N >= 4
    (precision/recall/density/coverage need more than 5 images per half, else left empty)."""
    from tqdm.auto import tqdm

    from bench.metrics import networks
    from bench.metrics.suite import MetricSpec, spec_stats
    from bench.statistics import StatsOptions
    from coco.reference import ReferenceStats

    from .checks import KINDS, ChecksError, _features, degrade

    if len(images) < 4:
        raise ChecksError(f"the metric ladder needs at least 4 real images, got {len(images)}")
    kinds = kinds or KINDS
    half = len(images) // 2
    ref, test = images[:half], images[half:2 * half]
    options = StatsOptions(bootstrap=0, seed=seed, device=device)
    by_net: dict[str, list[str]] = {}
    for kind, net in metrics:
        by_net.setdefault(net, []).append(kind)
    steps = [(k, s) for k, strengths in kinds.items() for s in strengths]
    rows = []
    bar = tqdm(total=len(by_net) * (len(steps) + 1), desc="metric ladder", disable=not progress)
    for net_name, metric_kinds in by_net.items():
        net = networks.load(net_name, device=device)
        ref_feats = _features(net, ref, batch_size)
        reference = ReferenceStats.from_features(ref_feats)
        reference.features = ref_feats.astype(np.float32)
        bar.update(1)
        cache: dict = {}
        for kind, s in steps:
            feats = _features(net, degrade(test, kind, s, seed=seed), batch_size)
            for metric in metric_kinds:
                spec = MetricSpec(metric, net_name)
                values, _ = spec_stats(spec, feats, np.arange(len(feats)), reference,
                                       np.zeros((0, len(feats)), np.int64), options, cache)
                for column, _q, better in _spec_columns(metric, net_name):
                    rows.append({"metric": metric, "column": column, "network": net_name,
                                 "better": better, "kind": kind, "strength": s,
                                 "n_reference": half, "n": len(test), "value": values[column]})
            bar.update(1)
    bar.close()
    for column in dict.fromkeys(r["column"] for r in rows):
        for kind in kinds:
            mine = [r for r in rows if r["column"] == column and r["kind"] == kind]
            flag = "yes" if _monotonic([float(r["value"]) for r in mine], mine[0]["better"]) else "no"
            for r in mine:
                r["monotonic"] = flag
    return rows


def _summary_columns(run_metrics: Path) -> list[tuple[str, str, str, str, str]]:
    """[(column, metric, network, better, ladder column)] of the distribution metrics and CLIP
    score in a summary, from metrics/statistics.json's plan (the paper's `fid` on the FID network
    is `fid_<network>` in the ladder)."""
    from bench.metrics.networks import column_suffix

    stats_path = run_metrics / "statistics.json"
    record = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    plan = record.get("plan") or {}
    fid_net = plan.get("fid_network") or record.get("feature_name") or ""
    out = [(c, m, fid_net if m != "clip_score" else "", b,
             f"{m}_{column_suffix(fid_net)}" if m != "clip_score" and fid_net else "")
           for c, (m, b) in PAPER_COLUMNS.items()]
    for label in plan.get("extra", []):
        kind, network = label.split(":", 1)
        out += [(c, kind, network, b, c) for c, _q, b in _spec_columns(kind, network)]
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def metric_validity(summary: list[dict], oracle: list[dict], ladder: list[dict], columns,
                    *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """metric_validity.csv rows (module doc).

    Args:
        summary: summary.csv rows; oracle: oracle_summary.csv rows (skill all_right per config);
        ladder: metric_degradations.csv rows (may be empty); columns: `_summary_columns`
            (column, metric, network, better, its column in the ladder).
    """
    from bench.metrics.resample import interval

    accuracy = {r["config_key"]: float(r["accuracy"]) for r in oracle
                if r.get("skill") == "all_right" and r.get("accuracy") not in (None, "")}
    rng = np.random.default_rng([int(seed), 21])
    rows = []
    for column, metric, network, better, ladder_column in columns:
        pairs = [(float(r[column]), accuracy[r["config_key"]]) for r in summary
                 if r.get(column) not in (None, "") and r["config_key"] in accuracy
                 and math.isfinite(float(r[column]))]
        if not pairs:
            continue
        x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        sign = -1.0 if better == "lower" else 1.0
        rho = spearman(x, y)
        reps = []
        if math.isfinite(rho):
            for _ in range(n_boot):
                idx = rng.integers(0, len(x), len(x))
                reps.append(sign * spearman(x[idx], y[idx]))
        agree = sign * rho
        low, high = interval(agree, reps, low=-1.0, high=1.0) if reps else (math.nan, math.nan)
        kinds = {r["kind"]: r["monotonic"] for r in ladder if r["column"] == ladder_column}
        rows.append({"column": column, "metric": metric, "network": network, "better": better,
                     "n_configs": len(x), "spearman": rho, "agreement": agree, "ci_low": low,
                     "ci_high": high,
                     "ladder": f"{sum(v == 'yes' for v in kinds.values())}/{len(kinds)}" if kinds else "",
                     "ladder_kinds": ",".join(k for k, v in kinds.items() if v == "yes"),
                     "n_boot": n_boot, "seed": seed})
    rows.sort(key=lambda r: -r["agreement"] if math.isfinite(r["agreement"]) else math.inf)
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows
