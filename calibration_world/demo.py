"""`make demo`: every stage of the suite on the calibration world, offline, on a CPU.

    python -m calibration_world.demo --out runs/demo

  1. world      the calibration world (made once in the cache, see calibration_world/defaults.py)
  2. sweep      bench.coco_fid: the bundled cascade over guidance x thresholding on the world's
                val captions; FID-style distance with the world's feature network, CLIP-style
                score with the world's tower, on the same noise in every config
  3. checks     calibration_world.checks on the sweep: oracle accuracy per skill against w = 1
                (McNemar), the thresholding modes against each other at each w, saturation,
                CLIP-style AUC, the degradation ladder
  4. base       bench.coco_fid on the base stage alone (32x32, --base-samples captions, w = 1, 5, 8
                x the sweep's thresholding modes) and its checks: the super-resolution stage
                repairs much of what high guidance without thresholding breaks in the base
                stage's images, so the paper's thresholding effect is measured there too
  5. drawbench  bench.drawbench on the world's prompts.csv (categories = skills), two configs
  6. db-checks  the oracle on the DrawBench-style run (per category)
  7. pairs      rating tasks: the two DrawBench-style configs side by side
  8. raters     simulated raters (rater.simulate) answer them through the vote store; they are
                not people: alignment preferences follow each config's oracle accuracy, fidelity
                preferences its share of saturated pixels
  9. analyze    python -m rater analyze: preference rates, Bradley-Terry, agreement
 10. report     bench.report: one HTML file, which says these are calibration-world numbers

Every stage resumes: a rerun skips what is complete (the benchmarks skip finished images).
runs/demo/demo.json records the settings and each stage's seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.cli import HelpFormatter

from . import defaults as cw

EPILOG = """examples:
  python -m calibration_world.demo                       # = make demo, into runs/demo
  python -m calibration_world.demo --num-samples 120 --steps 24 --out runs/demo_big
  # a toy run in seconds (a few images per config; the statistics mean little)
  python -m calibration_world.demo --out /tmp/toy --num-samples 4 --guidance 0,1,3 \\
      --thresholding static --steps 2 --base-steps 2 --db-limit 1 --n-real 8 --world-val 16
"""


class DemoError(Exception):
    """A stage failed; its own message was printed above."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration_world.demo", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--out", default=str(cw.DEMO_OUT), metavar="DIR", help="demo folder")
    p.add_argument("--model", default=None, metavar="CKPT",
                   help="cascade checkpoint (default: the bundled calibration-world cascade)")
    p.add_argument("--world", default=None, metavar="DIR",
                   help="calibration world folder (default: the one in the cache, made once)")
    p.add_argument("--world-val", type=int, default=cw.DEFAULT_WORLD.n_val, metavar="N",
                   help="val images of a world made here (captions and FID reference)")
    sweep = p.add_argument_group("sweep (bench.coco_fid)")
    sweep.add_argument("--guidance", default="0,1,3,5,8", metavar="W,...", help="guidance weights")
    sweep.add_argument("--thresholding", default="none,static,dynamic:0.995", metavar="MODE,...",
                       help="thresholding modes")
    sweep.add_argument("--num-samples", type=int, default=96, metavar="N",
                       help="captions per config (the same captions and noise in every config)")
    sweep.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm",
                       help="sampler of every stage and run: ddpm (ancestral, the paper's) or ddim")
    sweep.add_argument("--steps", type=int, default=12, help="sampler steps per stage")
    sweep.add_argument("--num-stages", type=int, default=None,
                       help="sample only the first N stages (default: all)")
    base = p.add_argument_group("base stage alone (bench.coco_fid --num-stages 1)")
    base.add_argument("--base-samples", type=int, default=150, metavar="N",
                      help="captions per config of the base-stage run (0: skip it)")
    base.add_argument("--base-guidance", default="1,5,8", metavar="W,...",
                      help="its guidance weights (thresholding: the sweep's modes)")
    base.add_argument("--base-steps", type=int, default=None, metavar="N",
                      help="its sampler steps (default: --steps). On the bundled base, static "
                      "thresholding at w = 8 gains on none with more steps (issue 25)")
    db = p.add_argument_group("DrawBench-style run and raters")
    db.add_argument("--db-guidance", default="1,5", metavar="W,W",
                    help="the two guidance weights compared (dynamic:0.995 thresholding)")
    db.add_argument("--db-limit", type=int, default=4, metavar="N", help="prompts per skill")
    db.add_argument("--db-samples", type=int, default=2, metavar="K", help="images per prompt")
    db.add_argument("--raters", type=int, default=20, help="simulated raters (2 careless)")
    chk = p.add_argument_group("checks and execution")
    chk.add_argument("--n-real", type=int, default=400, metavar="N",
                     help="world images of the degradation ladder")
    chk.add_argument("--batch-size", type=int, default=16, help="images per model call")
    chk.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    chk.add_argument("--workers", type=int, default=None,
                     help="processes that share the image generation (torchrun, one CPU thread "
                     "each; 1: in this process) (default: the CPUs this process may use, at most "
                     "8; 1 on a GPU)")
    chk.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


