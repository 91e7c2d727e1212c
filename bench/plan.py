"""Sample-size planning from a pilot run: how many prompts resolve a difference of a given size.

    python -m bench.plan RUN [--delta-fid 1.0] [--delta-clip 0.5] [--power 0.8] [--alpha 0.05]

Input: the per-image results a finished metric stage stores (bench.statistics): the per-config
CLIP cosines (metrics/configs/<key>.csv), the FID network's features (metrics/features/), the
FID reference (metrics/reference.npz), metrics/statistics.json and the config pairs of
metrics/comparisons.csv. No network runs here.

Method, per config pair (a config against its reference config, paired as comparisons.csv pairs
them) and per metric (ΔFID when the run stored FID features, ΔCLIP always):

1. Subsampling curve (m-out-of-n bootstrap; Bickel, Götze & van Zwet 1997, Statistica Sinica
   7:1-31). At ~6 sizes m geometrically spaced from max(5, P/8) to the pilot's P prompts, B
   replicates each draw m prompts with replacement; a prompt's k images move together and both
   configs of a pair get the same draws (paired, as in bench/metrics/resample.py). The standard
   deviation of the replicates' Δ is the standard error of Δ measured on m prompts. Replicate b
   at size m is the first m draws of replicate b of the run's own bootstrap draws
   (`draw_prompts(P, B, seed)`; a prefix of a bootstrap sample is a bootstrap sample of its
   size), so the curve is smooth in m, FID replicates cost one nested pass each
   (`FrechetResampler.nested`), and at m = P with the run's bootstrap seed and B the replicates
   are those behind comparisons.csv.
2. Fit SE(m) = c / sqrt(m), the rate of a mean and of any smooth statistic of one (FID is one
   of the feature mean and covariance; delta method). Least squares on relative residuals
   (every size counts equally; absolute residuals would let the smallest m, with the largest
   SE, decide c). `fit_max_rel_residual` says how well 1/sqrt(m) holds on the pilot's range.
   FID's variance also has a term in 1/m² (from the covariance), so its SE falls a little
   faster than 1/sqrt(m) at small m and the fit over-estimates it near P: conservative there.
3. Prompts needed for power 1 - β at two-sided level α to detect a true difference δ (normal
   approximation of a paired test): n = ((z_{1-α/2} + z_{1-β}) · c / δ)², rounded up, in
   prompts of the pilot's images per prompt. `power_at_pilot` is the power the pilot's own P
   gives: Φ(δ√P/c - z_{1-α/2}) + Φ(-δ√P/c - z_{1-α/2}). In CI terms: the (1-α) CI width
   2·z_{1-α/2}·c/√n falls to 2·z_{1-α/2}·δ/(z_{1-α/2} + z_{1-β}) at n (the lines of plan.png).

The plan is about variance only. FID is biased upwards in 1/N (Chong & Forsyth 2020) and the
bias differs between configs, so Δ at n prompts differs from Δ at n = ∞ by a term in 1/n (see
summary.csv's fid_inf_slope); CLIP score is a mean and has no such bias.

A run with one config has no pair. Its plan is about precision instead (goal `precision`): the
metric's own FID and CLIP score, and the prompts for the (1-α) CI's half-width
z_{1-α/2}·c/√n to fall to δ; power does not apply (power_at_pilot is empty).

Outputs (RUN/plan/ unless --out; each written atomically):

    plan.csv        config_key, reference_key, metric (delta_fid | delta_clip | fid | clip_score),
                    goal (detect | precision), delta, estimate (the pilot's Δ or value),
                    n_pilot_prompts, images_per_prompt, se_at_pilot (measured at m = P), c,
                    fit_max_rel_residual, prompts_needed, power_at_pilot, power, alpha,
                    bootstrap_samples, bootstrap_seed
    plan_curve.csv  config_key, reference_key, metric, m, se, ci_width (2·z_{1-α/2}·se),
                    ci_width_percentile (re-centred percentile interval, bench.metrics.resample),
                    se_fit (c / sqrt(m)), n_replicates (finite ones)
    plan.png        CI width against prompts (log x): measured points, the fit extrapolated, and
                    a horizontal line at the width that resolves δ; one panel per metric
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from .cli import HelpFormatter
from .runs import RunDir, atomic_write_text, csv_text, read_csv

PLAN_FIELDS = ["config_key", "reference_key", "metric", "goal", "delta", "estimate",
               "n_pilot_prompts", "images_per_prompt", "se_at_pilot", "c",
               "fit_max_rel_residual", "prompts_needed", "power_at_pilot", "power", "alpha",
               "bootstrap_samples", "bootstrap_seed"]
CURVE_FIELDS = ["config_key", "reference_key", "metric", "m", "se", "ci_width",
                "ci_width_percentile", "se_fit", "n_replicates"]
METRIC_LABELS = {"delta_fid": "ΔFID", "delta_clip": "ΔCLIP score", "fid": "FID",
                 "clip_score": "CLIP score"}
MIN_SIZE = 5          # smallest subsample (prompts) when the pilot has more
NORMAL = NormalDist()

EPILOG = """examples:
  # every config against its reference config: prompts for ΔFID = 1 and ΔCLIP = 0.5 at 80% power
  python -m bench.plan runs/coco_pilot

  # one config, a finer ΔCLIP, 90% power, more replicates; results elsewhere
  python -m bench.plan runs/drawbench --config w5-dyn0.995-aug0-ddim64 --delta-clip 0.25 \\
      --power 0.9 --bootstrap 400 --out runs/drawbench/plan_fine

  # the FID linear algebra on a GPU (30K images of 2048-d features)
  python -m bench.plan runs/coco_fid30k --device cuda
