"""Oracle scores of a cascade on held-out world captions, per skill, across guidance x thresholding.

Every setting samples the same captions from the same per-image noise (seed derived from the
base seed and the caption's index), so settings can be compared pair by pair (e.g. McNemar
against w = 1). Rows are per image; `summarize` gives per-setting rates.

    python -m calibration_world.evaluate --cascade DIR --out runs/cw_eval
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from bench.cli import HelpFormatter
from imagen_ref.device import derive_seed

from .captions import caption
from .dataset import split_scenes
from .oracle import Oracle
from .scenes import Scene, render

SKILL_FIELDS = ("color", "count", "shape", "binding", "relation_axis", "relation_order",
                "relation", "all_right")
SATURATED = 0.98  # |x| at or above this (in [-1, 1]) counts as a saturated pixel value

EPILOG = """examples:
  # the bundled cascade's base stage on 150 held-out captions, 25 DDIM steps
  python -m calibration_world.evaluate --out runs/cw_eval
  # a trained checkpoint, both stages, a finer guidance grid
  python -m calibration_world.evaluate --cascade runs/cw_cascade/checkpoint --stages 2 \\
      --guidance 0 1 2 3 5 8 --thresholding none static dynamic:0.995 --out runs/cw_eval2
  # the thresholding modes under the paper's ancestral sampler (DDIM hides what leaving
  # thresholding out costs at high guidance on the bundled cascade)
  python -m calibration_world.evaluate --sampler ddpm --steps 12 --guidance 1 5 8 \\
      --thresholding none static dynamic:0.995 --out runs/cw_thresholding
  # does the layout follow the word order? "A left of B" vs "B left of A" from the same noise
  python -m calibration_world.evaluate --swap-test --guidance 3 --out runs/cw_swap
  # the SR stage alone, fed ground-truth 32x32 renders: what it keeps of a perfect base
  python -m calibration_world.evaluate --sr-from-truth --guidance 1 3 --thresholding static \\
      --out runs/cw_eval_sr
"""


def heldout_scenes(n: int, seed: int = 0) -> list[Scene]:
    """The first n validation scenes of the world with this dataset seed."""
    return split_scenes("val2014", n, seed)


def heldout_captions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(caption, skill) of the first n validation scenes of the world with this dataset seed."""
    return [(caption(s), s.skill) for s in heldout_scenes(n, seed)]


def truth_lowres(scenes: list[Scene], image_size: int, lowres_size: int) -> torch.Tensor:
    """(B, 3, lowres_size, lowres_size) in [-1, 1]: each scene rendered at an SR stage's output
    size and PIL-bicubic downsampled to its input size, as imagen_ref.train makes SR inputs."""
    from PIL import Image

    from imagen_ref.data import to_tensor

    return torch.stack([to_tensor(render(s, image_size).resize((lowres_size, lowres_size),
                                                                Image.Resampling.BICUBIC))
                        for s in scenes])


def _score_batch(oracle: Oracle, images: torch.Tensor, prompts, skills, first: int,
                 seeds, setting: dict) -> list[dict]:
    from imagen_ref.pipeline import to_uint8

    rows = []
    for k, (img, arr, prompt, skill) in enumerate(zip(images, to_uint8(images).numpy(), prompts,
                                                      skills)):
        scores = oracle.score(arr, prompt)
        rows.append({**setting, "index": first + k, "seed": seeds[k], "caption": prompt,
                     "skill": skill, **{f: scores[f] for f in SKILL_FIELDS},
                     "saturation": float((img.abs() >= SATURATED).float().mean())})
    return rows


