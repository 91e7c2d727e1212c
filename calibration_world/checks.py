"""Calibration checks of a generated run on the calibration world (issue 7, item 5).

`python -m calibration_world.checks RUN_DIR [--world DIR]` reads a run directory of
bench.coco_fid / bench.drawbench whose prompts are calibration-world captions and writes:

    metrics/oracle_per_image.csv  per image: config_key, guidance, thresholding, prompt_id, k,
                                  seed, category, the oracle's checks (color, count, shape,
                                  binding, relation_axis, relation_order, relation, all_right:
                                  1 / 0 / empty where the check does not apply), detected
                                  (the objects the oracle found), saturated (see below)
    metrics/oracle_summary.csv    per config x skill (color, count, shape, relation, binding,
                                  all_right): n, accuracy, ci_lo, ci_hi (95% Wilson), and against
                                  the w = 1 config with the same thresholding (and aug level,
                                  sampler, steps) on the same prompt, k and seed: baseline_key,
                                  n_paired, n_gained, n_lost, mcnemar_p (exact: binomial test of
                                  the discordant pairs), delta = (n_gained - n_lost) / n_paired;
                                  the same against the w = 0 (unconditional) config: uncond_key,
                                  vs0_n_paired, vs0_n_gained, vs0_n_lost, vs0_mcnemar_p, vs0_delta
    metrics/thresholding_modes.csv  the thresholding modes against each other at each guidance
                                  weight (same aug level, sampler and steps), on the same prompt,
                                  k and seed: per pair of modes (mode_a before mode_b in grid
                                  order) and skill: n_paired, accuracy_a, accuracy_b, n_a_only,
                                  n_b_only, mcnemar_p (exact), saturated_a, saturated_b (mean
                                  saturated fraction), verdict (a_worse, b_worse or no_difference
                                  at p < 0.05)
    metrics/saturation.csv        per config: n_images, saturated_fraction (mean over images of
                                  the fraction of pixels with some channel at uint8 0 or 255,
                                  the stand-in for x0 at -1 or +1: the PNG quantises [-1, 1] to
                                  0..255), saturated_sd (over images)
    metrics/clip_auc.csv          how well per_image.csv clip_cosine separates oracle-correct
                                  (all_right) from oracle-wrong images: scope (a config_key or
                                  "all"), n_correct, n_wrong, auc (Mann-Whitney U / (n1 n2)),
                                  ci_lo, ci_hi (percentile bootstrap within each class, seeded)
    metrics/degradations.csv      with --world: FID-style distance between two halves of the
                                  world's val2014 images, the second degraded: kind (blur, noise,
                                  color), strength (0 = clean), n_reference, n, distance,
                                  monotonic (yes/no per kind: strictly increasing with strength)

The Frechet distance is bench.metrics.fid.frechet_distance on float64 means and covariances of
any feature callable (uint8 (B, 3, H, W) -> (B, d)): Inception, the world's own feature network,
or `simple_features` (colour histograms + gradient energy, no learned weights).

Which runs are calibration-world runs (the report's rule, reports/calibration.py): run.json has
a "world" object (top level or in "spec"); or its prompt source (run.json "prompt_source":
"coco_root", "path") lies in a folder holding the world's world.json; or the run has
metrics/oracle_summary.csv. With --world, this command writes run.json "world" if it is absent.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .captions import CaptionParseError, parse_caption
from .oracle import CHECKS, Oracle, score_detections

SKILLS = ("color", "count", "shape", "relation", "binding", "all_right")  # summary order
KINDS = {"blur": (0.0, 0.5, 1.0, 1.5, 2.5),     # Gaussian sigma in pixels
         "noise": (0.0, 0.02, 0.05, 0.1, 0.2),  # Gaussian std, fraction of the 0..255 range
         "color": (0.0, 0.03, 0.06, 0.12, 0.24)}  # shift of R up and B down, fraction of range
PER_IMAGE_FIELDS = ["config_key", "guidance", "thresholding", "prompt_id", "k", "seed", "category",
                    *CHECKS, "detected", "saturated"]
SUMMARY_FIELDS = ["config_key", "guidance", "thresholding", "skill", "n", "accuracy", "ci_lo",
                  "ci_hi", "baseline_key", "n_paired", "n_gained", "n_lost", "mcnemar_p", "delta",
                  "uncond_key", "vs0_n_paired", "vs0_n_gained", "vs0_n_lost", "vs0_mcnemar_p",
                  "vs0_delta"]
MODE_FIELDS = ["guidance", "aug_level", "sampler", "steps", "mode_a", "mode_b", "key_a", "key_b",
               "skill", "n_paired", "accuracy_a", "accuracy_b", "n_a_only", "n_b_only", "mcnemar_p",
               "saturated_a", "saturated_b", "verdict"]
ALPHA = 0.05  # the level of a mode comparison's verdict
SATURATION_FIELDS = ["config_key", "guidance", "thresholding", "n_images", "saturated_fraction",
                     "saturated_sd"]
AUC_FIELDS = ["scope", "guidance", "thresholding", "n", "n_correct", "n_wrong", "auc", "ci_lo",
              "ci_hi", "n_boot", "seed"]
DEGRADATION_FIELDS = ["kind", "strength", "n_reference", "n", "distance", "monotonic", "features"]


class ChecksError(ValueError):
    """A run or world the checks cannot read; the message names the file and what to do."""


# ---------------------------------------------------------------------------------------------
# reading a run


def _configs(run_json: dict) -> dict[str, dict]:
    """config_key -> grid record (guidance, thresholding, aug_level, sampler, steps)."""
    return {g["config_key"]: g for g in run_json.get("spec", {}).get("grid", []) if "config_key" in g}


def _requirements(prompts: list[dict], where: Path) -> dict[str, object]:
    """prompt_id -> parsed caption; ChecksError on a prompt outside the world's grammar."""
    out = {}
    for i, p in enumerate(prompts, 1):
        try:
            out[p["prompt_id"]] = parse_caption(p["text"])
        except CaptionParseError as e:
            raise ChecksError(f"{where}, line {i}: {e}; the oracle scores calibration-world "
                              "captions only (run the benchmark on the world's prompts)") from None
    return out


