"""Model adapters: what a benchmark calls to turn (prompt, seed, sampling config) into images.

    --model CKPT_DIR             an imagen_ref cascade checkpoint (cascade.json + .safetensors)
    --model images:DIR           images rendered elsewhere: DIR/<prompt_id>/<k>.png, or
                                 DIR/<config_key>/<prompt_id>/<k>.png for a grid of configs
                                 (a run's own images/ folder has this layout)
    --model diffusers:PATH_OR_ID any diffusers text-to-image pipeline: a save_pretrained folder or
                                 a repo id in the Hugging Face cache (ID@REVISION pins one);
                                 DeepFloyd IF keeps its cascade mapping (bench/diffusers_adapter.py,
                                 bench/diffusers_pipeline_adapter.py; needs the `diffusers` extra)
    --model python:MODULE:CALLABLE  callable(prompts, seeds, config) -> images, for anything else
                                 (bench/python_adapter.py)

Each kind is one entry of the adapter registry (`register_adapter`): a --model prefix, a loader
and the model options (--resolution, --negative-prompt, ...) it honours; an option given to a kind
that does not take it is refused, never ignored. Every adapter returns uint8 (H, W, 3) arrays;
the runner writes them. `check` runs before any generation, so a missing file or unusable
checkpoint stops a command before it does work.
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from .sampling import SamplingConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
IMAGEN_SAMPLERS = ("ddim", "ddpm")  # what imagen_ref's cascade (and IF's mapping) can sample with


class AdapterError(ValueError):
    """A model that cannot be used as given; the message names the file and what to do."""


class ModelAdapter(Protocol):
    """What the runner needs from a model."""

    kind: str

    @property
    def model_id(self) -> str: ...  # stable id recorded in run.json (checkpoint hashes, ...)

    def describe(self) -> dict: ...  # JSON-ready provenance

    def spec_fields(self) -> dict: ...  # what, besides model_id, fixes the images (run spec)

    def check(self, items: Sequence, config: SamplingConfig) -> None: ...

    def generate(self, items: Sequence, config: SamplingConfig) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class AdapterOptions:
    """The model options of the benchmark commands (bench/cli.py); each kind takes some."""

    device: object = None                     # torch.device or name; None: CUDA when available
    precision: str = "fp32"                   # fp32 | bf16 | fp16 (weights or autocast dtype)
    num_stages: int | None = None             # cascades: only the first N stages
    embedding_cache: str | None = None        # imagen_ref: text-embedding cache directory
    resolution: tuple[int, int] | None = None  # (height, width); None: the model's own
    negative_prompt: str | None = None        # None: the model's own unconditional input
    cpu_offload: bool = False                 # diffusers: model CPU offload (large models)

    def given(self) -> list[str]:
        """The options set away from their defaults (device and precision always apply)."""
        return [f.name for f in fields(self) if f.name not in ("device", "precision")
                and getattr(self, f.name) != f.default]


FLAGS = {"num_stages": "--num-stages", "embedding_cache": "--embedding-cache",
         "resolution": "--resolution", "negative_prompt": "--negative-prompt",
         "cpu_offload": "--cpu-offload"}


@dataclass(frozen=True)
class AdapterKind:
    """One entry of the adapter registry."""

    name: str                                            # kind recorded in run.json
    load: Callable[[str, AdapterOptions], ModelAdapter]  # (text after the prefix, options)
    options: tuple[str, ...] = ()                        # AdapterOptions fields it honours
    usage: str = ""                                      # the --model syntax, for messages


ADAPTERS: dict[str, AdapterKind] = {}  # --model prefix (before the first ':') -> kind
DEFAULT_KIND = "imagen_ref"            # a --model value with no registered prefix


def register_adapter(prefix: str, kind: AdapterKind) -> None:
    """Make `--model PREFIX:...` load with `kind` (a plugin may add its own)."""
    ADAPTERS[prefix] = kind


def lazy_loader(module: str, name: str):
    """A loader that imports `module` (of this package) on first use, so an adapter's optional
    dependencies stay optional; the loader checks them itself."""
    def load(target: str, options: AdapterOptions):
        return getattr(importlib.import_module(module, __package__), name)(target, options)
    return load


class ImagenRefAdapter:
    """An imagen_ref cascade checkpoint, sampled with imagen_ref.pipeline.Cascade."""

    kind = "imagen_ref"

    def __init__(self, path: str | Path, *, device=None, num_stages: int | None = None,
                 precision: str = "fp32", embedding_cache: str | None = None):
        from imagen_ref.checkpoint import CheckpointError, read_manifest

        self.path = Path(path)
        if precision not in ("fp32", "bf16"):
            raise AdapterError(f"--precision {precision}: an imagen_ref cascade samples in fp32 or "
                               "bf16 (autocast)")
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

    def spec_fields(self) -> dict:
        return {"num_stages": self.num_stages, "precision": self.precision}

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
        if config.sampler not in IMAGEN_SAMPLERS:
            raise AdapterError(f"--sampler {config.sampler}: an imagen_ref cascade samples with "
                               f"{' or '.join(IMAGEN_SAMPLERS)} (the other names are diffusers "
                               "schedulers, for --model diffusers:...)")
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

    def spec_fields(self) -> dict:
        return {}

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


def _imagen_ref(target: str, options: AdapterOptions) -> ImagenRefAdapter:
    return ImagenRefAdapter(target, device=options.device, num_stages=options.num_stages,
                            precision=options.precision, embedding_cache=options.embedding_cache)


def _images(target: str, options: AdapterOptions) -> ImagesDirAdapter:
    return ImagesDirAdapter(target)


register_adapter(DEFAULT_KIND, AdapterKind(DEFAULT_KIND, _imagen_ref,
                                           ("num_stages", "embedding_cache"), "CKPT_DIR"))
register_adapter("images", AdapterKind("images", _images, (), "images:DIR"))
register_adapter("diffusers", AdapterKind(
    "diffusers", lazy_loader(".diffusers_adapter", "load_diffusers"),
    ("num_stages", "resolution", "negative_prompt", "cpu_offload"), "diffusers:PATH_OR_ID"))
register_adapter("python", AdapterKind(
    "python", lazy_loader(".python_adapter", "PythonCallableAdapter"),
    ("resolution", "negative_prompt"), "python:MODULE:CALLABLE"))


def load_adapter(spec: str, options: AdapterOptions | None = None, **kwargs) -> ModelAdapter:
    """The adapter for a --model value; AdapterError if it names nothing usable.

    Args:
        spec: the --model value; `PREFIX:REST` for a registered prefix, else an imagen_ref
            checkpoint directory.
        options: the model options (or pass AdapterOptions' fields as keywords).
    """
    options = options or AdapterOptions(**kwargs)
    prefix, sep, rest = spec.partition(":")
    kind = ADAPTERS.get(prefix) if sep else None
    if kind is None or prefix == DEFAULT_KIND:
        kind, rest = ADAPTERS[DEFAULT_KIND], spec
    unused = [o for o in options.given() if o not in kind.options]
    if unused:
        takers = [k.usage for k in ADAPTERS.values() if unused[0] in k.options]
        raise AdapterError(f"{FLAGS[unused[0]]} does not apply to --model {kind.usage}; it is "
                           f"for {', '.join(takers) or 'no model kind'}")
    return kind.load(rest, options)