"""


class PlanError(Exception):
    """A user error: one message, exit code 2."""


@dataclass(frozen=True)
class PlanOptions:
    """What the plan is for and how its curve is measured."""

    delta_fid: float = 1.0     # ΔFID (or, one config: FID CI half-width) to resolve
    delta_clip: float = 0.5    # ΔCLIP score (100 · cos scale) to resolve
    power: float = 0.8         # 1 - β
    alpha: float = 0.05        # two-sided level
    bootstrap: int = 100       # replicates per subsample size
    seed: int = 0              # seed of the prompt draws (as the run's --bootstrap-seed)
    points: int = 6            # subsample sizes

    def check(self) -> None:
        """Raise PlanError naming the first bad flag."""
        for name in ("delta_fid", "delta_clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise PlanError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        for name in ("power", "alpha"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise PlanError(f"--{name} must be in (0, 1), got {value}")
        if self.bootstrap < 2:
            raise PlanError(f"--bootstrap must be at least 2, got {self.bootstrap}")
        if self.points < 1:
            raise PlanError(f"--points must be at least 1, got {self.points}")

    def delta(self, metric: str) -> float:
        return self.delta_fid if "fid" in metric else self.delta_clip


# ------------------------------------------------------------------------------ the formulas

def subsample_sizes(n_prompts: int, points: int = 6) -> list[int]:
    """Distinct sizes (prompts), geometrically spaced from max(5, P/8) to P, ascending."""
    low = min(max(MIN_SIZE, n_prompts / 8), n_prompts)
    sizes = np.unique(np.round(np.geomspace(low, n_prompts, max(points, 1))).astype(int))
    return [int(s) for s in sizes if s >= 1]


def fit_inverse_sqrt(sizes: Sequence[int], ses: Sequence[float]) -> tuple[float, float]:
    """(c, max relative residual) of SE(m) = c / sqrt(m), least squares on relative residuals.

    Each point gives its own c_i = se_i · sqrt(m_i); minimising Σ (1 - c / c_i)² gives
    c = Σ 1/c_i / Σ 1/c_i². Points with a zero or non-finite SE are left out (c = 0 when every
    SE is 0: the two sides never differ).
    """
    m = np.asarray(sizes, dtype=np.float64)
    se = np.asarray(ses, dtype=np.float64)
    ok = np.isfinite(se)
    if not ok.any():
        return math.nan, math.nan
    own = se[ok] * np.sqrt(m[ok])
    pos = own > 0
    if not pos.any():
        return 0.0, 0.0
    c = float((1.0 / own[pos]).sum() / (1.0 / own[pos] ** 2).sum())
    residual = float(np.max(np.abs(c / own[pos] - 1.0)))
    return c, residual


def _z(p: float) -> float:
    return NORMAL.inv_cdf(p)


def prompts_needed(c: float, delta: float, power: float, alpha: float) -> float:
    """Prompts for power `power` at two-sided level `alpha` to detect Δ = delta:
    ⌈((z_{1-α/2} + z_power) · c / δ)²⌉, at least 1; NaN when c is."""
    if not math.isfinite(c):
        return math.nan
    return float(max(1, math.ceil(((_z(1 - alpha / 2) + _z(power)) * c / delta) ** 2)))


def prompts_for_half_width(c: float, half_width: float, alpha: float) -> float:
    """Prompts for the (1-α) CI's half-width z_{1-α/2} · c / sqrt(n) to be at most half_width."""
    if not math.isfinite(c):
        return math.nan
    return float(max(1, math.ceil((_z(1 - alpha / 2) * c / half_width) ** 2)))


