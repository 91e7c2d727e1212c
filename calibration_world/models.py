"""The calibration world's two metric networks, and the objects that put them in the metric paths.

    FeatureNet   a small CNN trained to predict scene attributes (counts per colour and shape,
                 coarse positions per colour, background, texture) and low-level image statistics
                 (colour histograms, spreads, gradient energy) from 64² world images, half of
                 them randomly blurred, noised or colour-cast; its penultimate 128-d layer
                 (before its activation) stands in for Inception's pool features in FID.
    ClipTower    a small image CNN and a small trainable text head over the FROZEN MiniLM-L6
                 token embeddings, trained contrastively (InfoNCE, CLIP-style) with hard negative
                 captions; the cosine of the two embeddings stands in for CLIP's.

Both networks take uint8 (B, 3, R, R) images, as torch-fidelity's Inception does, and are stored
as safetensors with a JSON sidecar (config, protocol, training record): loading unpickles
nothing. `WorldFeatureExtractor` has `bench.metrics.fid.FeatureExtractor`'s interface and
`WorldClipScorer` `bench.metrics.clip_score.ClipScorer`'s, so FIDMetric, reference statistics,
and the CLIP-score stage use them unchanged (`--fid-network calibration-world`,
`--clip-model calibration-world`). Images go through the FID path's own step-1 protocol
(`pil-bicubic-center-crop`) at the network's resolution.
"""
from __future__ import annotations

import importlib.metadata as md
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.metrics.fid import FeatureExtractor

from .scenes import BACKGROUNDS, COLORS, SHAPES, TEXTURES, Scene

NAME = "calibration-world"          # the spelling the metric code paths accept
RESIZE = "pil-bicubic-center-crop"  # protocol step 1, shared with the Inception path
GRID = 4                            # coarse position targets: object centres on a GRID x GRID grid
MAX_COUNT = 4


# ---------------------------------------------------------------------------------------------
# networks


@dataclass
class TrunkConfig:
    """A plain strided CNN that keeps a coarse spatial grid (positions matter in this world)."""

    resolution: int = 64                          # input side; the evaluation resolution
    widths: tuple[int, ...] = (24, 48, 64, 96)    # channels per stage; each stage halves the side
    groups: int = 8                               # GroupNorm groups (batch-independent features)

    @property
    def grid(self) -> int:
        return self.resolution >> len(self.widths)


