"""`--model python:MODULE:CALLABLE`: any Python callable as a model (an API client, another
codebase's sampler). The run machinery gives it resumability, sharding and the metrics.

    def generate(prompts: list[str], seeds: list[int], config: dict) -> list[image]

`config` holds the sampling config (config_key, guidance as a list of per-stage weights,
guidance_label, thresholding, aug_level, sampler, steps) and the model options (resolution as
[height, width] or None, negative_prompt, precision, device). An image is a PIL image or a uint8
array (H, W, 3); one per prompt, in order. The callable is responsible for making image i
depend on seeds[i] alone. If it has a `describe()` method (or attribute `describe` callable),
its result (a JSON-ready dict: model name, version, endpoint...) goes into run.json.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path
from typing import Sequence

import numpy as np

from .adapters import AdapterError, AdapterOptions
from .sampling import SamplingConfig


class PythonCallableAdapter:
    """A callable found by import path, called once per batch."""

    kind = "python"

    def __init__(self, target: str, options: AdapterOptions = AdapterOptions()):
        module_name, sep, attr = target.rpartition(":")
        if not sep or not module_name or not attr:
            raise AdapterError(f"--model python:{target}: expected python:MODULE:CALLABLE, e.g. "
                               "python:my_models.sdxl:generate")
        self.module_name, self.attr, self.options = module_name, attr, options
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise AdapterError(f"--model python:{target}: cannot import {module_name} ({e}); put "
                               "it on PYTHONPATH or run from its folder") from None
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise AdapterError(f"--model python:{target}: {module_name} has no {attr}")
        if not callable(obj):
            raise AdapterError(f"--model python:{target}: {attr} is not callable "
                               f"({type(obj).__name__})")
        self.fn = obj
        source = getattr(module, "__file__", None)
        self.source = source
        self.source_sha256 = (hashlib.sha256(Path(source).read_bytes()).hexdigest()
                              if source and Path(source).is_file() else None)

    @property
    def model_id(self) -> str:
        digest = f"@{self.source_sha256[:12]}" if self.source_sha256 else ""
        return f"python:{self.module_name}:{self.attr}{digest}"

    def spec_fields(self) -> dict:
        o = self.options
        return {"resolution": list(o.resolution) if o.resolution else None,
                "negative_prompt": o.negative_prompt, "precision": o.precision}

    def describe(self) -> dict:
        own = getattr(self.fn, "describe", None)
        return {"kind": self.kind, "model_id": self.model_id, "module": self.module_name,
                "callable": self.attr, "file": self.source, "file_sha256": self.source_sha256,
                **self.spec_fields(), "callable_describe": own() if callable(own) else None}

    def call_config(self, config: SamplingConfig) -> dict:
        """The `config` argument of the callable."""
        o = self.options
        return {**config.to_dict(), "guidance": list(config.guidance),
                "guidance_label": config.guidance_label, **self.spec_fields(),
                "device": None if o.device is None else str(o.device)}

    def check(self, items: Sequence, config: SamplingConfig) -> None:
        params = inspect.signature(self.fn).parameters if _has_signature(self.fn) else None
        if params is not None and len(params) < 3 and not any(
                p.kind == p.VAR_POSITIONAL for p in params.values()):
            raise AdapterError(f"--model python:{self.module_name}:{self.attr} takes "
                               f"{len(params)} arguments; it must take (prompts, seeds, config)")

    def generate(self, items: Sequence, config: SamplingConfig) -> list[np.ndarray]:
        images = self.fn([it.text for it in items], [int(it.seed) for it in items],
                         self.call_config(config))
        images = list(images)
        if len(images) != len(items):
            raise AdapterError(f"python:{self.module_name}:{self.attr} returned {len(images)} "
                               f"images for {len(items)} prompts")
        return [to_rgb_uint8(im, f"python:{self.module_name}:{self.attr}") for im in images]


def _has_signature(fn) -> bool:
    try:
        inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return True


def to_rgb_uint8(image, who: str) -> np.ndarray:
    """A PIL image or uint8 (H, W, 3) / (H, W) array as uint8 (H, W, 3)."""
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise AdapterError(f"{who} returned a {array.dtype} array; return PIL images or uint8 "
                           "arrays (H, W, 3)")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise AdapterError(f"{who} returned an array of shape {array.shape}; expected (H, W, 3)")
    return array
