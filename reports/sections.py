"""The run-based sections: provenance, COCO, DrawBench / PartiPrompts, image grids.

A section is {'id', 'title', 'blocks'}; a block is a dict with a 'kind' the template knows:
heading, text, warnings, notes, table, figure, grid.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict

from .figures import (PUBLISHED_FID30K, PUBLISHED_SOURCE, category_figure, guidance_value,
                      pareto_figure, thumbnail)
from .rundata import RunData, number
from .tables import Column, Table, Thumb, fixed, kv_table, with_ci

OVERALL = "overall"
MAX_BAR_CONFIGS = 6


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-").lower() or "run"


def heading(text_: str, id_: str = "") -> dict:
    return {"kind": "heading", "text": text_, "id": id_}


# ---------------------------------------------------------------------------------------------
# provenance


def _protocol_items(prefix: str, protocol: dict) -> list[tuple[str, object]]:
    return [(f"{prefix} {k}", json.dumps(v) if isinstance(v, (dict, list)) else v)
            for k, v in protocol.items()]


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
              ("prompt source", json.dumps({k: v for k, v in source.items()
                                            if k not in ("categories",)}, sort_keys=True))]
    items += [("base seed", spec.get("base_seed")),
              ("images per prompt", spec.get("images_per_prompt")),
              ("grid", f"{len(run.grid)} configs: " + ", ".join(c.get("config_key", "?")
                                                                 for c in run.grid))]
    metrics = spec.get("metrics", {}) or {}
    for name in ("fid", "clip"):
        if metrics.get(name):
            items += _protocol_items(f"{name.upper()} protocol", metrics[name])
    if metrics.get("reference"):
        items.append(("FID reference", json.dumps(metrics["reference"], sort_keys=True)))
    ref = r.get("reference") or {}
    if ref.get("protocol", {}).get("files_sha256"):
        items.append(("FID reference images", f"n={ref.get('n')}, files sha256 "
                      f"{ref['protocol']['files_sha256']}"))
    if metrics.get("bootstrap"):
        items.append(("bootstrap", json.dumps(metrics["bootstrap"], sort_keys=True)))
    git = r.get("git", {}) or {}
    items += [("git commit", f"{git.get('commit')}{' (dirty tree)' if git.get('dirty') else ''}"),
              ("device", json.dumps(r.get("device"), sort_keys=True)),
              ("versions", ", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items())),
              ("started", r.get("started")), ("finished", r.get("finished")),
              ("wall time (s)", r.get("wall_seconds"))]
    gen = (r.get("stages") or {}).get("generation")
    if gen:
        items.append(("generation", f"{gen.get('images')} images ({gen.get('skipped')} "
                      f"resumed), {gen.get('seconds')} s"))
    return kv_table(f"provenance_{slug(run.name)}", f"{run.name}: provenance", items)


def provenance_section(runs: list[RunData]) -> dict:
    blocks = []
    for run in runs:
        blocks.append(heading(run.name, f"provenance-{slug(run.name)}"))
        blocks.append({"kind": "table", "table": provenance_table(run)})
    return {"id": "provenance", "title": "Provenance", "blocks": blocks}


# ---------------------------------------------------------------------------------------------
# COCO


def best_fid_key(rows: list[dict]) -> str | None:
    finite = [r for r in rows if math.isfinite(number(r.get("fid")))]
    return min(finite, key=lambda r: number(r["fid"]))["config_key"] if finite else None


def summary_table(run: RunData, best: str | None) -> Table:
    has_kid = any(math.isfinite(number(r.get("kid"))) for r in run.summary)
    cols = [Column("config_key", "config"), Column("guidance", "guidance w"),
            Column("thresholding", "thresholding"), Column("aug_level", "aug level"),
            Column("sampler", "sampler"), Column("steps", "steps"),
            Column("n_images", "n images", numeric=True)]
    if run.has_fid:
        cols.append(Column("fid", "FID ↓ (n images)", fixed(2), True))
    if has_kid:
        cols += [Column("kid", "KID ↓", fixed(4), True), Column("kid_std", "KID sd", fixed(4), True)]
    cols += [Column("clip_score", "CLIP score ↑ (100·cos)", fixed(2), True),
             Column("clip_score_std", "CLIP sd over images", fixed(2), True),
             Column("seconds", "generation time (s)", fixed(1), True)]
    note = ("FID is one estimate over n images (no CI); CLIP score is 100 · mean max(cos, 0) with "
            "its standard deviation over images. ★ marks the lowest FID.")
    return Table(f"coco_summary_{slug(run.name)}", f"{run.name}: summary ({run.model_id})", cols,
                 run.summary, note, row_class=lambda r: "best" if r["config_key"] == best else "",
                 extra_csv=[k for k in run.summary[0] if k.startswith(("fid_", "clip_"))])


def published_table() -> Table:
    rows = [{"model": m, "fid": v, "source": PUBLISHED_SOURCE} for m, v in PUBLISHED_FID30K]
    return Table("published_fid30k", "Published zero-shot FID-30K (not this run)",
                 [Column("model", "model"), Column("fid", "FID-30K (published)", fixed(2), True),
                  Column("source", "source")], rows,
                 "Numbers reported in papers, for orientation only; they were not measured here.")


def coco_section(runs: list[RunData]) -> dict | None:
    runs = [r for r in runs if r.summary and r.has_fid]
    if not runs:
        return None
    blocks = []
    for run in runs:
        best = best_fid_key(run.summary)
        n = sorted({r["n_images"] for r in run.summary})
        blocks.append(heading(f"{run.name}: {run.model_id}", f"coco-{slug(run.name)}"))
        blocks.append({"kind": "table", "table": summary_table(run, best)})
        title = f"{run.name}: {run.model_id}, {'/'.join(n)} images per config"
        blocks.append({"kind": "figure", "figure": pareto_figure(
            run.summary, best, fig_id=f"fig-pareto-{slug(run.name)}", title=title)})
    blocks.append({"kind": "table", "table": published_table()})
    return {"id": "coco", "title": "COCO: FID and CLIP score over the sweep", "blocks": blocks}


# ---------------------------------------------------------------------------------------------
# DrawBench / PartiPrompts


def _overall(rows: list[dict]) -> dict[str, dict]:
    return {r["config_key"]: r for r in rows if r["category"] == OVERALL}


def categories_table(run: RunData) -> Table:
    cols = [Column("config_key", "config"), Column("category", "category"),
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
                 f"{run.name}: worst and best prompts of {config_key}", cols, rows,
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