def saturated_fraction(image: np.ndarray) -> float:
    """Fraction of pixels of a uint8 (H, W, 3) image with some channel at 0 or 255."""
    return float(((image == 0) | (image == 255)).any(axis=2).mean())


def _bool(v) -> str:
    return "" if v is None else str(int(bool(v)))


def score_run(run_dir: str | Path, *, oracle: Oracle | None = None, progress: bool = True) -> list[dict]:
    """oracle_per_image.csv rows of every finished image of a run (see the module docstring)."""
    from PIL import Image

    from bench.runs import RunDir

    run = RunDir(run_dir)
    run_json = run.read_run()
    if run_json is None or not run.prompts.is_file():
        raise ChecksError(f"{run.root}: no run.json or prompts.jsonl; pass the --out folder of "
                          "bench.coco_fid or bench.drawbench")
    prompts = run.read_prompts()
    reqs = _requirements(prompts, run.prompts)
    category = {p["prompt_id"]: p.get("category", "") for p in prompts}
    configs = _configs(run_json)
    samples = sorted(run.finished().values(),
                     key=lambda r: (r["config_key"], r["prompt_id"], int(r["k"])))
    if not samples:
        raise ChecksError(f"{run.samples}: no finished images; run the benchmark first")
    oracle = oracle or Oracle()
    rows = []
    for s in tqdm(samples, desc="oracle", unit="img", disable=not progress):
        if s["prompt_id"] not in reqs:
            raise ChecksError(f"{run.samples}: image of prompt {s['prompt_id']!r}, which "
                              f"{run.prompts} does not list")
        with Image.open(run.root / s["path"]) as im:
            img = np.asarray(im.convert("RGB"))
        dets = oracle.detect(img)
        result = score_detections(dets, reqs[s["prompt_id"]])
        cfg = configs.get(s["config_key"], {})
        rows.append({"config_key": s["config_key"], "guidance": cfg.get("guidance", ""),
                     "thresholding": cfg.get("thresholding", ""), "prompt_id": s["prompt_id"],
                     "k": int(s["k"]), "seed": s["seed"], "category": category[s["prompt_id"]],
                     **{c: _bool(result[c]) for c in CHECKS},
                     "detected": "; ".join(f"{d.color} {d.shape}" for d in dets),
                     "saturated": f"{saturated_fraction(img):.6g}"})
    return rows


