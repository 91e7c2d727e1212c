"""The statistics of a run, from its stored per-image results only (no network runs here).

Inputs: metrics/configs/<key>.{csv,json} (per-image CLIP cosines; counts and seconds),
metrics/features/<key>/<network>.npy (bench.feature_store) and metrics/reference.npz (the FID
reference statistics with their covariance root). Outputs, each written atomically:

    metrics/summary.csv       one row per config: every number with its 95% interval
    metrics/comparisons.csv   every config against its reference config, paired
    metrics/statistics.json   the options used, so `python -m bench.rescore` repeats them

The metric stage of `bench.coco_fid` / `bench.drawbench` ends with `summarize`, and so does
`bench.rescore`: a rescored run's summary is the run's own, byte for byte, for the same options.
The methods (bootstrap over prompts, re-centred percentile intervals, paired p-values, FID∞)
are in bench/metrics/resample.py.

summary.csv columns (beyond the config's): n_images, n_prompts; fid, fid_ci_low, fid_ci_high;
fid_inf, fid_inf_slope (FID = fid_inf + slope / N), fid_inf_ci_low, fid_inf_ci_high; kid,
kid_std (torchmetrics: mean and standard deviation over subsets; with --kid); clip_score,
clip_score_ci_low, clip_score_ci_high, clip_score_std (over images), clip_truncated;
bootstrap_samples, bootstrap_seed; seconds; then the protocol fields. An empty cell is a number
not computed (bootstrap off, FID∞ under 10 prompts, no FID network).

comparisons.csv columns: config_key, reference_key, the config's grid fields, n_prompts,
n_images, delta_fid (config - reference), delta_fid_ci_low, delta_fid_ci_high, delta_fid_p,
delta_clip, delta_clip_ci_low, delta_clip_ci_high, delta_clip_p, paired, bootstrap_samples,
bootstrap_seed.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .metrics.fid import kid_of
from .metrics.resample import (PromptIndex, PromptMeans, FrechetResampler, counts_of,
                               draw_prompts, fid_inf_sizes, fid_infinity, interval, line_fit,
                               p_value)
from .runs import RunDir, atomic_write_json, atomic_write_text, csv_text, read_csv

CONFIG_FIELDS = ["config_key", "guidance", "thresholding", "aug_level", "sampler", "steps"]
FID_FIELDS = ["fid", "fid_ci_low", "fid_ci_high", "fid_inf", "fid_inf_slope", "fid_inf_ci_low",
              "fid_inf_ci_high"]
KID_FIELDS = ["kid", "kid_std"]
CLIP_FIELDS = ["clip_score", "clip_score_ci_low", "clip_score_ci_high", "clip_score_std",
               "clip_truncated"]
SUMMARY_FIELDS = CONFIG_FIELDS + ["n_images", "n_prompts"] + FID_FIELDS + KID_FIELDS + \
    CLIP_FIELDS + ["bootstrap_samples", "bootstrap_seed", "seconds"]
COMPARISON_FIELDS = ["config_key", "reference_key", *CONFIG_FIELDS[1:], "n_prompts", "n_images",
                     "delta_fid", "delta_fid_ci_low", "delta_fid_ci_high", "delta_fid_p",
                     "delta_clip", "delta_clip_ci_low", "delta_clip_ci_high", "delta_clip_p",
                     "paired", "bootstrap_samples", "bootstrap_seed"]
REFERENCE_FILE = "reference.npz"
REFERENCES_DIR = "references"       # metrics/references/<network>.npz: the other metrics' references
STATISTICS_FILE = "statistics.json"


def reference_path(run: RunDir, network: str) -> Path:
    """metrics/references/<network>.npz (the reference of a metric on `network`)."""
    return run.metrics / REFERENCES_DIR / f"{network}.npz"


@dataclass(frozen=True)
class StatsOptions:
    """How the intervals are made (recorded in metrics/statistics.json)."""

    bootstrap: int = 200            # replicates; 0 turns intervals and comparisons' CIs off
    seed: int = 0                   # seed of the prompt draws (shared by every config)
    fid_inf_points: int = 15        # subset sizes of FID∞ (0: no FID∞)
    fid_inf_bootstrap: int = 50     # replicates of FID∞'s CI (at most `bootstrap`)
    reference_config: str | None = None  # compare every config with this one (default: w = 1)
    kid: bool = False               # KID (needs the reference features)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    device: str = "cpu"             # where the FID linear algebra runs
    prdc_samples: int = 10000       # precision/recall/density/coverage: images per side at most

    def record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict, **overrides) -> "StatsOptions":
        known = {k: v for k, v in {**record, **overrides}.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def number(x: float) -> str:
    """Full-precision text of a float; '' for NaN (a number not computed)."""
    x = float(x)
    return "" if math.isnan(x) else repr(x)


def _is_unit(config: dict) -> bool:
    return all(float(w) == 1.0 for w in str(config["guidance"]).split("/"))


def reference_keys(configs: Sequence[dict], chosen: str | None) -> dict[str, str | None]:
    """The reference config of every config: `chosen`, else w = 1 with the same thresholding,
    aug level, sampler and steps, else the first w = 1 config, else the grid's first config."""
    keys = [c["config_key"] for c in configs]
    if chosen is not None:
        if chosen not in keys:
            raise ValueError(f"--reference-config {chosen}: not a config of this run "
                             f"(configs: {', '.join(keys)})")
        return {k: chosen for k in keys}
    units = [c for c in configs if _is_unit(c)]
    fallback = units[0]["config_key"] if units else keys[0]
    out = {}
    for c in configs:
        same = [u["config_key"] for u in units
                if all(str(u[f]) == str(c[f]) for f in ("thresholding", "aug_level", "sampler", "steps"))]
        out[c["config_key"]] = same[0] if same else fallback
    return out


