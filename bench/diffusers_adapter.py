"""`--model diffusers:PATH_OR_ID` (optional extra `diffusers`): where the pipeline is, and
DeepFloyd IF's cascade mapping; every other family goes through the generic adapter of
bench/diffusers_pipeline_adapter.py.

PATH_OR_ID is a folder saved with save_pretrained, or a Hugging Face repo id (ID@REVISION pins
a revision) whose snapshot is in the Hugging Face cache. Nothing is downloaded: a repo that is
not in the cache stops the command with a message naming it; pipelines load with
`local_files_only=True`.

For IF, PATH is a folder holding `stage_I/` (an IFPipeline) and optionally `stage_II/` (an
IFSuperResolutionPipeline), or PATH is itself a stage-I pipeline folder.

A SamplingConfig maps onto the pipelines as follows:

    guidance w (per stage)  -> guidance_scale (diffusers: eps_u + w (eps_c - eps_u), w = 1 is
                               no guidance, as in the suite; w < 1 is refused, since diffusers
                               turns guidance off for any w <= 1 instead of extrapolating)
    steps                   -> num_inference_steps
    sampler ddpm | ddim     -> DDPMScheduler | DDIMScheduler, rebuilt from the saved
                               scheduler's config with the thresholding overrides below
    thresholding none       -> thresholding=False, clip_sample=False
                 static     -> thresholding=False, clip_sample=True, clip_sample_range=1
                 dynamic:P  -> thresholding=True, dynamic_thresholding_ratio=P,
                               sample_max_value=1e9 (no cap: the paper's rule)
                 dynamic:P:CAP -> as above with sample_max_value=CAP (IF's own semantics)
    aug_level               -> stage II noise_level = round(aug_level * 1000), capped at the
                               noising scheduler's last timestep

The unconditional branch is diffusers' encoding of the empty prompt (IF's convention), not
zeroed embeddings (Imagen's). Each image's stage noise comes from its own generator, seeded
with derive_seed(item.seed, stage), so an image does not depend on its batch.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from imagen_ref.device import autocast, derive_seed, get_device, make_generators
from imagen_ref.thresholding import parse_mode

from .adapters import FLAGS, IMAGEN_SAMPLERS, AdapterError, AdapterOptions
from .sampling import SamplingConfig

UNCAPPED = 1e9  # sample_max_value for dynamic:P (diffusers' default 1.0 would make it static)
STAGES = ("stage_I", "stage_II")
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name
IF_OPTIONS = ("num_stages",)  # the AdapterOptions the IF cascade honours


@dataclass(frozen=True)
class Source:
    """Where a --model diffusers: pipeline lives."""

    folder: Path                  # the pipeline folder (a cached repo's snapshot folder)
    repo_id: str | None = None    # the Hugging Face repo id, when it came from the cache
    revision: str | None = None   # that snapshot's commit hash

    def describe(self) -> dict:
        return {"path": str(self.folder), "repo_id": self.repo_id, "revision": self.revision}


def resolve_source(target: str) -> Source:
    """A folder, or a repo id (ID or ID@REVISION) found in the Hugging Face cache; AdapterError
    naming it otherwise. Never downloads."""
    if Path(target).is_dir():
        return Source(Path(target))
    repo_id, _, revision = target.partition("@")
    if not REPO_ID.match(repo_id):
        raise AdapterError(f"diffusers pipeline folder {target} does not exist; pass "
                           "--model diffusers:DIR with a pipeline saved by save_pretrained, or a "
                           "repo id (ORG/NAME) whose files are in the Hugging Face cache")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None, cache_dir=cache,
                                        local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise AdapterError(
            f"diffusers pipeline folder {target} does not exist and the Hugging Face cache "
            f"({cache}) holds no snapshot of the repo {repo_id}"
            + (f" at revision {revision}" if revision else "") + "; nothing is downloaded: fetch "
            f"it first (huggingface-cli download {repo_id}) or pass a save_pretrained folder"
        ) from None
    return Source(folder, repo_id, folder.name)


def pipeline_class_name(folder: Path) -> str:
    """`_class_name` of folder/model_index.json; AdapterError if there is none."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise AdapterError(f"{index} is missing; save the pipeline there with "
                           "pipeline.save_pretrained(DIR)")
    try:
        return str(json.loads(index.read_text())["_class_name"])
    except (ValueError, KeyError) as e:
        raise AdapterError(f"{index}: not a diffusers model index ({type(e).__name__}: {e})"
                           ) from None