def power_at(n: float, c: float, delta: float, alpha: float) -> float:
    """Power of the two-sided level-α test of Δ = 0 on n prompts when the true Δ is delta."""
    if not (math.isfinite(c) and n > 0):
        return math.nan
    if c == 0:
        return 1.0
    z, shift = _z(1 - alpha / 2), delta * math.sqrt(n) / c
    return NORMAL.cdf(shift - z) + NORMAL.cdf(-shift - z)


def resolving_width(delta: float, power: float, alpha: float, goal: str = "detect") -> float:
    """The (1-α) CI width at which `prompts_needed` (detect) or the half-width target
    (precision) is met: 2·z_{1-α/2}·δ/(z_{1-α/2} + z_power), or 2δ."""
    if goal == "precision":
        return 2.0 * delta
    z = _z(1 - alpha / 2)
    return 2.0 * z * delta / (z + _z(power))


# ------------------------------------------------------------------------------ the pilot run

@dataclass
class Pilot:
    """What a plan reads from a run: prompts, configs, pairs, per-image results."""

    run: RunDir
    prompt_ids: list[str]
    config_keys: list[str]
    pairs: list[tuple[str, str]]          # (config_key, reference_key) of comparisons.csv
    feature_name: str | None              # None: CLIP only (DrawBench)
    rows: dict[str, list[dict]]           # config_key -> its metrics/configs/<key>.csv rows

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)


def _stale(run: RunDir, missing: Path) -> PlanError:
    return PlanError(f"{missing} not found: {run.root} has no stored per-image results (a run "
                     "scored before they were stored, or its metric stage did not finish); rerun "
                     "the benchmark command that made it (it resumes) or "
                     f"`python -m bench.rescore {run.root}`, then plan again")


def open_pilot(root: str | Path, config: str | None = None) -> Pilot:
    """Check every file the plan needs (before any work) and read the small ones.

    Raises: PlanError naming the missing file or the bad --config.
    """
    from .feature_store import features_dir

    run = RunDir(root)
    if not run.root.is_dir():
        raise PlanError(f"{run.root}: no such run directory")
    stats_path = run.metrics / "statistics.json"
    for path in (run.prompts, run.summary, stats_path, run.metrics / "comparisons.csv"):
        if not path.is_file():
            raise _stale(run, path)
    stats = json.loads(stats_path.read_text())
    keys = [c["config_key"] for c in stats.get("configs", [])]
    feature_name = stats.get("feature_name")
    needed = [run.config_metrics / f"{k}.csv" for k in keys]
    if feature_name:
        needed.append(run.metrics / "reference.npz")
        needed += [features_dir(run.metrics, k) / f"{feature_name}.{ext}"
                   for k in keys for ext in ("npy", "json")]
    for path in needed:
        if not path.is_file():
            raise _stale(run, path)
    pairs = [(r["config_key"], r["reference_key"])
             for r in read_csv(run.metrics / "comparisons.csv")]
    if config is not None:
        if config not in keys:
            raise PlanError(f"--config {config}: not a config of {run.root} "
                            f"(configs: {', '.join(keys)})")
        mine = [p for p in pairs if p[0] == config]
        if pairs and not mine:
            raise PlanError(f"--config {config} is the reference config of {run.root}'s "
                            "comparisons; pass one of the configs compared with it: "
                            f"{', '.join(p[0] for p in pairs)}")
        pairs = mine
        if not pairs:  # a one-config run
            keys = [config]
    prompt_ids = [p["prompt_id"] for p in run.read_prompts()]
    if len(prompt_ids) < 2:
        raise PlanError(f"{run.prompts}: {len(prompt_ids)} prompt(s); a plan needs a pilot "
                        "with at least 2")
    used = sorted({k for p in pairs for k in p}, key=keys.index) if pairs else keys
    rows = {k: read_csv(run.config_metrics / f"{k}.csv") for k in used}
    return Pilot(run, prompt_ids, keys, pairs, feature_name, rows)


