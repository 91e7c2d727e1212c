"""`make demo`: train a tiny two-stage cascade on generated shapes and sample from it.

Offline and on a CPU in a few minutes: it writes a small captioned dataset of coloured shapes,
trains `tiny-base` (32²) and `tiny-sr` (32²→64²) conditioned on the bundled MiniLM text
encoder, then samples a grid of prompts across guidance weights and thresholding modes.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (50, 70, 220),
           "yellow": (235, 200, 40), "purple": (150, 60, 190)}
SHAPES = ("circle", "square", "triangle")
PROMPTS = ["a red circle", "a blue square", "a yellow triangle", "a green circle",
           "a purple square", "a blue triangle"]
EPILOG = """examples:
  python -m imagen_ref.demo --out runs/demo
  python -m imagen_ref.demo --out runs/demo --base-steps 2000 --sr-steps 1000   # better samples
"""


def draw_shape(colour: str, shape: str, rng: random.Random, size: int = 64) -> Image.Image:
    """One object on a light-grey background, at a random position and size."""
    im = Image.new("RGB", (size, size), (225, 225, 225))
    d = ImageDraw.Draw(im)
    side = rng.randint(size * 3 // 8, size * 5 // 8)
    x0, y0 = rng.randint(2, size - side - 2), rng.randint(2, size - side - 2)
    box = (x0, y0, x0 + side, y0 + side)
    if shape == "circle":
        d.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        d.rectangle(box, fill=COLOURS[colour])
    else:
        d.polygon([(x0 + side / 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=COLOURS[colour])
    return im


def write_dataset(root: Path, n: int, seed: int = 0) -> Path:
    """n image + .txt caption pairs: 'a <colour> <shape>'."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        draw_shape(colour, shape, rng).save(root / f"{i:05d}.png")
        (root / f"{i:05d}.txt").write_text(f"a {colour} {shape}\n")
    return root


def train_stage(stage: str, config: str, data: Path, out: Path, steps: int, cache: Path) -> dict:
    from .train import TrainArgs, train

    args = TrainArgs(stage=stage, config=config, data=str(data), out=str(out), steps=steps,
                     batch_size=16, lr=1e-3, warmup_steps=50, ema_decay=0.99, save_every=0,
                     max_length=16, embedding_cache=str(cache), device="cpu", log_every=20)
    return train(args)


def sample_grid(ckpt: Path, out: Path, steps: int) -> Path:
    """Rows: prompts; columns: (guidance, thresholding) settings; saved as one PNG."""
    from .pipeline import Cascade, StageSampling, to_uint8

    cascade = Cascade.from_pretrained(ckpt, device="cpu")
    columns = [(1.0, "none"), (3.0, "static"), (3.0, "dynamic:0.995"), (8.0, "none")]
    tiles = []
    for w, mode in columns:
        settings = [StageSampling(guidance=w, thresholding=mode, steps=steps),
                    StageSampling(guidance=w, thresholding=mode, steps=max(steps // 2, 4), aug_level=0.1)]
        images = cascade.sample(PROMPTS, seeds=list(range(len(PROMPTS))), settings=settings, progress=True)
        tiles.append(to_uint8(images[-1]))
    size = tiles[0].shape[1]
    grid = Image.new("RGB", (size * len(columns), size * len(PROMPTS)), "white")
    for c, col in enumerate(tiles):
        for r, img in enumerate(col):
            grid.paste(Image.fromarray(img.numpy()), (c * size, r * size))
    path = out / "samples.png"
    grid.save(path)
    (out / "samples.json").write_text(json.dumps(
        {"rows": PROMPTS, "columns": [{"guidance": w, "thresholding": m} for w, m in columns],
         "seeds": list(range(len(PROMPTS))), "steps": steps}, indent=2))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m imagen_ref.demo", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output directory")
    p.add_argument("--images", type=int, default=600, help="generated training images")
    p.add_argument("--base-steps", type=int, default=300, help="training steps of the base stage")
    p.add_argument("--sr-steps", type=int, default=150, help="training steps of the SR stage")
    p.add_argument("--sample-steps", type=int, default=24, help="denoising steps of the base stage")
    args = p.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    data = write_dataset(out / "data", args.images)
    ckpt, cache = out / "ckpt", out / "embeddings"
    base = train_stage("base", "tiny-base", data, ckpt, args.base_steps, cache)
    sr = train_stage("sr", "tiny-sr", data, ckpt, args.sr_steps, cache)
    grid = sample_grid(ckpt, out, args.sample_steps)
    summary = {"checkpoint": str(ckpt), "samples": str(grid),
               "base_loss": [round(base["losses"][0], 4), round(base["losses"][-1], 4)],
               "sr_loss": [round(sr["losses"][0], 4), round(sr["losses"][-1], 4)],
               "seconds": round(time.perf_counter() - start, 1)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"samples (rows: prompts; columns: w=1 none, w=3 static, w=3 dynamic:0.995, w=8 none): {grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