def oracle_sweep(cascade, captions, guidances=(0.0, 1.0, 3.0, 5.0), modes=("none", "static"), *,
                 steps: int = 25, seed: int = 0, num_stages: int = 1, batch_size: int = 50,
                 lowres: torch.Tensor | None = None, oracle: Oracle | None = None,
                 sampler: str = "ddim", progress: bool = False) -> list[dict]:
    """Sample every caption under every (guidance, thresholding) setting and score it.

    Args:
        cascade: an imagen_ref.pipeline.Cascade.
        captions: strings, or (caption, skill) pairs as `heldout_captions` gives.
        guidances, modes: the grid; modes are imagen_ref thresholding strings.
        steps: sampler steps per stage; seed: base seed (image i uses derive_seed(seed, i)).
        sampler: "ddim" (deterministic) or "ddpm" (ancestral, the paper's).
        num_stages: 1 scores the base stage; 2 adds the SR stage (same settings).
        lowres: one low-res image per caption (e.g. `truth_lowres`): the SR stage (num_stages
            2) is fed these instead of the base stage's samples; rows say `from_truth`.
    Returns: one row per image: setting, index, seed, caption, skill, the oracle's booleans
        (`SKILL_FIELDS`, relation fields None without a relation) and `saturation` (fraction
        of pixel values with |x| >= 0.98 before quantisation).
    """
    from imagen_ref.pipeline import StageSampling

    oracle = oracle or Oracle()
    pairs = [(c, None) if isinstance(c, str) else tuple(c) for c in captions]
    seeds = [derive_seed(seed, "oracle_sweep", i) for i in range(len(pairs))]
    grid = [(float(w), m) for w in guidances for m in modes]
    rows = []
    for n_done, (w, mode) in enumerate(grid):
        setting = {"guidance": w, "thresholding": mode, "sampler": sampler, "steps": steps,
                   "stages": num_stages, "from_truth": lowres is not None}
        cfg = StageSampling(guidance=w, thresholding=mode, sampler=sampler, steps=steps)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            given = ({} if lowres is None
                     else {"start": 1, "lowres": lowres[start:start + batch_size]})
            images = cascade.sample([c for c, _ in chunk], seeds[start:start + batch_size], cfg,
                                    num_stages=num_stages, **given)[-1]
            rows += _score_batch(oracle, images, [c for c, _ in chunk], [s for _, s in chunk],
                                 start, seeds[start:start + batch_size], setting)
        if progress:
            print(f"[{n_done + 1}/{len(grid)}] w={w:g} {mode}: done", file=sys.stderr, flush=True)
    return rows