# --------------------------------------------------------------------------------- replicates

@dataclass
class Replicates:
    """One config's estimate of a metric and its replicates at every subsample size."""

    estimate: float
    reps: np.ndarray      # (B, S): replicate b at size sizes[s]


def config_replicates(pilot: Pilot, key: str, draws: np.ndarray, sizes: Sequence[int], *,
                      reference=None, device: str = "cpu", bar=None) -> dict[str, Replicates]:
    """{'clip_score': ..., 'fid': ...} of one config: replicate b at size m uses draws[b, :m].

    `reference` (bench.metrics.frechet.ReferenceRoot) is needed when the pilot has FID features.
    """
    from .feature_store import load_features
    from .metrics.resample import FrechetResampler, PromptIndex, PromptMeans, counts_of

    order = {p: i for i, p in enumerate(pilot.prompt_ids)}
    rows = pilot.rows[key]
    try:
        groups = PromptIndex(np.array([order[r["prompt_id"]] for r in rows], dtype=np.int64),
                             pilot.n_prompts)
    except KeyError as e:
        raise PlanError(f"{pilot.run.config_metrics / (key + '.csv')}: prompt {e} is not in "
                        f"{pilot.run.prompts}") from None
    scores = 100.0 * np.maximum(np.array([float(r["clip_cosine"]) for r in rows]), 0.0)
    clip = PromptMeans.of(scores, groups.codes, pilot.n_prompts)
    out = {"clip_score": Replicates(clip.estimate, np.stack(
        [clip.replicates(counts_of(draws[:, :m], pilot.n_prompts)) for m in sizes], axis=1))}
    if not pilot.feature_name:
        if bar is not None:
            bar.update(len(draws))
        return out
    try:
        features = load_features(pilot.run.metrics, key, pilot.feature_name,
                                 [(r["prompt_id"], int(r["k"])) for r in rows])
    except (FileNotFoundError, ValueError) as e:
        raise PlanError(str(e)) from None
    res = FrechetResampler(features, reference, device)
    reps = np.empty((len(draws), len(sizes)))
    for b in range(len(draws)):
        reps[b] = res.nested(draws[b], sizes, groups)
        if bar is not None:
            bar.update(1)
    out["fid"] = Replicates(res.fid(), reps)
    return out


def curve_points(estimate: float, reps: np.ndarray, sizes: Sequence[int],
                 alpha: float) -> list[dict]:
    """SE and (1-α) CI widths of `reps` (B, S) at each size."""
    from .metrics.resample import interval

    z = _z(1 - alpha / 2)
    out = []
    for s, m in enumerate(sizes):
        col = reps[:, s]
        col = col[np.isfinite(col)]
        se = float(col.std(ddof=1)) if len(col) > 1 else math.nan
        low, high = interval(estimate, col, level=1 - alpha)
        out.append({"m": int(m), "se": se, "ci_width": 2 * z * se,
                    "ci_width_percentile": high - low, "n_replicates": int(len(col))})
    return out


def plan_metric(key: str, ref: str, metric: str, goal: str, estimate: float, reps: np.ndarray,
                sizes: Sequence[int], pilot: Pilot,
                options: PlanOptions) -> tuple[dict, list[dict]]:
    """One plan.csv row and its plan_curve.csv rows from the (B, S) replicates of a metric."""
    points = curve_points(estimate, reps, sizes, options.alpha)
    c, residual = fit_inverse_sqrt([p["m"] for p in points], [p["se"] for p in points])
    delta, n = options.delta(metric), pilot.n_prompts
    if goal == "detect":
        needed = prompts_needed(c, delta, options.power, options.alpha)
        power = power_at(n, c, delta, options.alpha)
    else:
        needed, power = prompts_for_half_width(c, delta, options.alpha), math.nan
    images = len(pilot.rows[key]) / max(len({r["prompt_id"] for r in pilot.rows[key]}), 1)
    row = {"config_key": key, "reference_key": ref, "metric": metric, "goal": goal,
           "delta": delta, "estimate": estimate, "n_pilot_prompts": n,
           "images_per_prompt": images, "se_at_pilot": points[-1]["se"], "c": c,
           "fit_max_rel_residual": residual, "prompts_needed": needed,
           "power_at_pilot": power, "power": options.power if goal == "detect" else math.nan,
           "alpha": options.alpha, "bootstrap_samples": options.bootstrap,
           "bootstrap_seed": options.seed}
    curve = [{"config_key": key, "reference_key": ref, "metric": metric, **p,
              "se_fit": c / math.sqrt(p["m"])} for p in points]
    return row, curve


