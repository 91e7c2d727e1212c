"""Figures of the report, drawn with matplotlib (Agg) and embedded as PNG data URIs.

Every function takes rows as read from the run or analysis files and returns a Figure record
(data URI, alt text, caption); none computes a metric. Thumbnails are downscaled JPEGs.
"""
from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .rundata import number

# Published zero-shot MS-COCO 256x256 FID-30K (Imagen Table 1, project page; see
# data/PAPER_NUMBERS.md in the shared folder). Numbers from papers, never from this run.
PUBLISHED_FID30K = (("Imagen", 7.27), ("DALL-E 2", 10.39), ("GLIDE", 12.24), ("DALL-E", 17.89))
PUBLISHED_SOURCE = ("Saharia et al. 2022 (Imagen), Table 1 / project page: zero-shot MS-COCO "
                    "256×256 FID-30K")


@dataclass(frozen=True)
class Figure:
    id: str
    src: str          # data:image/png;base64,...
    alt: str
    caption: str
    css: str = ""     # extra class (e.g. 'pareto')


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return data_uri(buf.getvalue(), "image/png")


def guidance_value(label) -> tuple[float, ...]:
    """'1.35/8' -> (1.35, 8.0), for ordering points along a curve."""
    try:
        return tuple(float(w) for w in str(label).split("/"))
    except ValueError:
        return (math.inf,)


def _err(lower: list[float], upper: list[float]) -> list[list[float]]:
    """Error-bar lengths, 0 where a CI is missing (e.g. the reference against itself)."""
    def clean(v):
        return [x if math.isfinite(x) and x > 0 else 0.0 for x in v]
    return [clean(lower), clean(upper)]


def interval_errors(rows: list[dict], est: str, low: str, high: str) -> list[list[float]] | None:
    """Asymmetric error bars [est - low, high - est] from a row's 95% interval columns; NaN (no
    bar) where a row has none, None where no row has one (a run from before the intervals)."""
    lower, upper = [], []
    for r in rows:
        e, lo, hi = number(r.get(est)), number(r.get(low)), number(r.get(high))
        ok = math.isfinite(e) and math.isfinite(lo) and math.isfinite(hi)
        lower.append(max(e - lo, 0.0) if ok else math.nan)  # 0, not negative, under rounding
        upper.append(max(hi - e, 0.0) if ok else math.nan)
    return [lower, upper] if any(math.isfinite(v) for v in lower) else None


