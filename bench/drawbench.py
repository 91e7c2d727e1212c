"""DrawBench / PartiPrompts / a prompt file: images per prompt, CLIP score per category.

Generates `--samples-per-prompt` images of every prompt for every sampling config through the
run machinery of the COCO benchmark (the same adapters, resumable, sharded over torchrun ranks,
the same per-image seeds in every config), scores each image with CLIP, and writes, next to the
run's metrics/summary.csv, metrics/categories.csv: per config, one row per category and one
`overall` row, with the mean CLIP score and a 95% CI from a seeded bootstrap over prompts.

    python -m bench.drawbench pairs ...   builds pairwise rating tasks (see bench/pairs.py)

Stages (each resumes: rerun the same command after a crash or kill):
  1. CLIP weights, the prompt suite, the checkpoint or images are checked before any work;
  2. generation of every (config, prompt, k) image;
  3. CLIP cosines per image, then summary.csv and categories.csv.

With no arguments it runs offline on a CPU in minutes: the bundled tiny cascade on the
calibration world's prompts.csv (its categories are the world's skills: Colors, Counting,
Positional, Binding, Conflicting), scored by the world's CLIP-style tower, few prompts, images
and steps. A --prompts file inside a calibration world (a folder with world.json) gets the same
defaults; any other suite keeps the paper-style ones. run.json records which were used.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .cli import (HelpFormatter, add_clip_args, add_execution_args, add_sampling_args,
                  add_statistics_args, fill_defaults, statistics_options, two_defaults)
from .coco_fid import (UserError, _device, _now, _prompts_sha256, check_reference_config,
                       default_model, generate_images, load_model, model_spec, open_run)

# Flags left out on a named suite or a prompt file that is not a calibration world's.
PAPER = {"samples_per_prompt": 8, "guidance": "1.35/8",
         "thresholding": "dynamic:0.995", "steps": 64, "sampler": "ddim", "clip_model": "ViT-L-14"}

EPILOG = """examples:
  # no arguments: the bundled cascade on the calibration world's prompts, offline, on a CPU
  python -m bench.drawbench

  # DrawBench (200 prompts, 8 images each) at the COCO headline setting
  python -m bench.drawbench --model ckpt/ --out runs/drawbench

  # a quick look: 2 prompts per category, 2 images each, two guidance weights
  python -m bench.drawbench --model ckpt/ --limit-per-category 2 --samples-per-prompt 2 \\
      --guidance 1,5 --out runs/drawbench_quick

  # PartiPrompts from a local copy, two categories only
  python -m bench.drawbench --model ckpt/ --prompts parti:data/PartiPrompts.tsv \\
      --categories Animals,Vehicles --out runs/parti

  # rescore the images of an earlier run (or images rendered elsewhere)
  python -m bench.drawbench --model images:runs/drawbench/images --out runs/drawbench_rescored

  # pairwise rating tasks: run A against run B, 8 images a side
  python -m bench.drawbench pairs --a runs/drawbench --b runs/other --out tasks.jsonl
"""

CATEGORY_FIELDS = ["config_key", "guidance", "thresholding", "aug_level", "sampler", "steps",
                   "category", "n_prompts", "n_images", "clip_score", "ci_low", "ci_high",
                   "bootstrap_samples", "bootstrap_seed"]
OVERALL = "overall"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.drawbench", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--model", default=None, metavar="CKPT|KIND:...",
                   help="imagen_ref checkpoint directory, or images:DIR "
                   "(DIR/[<config_key>/]<prompt_id>/<k>.png); diffusers:PATH_OR_ID (a diffusers "
                   "text-to-image pipeline: a save_pretrained folder, or a repo id in the Hugging "
                   "Face cache); python:MODULE:CALLABLE (bench/python_adapter.py) (default: the "
                   "bundled calibration-world cascade)")
    p.add_argument("--prompts", default=None, metavar="drawbench|parti|FILE",
                   help="suite name (cached copy, downloaded on first use), drawbench:PATH, "
                   "parti:PATH, or a CSV/TSV/JSONL file with a text column (default: the "
                   "calibration world's prompts.csv, the world made once in the cache; "
                   "`--prompts drawbench` for DrawBench)")
    p.add_argument("--prompts-cache", default=None, metavar="DIR",
                   help="download cache of the named suites (default: $IMAGEN_BENCH_CACHE/prompts "
                   "or ~/.cache/imagen_bench/prompts)")
    p.add_argument("--out", default="runs/drawbench", metavar="DIR",
                   help="run directory (resumed if it exists)")
    p.add_argument("--samples-per-prompt", type=int, default=None, metavar="K",
                   help="images per prompt (the paper's raters compared sets of 8)"
                   + two_defaults(PAPER["samples_per_prompt"], cw_default("samples_per_prompt")))
    p.add_argument("--limit-per-category", type=int, default=None, metavar="N",
                   help="only the first N prompts of each category"
                   + two_defaults("all", cw_default("limit_per_category")))
    p.add_argument("--categories", default=None, metavar="NAME,...",
                   help="comma list of categories (default: all)")
    add_sampling_args(p, guidance=None, thresholding=None, steps=None,
                      guidance_help="; the paper states no DrawBench setting, the default is its "
                      "COCO headline one" + two_defaults(PAPER["guidance"], cw_default("guidance")),
                      thresholding_help=two_defaults(PAPER["thresholding"],
                                                     cw_default("thresholding")),
                      steps_help=two_defaults(PAPER["steps"], cw_default("steps")), sampler=None,
                      sampler_help=two_defaults(PAPER["sampler"], cw_default("sampler")))
    add_execution_args(p)
    met = p.add_argument_group("metrics")
    add_clip_args(met, model=None, model_help=two_defaults(PAPER["clip_model"],
                                                           cw_default("clip_model")))
    add_statistics_args(met, bootstrap=1000, fid=False)
    return p


def cw_default(name: str):
    """The embedded default's value of a flag (the data-defaults plugin, bench.plugins)."""
    from .plugins import data_defaults

    d = data_defaults()
    return d.flags("drawbench").get(name) if d is not None else None


