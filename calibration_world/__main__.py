"""Command line of the calibration world.

    python -m calibration_world make --out DIR   writes the COCO-format dataset, its ground truth
                                                  and a DrawBench-format prompt CSV
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli import HelpFormatter

EPILOG = """examples:
  # the default world: 10,000 training and 1,000 validation images at 64x64, 40 prompts per skill
  python -m calibration_world make --out data/calibration_world

  # a small one for a quick look, at 32x32
  python -m calibration_world make --out /tmp/cw --n-train 200 --n-val 50 --size 32

  # then, unchanged:
  python -m bench.coco_fid --model ckpt/ --coco-root data/calibration_world --out runs/cw_fid
  python -m bench.drawbench --model ckpt/ --prompts data/calibration_world/prompts.csv --out runs/cw_db
  python -m imagen_ref.train --data data/calibration_world ...
"""


class UserError(Exception):
    """Bad arguments; main prints the message and returns 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration_world", description=__doc__,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    make = sub.add_parser("make", help="write the dataset", epilog=EPILOG,
                          description="Write the calibration world's COCO-format dataset, its "
                          "ground truth and a DrawBench-format prompt CSV.",
                          formatter_class=HelpFormatter)
    make.add_argument("--out", required=True, metavar="DIR", help="output folder")
    make.add_argument("--n-train", type=int, default=10000, metavar="N", help="training images")
    make.add_argument("--n-val", type=int, default=1000, metavar="N", help="validation images")
    make.add_argument("--size", type=int, default=64, metavar="PX",
                      help="side of the written images (the trainer resizes per stage)")
    make.add_argument("--seed", type=int, default=0, help="base seed of every scene")
    make.add_argument("--n-prompts", type=int, default=40, metavar="N",
                      help="unique prompts per skill in prompts.csv (Colors has at most 24)")
    make.add_argument("--overwrite", action="store_true",
                      help="replace what an earlier run wrote in --out (only its own files)")
    make.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check(args) -> Path:
    if args.n_train < 1 or args.n_val < 2:
        raise UserError("--n-train must be at least 1 and --n-val at least 2 (FID needs two images)")
    if args.size < 16:
        raise UserError(f"--size {args.size}: images must be at least 16 pixels wide")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: seeds are non-negative integers")
    if args.n_prompts < 1:
        raise UserError("--n-prompts must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to replace an earlier "
                        "calibration world there, or choose a new folder")
    return out


def make(args) -> int:
    from .dataset import clear, write_dataset

    out = _check(args)
    if args.overwrite and out.is_dir():
        clear(out)
    manifest = write_dataset(out, n_train=args.n_train, n_val=args.n_val, size=args.size,
                             seed=args.seed, n_prompts=args.n_prompts, progress=not args.no_progress)
    print(f"calibration world written to {out} ({args.n_train} train, {args.n_val} val images at "
          f"{args.size}x{args.size}; prompts in {out / 'prompts.csv'}; description in {manifest})")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"make": make}[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