def thumbnail(path: Path, size: int = 160) -> str:
    """A JPEG data URI of the image at `path`, its longer side at most `size` pixels."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")


def pareto_figure(rows: list[dict], best_key: str | None, *, fig_id: str, title: str) -> Figure:
    """FID (y) vs CLIP score (x), one curve per thresholding mode, the best point starred and
    the published FID-30K numbers as labelled horizontal lines. Points get error bars from
    summary.csv's 95% intervals (fid_ci_low/high, clip_score_ci_low/high) where it has them."""
    plt = _plt()
    points = [r for r in rows if math.isfinite(number(r.get("fid")))
              and math.isfinite(number(r.get("clip_score")))]
    curves: dict[str, list[dict]] = defaultdict(list)
    varying = [k for k in ("aug_level", "sampler", "steps") if len({str(r.get(k)) for r in points}) > 1]
    for r in points:
        label = ", ".join([str(r["thresholding"])] + [f"{k.replace('_', ' ')} {r.get(k)}"
                                                       for k in varying])
        curves[label].append(r)
    fig, ax = plt.subplots(figsize=(8.8, 4.6))
    with_bars = False
    for label, curve in curves.items():
        curve.sort(key=lambda r: guidance_value(r["guidance"]))
        xs = [number(r["clip_score"]) for r in curve]
        ys = [number(r["fid"]) for r in curve]
        xerr = interval_errors(curve, "clip_score", "clip_score_ci_low", "clip_score_ci_high")
        yerr = interval_errors(curve, "fid", "fid_ci_low", "fid_ci_high")
        if xerr is None and yerr is None:
            ax.plot(xs, ys, marker="o", markersize=4, label=label)
        else:
            with_bars = True
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", markersize=4, capsize=2,
                        elinewidth=0.8, label=label)
        for r, x, y in zip(curve, xs, ys):
            ax.annotate(f"w={r['guidance']}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    best = next((r for r in points if r["config_key"] == best_key), None)
    if best is not None:
        ax.plot([number(best["clip_score"])], [number(best["fid"])], marker="*", markersize=16,
                color="gold", markeredgecolor="black", linestyle="none",
                label=f"best FID: {best['config_key']}")
    fids = [number(r["fid"]) for r in points] + [v for _, v in PUBLISHED_FID30K]
    if fids and max(fids) / max(min(fids), 1e-9) > 8:
        from matplotlib.ticker import LogLocator, ScalarFormatter

        ax.set_yscale("log")  # a small run's FID is far above the published numbers
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter("")
    for name, value in PUBLISHED_FID30K:
        ax.axhline(value, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(f"{name} {value} (published)", (0.99, value), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=7, color="dimgrey")
    ax.set_xlabel("CLIP score (100 · mean max(cos, 0)), higher is better")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title="thresholding (this run)", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # outside the axes: never over a point
    fig.tight_layout()
    caption = (f"{title}. Points are this run's sampling configs (w = guidance weight); dashed "
               f"lines are published numbers ({PUBLISHED_SOURCE}), not this run's, and are "
               "comparable only under the same protocol (30K COCO val2014 captions, 2048-d "
               "Inception pool3, 256×256).")
    if with_bars:
        caption += (" Error bars: 95% bootstrap CIs over prompts (FID vertical, CLIP score "
                    "horizontal).")
    return Figure(fig_id, _png(fig), f"FID versus CLIP score, {title}", caption, "pareto")


def category_figure(rows: list[dict], config_keys: list[str], *, fig_id: str,
                    title: str) -> Figure:
    """Horizontal bars per category (CLIP score with its 95% bootstrap CI), one bar per config."""
    plt = _plt()
    categories = list(dict.fromkeys(r["category"] for r in rows))
    n = max(len(config_keys), 1)
    height = 0.8 / n
    fig, ax = plt.subplots(figsize=(7.2, 0.5 + 0.32 * len(categories) * max(1, n / 2)))
    for j, key in enumerate(config_keys):
        by_cat = {r["category"]: r for r in rows if r["config_key"] == key}
        ys, xs, lo, hi = [], [], [], []
        for i, c in enumerate(categories):
            r = by_cat.get(c)
            if r is None:
                continue
            x = number(r["clip_score"])
            ys.append(i + (j - (n - 1) / 2) * height)
            xs.append(x)
            lo.append(max(x - number(r["ci_low"]), 0.0))
            hi.append(max(number(r["ci_high"]) - x, 0.0))
        ax.barh(ys, xs, height=height, xerr=[lo, hi], capsize=2, label=key)
    ax.set_yticks(range(len(categories)), categories, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("CLIP score (100 · mean max(cos, 0)), 95% bootstrap CI over prompts")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, title="config", title_fontsize=8, loc="lower right")
    fig.tight_layout()
    return Figure(fig_id, _png(fig), f"CLIP score per category, {title}",
                  f"{title}: mean CLIP score per category with 95% bootstrap CIs (error bars).")


def preference_figure(rows: list[dict], *, fig_id: str, title: str) -> Figure:
    """Stacked A / indifferent / B bars per row of preferences.csv, with 95% CIs on A and B."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 0.6 + 0.36 * len(rows)))
    labels = []
    for i, r in enumerate(rows):
        a, ind, b = number(r["p_a"]), number(r["p_indifferent"]), number(r["p_b"])
        ax.barh(i, a, color="#3b75af", label="prefer A" if i == 0 else None)
        ax.barh(i, ind, left=a, color="#c8c8c8", label="indifferent" if i == 0 else None)
        ax.barh(i, b, left=a + ind, color="#ef8636", label="prefer B" if i == 0 else None)
        ax.errorbar([a], [i], xerr=_err([a - number(r["p_a_lo"])], [number(r["p_a_hi"]) - a]),
                    color="black", capsize=3, linewidth=1)
        edge = 1 - b  # B's bar starts here; its CI moves this edge
        ax.errorbar([edge], [i], xerr=_err([number(r["p_b_hi"]) - b], [b - number(r["p_b_lo"])]),
                    color="black", capsize=3, linewidth=1)
        labels.append(f"{r['category']}: {r['system_a']} (A) vs {r['system_b']} (B), "
                      f"n={r['n_votes']}")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.5, color="black", linewidth=0.6, linestyle=":")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of votes (95% CI on A and B)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return Figure(fig_id, _png(fig), f"preference shares, {title}",
                  f"{title}: share of votes for A, indifferent and B per category, with 95% CIs.")


def human_pareto_figure(rows: list[dict], *, fig_id: str) -> Figure:
    """Human preference for fidelity (y) vs alignment (x) against a reference system, one curve
    per thresholding mode over guidance weights, with 95% CIs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    curves: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        curves[str(r["thresholding"])].append(r)
    for mode, curve in curves.items():
        curve.sort(key=lambda r: guidance_value(r["guidance"]))
        xs = [number(r["alignment_pref"]) for r in curve]
        ys = [number(r["fidelity_pref"]) for r in curve]
        xerr = _err([x - number(r["alignment_lo"]) for x, r in zip(xs, curve)],
                    [number(r["alignment_hi"]) - x for x, r in zip(xs, curve)])
        yerr = _err([y - number(r["fidelity_lo"]) for y, r in zip(ys, curve)],
                    [number(r["fidelity_hi"]) - y for y, r in zip(ys, curve)])
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", markersize=4, capsize=2,
                    label=mode)
        for r, x, y in zip(curve, xs, ys):
            ax.annotate(f"w={r['guidance']}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=0.8)
    refs = sorted({str(r["reference_system"]) for r in rows})
    ax.set_xlabel("alignment: preference over the reference (share of votes)")
    ax.set_ylabel("fidelity: preference over the reference")
    ax.set_title(f"human Pareto curves against {', '.join(refs)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title="thresholding", fontsize=7, title_fontsize=8)
    fig.tight_layout()
    return Figure(fig_id, _png(fig), "human fidelity versus alignment preference",
                  "Human preference over the reference system for fidelity against alignment, "
                  "one curve per thresholding mode over guidance weights (95% CIs); 0.5 = on par.",
                  "pareto")