def make_plan(pilot: Pilot, options: PlanOptions, *, device: str = "cpu",
              progress: bool = True) -> tuple[list[dict], list[dict]]:
    """(plan rows, curve rows): every pair and metric of the pilot (or, one config: precision).

    The draws are `draw_prompts(P, B, seed)`; size m uses the first m draws of each replicate.
    """
    from .metrics.frechet import ReferenceRoot
    from .metrics.resample import draw_prompts
    from .statistics import load_reference

    options.check()
    sizes = subsample_sizes(pilot.n_prompts, options.points)
    draws = draw_prompts(pilot.n_prompts, options.bootstrap, options.seed)
    reference = None
    if pilot.feature_name:
        ref = load_reference(pilot.run)
        reference = ReferenceRoot.of(ref)
    used = list(pilot.rows)
    bar = tqdm(total=len(used) * options.bootstrap, desc="bootstrap", unit="rep",
               dynamic_ncols=True, disable=not progress)
    reps = {k: config_replicates(pilot, k, draws, sizes, reference=reference, device=device,
                                 bar=bar) for k in used}
    bar.close()
    metrics = (["fid"] if pilot.feature_name else []) + ["clip_score"]
    rows, curve = [], []
    if pilot.pairs:
        for key, ref in pilot.pairs:
            for metric in metrics:
                a, b = reps[key][metric], reps[ref][metric]
                name = "delta_fid" if metric == "fid" else "delta_clip"
                row, points = plan_metric(key, ref, name, "detect", a.estimate - b.estimate,
                                          a.reps - b.reps, sizes, pilot, options)
                rows.append(row)
                curve += points
    else:  # one config: no pair; plan the precision of its own numbers
        for key in used:
            for metric in metrics:
                r = reps[key][metric]
                row, points = plan_metric(key, "", metric, "precision", r.estimate, r.reps,
                                          sizes, pilot, options)
                rows.append(row)
                curve += points
    return rows, curve


# -------------------------------------------------------------------------------- outputs

def _text(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def write_tables(rows: list[dict], curve: list[dict], out: Path) -> tuple[Path, Path]:
    """plan.csv and plan_curve.csv (atomic); NaN is an empty cell."""
    plan = atomic_write_text(out / "plan.csv", csv_text(
        [{k: _text(v) for k, v in r.items()} for r in rows], PLAN_FIELDS))
    points = atomic_write_text(out / "plan_curve.csv", csv_text(
        [{k: _text(v) for k, v in r.items()} for r in curve], CURVE_FIELDS))
    return plan, points


def plan_plot(rows: list[dict], curve: list[dict], path: str | Path, *, title: str = "") -> Path:
    """plan.png: (1-α) CI width against prompts (log x), one panel per metric; atomic.

    Each panel's legend sits under it (one entry per pair), so no label covers a curve.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    from .runs import atomic_write_bytes

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    entries = max(sum(r["metric"] == m for r in rows) for m in metrics) + 3
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 3.6 + 0.17 * entries),
                             dpi=120, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        _plot_panel(ax, [r for r in rows if r["metric"] == metric],
                    [p for p in curve if p["metric"] == metric])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _plot_panel(ax, rows: list[dict], curve: list[dict]) -> None:
    """One metric: measured widths, fitted curves past the prompts needed, the target line."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    first = rows[0]
    z = _z(1 - first["alpha"] / 2)
    needed = [r["prompts_needed"] for r in rows if math.isfinite(r["prompts_needed"])]
    measured = [p["m"] for p in curve]
    grid = np.geomspace(min(measured + needed) / 1.5,
                        1.5 * max([first["n_pilot_prompts"]] + needed), 200)
    for i, r in enumerate(rows):
        color = f"C{i % 10}"
        mine = [p for p in curve if p["config_key"] == r["config_key"]]
        label = r["config_key"] + (f" vs {r['reference_key']}" if r["reference_key"] else "")
        ax.plot([p["m"] for p in mine], [p["ci_width"] for p in mine], "o", color=color,
                markersize=4, label=f"{label}: n = {_text(r['prompts_needed'])}")
        if math.isfinite(r["c"]):
            ax.plot(grid, 2 * z * r["c"] / np.sqrt(grid), "-", color=color, linewidth=1)
            if math.isfinite(r["prompts_needed"]):
                ax.plot([r["prompts_needed"]], [2 * z * r["c"] / math.sqrt(r["prompts_needed"])],
                        "x", color=color, markersize=7)
    target = resolving_width(first["delta"], first["power"], first["alpha"], first["goal"])
    what = (f"width that resolves Δ = {first['delta']:g} at {100 * first['power']:g}% power"
            if first["goal"] == "detect" else f"width of a ±{first['delta']:g} interval")
    ax.axhline(target, color="0.3", linestyle="--", linewidth=1, label=what)
    ax.axvline(first["n_pilot_prompts"], color="0.6", linestyle=":", linewidth=1,
               label=f"pilot: {first['n_pilot_prompts']} prompts")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("prompts (m)")
    level = f"{100 * (1 - first['alpha']):g}%"
    ax.set_ylabel(f"{level} CI width of {METRIC_LABELS.get(first['metric'], first['metric'])}")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False,
              title="points: measured; lines: c/√m fit; ×: prompts needed", title_fontsize=7)


