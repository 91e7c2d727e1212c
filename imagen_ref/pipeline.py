"""The cascade: text -> base 64x64 -> SR -> SR (paper §2, Fig. A.4), any prefix of the stages.

Every stage has its own sampling settings (guidance weight, thresholding mode, sampler, steps,
noise-augmentation level). Each image's noise comes from generators seeded by (seed, stage),
so an image never depends on the batch it was drawn in.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .device import autocast as precision_context
from .device import derive_seed, get_device, make_generators, randn_per_image
from .diffusion import Schedule, noise_augment
from .guidance import make_denoiser
from .samplers import SAMPLERS, time_grid
from .thresholding import parse_mode


@dataclass(frozen=True)
class StageSampling:
    """How one stage is sampled."""

    guidance: float = 1.0          # classifier-free guidance weight w (1 = none)
    thresholding: str = "none"     # none | static | dynamic:P | dynamic:P:CAP
    sampler: str = "ddim"          # ddim | ddpm
    steps: int = 64                # denoising steps
    eta: float = 0.0               # DDIM eta (ignored by ddpm)
    aug_level: float = 0.0         # SR stages: noise-augmentation level of the low-res input

    def __post_init__(self) -> None:
        parse_mode(self.thresholding)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of {sorted(SAMPLERS)}")
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if not 0.0 <= self.aug_level <= 1.0:
            raise ValueError("aug_level must be in [0, 1]")


@dataclass
class Stage:
    """One diffusion model of the cascade with the process it was trained on."""

    key: str                          # "base", "sr256", ...
    model: torch.nn.Module
    schedule: Schedule
    aug_schedule: Schedule | None = None
    prediction: str | None = None     # "eps" | "v"; None: the model config's
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prediction is None:
            self.prediction = getattr(self.model.config, "prediction", "eps")

    @property
    def config(self):
        return self.model.config


def expand_settings(settings, n_stages: int) -> list[StageSampling]:
    """One StageSampling per stage; a single one is used for every stage."""
    if isinstance(settings, StageSampling):
        return [settings] * n_stages
    settings = list(settings)
    if len(settings) == 1:
        return settings * n_stages
    if len(settings) < n_stages:
        raise ValueError(f"{len(settings)} stage settings for {n_stages} stages")
    return settings[:n_stages]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (B, 3, H, W) -> uint8 (B, H, W, 3) on the CPU."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu()


class Cascade:
    """A text encoder and an ordered list of stages (base first)."""

    def __init__(self, stages: Sequence[Stage], text_encoder, device: torch.device | str = "cpu"):
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        self.stages = list(stages)
        self.text_encoder = text_encoder
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path, *, device=None, num_stages: int | None = None,
                        text_encoder=None, embedding_cache: str | None = None) -> "Cascade":
        """Load a checkpoint directory (`cascade.json` + one .safetensors per stage)."""
        from .checkpoint import load_stage, read_manifest
        from .text_encoder import FrozenTextEncoder

        dev = get_device(device)
        manifest = read_manifest(path)
        specs = manifest["stages"][: num_stages or None]
        stages = []
        for spec in specs:
            model, st = load_stage(path, spec["key"], device=dev)
            stages.append(Stage(st.key, model.eval(), st.schedule, st.aug_schedule, st.prediction,
                                meta=spec))
        if text_encoder is None:
            te = manifest["text_encoder"]
            text_encoder = FrozenTextEncoder(te["name_or_path"], max_length=te["max_length"],
                                             device=dev, cache_dir=embedding_cache)
        return cls(stages, text_encoder, dev)

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        emb, mask = self.text_encoder.encode(list(prompts), fixed_length=True)
        return emb.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def sample(self, prompts: Sequence[str], seeds: Sequence[int], settings=StageSampling(), *,
               num_stages: int | None = None, start: int = 0, lowres: torch.Tensor | None = None,
               precision: str = "fp32", progress: bool = False) -> list[torch.Tensor]:
        """Sample one image per (prompt, seed) through the first `num_stages` stages.

        `start` > 0 skips the stages before it and feeds `lowres` (B, 3, h, w) in [-1, 1] to
        stage `start`, a super-resolution stage: e.g. ground-truth low-res images, to judge an
        SR stage apart from the stages before it. Each stage's noise depends only on (seed,
        stage), so stage `start` fed the earlier stages' output gives the full cascade's images.
        `settings` (one, or a list) are those of the stages run.

        Returns: the images of every stage run, each (B, 3, H, W) in [-1, 1] on the CPU.
        """
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        stages = self.stages[: num_stages or None]
        if not 0 <= start < len(stages):
            raise ValueError(f"start={start}: this cascade runs stages 0..{len(stages) - 1}")
        if (start > 0) != (lowres is not None):
            raise ValueError("a low-res input is needed exactly when starting at a "
                             "super-resolution stage (start > 0)")
        if lowres is not None:
            if lowres.ndim != 4 or lowres.shape[0] != len(prompts) or lowres.shape[1] != 3:
                raise ValueError(f"lowres must be ({len(prompts)}, 3, h, w), one image per "
                                 f"prompt; got {tuple(lowres.shape)}")
            if not torch.isfinite(lowres).all():
                raise ValueError("lowres has NaN or infinite values")
        stages = stages[start:]
        per_stage = expand_settings(settings, len(stages))
        text, mask = self.encode(prompts)
        outputs = []
        for stage, cfg in zip(stages, per_stage):
            lowres = self._sample_stage(stage, cfg, text, mask, seeds, lowres, precision, progress)
            outputs.append(lowres.cpu())
        return outputs

    def _sample_stage(self, stage: Stage, cfg: StageSampling, text, mask, seeds, lowres,
                      precision: str, progress: bool) -> torch.Tensor:
        dev, conf = self.device, stage.config
        gens = make_generators([derive_seed(s, stage.key) for s in seeds], dev)
        shape = (len(seeds), conf.out_channels, conf.image_size, conf.image_size)
        z = randn_per_image(shape, gens, dev)
        aug_t = None
        if conf.lowres_size is not None:
            lowres = self._prepare_lowres(stage, lowres)
            aug_t = torch.full((len(seeds),), cfg.aug_level, device=dev)
            lr_noise = randn_per_image(lowres.shape, gens, dev)
            lowres = noise_augment(lowres, aug_t, stage.aug_schedule or stage.schedule, lr_noise)
        denoiser = make_denoiser(
            stage.model, stage.schedule, text, mask, guidance=cfg.guidance,
            thresholding=cfg.thresholding, prediction=stage.prediction, lowres=lowres, aug_t=aug_t,
            autocast=lambda: precision_context(dev, precision))
        ts = time_grid(cfg.steps)
        bar = tqdm(total=cfg.steps, desc=f"{stage.key} {conf.image_size}px", disable=not progress,
                   leave=False)
        kwargs = {"eta": cfg.eta} if cfg.sampler == "ddim" else {}
        x0 = SAMPLERS[cfg.sampler](denoiser, z, ts, stage.schedule, generators=gens,
                                   callback=lambda *_: bar.update(1), **kwargs)
        bar.close()
        return x0.clamp(-1, 1)

    def _prepare_lowres(self, stage: Stage, lowres: torch.Tensor | None) -> torch.Tensor:
        """The previous stage's output at this stage's low-res size."""
        if lowres is None:
            raise ValueError(f"stage {stage.key} is a super-resolution stage and needs a "
                             "low-resolution input: run it after a base stage")
        lowres = lowres.to(self.device).clamp(-1, 1)
        size = stage.config.lowres_size
        if lowres.shape[-1] != size:
            lowres = torch.nn.functional.interpolate(lowres, size=(size, size), mode="bilinear",
                                                     antialias=True, align_corners=False)
        return lowres

    def describe(self) -> dict:
        """JSON-ready provenance of the cascade (stage configs and text encoder)."""
        te = self.text_encoder
        return {
            "text_encoder": getattr(te, "encoder_id", type(te).__name__),
            "stages": [{"key": s.key, "config": asdict(s.config), "schedule": s.schedule.to_dict(),
                        "prediction": s.prediction} for s in self.stages],
        }
