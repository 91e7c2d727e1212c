"""The run-based sections: provenance, COCO, DrawBench / PartiPrompts, image grids.

A section is {'id', 'title', 'blocks'}; a block is a dict with a 'kind' the template knows:
heading, text, warnings, notes, table, figure, grid.
"""
from __future__ import annotations

import math
from collections import defaultdict

from .figures import (PUBLISHED_FID30K, PUBLISHED_SOURCE, category_figure, guidance_value,
                      pareto_figure, thumbnail)
from .rundata import (PAPER_METRICS, SUMMARY_VALUES, MetricColumn, RunData, is_protocol_column,
                      metric_columns, number)
from .tables import Column, Table, Thumb, compact_key, fixed, kv_table, signed, with_ci

OVERALL = "overall"
MAX_BAR_CONFIGS = 6


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower() or "run"


def heading(text_: str, id_: str = "") -> dict:
    return {"kind": "heading", "text": text_, "id": id_}


# ---------------------------------------------------------------------------------------------
# provenance


def provenance_table(run: RunData) -> Table:
    r, spec = run.run, run.spec
    model = r.get("model", {}) or {}
    stages = model.get("stages") or []
    items: list[tuple[str, object]] = [
        ("run directory", run.name), ("benchmark", run.benchmark), ("command", r.get("command")),
        ("model id", run.model_id), ("model kind", model.get("kind")),
        ("precision", model.get("precision")),
    ]
    for s in stages:
        items.append((f"checkpoint {s.get('key')} ({s.get('file')}) sha256", s.get("sha256")))
    te = model.get("text_encoder")
    if te:
        items.append(("text encoder", ", ".join(f"{k}={v}" for k, v in te.items())))
    prompts = spec.get("prompts", {})
    source = r.get("prompt_source", {}) or {}
    items += [("prompts", f"{prompts.get('n')} prompts, sha256 {prompts.get('sha256')}"),
              ("prompt source", {k: v for k, v in sorted(source.items()) if k != "categories"})]
    items += [("base seed", spec.get("base_seed")),
              ("images per prompt", spec.get("images_per_prompt")),
              ("grid", f"{len(run.grid)} configs: " + ", ".join(c.get("config_key", "?")
                                                                 for c in run.grid))]
    metrics = spec.get("metrics", {}) or {}
    for name in ("fid", "clip"):
        if metrics.get(name):
            items.append((f"{name.upper()} protocol", metrics[name]))
    if isinstance(metrics.get("extra"), dict):
        items += [(f"{label} protocol", proto) for label, proto in metrics["extra"].items()]
    if metrics.get("reference"):
        items.append(("FID reference", metrics["reference"]))
    ref = r.get("reference") or {}
    if ref.get("protocol", {}).get("files_sha256"):
        items.append(("FID reference images", f"n={ref.get('n')}, files sha256 "
                      f"{ref['protocol']['files_sha256']}"))
    if metrics.get("bootstrap"):
        items.append(("bootstrap", metrics["bootstrap"]))
    git = r.get("git", {}) or {}
    items += [("git commit", f"{git.get('commit')}{' (dirty tree)' if git.get('dirty') else ''}"),
              ("device", r.get("device")),
              ("versions", ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items())),
              ("started", r.get("started")), ("finished", r.get("finished")),
              ("wall time (s)", r.get("wall_seconds"))]
    gen = (r.get("stages") or {}).get("generation")
    if gen:
        items.append(("generation", f"{gen.get('images')} images ({gen.get('skipped')} "
                      f"resumed), {gen.get('seconds')} s"))
    return kv_table(f"provenance_{slug(run.name)}", f"{run.name}: provenance", items)


def provenance_section(runs: list[RunData]) -> dict:
    """Last in the report and collapsed: complete, and in the provenance_*.csv files."""
    blocks = []
    for run in runs:
        blocks.append(heading(run.name, f"provenance-{slug(run.name)}"))
        blocks.append({"kind": "table", "table": provenance_table(run)})
    names = ", ".join(r.name for r in runs)
    return {"id": "provenance", "title": "Provenance", "blocks": blocks,
            "collapsed": f"Model, checkpoints, prompts, metric protocols, seeds, versions and "
                         f"device of {names} (click to show; also in provenance_*.csv)"}