# ---------------------------------------------------------------------------------------------
# oracle summary with paired comparisons against w = 1


def _all_weights(guidance, value: float) -> bool:
    """Whether every stage's weight in a guidance value ("3" or "3/1") is `value`."""
    try:
        return all(float(w) == value for w in str(guidance).split("/"))
    except ValueError:
        return False


def _is_unguided(guidance) -> bool:
    return _all_weights(guidance, 1.0)


def _is_unconditional(guidance) -> bool:
    return _all_weights(guidance, 0.0)


def baselines(configs: dict[str, dict], is_baseline=_is_unguided) -> dict[str, str | None]:
    """config_key -> the w = 1 config (or another `is_baseline(guidance)`) with the same
    thresholding (and, where one exists, the same aug level, sampler and steps), or None."""
    unguided = [g for g in configs.values() if is_baseline(g.get("guidance"))]
    out = {}
    for key, g in configs.items():
        same = [u for u in unguided if u.get("thresholding") == g.get("thresholding")]
        exact = [u for u in same if all(u.get(a) == g.get(a) for a in ("aug_level", "sampler", "steps"))]
        pick = (exact or same or [None])[0]
        out[key] = pick["config_key"] if pick else None
    return out


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of k successes in n (NaNs for n = 0)."""
    from scipy.stats import binomtest

    if n == 0:
        return math.nan, math.nan
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar(gained: int, lost: int) -> float:
    """Exact McNemar p-value: two-sided binomial test of `gained` in the discordant pairs."""
    from scipy.stats import binomtest

    return 1.0 if gained + lost == 0 else float(binomtest(gained, gained + lost, 0.5).pvalue)


def _values(rows: list[dict], skill: str) -> dict[tuple[str, int, str], bool]:
    """(prompt_id, k, seed) -> the skill's result, where it applies."""
    return {(r["prompt_id"], int(r["k"]), str(r["seed"])): r[skill] == "1"
            for r in rows if r[skill] != ""}


def summarize(per_image: list[dict], configs: dict[str, dict]) -> list[dict]:
    """oracle_summary.csv rows: per config (grid order) and skill, accuracy and the paired
    comparisons with the config's w = 1 baseline and its w = 0 (unconditional) one (images
    matched on prompt, k and seed)."""
    by_config: dict[str, list[dict]] = defaultdict(list)
    for r in per_image:
        by_config[r["config_key"]].append(r)
    keys = [k for k in configs if k in by_config] + sorted(set(by_config) - set(configs))
    known = {k: configs.get(k, {"config_key": k}) for k in keys}
    base, uncond = baselines(known), baselines(known, _is_unconditional)
    out = []
    for key in keys:
        cfg = configs.get(key, {})
        for skill in SKILLS:
            mine = _values(by_config[key], skill)
            n, k = len(mine), sum(mine.values())
            lo, hi = wilson(k, n)
            row = {"config_key": key, "guidance": cfg.get("guidance", ""),
                   "thresholding": cfg.get("thresholding", ""), "skill": skill, "n": n,
                   "accuracy": k / n if n else math.nan, "ci_lo": lo, "ci_hi": hi,
                   "baseline_key": base.get(key) or ""}
            if base.get(key) and base[key] != key and base[key] in by_config:
                row.update(paired(mine, _values(by_config[base[key]], skill)))
            if uncond.get(key) and uncond[key] != key and uncond[key] in by_config:
                row["uncond_key"] = uncond[key]
                row.update({f"vs0_{k}": v for k, v in
                            paired(mine, _values(by_config[uncond[key]], skill)).items()})
            out.append(row)
    return out


def paired(mine: dict, ref: dict) -> dict:
    """n_paired, n_gained (right in `mine` only), n_lost (right in `ref` only), the exact McNemar
    p and delta = (gained - lost) / n_paired over the images both score."""
    both = sorted(set(mine) & set(ref))
    gained = sum(mine[i] and not ref[i] for i in both)
    lost = sum(ref[i] and not mine[i] for i in both)
    return {"n_paired": len(both), "n_gained": gained, "n_lost": lost,
            "mcnemar_p": mcnemar(gained, lost),
            "delta": (gained - lost) / len(both) if both else math.nan}


