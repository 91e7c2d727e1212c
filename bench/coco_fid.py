"""COCO zero-shot FID-30K and CLIP score over a grid of guidance weights and thresholding modes.

The Imagen protocol (paper §3, App. D.2): 30K captions drawn at random from the COCO 2014
validation set (one caption of each of 30K distinct images), one image per caption, FID against
reference statistics of the full validation set at 256×256, CLIP score of every image with its
caption, swept over guidance weights and thresholding modes; the results are the run directory
of DESIGN.md with metrics/summary.csv and the FID-vs-CLIP Pareto plot pareto.png.

Stages (each resumes: rerun the same command after a crash or kill):
  1. weights, checkpoint, captions and images are checked before any work;
  2. reference statistics of the COCO images (cached, named by their protocol);
  3. generation of every (config, prompt) image, sharded over torchrun ranks;
  4. metrics from the image files, then summary.csv and pareto.png.

With no arguments it runs offline on a CPU in minutes: the bundled tiny cascade on the
calibration world (made once in the cache), with the world's own feature network and CLIP-style
tower and a small grid. Any --coco-root that is not a calibration world keeps the paper's
defaults (30K captions, 13 weights x 3 modes, Inception, ViT-L-14/openai); run.json records
which defaults were used (calibration_world/defaults.py has the rule).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cli import (HelpFormatter, add_clip_args, add_execution_args, add_sampling_args,
                  add_statistics_args, fill_defaults, statistics_options, two_defaults)
from .sampling import PAPER_GUIDANCE, PAPER_THRESHOLDING

# The paper's protocol: what a flag left out means on real data (Inception: the torch.hub cache).
PAPER = {"num_samples": 30000, "guidance": PAPER_GUIDANCE, "thresholding": PAPER_THRESHOLDING,
         "steps": 64, "sampler": "ddim", "clip_model": "ViT-L-14", "fid_network": "inception",
         "cmmd_network": "clip",
         "prdc_features": "dinov2", "metrics": "fid,clip_score"}

EPILOG = """examples:
  # no arguments: the bundled cascade on the calibration world, offline, a few minutes on a CPU
  python -m bench.coco_fid

  # the paper's sweep: 30K COCO val2014 captions, 13 guidance weights x 3 thresholding modes
  python -m bench.coco_fid --model ckpt/ --coco-root /data/coco --out runs/coco_sweep

  # the headline setting (base w=1.35, SR w=8) on 8 GPUs
  torchrun --nproc_per_node 8 -m bench.coco_fid --model ckpt/ --coco-root /data/coco \\
      --guidance 1.35/8 --thresholding dynamic:0.995 --out runs/coco_fid30k

  # images rendered elsewhere (DIR/<prompt_id>/0.png), with the prompts they were made for
  python -m bench.coco_fid --model images:renders/ --coco-root /data/coco \\
      --captions renders/prompts.csv --guidance 1 --thresholding none --out runs/external

  # offline: explicit weights files
  python -m bench.coco_fid --model ckpt/ --coco-root /data/coco --num-samples 10000 \\
      --inception-weights weights/pt_inception-2015-12-05-6726825d.pth \\
      --clip-model ViT-L-14 --clip-pretrained weights/open_clip_vit_l14.bin --out runs/fid10k
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.coco_fid", description=__doc__, epilog=EPILOG,
                                formatter_class=HelpFormatter)
    p.add_argument("--model", default=None, metavar="CKPT|KIND:...",
                   help="imagen_ref checkpoint directory, or images:DIR of rendered images "
                   "; diffusers:PATH_OR_ID (a diffusers text-to-image pipeline: a save_pretrained "
                   "folder, or a repo id in the Hugging Face cache); python:MODULE:CALLABLE "
                   "(bench/python_adapter.py) (default: the bundled calibration-world cascade)")
    p.add_argument("--coco-root", default=None, metavar="DIR",
                   help="COCO folder with annotations/captions_val2014.json and val2014/ "
                   "(default: the calibration world, made once in $IMAGEN_BENCH_CACHE/"
                   "calibration_world or ~/.cache/imagen_bench/calibration_world; a folder with "
                   "world.json is a calibration world and gets its defaults)")
    p.add_argument("--out", default="runs/coco_fid", metavar="DIR",
                   help="run directory (resumed if it exists)")
    p.add_argument("--num-samples", type=int, default=None, metavar="N",
                   help="captions (= images per config); with --captions, the first N of the file"
                   + two_defaults(PAPER["num_samples"], cw_default("num_samples")))
    p.add_argument("--captions", default=None, metavar="FILE",
                   help="CSV (caption|prompt|text column) or text file of prompts instead of COCO")
    p.add_argument("--caption-seed", type=int, default=0, help="seed of the random caption draw")
    add_sampling_args(p, guidance=None, thresholding=None, steps=None,
                      guidance_help=two_defaults(PAPER_GUIDANCE, cw_default("guidance")),
                      thresholding_help=two_defaults(PAPER_THRESHOLDING, cw_default("thresholding")),
                      steps_help=two_defaults(PAPER["steps"], cw_default("steps")),
                      aug_help=" (paper: 0 gives the best FID)", sampler=None,
                      sampler_help=two_defaults(PAPER["sampler"], cw_default("sampler")))
    add_execution_args(p)
    met = p.add_argument_group("metrics")
    met.add_argument("--metrics", default=None, metavar="LIST",
                     help="comma list of fid[:NET], kid[:NET], cmmd[:NET], prdc[:NET], fd-dinov2 "
                     "(= fid:dinov2), clip_score; NET is a registered feature network "
                     "(bench.metrics.networks)" + two_defaults("fid,clip_score", cw_default("metrics")))
    met.add_argument("--fid-network", default=None, metavar="NET",
                     help="feature network of FID" + two_defaults("inception", cw_default("fid_network")))
    met.add_argument("--cmmd-network", default=None, metavar="NET",
                     help="feature network of cmmd" + two_defaults("clip (ViT-L-14-336, openai)",
                                                                   cw_default("cmmd_network")))
    met.add_argument("--prdc-features", default=None, metavar="NET",
                     help="feature network of prdc" + two_defaults("dinov2", cw_default("prdc_features")))
    met.add_argument("--prdc-samples", type=int, default=10000, metavar="N",
                     help="precision/recall/density/coverage on at most N images per side (seeded)")
    met.add_argument("--network-weights", action="append", default=[], metavar="NET=SOURCE",
                     help="weights of a feature network: a file, folder or cached model id "
                     "(clip: MODEL@TAG|PATH; dinov2: a save_pretrained folder or hub id); repeatable")
    met.add_argument("--pareto", default="fid,clip_score", metavar="X,Y",
                     help="the two metrics of pareto.png (summary.csv columns, e.g. cmmd_clip,clip_score)")
    met.add_argument("--inception-weights", default=None, metavar="PATH",
                     help="torch-fidelity InceptionV3 weights file (default: the TORCH_HOME cache "
                     "copy); the same as --network-weights inception=PATH")
    met.add_argument("--fid-dims", type=int, choices=[64, 192, 768, 2048], default=2048,
                     help="Inception feature layer of FID (2048 = the standard pool3 features)")
    add_clip_args(met, model=None, model_help=two_defaults(PAPER["clip_model"],
                                                           cw_default("clip_model")))
    met.add_argument("--kid", action="store_true", help="also report KID")
    met.add_argument("--reference-limit", type=int, default=None, metavar="N",
                     help="use only the first N reference images (paper: the full val2014 set)")
    met.add_argument("--stats-cache", default=None, metavar="DIR",
                     help="cache folder of reference statistics (default: $IMAGEN_BENCH_CACHE/"
                     "fid_stats or ~/.cache/imagen_bench/fid_stats)")
    add_statistics_args(p.add_argument_group("uncertainty (bench.statistics)"))
    return p