# ---------------------------------------------------------------------------------------------
# COCO


def best_fid_key(rows: list[dict]) -> str | None:
    finite = [r for r in rows if math.isfinite(number(r.get("fid")))]
    return min(finite, key=lambda r: number(r["fid"]))["config_key"] if finite else None


def _ci_column(run: RunData, key: str, label: str) -> Column:
    """A value with its 95% interval (`key`_ci_low/high) where the run has intervals."""
    lo, hi = f"{key}_ci_low", f"{key}_ci_high"
    if not any(math.isfinite(number(r.get(lo))) for r in run.summary):
        return Column(key, label, fixed(2), True)
    return Column(key, f"{label} [95% CI]", numeric=True,
                  cell=lambda r: with_ci(r.get(key), r.get(lo), r.get(hi)))


def _bootstrap_text(rows: list[dict], spec: dict) -> str:
    """'1000 resamples, seed 0' from the rows' bootstrap columns (or run.json's record)."""
    row = next((r for r in rows if str(r.get("bootstrap_samples") or "").strip()), None)
    boot = ({"samples": row["bootstrap_samples"], "seed": row.get("bootstrap_seed", "?")} if row
            else spec.get("metrics", {}).get("bootstrap") or {})
    return f"{boot.get('samples', '?')} resamples, seed {boot.get('seed', '?')}"


CONFIG_FIELDS = ("guidance", "thresholding", "aug_level", "sampler", "steps")
EXTRA_PER_TABLE = 5   # metric columns per table beside the config: fits 1280 px


def config_column() -> Column:
    """The config of a row in its compact form ('w3 · static · 12 steps'); the CSV keeps the
    full key and the HTML cell has it as its title."""
    return Column("config_key", "config", key_col=True)


def summary_table(run: RunData, best: str | None) -> Table:
    rows = run.summary
    has_kid = any(math.isfinite(number(r.get("kid"))) for r in rows)
    has_inf = any(math.isfinite(number(r.get("fid_inf"))) for r in rows)
    cols = [config_column(), Column("n_images", "n images", numeric=True)]
    if run.has_fid:
        cols.append(_ci_column(run, "fid", "FID ↓"))
    if has_inf:
        cols.append(_ci_column(run, "fid_inf", "FID∞ ↓"))
    if has_kid:
        cols += [Column("kid", "KID ↓", fixed(4), True), Column("kid_std", "KID sd", fixed(4), True)]
    cols += [_ci_column(run, "clip_score", "CLIP score ↑ (100·cos)"),
             Column("clip_score_std", "CLIP sd over images", fixed(2), True),
             Column("seconds", "generation time (s)", fixed(1), True)]
    cis = [c.key for c in cols if c.cell is not None]
    if cis:
        names = {"fid": "FID", "fid_inf": "FID∞", "clip_score": "CLIP score"}
        note = (f"95% CIs of {', '.join(names[k] for k in cis)}: bootstrap over prompts "
                f"({_bootstrap_text(rows, run.spec)}).")
    else:
        note = ("No 95% CIs in this run's summary.csv (bootstrap off, or a run from before "
                "the intervals).")
    if run.has_fid and "fid" not in cis:
        note += " FID is one estimate over n images."
    if has_inf:
        note += (" FID∞ is FID extrapolated to infinitely many images (Chong & Forsyth 2020), "
                 "free of FID's bias at finite n.")
    note += (" CLIP score is 100 · mean max(cos, 0), with its standard deviation over images. "
             "★ marks the lowest FID. Config: guidance weight w · thresholding · steps (full "
             "keys in the CSV).")
    shown = {c.key for c in cols}
    raw = [k for k in CONFIG_FIELDS + SUMMARY_VALUES + ("bootstrap_samples", "bootstrap_seed")
           if k in rows[0] and k not in shown]
    protocol = [k for k in rows[0] if is_protocol_column(k)]
    return Table(f"coco_summary_{slug(run.name)}", f"{run.name}: summary ({run.model_id})", cols,
                 rows, note, row_class=lambda r: "best" if r["config_key"] == best else "",
                 extra_csv=raw + protocol)