def mode_comparisons(per_image: list[dict], configs: dict[str, dict]) -> list[dict]:
    """thresholding_modes.csv rows: at each guidance weight (and aug level, sampler, steps), every
    pair of thresholding modes of the grid, per skill, paired on prompt, k and seed (see the
    module docstring). The paper's claim (Saharia et al. 2022, §2.3): at high guidance no
    thresholding is worse than static and dynamic; at w = 1 the modes should agree."""
    from itertools import combinations

    by_config: dict[str, list[dict]] = defaultdict(list)
    for r in per_image:
        by_config[r["config_key"]].append(r)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for key, cfg in configs.items():
        if key in by_config:
            groups[tuple(str(cfg.get(a, "")) for a in ("guidance", "aug_level", "sampler",
                                                        "steps"))].append(cfg)
    out = []
    for (w, aug, sampler, steps), cfgs in groups.items():
        for a, b in combinations(cfgs, 2):
            rows_a, rows_b = by_config[a["config_key"]], by_config[b["config_key"]]
            sat_a = _saturation_by_image(rows_a)
            sat_b = _saturation_by_image(rows_b)
            both = sorted(set(sat_a) & set(sat_b))
            for skill in SKILLS:
                va, vb = _values(rows_a, skill), _values(rows_b, skill)
                p = paired(va, vb)
                common = sorted(set(va) & set(vb))
                acc_a = sum(va[i] for i in common) / len(common) if common else math.nan
                acc_b = sum(vb[i] for i in common) / len(common) if common else math.nan
                verdict = ("no_difference" if not p["mcnemar_p"] < ALPHA
                           else "a_worse" if p["n_gained"] < p["n_lost"] else "b_worse")
                out.append({"guidance": w, "aug_level": aug, "sampler": sampler, "steps": steps,
                            "mode_a": a.get("thresholding", ""), "mode_b": b.get("thresholding", ""),
                            "key_a": a["config_key"], "key_b": b["config_key"], "skill": skill,
                            "n_paired": p["n_paired"], "accuracy_a": acc_a, "accuracy_b": acc_b,
                            "n_a_only": p["n_gained"], "n_b_only": p["n_lost"],
                            "mcnemar_p": p["mcnemar_p"],
                            "saturated_a": float(np.mean([sat_a[i] for i in both])) if both else math.nan,
                            "saturated_b": float(np.mean([sat_b[i] for i in both])) if both else math.nan,
                            "verdict": verdict})
    return out


def _saturation_by_image(rows: list[dict]) -> dict[tuple[str, int, str], float]:
    return {(r["prompt_id"], int(r["k"]), str(r["seed"])): float(r["saturated"]) for r in rows}


# ---------------------------------------------------------------------------------------------
# saturation and CLIP-style separation


def saturation_rows(per_image: list[dict], configs: dict[str, dict]) -> list[dict]:
    """saturation.csv rows, one per config (grid order)."""
    by_config: dict[str, list[float]] = defaultdict(list)
    for r in per_image:
        by_config[r["config_key"]].append(float(r["saturated"]))
    keys = [k for k in configs if k in by_config] + sorted(set(by_config) - set(configs))
    return [{"config_key": k, "guidance": configs.get(k, {}).get("guidance", ""),
             "thresholding": configs.get(k, {}).get("thresholding", ""),
             "n_images": len(by_config[k]), "saturated_fraction": float(np.mean(by_config[k])),
             "saturated_sd": float(np.std(by_config[k], ddof=1)) if len(by_config[k]) > 1 else math.nan}
            for k in keys]


def auc(correct: Sequence[float], wrong: Sequence[float]) -> float:
    """P(score of a correct image > score of a wrong one), ties counting half: U / (n1 n2)."""
    from scipy.stats import mannwhitneyu

    correct, wrong = np.asarray(correct, float), np.asarray(wrong, float)
    return float(mannwhitneyu(correct, wrong).statistic) / (len(correct) * len(wrong))


