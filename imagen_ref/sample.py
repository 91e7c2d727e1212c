"""Sample images from an imagen_ref checkpoint.

Per-stage values are comma lists (base first); one value applies to every stage.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .device import get_device

EPILOG = """examples:
  python -m imagen_ref.sample --model ckpt/ --prompt "a red circle above a blue square" \\
      --guidance 5 --thresholding dynamic:0.995 --steps 64 --seed 0 --out img.png
  python -m imagen_ref.sample --model ckpt/ --prompt "two green triangles" --guidance 1.35,8 \\
      --thresholding dynamic:0.995 --aug-level 0,0.1 --num-images 4 --out samples/tri.png
"""


def split_list(text: str, cast, name: str) -> list:
    """'1.35,8' -> [1.35, 8.0]; a bad element is a user error naming the flag."""
    try:
        return [cast(v.strip()) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"error: --{name} {text!r}: expected a comma list of {cast.__name__} values")


def stage_settings(args, n_stages: int):
    """Build one StageSampling per stage from the per-stage comma lists."""
    from .pipeline import StageSampling

    fields = {
        "guidance": split_list(args.guidance, float, "guidance"),
        "thresholding": split_list(args.thresholding, str, "thresholding"),
        "steps": split_list(args.steps, int, "steps"),
        "aug_level": split_list(args.aug_level, float, "aug-level"),
        "sampler": split_list(args.sampler, str, "sampler"),
    }
    out = []
    for i in range(n_stages):
        kw = {k: v[min(i, len(v) - 1)] for k, v in fields.items()}
        out.append(StageSampling(eta=args.eta, **kw))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m imagen_ref.sample", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint directory (cascade.json + .safetensors)")
    p.add_argument("--prompt", action="append", required=True, help="text prompt (repeatable)")
    p.add_argument("--guidance", default="1", help="classifier-free guidance weight per stage")
    p.add_argument("--thresholding", default="dynamic:0.995",
                   help="none | static | dynamic:P | dynamic:P:CAP, per stage")
    p.add_argument("--steps", default="64", help="denoising steps per stage")
    p.add_argument("--sampler", default="ddim", help="ddim | ddpm, per stage")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--aug-level", default="0", help="noise-augmentation level per SR stage")
    p.add_argument("--num-stages", type=int, default=None, help="run only the first N stages")
    p.add_argument("--num-images", type=int, default=1, help="images per prompt")
    p.add_argument("--seed", type=int, default=0, help="base seed; image k of a prompt uses seed+k")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--save-stages", action="store_true", help="also save every stage's output")
    p.add_argument("--out", default="sample.png", help="output PNG; numbered when several images")
    return p


def output_paths(out: Path, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i:03d}{out.suffix or '.png'}") for i in range(n)]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from PIL import Image

    from .checkpoint import CheckpointError
    from .pipeline import Cascade, to_uint8
    from .text_encoder import TextEncoderNotFoundError

    try:
        cascade = Cascade.from_pretrained(args.model, device=get_device(args.device),
                                          num_stages=args.num_stages)
        settings = stage_settings(args, len(cascade.stages))
    except (CheckpointError, TextEncoderNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prompts = [p for p in args.prompt for _ in range(args.num_images)]
    seeds = [args.seed + k for _ in args.prompt for k in range(args.num_images)]
    start = time.perf_counter()
    outputs = cascade.sample(prompts, seeds, settings, precision=args.precision, progress=True)
    seconds = time.perf_counter() - start
    paths = output_paths(Path(args.out), len(prompts))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    for si, images in enumerate(outputs):
        if si < len(outputs) - 1 and not args.save_stages:
            continue
        for path, img in zip(paths, to_uint8(images)):
            target = path if si == len(outputs) - 1 else path.with_name(
                f"{path.stem}.{cascade.stages[si].key}{path.suffix or '.png'}")
            Image.fromarray(img.numpy()).save(target)
    record = {"model": str(args.model), "prompts": prompts, "seeds": seeds,
              "settings": [s.__dict__ for s in settings], "seconds": round(seconds, 3),
              "files": [str(p) for p in paths]}
    print(json.dumps(record, indent=None if len(paths) > 4 else 2))
    print(f"wrote {len(paths)} image(s): {paths[0]}{' ...' if len(paths) > 1 else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