def _digits(rows: list[dict], key: str) -> int:
    values = [abs(number(r.get(key))) for r in rows if math.isfinite(number(r.get(key)))]
    return 3 if values and max(values) < 10 else 2


def metric_cell(metric: MetricColumn, digits: int):
    lo, hi = f"{metric.key}_ci_low", f"{metric.key}_ci_high"
    return lambda r: with_ci(r.get(metric.key), r.get(lo), r.get(hi), digits)


def extra_metric_tables(run: RunData) -> list[Table]:
    """The metrics beyond FID and CLIP score (`--metrics`: CMMD, FD on other networks,
    precision / recall / density / coverage), EXTRA_PER_TABLE per table, with their CIs."""
    extra = [m for m in metric_columns(run.summary) if m.key not in PAPER_METRICS]
    tables = []
    for i in range(0, len(extra), EXTRA_PER_TABLE):
        part = extra[i:i + EXTRA_PER_TABLE]
        cols = [config_column()] + [
            Column(m.key, f"{m.label} [95% CI]" if m.has_ci else m.label, fixed(3), True,
                   cell=metric_cell(m, _digits(run.summary, m.key)) if m.has_ci else None)
            for m in part]
        part_no = i // EXTRA_PER_TABLE + 1 if len(extra) > EXTRA_PER_TABLE else None
        tables.append(Table(
            f"coco_metrics_{slug(run.name)}" + (f"_{part_no}" if part_no else ""),
            f"{run.name}: more metrics" + (f" ({part_no})" if part_no else ""), cols, run.summary,
            "Metrics named after quantity and feature network (FD: Fréchet distance; precision, "
            "recall, density, coverage of Naeem et al. 2020); ↓ lower / ↑ higher is better; 95% "
            f"CIs: bootstrap over prompts ({_bootstrap_text(run.summary, run.spec)}).",
            extra_csv=[f"{m.key}_ci_{e}" for m in part if m.has_ci for e in ("low", "high")]))
    return tables


P_SIGNIFICANT = 0.05


def _not_significant(r: dict, metric: str) -> bool:
    """A difference with a p-value of at least 0.05 (the reference against itself has none)."""
    p = number(r.get(f"delta_{metric}_p"))
    return math.isfinite(p) and p >= P_SIGNIFICANT and r["config_key"] != r["reference_key"]


def _p_text(r: dict, key: str) -> str:
    """A bootstrap p-value; below its resolution 1/B (or 0.001) as '<' that bound."""
    p = number(r.get(key))
    if not math.isfinite(p):
        return "–"
    b = number(r.get("bootstrap_samples"))
    floor = max(0.001, 1.0 / b if math.isfinite(b) and b > 0 else 0.0)
    return f"<{floor:.2g}" if p < floor else f"{p:.3f}"


def _delta_columns(metric: str, label: str) -> list[Column]:
    key = f"delta_{metric}"
    sign = signed(2)

    def delta(r: dict) -> str:
        if r["config_key"] == r["reference_key"]:
            return "reference"
        lo, hi = number(r.get(f"{key}_ci_low")), number(r.get(f"{key}_ci_high"))
        out = sign(r.get(key))
        if math.isfinite(lo) and math.isfinite(hi):
            out += f" [{sign(lo)}, {sign(hi)}]"
        return out + (" n.s." if _not_significant(r, metric) else "")

    def css(r: dict) -> str:
        return "ns" if _not_significant(r, metric) else ""

    return [Column(key, f"{label} [95% CI]", numeric=True, cell=delta, cell_class=css),
            Column(f"{key}_p", "p", numeric=True, cell_class=css,
                   cell=lambda r: "" if r["config_key"] == r["reference_key"]
                   else _p_text(r, f"{key}_p"))]