def cw_default(name: str):
    """The embedded default's value of a flag (the data-defaults plugin, bench.plugins)."""
    from .plugins import data_defaults

    d = data_defaults()
    return d.flags("coco_fid").get(name) if d is not None else None


class UserError(Exception):
    """Bad input the user can fix; main() prints it and exits with code 2 (STYLE §12)."""


def default_model() -> str:
    """`--model` left out: the embedded default's model, or a UserError when there is none."""
    from .plugins import data_defaults

    d = data_defaults()
    if d is None:
        raise UserError("no --model given and no embedded default installed; pass --model CKPT")
    path = Path(d.default_model())
    if not (path / "cascade.json").is_file():
        raise UserError(f"the bundled {d.name} cascade is missing ({path}/cascade.json); "
                        "reinstall the package, or pass --model CKPT")
    return str(path)


def resolve_defaults(args, *, progress: bool = True) -> dict:
    """Fill in the flags left out (the data-defaults plugin's rule; for the calibration world,
    calibration_world/defaults.py).

    Returns run.json's "defaults" (which set, the values filled in) and, on the plugin's data,
    "world".
    """
    from .plugins import data_defaults, defaults_of

    filled = {}
    if args.model is None:
        args.model = filled["model"] = default_model()
    if args.coco_root is None:
        d = data_defaults()
        if d is None:
            raise UserError("no --coco-root given and no embedded default installed")
        try:
            args.coco_root = filled["coco_root"] = str(d.ensure_data(progress=progress))
        except (OSError, ValueError) as e:
            raise UserError(f"the {d.name} data could not be made: {e}") from None
    plugin = defaults_of(args.coco_root)
    filled.update(fill_defaults(args, {**PAPER, **plugin.flags("coco_fid")} if plugin else PAPER))
    record = {"defaults": {"set": plugin.name if plugin else "paper", "filled": filled}}
    if plugin:
        record["world"] = plugin.record(args.coco_root, filled)
    return record


