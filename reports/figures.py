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

from bench.plots import draw_pareto, place_labels

from .rundata import number
from .tables import compact_key

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


DPI = 110


def _png(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
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


def thumbnail(path: Path, size: int = 160) -> str:
    """A JPEG data URI of the image at `path`, its longer side at most `size` pixels."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")


def _point_name(r: dict) -> str:
    return compact_key(r.get("config_key", "")) or f"w={r.get('guidance')}"


def pareto_figure(rows: list[dict], best_key: str | None, *, fig_id: str, title: str,
                  references: tuple[tuple[str, float], ...] = (), reference_note: str = "",
                  y: str = "fid", x: str = "clip_score") -> Figure:
    """`y` (FID) against `x` (CLIP score), one curve per thresholding mode, drawn by
    bench.plots.draw_pareto: limits from the frontier, far-off configs as arrows at the edge
    (named in the caption), labels that do not overlap, error bars from summary.csv's 95%
    intervals, the best point starred, and `references` (the published FID-30K numbers, given
    only for a run under the paper's protocol) as labelled lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.8, 4.6), dpi=DPI)
    layout = draw_pareto(ax, rows, y=y, x=x, best_key=best_key, title=title,
                         references=references, legend_title="thresholding (this run)")
    caption = (f"{title}. Points are this run's sampling configs (w = guidance weight); the axes "
               "span the non-dominated configs and their neighbours.")
    if layout.off:
        caption += (" Off the plotted range, drawn as arrows at the edge: " + "; ".join(
            f"{_point_name(r)} ({x} {number(r[x]):.2f}, {y} {number(r[y]):.2f})"
            for r in layout.off) + ".")
    if layout.unlabelled:
        caption += (" Not labelled for lack of room: " +
                    ", ".join(_point_name(r) for r in layout.unlabelled) + ".")
    if layout.references or layout.references_off:
        caption += (f" Dashed lines are published numbers ({PUBLISHED_SOURCE}), not this run's; "
                    "the run's protocol is the paper's (COCO val2014 captions, 2048-d Inception "
                    "pool3, 256×256).")
        if reference_note:
            caption += " " + reference_note
    if layout.with_bars:
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
        ax.barh(ys, xs, height=height, xerr=[lo, hi], capsize=2, label=compact_key(key))
    ax.set_yticks(range(len(categories)), categories, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("CLIP score (100 · mean max(cos, 0)), 95% bootstrap CI over prompts")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, title="config", title_fontsize=8, loc="lower right")
    fig.tight_layout()
    return Figure(fig_id, _png(fig), f"CLIP score per category, {title}",
                  f"{title}: mean CLIP score per category with 95% bootstrap CIs (error bars).")


def system_keys(rows: list[dict]) -> tuple[dict[str, str], str]:
    """Short labels of the systems compared in preference rows, and the key for the caption:
    'A' / 'B' where every row compares the same pair, else S1, S2, ... in order of appearance."""
    pairs = list(dict.fromkeys((r["system_a"], r["system_b"]) for r in rows))
    if len(pairs) == 1:
        short = {pairs[0][0]: "A", pairs[0][1]: "B"}
    else:
        systems = list(dict.fromkeys(s for pair in pairs for s in pair))
        short = {s: f"S{i + 1}" for i, s in enumerate(systems)}
    key = "; ".join(f"{v} = {compact_key(k)}" for k, v in short.items())
    return short, key


def preference_figure(rows: list[dict], *, fig_id: str, title: str) -> Figure:
    """Stacked A / indifferent / B bars per row of preferences.csv, with 95% CIs on A and B;
    the systems by short labels, named in the caption."""
    plt = _plt()
    short, key = system_keys(rows)
    one_pair = len({(r["system_a"], r["system_b"]) for r in rows}) == 1
    fig, ax = plt.subplots(figsize=(7.2, 0.9 + 0.34 * len(rows)))
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
        pair = "" if one_pair else f" {short[r['system_a']]}–{short[r['system_b']]}"
        labels.append(f"{_shorten(str(r['category']), 22)}{pair}, n={r['n_votes']}")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.5, color="black", linewidth=0.6, linestyle=":")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of votes (95% CI on A and B)", fontsize=8)
    ax.set_title(title, fontsize=9, pad=22)
    ax.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return Figure(fig_id, _png(fig), f"preference shares, {title}",
                  f"{title}: share of votes for A, indifferent and B per category, with 95% CIs. "
                  f"Systems: {key}.")


def _shorten(text_: str, n: int) -> str:
    return text_ if len(text_) <= n else text_[:n - 1] + "…"


def human_pareto_figure(rows: list[dict], *, fig_id: str) -> Figure:
    """Human preference for fidelity (y) vs alignment (x) against a reference system, one curve
    per thresholding mode over guidance weights, with 95% CIs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=DPI)
    curves: dict[str, list[dict]] = defaultdict(list)
    items = []
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
        line = ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", markersize=4, capsize=2,
                           label=mode).lines[0]
        items += [(f"w={r['guidance']}", (x, y), line.get_color()) for r, x, y in zip(curve, xs, ys)]
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    ax.axvline(0.5, color="grey", linestyle=":", linewidth=0.8)
    refs = sorted({str(r["reference_system"]) for r in rows})
    ax.set_xlabel("alignment: preference over the reference (share of votes)")
    ax.set_ylabel("fidelity: preference over the reference")
    ax.set_title(f"human Pareto curves against {', '.join(compact_key(r) for r in refs)}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(title="thresholding", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    place_labels(ax, items, [xy for _, xy, _ in items])
    return Figure(fig_id, _png(fig), "human fidelity versus alignment preference",
                  "Human preference over the reference system for fidelity against alignment, "
                  "one curve per thresholding mode over guidance weights (95% CIs); 0.5 = on par.",
                  "pareto")
