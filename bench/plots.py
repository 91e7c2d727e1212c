"""pareto.png: FID against CLIP score over the guidance sweep, one curve per thresholding mode.

The Imagen paper's trade-off plots (§4.4, App. D.2, Fig. A.8): CLIP score on x, FID on y,
each point a guidance weight, one curve per thresholding mode. Lower right is better. Any two
summary.csv columns can take the two axes (`--pareto cmmd_clip,clip_score`: CMMD on y).
Where summary.csv has 95% intervals (clip_score_ci_low/high, fid_ci_low/high), every point
gets its error bars; the intervals are asymmetric, so each bar runs from the low to the high end.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path

from .runs import atomic_write_bytes


def _curve_label(row: dict, varying: list[str]) -> str:
    parts = [str(row["thresholding"])]
    parts += [f"{k.replace('_', ' ')} {row[k]}" for k in varying]
    return ", ".join(parts)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _float(x) -> float:
    return float(x) if _finite(x) else math.nan


def interval_errors(rows: list[dict], est: str, low: str, high: str) -> list[list[float]] | None:
    """Asymmetric error-bar lengths [est - low, high - est] per row, for matplotlib's xerr/yerr.

    A row without a finite interval gets NaN (matplotlib draws no bar there); None when no row
    has one, so the caller can draw the plain curve. Lengths are clipped at 0 against rounding
    (an interval contains its estimate by construction; matplotlib rejects negative lengths).
    """
    lower, upper = [], []
    for r in rows:
        e, lo, hi = _float(r.get(est)), _float(r.get(low)), _float(r.get(high))
        ok = math.isfinite(e) and math.isfinite(lo) and math.isfinite(hi)
        lower.append(max(e - lo, 0.0) if ok else math.nan)
        upper.append(max(hi - e, 0.0) if ok else math.nan)
    return [lower, upper] if any(math.isfinite(v) for v in lower) else None


AXIS_LABELS = {"fid": "FID", "clip_score": "CLIP score (100 · mean max(cos, 0))"}


def pareto_plot(rows: list[dict], path: str | Path, *, title: str = "", y: str = "fid",
                x: str = "clip_score") -> Path | None:
    """Draw column `y` (FID) against column `x` (CLIP score) from summary rows, as a PNG.

    Args:
        rows: summary.csv rows (guidance, thresholding, aug_level, sampler, steps, the two
            columns; optionally <col>_ci_low/high, drawn as error bars).
        path: where to write the PNG (atomically).
        title: plot title (e.g. the model id and number of images).
        y, x: the columns on the two axes.
    Returns: the path, or None when no row has both values finite.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    points = [r for r in rows if _finite(r.get(y)) and _finite(r.get(x))]
    if not points:
        return None
    # Curves are thresholding modes; other grid axes that vary split them further.
    varying = [k for k in ("aug_level", "sampler", "steps") if len({str(r[k]) for r in points}) > 1]
    curves: dict[str, list[dict]] = defaultdict(list)
    for r in points:
        curves[_curve_label(r, varying)].append(r)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    with_bars = False
    for label, curve in curves.items():
        curve = sorted(curve, key=lambda r: [float(w) for w in str(r["guidance"]).split("/")])
        xs = [float(r[x]) for r in curve]
        ys = [float(r[y]) for r in curve]
        xerr = interval_errors(curve, x, f"{x}_ci_low", f"{x}_ci_high")
        yerr = interval_errors(curve, y, f"{y}_ci_low", f"{y}_ci_high")
        if xerr is None and yerr is None:
            ax.plot(xs, ys, marker="o", markersize=4, label=label)
        else:
            with_bars = True
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", markersize=4, capsize=2,
                        elinewidth=0.8, label=label)
        for r, px, py in zip(curve, xs, ys):
            ax.annotate(f"w={r['guidance']}", (px, py), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    ax.set_title(title or f"{AXIS_LABELS.get(y, y)} vs {AXIS_LABELS.get(x, x)} over guidance weights",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title="thresholding" + (" (bars: 95% CIs)" if with_bars else ""), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