def _grid(args) -> list:
    from .sampling import build_grid

    if args.batch_size < 1 or args.num_samples < 1:
        raise UserError("--batch-size and --num-samples must be at least 1")
    try:
        statistics_options(args)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        grid = build_grid(args.guidance, args.thresholding, args.aug_level, args.sampler,
                          args.steps)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_reference_config(args, grid)
    args.metric_plan = metric_plan(args)
    return grid


def network_sources(args) -> dict[str, str | None]:
    """--network-weights NET=SOURCE (and --inception-weights) as {network: source}."""
    sources = {}
    for item in getattr(args, "network_weights", None) or []:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise UserError(f"--network-weights {item!r}: expected NET=SOURCE")
        sources[name] = source
    if getattr(args, "inception_weights", None) is not None:
        sources.setdefault("inception", args.inception_weights)
    return sources


def metric_plan(args):
    """The MetricPlan of --metrics (bench.metrics.suite); UserError if it names unknown things."""
    from .metrics import networks
    from .metrics.suite import KINDS, parse_metrics

    defaults = {name: getattr(args, kind.default_flag) for name, kind in KINDS.items()}
    if args.prdc_samples < 2:
        raise UserError("--prdc-samples must be at least 2")
    try:
        plan = parse_metrics(args.metrics, defaults, kid=args.kid)
    except ValueError as e:
        raise UserError(str(e)) from None
    known = networks.names()
    unknown = [n for n in plan.networks() if n not in known]
    if unknown:
        raise UserError(f"unknown feature network {unknown[0]!r} (registered: {', '.join(known)})")
    if not plan.clip_score:
        raise UserError("--metrics must include clip_score (the Pareto curves' other axis)")
    args.pareto_axes = pareto_axes(args.pareto, plan)
    args.kid = plan.kid  # `kid` in --metrics is --kid
    return plan