class Trunk(nn.Module):
    """uint8 (B, 3, R, R) -> float (B, C, g, g): per stage a stride-2 conv and a 3x3 conv."""

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(cfg.widths):
            layers += [nn.Conv2d(c_in, c, 4 if i == 0 else 3, stride=2, padding=1),
                       nn.GroupNorm(cfg.groups, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(cfg.groups, c), nn.SiLU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.resolution = cfg.resolution

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"expected {self.resolution}² images, got {tuple(images.shape[-2:])}")
        x = images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images.float()
        return self.net(x)


# Attribute targets of FeatureNet, in this order: counts per (colour, shape), centre occupancy per
# colour on the GRID x GRID grid, background (class), texture (class).
N_COUNTS = len(COLORS) * len(SHAPES)
N_CELLS = len(COLORS) * GRID * GRID


@dataclass
class FeatureConfig:
    """FeatureNet: trunk, then one hidden layer whose activations are the FID features."""

    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    dims: int = 128                               # feature dimension (the penultimate layer)
    image_stats: int = 0                          # extra head: low-level image statistics (0: none)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        t = dict(d.get("trunk", {}))
        if "widths" in t:
            t["widths"] = tuple(t["widths"])
        return cls(TrunkConfig(**t), int(d.get("dims", 128)), int(d.get("image_stats", 0)))


class FeatureNet(nn.Module):
    """Scene-attribute predictor; `forward` returns the (B, dims) features, `heads` the predictions."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg.trunk)
        c, g = cfg.trunk.widths[-1], cfg.trunk.grid
        self.hidden = nn.Linear(c * g * g, cfg.dims)
        self.head = nn.Linear(cfg.dims, N_COUNTS + N_CELLS + len(BACKGROUNDS) + len(TEXTURES)
                              + cfg.image_stats)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # the FID features are the hidden layer before its SiLU: after it, large colour shifts
        # saturate the features and the distance stops growing (measured, see train_metrics)
        h = self.trunk(images).flatten(1)            # (B, C*g*g)
        return self.hidden(h)                        # (B, dims)

    def heads(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(F.silu(features))
        counts, cells, bg, tex, stats = out.split(
            [N_COUNTS, N_CELLS, len(BACKGROUNDS), len(TEXTURES), self.cfg.image_stats], dim=1)
        heads = {"counts": counts, "cells": cells, "background": bg, "texture": tex}
        if self.cfg.image_stats:
            heads["image_stats"] = stats
        return heads


def scene_targets(scene: Scene) -> dict[str, np.ndarray | int]:
    """FeatureNet's training targets of one scene."""
    counts = np.zeros((len(COLORS), len(SHAPES)), np.float32)
    cells = np.zeros((len(COLORS), GRID, GRID), np.float32)
    for o in scene.objects:
        ci = COLORS.index(o.color)
        counts[ci, SHAPES.index(o.shape)] += 1
        cells[ci, min(int(o.y * GRID), GRID - 1), min(int(o.x * GRID), GRID - 1)] = 1.0
    return {"counts": counts.ravel(), "cells": cells.ravel(),
            "background": BACKGROUNDS.index(tuple(scene.background)),
            "texture": TEXTURES.index(scene.texture)}


@dataclass
class ClipConfig:
    """ClipTower: image trunk and text head meeting in an `embed`-d space."""

    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    embed: int = 128            # joint embedding size
    text_dim: int = 384         # frozen text encoder's token size (MiniLM-L6)
    text_width: int = 128       # text head width
    text_heads: int = 4         # attention heads of the text head's layer and pool
    max_tokens: int = 24        # token cap (also the learned position table's length)
    text_encoder: str = "minilm-l6"

    @classmethod
    def from_dict(cls, d: dict) -> "ClipConfig":
        d = dict(d)
        t = dict(d.pop("trunk", {}))
        if "widths" in t:
            t["widths"] = tuple(t["widths"])
        return cls(TrunkConfig(**t), **d)


class TextHead(nn.Module):
    """Frozen token embeddings (B, L, 384) + mask -> (B, embed): one transformer layer over the
    tokens, then attention pooling with a learned query. A pooled MiniLM vector cannot tell
    "a red circle left of a blue square" from its swap (cosine 0.984); token order can."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        w = cfg.text_width
        self.proj = nn.Linear(cfg.text_dim, w)
        self.pos = nn.Parameter(torch.zeros(cfg.max_tokens, w))
        self.layer = nn.TransformerEncoderLayer(w, cfg.text_heads, 2 * w, dropout=0.0, batch_first=True,
                                                norm_first=True)
        self.query = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.pool = nn.MultiheadAttention(w, cfg.text_heads, batch_first=True)
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, cfg.embed))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = tokens.shape[1]
        x = self.proj(tokens) + self.pos[:L]                               # (B, L, w)
        x = self.layer(x, src_key_padding_mask=~mask)
        q = self.query.expand(len(x), -1, -1)                               # (B, 1, w)
        pooled, _ = self.pool(q, x, x, key_padding_mask=~mask, need_weights=False)
        return self.out(pooled[:, 0])                                       # (B, embed)


class ClipTower(nn.Module):
    """Image tower and text head; `encode_*` return L2-normalised (B, embed) embeddings."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        self.cfg = cfg
        self.trunk = Trunk(cfg.trunk)
        c, g = cfg.trunk.widths[-1], cfg.trunk.grid
        self.image_out = nn.Sequential(nn.Flatten(), nn.Linear(c * g * g, 256), nn.SiLU(),
                                       nn.Linear(256, cfg.embed))
        self.text = TextHead(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_out(self.trunk(images)), dim=-1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(tokens[:, :self.cfg.max_tokens], mask[:, :self.cfg.max_tokens]), dim=-1)


# ---------------------------------------------------------------------------------------------
# files: safetensors + a JSON sidecar (no pickle)


def sidecar(path: str | Path) -> Path:
    """The JSON next to a weights file (features.safetensors -> features.json)."""
    return Path(path).with_suffix(".json")


def save_model(model: nn.Module, path: str | Path, record: dict) -> Path:
    """Write the weights and `record` (which must hold the model config under "config")."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"kind": record["kind"]})
    sidecar(path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _read(path: str | Path, kind: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    path = Path(path)
    meta = sidecar(path)
    if not path.is_file() or not meta.is_file():
        raise FileNotFoundError(f"{path}: calibration-world {kind} weights need the file and its "
                                f"sidecar {meta.name}; train them with `python -m "
                                f"calibration_world.train_metrics {kind} --out {path}`")
    record = json.loads(meta.read_text(encoding="utf-8"))
    if record.get("kind") != kind:
        raise ValueError(f"{meta}: holds {record.get('kind')!r} weights, expected {kind!r}")
    return load_file(str(path)), record


def load_feature_net(path: str | Path) -> tuple[FeatureNet, dict]:
    """(FeatureNet in eval mode, its record) from a safetensors file and its sidecar."""
    state, record = _read(path, "features")
    net = FeatureNet(FeatureConfig.from_dict(record["config"]))
    net.load_state_dict(state)
    return net.eval().requires_grad_(False), record


def load_clip_tower(path: str | Path) -> tuple[ClipTower, dict]:
    """(ClipTower in eval mode, its record) from a safetensors file and its sidecar."""
    state, record = _read(path, "clip")
    net = ClipTower(ClipConfig.from_dict(record["config"]))
    net.load_state_dict(state)
    return net.eval().requires_grad_(False), record


# ---------------------------------------------------------------------------------------------
# the metric code paths


class WorldFeatureExtractor(FeatureExtractor):
    """FeatureNet behind `bench.metrics.fid.FeatureExtractor`'s interface (.resolution, .dims,
    .device, .protocol, .prepare, __call__ on uint8 (B, 3, H, W) or PIL -> float (B, dims)).

    The Inception constructor is not called: only the protocol differs, and it must say plainly
    which network made the features, so caches and reports never mix the two.
    """

    name = feature_name = "calibration-world"  # runs store its features as <config>/calibration-world.npy

    def __init__(self, path: str | Path | None = None, *, device: str | torch.device = "cpu"):
        from bench.weights import file_sha256

        from .bundled import bundled_features_path

        path = Path(path) if path is not None else bundled_features_path()
        net, record = load_feature_net(path)
        self.device = torch.device(device)
        self.network = net.to(self.device)
        self.weights_path = path
        self.resolution = net.cfg.trunk.resolution
        self.dims = net.cfg.dims
        self.record = record
        self.protocol = {
            "library": "torchmetrics",
            "torchmetrics": md.version("torchmetrics"),
            "pillow": md.version("pillow"),
            "feature_extractor": "calibration-world FeatureNet (scene-attribute CNN), not Inception",
            "feature_layer": f"hidden-pre-activation-{self.dims}",
            "dims": self.dims,
            "weights_file": path.name,
            "weights_sha256": file_sha256(path),
            "weights_official": False,
            "resolution": self.resolution,
            "resize": RESIZE,
            "network_input": self.resolution,
            "network_resize": "none",
        }


class WorldClipScorer:
    """ClipTower + frozen MiniLM behind `ClipScorer`'s interface (.protocol, .cosines, .count_truncated).

    `--clip-model calibration-world` builds one of these (calibration_world.plugin).
    """

    def __init__(self, model_name: str = NAME, pretrained: str | None = None, *,
                 device: str | torch.device = "cpu", cache_dir: str | None = None):
        """Args:
            model_name: "calibration-world".
            pretrained: a ClipTower safetensors file; anything else (None, open_clip's default
                tag "openai", "bundled") means the bundled tower.
            device: where the towers run.
            cache_dir: unused (open_clip's cache; kept for the interface).
        """
        from bench.weights import file_sha256
        from imagen_ref.text_encoder import FrozenTextEncoder

        from .bundled import bundled_clip_path

        path = Path(pretrained) if pretrained and Path(pretrained).is_file() else bundled_clip_path()
        net, record = load_clip_tower(path)
        self.device = torch.device(device)
        self.model = net.to(self.device)
        self.record = record
        cfg = net.cfg
        self.text_encoder = FrozenTextEncoder(cfg.text_encoder, max_length=cfg.max_tokens, device=self.device)
        self.context_length = cfg.max_tokens
        self.resolution = cfg.trunk.resolution
        self.protocol = {
            "library": "calibration_world",
            "model": f"{NAME} ClipTower (image CNN + text head on frozen {cfg.text_encoder}), not CLIP",
            "pretrained": path.name,
            "weights_sha256": file_sha256(path),
            "text_encoder": self.text_encoder.encoder_id,
            "context_length": self.context_length,
            "image_size": self.resolution,
            "resize": RESIZE,
            "score": "100*mean(max(cos,0))",
        }

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts exceed the token cap (and are therefore truncated)."""
        tok = self.text_encoder.tokenizer
        return sum(1 for t in texts if len(tok(t)["input_ids"]) > self.context_length)

    def _pixels(self, images) -> torch.Tensor:
        """uint8 (B, 3, R, R) by the FID path's step-1 protocol."""
        from bench.metrics.fid import eval_batch

        return eval_batch(images, self.resolution)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(B, embed) normalised text embeddings."""
        tokens, mask = self.text_encoder.encode(list(texts))
        return self.model.encode_text(tokens.to(self.device), mask.to(self.device)).float()

    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        """(B, embed) normalised image embeddings."""
        return self.model.encode_image(self._pixels(images).to(self.device)).float()

    def cosines(self, images, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Raw cosine of each image with its text: (float64 (B,), number of texts truncated)."""
        texts = list(texts)
        if len(texts) != len(images):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        img, txt = self.embed_images(images), self.embed_texts(texts)
        return (img * txt).sum(dim=-1).double().cpu().numpy(), self.count_truncated(texts)
