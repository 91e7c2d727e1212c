"""Where the bundled calibration-world models live (package data under calibration_world/weights/).

Each function returns the path whether or not the file exists; loaders say how to train a
missing one.
"""
from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def bundled_features_path() -> Path:
    """The FID-style feature network (`python -m calibration_world.train_metrics features`)."""
    return WEIGHTS_DIR / "features.safetensors"


def bundled_clip_path() -> Path:
    """The CLIP-style image tower and text head (`python -m calibration_world.train_metrics clip`)."""
    return WEIGHTS_DIR / "clip_tower.safetensors"