@dataclass
class ConfigStats:
    """One config's estimates and bootstrap replicates (replicates share the run's draws)."""

    row: dict
    clip: float
    clip_reps: np.ndarray
    fid: float = math.nan
    fid_reps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extra: dict = field(default_factory=dict)       # other metrics' columns
    extra_reps: dict = field(default_factory=dict)  # their replicates, by column


def _prompt_index(rows: list[dict], order: dict[str, int]) -> PromptIndex:
    return PromptIndex(np.array([order[r["prompt_id"]] for r in rows], dtype=np.int64), len(order))


def _fid_stats(features, groups: PromptIndex, reference, draws, counts, options: StatsOptions,
               bar) -> dict:
    """FID, its CI, FID∞ with slope and CI, and the FID replicates of one config."""
    res = FrechetResampler(features, reference, options.device)
    fid = res.fid()
    sizes = fid_inf_sizes(groups.n_prompts, options.fid_inf_points)
    n_inf = min(options.fid_inf_bootstrap, options.bootstrap) if sizes else 0
    fid_reps, inf_reps = np.full(len(draws), math.nan), []
    images = groups.images_in(sizes)
    for b in range(len(draws)):
        if b < n_inf:
            curve = res.nested(draws[b], sizes, groups)
            fid_reps[b] = curve[-1]                      # the last prefix is the whole replicate
            inf_reps.append(line_fit(images, curve)[0])
        else:
            fid_reps[b] = res.fid(groups.image_weights(counts[b]))
        bar.update(1)
    out = {"fid": fid, "fid_reps": fid_reps}
    out["fid_ci"] = interval(fid, fid_reps, low=0.0) if len(draws) else (math.nan, math.nan)
    if sizes:
        inf, slope, _ = fid_infinity(res, groups, sizes, options.seed)
        out["fid_inf"], out["fid_inf_slope"] = inf, slope
        out["fid_inf_ci"] = interval(inf, inf_reps) if inf_reps else (math.nan, math.nan)
    else:
        out["fid_inf"] = out["fid_inf_slope"] = math.nan
        out["fid_inf_ci"] = (math.nan, math.nan)
    return out


def load_reference(run: RunDir):
    """The FID reference statistics stored with the run (coco.reference.ReferenceStats)."""
    from coco.reference import ReferenceStats

    return ReferenceStats.load(run.metrics / REFERENCE_FILE).with_root()


@dataclass
class Draws:
    """The bootstrap draws of a prompt list, shared by every config resampled with them."""

    n_prompts: int
    seed: int
    draws: np.ndarray     # (B, P) prompt indices
    counts: np.ndarray    # (B, P) prompt counts

    @classmethod
    def make(cls, n_prompts: int, replicates: int, seed: int) -> "Draws":
        draws = draw_prompts(n_prompts, replicates, seed)
        counts = counts_of(draws, n_prompts) if replicates else np.zeros((0, n_prompts), np.int64)
        return cls(n_prompts, seed, draws, counts)


