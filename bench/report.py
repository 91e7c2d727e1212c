"""One self-contained HTML report of benchmark runs and human ratings.

Reads run directories of bench.coco_fid / bench.drawbench (run.json, metrics/summary.csv,
metrics/categories.csv, metrics/per_image.csv, samples.jsonl, images) and, with --ratings, the
human-evaluation analysis of rater.analyze; writes one HTML file (figures and thumbnails
embedded, no network request, prints cleanly) and every table as CSV next to it. Sections:
provenance, COCO (summary, FID-vs-CLIP Pareto plot with the published FID-30K numbers),
DrawBench / PartiPrompts per category, human evaluation, image grids over the sweep, and a
comparison of runs of the same benchmark (each against the first), with a warning wherever a
metric's protocol differs.

With no RUN_DIR it reports the runs `make demo` wrote (runs/demo/coco_fid, runs/demo/drawbench,
the simulated raters' analysis in runs/demo/human) into runs/demo/report/index.html; if they do
not exist it says to run `make demo` and exits with code 2 (a report only reads files: it never
generates images or computes a metric).
"""
from __future__ import annotations

import argparse
import sys

from .cli import HelpFormatter

EPILOG = """examples:
  # the calibration-world runs of `make demo` (runs/demo/...) -> runs/demo/report/index.html
  python -m bench.report

  # one COCO sweep
  python -m bench.report runs/coco_sweep --out reports/coco_sweep/index.html

  # COCO and DrawBench runs of a model, with the human ratings of its DrawBench images
  python -m bench.report runs/coco_sweep runs/drawbench --ratings ratings.db \\
      --out reports/model_v2/index.html

  # compare two checkpoints on DrawBench (the second against the first), 4 prompts per grid
  python -m bench.report runs/drawbench_v1 runs/drawbench_v2 --grid-prompts 4 \\
      --out reports/v1_vs_v2/index.html

  # an analysis folder written earlier by `python -m rater analyze`
  python -m bench.report runs/drawbench --ratings analysis/ --out reports/drawbench/index.html
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__, epilog=EPILOG,
                                formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run directories; runs of one benchmark are compared with the first "
                   "(default: the demo's runs/demo/coco_fid and runs/demo/drawbench)")
    p.add_argument("--out", default=None, metavar="FILE.html",
                   help="the HTML file, tables written as CSV next to it (default: "
                   "runs/demo/report/index.html for the demo's runs, else reports/out/index.html)")
    p.add_argument("--ratings", default=None, metavar="DB|DIR",
                   help="votes database (SQLite file or SQLAlchemy URL), analysed into human/ "
                   "next to the report, or a folder of analysis files (default with the demo's "
                   "runs: its simulated raters' analysis, runs/demo/human)")
    p.add_argument("--title", default=None, help="report title (default: the run names)")
    p.add_argument("--grid-prompts", type=int, default=2, metavar="N",
                   help="prompts per category in the image grids")
    p.add_argument("--n-boot", type=int, default=1000, metavar="B",
                   help="bootstrap resamples of the human-evaluation CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the human-evaluation bootstrap")
    return p


def demo_inputs(args) -> str | None:
    """Fill runs, --out and --ratings from the demo's files; an error message if there are none."""
    from .plugins import data_defaults

    plugin = data_defaults()
    if plugin is None or plugin.demo_layout is None:
        return "no RUN_DIR given and no embedded demo installed: name run directories"
    demo = plugin.demo_layout()
    args.runs = [str(demo[k]) for k in ("coco_fid", "base", "drawbench")
                 if k in demo and (demo[k] / "run.json").is_file()]
    if not args.runs:
        return ("no RUN_DIR given and no demo runs in runs/demo: run `make demo` first (about 15 "
                "minutes on a CPU), or name run directories")
    if args.out is None:
        args.out = str(demo["report"])
    if args.ratings is None and demo["human"].is_dir():
        args.ratings = str(demo["human"])
    return None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from reports import ReportInputError
    from reports.build import build_report

    if args.grid_prompts < 0 or args.n_boot < 1:
        print("error: --grid-prompts must be at least 0 and --n-boot at least 1", file=sys.stderr)
        return 2
    if not args.runs:
        message = demo_inputs(args)
        if message:
            print(f"error: {message}", file=sys.stderr)
            return 2
    args.out = args.out or "reports/out/index.html"
    try:
        report = build_report(args.runs, args.out, ratings=args.ratings, title=args.title,
                              grid_prompts=args.grid_prompts, n_boot=args.n_boot, seed=args.seed)
    except ReportInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"sections: {', '.join(report.sections)}; {len(report.csv_files)} tables as CSV")
    print(f"report: {report.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