def comparisons_table(run: RunData) -> Table | None:
    """metrics/comparisons.csv: each config minus the reference config, paired on prompts and
    seeds, with 95% CIs and p-values; differences with p ≥ 0.05 are greyed and marked n.s."""
    rows = run.comparisons
    if not rows:
        return None
    refs = list(dict.fromkeys(r["reference_key"] for r in rows))
    cols = [config_column()]
    if len(refs) > 1:
        cols.append(Column("reference_key", "reference", key_col=True))
    cols.append(Column("n_prompts", "prompts", numeric=True))
    has_fid = any(math.isfinite(number(r.get("delta_fid"))) for r in rows)
    if has_fid:
        cols += _delta_columns("fid", "ΔFID ↓")
    cols += _delta_columns("clip", "ΔCLIP ↑")
    unpaired = [r for r in rows if str(r.get("paired", "True")).strip().lower()
                in ("false", "0", "no")]
    if unpaired:
        cols.append(Column("paired", "paired"))
    note = ("Δ = config − reference on the same prompts and seeds; 95% CIs and two-sided "
            f"p-values from a paired bootstrap over prompts ({_bootstrap_text(rows, run.spec)}). "
            + ("ΔFID < 0 and ΔCLIP > 0 favour the config. " if has_fid else
               "ΔCLIP > 0 favours the config. ")
            + "Greyed cells marked n.s. have p ≥ 0.05: the difference is not significant at the "
            "5% level (which is not evidence that there is none).")
    if unpaired:
        note += " Rows with paired = false are not paired comparisons: the above does not hold."
    shown = {c.key for c in cols}
    extra = [k for k in ("reference_key", "n_images", "delta_fid_ci_low", "delta_fid_ci_high",
                         "delta_clip_ci_low", "delta_clip_ci_high", "paired",
                         "bootstrap_samples", "bootstrap_seed") if k in rows[0] and k not in shown]
    title = f"{run.name}: paired comparisons against the reference config" + (
        f" {compact_key(refs[0])}" if len(refs) == 1 else "s (one per row)")
    return Table(f"comparisons_{slug(run.name)}", title, cols, rows, note, extra_csv=extra,
                 row_class=lambda r: "reference" if r["config_key"] == r["reference_key"] else "")


def published_table() -> Table:
    rows = [{"model": m, "fid": v, "source": PUBLISHED_SOURCE} for m, v in PUBLISHED_FID30K]
    return Table("published_fid30k", "Published zero-shot FID-30K (not this run)",
                 [Column("model", "model"), Column("fid", "FID-30K (published)", fixed(2), True),
                  Column("source", "source")], rows,
                 "Numbers reported in papers, for orientation only; they were not measured here.")


PAPER_N = 30000


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def paper_protocol(run: RunData) -> tuple[bool, str]:
    """Whether the run's FID is measured under the paper's protocol (COCO val2014 references,
    the official 2048-d Inception pool3 weights, 256×256), so the published FID-30K numbers may
    stand beside it; and a note when it has fewer than 30K images per config. A calibration-
    world run never is."""
    from .calibration import is_calibration_run

    if not run.summary or not run.has_fid or is_calibration_run(run):
        return False, ""
    metrics = run.spec.get("metrics", {}) or {}
    proto = dict(metrics.get("fid") or {})
    proto.update({k[4:]: v for k, v in run.summary[0].items() if k.startswith("fid_")
                  and is_protocol_column(k)})
    extractor = str(proto.get("feature_extractor", "")).lower()
    split = ((metrics.get("reference") or {}).get("split")
             or ((run.run.get("reference") or {}).get("protocol") or {}).get("split"))
    ok = ("inception" in extractor and "not inception" not in extractor
          and number(proto.get("dims")) == 2048 and number(proto.get("resolution")) == 256
          and _truthy(proto.get("weights_official")) and split == "val2014")
    if not ok:
        return False, ""
    n = min(number(r.get("n_images")) for r in run.summary)
    if n >= PAPER_N:
        return True, ""
    return True, (f"This run has {n:.0f} images per config, not 30K: FID is biased upward at "
                  "smaller N, so the published numbers are a rough orientation only.")