def config_stats(run: RunDir, config: dict, order: dict[str, int], draws: Draws, root,
                 reference, feature_name: str | None, options: StatsOptions, bar,
                 extra: Sequence = (), extra_refs: dict | None = None,
                 cache: dict | None = None) -> ConfigStats:
    """Estimates, intervals and replicates of one config from its stored files.

    Args:
        config: the config's grid record (SamplingConfig.to_dict()).
        order: prompt id -> index in the prompt list the draws index.
        root: the FID reference as a ReferenceRoot (None without FID).
        reference: the ReferenceStats (its features serve KID).
        extra: the other metrics (bench.metrics.suite.MetricSpec), with `extra_refs`
            {network: ReferenceStats} and a `cache` shared by the configs.
    """
    from .feature_store import load_features

    key = config["config_key"]
    base = json.loads((run.config_metrics / f"{key}.json").read_text())
    rows = read_csv(run.config_metrics / f"{key}.csv")
    groups = _prompt_index(rows, order)
    scores = 100.0 * np.maximum(np.array([float(r["clip_cosine"]) for r in rows]), 0.0)
    clip = PromptMeans.of(scores, groups.codes, draws.n_prompts)
    clip_reps = clip.replicates(draws.counts)
    row = {**config, "n_images": len(rows), "n_prompts": int(len(np.unique(groups.codes))),
           "clip_score": clip.estimate,
           "clip_score_std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
           "clip_truncated": base.get("clip_truncated", 0), "seconds": base.get("seconds", ""),
           "bootstrap_samples": options.bootstrap, "bootstrap_seed": options.seed}
    row["clip_score_ci_low"], row["clip_score_ci_high"] = \
        interval(clip.estimate, clip_reps, low=0.0, high=100.0)
    entry = ConfigStats(row, clip.estimate, clip_reps)
    if feature_name:
        features = load_features(run.metrics, key, feature_name,
                                 [(r["prompt_id"], int(r["k"])) for r in rows])
        fs = _fid_stats(features, groups, root, draws.draws, draws.counts, options, bar)
        row.update(fid=fs["fid"], fid_inf=fs["fid_inf"], fid_inf_slope=fs["fid_inf_slope"])
        row["fid_ci_low"], row["fid_ci_high"] = fs["fid_ci"]
        row["fid_inf_ci_low"], row["fid_inf_ci_high"] = fs["fid_inf_ci"]
        entry.fid, entry.fid_reps = fs["fid"], fs["fid_reps"]
        if options.kid:
            row["kid"], row["kid_std"] = kid_of(features, reference.features,
                                                subsets=options.kid_subsets,
                                                subset_size=options.kid_subset_size,
                                                seed=options.seed)
    from .metrics.suite import spec_stats

    keys = [(r["prompt_id"], int(r["k"])) for r in rows]
    for spec in extra:
        features = load_features(run.metrics, key, spec.network, keys)
        values, reps = spec_stats(spec, features, groups.codes, (extra_refs or {})[spec.network],
                                  draws.counts, options, cache if cache is not None else {})
        row.update(values)
        entry.extra.update(values)
        entry.extra_reps.update(reps)
    return entry


def reference_root(reference):
    """A ReferenceRoot of ReferenceStats (None for None)."""
    from .metrics.frechet import ReferenceRoot

    if reference is None:
        return None
    return ReferenceRoot.of(reference)


def load_extra_references(run: RunDir, extra: Sequence) -> dict:
    """{network: ReferenceStats} of the other metrics, stored with the run."""
    from coco.reference import ReferenceStats

    out = {}
    for spec in extra:
        if spec.network not in out:
            path = reference_path(run, spec.network)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the reference of {spec.label} is missing")
            out[spec.network] = ReferenceStats.load(path)
    return out


def summarize(run: RunDir, configs: Sequence, protocol: dict, options: StatsOptions, *,
              feature_name: str | None, progress: bool = True, plan=None) -> list[dict]:
    """Write summary.csv, comparisons.csv and statistics.json from the stored per-image results.

    Args:
        run: a run whose per-config metric files exist.
        configs: the grid (SamplingConfig), in summary order.
        protocol: flat protocol fields added to every summary row.
        options: bootstrap and comparison settings.
        feature_name: the stored FID features' network name; None: no FID (DrawBench).
        plan: the run's bench.metrics.suite.MetricPlan; its `extra` metrics add columns.
    Returns: the summary rows (numbers as text, as written).
    """
    prompts = [p["prompt_id"] for p in run.read_prompts()]
    order = {p: i for i, p in enumerate(prompts)}
    draws = Draws.make(len(prompts), options.bootstrap, options.seed)
    reference = load_reference(run) if feature_name else None
    root = reference_root(reference)
    extra = list(plan.extra) if plan is not None else []
    extra_refs = load_extra_references(run, extra)
    total = len(configs) * options.bootstrap if feature_name else 0
    bar = tqdm(total=total, desc="bootstrap", unit="rep", dynamic_ncols=True,
               disable=not progress or total == 0)
    cache: dict = {}
    stats = {c.config_key: config_stats(run, c.to_dict(), order, draws, root, reference,
                                        feature_name, options, bar, extra, extra_refs, cache)
             for c in configs}
    bar.close()
    rows = _write_summary(run, stats, protocol, feature_name is not None, options, extra)
    _write_comparisons(run, stats, options, extra)
    record = {"options": options.record(), "feature_name": feature_name,
              "protocol": protocol, "configs": [c.to_dict() for c in configs]}
    if plan is not None:
        record["plan"] = plan.record()
    atomic_write_json(run.metrics / STATISTICS_FILE, record)
    return rows