def load_diffusers(target: str, options: AdapterOptions):
    """The adapter of `--model diffusers:TARGET`: IF's cascade mapping for IF pipelines (a folder
    with stage_I/, or an IF model index), the generic pipeline adapter for the rest."""
    try:
        import diffusers  # noqa: F401  (the optional extra)
    except ImportError as e:
        raise AdapterError(f"--model diffusers:{target} needs the diffusers package ({e}); "
                           "install it with pip install 'imagen-bench[diffusers]'") from None
    source = resolve_source(target)
    is_if = (source.folder / "stage_I").is_dir() \
        or pipeline_class_name(source.folder).startswith("IF")
    if is_if:
        unused = [o for o in options.given() if o not in IF_OPTIONS]
        if unused:
            raise AdapterError(f"{FLAGS[unused[0]]} does not apply to DeepFloyd IF cascades "
                               "(--model diffusers: with an IF pipeline)")
        return DiffusersIFAdapter(source.folder, device=options.device,
                                  precision=options.precision, num_stages=options.num_stages)
    from .diffusers_pipeline_adapter import DiffusersPipelineAdapter

    return DiffusersPipelineAdapter(source, options)


def scheduler_overrides(mode: str) -> dict:
    """The diffusers scheduler config values for a thresholding mode string."""
    m = parse_mode(mode)
    if m.kind == "none":
        return {"thresholding": False, "clip_sample": False}
    if m.kind == "static":
        return {"thresholding": False, "clip_sample": True, "clip_sample_range": 1.0}
    cap = UNCAPPED if m.cap == float("inf") else float(m.cap)
    return {"thresholding": True, "clip_sample": False,
            "dynamic_thresholding_ratio": float(m.percentile), "sample_max_value": cap}


def noise_level(aug_level: float, num_train_timesteps: int = 1000) -> int:
    """Stage II noise_level for an aug level in [0, 1] (IF: noise_level / 1000 ≈ aug_level)."""
    return min(int(round(aug_level * 1000)), num_train_timesteps - 1)