def coco_section(runs: list[RunData]) -> dict | None:
    runs = [r for r in runs if r.summary and r.has_fid]
    if not runs:
        return None
    blocks = []
    any_paper = False
    for run in runs:
        best = best_fid_key(run.summary)
        n = sorted({r["n_images"] for r in run.summary})
        blocks.append(heading(f"{run.name}: {run.model_id}", f"coco-{slug(run.name)}"))
        blocks.append({"kind": "table", "table": summary_table(run, best)})
        blocks += [{"kind": "table", "table": t} for t in extra_metric_tables(run)]
        paper, note = paper_protocol(run)
        any_paper |= paper
        title = f"{run.name}: {run.model_id}, {'/'.join(n)} images per config"
        blocks.append({"kind": "figure", "figure": pareto_figure(
            run.summary, best, fig_id=f"fig-pareto-{slug(run.name)}", title=title,
            references=PUBLISHED_FID30K if paper else (), reference_note=note)})
        comparisons = comparisons_table(run)
        if comparisons is not None:
            blocks.append({"kind": "table", "table": comparisons})
    if any_paper:
        blocks.append({"kind": "table", "table": published_table()})
    return {"id": "coco", "title": "COCO: FID and CLIP score over the sweep", "blocks": blocks}


# ---------------------------------------------------------------------------------------------
# DrawBench / PartiPrompts


def _overall(rows: list[dict]) -> dict[str, dict]:
    return {r["config_key"]: r for r in rows if r["category"] == OVERALL}


def categories_table(run: RunData) -> Table:
    cols = [config_column(), Column("category", "category"),
            Column("n_prompts", "n prompts", numeric=True),
            Column("n_images", "n images", numeric=True),
            Column("clip_score", "CLIP score ↑ (100·cos) [95% CI]", numeric=True,
                   cell=lambda r: with_ci(r["clip_score"], r["ci_low"], r["ci_high"]))]
    boot = run.spec.get("metrics", {}).get("bootstrap", {})
    note = (f"95% CIs: percentile bootstrap over prompts ({boot.get('samples', '?')} resamples, "
            f"seed {boot.get('seed', '?')}).")
    return Table(f"categories_{slug(run.name)}", f"{run.name}: CLIP score per category", cols,
                 run.categories, note, extra_csv=["ci_low", "ci_high"],
                 row_class=lambda r: "overall" if r["category"] == OVERALL else "")