# ---------------------------------------------------------------------------------------------
# stages: each returns when its files exist; `call` runs a command's main() in this process


def call(main, argv: list[str], what: str) -> None:
    """Run a command's main(argv); a non-zero exit code stops the demo."""
    code = main([str(a) for a in argv])
    _check_code(code, what)


def _check_code(code: int, what: str) -> None:
    if code != 0:
        raise DemoError(f"{what} failed (exit code {code}); fix the error above and rerun: "
                        "finished stages are kept")


def default_workers(device: str | None) -> int:
    """One process per usable CPU (at most 8): one intra-op thread each scales better for these
    tiny networks than threads in one process, and a busy machine does not stall it. 1 on a GPU."""
    import torch

    if device not in (None, "cpu") or (device is None and torch.cuda.is_available()):
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def generate(module: str, argv: list, args, what: str) -> None:
    """A benchmark command: in this process (--workers 1), else under torchrun, the runner
    sharding the images over the workers (the files are the same either way)."""
    import importlib

    if args.workers == 1:
        call(importlib.import_module(module).main, argv, what)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = str(Path(__file__).resolve().parents[1])  # this checkout, importable by the workers
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(args.workers), "-m", module, *[str(a) for a in argv]]
    _check_code(subprocess.call(cmd, env=env), what)


def _common(args, num_stages: int | None = None) -> list[str]:
    """Flags every benchmark run of the demo shares; `num_stages` overrides --num-stages."""
    out = ["--batch-size", args.batch_size]
    out += ["--device", args.device] if args.device else []
    stages = num_stages or args.num_stages
    out += ["--num-stages", stages] if stages else []
    return out + (["--no-progress"] if args.no_progress else [])


def stage_world(args, paths) -> Path:
    """--world as it is when it holds a world; else the world made there (or in the cache)."""
    if args.world and cw.is_world(args.world):
        return Path(args.world)
    try:
        return cw.ensure_world(args.world, _world_spec(args), progress=not args.no_progress)
    except (OSError, ValueError) as e:
        raise DemoError(f"--world: {e}") from None


def _world_spec(args) -> cw.WorldSpec:
    return cw.WorldSpec(n_val=args.world_val, n_train=min(cw.DEFAULT_WORLD.n_train, args.world_val))


def stage_sweep(args, paths, world: Path) -> None:
    argv = ["--model", args.model, "--coco-root", world, "--out", paths["coco_fid"],
            "--num-samples", args.num_samples, "--guidance", args.guidance,
            "--thresholding", args.thresholding, "--sampler", args.sampler, "--steps", args.steps,
            *_common(args)]
    generate("bench.coco_fid", argv, args, "bench.coco_fid")