def _folder_digest(folder: Path) -> str:
    """sha256 over the folder's JSON configs (names and contents) and its weight files'
    names and sizes: stable, and cheap for multi-GB weights."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".json":
            h.update(f"{rel}\0".encode() + path.read_bytes() + b"\0")
        elif path.suffix in (".safetensors", ".bin", ".model", ".msgpack"):
            h.update(f"{rel}\0{path.stat().st_size}\0".encode())
    return h.hexdigest()


class DiffusersIFAdapter:
    """A DeepFloyd IF cascade (stage I, optionally stage II) run by diffusers."""

    kind = "diffusers"

    def __init__(self, path: str | Path, *, device=None, precision: str = "fp32",
                 num_stages: int | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise AdapterError(f"diffusers pipeline folder {self.path} does not exist; pass "
                               "--model diffusers:DIR with DIR/stage_I (and optionally "
                               "DIR/stage_II) saved by save_pretrained (hub ids are not downloaded)")
        if precision not in ("fp32", "bf16"):
            raise AdapterError(f"--precision {precision}: the IF cascade samples in fp32 or bf16 "
                               "(autocast)")
        if (self.path / "stage_I").is_dir():
            self.folders = [self.path / s for s in STAGES if (self.path / s).is_dir()]
        else:
            self.folders = [self.path]
        self.folders = self.folders[: num_stages or None]
        for folder in self.folders:
            if not (folder / "model_index.json").is_file():
                raise AdapterError(f"{folder / 'model_index.json'} is missing; save the IF "
                                   "pipeline there with pipeline.save_pretrained(DIR)")
        self.device, self.precision = device, precision
        self.digests = [_folder_digest(f) for f in self.folders]
        self._pipes = None
        self.last_schedulers: list = []  # the schedulers the last generate() built, per stage

    @property
    def num_stages(self) -> int:
        return len(self.folders)

    @property
    def model_id(self) -> str:
        digest = hashlib.sha256("|".join(self.digests).encode()).hexdigest()[:12]
        return f"diffusers:{self.path.resolve().name}@{digest}"

    def describe(self) -> dict:
        return {"kind": self.kind, "model_id": self.model_id, "path": str(self.path),
                "precision": self.precision,
                "stages": [{"folder": str(f), "config_sha256": d}
                           for f, d in zip(self.folders, self.digests)]}

    def spec_fields(self) -> dict:
        return {}

    def load(self):
        """Load the pipelines now; AdapterError on any problem."""
        if self._pipes is None:
            from diffusers import IFPipeline, IFSuperResolutionPipeline

            classes = (IFPipeline, IFSuperResolutionPipeline)
            dev = get_device(self.device)
            pipes = []
            for folder, cls in zip(self.folders, classes):
                try:
                    pipe = cls.from_pretrained(folder, local_files_only=True)
                except (OSError, ValueError, TypeError, KeyError) as e:
                    raise AdapterError(f"cannot load the {cls.__name__} in {folder}: "
                                       f"{type(e).__name__}: {e}") from None
                pipe.set_progress_bar_config(disable=True)
                pipes.append(pipe.to(dev))
            if pipes[0].text_encoder is None or pipes[0].tokenizer is None:
                raise AdapterError(f"{self.folders[0]} has no text_encoder/tokenizer; stage I "
                                   "must carry the T5 encoder the cascade is conditioned on")
            self._pipes, self._device = pipes, dev
        return self._pipes

    def guidance(self, config: SamplingConfig) -> list[float]:
        return [config.guidance[min(i, len(config.guidance) - 1)] for i in range(self.num_stages)]

    def check(self, items: Sequence, config: SamplingConfig) -> None:
        if config.sampler not in IMAGEN_SAMPLERS:
            raise AdapterError(f"--sampler {config.sampler}: the IF cascade samples with "
                               f"{' or '.join(IMAGEN_SAMPLERS)} (its U-Nets predict a variance)")
        low = [w for w in self.guidance(config) if w < 1]
        if low:
            raise AdapterError(f"config {config.config_key}: guidance {low[0]:g} < 1 is not "
                               "supported by diffusers (it disables guidance for w <= 1); use "
                               "weights >= 1 with --model diffusers:PATH")
        self.load()

    def scheduler(self, pipe, config: SamplingConfig):
        """The pipe's scheduler rebuilt for this config's sampler and thresholding."""
        from diffusers import DDIMScheduler, DDPMScheduler

        cls = DDPMScheduler if config.sampler == "ddpm" else DDIMScheduler
        overrides = scheduler_overrides(config.thresholding)
        base = dict(pipe.scheduler.config)
        if cls is DDIMScheduler:
            # DDIM has no learned variance: a fixed variance_type makes the IF pipelines split
            # the unet's variance channels off before the step (IF unets predict eps + variance)
            # (not a DDIM init argument, so from_config keeps the base config's value: set it there)
            base["variance_type"] = "fixed_small"
        return cls.from_config(base, **overrides)

    def generate(self, items: Sequence, config: SamplingConfig) -> list[np.ndarray]:
        import torch

        pipes = self.load()
        dev = self._device
        prompts = [it.text for it in items]
        weights = self.guidance(config)
        self.last_schedulers = []
        with torch.no_grad(), autocast(dev, self.precision):
            embeds, neg = pipes[0].encode_prompt(prompts, do_classifier_free_guidance=True,
                                                 device=dev, clean_caption=False)
            image = None
            for i, pipe in enumerate(pipes):
                pipe.scheduler = self.scheduler(pipe, config)
                self.last_schedulers.append(pipe.scheduler)
                gens = make_generators([derive_seed(it.seed, STAGES[i]) for it in items], dev)
                kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=neg,
                              guidance_scale=weights[i], num_inference_steps=config.steps,
                              generator=gens, output_type="pt", clean_caption=False)
                if i > 0:
                    n = pipe.image_noising_scheduler.config.num_train_timesteps
                    kwargs.update(image=image, noise_level=noise_level(config.aug_level, n))
                image = pipe(**kwargs).images
        x = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return list(x.permute(0, 2, 3, 1).cpu().numpy())