def prompt_extremes(run: RunData, config_key: str, n: int = 5) -> Table | None:
    """The n worst and best prompts of one config by the mean of their images' CLIP scores
    (per_image.csv, 100 · max(cos, 0) per image, as in categories.csv)."""
    scores: dict[str, list[float]] = defaultdict(list)
    for r in run.per_image:
        if r["config_key"] == config_key:
            scores[r["prompt_id"]].append(100.0 * max(number(r["clip_cosine"]), 0.0))
    if not scores:
        return None
    prompts = {p["prompt_id"]: p for p in run.prompts}
    ranked = sorted(scores, key=lambda p: (sum(scores[p]) / len(scores[p]), p))
    n = min(n, max(1, len(ranked) // 2))  # a prompt is either among the worst or the best
    picks = [("worst", p) for p in ranked[:n]]
    picks += [("best", p) for p in reversed(ranked[-n:]) if p not in ranked[:n]]
    rows = []
    for which, pid in picks:
        image = run.image_of(config_key, pid, 0)
        rows.append({"which": which, "prompt_id": pid,
                     "category": prompts.get(pid, {}).get("category", ""),
                     "text": prompts.get(pid, {}).get("text", ""),
                     "clip_score": sum(scores[pid]) / len(scores[pid]),
                     "n_images": len(scores[pid]),
                     "image": Thumb(thumbnail(image, 96), run.root.name + "/" +
                                    image.relative_to(run.root).as_posix(),
                                    f"image 0 of {pid}") if image else None})
    cols = [Column("which", ""), Column("prompt_id", "prompt"), Column("category", "category"),
            Column("text", "text"), Column("clip_score", "mean CLIP score (100·cos)", fixed(2), True),
            Column("n_images", "n images", numeric=True), Column("image", "image 0")]
    return Table(f"prompt_extremes_{slug(run.name)}",
                 f"{run.name}: worst and best prompts of {compact_key(config_key)}", cols, rows,
                 "A prompt's score is the mean CLIP score of its images (per_image.csv).",
                 row_class=lambda r: r["which"])


def drawbench_section(runs: list[RunData]) -> dict | None:
    runs = [r for r in runs if r.categories]
    if not runs:
        return None
    blocks = []
    for run in runs:
        suite = run.spec.get("prompts", {})
        blocks.append(heading(f"{run.name}: {suite.get('version') or suite.get('suite', '')}, "
                              f"{run.model_id}", f"drawbench-{slug(run.name)}"))
        overall = _overall(run.categories)
        ordered = sorted(overall, key=lambda k: -number(overall[k]["clip_score"]))
        keys = [g["config_key"] for g in run.grid if g.get("config_key") in overall] or ordered
        shown = keys if len(keys) <= MAX_BAR_CONFIGS else ordered[:MAX_BAR_CONFIGS]
        title = f"{run.name}" + ("" if shown == keys else
                                 f" ({len(shown)} of {len(keys)} configs: best overall)")
        blocks.append({"kind": "figure", "figure": category_figure(
            run.categories, shown, fig_id=f"fig-categories-{slug(run.name)}", title=title)})
        blocks.append({"kind": "table", "table": categories_table(run)})
        comparisons = comparisons_table(run)
        if comparisons is not None:
            blocks.append({"kind": "table", "table": comparisons})
        if ordered:
            table = prompt_extremes(run, ordered[0])
            if table is not None:
                blocks.append({"kind": "table", "table": table})
    return {"id": "drawbench", "title": "DrawBench / PartiPrompts: CLIP score per category",
            "blocks": blocks}


# ---------------------------------------------------------------------------------------------
# image grids


def image_grids(run: RunData, per_category: int = 2, size: int = 128) -> list[dict]:
    """Per category, the first prompts with images: rows = thresholding (and other axes that
    vary), columns = guidance weights; the same prompt, seed and k in every cell."""
    grid = [g for g in run.grid if "config_key" in g]
    if not grid or not run.samples:
        return []
    varying = [k for k in ("aug_level", "sampler", "steps") if len({str(g.get(k)) for g in grid}) > 1]
    row_of = {g["config_key"]: ", ".join([str(g.get("thresholding"))] +
                                         [f"{k.replace('_', ' ')} {g.get(k)}" for k in varying])
              for g in grid}
    rows = list(dict.fromkeys(row_of.values()))
    cols = sorted({str(g.get("guidance")) for g in grid}, key=guidance_value)
    cell_key = {(row_of[g["config_key"]], str(g.get("guidance"))): g["config_key"] for g in grid}
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for p in run.prompts:
        by_cat[p.get("category") or "uncategorised"].append(p)
    out = []
    for category, prompts in by_cat.items():
        chosen = [p for p in prompts
                  if any(run.image_of(k, p["prompt_id"]) for k in cell_key.values())][:per_category]
        for p in chosen:
            body = []
            for row in rows:
                cells = []
                for col in cols:
                    key = cell_key.get((row, col))
                    path = run.image_of(key, p["prompt_id"]) if key else None
                    cells.append(None if path is None else
                                 {"src": thumbnail(path, size), "title": key,
                                  "alt": f"{p['prompt_id']} at {key}"})
                body.append({"label": row, "cells": cells})
            out.append({"kind": "grid", "category": category, "prompt": p["text"],
                        "prompt_id": p["prompt_id"], "columns": [f"w={c}" for c in cols],
                        "rows": body})
    return out


def grids_section(runs: list[RunData], per_category: int) -> dict | None:
    blocks = []
    for run in runs:
        grids = image_grids(run, per_category)
        if grids:
            blocks.append(heading(f"{run.name}: {run.model_id}", f"grids-{slug(run.name)}"))
            blocks.append({"kind": "text", "text": "Rows: thresholding mode; columns: guidance "
                           "weight. Every cell is image 0 of the prompt with the same seed, so "
                           "differences come from the sampling config alone."})
            blocks += grids
    if not blocks:
        return None
    return {"id": "grids", "title": "Image grids: the same prompts across the sweep",
            "blocks": blocks}


