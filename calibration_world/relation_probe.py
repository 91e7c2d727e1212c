"""Relation-order probe: can a base U-Net config learn from text tokens which object goes where?

A deterministic stand-in for the Positional skill. Captions "a red circle to the left of a blue
square" (all four relations, random colour pairs and shapes) map to one fixed image: the colour
that comes first in space (left, or top) fills that half, the other colour the other half. The
network sees noise at t = 1 and regresses the image (MSE). A model that reads the colours but not
their order can do no better than painting both halves with the pair's mean colour; `order` is
the fraction of held-out captions whose two halves are nearer the right colours than the swapped
ones (0.5 = chance).

Learning the order is a plateau and then a sudden escape: the colour that comes first is the
subject for "left of" / "above" but the object for "right of" / "below" (an XOR of word order and
relation). How long the plateau lasts depends on the architecture, which is what this probe
measures in minutes instead of a 40-minute diffusion training run (issue 7). calworld-base-32,
with Imagen's text in the self-attention k/v, and every variant tried without both learned query
positions and a full-resolution text cross-attention stayed at chance for as long as they ran
(600-1,600 steps); calworld-base-32-xattn learned the order in 450-1,000 (seeds 0 and 1: 500 and
1,000). Passing the probe is not enough: trained by the 40-minute base recipe, that config still
drew relations at chance order, where the order is a weak signal seen only at high noise. What
worked is the recipe's warm-up (recipes/cascade.json): relation scenes only, all at high noise,
at 16x16 (escape after 1,800-3,400 steps there, varying between runs), then the base stage at
32x32 from those weights.

    python -m calibration_world.relation_probe --config calworld-base-32-xattn --out runs/probe/xattn.json
    python -m calibration_world.relation_probe --config calworld-base-32-xattn --set query_pos=false \
        --steps 1600 --out runs/probe/no_query_pos.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bench.cli import HelpFormatter

from .captions import PHRASES, Group, phrase
from .scenes import COLORS, PALETTE, SHAPES

FIRST_IS_SUBJECT = {"left": True, "above": True, "right": False, "below": False}


def layout_task(n: int, size: int, seed: int) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """`n` relation captions, their target images and (first, second) colours in [-1, 1].

    Returns:
        captions; targets (n, 3, size, size) float32; truth (n, 2, 3): the colour that comes
        first in space (left / top half) and the other one.
    """
    if size < 2 or size % 2:
        raise ValueError(f"probe image size {size} must be even and >= 2")
    rng = np.random.default_rng(seed)
    relations = list(PHRASES)
    captions, firsts, seconds, vertical = [], [], [], []
    for _ in range(n):
        a, b = rng.choice(len(COLORS), 2, replace=False)
        ca, cb = COLORS[a], COLORS[b]
        rel = relations[rng.integers(len(relations))]
        sa, sb = SHAPES[rng.integers(len(SHAPES))], SHAPES[rng.integers(len(SHAPES))]
        captions.append(f"{phrase(Group(ca, sa))} {PHRASES[rel]} {phrase(Group(cb, sb))}")
        first, second = (ca, cb) if FIRST_IS_SUBJECT[rel] else (cb, ca)
        firsts.append(PALETTE[first])
        seconds.append(PALETTE[second])
        vertical.append(rel in ("above", "below"))
    truth = torch.tensor(np.stack([firsts, seconds], axis=1), dtype=torch.float32) / 127.5 - 1
    half = size // 2
    targets = torch.empty(n, 3, size, size)
    for i in range(n):
        region = (slice(None), slice(None, half), slice(None)) if vertical[i] else \
                 (slice(None), slice(None), slice(None, half))
        targets[i] = truth[i, 1][:, None, None]
        targets[i][region] = truth[i, 0][:, None, None]
    return captions, targets, truth


def halves(images: torch.Tensor, vertical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean colour (B, 3) of the first (left / top) and second half of each image."""
    h = images.shape[-1] // 2
    first = torch.where(vertical[:, None], images[..., :h, :].mean((-2, -1)),
                        images[..., :, :h].mean((-2, -1)))
    second = torch.where(vertical[:, None], images[..., h:, :].mean((-2, -1)),
                         images[..., :, h:].mean((-2, -1)))
    return first, second


