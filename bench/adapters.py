"""Model adapters: what a benchmark calls to turn (prompt, seed, sampling config) into images.

    --model CKPT_DIR      an imagen_ref cascade checkpoint (cascade.json + .safetensors)
    --model images:DIR    images rendered elsewhere: DIR/<prompt_id>/<k>.png, or
                          DIR/<config_key>/<prompt_id>/<k>.png for a grid of configs
                          (a run's own images/ folder has this layout)
    --model diffusers:DIR DeepFloyd IF pipelines saved by diffusers: DIR/stage_I[, DIR/stage_II]
                          (bench/diffusers_adapter.py; needs the `diffusers` extra)

Every adapter returns uint8 (H, W, 3) arrays; the runner writes them. `check` runs before any
generation, so a missing file or unusable checkpoint stops a command before it does work.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .sampling import SamplingConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class AdapterError(ValueError):
    """A model that cannot be used as given; the message names the file and what to do."""


class ModelAdapter(Protocol):
    """What the runner needs from a model."""

    kind: str

    @property
    def model_id(self) -> str: ...  # stable id recorded in run.json (checkpoint hashes, ...)

    def describe(self) -> dict: ...  # JSON-ready provenance

    def check(self, items: Sequence, config: SamplingConfig) -> None: ...

    def generate(self, items: Sequence, config: SamplingConfig) -> list[np.ndarray]: ...


class ImagenRefAdapter:
    """An imagen_ref cascade checkpoint, sampled with imagen_ref.pipeline.Cascade."""

    kind = "imagen_ref"

    def __init__(self, path: str | Path, *, device=None, num_stages: int | None = None,
                 precision: str = "fp32", embedding_cache: str | None = None):
        from imagen_ref.checkpoint import CheckpointError, read_manifest

        self.path = Path(path)
        try:
            self.manifest = read_manifest(self.path)
        except CheckpointError as e:
            raise AdapterError(str(e)) from None
        stages = self.manifest["stages"][: num_stages or None]
        if not stages:
            raise AdapterError(f"{self.path / 'cascade.json'} lists no stages; train a base stage "
                               "into it (python -m imagen_ref.train --stage base --out DIR)")
        self.stage_records = stages
        self.device, self.precision = device, precision
        self.num_stages, self.embedding_cache = len(stages), embedding_cache
        self._cascade = None

    @property
    def model_id(self) -> str:
        digest = hashlib.sha256("|".join(s["sha256"] for s in self.stage_records).encode())
        return f"imagen_ref:{self.path.resolve().name}@{digest.hexdigest()[:12]}"

    @property
    def resolution(self) -> int:
        return int(self.stage_records[-1]["config"]["image_size"])

    def describe(self) -> dict:
        return {"kind": self.kind, "model_id": self.model_id, "path": str(self.path),
                "text_encoder": self.manifest["text_encoder"], "precision": self.precision,
                "stages": [{"key": s["key"], "file": s["file"], "sha256": s["sha256"],
                            "image_size": s["config"].get("image_size"),
                            "prediction": s["prediction"], "training": s.get("training", {})}
                           for s in self.stage_records]}

    def load(self):
        """Load the cascade now (weights are hash-checked); AdapterError on any problem."""
        if self._cascade is None:
            from imagen_ref.checkpoint import CheckpointError
            from imagen_ref.pipeline import Cascade
            from imagen_ref.text_encoder import TextEncoderNotFoundError

            try:
                self._cascade = Cascade.from_pretrained(
                    self.path, device=self.device, num_stages=self.num_stages,
                    embedding_cache=self.embedding_cache)
            except (CheckpointError, TextEncoderNotFoundError) as e:
                raise AdapterError(str(e)) from None
        return self._cascade

    def check(self, items: Sequence, config: SamplingConfig) -> None:
        config.stage_settings(self.num_stages)  # builds (validates) the per-stage settings
        self.load()

    def generate(self, items: Sequence, config: SamplingConfig) -> list[np.ndarray]:
        from imagen_ref.pipeline import to_uint8

        cascade = self.load()
        outputs = cascade.sample([it.text for it in items], [it.seed for it in items],
                                 config.stage_settings(self.num_stages), precision=self.precision)
        return list(to_uint8(outputs[-1]).numpy())  # (H, W, 3) each


def find_image(folder: Path, k: int) -> Path | None:
    """folder/<k>.png (or .jpg, .jpeg, .webp), else None."""
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{k}{suffix}"
        if path.is_file():
            return path
    return None


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class ImagesDirAdapter:
    """Images rendered elsewhere, read from a folder (no sampling happens)."""

    kind = "images"

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise AdapterError(f"images folder {self.dir} does not exist; pass images:DIR with "
                               "DIR/<prompt_id>/<k>.png (or DIR/<config_key>/<prompt_id>/<k>.png)")

    @property
    def model_id(self) -> str:
        return f"images:{self.dir.resolve().name}"

    def describe(self) -> dict:
        return {"kind": self.kind, "model_id": self.model_id, "path": str(self.dir)}

    def folder(self, config: SamplingConfig) -> Path:
        """DIR/<config_key> when it exists, else DIR itself."""
        per_config = self.dir / config.config_key
        return per_config if per_config.is_dir() else self.dir

    def check_grid(self, configs: Sequence[SamplingConfig]) -> None:
        """One flat folder cannot stand for several configs: that would score one image set
        under several names."""
        flat = [c.config_key for c in configs if self.folder(c) == self.dir]
        if len(configs) > 1 and flat:
            raise AdapterError(
                f"images folder {self.dir} has no subfolder {flat[0]}/ but the grid has "
                f"{len(configs)} configs; give one subfolder per config key "
                "(DIR/<config_key>/<prompt_id>/<k>.png) or pass a single --guidance and "
                "--thresholding")

    def check(self, items: Sequence, config: SamplingConfig) -> None:
        folder = self.folder(config)
        missing = [folder / it.prompt_id / f"{it.k}.png" for it in items
                   if find_image(folder / it.prompt_id, it.k) is None]
        if missing:
            raise AdapterError(f"{len(missing)} of {len(items)} images are missing for config "
                               f"{config.config_key}, e.g. {missing[0]}; render them or pass "
                               "--num-samples/--captions matching the images you have")

    def generate(self, items: Sequence, config: SamplingConfig) -> list[np.ndarray]:
        folder = self.folder(config)
        return [load_rgb(find_image(folder / it.prompt_id, it.k)) for it in items]


def load_adapter(spec: str, *, device=None, num_stages: int | None = None,
                 precision: str = "fp32", embedding_cache: str | None = None) -> ModelAdapter:
    """The adapter for a --model value; AdapterError if it names nothing usable."""
    if spec.startswith("images:"):
        return ImagesDirAdapter(spec[len("images:"):])
    if spec.startswith("diffusers:"):
        try:
            from .diffusers_adapter import DiffusersIFAdapter
        except ImportError as e:
            raise AdapterError(f"--model {spec} needs the diffusers package ({e}); install it "
                               "with pip install 'imagen-bench[diffusers]'") from None
        return DiffusersIFAdapter(spec[len("diffusers:"):], device=device, precision=precision)
    return ImagenRefAdapter(spec, device=device, num_stages=num_stages, precision=precision,
                            embedding_cache=embedding_cache)