def auc_ci(correct, wrong, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap CI of `auc`, resampling each class on its own (seeded)."""
    from scipy.stats import mannwhitneyu

    correct, wrong = np.asarray(correct, float), np.asarray(wrong, float)
    rng = np.random.default_rng(seed)
    a = correct[rng.integers(len(correct), size=(n_boot, len(correct)))]  # (B, n1)
    b = wrong[rng.integers(len(wrong), size=(n_boot, len(wrong)))]        # (B, n2)
    u = mannwhitneyu(a, b, axis=1).statistic / (len(correct) * len(wrong))
    return float(np.percentile(u, 2.5)), float(np.percentile(u, 97.5))


def clip_auc_rows(per_image: list[dict], clip_rows: list[dict], configs: dict[str, dict], *,
                  n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """clip_auc.csv rows: every image together ("all"), then per config (grid order)."""
    cos = {(r["config_key"], r["prompt_id"], int(r["k"])): float(r["clip_cosine"]) for r in clip_rows
           if r.get("clip_cosine", "") not in ("", "nan")}
    scopes: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for r in per_image:
        key = (r["config_key"], r["prompt_id"], int(r["k"]))
        if key in cos and r["all_right"] != "":
            for scope in ("all", r["config_key"]):
                scopes[scope].append((cos[key], r["all_right"] == "1"))
    keys = ["all"] + [k for k in configs if k in scopes] + sorted(set(scopes) - set(configs) - {"all"})
    out = []
    for i, scope in enumerate(k for k in keys if k in scopes):
        pos = [c for c, ok in scopes[scope] if ok]
        neg = [c for c, ok in scopes[scope] if not ok]
        cfg = configs.get(scope, {})
        row = {"scope": scope, "guidance": cfg.get("guidance", ""),
               "thresholding": cfg.get("thresholding", ""), "n": len(pos) + len(neg),
               "n_correct": len(pos), "n_wrong": len(neg), "n_boot": n_boot, "seed": seed + i}
        if pos and neg:
            lo, hi = auc_ci(pos, neg, n_boot=n_boot, seed=seed + i)
            row.update(auc=auc(pos, neg), ci_lo=lo, ci_hi=hi)
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# degradation ladder


def degrade(images: np.ndarray, kind: str, strength: float, *, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3) images degraded by `kind` at `strength` (units in KINDS)."""
    from scipy.ndimage import gaussian_filter

    x = images.astype(np.float64)
    if strength == 0:
        return images.copy()
    if kind == "blur":
        x = gaussian_filter(x, sigma=(0, strength, strength, 0), mode="nearest")
    elif kind == "noise":
        x = x + np.random.default_rng(seed).normal(0.0, 255.0 * strength, x.shape)
    elif kind == "color":
        x = x + 255.0 * strength * np.asarray([1.0, 0.0, -1.0])
    else:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(KINDS)}")
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def simple_features(images) -> "np.ndarray":
    """A learned-weight-free feature map, uint8 (B, 3, H, W) -> float64 (B, 36): per channel an
    8-bin histogram, mean and std, and the mean absolute horizontal and vertical gradient."""
    x = np.asarray(images, dtype=np.float64)                          # (B, 3, H, W)
    hist = np.stack([((x >= lo) & (x < lo + 32)).mean(axis=(2, 3)) for lo in range(0, 256, 32)],
                    axis=2).reshape(len(x), -1)                       # (B, 24)
    grad = [np.abs(np.diff(x, axis=a)).mean(axis=(2, 3)) / 32.0 for a in (2, 3)]
    return np.concatenate([hist, x.mean(axis=(2, 3)) / 255.0, x.std(axis=(2, 3)) / 64.0, *grad],
                          axis=1)