def swapped_captions(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n pairs ("A <relation> B", "B <relation> A") from seeded two-object scenes: the same
    words in the other order, which asks for the opposite layout."""
    import numpy as np

    from .captions import PHRASES, Group, phrase
    from .scenes import sample_scene

    out = []
    for i in range(n):
        scene = sample_scene(np.random.default_rng([seed, 7, i]), "Positional")
        a, rel, b = scene.relation
        ga, gb = (Group(scene.objects[k].color, scene.objects[k].shape) for k in (a, b))
        out.append((f"{phrase(ga)} {PHRASES[rel]} {phrase(gb)}",
                    f"{phrase(gb)} {PHRASES[rel]} {phrase(ga)}"))
    return out


def order_swap_test(cascade, n: int = 100, *, guidance: float = 3.0, thresholding: str = "static",
                    steps: int = 25, seed: int = 0, num_stages: int = 1, batch_size: int = 50,
                    oracle: Oracle | None = None) -> dict:
    """Does the layout follow the word order? Each pair of `swapped_captions` is sampled from the
    same noise; where the oracle finds both objects in both images, `order_right` is the share
    of images with the pair in the caption's order and `flip_rate` the share of pairs whose
    layout swapped with the words. A model that reads the order flips (near 1); one that places
    the objects by the noise alone does not (near 0, with order_right near 0.5)."""
    from imagen_ref.pipeline import StageSampling, to_uint8

    from .captions import parse_caption
    from .oracle import relation_order

    oracle = oracle or Oracle()
    pairs = swapped_captions(n, seed)
    seeds = [derive_seed(seed, "order_swap", i) for i in range(n)]
    cfg = StageSampling(guidance=guidance, thresholding=thresholding, steps=steps)

    def orders(captions: list[str]) -> list[bool | None]:
        out = []
        for start in range(0, n, batch_size):
            chunk = captions[start:start + batch_size]
            images = cascade.sample(chunk, seeds[start:start + batch_size], cfg,
                                    num_stages=num_stages)[-1]
            for arr, text in zip(to_uint8(images).numpy(), chunk):
                out.append(relation_order(oracle.detect(arr), parse_caption(text)))
        return out

    first, second = orders([p[0] for p in pairs]), orders([p[1] for p in pairs])
    found = [(x, y) for x, y in zip(first, second) if x is not None and y is not None]
    k = len(found)
    return {"n_pairs": n, "n_found": k, "guidance": guidance, "thresholding": thresholding,
            "steps": steps, "stages": num_stages,
            "order_right": sum(x + y for x, y in found) / (2 * k) if k else None,
            "flip_rate": sum(x == y for x, y in found) / k if k else None}


def summarize(rows: list[dict]) -> list[dict]:
    """Per (guidance, thresholding): n, the rate of every skill field over the images where it
    applies (relations: only relation captions), and the mean saturation."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["guidance"], r["thresholding"])].append(r)
    out = []
    for (w, mode), rs in groups.items():
        rec = {"guidance": w, "thresholding": mode, "n": len(rs)}
        for f in SKILL_FIELDS:
            vals = [r[f] for r in rs if r[f] is not None]
            rec[f] = sum(vals) / len(vals) if vals else None
        rec["n_relation"] = sum(r["relation"] is not None for r in rs)
        rec["single_all_right"] = _rate(r["all_right"] for r in rs if r["skill"] == "Colors")
        rec["saturation"] = sum(r["saturation"] for r in rs) / len(rs)
        out.append(rec)
    return out


def _rate(values) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def write_results(out: Path, rows: list[dict], summary: list[dict], meta: dict) -> None:
    """rows.jsonl (per image), summary.csv (per setting), run.json (provenance)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "rows.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration_world.evaluate",
                                description=__doc__.split("\n")[0], epilog=EPILOG,
                                formatter_class=HelpFormatter)
    p.add_argument("--cascade", default=None, metavar="DIR",
                   help="checkpoint directory (default: the bundled cascade)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder")
    p.add_argument("--n", type=int, default=150, help="held-out captions")
    p.add_argument("--data-seed", type=int, default=0, help="the world dataset's seed")
    p.add_argument("--guidance", type=float, nargs="+", default=None,
                   help="guidance weights (default: 0 1 3 5 8; --swap-test: 3)")
    p.add_argument("--thresholding", nargs="+", default=None,
                   help="thresholding modes (default: none static; --swap-test: static)")
    p.add_argument("--steps", type=int, default=25, help="sampler steps")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim",
                   help="ddim (deterministic) or ddpm (ancestral); the sweep only")
    p.add_argument("--stages", type=int, default=1, help="1: base only; 2: base + SR")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--swap-test", action="store_true",
                   help="instead of the sweep: relation captions and the same words with the two "
                        "objects swapped, from the same noise, at the first --guidance and "
                        "--thresholding; does the layout follow the word order? (swap.json)")
    only.add_argument("--sr-from-truth", action="store_true",
                   help="score the SR stage alone, fed ground-truth renders at its input size "
                        "instead of base samples (implies --stages 2)")
    p.add_argument("--seed", type=int, default=0, help="base noise seed")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code (2 for user errors)."""
    from imagen_ref.checkpoint import CheckpointError
    from imagen_ref.pipeline import Cascade

    from .bundled import bundled_cascade_path

    args = build_parser().parse_args(argv)
    if args.n < 1 or args.steps < 1 or args.stages not in (1, 2):
        print("error: --n and --steps must be >= 1 and --stages 1 or 2", file=sys.stderr)
        return 2
    path = Path(args.cascade) if args.cascade else bundled_cascade_path()
    try:
        cascade = Cascade.from_pretrained(path, device=args.device)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.swap_test:
        result = order_swap_test(cascade, args.n, guidance=(args.guidance or [3.0])[0],
                                 thresholding=(args.thresholding or ["static"])[0],
                                 steps=args.steps, seed=args.seed, num_stages=args.stages,
                                 batch_size=args.batch_size)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "swap.json").write_text(json.dumps({**result, "cascade": str(path)}, indent=2) + "\n")
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in result.items()))
        print(f"results: {out / 'swap.json'}")
        return 0
    scenes = heldout_scenes(args.n, args.data_seed)
    captions = [(caption(s), s.skill) for s in scenes]
    lowres = None
    if args.sr_from_truth:
        if len(cascade.stages) < 2 or cascade.stages[1].config.lowres_size is None:
            print(f"error: --sr-from-truth needs a cascade with a super-resolution stage; {path} "
                  f"has {[s.key for s in cascade.stages]}", file=sys.stderr)
            return 2
        args.stages = 2
        conf = cascade.stages[1].config
        lowres = truth_lowres(scenes, conf.image_size, conf.lowres_size)
    args.guidance = args.guidance or [0.0, 1.0, 3.0, 5.0, 8.0]
    args.thresholding = args.thresholding or ["none", "static"]
    rows = oracle_sweep(cascade, captions, args.guidance, args.thresholding, steps=args.steps,
                        seed=args.seed, num_stages=args.stages, batch_size=args.batch_size,
                        lowres=lowres, sampler=args.sampler, progress=True)
    summary = summarize(rows)
    meta = {"cascade": str(path), "cascade_describe": cascade.describe(), **vars(args)}
    write_results(Path(args.out), rows, summary, meta)
    for s in summary:
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in s.items()))
    print(f"results: {Path(args.out) / 'summary.csv'} (per image: rows.jsonl)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
