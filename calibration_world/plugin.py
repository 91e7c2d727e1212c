"""The calibration world as a plugin of the suite (bench.plugins): bench/ imports nothing from here.

`register()` (named by the `imagen_bench.plugins` entry point in pyproject.toml) adds:

- feature networks `calibration-world` (the bundled scene-attribute FeatureNet, FID's stand-in)
  and `calibration-world-clip` (the bundled ClipTower's normalised image embeddings, the
  stand-in for CLIP in CMMD); their source is a weights file, default the bundled one;
- the CLIP scorer `calibration-world` (`--clip-model calibration-world`);
- the data defaults: with no data the commands make and use the default world, with the flags of
  calibration_world/defaults.py, and `python -m bench.report` alone reads the demo's runs.
"""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import torch

from . import defaults as cw

NAME = cw.CALIBRATION_WORLD          # "calibration-world"
CLIP_FEATURES = f"{NAME}-clip"


def _bundled(path: Path, kind: str) -> Path:
    """A bundled weights file, or an error saying how to make it."""
    from bench.weights import WeightsNotFoundError

    if not path.is_file():
        raise WeightsNotFoundError(
            f"calibration-world {kind} weights not found: {path}. Reinstall the package or train "
            f"them with `python -m calibration_world.train_metrics {kind} --out {path}`.")
    return path


def _given(source, kind: str) -> Path | None:
    from bench.weights import WeightsNotFoundError

    if source is None:
        return None
    if not Path(source).is_file():
        raise WeightsNotFoundError(f"calibration-world {kind} weights not found: {source} is not a file.")
    return Path(source)


def features_path(source=None) -> Path:
    from .bundled import bundled_features_path

    return _given(source, "features") or _bundled(bundled_features_path(), "features")


def clip_path(source=None) -> Path:
    from .bundled import bundled_clip_path

    return _given(source, "clip") or _bundled(bundled_clip_path(), "clip")


def _load_features(source, *, device, **options):
    from .models import WorldFeatureExtractor

    if options:
        raise ValueError(f"the {NAME} feature network has a fixed resolution and feature size: "
                         f"drop {', '.join('--fid-' + k.replace('_', '-') for k in sorted(options))}")
    net = WorldFeatureExtractor(features_path(source), device=device)
    net.name = NAME
    return net


class WorldClipImages:
    """The bundled ClipTower's image tower as a feature network: L2-normalised embeddings."""

    def __init__(self, path: Path, *, device):
        from bench.metrics.fid import RESIZE
        from bench.weights import file_sha256

        from .models import load_clip_tower

        self.model, self.record = load_clip_tower(path)
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval()
        self.name = CLIP_FEATURES
        self.resolution = self.model.cfg.trunk.resolution
        self.dims = self.model.cfg.embed
        self.protocol = {
            "library": "calibration_world",
            "torch": md.version("torch"),
            "model": f"{NAME} ClipTower image tower (not CLIP)",
            "weights_file": path.name,
            "weights_sha256": file_sha256(path),
            "resolution": self.resolution,
            "resize": RESIZE,
            "normalized": True,
            "dims": self.dims,
        }

    def prepare(self, images) -> torch.Tensor:
        from bench.metrics.fid import eval_batch

        return eval_batch(images, self.resolution).cpu()

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        return self.model.encode_image(self.prepare(images).to(self.device)).float()


def _load_clip_features(source, *, device, **options):
    if options:
        raise ValueError(f"the {CLIP_FEATURES} feature network takes no options")
    return WorldClipImages(clip_path(source), device=device)


def _clip_scorer(pretrained, *, device, cache_dir=None):
    from .models import WorldClipScorer

    # a tower file given with --clip-pretrained, else the bundled one (open_clip's default tag
    # "openai" or None mean the bundled tower)
    path = pretrained if pretrained and Path(pretrained).is_file() else str(clip_path())
    return WorldClipScorer(NAME, path, device=device, cache_dir=cache_dir)


def _clip_check(pretrained):
    return pretrained if pretrained and Path(pretrained).is_file() else clip_path()


def _flags(command: str) -> dict:
    return {"coco_fid": cw.COCO_FID, "drawbench": cw.DRAWBENCH}.get(command, {})


def register() -> None:
    from bench.metrics.clip_score import register_clip_scorer
    from bench.metrics.networks import register_network
    from bench.plugins import DataDefaults, register_data_defaults

    register_network(NAME, _load_features, check=features_path, replace=True,
                     help="the calibration world's bundled scene-attribute network (FID stand-in)",
                     default_source="the bundled features.safetensors")
    register_network(CLIP_FEATURES, _load_clip_features, check=clip_path, replace=True,
                     help="the calibration world's bundled CLIP-style image tower (CMMD stand-in)",
                     default_source="the bundled clip.safetensors")
    register_clip_scorer(NAME, _clip_scorer, check=_clip_check, replace=True)
    register_data_defaults(DataDefaults(
        name=NAME, default_model=lambda: str(cw.bundled_cascade()),
        ensure_data=lambda progress=True: cw.ensure_world(progress=progress),
        is_data=cw.is_world, flags=_flags, record=cw.world_record, demo_layout=cw.demo_layout))