def _features(extract: Callable, images: np.ndarray, batch_size: int) -> np.ndarray:
    """float64 (N, d) features of uint8 (N, H, W, 3) images, in batches."""
    import torch

    out = []
    for i in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size].transpose(0, 3, 1, 2)))
        f = extract(batch)
        out.append(f.detach().cpu().double().numpy() if hasattr(f, "detach") else np.asarray(f, np.float64))
    return np.concatenate(out)


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def degradation_ladder(images: np.ndarray, extract: Callable, *, kinds: dict | None = None,
                       batch_size: int = 64, seed: int = 0, name: str = "",
                       progress: bool = True) -> list[dict]:
    """degradations.csv rows: the first half of `images` is the reference, the second half is
    degraded by each kind at each strength (0 = both clean) and compared by Frechet distance.

    Args:
        images: uint8 (N, H, W, 3) real images (N >= 4).
        extract: feature callable, uint8 (B, 3, H, W) tensor -> (B, d).
        kinds: {kind: strengths}; default KINDS.
        seed: seeds the additive noise.
        name: the feature extractor's name, recorded in every row.
    """
    from bench.metrics.fid import frechet_distance

    if len(images) < 4:
        raise ChecksError(f"the degradation ladder needs at least 4 real images, got {len(images)}")
    kinds = kinds or KINDS
    half = len(images) // 2
    ref, test = images[:half], images[half:2 * half]
    mu_r, sigma_r = _stats(_features(extract, ref, batch_size))
    steps = [(k, s) for k, strengths in kinds.items() for s in strengths]
    rows = []
    for kind, s in tqdm(steps, desc="degradations", disable=not progress):
        mu, sigma = _stats(_features(extract, degrade(test, kind, s, seed=seed), batch_size))
        rows.append({"kind": kind, "strength": s, "n_reference": half, "n": len(test),
                     "distance": frechet_distance(mu_r, sigma_r, mu, sigma), "features": name})
    for kind in kinds:
        d = [r["distance"] for r in rows if r["kind"] == kind]
        flag = "yes" if all(b > a for a, b in zip(d, d[1:])) else "no"
        for r in rows:
            if r["kind"] == kind:
                r["monotonic"] = flag
    return rows


def load_world_images(world: str | Path, n: int) -> np.ndarray:
    """The first n val2014 images of a calibration world, uint8 (n, H, W, 3)."""
    from PIL import Image

    files = sorted((Path(world) / "val2014").glob("*.png"))[:n]
    if len(files) < 4:
        raise ChecksError(f"{Path(world) / 'val2014'}: {len(files)} PNG images; the ladder needs "
                          "4 or more (make the world with python -m calibration_world make)")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            arrays.append(np.asarray(im.convert("RGB")))
    return np.stack(arrays)


# ---------------------------------------------------------------------------------------------
# the command


def world_record(world: Path) -> dict:
    """run.json "world": where the world is and what world.json says about it."""
    manifest = world / "world.json"
    if not manifest.is_file():
        raise ChecksError(f"{manifest} is missing: --world must be a folder written by "
                          "python -m calibration_world make")
    info = json.loads(manifest.read_text(encoding="utf-8"))
    return {"root": str(world), **{k: info.get(k) for k in ("format", "seed", "size", "n_images")}}


def _write(path: Path, rows: list[dict], fields: list[str]) -> Path:
    from bench.runs import atomic_write_text, csv_text

    return atomic_write_text(path, csv_text([{k: _cell(v) for k, v in r.items()} for r in rows], fields))


def _cell(v):
    return "" if isinstance(v, float) and math.isnan(v) else v


def _extractor(args) -> tuple[Callable, str]:
    if args.features == "simple":
        return simple_features, "simple (colour histograms + gradients)"
    from bench.metrics import networks
    from bench.weights import WeightsNotFoundError

    source = args.inception_weights if args.features == "inception" else None
    options = {"dims": args.fid_dims} if args.fid_dims != 2048 else {}
    try:
        ext = networks.load(args.features, source, **options)
    except (WeightsNotFoundError, ValueError, KeyError) as e:
        raise ChecksError(str(e).strip('"')) from None
    proto = getattr(ext, "protocol", {}) or {}
    if "feature_extractor" in proto:  # not Inception: say which network it is
        return ext, f"{proto['feature_extractor']}, {proto.get('feature_layer', ext.dims)}"
    return ext, f"inception pool-{ext.dims}"