def _write_summary(run: RunDir, stats: dict, protocol: dict, fid: bool,
                   options: StatsOptions, extra: Sequence = ()) -> list[dict]:
    fields = [f for f in SUMMARY_FIELDS if (fid or (f not in FID_FIELDS and f not in KID_FIELDS))
              and (options.kid or f not in KID_FIELDS)]
    extra_fields = [c for spec in extra for c in spec.columns()]
    at = fields.index("clip_score") if "clip_score" in fields else len(fields)
    fields = fields[:at] + extra_fields + fields[at:] + list(protocol)
    floats = set(FID_FIELDS + KID_FIELDS + CLIP_FIELDS[:4] + extra_fields)
    rows = []
    for entry in stats.values():
        row = {**protocol, **entry.row}
        for f in floats & set(fields):
            row[f] = number(row.get(f, math.nan))
        rows.append(row)
    atomic_write_text(run.summary, csv_text(rows, fields))
    return rows


def paired_delta(est_a: float, reps_a: np.ndarray, est_b: float, reps_b: np.ndarray) -> dict:
    """Δ = a - b with its re-centred bootstrap CI and two-sided p (replicates paired by index)."""
    delta = est_a - est_b
    if len(reps_a) == 0:
        return {"delta": delta, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    reps = np.asarray(reps_a) - np.asarray(reps_b)
    low, high = interval(delta, reps)
    return {"delta": delta, "ci_low": low, "ci_high": high, "p": p_value(delta, reps)}


def comparison_row(a: ConfigStats, b: ConfigStats, *, fid: bool, paired: bool,
                   options: StatsOptions, extra_columns: Sequence[str] = ()) -> dict:
    """One comparisons.csv row: a against b (Δ = a - b)."""
    out = {"n_prompts": a.row["n_prompts"], "n_images": a.row["n_images"],
           "paired": str(paired).lower(), "bootstrap_samples": options.bootstrap,
           "bootstrap_seed": options.seed}
    deltas = {"clip": paired_delta(a.clip, a.clip_reps, b.clip, b.clip_reps)}
    if fid:
        deltas["fid"] = paired_delta(a.fid, a.fid_reps, b.fid, b.fid_reps)
    for col in extra_columns:  # the other metrics (bench.metrics.suite), paired the same way
        if col in a.extra_reps and col in b.extra_reps:
            deltas[col] = paired_delta(a.extra[col], a.extra_reps[col], b.extra[col],
                                       b.extra_reps[col])
    for name, d in deltas.items():
        out[f"delta_{name}"] = number(d["delta"])
        out[f"delta_{name}_ci_low"] = number(d["ci_low"])
        out[f"delta_{name}_ci_high"] = number(d["ci_high"])
        out[f"delta_{name}_p"] = number(d["p"])
    return out


def delta_fields(columns: Sequence[str]) -> list[str]:
    """comparisons.csv columns of other metrics' differences: delta_<col>, _ci_low, _ci_high, _p."""
    return [f"delta_{c}{s}" for c in columns for s in ("", "_ci_low", "_ci_high", "_p")]


def _write_comparisons(run: RunDir, stats: dict, options: StatsOptions, extra: Sequence = ()) -> Path:
    from .metrics.suite import KINDS

    configs = [e.row for e in stats.values()]
    refs = reference_keys(configs, options.reference_config)
    columns = [spec.column(q) for spec in extra for q in KINDS[spec.kind].quantities
               if KINDS[spec.kind].has_interval(q)]
    rows = []
    for key, entry in stats.items():
        ref = refs[key]
        if ref is None or ref == key:
            continue
        fid = math.isfinite(entry.fid) and math.isfinite(stats[ref].fid)
        rows.append({**{f: entry.row[f] for f in CONFIG_FIELDS}, "reference_key": ref,
                     **comparison_row(entry, stats[ref], fid=fid, paired=True, options=options,
                                      extra_columns=columns)})
    path = run.metrics / "comparisons.csv"
    fields = COMPARISON_FIELDS[:-3] + delta_fields(columns) + COMPARISON_FIELDS[-3:]
    atomic_write_text(path, csv_text(rows, fields))
    return path
