"""What the commands do when they are given no data: run on the calibration world, offline.

The rule (each command's --help says it too):

- `--model` left out: the bundled tiny cascade (`calibration_world.bundled.bundled_cascade_path()`).
- `bench.coco_fid` without `--coco-root`, `bench.drawbench` without `--prompts`: the default
  world, made on first use in `$IMAGEN_BENCH_CACHE/calibration_world/<seed>-<size>` (else
  `~/.cache/imagen_bench/...`) by `calibration_world.dataset.write_dataset` and reused once its
  world.json exists (world.json is written last, so a folder with it is complete).
- A data folder holding world.json is a calibration world, the default one or one made with
  `python -m calibration_world make`. On a world, the flags left out take the WORLD values below
  (the bundled metric networks in place of Inception and CLIP, a small grid, few steps, so a run
  takes minutes on a CPU); on any other data they keep the paper's values. A flag given on the
  command line always wins.
- run.json records what was filled in ("defaults": which set and the values) and, for a world
  run, "world" (where it is and what world.json says), the mark the report uses to say that the
  numbers are calibration-world numbers.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "IMAGEN_BENCH_CACHE"
MANIFEST = "world.json"       # calibration_world.dataset writes it last
CALIBRATION_WORLD = "calibration-world"  # --fid-network / --clip-model of the bundled nets (plugin.py)
STATEMENT = ("Calibration-world numbers: synthetic shapes, the bundled tiny models and metric "
             "networks; not comparable with COCO or the paper.")


@dataclass(frozen=True)
class WorldSpec:
    """The default world the commands make when they are given no data."""

    seed: int = 0          # base seed of every scene
    size: int = 64         # image side (the bundled cascade's last stage)
    n_train: int = 200     # training images (nothing here trains on them; kept small)
    n_val: int = 1000      # validation images: captions to sample and the FID reference set
    n_prompts: int = 40    # unique prompts per skill in prompts.csv (Colors has at most 24)


DEFAULT_WORLD = WorldSpec()

# Flags a command fills in on a calibration world (left out on the command line). Sized so a
# no-argument run finishes in a few minutes on 2 CPU cores with the bundled cascade. The sampler
# is the paper's ancestral one: with deterministic DDIM the bundled cascade shows no cost of
# leaving thresholding out at high guidance (calibration_world.checks, thresholding_modes.csv).
COCO_FID = {"num_samples": 40, "guidance": "1,3,5", "thresholding": "static,dynamic:0.995",
            "sampler": "ddpm", "steps": 12, "fid_network": CALIBRATION_WORLD, "clip_model": CALIBRATION_WORLD,
            "metrics": "fid,cmmd,prdc,clip_score", "cmmd_network": f"{CALIBRATION_WORLD}-clip",
            "prdc_features": CALIBRATION_WORLD}
DRAWBENCH = {"samples_per_prompt": 2, "limit_per_category": 4, "guidance": "1,3",
             "thresholding": "dynamic:0.995", "sampler": "ddpm", "steps": 12,
             "clip_model": CALIBRATION_WORLD}


def cache_root() -> Path:
    """$IMAGEN_BENCH_CACHE, else ~/.cache/imagen_bench (the suite's other caches live there too)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imagen_bench"


def default_world_dir(spec: WorldSpec = DEFAULT_WORLD) -> Path:
    """<cache>/calibration_world/<seed>-<size>."""
    return cache_root() / "calibration_world" / f"{spec.seed}-{spec.size}"


def is_world(path: str | os.PathLike | None) -> bool:
    """True when `path` is a folder holding a calibration world's world.json."""
    return path is not None and (Path(path) / MANIFEST).is_file()


def _matches(root: Path, spec: WorldSpec) -> bool:
    """The world at `root` is the spec's, drawn on the world's backgrounds (a world cached before
    they changed is made again)."""
    from .scenes import BACKGROUNDS

    info = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    return (info.get("seed") == spec.seed and info.get("size") == spec.size
            and info.get("n_images", {}).get("val2014", 0) >= spec.n_val
            and info.get("background_colors") == [list(c) for c in BACKGROUNDS])


def ensure_world(root: str | os.PathLike | None = None, spec: WorldSpec = DEFAULT_WORLD, *,
                 progress: bool = True) -> Path:
    """The world folder, written first if it is missing, incomplete or made with another spec.

    It is written into a temporary sibling and renamed into place, so a crash leaves no
    half-written world behind and two processes making it at once both end with a whole one.
    Only the default folder (in the cache) is ever replaced; a given `root` that holds something
    else is a ValueError.
    """
    from .dataset import write_dataset

    default = default_world_dir(spec)
    root = Path(root) if root is not None else default
    if is_world(root) and _matches(root, spec):
        return root
    if root.exists() and root.resolve() != default.resolve() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty and is not a calibration world of seed {spec.seed}, "
                         f"size {spec.size} with {spec.n_val} val images on its backgrounds; choose "
                         "another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        print(f"making the calibration world in {root} ({spec.n_val} val images at "
              f"{spec.size}x{spec.size}; once)")
    write_dataset(tmp, n_train=spec.n_train, n_val=spec.n_val, size=spec.size, seed=spec.seed,
                  n_prompts=spec.n_prompts, progress=progress)
    if root.exists():
        if is_world(root) and _matches(root, spec):   # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return root
        shutil.rmtree(root)  # the cache folder (incomplete or another spec), or an empty folder
    try:
        os.replace(tmp, root)
    except OSError:  # another process (a torchrun rank) renamed its copy into place first
        if not (is_world(root) and _matches(root, spec)):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def world_record(root: str | os.PathLike, filled: dict) -> dict:
    """run.json "world": where the world is, what world.json says, and the statement to show."""
    root = Path(root)
    info = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    return {"calibration_world": True, "root": str(root),
            **{k: info.get(k) for k in ("format", "seed", "size", "n_images")},
            "defaults": filled, "statement": STATEMENT}


def bundled_cascade() -> Path:
    """The bundled tiny cascade's checkpoint directory (`--model` left out)."""
    from .bundled import bundled_cascade_path

    return bundled_cascade_path()


# ---------------------------------------------------------------------------------------------
# where `make demo` writes (relative to the working directory, as `make` runs it)

DEMO_OUT = Path("runs") / "demo"


def demo_layout(out: str | os.PathLike = DEMO_OUT) -> dict[str, Path]:
    """The demo's files: its two runs, rating tasks, simulated votes, analysis and report.

    `python -m bench.report` and `python -m rater serve` with no inputs read these.
    """
    out = Path(out)
    return {"coco_fid": out / "coco_fid", "base": out / "base_stage", "drawbench": out / "drawbench",
            "tasks": out / "tasks" / "tasks.jsonl", "votes": out / "votes.db",
            "human": out / "human", "report": out / "report" / "index.html",
            "summary": out / "demo.json"}
