"""Train the calibration world's tiny cascade from a recipe, with imagen_ref.train, and bundle it.

    OUT/data/          the world dataset (calibration_world.dataset), unless --data is given
    OUT/checkpoint/    the cascade checkpoint imagen_ref writes (cascade.json, <key>.safetensors,
                       <key>.train.safetensors, <key>.log.jsonl)
    OUT/<key>.done.json  a stage is complete only when this exists; reruns skip it, and resume
                       an interrupted stage from its last saved state (every SAVE_EVERY steps)
                       with what is left of its time budget
    OUT/<key>-warmup/  a stage's warm-up (if its recipe has one): data/ (the warm-up's scene
                       mix), checkpoint/ and <key>.done.json; the stage then starts from its weights
    OUT/<key>-warmup2/ ... the later phases of a warm-up given as a list, each starting from the
                       weights of the one before
    OUT/run.json       the recipe, seeds, wall times and steps reached

`--bundle DIR` then copies the EMA weights (as float16) and cascade.json to DIR, e.g. the
package's calibration_world/weights/cascade/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.cli import HelpFormatter
from bench.runs import atomic_write_json

RECIPE_FORMAT = "calibration_world.cascade_recipe"
# imagen_ref.train's defaults when absent
OPTIONAL_STAGE_KEYS = ("max_aug_level", "high_noise_fraction", "high_noise_max_log_snr",
                       "lr_decay_fraction")
STAGE_KEYS = ("stage", "config", "steps", "max_minutes", "batch_size", "lr", "warmup_steps",
              "ema_decay", "grad_clip", "cond_drop_prob", "seed")
# a stage's optional "warmup": a first run on its own scene mix (and background set) whose raw
# weights the stage starts from, or a list of such phases, each starting from the one before; its
# other imagen_ref.train settings are the stage's unless given, except lr_decay_fraction (a
# warm-up hands on weights mid-training: no decay unless it asks)
WARMUP_KEYS = ("skills", "n_train", "data_seed", "steps", "max_minutes")
WARMUP_DATA_KEYS = ("backgrounds",)   # of its dataset; the world's own set unless given
WARMUP_OVERRIDES = ("batch_size", "lr", "warmup_steps", "high_noise_fraction",
                    "high_noise_max_log_snr", "image_size", "lr_decay_fraction")

SAVE_EVERY = 200  # steps between a stage's saved training states (what an interrupted run resumes)
# the imagen_ref.train arguments a saved state must share with the recipe to be resumed by it
RESUME_MUST_MATCH = ("stage", "config", "steps", "max_total_minutes", "batch_size", "lr",
                     "warmup_steps", "ema_decay", "grad_clip", "cond_drop_prob", "seed",
                     "max_aug_level", "high_noise_fraction", "high_noise_max_log_snr", "image_size",
                     "lr_decay_fraction", "text_encoder", "max_length")

EPILOG = """examples:
  # the bundled cascade: world dataset, base 32x32 (after a 16x16 warm-up) and SR 64x64 stages
  # (an hour on 2 cores); if interrupted, rerun the same line: it resumes where it stopped
  python -m calibration_world.train_cascade --out runs/cw_cascade \\
      --bundle calibration_world/weights/cascade
  # on a GPU, with a dataset made earlier by `python -m calibration_world make`
  python -m calibration_world.train_cascade --out runs/cw_cascade --data data/cw --device cuda
  # only the base stage
  python -m calibration_world.train_cascade --out runs/cw_cascade --stages base

