"""Train the calibration world's metric networks from a recipe, and measure what they can tell.

    python -m calibration_world.train_metrics features --out calibration_world/weights/features.safetensors
    python -m calibration_world.train_metrics clip --out calibration_world/weights/clip_tower.safetensors
    python -m calibration_world.train_metrics validate --out runs/metric_checks.json

`features` trains FeatureNet to predict scene attributes; `clip` trains ClipTower contrastively
(symmetric InfoNCE, Radford et al. 2021 §2.3) against frozen MiniLM token embeddings, with hard
negative captions (another colour, another shape, the swapped relation, another count). Both
write `<out>` (safetensors) and `<out minus suffix>.json` (config, protocol, recipe, seed,
training time, validation numbers). Training images come from seed streams that the dataset
writer (`calibration_world.dataset`, streams 0-2) never uses. `validate` measures the bundled
(or given) networks: FID-style distance under blur / noise / colour shift, and the CLIP-style
score against corrupted captions.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.cli import HelpFormatter

from .captions import INVERSE, PHRASES, Group, Requirement, captions, parse_caption, phrase
from .models import (ClipConfig, ClipTower, FeatureConfig, FeatureNet, NAME, RESIZE, save_model,
                     scene_targets)
from .scenes import COLORS, SHAPES, Scene, render, sample_scene

RECIPES = Path(__file__).resolve().parent / "recipes"
TRAIN_STREAM, VAL_STREAM, CHECK_STREAM = 10, 11, 12   # seed streams of the scenes used here
CORRUPTIONS = ("color", "shape", "relation", "count")


class UserError(Exception):
    """Bad input the user can fix; main() prints it and exits with code 2."""


# ---------------------------------------------------------------------------------------------
# data


def world_scenes(seed: int, stream: int, n: int) -> list[Scene]:
    """n scenes of the train skill mix, scene i from its own generator (seed, stream, i)."""
    return [sample_scene(np.random.default_rng([seed, stream, i])) for i in range(n)]


def render_batch(scenes: list[Scene], size: int, progress: bool = False) -> torch.Tensor:
    """uint8 (N, 3, size, size) renders."""
    arrays = [np.asarray(render(s, size)) for s in tqdm(scenes, desc="render", disable=not progress)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def caption_of(req: Requirement) -> str:
    """The caption a Requirement reads as (inverse of `parse_caption`)."""
    if req.relation is not None:
        i, rel, j = req.relation
        return f"{phrase(req.groups[i])} {PHRASES[rel]} {phrase(req.groups[j])}"
    parts = [phrase(g) for g in req.groups]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def meaning(text: str) -> tuple:
    """A key equal for captions that ask for the same thing (phrasing and order removed)."""
    req = parse_caption(text)
    if req.relation is not None:
        i, rel, j = req.relation
        a, b = req.groups[i], req.groups[j]
        if rel in ("right", "below"):
            a, b, rel = b, a, INVERSE[rel]
        return ("rel", a, rel, b)
    return ("groups",) + tuple(sorted(req.pairs().items()))


def corrupt(text: str, kind: str, rng: np.random.Generator) -> str | None:
    """A caption false for every scene `text` is true of, changed in one `kind`; None where the
    kind does not apply (relation swaps need a relation; count changes need none)."""
    req = parse_caption(text)
    groups = list(req.groups)
    used = {(g.color, g.shape) for g in groups}
    order = rng.permutation(len(groups))
    if kind == "relation":
        if req.relation is None:
            return None
        i, rel, j = req.relation
        return caption_of(Requirement(req.groups, (i, INVERSE[rel], j)))
    if kind == "count" and req.relation is not None:
        return None
    for k in order:
        g = groups[k]
        if kind == "color":
            options = [c for c in COLORS if c not in {h.color for h in groups}]
            new = Group(str(rng.choice(options)), g.shape, g.count) if options else None
        elif kind == "shape":
            options = [s for s in SHAPES if (g.color, s) not in used]
            new = Group(g.color, str(rng.choice(options)), g.count) if options else None
        elif kind == "count":
            options = [c for c in (g.count - 1, g.count + 1) if 1 <= c <= 4]
            new = Group(g.color, g.shape, int(rng.choice(options)))
        else:
            raise ValueError(f"unknown corruption {kind!r}; expected one of {', '.join(CORRUPTIONS)}")
        if new is not None:
            groups[k] = new
            return caption_of(Requirement(tuple(groups), req.relation))
    return None


# ---------------------------------------------------------------------------------------------
# recipes


def load_recipe(path: str | Path, kind: str) -> dict:
    """A recipe JSON (what `features` / `clip` train and how)."""
    path = Path(path)
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such recipe file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not JSON ({e})") from None
    if recipe.get("kind") != kind:
        raise UserError(f"{path}: key 'kind' is {recipe.get('kind')!r}, expected {kind!r}")
    missing = [k for k in ("seed", "n_train", "n_val", "steps", "batch_size", "lr", "model")
               if k not in recipe]
    if missing:
        raise UserError(f"{path}: missing key(s) {', '.join(missing)}")
    return recipe


def _optimizer(model: torch.nn.Module, recipe: dict):
    """AdamW with linear warm-up and cosine decay over the recipe's steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"],
                            betas=tuple(recipe.get("betas", (0.9, 0.999))),
                            weight_decay=recipe.get("weight_decay", 0.01))
    warm, total = recipe.get("warmup", 50), recipe["steps"]

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ---------------------------------------------------------------------------------------------
# features