def order_accuracy(pred: torch.Tensor, targets: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of images whose halves are nearer (first, second) than (second, first)."""
    h = targets.shape[-1] // 2
    # a target is vertical when its top and bottom halves differ
    vertical = (targets[..., :h, :].mean((-2, -1)) - targets[..., h:, :].mean((-2, -1))).abs().sum(-1) > 1e-6
    first, second = halves(pred, vertical)
    right = (first - truth[:, 0]).norm(dim=-1) + (second - truth[:, 1]).norm(dim=-1)
    swapped = (first - truth[:, 1]).norm(dim=-1) + (second - truth[:, 0]).norm(dim=-1)
    return (right < swapped).float().mean().item()


def probe_config(name: str, size: int, overrides: dict):
    """The named base config at `size`, attention resolutions scaled along, with overrides."""
    from imagen_ref.configs import UNetConfig, at_resolution, config_from_dict, get_config

    cfg = get_config(name)
    if not isinstance(cfg, UNetConfig):
        raise ValueError(f"config {name!r} is not a base U-Net (the probe trains base stages)")
    if cfg.image_size % size:
        raise ValueError(f"probe size {size} must divide the config's image size {cfg.image_size}")
    scaled = dataclasses.asdict(at_resolution(cfg, size))
    return config_from_dict({**scaled, **overrides})  # checks the keys


@torch.no_grad()
def _evaluate(model, emb, mask, targets, truth, gen, batch: int = 100) -> tuple[float, float]:
    model.eval()
    preds = []
    for i in range(0, len(emb), batch):
        x = torch.randn(len(emb[i:i + batch]), 3, targets.shape[-2], targets.shape[-1], generator=gen)
        preds.append(model(x, torch.ones(len(x)), emb[i:i + batch], mask[i:i + batch]))
    model.train()
    pred = torch.cat(preds)
    return F.mse_loss(pred, targets).item(), order_accuracy(pred, targets, truth)


def run_probe(config, emb: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, truth: torch.Tensor,
              *, n_val: int, steps: int, batch_size: int = 32, lr: float = 1e-3, eval_every: int = 50,
              seed: int = 0, progress: bool = True) -> list[dict]:
    """Train `config`'s U-Net on the task; the last `n_val` rows are held out. One record per eval."""
    from imagen_ref.device import derive_seed
    from imagen_ref.train import build_model

    if n_val >= len(emb):
        raise ValueError(f"{n_val} held-out captions leave none of {len(emb)} to train on")
    model = build_model(config, seed).train()
    opt = torch.optim.Adam(model.parameters(), lr)
    gen = torch.Generator().manual_seed(derive_seed(seed, "probe"))
    val_gen = torch.Generator()
    n_train, size = len(emb) - n_val, targets.shape[-1]
    val = slice(n_train, None)
    curve, t0 = [], time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc="relation probe", disable=not progress)
    for step in bar:
        idx = torch.randint(0, n_train, (batch_size,), generator=gen)
        x = torch.randn(batch_size, 3, size, size, generator=gen)
        loss = F.mse_loss(model(x, torch.ones(batch_size), emb[idx], mask[idx]), targets[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"probe loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % eval_every == 0 or step == steps:
            val_gen.manual_seed(derive_seed(seed, "probe-val"))
            val_loss, order = _evaluate(model, emb[val], mask[val], targets[val], truth[val], val_gen)
            curve.append({"step": step, "train_loss": round(loss.item(), 5), "val_loss": round(val_loss, 5),
                          "order": round(order, 4), "seconds": round(time.perf_counter() - t0, 1)})
            bar.set_postfix(order=f"{order:.3f}", val_loss=f"{val_loss:.3f}")
    return curve


def mean_colour_loss(targets: torch.Tensor, truth: torch.Tensor) -> float:
    """MSE of the best order-blind answer: both halves painted with the pair's mean colour."""
    mean = truth.mean(1)[:, :, None, None].expand_as(targets)
    return F.mse_loss(mean, targets).item()


def _override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string, e.g. text_attention=cross


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration_world.relation_probe",
                                description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[-1],
                                formatter_class=HelpFormatter)
    p.add_argument("--config", default="calworld-base-32", help="named base U-Net config")
    p.add_argument("--set", dest="overrides", type=_override, action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (JSON value), e.g. query_pos=false; repeatable")
    p.add_argument("--size", type=int, default=16, help="probe image size (divides the config's)")
    p.add_argument("--steps", type=int, default=600, help="training steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--captions", type=int, default=6000, help="captions made (the last --val held out)")
    p.add_argument("--val", type=int, default=300, help="held-out captions")
    p.add_argument("--eval-every", type=int, default=50, help="steps between held-out evaluations")
    p.add_argument("--seed", type=int, default=0, help="seed of the captions, the init and the batches")
    p.add_argument("--text-encoder", default="minilm-l6", help="frozen text encoder (name or directory)")
    p.add_argument("--out", default=None, metavar="JSON", help="write the learning curve here")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code (2 for user errors)."""
    from bench.runs import atomic_write_json
    from imagen_ref.text_encoder import FrozenTextEncoder, TextEncoderNotFoundError

    args = build_parser().parse_args(argv)
    try:
        if min(args.steps, args.batch_size, args.eval_every, args.val) < 1:
            raise ValueError("--steps, --batch-size, --eval-every and --val must be positive")
        config = probe_config(args.config, args.size, dict(args.overrides))
        captions, targets, truth = layout_task(args.captions, args.size, args.seed)
        encoder = FrozenTextEncoder(args.text_encoder, max_length=32)
    except (KeyError, ValueError, TextEncoderNotFoundError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    with torch.inference_mode():
        parts = [encoder.encode(captions[i:i + 256], fixed_length=True) for i in range(0, len(captions), 256)]
    emb, mask = torch.cat([e for e, _ in parts]), torch.cat([m for _, m in parts])
    try:
        curve = run_probe(config, emb, mask, targets, truth, n_val=args.val, steps=args.steps,
                          batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
                          seed=args.seed, progress=args.progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    blind = mean_colour_loss(targets[-args.val:], truth[-args.val:])
    learned = next((r["step"] for r in curve if r["order"] >= 0.9), None)
    for r in curve:
        print(f"step {r['step']:>5}  val loss {r['val_loss']:.4f}  order {r['order']:.3f}  {r['seconds']:.0f} s")
    print(f"order-blind val loss {blind:.4f}; order >= 0.9 "
          + (f"from step {learned}" if learned else f"not reached in {args.steps} steps"))
    if args.out:
        result = {"config": args.config, "overrides": dict(args.overrides), "unet": dataclasses.asdict(config),
                  "size": args.size, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                  "captions": args.captions, "val": args.val, "seed": args.seed,
                  "text_encoder": encoder.describe(), "order_blind_val_loss": round(blind, 5),
                  "order_0.9_step": learned, "curve": curve, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}
        print(f"learning curve: {atomic_write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