# ---------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.plan", description=__doc__, epilog=EPILOG,
                                formatter_class=HelpFormatter)
    p.add_argument("run", metavar="RUN", help="a pilot run directory whose metric stage finished")
    p.add_argument("--delta-fid", type=float, default=1.0,
                   help="ΔFID to resolve (one-config runs: the FID CI half-width wanted)")
    p.add_argument("--delta-clip", type=float, default=0.5,
                   help="ΔCLIP score to resolve, on the 100·cos scale (one-config runs: the CI "
                   "half-width wanted)")
    p.add_argument("--power", type=float, default=0.8, help="power wanted, in (0, 1)")
    p.add_argument("--alpha", type=float, default=0.05, help="two-sided test level, in (0, 1)")
    p.add_argument("--bootstrap", type=int, default=100, metavar="B",
                   help="bootstrap replicates per subsample size")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt draws")
    p.add_argument("--points", type=int, default=6, metavar="K",
                   help="subsample sizes, geometrically spaced from max(5, P/8) to P prompts")
    p.add_argument("--config", default=None, metavar="KEY",
                   help="plan only this config against its reference config (default: every "
                   "pair of metrics/comparisons.csv)")
    p.add_argument("--device", default=None,
                   help="where the FID linear algebra runs: cpu, cuda, cuda:N (default: cuda if "
                   "available)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN/plan)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _device(name: str | None) -> str:
    from imagen_ref.device import get_device

    try:
        return str(get_device(name))
    except RuntimeError as e:
        raise PlanError(str(e)) from None


def run_plan(args: argparse.Namespace) -> tuple[list[dict], Path]:
    """Plan from the parsed flags; returns the plan rows and the output folder."""
    options = PlanOptions(args.delta_fid, args.delta_clip, args.power, args.alpha,
                          args.bootstrap, args.seed, args.points)
    options.check()
    pilot = open_pilot(args.run, args.config)
    device = _device(args.device) if pilot.feature_name else "cpu"
    rows, curve = make_plan(pilot, options, device=device, progress=not args.no_progress)
    out = Path(args.out) if args.out else pilot.run.root / "plan"
    write_tables(rows, curve, out)
    plan_plot(rows, curve, out / "plan.png",
              title=f"{pilot.run.root.name}: {pilot.n_prompts}-prompt pilot, "
              f"{options.bootstrap} replicates per size")
    return rows, out


def _report(rows: list[dict]) -> str:
    """The plan as a few lines for people."""
    lines = []
    for r in rows:
        pair = r["config_key"] + (f" vs {r['reference_key']}" if r["reference_key"] else "")
        what = (f"{r['metric']} = {r['delta']:g}: {_text(r['prompts_needed'])} prompts for "
                f"{100 * r['power']:g}% power (pilot's {r['n_pilot_prompts']}: "
                f"{100 * r['power_at_pilot']:.0f}%)" if r["goal"] == "detect" else
                f"{r['metric']} ± {r['delta']:g}: {_text(r['prompts_needed'])} prompts")
        lines.append(f"  {pair}  {what}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows, out = run_plan(args)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not any(r["goal"] == "detect" for r in rows):
        print("one config: no pair to compare; planned the precision of its own numbers "
              "(prompts for the CI half-width to fall to the delta)")
    print(_report(rows))
    print(f"results: {out / 'plan.csv'}  curve: {out / 'plan_curve.csv'}  plot: {out / 'plan.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
