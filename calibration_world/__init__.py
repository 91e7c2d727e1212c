"""The calibration world: synthetic captioned scenes with known truth, and a rule-based oracle.

    scenes    seeded scene descriptions (`sample_scenes`) rendered by PIL at any size (`render`)
    captions  caption templates per skill (`caption`, `captions`) and their parser
    oracle    objects read back from an image (`Oracle().detect`) and per-skill scoring
    dataset   the COCO-format dataset, ground truth and DrawBench-format prompts on disk
    relation_probe  how many steps a base U-Net config needs to learn object order from the
              text, on a noise-free layout task (`python -m calibration_world.relation_probe`)

`python -m calibration_world make --out DIR` writes the dataset.
"""
from .captions import CaptionParseError, Group, Requirement, caption, captions, parse_caption
from .oracle import CHECKS, Detection, Oracle, OracleInputError
from .scenes import (COLORS, PALETTE, SHAPES, SKILLS, Obj, Scene, render, sample_scene,
                     sample_scenes)

__all__ = ["CHECKS", "COLORS", "PALETTE", "SHAPES", "SKILLS", "CaptionParseError", "Detection",
           "Group", "Obj", "Oracle", "OracleInputError", "Requirement", "Scene", "caption",
           "captions", "parse_caption", "render", "sample_scene", "sample_scenes"]
