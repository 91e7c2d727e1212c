"""pareto.png: FID against CLIP score over the guidance sweep, one curve per thresholding mode.

The Imagen paper's trade-off plots (§4.4, App. D.2, Fig. A.8): CLIP score on x, FID on y,
each point a guidance weight, one curve per thresholding mode. Lower right is better. Any two
summary.csv columns can take the two axes (`--pareto cmmd_clip,clip_score`: CMMD on y).
Where summary.csv has 95% intervals (clip_score_ci_low/high, fid_ci_low/high), every point
gets its error bars; the intervals are asymmetric, so each bar runs from the low to the high end.

The axes show the frontier: their limits come from the non-dominated configs and their
neighbours along each curve, less far-off ones (`view_limits`), so a far-off config (w = 0,
say) does not squeeze the rest into a corner; configs outside the limits are arrows at the edge, listed in
`ParetoLayout.off` for the caption. Point labels are placed where their boxes, measured by the
renderer, overlap no other label or point (`place_labels`). The report draws its figure with
the same `draw_pareto`.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass, field
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


def guidance_order(label) -> tuple[float, ...]:
    """'1.35/8' -> (1.35, 8.0), for ordering points along a curve (unparsable last)."""
    try:
        return tuple(float(w) for w in str(label).split("/"))
    except ValueError:
        return (math.inf,)


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
LOWER_IS_BETTER = {"fid": True, "fid_inf": True, "kid": True, "clip_score": False}


def lower_is_better(column: str) -> bool | None:
    """Whether a summary.csv metric column is better when lower: the paper's columns, else the
    metric registry's quantity the column is named after ('cmmd_clip' -> cmmd); None: unknown."""
    if column in LOWER_IS_BETTER:
        return LOWER_IS_BETTER[column]
    try:
        from .metrics.suite import KINDS
    except ImportError:  # a checkout without torch: only the paper's columns are known
        return None
    found = None
    for kind in KINDS.values():
        for q, lower in kind.lower_is_better.items():
            if (column == q or column.startswith(q + "_")) and (found is None or len(q) > len(found[0])):
                found = (q, lower)
    return None if found is None else found[1]


def pareto_front(points: list[tuple[float, float]], *, x_lower: bool, y_lower: bool) -> list[int]:
    """Indices of the non-dominated points: no other point is at least as good on both axes
    and better on one."""
    def key(p):
        return (p[0] if x_lower else -p[0], p[1] if y_lower else -p[1])

    keyed = [key(p) for p in points]
    return [i for i, (a, b) in enumerate(keyed)
            if not any(c <= a and d <= b and (c < a or d < b) for c, d in keyed)]


FAR = 5.0      # a config this many median absolute deviations from the median is far off
WINDOW = 0.42  # the limits reach at most this share of the frontier's scale beyond it
PAD = 0.06     # margin around the points that set the limits, as a share of the scale
DEGENERATE = 0.25  # a frontier spanning less than this share of its neighbours' is point-like