A stage may have a "warmup": {"skills": {"Positional": 1}, "n_train": 6000, "data_seed": 1,
"steps": 1000, "max_minutes": 15, ...}: first a run on n_train scenes of that skill mix (its
other settings are the stage's, unless it gives batch_size, lr, warmup_steps,
high_noise_fraction, high_noise_max_log_snr or image_size; it anneals only if it gives
lr_decay_fraction; "backgrounds": "light" or "mid" draws its scenes on that background set
instead of the world's own, "mid"), then the stage starts from its raw weights (a smaller
image_size trains the base config at that size, 4x cheaper per halving; its position tables are
resampled to the stage's size). A list of such objects is a warm-up in phases, each starting from
the weights of the one before: the shipped recipe learns on the light set, then on the world's.
"""


class RecipeError(Exception):
    """A recipe file that cannot be used (exit code 2)."""


def default_recipe() -> Path:
    """The recipe of the bundled cascade, shipped in the package."""
    return Path(str(resources.files("calibration_world") / "recipes" / "cascade.json"))


def load_recipe(path: str | os.PathLike) -> dict:
    """Read and check a recipe; the error names the file and the key."""
    path = Path(path)
    try:
        recipe = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e})") from None
    if recipe.get("format") != RECIPE_FORMAT:
        raise RecipeError(f"{path}: 'format' must be {RECIPE_FORMAT!r}")
    for key in ("dataset", "text_encoder", "max_length", "stages"):
        if key not in recipe:
            raise RecipeError(f"{path}: missing key {key!r}")
    for i, stage in enumerate(recipe["stages"]):
        missing = [k for k in STAGE_KEYS if k not in stage]
        if missing:
            raise RecipeError(f"{path}: stages[{i}] lacks {missing}")
        if "warmup" in stage:
            warm = stage["warmup"]
            if isinstance(warm, list) and not warm:
                raise RecipeError(f"{path}: stages[{i}].warmup is an empty list; give at least "
                                  "one phase or leave the key out")
            for k, phase in enumerate(warmup_phases(stage)):
                where = f"stages[{i}].warmup" + (f"[{k}]" if isinstance(warm, list) else "")
                _check_warmup(path, where, phase)
    return recipe


def warmup_phases(stage: dict) -> list[dict]:
    """A stage's warm-up phases in order: [] without one, [warmup] for a single object."""
    warm = stage.get("warmup")
    if warm is None:
        return []
    return list(warm) if isinstance(warm, list) else [warm]


def warmup_dir(out: Path, key: str, phase: int) -> Path:
    """OUT/<key>-warmup for stage `key`'s first phase, OUT/<key>-warmup<k+1> after: each stage's
    phases have their own folders (their scene mixes differ)."""
    return out / (f"{key}-warmup" if phase == 0 else f"{key}-warmup{phase + 1}")


def _stage_key(stage: dict) -> str:
    """The checkpoint key of a recipe stage's config ("base", "sr64", ...)."""
    from imagen_ref.checkpoint import stage_key
    from imagen_ref.configs import get_config

    return stage_key(get_config(stage["config"]))


def _check_warmup(path: Path, where: str, warm) -> None:
    from .scenes import BACKGROUND_SETS, SKILLS

    where = f"{path}: {where}"
    if not isinstance(warm, dict):
        raise RecipeError(f"{where} must be an object with keys {list(WARMUP_KEYS)}")
    missing = [k for k in WARMUP_KEYS if k not in warm]
    unknown = sorted(set(warm) - set(WARMUP_KEYS) - set(WARMUP_OVERRIDES) - set(WARMUP_DATA_KEYS))
    problems = ([f"lacks {missing}"] if missing else []) + \
        ([f"unknown keys {unknown}"] if unknown else [])
    if problems:
        raise RecipeError(f"{where}: {'; '.join(problems)}")
    skills = warm["skills"]
    if not (isinstance(skills, dict) and skills and set(skills) <= set(SKILLS)
            and all(isinstance(w, (int, float)) and w >= 0 for w in skills.values())
            and any(w > 0 for w in skills.values())):
        raise RecipeError(f"{where}.skills must map skills of {list(SKILLS)} to non-negative "
                          "weights, not all zero")
    if "backgrounds" in warm and warm["backgrounds"] not in BACKGROUND_SETS:
        raise RecipeError(f"{where}.backgrounds must be one of {list(BACKGROUND_SETS)}, not "
                          f"{warm['backgrounds']!r}")


def stage_args(stage: dict, recipe: dict, data: Path, ckpt_dir: Path, cache: Path,
               device: str | None, progress: bool):
    """The imagen_ref.train arguments of one recipe stage: its `max_minutes` is the stage's
    budget over resumed runs (--max-total-minutes), and a saved state is resumed."""
    from imagen_ref.train import TrainArgs

    fields = {k: stage[k] for k in STAGE_KEYS if k != "max_minutes"}
    fields.update({k: stage[k] for k in OPTIONAL_STAGE_KEYS if k in stage})
    return TrainArgs(**fields, max_total_minutes=stage["max_minutes"], data=str(data),
                     out=str(ckpt_dir), save_every=SAVE_EVERY, resume=True,
                     text_encoder=recipe["text_encoder"], max_length=recipe["max_length"],
                     embedding_cache=str(cache), device=device, progress=progress, log_every=10)


def warmup_args(stage: dict, recipe: dict, out: Path, device: str | None, progress: bool,
                phase: int = 0):
    """The imagen_ref.train arguments of a stage's warm-up run (phase `phase`, under
    warmup_dir(OUT, key, phase)); a later phase starts from the weights of the one before."""
    warm, key = warmup_phases(stage)[phase], _stage_key(stage)
    where = warmup_dir(out, key, phase)
    args = stage_args(stage, recipe, where / "data", where / "checkpoint", out / "embeddings",
                      device, progress)
    overrides = {"lr_decay_fraction": 0.0}
    overrides.update({k: warm[k] for k in ("steps", *WARMUP_OVERRIDES) if k in warm})
    if phase > 0:
        overrides["init_from"] = str(warmup_dir(out, key, phase - 1) / "checkpoint")
    return dataclasses.replace(args, max_total_minutes=warm["max_minutes"], **overrides)


def check_resumable(args, key: str) -> None:
    """Refuse to resume a saved training state that another recipe started (RecipeError)."""
    from imagen_ref.checkpoint import read_train_state_header, train_state_path

    if not train_state_path(args.out, key).is_file():
        return
    header = read_train_state_header(args.out, key, remedy="delete it or train into a new --out")
    saved, defaults = header.get("args", {}), type(args)()
    # a setting newer than the state counts as its default there
    differ = [k for k in RESUME_MUST_MATCH if saved.get(k, getattr(defaults, k)) != getattr(args, k)]
    if differ:
        raise RecipeError(f"{train_state_path(args.out, key)} was started with other settings "
                          f"({', '.join(differ)}) than this recipe's; train into a new --out or "
                          "delete that state")


def make_warmup_data(recipe: dict, warm: dict, out: Path, key: str, progress: bool,
                     phase: int = 0) -> Path:
    """A warm-up phase's dataset under warmup_dir(OUT, key, phase)/data (kept if complete and
    of this phase's scene mix; another dataset there is refused with RecipeError): the recipe's
    image size, `n_train` scenes drawn from the phase's skill weights, on its background set."""
    from .dataset import MANIFEST, write_dataset
    from .scenes import DEFAULT_BACKGROUNDS

    data = warmup_dir(out, key, phase) / "data"
    spec = {"seed": warm["data_seed"], "size": recipe["dataset"]["size"],
            "n_images": {"train2014": warm["n_train"], "val2014": 0},
            "skill_weights": warm["skills"],
            "backgrounds": warm.get("backgrounds", DEFAULT_BACKGROUNDS)}
    if (data / MANIFEST).is_file():
        found = json.loads((data / MANIFEST).read_text(encoding="utf-8"))
        differ = sorted(k for k, v in spec.items() if found.get(k) != v)
        if differ:
            raise RecipeError(f"{data} holds another dataset than this warm-up's (its "
                              f"{', '.join(differ)} differ); delete it or train into a new --out")
        return data
    write_dataset(data, n_train=warm["n_train"], n_val=0, size=spec["size"], seed=spec["seed"],
                  n_prompts=recipe["dataset"].get("n_prompts", 40), progress=progress,
                  skill_weights=warm["skills"], backgrounds=spec["backgrounds"])
    return data


def _record(key: str, recipe_part: dict, result: dict) -> dict:
    """A stage's done record; `seconds` is its training time over every run it took."""
    losses = result["losses"][-50:]
    record = {"key": key, "recipe": recipe_part, "step": result["step"],
              "seconds": round(result["train_seconds"], 1),
              "images_per_s": round(result["images_per_s"], 2),
              "final_loss": sum(losses) / len(losses) if losses else None}
    if result["start_step"]:
        record["resumed_at_step"] = result["start_step"]
    return record


def _done_record(path: Path, recipe_part: dict) -> dict:
    """A completed stage's record, refused (RecipeError) if another recipe trained it."""
    record = json.loads(path.read_text())
    if record.get("recipe") != recipe_part:
        raise RecipeError(f"{path} records a stage trained with another recipe than this one; "
                          "train into a new --out or delete that stage's files")
    return record


def make_data(recipe: dict, out: Path, progress: bool) -> Path:
    """The recipe's world dataset under OUT/data (kept if complete)."""
    from .dataset import MANIFEST, write_dataset

    data = out / "data"
    if (data / MANIFEST).is_file():
        return data
    d = recipe["dataset"]
    write_dataset(data, n_train=d["n_train"], n_val=d["n_val"], size=d["size"], seed=d["seed"],
                  n_prompts=d.get("n_prompts", 40), progress=progress)
    return data


def train_stages(recipe: dict, out: Path, data: Path, *, device: str | None = None,
                 only: tuple[str, ...] | None = None, progress: bool = True) -> list[dict]:
    """Train every recipe stage not done yet into OUT/checkpoint; returns one record per stage."""
    from imagen_ref.train import train

    ckpt_dir, records = out / "checkpoint", []
    for stage in recipe["stages"]:
        if only and stage["stage"] not in only:
            continue
        key = _stage_key(stage)
        done = out / f"{key}.done.json"
        if done.is_file():
            records.append(_done_record(done, stage))
            continue
        args = stage_args(stage, recipe, data, ckpt_dir, out / "embeddings", device, progress)
        phases = warmup_phases(stage)
        warm_records = []
        for phase, warm in enumerate(phases):
            warm_done = warmup_dir(out, key, phase) / f"{key}.done.json"
            if warm_done.is_file():
                warm_records.append(_done_record(warm_done, warm))
                continue
            make_warmup_data(recipe, warm, out, key, progress, phase)
            warm_args = warmup_args(stage, recipe, out, device, progress, phase)
            check_resumable(warm_args, key)
            warm_records.append(_record(key, warm, train(warm_args)))
            atomic_write_json(warm_done, warm_records[-1])
        if phases:
            args = dataclasses.replace(
                args, init_from=str(warmup_dir(out, key, len(phases) - 1) / "checkpoint"))
        check_resumable(args, key)
        record = _record(key, stage, train(args))
        if warm_records:
            record["warmup"] = warm_records if isinstance(stage["warmup"], list) else warm_records[0]
        atomic_write_json(done, record)
        records.append(record)
    return records


def bundle(ckpt_dir: str | os.PathLike, dest: str | os.PathLike, dtype=torch.float16) -> Path:
    """Copy a cascade checkpoint's EMA stages to `dest` with float weights cast to `dtype`.

    Only cascade.json and <key>.safetensors travel (no training state); each stage's sha256 is
    recomputed and its record notes the cast. imagen_ref loads the file into float32 modules.
    Returns: dest.
    """
    from imagen_ref.checkpoint import MANIFEST, read_manifest, sha256_file

    src, dest = Path(ckpt_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(src)
    for record in manifest["stages"]:
        tensors = load_file(str(src / record["file"]))
        cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                for k, v in tensors.items()}
        target = dest / record["file"]
        save_file(cast, str(target), metadata={"format": "pt"})
        record["sha256"] = sha256_file(target)
        record["training"]["bundled_dtype"] = str(dtype).removeprefix("torch.")
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return dest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m calibration_world.train_cascade",
                                description=__doc__.split("\n")[0], epilog=EPILOG,
                                formatter_class=HelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="run directory")
    p.add_argument("--recipe", default=None, metavar="JSON",
                   help="recipe file (default: the package's recipes/cascade.json)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="an existing world dataset (default: make the recipe's in OUT/data)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: CUDA if present)")
    p.add_argument("--stages", nargs="+", choices=("base", "sr"), default=None,
                   help="train only these stages")
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="afterwards copy the float16 EMA cascade to DIR")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code (2 for user errors)."""
    from imagen_ref.checkpoint import CheckpointError
    from imagen_ref.data import DataError
    from imagen_ref.train import UsageError

    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        recipe_path = Path(args.recipe) if args.recipe else default_recipe()
        recipe = load_recipe(recipe_path)
        out.mkdir(parents=True, exist_ok=True)
        data = Path(args.data) if args.data else make_data(recipe, out, args.progress)
        t0 = time.perf_counter()
        records = train_stages(recipe, out, data, device=args.device,
                               only=tuple(args.stages) if args.stages else None,
                               progress=args.progress)
        run = {"recipe": recipe, "recipe_file": recipe_path.name, "stages": records,
               "seconds": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "machine": platform.machine(),
               "processor": platform.processor()}
        (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
        if args.bundle:
            bundle(out / "checkpoint", args.bundle)
    except (RecipeError, UsageError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cascade checkpoint: {out / 'checkpoint'}" +
          (f"; bundled to {args.bundle}" if args.bundle else "") + f"; run record {out / 'run.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
