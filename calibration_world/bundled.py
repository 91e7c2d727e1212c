"""Paths of the models shipped inside the package (calibration_world/weights/)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def weights_dir() -> Path:
    """The package's weights folder."""
    return Path(str(resources.files("calibration_world") / "weights"))


def bundled_cascade_path() -> Path:
    """The bundled tiny cascade (cascade.json + base.safetensors + sr64.safetensors), trained
    by `python -m calibration_world.train_cascade`; load it with Cascade.from_pretrained."""
    return weights_dir() / "cascade"


def bundled_features_path() -> Path:
    """The FID-style feature network, trained by `python -m calibration_world.train_metrics
    features`; load it with calibration_world.models.load_feature_net."""
    return weights_dir() / "features.safetensors"


def bundled_clip_path() -> Path:
    """The CLIP-style image tower and text head, trained by `python -m
    calibration_world.train_metrics clip`; load it with calibration_world.models.load_clip_tower."""
    return weights_dir() / "clip_tower.safetensors"