def far_off(values: list[float]) -> list[bool]:
    """Per value, whether it lies more than FAR median absolute deviations from the median of
    all (the w = 0 configs of a sweep, whose CLIP score is a fraction of the others')."""
    ordered = sorted(values)
    med = ordered[len(ordered) // 2] if len(ordered) % 2 else \
        0.5 * (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2])
    deviations = sorted(abs(v - med) for v in values)
    mad = deviations[len(deviations) // 2]
    if mad <= 0:
        mad = 0.05 * (ordered[-1] - ordered[0]) or 1e-12
    return [abs(v - med) > FAR * mad for v in values]


def view_limits(xs: list[float], ys: list[float], front: list[int],
                neighbours: list[int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits from the points that matter: the frontier and its neighbours along their
    curves, less far-off ones (`far_off` on either axis), and less those beyond the frontier by
    more than WINDOW times the scale s = max(frontier span, span of frontier and neighbours);
    plus a margin of PAD * s. Where the neighbours lie within the frontier's span (a trade-off
    curve), s is the frontier's span and the frontier spans at least 1 / (1 + 2 * (WINDOW +
    PAD)) = 0.51 of each axis. A point-like frontier (one config, or close ones: less than
    DEGENERATE of the neighbours' span on an axis) keeps all its near neighbours instead."""
    far_x, far_y = far_off(xs), far_off(ys)
    near = set(front) | {i for i in neighbours if not (far_x[i] or far_y[i])}
    windows, scales = [], []
    for v in (xs, ys):
        f = [v[i] for i in front]
        span, n = max(f) - min(f), max(v[i] for i in near) - min(v[i] for i in near)
        s = max(span, n) if max(span, n) > 0 else max(0.05 * abs(f[0]), 1e-6)
        reach = s if span < DEGENERATE * n else WINDOW * s  # a point-like frontier: all near
        windows.append((min(f) - reach, max(f) + reach))
        scales.append(s)
    keep = [i for i in near if all(w[0] <= v[i] <= w[1] for v, w in zip((xs, ys), windows))]
    limits = []
    for v, s in zip((xs, ys), scales):
        shown = [v[i] for i in set(keep) | set(front)]
        limits.append((min(shown) - PAD * s, max(shown) + PAD * s))
    return limits[0], limits[1]


@dataclass
class ParetoLayout:
    """What draw_pareto drew, for captions and checks."""

    frontier: list[dict]                     # the non-dominated rows
    off: list[dict]                          # rows outside the limits, drawn as edge arrows
    labels: list = field(default_factory=list)       # matplotlib Text of the point labels
    unlabelled: list[dict] = field(default_factory=list)  # rows whose label found no room
    references: list[tuple[str, float]] = field(default_factory=list)      # lines drawn
    references_off: list[tuple[str, float]] = field(default_factory=list)  # beyond the limits
    with_bars: bool = False


def draw_pareto(ax, rows: list[dict], *, y: str = "fid", x: str = "clip_score",
                best_key: str | None = None, title: str = "",
                references: tuple[tuple[str, float], ...] = (),
                legend_title: str = "thresholding") -> ParetoLayout:
    """Draw column `y` against column `x` of summary rows on `ax`: one curve per thresholding
    mode (and other grid axes that vary), error bars from <col>_ci_low/high, the limits from the
    frontier, far-off configs as arrows at the edge, `best_key` starred, `references` as
    labelled horizontal lines (only those within the limits; the rest are listed in one note at
    the edge), the legend outside the axes; then lays out the figure and places the labels.
    Rows without both values finite are skipped."""
    points = [r for r in rows if _finite(r.get(y)) and _finite(r.get(x))]
    x_lower, y_lower = lower_is_better(x), lower_is_better(y)
    x_lower = bool(x_lower) if x_lower is not None else False
    y_lower = True if y_lower is None else y_lower
    varying = [k for k in ("aug_level", "sampler", "steps")
               if len({str(r.get(k)) for r in points}) > 1]
    curves: dict[str, list[dict]] = defaultdict(list)
    for r in points:
        curves[_curve_label(r, varying)].append(r)
    for label in curves:
        curves[label].sort(key=lambda r: guidance_order(r["guidance"]))
    order = [r for curve in curves.values() for r in curve]
    xs, ys = [float(r[x]) for r in order], [float(r[y]) for r in order]
    front = pareto_front(list(zip(xs, ys)), x_lower=x_lower, y_lower=y_lower)
    index = {id(r): i for i, r in enumerate(order)}
    neighbours = []
    for curve in curves.values():
        for j, r in enumerate(curve):
            if index[id(r)] in front:
                neighbours += [index[id(c)] for c in curve[max(j - 1, 0):j + 2]]
    xlim, ylim = view_limits(xs, ys, front, neighbours)
    layout = ParetoLayout([order[i] for i in front], [])
    color_of, label_items = {}, []
    for label, curve in curves.items():
        cx, cy = [float(r[x]) for r in curve], [float(r[y]) for r in curve]
        xerr = interval_errors(curve, x, f"{x}_ci_low", f"{x}_ci_high")
        yerr = interval_errors(curve, y, f"{y}_ci_low", f"{y}_ci_high")
        if xerr is None and yerr is None:
            line = ax.plot(cx, cy, marker="o", markersize=4, label=label)[0]
        else:
            layout.with_bars = True
            bars = ax.errorbar(cx, cy, xerr=xerr, yerr=yerr, marker="o", markersize=4,
                               capsize=2, elinewidth=0.8, label=label)
            for part in bars.lines[1] + bars.lines[2]:
                part.set_alpha(0.35)  # wide intervals must not hide the points and curves
            line = bars.lines[0]
        color_of[label] = line.get_color()
        for r, px, py in zip(curve, cx, cy):
            inside = xlim[0] <= px <= xlim[1] and ylim[0] <= py <= ylim[1]
            if not inside:
                layout.off.append(r)
                px, py = _edge_arrow(ax, px, py, xlim, ylim, color_of[label])
            rank = 0 if index[id(r)] in front else (1 if inside else 2)
            label_items.append((rank, f"w={r['guidance']}", (px, py), color_of[label], r, inside))
    best = next((r for r in points if r.get("config_key") == best_key), None)
    if best is not None and best not in layout.off:
        ax.plot([float(best[x])], [float(best[y])], marker="*", markersize=14, color="gold",
                markeredgecolor="black", linestyle="none", label=f"best {AXIS_LABELS.get(y, y)}")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    fixed = _reference_lines(ax, references, ylim, layout)
    ax.set_xlabel(AXIS_LABELS.get(x, x) + (", lower is better" if x_lower else
                                           ", higher is better"))
    ax.set_ylabel(AXIS_LABELS.get(y, y) + (", lower is better" if y_lower else
                                           ", higher is better"))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title=legend_title + (" (bars: 95% CIs)" if layout.with_bars else ""), fontsize=7,
              title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a point
    ax.figure.tight_layout()
    label_items.sort(key=lambda item: (item[0], item[2][0]))
    markers = [item[2] for item in label_items if item[5]]
    placed = place_labels(ax, [(t, xy, c) for _, t, xy, c, _, _ in label_items], markers, fixed)
    for text_, (_, _, _, _, r, _) in zip(placed, label_items):
        if text_ is None:
            layout.unlabelled.append(r)
        else:
            layout.labels.append(text_)
    return layout


def _edge_arrow(ax, px, py, xlim, ylim, color) -> tuple[float, float]:
    """An arrow at the edge of the limits pointing towards an off-range point; its position."""
    inset = 0.015
    ex = min(max(px, xlim[0] + inset * (xlim[1] - xlim[0])), xlim[1] - inset * (xlim[1] - xlim[0]))
    ey = min(max(py, ylim[0] + inset * (ylim[1] - ylim[0])), ylim[1] - inset * (ylim[1] - ylim[0]))
    dx = (px > xlim[1]) - (px < xlim[0])
    dy = (py > ylim[1]) - (py < ylim[0])
    ax.annotate("", xy=(ex, ey), xytext=(-16 * dx, -16 * dy), textcoords="offset points",
                arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1.4})
    return ex, ey


