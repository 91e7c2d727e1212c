"""Recompute a run's statistics from its stored per-image results, without running a network.

    python -m bench.rescore RUN [--bootstrap B] [--bootstrap-seed S] [--reference-config KEY] ...

Reads metrics/configs/*, metrics/features/* and metrics/reference.npz (written by the metric
stage of bench.coco_fid and bench.drawbench) and rewrites metrics/summary.csv,
metrics/comparisons.csv, metrics/statistics.json (and pareto.png, or DrawBench's
metrics/categories.csv) through the same code the run itself used, so with the recorded options
the files come out byte for byte the same; a flag given here replaces the recorded option.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import HelpFormatter

EPILOG = """examples:
  # the same statistics again (identical files)
  python -m bench.rescore runs/coco_sweep

  # more bootstrap replicates, every config against one reference config
  python -m bench.rescore runs/coco_sweep --bootstrap 1000 --reference-config w3-dyn0.995-aug0-ddim64

  # the bootstrap's linear algebra on a GPU
  python -m bench.rescore runs/coco_fid30k --device cuda
"""


class UserError(Exception):
    """Bad input the user can fix; main() prints it and exits with code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.rescore", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("run", metavar="RUN", help="run directory of bench.coco_fid or bench.drawbench")
    p.add_argument("--bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap replicates (default: as recorded; 0 turns intervals off)")
    p.add_argument("--bootstrap-seed", type=int, default=None, help="seed (default: as recorded)")
    p.add_argument("--reference-config", default=None, metavar="KEY",
                   help="config the others are compared with (default: as recorded)")
    p.add_argument("--fid-inf-points", type=int, default=None, metavar="K",
                   help="subset sizes of FID-infinity (default: as recorded; 0: off)")
    p.add_argument("--fid-inf-bootstrap", type=int, default=None, metavar="B",
                   help="bootstrap replicates of FID-infinity's interval (default: as recorded)")
    p.add_argument("--device", default=None, help="where the FID linear algebra runs "
                   "(default: as recorded when available here, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def recorded_statistics(run) -> dict:
    """metrics/statistics.json of a run, or a UserError saying how to make it."""
    from .statistics import STATISTICS_FILE

    path = run.metrics / STATISTICS_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist: the run's metric stage has not finished, or the "
                        "run was made before per-image features were stored; rerun its "
                        "benchmark command with the same --out (delete metrics/ first for an old "
                        "run)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def _device(requested: str | None, recorded: str) -> str:
    import torch

    device = requested or recorded or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        if requested:
            raise UserError(f"--device {requested}: CUDA is not available here")
        device = "cpu"
    return device


def rescore(run_dir: str | Path, *, progress: bool = True, **overrides) -> list[dict]:
    """Rewrite the run's statistics; returns the summary rows. Overrides are StatsOptions fields
    (None keeps the recorded value)."""
    from .runs import RunDir
    from .sampling import SamplingConfig
    from .statistics import StatsOptions, summarize

    run = RunDir(run_dir)
    if not run.run_json.is_file():
        raise UserError(f"{run_dir}: not a run directory (no run.json)")
    record = recorded_statistics(run)
    given = {k: v for k, v in overrides.items() if v is not None}
    given["device"] = _device(given.get("device"), record["options"].get("device", "cpu"))
    options = StatsOptions.from_record(record["options"], **given)
    configs = [SamplingConfig.from_dict(c) for c in record["configs"]]
    keys = [c.config_key for c in configs]
    if options.reference_config is not None and options.reference_config not in keys:
        raise UserError(f"--reference-config {options.reference_config}: not a config of this run "
                        f"({', '.join(keys)})")
    for flag in ("bootstrap", "fid_inf_points", "fid_inf_bootstrap"):
        if getattr(options, flag) < 0:
            raise UserError(f"--{flag.replace('_', '-')} must be 0 or more")
    from .metrics.suite import MetricPlan

    plan = MetricPlan.from_record(record["plan"]) if "plan" in record else None
    try:
        rows = summarize(run, configs, record["protocol"], options,
                         feature_name=record["feature_name"], progress=progress, plan=plan)
    except (FileNotFoundError, ValueError) as e:  # a stored file missing or not the run's
        raise UserError(str(e)) from None
    _derived_files(run, configs, rows, options)
    return rows


def _derived_files(run, configs, rows: list[dict], options) -> None:
    """What the benchmark command makes from the summary: pareto.png, DrawBench's categories."""
    spec = (run.read_run() or {}).get("spec", {})
    if spec.get("benchmark") == "drawbench":
        from .drawbench import write_categories

        write_categories(run, configs, samples=max(options.bootstrap, 1), seed=options.seed)
    elif record_has_fid(rows):
        from .plots import pareto_plot

        prompts = spec.get("prompts", {}).get("n", "")
        y, x = (run.read_run() or {}).get("args", {}).get("pareto_axes") or ("fid", "clip_score")
        pareto_plot(rows, run.pareto, y=y, x=x,
                    title=f"{spec.get('model', {}).get('model_id', '')}, {prompts} prompts per config")
    stages = (run.read_run() or {}).get("stages", {})
    if "metrics" in stages:
        run.mark_stage("metrics", {**stages["metrics"], "statistics": options.record()})


def record_has_fid(rows: list[dict]) -> bool:
    return any(r.get("fid") not in (None, "") for r in rows)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = rescore(args.run, progress=not args.no_progress, bootstrap=args.bootstrap,
                       seed=args.bootstrap_seed, reference_config=args.reference_config,
                       fid_inf_points=args.fid_inf_points,
                       fid_inf_bootstrap=args.fid_inf_bootstrap, device=args.device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = Path(args.run) / "metrics"
    print(f"{len(rows)} configs rescored from stored features")
    print(f"results: {metrics / 'summary.csv'}  comparisons: {metrics / 'comparisons.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