def run_checks(args) -> list[Path]:
    """Every check the arguments ask for; returns the files written."""
    from bench.runs import RunDir, read_csv

    run = RunDir(args.run_dir)
    per_image = score_run(run.root, progress=not args.no_progress)
    configs = _configs(run.read_run() or {})
    written = [_write(run.metrics / "oracle_per_image.csv", per_image, PER_IMAGE_FIELDS),
               _write(run.metrics / "oracle_summary.csv", summarize(per_image, configs), SUMMARY_FIELDS),
               _write(run.metrics / "saturation.csv", saturation_rows(per_image, configs),
                      SATURATION_FIELDS),
               _write(run.metrics / "thresholding_modes.csv", mode_comparisons(per_image, configs),
                      MODE_FIELDS)]
    if run.per_image.is_file():
        rows = clip_auc_rows(per_image, read_csv(run.per_image), configs, n_boot=args.n_boot,
                             seed=args.seed)
        written.append(_write(run.metrics / "clip_auc.csv", rows, AUC_FIELDS))
    if args.world:
        world = Path(args.world)
        record = world_record(world)
        extract, name = _extractor(args)
        rows = degradation_ladder(load_world_images(world, args.n_real), extract, seed=args.seed,
                                  name=name, progress=not args.no_progress)
        written.append(_write(run.metrics / "degradations.csv", rows, DEGRADATION_FIELDS))
        if args.metric_ladder:
            from .validity import LADDER_FIELDS, metric_ladder

            try:
                ladder = metric_ladder(load_world_images(world, args.n_real), seed=args.seed,
                                       progress=not args.no_progress)
            except (FileNotFoundError, ValueError) as e:  # missing weights, too few images
                raise ChecksError(str(e)) from None
            written.append(_write(run.metrics / "metric_degradations.csv", ladder, LADDER_FIELDS))
        if "world" not in (run.read_run() or {}):
            run.update_run(world=record)
    if run.summary.is_file():
        written += _validity(run, args)
    return written


def _validity(run, args) -> list[Path]:
    """metric_validity.csv from summary.csv, oracle_summary.csv and the metric ladder."""
    from bench.runs import read_csv

    from .validity import VALIDITY_FIELDS, _summary_columns, metric_validity

    ladder_path = run.metrics / "metric_degradations.csv"
    ladder = read_csv(ladder_path) if ladder_path.is_file() else []
    rows = metric_validity(read_csv(run.summary), read_csv(run.metrics / "oracle_summary.csv"),
                           ladder, _summary_columns(run.metrics), n_boot=args.n_boot, seed=args.seed)
    if not rows:
        return []
    return [_write(run.metrics / "metric_validity.csv", rows, VALIDITY_FIELDS)]


EPILOG = """examples:
  # oracle, saturation and CLIP-style AUC of a sweep on the world's prompts
  python -m calibration_world.checks runs/cw_drawbench

  # plus the degradation ladder on 400 of the world's val2014 images
  python -m calibration_world.checks runs/cw_drawbench --world data/calibration_world --n-real 400
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration_world.checks",
                                description="Calibration checks of a run on the calibration world.",
                                epilog=EPILOG, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory of bench.coco_fid or bench.drawbench")
    p.add_argument("--world", default=None, metavar="DIR",
                   help="calibration world folder: adds the degradation ladder on its val2014 images")
    p.add_argument("--n-real", type=int, default=400, metavar="N", help="real images of the ladder")
    p.add_argument("--features", default="simple", metavar="NAME",
                   help="feature map of the ladder's Frechet distance: simple, or a registered "
                   "feature network (inception, calibration-world, ...)")
    p.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="torch-fidelity Inception weights (--features inception)")
    p.add_argument("--fid-dims", type=int, default=2048, help="Inception feature layer")
    p.add_argument("--no-metric-ladder", dest="metric_ladder", action="store_false",
                   help="with --world: skip the ladder of every distribution metric on the world's "
                   "networks (metric_degradations.csv)")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap resamples of the AUC and metric-validity CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the added noise")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.n_real < 4 or args.n_boot < 1:
        print("error: --n-real must be at least 4 and --n-boot at least 1", file=sys.stderr)
        return 2
    try:
        written = run_checks(args)
    except ChecksError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("calibration checks written: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