def _reference_lines(ax, references, ylim, layout: ParetoLayout) -> list:
    """Labelled horizontal lines within the limits; one note for those beyond. Their texts."""
    texts = []
    for name, value in references:
        if ylim[0] <= value <= ylim[1]:
            ax.axhline(value, color="grey", linestyle="--", linewidth=0.8, gid="published")
            texts.append(ax.annotate(f"{name} {value:g} (published)", (0.99, value),
                                     xycoords=("axes fraction", "data"), ha="right", va="bottom",
                                     fontsize=7, color="dimgrey", gid="published"))
            layout.references.append((name, value))
        else:
            layout.references_off.append((name, value))
    below = [f"{n} {v:g}" for n, v in layout.references_off if v < ylim[0]]
    above = [f"{n} {v:g}" for n, v in layout.references_off if v > ylim[1]]
    for where, names, yy, va in (("below", below, 0.015, "bottom"), ("above", above, 0.985, "top")):
        if names:
            texts.append(ax.text(0.99, yy, f"{'↓' if where == 'below' else '↑'} published, {where} "
                                 f"the range: {', '.join(names)}", transform=ax.transAxes,
                                 ha="right", va=va, fontsize=7, color="dimgrey", gid="published"))
    return texts


OFFSETS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


def place_labels(ax, items: list[tuple[str, tuple[float, float], str]],
                 markers: list[tuple[float, float]], fixed: list = (), *, fontsize: float = 7,
                 marker_pt: float = 4.0) -> list:
    """Place each (text, data point, colour) next to its point, in order, at the first offset
    whose box (measured by the renderer) lies inside the axes and overlaps no label placed
    before, no `fixed` text and no marker; a label with no such place is not drawn (None)."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    px = fig.dpi / 72.0
    taken = [t.get_window_extent(renderer).padded(1) for t in fixed]
    half = (marker_pt / 2 + 1) * px
    dots = [ax.transData.transform(m) for m in markers]
    from matplotlib.transforms import Bbox

    taken += [Bbox.from_extents(u - half, v - half, u + half, v + half) for u, v in dots]
    out = []
    for label, xy, color in items:
        text_ = ax.annotate(label, xy, textcoords="offset points", xytext=(0, 0), fontsize=fontsize,
                            color=color, gid="point-label")
        text_.set_in_layout(False)
        for radius in (4, 8, 13, 19):
            for dx, dy in OFFSETS:
                text_.set_position((dx * radius, dy * radius))
                text_.set_ha({1: "left", -1: "right", 0: "center"}[dx])
                text_.set_va({1: "bottom", -1: "top", 0: "center"}[dy])
                box = text_.get_window_extent(renderer)
                if (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                        and box.y1 <= frame.y1 and not any(box.overlaps(t) for t in taken)):
                    break
            else:
                continue
            break
        else:
            text_.remove()
            out.append(None)
            continue
        taken.append(text_.get_window_extent(renderer).padded(1))
        out.append(text_)
    return out


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

    if not any(_finite(r.get(y)) and _finite(r.get(x)) for r in rows):
        return None
    fig, ax = plt.subplots(figsize=(8.0, 4.8), dpi=120)
    draw_pareto(ax, rows, y=y, x=x, title=title or f"{AXIS_LABELS.get(y, y)} vs "
                f"{AXIS_LABELS.get(x, x)} over guidance weights")  # far-off configs: edge arrows
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