def world_of(prompts: str) -> Path | None:
    """The plugin data folder a --prompts value lies in (a prompt file inside it), else None."""
    from .plugins import defaults_of

    folder = Path(prompts.split(":", 1)[1] if prompts.startswith("drawbench:") else prompts).parent
    return folder if defaults_of(folder) is not None else None


def resolve_defaults(args, *, progress: bool = True) -> dict:
    """Fill in the flags left out (the data-defaults plugin's rule; for the calibration world,
    calibration_world/defaults.py); returns run.json's "defaults" and, on the plugin's data,
    "world"."""
    from .plugins import data_defaults, defaults_of

    filled = {}
    if args.model is None:
        args.model = filled["model"] = default_model()
    if args.prompts is None:
        d = data_defaults()
        if d is None:
            raise UserError("no --prompts given and no embedded default installed")
        try:
            root = d.ensure_data(progress=progress)
        except (OSError, ValueError) as e:
            raise UserError(f"the {d.name} data could not be made: {e}") from None
        args.prompts = filled["prompts"] = str(root / "prompts.csv")
    world = world_of(args.prompts)
    plugin = defaults_of(world) if world else None
    filled.update(fill_defaults(args, {**PAPER, **plugin.flags("drawbench")} if plugin else PAPER))
    record = {"defaults": {"set": plugin.name if plugin else "paper", "filled": filled}}
    if plugin:
        record["world"] = plugin.record(world, filled)
    return record


# ---------------------------------------------------------------------------------------------
# stage 1: checks