def _stack_targets(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    rows = [scene_targets(s) for s in scenes]
    return {"counts": torch.from_numpy(np.stack([r["counts"] for r in rows])),
            "cells": torch.from_numpy(np.stack([r["cells"] for r in rows])),
            "background": torch.tensor([r["background"] for r in rows]),
            "texture": torch.tensor([r["texture"] for r in rows])}


def feature_loss(net: FeatureNet, images: torch.Tensor, targets: dict,
                 stats_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Sum of the attribute losses (count regression, occupancy, background, texture), plus
    `stats_weight` x the image-statistics regression when the net has that head."""
    out = net.heads(net(images))
    parts = {"counts": F.mse_loss(out["counts"], targets["counts"]),
             "cells": F.binary_cross_entropy_with_logits(out["cells"], targets["cells"]),
             "background": F.cross_entropy(out["background"], targets["background"]),
             "texture": F.cross_entropy(out["texture"], targets["texture"])}
    if "image_stats" in out:
        parts["image_stats"] = stats_weight * F.mse_loss(out["image_stats"], targets["image_stats"])
    return sum(parts.values()), parts


# Random corruptions of FeatureNet's training images (kind: largest strength, checks.degrade units):
# the attribute targets stay, so the attribute heads learn to ignore them, while the image-statistics
# head has to see them. Without it the features were blind to blur up to sigma 2.5 (a 64² image).
TRAIN_CORRUPTIONS = {"blur": 3.0, "noise": 0.2, "color": 0.3}
N_IMAGE_STATS = 36  # the width of checks.simple_features


def corrupt_images(images: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B, 3, H, W): `fraction` of the images blurred, noised or colour-cast at a random
    strength (colour: a random RGB direction); the rest unchanged."""
    from .checks import degrade

    out = images.clone()
    for i in range(len(images)):
        if torch.rand((), generator=gen) >= fraction:
            continue
        kinds = list(TRAIN_CORRUPTIONS)
        kind = kinds[int(torch.randint(len(kinds), (), generator=gen))]
        strength = float(torch.rand((), generator=gen)) * TRAIN_CORRUPTIONS[kind]
        x = images[i].permute(1, 2, 0).numpy()[None]
        seed = int(torch.randint(2**31, (), generator=gen))
        if kind == "color":
            direction = torch.randn(3, generator=gen).numpy()
            shifted = x + 255.0 * strength * direction / np.abs(direction).max()
            y = np.clip(np.round(shifted), 0, 255).astype(np.uint8)
        else:
            y = degrade(x, kind, strength, seed=seed)
        out[i] = torch.from_numpy(np.ascontiguousarray(y[0])).permute(2, 0, 1)
    return out


def image_stat_targets(images: torch.Tensor) -> torch.Tensor:
    """The image-statistics head's targets: checks.simple_features (colour histograms, channel
    means and spreads, gradient energy) of uint8 (B, 3, H, W) images, float32."""
    from .checks import simple_features

    return torch.from_numpy(simple_features(images.numpy())).float()


@torch.no_grad()
def feature_accuracy(net: FeatureNet, images: torch.Tensor, targets: dict, batch: int = 256) -> dict:
    """Held-out attribute accuracy: every count right, every occupancy right, background, texture."""
    outs = [net.heads(net(images[i:i + batch])) for i in range(0, len(images), batch)]
    out = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
    return {"counts_all_right": float((out["counts"].round() == targets["counts"]).all(1).float().mean()),
            "cells_all_right": float(((out["cells"] > 0) == (targets["cells"] > 0.5)).all(1).float().mean()),
            "background": float((out["background"].argmax(1) == targets["background"]).float().mean()),
            "texture": float((out["texture"].argmax(1) == targets["texture"]).float().mean())}


def train_features(recipe: dict, progress: bool = True) -> tuple[FeatureNet, dict]:
    """FeatureNet trained per the recipe; returns (net in eval mode, training record)."""
    t0 = time.perf_counter()
    cfg = FeatureConfig.from_dict(recipe["model"])
    if cfg.image_stats not in (0, N_IMAGE_STATS):
        raise UserError(f"model.image_stats must be 0 or {N_IMAGE_STATS} (checks.simple_features), "
                        f"got {cfg.image_stats}")
    res, seed = cfg.trunk.resolution, int(recipe["seed"])
    train = world_scenes(seed, TRAIN_STREAM, recipe["n_train"])
    val = world_scenes(seed, VAL_STREAM, recipe["n_val"])
    x_train, x_val = render_batch(train, res, progress), render_batch(val, res, progress)
    y_train, y_val = _stack_targets(train), _stack_targets(val)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the seed sets the initial parameters only
        torch.manual_seed(seed)
        net = FeatureNet(cfg)
    opt, sched = _optimizer(net, recipe)
    bs, losses = recipe["batch_size"], []
    fraction, weight = recipe.get("corrupt_fraction", 0.0), recipe.get("image_stats_weight", 1.0)
    for step in tqdm(range(recipe["steps"]), desc="features", disable=not progress):
        idx = torch.randint(len(x_train), (bs,), generator=gen)
        images, targets = x_train[idx], {k: v[idx] for k, v in y_train.items()}
        if fraction > 0:
            images = corrupt_images(images, fraction, gen)
        if cfg.image_stats:
            targets["image_stats"] = image_stat_targets(images)
        loss, _ = feature_loss(net, images, targets, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    net.eval()
    record = {"kind": "features", "config": _config_dict(cfg), "recipe": recipe, "seed": seed,
              "train_seconds": round(time.perf_counter() - t0, 3),
              "final_loss": float(np.mean(losses[-50:])),
              "validation": feature_accuracy(net, x_val, y_val),
              "protocol": {"name": NAME, "resolution": res, "resize": RESIZE, "dims": cfg.dims,
                           "layer": "hidden layer before its SiLU"}}
    return net, record


# ---------------------------------------------------------------------------------------------
# clip


def encode_captions(texts: list[str], max_tokens: int, batch: int = 256, progress: bool = True):
    """Frozen MiniLM token embeddings of unique texts: (float16 (N, L, 384), bool (N, L)).

    Same model, tokenizer and cap as `imagen_ref.text_encoder.FrozenTextEncoder` (which the
    scorer uses), but padded per batch to the longest text: with the attention mask, padding
    does not change the real tokens' embeddings, and it is ~2x faster.
    """
    from imagen_ref.text_encoder import FrozenTextEncoder

    enc = FrozenTextEncoder("minilm-l6", max_length=max_tokens, device="cpu")
    embs = torch.zeros(len(texts), max_tokens, enc.dim, dtype=torch.float16)
    masks = torch.zeros(len(texts), max_tokens, dtype=torch.bool)
    for i in tqdm(range(0, len(texts), batch), desc="MiniLM", disable=not progress):
        tok = enc.tokenizer(texts[i:i + batch], padding="longest", truncation=True,
                            max_length=max_tokens, return_tensors="pt")
        with torch.inference_mode():
            h = enc.model(**tok).last_hidden_state                     # (b, l, 384)
        m = tok["attention_mask"].bool()
        embs[i:i + len(h), :h.shape[1]] = h.masked_fill(~m[..., None], 0).half()
        masks[i:i + len(h), :h.shape[1]] = m
    length = int(masks.sum(1).max())
    return embs[:, :length].contiguous(), masks[:, :length].contiguous()


def caption_table(scenes: list[Scene], rng: np.random.Generator, negatives: int):
    """Every phrasing of every scene and `negatives` hard negatives per scene, as ids into one
    list of unique texts: (texts, positives per scene, negatives per scene, meaning id per text)."""
    texts: dict[str, int] = {}

    def tid(t: str) -> int:
        return texts.setdefault(t, len(texts))

    pos, neg = [], []
    for s in scenes:
        phr = captions(s)
        pos.append([tid(t) for t in phr])
        kinds = [k for k in CORRUPTIONS if corrupt(phr[0], k, rng) is not None]
        picked = rng.choice(kinds, size=min(negatives, len(kinds)), replace=False)
        neg.append([tid(corrupt(phr[int(rng.integers(len(phr)))], str(k), rng)) for k in picked])
    keys: dict[tuple, int] = {}
    mean = [keys.setdefault(meaning(t), len(keys)) for t in texts]
    return list(texts), pos, neg, torch.tensor(mean)


def clip_loss(model: ClipTower, images, tokens, masks, pos_col, img_mean, col_mean, scale_max=100.0):
    """Symmetric InfoNCE; image->text over the batch's texts and hard negatives, text->image over
    the batch's images; other columns meaning the same as the target are masked out."""
    img = model.encode_image(images)                                   # (B, E)
    txt = model.encode_text(tokens.float(), masks)                     # (U, E)
    scale = model.logit_scale.exp().clamp(max=scale_max)
    logits = scale * img @ txt.T                                       # (B, U)
    B = len(img)
    target = torch.arange(B)
    same = img_mean[:, None] == col_mean[None, :]                      # (B, U)
    same[target, pos_col] = False
    i2t = F.cross_entropy(logits.masked_fill(same, -1e4), pos_col)
    t_logits = logits[:, pos_col].T                                    # (B texts, B images)
    same_t = img_mean[None, :] == img_mean[:, None]
    same_t[target, target] = False
    t2i = F.cross_entropy(t_logits.masked_fill(same_t, -1e4), target)
    return (i2t + t2i) / 2


def train_clip(recipe: dict, progress: bool = True) -> tuple[ClipTower, dict]:
    """ClipTower trained per the recipe; returns (net in eval mode, training record)."""
    t0 = time.perf_counter()
    cfg = ClipConfig.from_dict(recipe["model"])
    res, seed = cfg.trunk.resolution, int(recipe["seed"])
    rng = np.random.default_rng([seed, TRAIN_STREAM])
    train = world_scenes(seed, TRAIN_STREAM, recipe["n_train"])
    x_train = render_batch(train, res, progress)
    texts, pos, neg, mean = caption_table(train, rng, recipe.get("negatives", 3))
    tokens, masks = encode_captions(texts, cfg.max_tokens, progress=progress)
    t_data = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the seed sets the initial parameters only
        torch.manual_seed(seed)
        model = ClipTower(cfg)
    opt, sched = _optimizer(model, recipe)
    bs, losses = recipe["batch_size"], []
    for step in tqdm(range(recipe["steps"]), desc="clip", disable=not progress):
        idx = torch.randint(len(x_train), (bs,), generator=gen).tolist()
        chosen = [pos[i][int(rng.integers(len(pos[i])))] for i in idx]   # a random phrasing
        cols = list(dict.fromkeys(chosen + [t for i in idx for t in neg[i]]))
        where = {t: c for c, t in enumerate(cols)}
        pos_col = torch.tensor([where[t] for t in chosen])
        cols_t = torch.tensor(cols)
        loss = clip_loss(model, x_train[idx], tokens[cols_t], masks[cols_t], pos_col,
                         mean[torch.tensor(chosen)], mean[cols_t])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    record = {"kind": "clip", "config": _config_dict(cfg), "recipe": recipe, "seed": seed,
              "train_seconds": round(time.perf_counter() - t0, 3),
              "data_seconds": round(t_data, 1), "n_texts": len(texts),
              "final_loss": float(np.mean(losses[-50:])),
              "protocol": {"name": NAME, "resolution": res, "resize": RESIZE,
                           "text_encoder": cfg.text_encoder, "max_tokens": cfg.max_tokens,
                           "score": "cosine of normalised embeddings"}}
    return model, record


def _config_dict(cfg) -> dict:
    from dataclasses import asdict

    d = asdict(cfg)
    d["trunk"]["widths"] = list(d["trunk"]["widths"])
    return d


# ---------------------------------------------------------------------------------------------
# checks: what the networks can tell


DEGRADATIONS = {"blur": (0.5, 1.0, 1.5, 2.0, 3.0),     # Gaussian blur radius, pixels at 64²
                "noise": (4, 8, 16, 32, 64),          # Gaussian noise std, uint8 levels
                "color": (8, 16, 32, 64, 96)}         # red up and blue down by this many levels


def degrade(images: torch.Tensor, kind: str, strength: float, seed: int = 0) -> torch.Tensor:
    """uint8 (N, 3, H, W) images blurred, noised or colour-shifted (FID paper-style sanity checks)."""
    from PIL import Image, ImageFilter

    if kind == "blur":
        blur = ImageFilter.GaussianBlur(strength)
        out = [np.asarray(Image.fromarray(x.permute(1, 2, 0).numpy()).filter(blur)) for x in images]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()
    x = images.to(torch.float32)
    if kind == "noise":
        x = x + strength * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    elif kind == "color":
        x = x + torch.tensor([strength, 0.0, -strength])[:, None, None]
    else:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(DEGRADATIONS)}")
    return x.round().clamp(0, 255).to(torch.uint8)


def fid_between(extractor, reference_images: torch.Tensor, images: torch.Tensor) -> float:
    """FID-style distance through the project's FID path (reference statistics + FIDMetric)."""
    from bench.metrics.fid import FIDMetric, features_of
    from coco.reference import ReferenceStats

    ref = ReferenceStats.from_features(features_of(extractor, reference_images, 128).numpy(),
                                       extractor.protocol)
    metric = FIDMetric(extractor, ref)
    for i in range(0, len(images), 128):
        metric.update(images[i:i + 128])
    return metric.compute()


def degradation_table(extractor, n: int = 500, seed: int = 0, ladder: dict | None = None) -> dict:
    """{"clean": FID of two disjoint real sets, kind: [FID at each strength]}."""
    res = extractor.resolution
    a = render_batch(world_scenes(seed, CHECK_STREAM, n), res)
    b = render_batch(world_scenes(seed + 1, CHECK_STREAM, n), res)
    table = {"clean": fid_between(extractor, a, b), "n": n}
    for kind, strengths in (ladder or DEGRADATIONS).items():
        table[kind] = {str(s): fid_between(extractor, a, degrade(b, kind, s, seed)) for s in strengths}
    return table


def auc(positive, negative) -> float:
    """P(a positive scores above a negative), ties counted half (Mann-Whitney U / (n_p n_n))."""
    p, q = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    wins = (p[:, None] > q[None, :]).sum() + 0.5 * (p[:, None] == q[None, :]).sum()
    return float(wins / (len(p) * len(q)))


def clip_check(scorer, n: int = 300, seed: int = 0) -> dict:
    """Per corruption kind: how often the true caption's cosine beats the corrupted one's; and
    the AUC of true against corrupted cosines over all of them."""
    rng = np.random.default_rng([seed, CHECK_STREAM])
    scenes = world_scenes(seed, CHECK_STREAM, n)
    images = render_batch(scenes, scorer.resolution)
    truth = [captions(s)[int(rng.integers(len(captions(s))))] for s in scenes]
    img = torch.cat([scorer.embed_images(images[i:i + 128]) for i in range(0, n, 128)])
    true_cos = (img * scorer.embed_texts(truth)).sum(-1).numpy()
    out, all_bad = {"n": n, "accuracy": {}}, []
    for kind in CORRUPTIONS:
        pairs = [(i, corrupt(t, kind, rng)) for i, t in enumerate(truth)]
        pairs = [(i, c) for i, c in pairs if c is not None]
        idx = [i for i, _ in pairs]
        bad = (img[idx] * scorer.embed_texts([c for _, c in pairs])).sum(-1).numpy()
        out["accuracy"][kind] = {"n": len(idx), "true_above": float(np.mean(true_cos[idx] > bad))}
        all_bad.append(bad)
    out["auc_true_vs_corrupted"] = auc(true_cos, np.concatenate(all_bad))
    out["mean_cos_true"] = float(true_cos.mean())
    return out


# ---------------------------------------------------------------------------------------------
# command line


EPILOG = """examples:
  python -m calibration_world.train_metrics features --out calibration_world/weights/features.safetensors
  python -m calibration_world.train_metrics clip --out calibration_world/weights/clip_tower.safetensors
  python -m calibration_world.train_metrics clip --recipe my_clip.json --out /tmp/clip.safetensors
  python -m calibration_world.train_metrics validate --out runs/metric_checks.json --n 500
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration_world.train_metrics",
                                description=__doc__.split("\n")[0], formatter_class=HelpFormatter,
                                epilog=EPILOG)
    sub = p.add_subparsers(dest="command", required=True)
    for kind in ("features", "clip"):
        what = "feature network" if kind == "features" else "CLIP-style tower"
        s = sub.add_parser(kind, formatter_class=HelpFormatter, epilog=EPILOG, help=f"train the {what}")
        s.add_argument("--out", required=True, metavar="PATH", help="weights file to write (.safetensors)")
        s.add_argument("--recipe", default=str(RECIPES / f"{kind}.json"), metavar="JSON",
                       help="training recipe (model config, data, steps, seed)")
        s.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
        s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        s.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    s = sub.add_parser("validate", formatter_class=HelpFormatter, epilog=EPILOG,
                       help="degradation table and caption-corruption check of trained networks")
    s.add_argument("--features", default=None, metavar="PATH", help="feature weights (default: bundled)")
    s.add_argument("--clip", default=None, metavar="PATH", help="CLIP-style weights (default: bundled)")
    s.add_argument("--n", type=int, default=500, help="images per set")
    s.add_argument("--seed", type=int, default=0, help="seed of the check scenes and noise")
    s.add_argument("--out", default="runs/metric_checks.json", metavar="PATH", help="results JSON")
    s.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def _train(args) -> int:
    recipe = load_recipe(args.recipe, args.command)
    if args.seed is not None:
        recipe["seed"] = args.seed
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out {out}: expected a .safetensors path")
    progress = not args.no_progress
    if args.command == "features":
        net, record = train_features(recipe, progress)
        save_model(net, out, record)
    else:
        from .models import WorldClipScorer

        net, record = train_clip(recipe, progress)
        save_model(net, out, record)
        record["validation"] = clip_check(WorldClipScorer(pretrained=str(out)), n=recipe.get("n_val", 300),
                                          seed=int(recipe["seed"]))
        save_model(net, out, record)
    print(json.dumps({k: record[k] for k in ("train_seconds", "final_loss", "validation")}, indent=2))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def _validate(args) -> int:
    from .models import WorldClipScorer, WorldFeatureExtractor

    t0 = time.perf_counter()
    extractor = WorldFeatureExtractor(args.features)
    result = {"features": {"weights_sha256": extractor.protocol["weights_sha256"],
                           "degradations": degradation_table(extractor, args.n, args.seed)}}
    scorer = WorldClipScorer(pretrained=args.clip)
    result["clip"] = {"weights_sha256": scorer.protocol["weights_sha256"],
                      **clip_check(scorer, args.n, args.seed)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    try:
        return _train(args) if args.command in ("features", "clip") else _validate(args)
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