def pareto_axes(text: str, plan) -> tuple[str, str]:
    """--pareto Y,X as two summary.csv columns; a metric's name stands for its first column
    ('cmmd' -> 'cmmd_clip', 'fd-dinov2' -> 'fid_dinov2')."""
    from .metrics.suite import ALIASES, KINDS

    columns = (["fid", "fid_inf"] if plan.fid_network else []) + (["kid"] if plan.kid else []) \
        + ["clip_score"]
    names = {}
    for spec in plan.extra:
        columns += [c for c in spec.columns() if not c.endswith(("_ci_low", "_ci_high"))]
        names.setdefault(spec.kind, spec.column(KINDS[spec.kind].quantities[0]))
        names.setdefault(spec.label, spec.column(KINDS[spec.kind].quantities[0]))
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 2:
        raise UserError(f"--pareto {text!r}: give two metrics, Y,X (e.g. fid,clip_score)")
    out = []
    for t in parts:
        t = ALIASES.get(t, t)
        col = t if t in columns else names.get(t)
        if col is None:
            raise UserError(f"--pareto: {t!r} is not a metric of this run (columns: "
                            f"{', '.join(columns)})")
        out.append(col)
    return out[0], out[1]


def check_reference_config(args, grid) -> None:
    """--reference-config must name a config of the grid (checked before any work)."""
    keys = [c.config_key for c in grid]
    if args.reference_config is not None and args.reference_config not in keys:
        raise UserError(f"--reference-config {args.reference_config}: not a config of this grid "
                        f"({', '.join(keys)})")


def _device(args):
    import os

    import torch

    from imagen_ref.device import get_device

    try:
        device = get_device(args.device)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per torchrun rank
    return device


def _check_weights(args) -> None:
    """Stop before any work when a metric's weights are not on this machine."""
    from .weights import WeightsNotFoundError, check_weights

    sources = network_sources(args)
    wanted = {n: sources.get(n) for n in args.metric_plan.networks()}
    try:
        check_weights(fid=False, networks=wanted, clip_model=args.clip_model,
                      clip_pretrained=args.clip_pretrained)
    except (WeightsNotFoundError, ValueError) as e:  # missing file; unknown open_clip tag
        raise UserError(str(e)) from None