def _check(args) -> list:
    from .sampling import build_grid
    from .weights import WeightsNotFoundError, check_weights

    if args.batch_size < 1 or args.samples_per_prompt < 1 or args.bootstrap < 1:
        raise UserError("--batch-size, --samples-per-prompt and --bootstrap must be at least 1")
    if args.limit_per_category is not None and args.limit_per_category < 1:
        raise UserError("--limit-per-category must be at least 1")
    try:
        configs = build_grid(args.guidance, args.thresholding, args.aug_level, args.sampler,
                             args.steps)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_reference_config(args, configs)
    try:  # first: a missing file stops the command before any work
        check_weights(fid=False, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained)
    except (WeightsNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    return configs


def _suite(args) -> tuple[list[dict], dict]:
    """(prompts.jsonl records, suite provenance)."""
    from drawbench.suites import SuiteFormatError, load_suite, select

    try:
        suite = load_suite(args.prompts, cache_dir=args.prompts_cache)
        categories = [c for c in (args.categories or "").split(",") if c.strip()] or None
        records = select(suite.records, categories, args.limit_per_category)
    except (SuiteFormatError, ValueError) as e:
        raise UserError(str(e)) from None
    if not records:
        raise UserError(f"{args.prompts}: no prompts selected")
    source = {**suite.describe(), "selected": {"categories": categories,
                                               "limit_per_category": args.limit_per_category,
                                               "n": len(records)}}
    return [r.to_json() for r in records], source


def _spec(args, adapter, configs, prompts, source, scorer) -> dict:
    """What determines the results; a rerun into the same --out must match it."""
    model = model_spec(args, adapter)
    return {
        "benchmark": "drawbench",
        "model": model,
        "prompts": {"suite": source["suite"], "version": source["version"], "n": len(prompts),
                    "sha256": _prompts_sha256(prompts)},
        "grid": [c.to_dict() for c in configs],
        "base_seed": args.seed,
        "images_per_prompt": args.samples_per_prompt,
        "metrics": {"clip": scorer.protocol,
                    "bootstrap": {"samples": args.bootstrap, "seed": args.bootstrap_seed,
                                  "unit": "prompt", "interval": "percentile 95%"}},
    }


# ---------------------------------------------------------------------------------------------
# stage 3: per-category tables


def bootstrap_ci(values: np.ndarray, samples: int, rng: np.random.Generator, *,
                 low: float = 0.0, high: float = 100.0) -> tuple[float, float]:
    """95% interval of the mean of `values` resampled with replacement (the re-centred
    percentile interval of bench.metrics.resample, within [low, high])."""
    from .metrics.resample import interval

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    idx = rng.integers(0, len(values), size=(samples, len(values)))
    return interval(float(values.mean()), values[idx].mean(axis=1), low=low, high=high)


def category_rows(per_image: list[dict], prompts: list[dict], configs, *, samples: int,
                  seed: int) -> list[dict]:
    """Per config: one row per category (suite order) and one `overall` row.

    The score of a prompt is the mean of 100 · max(cos, 0) over its images; a category's score is
    the mean over its prompts (= the mean over its images when every prompt has K images), and
    its CI resamples prompts. Each (config, category) bootstrap has its own seeded generator, so
    a row does not depend on which other rows are computed.
    """
    from imagen_ref.device import derive_seed

    category = {p["prompt_id"]: p.get("category", "") for p in prompts}
    order = list(dict.fromkeys(category[p["prompt_id"]] for p in prompts))
    rows = []
    for config in configs:
        per_prompt: dict[str, list[float]] = {}
        for r in per_image:
            if r["config_key"] == config.config_key:
                per_prompt.setdefault(r["prompt_id"], []).append(
                    100.0 * max(float(r["clip_cosine"]), 0.0))
        groups = [(c, [p for p in per_prompt if category[p] == c]) for c in order]
        groups.append((OVERALL, list(per_prompt)))
        for name, ids in groups:
            if not ids:
                continue
            scores = np.array([np.mean(per_prompt[p]) for p in ids])
            rng = np.random.default_rng(derive_seed(seed, config.config_key, name))
            low, high = bootstrap_ci(scores, samples, rng)
            rows.append({**config.to_dict(), "category": name, "n_prompts": len(ids),
                         "n_images": sum(len(per_prompt[p]) for p in ids),
                         "clip_score": repr(float(scores.mean())), "ci_low": repr(low),
                         "ci_high": repr(high), "bootstrap_samples": samples,
                         "bootstrap_seed": seed})
    return rows


def write_categories(run, configs, *, samples: int, seed: int) -> Path:
    """metrics/categories.csv from per_image.csv and prompts.jsonl (atomic)."""
    from .runs import atomic_write_text, csv_text, read_csv

    rows = category_rows(read_csv(run.per_image), run.read_prompts(), configs, samples=samples,
                         seed=seed)
    path = run.metrics / "categories.csv"
    atomic_write_text(path, csv_text(rows, CATEGORY_FIELDS))
    return path


# ---------------------------------------------------------------------------------------------
# the command


def run_drawbench(args, argv: list[str]) -> dict | None:
    """Every stage; returns {rows, categories, n_images} on rank 0, else None."""
    from .metrics.clip_score import make_clip_scorer
    from .runner import distributed, plan_items
    from .runs import RunDir, provenance
    from .scoring import Scorers, flatten_protocol, score_run
    from .weights import WeightsNotFoundError

    t0 = time.perf_counter()
    extra = resolve_defaults(args, progress=not args.no_progress)
    configs = _check(args)
    prompts, source = _suite(args)
    device = _device(args)
    with distributed(device.type) as dist:
        items = plan_items(configs, prompts, args.samples_per_prompt, args.seed)
        adapter = load_model(args, device, configs, items)
        try:
            scorer = make_clip_scorer(args.clip_model, args.clip_pretrained, device=device)
        except (WeightsNotFoundError, ValueError) as e:
            raise UserError(str(e)) from None
        run = RunDir(args.out)
        spec = _spec(args, adapter, configs, prompts, source, scorer)
        record = {"command": "python -m bench.drawbench", "argv": argv,
                  "model": adapter.describe(), "prompt_source": source, "args": vars(args),
                  **provenance(device, dist.world_size), "started": _now(), **extra}
        open_run(run, spec, record, prompts, dist)
        stats = generate_images(run, adapter, configs, items, args, dist)
        scorers = Scorers(None, scorer, options=statistics_options(args),
                          protocol=flatten_protocol("clip", scorer.protocol))
        rows = score_run(run, configs, scorers, batch_size=args.batch_size, dist=dist,
                         progress=not args.no_progress)
    if rows is None:
        return None
    categories = write_categories(run, configs, samples=args.bootstrap,
                                  seed=args.bootstrap_seed)
    run.mark_stage("metrics", {"complete": True, "summary": run.relative(run.summary),
                               "categories": run.relative(categories)})
    run.update_run(finished=_now(), wall_seconds=round(time.perf_counter() - t0, 3))
    return {"rows": rows, "categories": categories, "n_images": stats.total}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pairs"]:
        from .pairs import main as pairs_main

        return pairs_main(argv[1:])
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        result = run_drawbench(args, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result is None:  # ranks other than 0
        return 0
    print(f"{result['n_images']} images, {len(result['rows'])} configs in "
          f"{time.perf_counter() - start:.0f} s")
    if world_of(args.prompts):
        print("calibration-world numbers (synthetic shapes, bundled metric networks): not "
              "comparable with DrawBench")
    print(f"results: {result['categories']}  summary: {Path(args.out) / 'metrics' / 'summary.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