def stage_base(args, paths, world: Path) -> None:
    """The base stage alone over --base-guidance x the sweep's modes, then its checks (no
    ladder); skipped with --base-samples 0."""
    if args.base_samples < 1:
        return
    argv = ["--model", args.model, "--coco-root", world, "--out", paths["base"],
            "--num-samples", args.base_samples, "--guidance", args.base_guidance,
            "--thresholding", args.thresholding, "--sampler", args.sampler,
            "--steps", args.base_steps, "--metrics", "fid,clip_score",
            *_common(args, num_stages=1)]
    generate("bench.coco_fid", argv, args, "bench.coco_fid (base stage)")
    stage_checks(args, paths["base"], None)


def _checked(run: Path, world: bool) -> bool:
    names = ["oracle_summary.csv", "saturation.csv", "thresholding_modes.csv",
             "metric_validity.csv"] + (
        ["degradations.csv", "metric_degradations.csv"] if world else [])
    summary = run / "metrics" / "summary.csv"
    return all((run / "metrics" / n).is_file()
               and (run / "metrics" / n).stat().st_mtime >= summary.stat().st_mtime for n in names)


def stage_checks(args, run: Path, world: Path | None) -> None:
    from .checks import main

    if _checked(run, world is not None):
        return
    argv = [run, "--n-real", args.n_real]
    if world:  # the ladder measured with the sweep's FID-style network (the world's own)
        argv += ["--world", world, "--features", cw.CALIBRATION_WORLD]
    call(main, argv + (["--no-progress"] if args.no_progress else []), "calibration checks")


def db_configs(args) -> list:
    from bench.sampling import build_grid

    configs = build_grid(args.db_guidance, "dynamic:0.995", "0", args.sampler, args.steps)
    if len(configs) != 2:
        raise DemoError(f"--db-guidance {args.db_guidance!r}: give two different weights")
    return configs


def stage_drawbench(args, paths, world: Path) -> None:
    argv = ["--model", args.model, "--prompts", world / "prompts.csv", "--out", paths["drawbench"],
            "--guidance", args.db_guidance, "--thresholding", "dynamic:0.995",
            "--sampler", args.sampler, "--steps", args.steps,
            "--samples-per-prompt", args.db_samples, "--limit-per-category", args.db_limit,
            *_common(args)]
    generate("bench.drawbench", argv, args, "bench.drawbench")


def stage_pairs(args, paths) -> None:
    from bench.pairs import main

    if paths["tasks"].is_file():
        return
    a, b = (f"{paths['drawbench']}:{c.config_key}" for c in db_configs(args))
    call(main, ["--a", a, "--b", b, "--k", args.db_samples, "--out", paths["tasks"]],
         "bench.drawbench pairs")


def preferences(run: Path) -> dict:
    """The simulated raters' preference model (rater.simulate --model): per system, alignment
    strength = logit of its oracle all-right accuracy, fidelity = -10 x its saturated share."""
    from bench.runs import read_csv

    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    model_id = info["spec"]["model"]["model_id"]
    strengths: dict[str, dict[str, float]] = {"alignment": {}, "fidelity": {}}
    for r in read_csv(run / "metrics" / "oracle_summary.csv"):
        if r["skill"] == "all_right" and r["accuracy"] not in ("", "nan"):
            acc = min(max(float(r["accuracy"]), 0.02), 0.98)
            strengths["alignment"][f"{model_id}:{r['config_key']}"] = math.log(acc / (1 - acc))
    for r in read_csv(run / "metrics" / "saturation.csv"):
        strengths["fidelity"][f"{model_id}:{r['config_key']}"] = -10 * float(r["saturated_fraction"])
    return {"tie": 0.5, "strengths": strengths,
            "note": "simulated raters: alignment follows the oracle, fidelity the saturation"}


def stage_raters(args, paths) -> None:
    from rater.simulate import main

    done = paths["votes"].with_suffix(".done")
    if done.is_file():
        return
    for p in paths["votes"].parent.glob(paths["votes"].name + "*"):  # a half-written store
        p.unlink()
    model = paths["votes"].with_name("simulated_preferences.json")
    model.write_text(json.dumps(preferences(paths["drawbench"]), indent=2) + "\n", encoding="utf-8")
    call(main, ["--db", paths["votes"], "--tasks", paths["tasks"], "--model", model,
                "--raters", args.raters, "--careless", min(2, args.raters - 1)], "rater.simulate")
    done.write_text("complete\n", encoding="utf-8")


