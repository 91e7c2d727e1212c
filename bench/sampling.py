"""Sampling configs: the grid a benchmark sweeps (guidance × thresholding × aug level).

A `SamplingConfig` is a small frozen record; its `config_key` is a readable, stable string
used as folder name and table key (DESIGN.md "Run directory"):

    w5-dyn0.995-aug0-ddim64        guidance 5 on every stage, dynamic thresholding P=0.995
    w1.35_8-static-aug0.1-ddpm256  per-stage guidance (base 1.35, SR 8), static thresholding

Keys never change for a given config, so a rerun finds the images of an earlier one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from imagen_ref.thresholding import parse_mode

# The Imagen paper's COCO sweep over guidance weights (App. D.2, Fig. A.8) and its three
# thresholding modes (§2.3, dynamic with P = 99.5%).
PAPER_GUIDANCE = "1,1.25,1.5,1.75,2,3,4,5,6,7,8,9,10"
PAPER_THRESHOLDING = "none,static,dynamic:0.995"
# Sampler names a config may carry (the key's last part: ...-euler-a30). An imagen_ref cascade
# and IF sample with ddim or ddpm; a diffusers pipeline takes any (bench/
# diffusers_pipeline_adapter.py maps each to a scheduler built from the pipeline's own config;
# `native` keeps the pipeline's saved scheduler). Names are only added, never changed.
SAMPLERS = ("ddim", "ddpm", "dpmpp", "dpm", "unipc", "deis", "euler", "euler-a", "heun", "lms",
            "pndm", "flow-euler", "native")


def _num(x: float) -> str:
    """Shortest stable text of a number: 5.0 -> '5', 1.35 -> '1.35'."""
    return f"{x:g}"


def normalize_mode(mode: str) -> str:
    """The canonical text of a thresholding mode ('Dynamic:0.9950' -> 'dynamic:0.995')."""
    return str(parse_mode(mode))


def mode_key(mode: str) -> str:
    """Short, path-safe form of a mode for config keys: dynamic:0.995:2 -> 'dyn0.995cap2'."""
    m = parse_mode(mode)
    if m.kind != "dynamic":
        return m.kind
    text = f"dyn{_num(m.percentile)}"
    return text if math.isinf(m.cap) else f"{text}cap{_num(m.cap)}"


@dataclass(frozen=True)
class SamplingConfig:
    """One point of a sampling grid; applies to every stage of a cascade."""

    guidance: tuple[float, ...] = (1.0,)  # per-stage CFG weights, base first; the last repeats
    thresholding: str = "none"            # none | static | dynamic:P | dynamic:P:CAP
    aug_level: float = 0.0                # noise-augmentation level of the SR stages' input
    sampler: str = "ddim"                 # ddim | ddpm | a diffusers scheduler name (SAMPLERS)
    steps: int = 64                       # denoising steps of every stage

    def __post_init__(self) -> None:
        weights = self.guidance if isinstance(self.guidance, (tuple, list)) else (self.guidance,)
        guidance = tuple(float(w) for w in weights)
        if not guidance or not all(math.isfinite(w) for w in guidance):
            raise ValueError(f"bad guidance {self.guidance!r}: expected finite weights")
        object.__setattr__(self, "guidance", guidance)
        object.__setattr__(self, "thresholding", normalize_mode(self.thresholding))
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of {SAMPLERS}")
        if int(self.steps) != self.steps or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))
        if not 0.0 <= float(self.aug_level) <= 1.0:
            raise ValueError(f"aug level must be in [0, 1], got {self.aug_level!r}")
        object.__setattr__(self, "aug_level", float(self.aug_level))

    @property
    def guidance_label(self) -> str:
        """'5' or, per stage, '1.35/8' (the --guidance syntax)."""
        return "/".join(_num(w) for w in self.guidance)

    @property
    def config_key(self) -> str:
        """Readable stable key, e.g. 'w5-dyn0.995-aug0-ddim64'."""
        w = "_".join(_num(w) for w in self.guidance)
        aug = _num(self.aug_level)
        return f"w{w}-{mode_key(self.thresholding)}-aug{aug}-{self.sampler}{self.steps}"

    def stage_settings(self, n_stages: int) -> list:
        """One imagen_ref StageSampling per stage (the last guidance weight repeats)."""
        from imagen_ref.pipeline import StageSampling

        return [StageSampling(guidance=self.guidance[min(i, len(self.guidance) - 1)],
                              thresholding=self.thresholding, sampler=self.sampler,
                              steps=self.steps, aug_level=self.aug_level)
                for i in range(n_stages)]

    def to_dict(self) -> dict:
        """JSON-ready record with the key (run.json, summary rows)."""
        return {"config_key": self.config_key, "guidance": self.guidance_label,
                "thresholding": self.thresholding, "aug_level": self.aug_level,
                "sampler": self.sampler, "steps": self.steps}

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingConfig":
        return cls(guidance=parse_weights(str(d["guidance"])), thresholding=d["thresholding"],
                   aug_level=d["aug_level"], sampler=d["sampler"], steps=d["steps"])


def parse_weights(text: str) -> tuple[float, ...]:
    """'5' -> (5.0,); '1.35/8' -> (1.35, 8.0) (per-stage weights, base first)."""
    return tuple(float(w) for w in text.split("/"))


def _split(text: str) -> list[str]:
    return [v.strip() for v in str(text).split(",") if v.strip()]


def parse_guidance(text: str) -> list[tuple[float, ...]]:
    """'1,1.25,1.35/8' -> [(1.0,), (1.25,), (1.35, 8.0)]; ValueError names the bad element."""
    out = []
    for item in _split(text):
        try:
            weights = parse_weights(item)
        except ValueError:
            raise ValueError(f"--guidance {text!r}: {item!r} is not a weight; expected a comma "
                             "list of numbers, with a/b for per-stage weights (e.g. 1,3,1.35/8)"
                             ) from None
        if not all(math.isfinite(w) for w in weights):
            raise ValueError(f"--guidance {text!r}: {item!r} is not finite")
        out.append(weights)
    if not out:
        raise ValueError(f"--guidance {text!r}: no weights given")
    return out


def parse_thresholding(text: str) -> list[str]:
    """'none,static,dynamic:0.995' -> canonical mode strings; ValueError on a bad mode."""
    modes = [normalize_mode(m) for m in _split(text)]
    if not modes:
        raise ValueError(f"--thresholding {text!r}: no modes given")
    return modes


def parse_floats(text: str, flag: str) -> list[float]:
    """'0,0.1' -> [0.0, 0.1]; ValueError naming the flag."""
    try:
        values = [float(v) for v in _split(text)]
    except ValueError:
        raise ValueError(f"--{flag} {text!r}: expected a comma list of numbers") from None
    if not values:
        raise ValueError(f"--{flag} {text!r}: no values given")
    return values


def build_grid(guidance: str, thresholding: str, aug_level: str = "0", sampler: str = "ddim",
               steps: int = 64) -> list[SamplingConfig]:
    """Every (thresholding, aug level, guidance) combination, in that nesting order.

    Args:
        guidance, thresholding, aug_level: the comma lists of the command-line flags.
        sampler, steps: shared by every config.
    Returns: the configs, duplicates removed, in a stable order (curves of a Pareto plot are
        contiguous: one thresholding mode, then its guidance weights in the order given).
    Raises: ValueError with a message naming the flag.
    """
    weights = parse_guidance(guidance)
    modes = parse_thresholding(thresholding)
    levels = parse_floats(aug_level, "aug-level")
    grid: dict[str, SamplingConfig] = {}
    for mode in modes:
        for level in levels:
            for w in weights:
                cfg = SamplingConfig(w, mode, level, sampler, steps)
                grid.setdefault(cfg.config_key, cfg)
    return list(grid.values())