def _prompts(args) -> tuple[list[dict], dict]:
    """(prompts.jsonl records, description of their source)."""
    import dataclasses

    from coco.captions import (CocoFormatError, load_val_captions, read_caption_file,
                               sample_captions)

    try:
        if args.captions:
            prompts = read_caption_file(args.captions)[: args.num_samples]
            source = {"source": "file", "captions": str(args.captions)}
        else:
            records = load_val_captions(args.coco_root)
            prompts = sample_captions(records, args.num_samples, args.caption_seed)
            source = {"source": "coco-val2014", "coco_root": str(args.coco_root),
                      "caption_seed": args.caption_seed, "num_samples": args.num_samples}
    except (CocoFormatError, FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    if len(prompts) < 2:  # a covariance needs two images
        raise UserError(f"{args.captions or args.coco_root}: {len(prompts)} prompt(s); FID needs "
                        "at least 2 images per config - pass --num-samples 2 or more")
    category = "coco" if not args.captions else ""
    rows = [{"category": category, **dataclasses.asdict(p)} for p in prompts]
    ids = [r["prompt_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise UserError(f"{args.captions or args.coco_root}: prompt ids repeat; every prompt needs "
                        "a unique id")
    return rows, source


def load_model(args, device, configs, items):
    """The model adapter, checked (and loaded) before any generation."""
    from .adapters import AdapterError, ImagesDirAdapter, load_adapter
    from .cli import adapter_options

    try:
        options = adapter_options(args, device)
    except ValueError as e:  # --resolution
        raise UserError(str(e)) from None
    try:
        adapter = load_adapter(args.model, options)
        if isinstance(adapter, ImagesDirAdapter):
            adapter.check_grid(configs)
        for config in configs:
            adapter.check([it for it in items if it.config_key == config.config_key], config)
    except AdapterError as e:
        raise UserError(str(e)) from None
    return adapter


def _metrics(args, device):
    """({network name: feature network}, CLIP scorer), loaded before any generation."""
    from .metrics import networks
    from .metrics.clip_score import make_clip_scorer
    from .weights import WeightsNotFoundError

    sources = network_sources(args)
    loaded = {}
    try:
        for name in args.metric_plan.networks():
            options = {"dims": args.fid_dims} if name == "inception" and args.fid_dims != 2048 else {}
            loaded[name] = networks.load(name, sources.get(name), device=device, **options)
        scorer = make_clip_scorer(args.clip_model, args.clip_pretrained, device=device)
    except (WeightsNotFoundError, ValueError) as e:  # missing, or not the weights of that network
        raise UserError(str(e)) from None
    return loaded, scorer


def _reference(args, extractor, dist, *, keep_features: bool = False):
    """Reference statistics of the COCO images: rank 0 computes (or reads) the cache first."""
    from coco.captions import CocoFormatError
    from coco.reference import reference_stats

    def compute():
        kwargs = {"cache_dir": args.stats_cache} if args.stats_cache else {}
        return reference_stats(args.coco_root, extractor, split="val2014",
                               limit=args.reference_limit, batch_size=args.batch_size,
                               progress=not args.no_progress and dist.rank == 0,
                               keep_features=keep_features, **kwargs)

    try:
        if dist.rank == 0:
            ref = compute()
        dist.barrier()
        if dist.rank != 0:
            ref = compute()  # a cache hit now
    except (CocoFormatError, FileNotFoundError, ValueError) as e:  # no, unreadable, too few images
        raise UserError(str(e)) from None
    return ref


def _references(args, loaded: dict, dist) -> dict:
    """{network: ReferenceStats}, with the reference features where a metric needs them."""
    plan = args.metric_plan
    need = plan.feature_networks()
    return {name: _reference(args, net, dist, keep_features=name in need)
            for name, net in loaded.items()}


def _prompts_sha256(rows: list[dict]) -> str:
    import hashlib
    import json

    return hashlib.sha256("".join(json.dumps(r) + "\n" for r in rows).encode()).hexdigest()


def model_spec(args, adapter) -> dict:
    """The model part of a run's spec (shared with bench.drawbench)."""
    return {"model_id": adapter.model_id, **adapter.spec_fields()}


def _spec(args, adapter, configs, prompts, loaded, scorer) -> dict:
    """What determines the results; a rerun into the same --out must match it."""
    model = model_spec(args, adapter)
    plan = args.metric_plan
    metrics = {}
    if plan.fid_network:
        metrics["fid"] = loaded[plan.fid_network].protocol
    metrics.update(clip=scorer.protocol, kid=plan.kid,
                   reference={"split": "val2014", "limit": args.reference_limit})
    if plan.extra:  # only then, so the paper's runs keep their spec
        metrics["extra"] = {s.label: loaded[s.network].protocol for s in plan.extra}
        if any(s.kind == "prdc" for s in plan.extra):
            metrics["prdc_samples"] = args.prdc_samples
    return {
        "benchmark": "coco_fid",
        "model": model,
        "prompts": {"n": len(prompts), "sha256": _prompts_sha256(prompts)},
        "grid": [c.to_dict() for c in configs],
        "base_seed": args.seed,
        "images_per_prompt": 1,
        "metrics": metrics,
    }


@dataclass
class Job:
    """Everything checked and loaded before the first image."""

    run: object          # RunDir
    adapter: object      # ModelAdapter
    configs: list        # [SamplingConfig]
    prompts: list        # prompts.jsonl records
    items: list          # [WorkItem] of the whole run
    networks: dict       # {name: feature network}, the FID network first
    scorer: object       # ClipScorer
    references: dict     # {name: ReferenceStats}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def open_run(run, spec: dict, record: dict, prompts: list[dict], dist) -> None:
    """Check the spec on every rank, then rank 0 writes run.json and prompts.jsonl."""
    from .runs import RunSpecError

    try:
        run.check(spec)  # every rank, before rank 0 writes
    except RunSpecError as e:
        raise UserError(str(e)) from None
    dist.barrier()
    if dist.rank == 0:
        run.start(spec, record)
        if not run.prompts.is_file():
            run.write_prompts(prompts)
    dist.barrier()


def generate_images(run, adapter, configs, items, args, dist):
    """The generation stage (resumable, sharded); marked complete by rank 0."""
    from .runner import generate

    stats = generate(run, adapter, configs, items, batch_size=args.batch_size, dist=dist,
                     progress=not args.no_progress)
    if dist.rank == 0:
        run.mark_stage("generation", {"complete": True, "images": stats.total,
                                      "skipped": stats.skipped, "seconds": round(stats.seconds, 3)})
    return stats


def prepare(args, argv: list[str], configs: list, device, dist, extra: dict | None = None) -> Job:
    """Stages 1-2: check weights, prompts, model and images; open the run; reference stats."""
    from .runner import plan_items
    from .runs import RunDir, provenance

    _check_weights(args)  # first: a missing file stops the command before any work
    prompts, source = _prompts(args)
    items = plan_items(configs, prompts, 1, args.seed)
    adapter = load_model(args, device, configs, items)
    loaded, scorer = _metrics(args, device)
    run = RunDir(args.out)
    spec = _spec(args, adapter, configs, prompts, loaded, scorer)
    record = {"command": "python -m bench.coco_fid", "argv": argv, "model": adapter.describe(),
              "prompt_source": source,
              "args": {k: v for k, v in vars(args).items() if k != "metric_plan"},
              **provenance(device, dist.world_size), "started": _now(), **(extra or {})}
    open_run(run, spec, record, prompts, dist)
    references = _references(args, loaded, dist)
    if dist.rank == 0 and references:
        first = references[next(iter(references))]
        run.update_run(reference={"n": first.n, "protocol": first.protocol},
                       references={k: {"n": r.n, "protocol": r.protocol} for k, r in references.items()})
    return Job(run, adapter, configs, prompts, items, loaded, scorer, references)


def execute(job: Job, args, dist) -> dict | None:
    """Stages 3-4: generation, metrics, summary and plot; the result on rank 0, else None."""
    from .plots import pareto_plot
    from .scoring import Scorers, flatten_protocol, score_run

    run, progress, plan = job.run, not args.no_progress, args.metric_plan
    stats = generate_images(run, job.adapter, job.configs, job.items, args, dist)
    protocol = {}
    if plan.fid_network:
        protocol.update(flatten_protocol("fid", job.networks[plan.fid_network].protocol),
                        fid_reference_n=job.references[plan.fid_network].n)
    protocol.update(flatten_protocol("clip", job.scorer.protocol))
    options = statistics_options(args, _device(args))
    scorers = Scorers(job.networks.get(plan.fid_network), job.scorer,
                      job.references.get(plan.fid_network), options, protocol, plan=plan,
                      networks=job.networks, references=job.references)
    rows = score_run(run, job.configs, scorers, batch_size=args.batch_size, dist=dist,
                     progress=progress)
    if dist.rank != 0:
        return None
    y, x = args.pareto_axes
    pareto = pareto_plot(rows, run.pareto, y=y, x=x,
                         title=f"{job.adapter.model_id}, {len(job.prompts)} prompts per config")
    run.mark_stage("metrics", {"complete": True, "summary": run.relative(run.summary),
                               "comparisons": "metrics/comparisons.csv",
                               "statistics": options.record()})
    return {"rows": rows, "n_images": stats.total, "pareto": pareto}


def run_coco_fid(args, argv: list[str]) -> dict | None:
    """Every stage of the benchmark; returns {rows, n_images, pareto} on rank 0, else None."""
    from .runner import distributed

    t0 = time.perf_counter()
    extra = resolve_defaults(args, progress=not args.no_progress)
    configs = _grid(args)
    device = _device(args)
    with distributed(device.type) as dist:
        job = prepare(args, argv, configs, device, dist, extra)
        result = execute(job, args, dist)
    if result is not None:
        job.run.update_run(finished=_now(), wall_seconds=round(time.perf_counter() - t0, 3))
    return result


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        result = run_coco_fid(args, argv=list(sys.argv[1:] if argv is None else argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result is None:  # ranks other than 0
        return 0
    print(f"{result['n_images']} images, {len(result['rows'])} configs in "
          f"{time.perf_counter() - start:.0f} s")
    if args.coco_root and Path(args.coco_root, "world.json").is_file():
        print("calibration-world numbers (synthetic shapes, bundled metric networks): not "
              "comparable with COCO")
    print(f"results: {Path(args.out) / 'metrics' / 'summary.csv'}"
          f"{'  plot: ' + str(result['pareto']) if result['pareto'] else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