def stage_analyze(args, paths) -> None:
    from rater.analyze import main

    call(main, ["--db", paths["votes"], "--out", paths["human"]], "rater analyze")


def stage_report(args, paths) -> None:
    from bench.report import main

    runs = [paths["coco_fid"]] + ([paths["base"]] if args.base_samples > 0 else [])
    call(main, [*runs, paths["drawbench"], "--ratings", paths["human"],
                "--out", paths["report"], "--title", "Calibration world: the bundled tiny cascade"],
         "bench.report")


# ---------------------------------------------------------------------------------------------
# the command


def check_not_stale(out, paths, model) -> None:
    """DemoError when --out holds benchmark runs of another cascade (the bundled weights were
    updated since, say): the runs would refuse to mix images, deep inside a worker."""
    from bench.adapters import AdapterError, ImagenRefAdapter

    try:
        now = ImagenRefAdapter(model).model_id
    except AdapterError:
        return  # not an imagen_ref checkpoint: bench.coco_fid says what is wrong with it
    for name in ("coco_fid", "base", "drawbench"):
        run = paths[name] / "run.json"
        if not run.is_file():
            continue
        try:
            old = json.loads(run.read_text(encoding="utf-8"))["spec"]["model"]["model_id"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: the benchmark's own check reports it
        if old != now:
            raise DemoError(f"{out} holds a demo of another cascade ({old}; now {now}: the "
                            f"bundled weights were updated, or --model changed); remove it "
                            f"(make clean, or rm -r {out}) or pass --out DIR for a fresh demo")


def run_demo(args) -> dict:
    """Every stage in order; returns demo.json's record (settings, seconds per stage)."""
    from bench.coco_fid import UserError, default_model

    paths = cw.demo_layout(args.out)
    paths["coco_fid"].parent.mkdir(parents=True, exist_ok=True)
    if args.workers is None:
        args.workers = default_workers(args.device)
    if args.model is None:
        try:
            args.model = default_model()
        except UserError as e:
            raise DemoError(str(e)) from None
    check_not_stale(args.out, paths, args.model)
    record = {"settings": {k: v for k, v in vars(args).items()}, "stages": {}}
    world = None

    def timed(name: str, fn, *a):
        print(f"\n== demo stage {len(record['stages']) + 1}/10: {name}", flush=True)
        t = time.perf_counter()
        result = fn(*a)
        record["stages"][name] = round(time.perf_counter() - t, 1)
        paths["summary"].write_text(json.dumps(record, indent=2, default=str) + "\n",
                                    encoding="utf-8")
        return result

    world = timed("world", stage_world, args, paths)
    record["world"] = str(world)
    timed("sweep", stage_sweep, args, paths, world)
    timed("checks", stage_checks, args, paths["coco_fid"], world)
    timed("base", stage_base, args, paths, world)
    timed("drawbench", stage_drawbench, args, paths, world)
    timed("db-checks", stage_checks, args, paths["drawbench"], None)
    timed("pairs", stage_pairs, args, paths)
    timed("raters", stage_raters, args, paths)
    timed("analyze", stage_analyze, args, paths)
    timed("report", stage_report, args, paths)
    return record


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.base_steps is None:
        args.base_steps = args.steps
    if min(args.num_samples, args.steps, args.base_steps, args.db_limit, args.db_samples) < 1 \
            or args.raters < 2 or args.base_samples < 0:
        print("error: --num-samples, --steps, --base-steps, --db-limit and --db-samples must be "
              "at least 1, --raters at least 2, --base-samples at least 0", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        record = run_demo(args)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = time.perf_counter() - start
    paths = cw.demo_layout(args.out)
    print("\ndemo stages (s): " + ", ".join(f"{k} {v:g}" for k, v in record["stages"].items())
          + f"; total {total:.0f} s")
    print(cw.STATEMENT)
    print(f"report: {paths['report']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
