"""The `clip` and `dinov2` feature networks (bench.metrics.networks), from local weights only.

Both follow the same two-step protocol as the Inception network of bench.metrics.fid, recorded
with every number and keyed into the reference caches (STYLE 7):

1. `pil-bicubic-center-crop` (bench.metrics.fid.to_eval_image): any image becomes RGB, is
   center-cropped to a square and resized with PIL bicubic to the network's `resolution`, then
   quantised to uint8. Images already at that size pass unchanged. The reference pipeline
   (coco.reference) applies the same step, so a network sees the same pixels either way.
2. the network's own input transform, then the network:

   - `clip`, CMMD's network (Jayasumana et al. 2024: CLIP ViT-L/14 at 336 px, open_clip
     `ViT-L-14-336` with OpenAI's weights): open_clip's eval transform of the model (bicubic
     resize of the shorter side to the image size, center crop, CLIP mean/std; after step 1 only
     the conversion and normalisation do anything), then `encode_image(normalize=True)`: unit
     L2-norm embeddings. For a square image, steps 1 and 2 give exactly open_clip's own
     preprocessing of the original image.
   - `dinov2`, FD-DINOv2's network (Stein et al. NeurIPS 2023, as dgm-eval computes it: DINOv2
     ViT-L/14 at 224 px): x / 255, ImageNet mean/std, then transformers' `Dinov2Model`; the
     feature is the CLS token after the final layer norm (`pooler_output`). dgm-eval resizes
     with torchvision `Resize((224, 224), BICUBIC)` on the PIL image, which is PIL's bicubic:
     step 1 at 224 is the same operation on square images (non-square ones are squashed there,
     center-cropped here). The checkpoint's 37x37 position embeddings are resampled to the
     16x16 patch grid the way the original DINOv2 code (torch.hub, which dgm-eval loads) does:
     bicubic with scale factor (16 + 0.1) / 37; transformers resamples to size 16 instead,
     which moves the features (`pos_interpolation="transformers"` selects that).

Sources (`networks.load(name, source)`):
    clip:   None -> `ViT-L-14-336@openai`; `MODEL@PRETRAINED`, PRETRAINED an open_clip tag of
            MODEL (resolved in the local caches, bench.weights.resolve_clip_weights) or a
            weights file; `local-dir:DIR` or `hf-hub:ORG/REPO` (open_clip's own names).
    dinov2: None -> `facebook/dinov2-large`; a folder made by `save_pretrained` (config.json and
            model.safetensors / pytorch_model.bin, sharded or not), or a Hugging Face repo id
            looked up in the Hugging Face cache only.

Features are computed under torch.no_grad, in eval mode and float32, with TF32 off on CUDA.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import math
import os
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .clip_score import _image_size, load_open_clip
from .fid import RESIZE, _no_tf32, eval_batch, to_eval_image  # noqa: F401  (re-exported)
from ..weights import WeightsNotFoundError, file_sha256, resolve_clip_weights

CLIP_DEFAULT = "ViT-L-14-336@openai"       # CMMD's network
DINOV2_DEFAULT = "facebook/dinov2-large"   # dgm-eval's default (torch.hub dinov2_vitl14)
DINOV2_RESOLUTION = 224                    # dgm-eval's DINOv2 input size
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POS_INTERPOLATIONS = ("dinov2", "transformers")
_OPEN_CLIP_NAMES = ("local-dir:", "hf-hub:")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


# ---------------------------------------------------------------------------------- clip
def parse_clip_source(source: str | None) -> tuple[str, str | None]:
    """(open_clip model name, pretrained tag or file) of a `clip` source.

    Raises:
        ValueError: not `MODEL@PRETRAINED`, `local-dir:DIR` or `hf-hub:ORG/REPO`.
    """
    source = CLIP_DEFAULT if source is None else str(source)
    if source.startswith(_OPEN_CLIP_NAMES):
        return source, None
    model, sep, pretrained = source.partition("@")
    if not sep or not model or not pretrained:
        raise ValueError(f"clip feature network source {source!r}: use MODEL@PRETRAINED (an open_clip "
                         f"model and a pretrained tag or weights file, e.g. {CLIP_DEFAULT}), "
                         "local-dir:DIR or hf-hub:ORG/REPO")
    return model, pretrained


def _clip_weights_error(e: WeightsNotFoundError, source: str | None) -> WeightsNotFoundError:
    """bench.weights' message, with the CLI hints of the CLIP score replaced by the source syntax."""
    msg = str(e).replace("pass --clip-pretrained PATH with a built-in --clip-model name",
                         "give the source as MODEL@PATH")
    msg = msg.replace("(given with --clip-pretrained) ", "").replace("--clip-pretrained PATH", "MODEL@PATH")
    msg = msg.replace("--clip-model local-dir:DIR", "the source local-dir:DIR")
    return WeightsNotFoundError(f"clip feature network ({source or CLIP_DEFAULT}): {msg}")


def check_clip(source: str | None = None, *, cache_dir: str | None = None):
    """Resolve the `clip` network's weights without loading them: a bench.weights.ClipWeights.

    Raises:
        WeightsNotFoundError: the weights are not on this machine (message: the file and where
            to put it).
        ValueError: a malformed source, or an unknown pretrained tag.
    """
    model, pretrained = parse_clip_source(source)
    try:
        return resolve_clip_weights(model, pretrained, cache_dir)
    except WeightsNotFoundError as e:
        raise _clip_weights_error(e, source) from None


class ClipImageNetwork:
    """open_clip image embeddings (L2-normalised) as a feature network.

    Call it on uint8 images (B, 3, H, W) or a list of PIL images; returns float32 (B, dims).
    """

    def __init__(self, model: torch.nn.Module, preprocess, protocol: dict, *, device: torch.device,
                 resolution: int, dims: int, name: str = "clip"):
        self.model = model.to(device).float().eval()
        self.preprocess = preprocess
        self.protocol = protocol
        self.device = device
        self.resolution = resolution
        self.dims = dims
        self.name = name

    def pixels(self, images) -> torch.Tensor:
        """Steps 1 and 2 (open_clip's eval transform): float32 (B, 3, S, S) on the CPU."""
        batch = eval_batch(images, self.resolution).cpu()
        if len(batch) == 0:
            return torch.empty(0, 3, self.resolution, self.resolution)
        return torch.stack([self.preprocess(Image.fromarray(x.permute(1, 2, 0).numpy())) for x in batch])

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        x = self.pixels(images).to(self.device)
        if len(x) == 0:
            return torch.empty(0, self.dims, device=self.device)
        with _no_tf32():
            return self.model.encode_image(x, normalize=True).float()  # (B, dims)


def _describe_transform(cfg: dict, size: int) -> str:
    """open_clip's eval transform in words, e.g. 'bicubic-shortest-336-center-crop-336'."""
    mode = cfg.get("resize_mode", "shortest")
    interp = cfg.get("interpolation", "bicubic")
    if mode == "squash":
        return f"{interp}-squash-{size}"
    if mode == "longest":
        return f"{interp}-longest-{size}-pad-{size}"
    return f"{interp}-shortest-{size}-center-crop-{size}"


def load_clip(source: str | None = None, *, device: str | torch.device = "cpu",
              cache_dir: str | None = None) -> ClipImageNetwork:
    """The `clip` feature network (never downloads).

    Args:
        source: `MODEL@PRETRAINED`, `local-dir:DIR` or `hf-hub:ORG/REPO`; None is
            `ViT-L-14-336@openai` (CMMD's network).
        device: where the network runs.
        cache_dir: open_clip / Hugging Face cache folder, if not the default.
    Raises:
        WeightsNotFoundError: the weights are not on this machine.
        ValueError: a malformed source, or an unknown pretrained tag.
    """
    check_clip(source, cache_dir=cache_dir)  # the message of this network before any building
    model_name, pretrained = parse_clip_source(source)
    device = torch.device(device)
    loaded = load_open_clip(model_name, pretrained, device=device, cache_dir=cache_dir)
    model, weights = loaded.model, loaded.weights
    size = _image_size(model)
    cfg = dict(getattr(model.visual, "preprocess_cfg", None) or {})
    dims = int(getattr(model.visual, "output_dim", 0) or 0)
    if not dims:  # a tower without output_dim (timm, ...): ask it
        with torch.no_grad():
            dims = int(model.encode_image(torch.zeros(1, 3, size, size, device=device)).shape[-1])
    protocol = {
        "library": "open_clip",
        "open_clip": md.version("open_clip_torch"),
        "pillow": md.version("pillow"),
        "model": model_name,
        "pretrained": weights.tag or weights.path.name,
        "weights_sha256": file_sha256(weights.path),
        "quick_gelu": loaded.quick_gelu,
        "resolution": size,
        "resize": RESIZE,
        "image_size": size,
        "network_resize": _describe_transform(cfg, size),
        "mean": [float(v) for v in cfg.get("mean", ())],
        "std": [float(v) for v in cfg.get("std", ())],
        "feature_layer": "encode_image",
        "normalized": True,
        "dims": dims,
    }
    return ClipImageNetwork(model, loaded.preprocess, protocol, device=device, resolution=size, dims=dims)


# ---------------------------------------------------------------------------------- dinov2
@dataclass(frozen=True)
class Dinov2Files:
    """A resolved transformers DINOv2 checkpoint."""

    folder: Path                # holds config.json and the weights (a cache snapshot or a folder)
    config: Path                # config.json
    weights: tuple[Path, ...]   # the weights file, or the shards of a sharded checkpoint
    index: Path | None          # the shard index of a sharded checkpoint
    label: str                  # the repo id, or the folder's name

    def weights_sha256(self) -> str:
        """sha256 of the weights file; of 'name sha256' lines over the shards when sharded."""
        if self.index is None:
            return file_sha256(self.weights[0])
        lines = "".join(f"{p.name} {file_sha256(p)}\n" for p in self.weights)
        return hashlib.sha256(lines.encode()).hexdigest()


def _hf_hub_cache(cache_dir: str | None = None) -> Path:
    """The Hugging Face hub cache folder, from the environment at call time (huggingface_hub
    reads it once, at import)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(os.path.expandvars(env)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _folder_files(folder: Path, label: str) -> Dinov2Files | None:
    """The checkpoint in `folder`, or None when config.json or (every shard of) the weights is missing."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    for name in _WEIGHT_FILES:
        if (folder / name).is_file():
            return Dinov2Files(folder, config, (folder / name,), None, label)
    for name in _WEIGHT_INDEXES:
        index = folder / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError):
                return None
            paths = tuple(folder / s for s in shards)
            if shards and all(p.is_file() for p in paths):
                return Dinov2Files(folder, config, paths, index, label)
    return None


def _is_repo_id(source: str) -> bool:
    """'org/name' (one slash, no path-like start): a Hugging Face repo id rather than a folder."""
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~")) and not os.path.isabs(source)


def check_dinov2(source: str | None = None, *, cache_dir: str | None = None) -> Dinov2Files:
    """Resolve the `dinov2` network's weights without loading them.

    Args:
        source: a folder made by `save_pretrained`, or a Hugging Face repo id looked up in the
            Hugging Face cache only; None is `facebook/dinov2-large`.
        cache_dir: the Hugging Face hub cache, if not the default ($HF_HUB_CACHE, $HF_HOME/hub).
    Raises:
        WeightsNotFoundError: nothing usable on this machine (message: the folder or repo, and
            how to get it).
    """
    source = DINOV2_DEFAULT if source is None else str(source)
    folder = Path(source).expanduser()
    if folder.is_dir():
        found = _folder_files(folder, folder.name)
        if found is None:
            raise WeightsNotFoundError(
                f"dinov2 feature network: {folder} is not a transformers DINOv2 checkpoint: it needs "
                f"config.json and {' or '.join(_WEIGHT_FILES)} (or a sharded index with its shards), "
                "as Dinov2Model.save_pretrained(folder) writes them.")
        return found
    if folder.exists():
        raise WeightsNotFoundError(
            f"dinov2 feature network: {folder} is a file; pass the folder that holds it and its "
            "config.json (as Dinov2Model.save_pretrained(folder) writes them).")
    if not _is_repo_id(source):
        raise WeightsNotFoundError(
            f"dinov2 feature network: the folder {folder} does not exist. Pass a folder made by "
            f"Dinov2Model.save_pretrained (config.json + weights) or a Hugging Face repo id such as "
            f"{DINOV2_DEFAULT} downloaded into the Hugging Face cache.")
    from huggingface_hub import try_to_load_from_cache

    hub = _hf_hub_cache(cache_dir)
    config = try_to_load_from_cache(source, "config.json", cache_dir=str(hub))
    found = None
    if isinstance(config, str) and os.path.isfile(config):
        found = _folder_files(Path(config).parent, source)
    if found is None:
        raise WeightsNotFoundError(
            f"dinov2 feature network: {source} is not in the Hugging Face cache ({hub}: config.json "
            f"and {' or '.join(_WEIGHT_FILES)} of the repo). Download it there with `hf download "
            f"{source}` (huggingface_hub < 0.34: `huggingface-cli download {source}`) on a machine "
            "with internet and copy the cache ($HF_HUB_CACHE or $HF_HOME/hub), or pass a folder made "
            "by Dinov2Model.save_pretrained.")
    return found


def _original_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Dinov2Embeddings.interpolate_pos_encoding as the original DINOv2 code resamples: bicubic
    with scale factor (n + 0.1) / N in float32 (transformers asks for the size n instead)."""
    pos = self.position_embeddings
    n_patches, n_pos = embeddings.shape[1] - 1, pos.shape[1] - 1
    if n_patches == n_pos and height == width:
        return pos
    patch = self.config.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    rows, cols = height // ph, width // pw
    side = int(math.sqrt(n_pos))
    dim = pos.shape[-1]
    grid = pos[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
                                           mode="bicubic", align_corners=False)
    if grid.shape[-2:] != (rows, cols):
        raise RuntimeError(f"position embeddings resampled to {tuple(grid.shape[-2:])}, not {(rows, cols)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(pos.dtype)
    return torch.cat((pos[:, :1], grid), dim=1)


class Dinov2Network:
    """DINOv2's CLS token after the final layer norm (transformers Dinov2Model) as a feature network.

    Call it on uint8 images (B, 3, H, W) or a list of PIL images; returns float32 (B, dims).
    """

    def __init__(self, model: torch.nn.Module, protocol: dict, *, device: torch.device,
                 resolution: int, dims: int, name: str = "dinov2"):
        self.model = model.to(device).float().eval()
        self.protocol = protocol
        self.device = device
        self.resolution = resolution
        self.dims = dims
        self.name = name
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def pixels(self, images) -> torch.Tensor:
        """Steps 1 and 2 (x / 255, ImageNet mean/std): float32 (B, 3, R, R) on the network's device."""
        x = eval_batch(images, self.resolution).to(self.device)
        return (x.float() / 255.0 - self._mean) / self._std

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        x = self.pixels(images)
        if len(x) == 0:
            return torch.empty(0, self.dims, device=self.device)
        with _no_tf32():
            return self.model(pixel_values=x).pooler_output.float()  # (B, dims)


def load_dinov2(source: str | None = None, *, device: str | torch.device = "cpu",
                cache_dir: str | None = None, resolution: int = DINOV2_RESOLUTION,
                pos_interpolation: str = "dinov2") -> Dinov2Network:
    """The `dinov2` feature network (never downloads).

    Args:
        source: a `save_pretrained` folder or a Hugging Face repo id in the local cache; None is
            `facebook/dinov2-large` (ViT-L/14, dgm-eval's default).
        device: where the network runs.
        cache_dir: the Hugging Face hub cache, if not the default.
        resolution: the network's input size (step 1 brings images to it); 224 as in dgm-eval.
        pos_interpolation: "dinov2" resamples the position embeddings as the original DINOv2
            code does (what dgm-eval's torch.hub model computes), "transformers" as transformers
            does. Both are the same when the checkpoint's grid already fits `resolution`.
    Raises:
        WeightsNotFoundError: the weights are not on this machine.
        ValueError: an unknown pos_interpolation, or a resolution that is not a multiple of the
            patch size.
    """
    if pos_interpolation not in POS_INTERPOLATIONS:
        raise ValueError(f"pos_interpolation {pos_interpolation!r}: use one of {POS_INTERPOLATIONS}")
    files = check_dinov2(source, cache_dir=cache_dir)
    from transformers import Dinov2Model

    device = torch.device(device)
    # eager attention: the textbook softmax(QK^T)V on every device (SDPA kernels vary by device)
    model = Dinov2Model.from_pretrained(str(files.folder), local_files_only=True,
                                        attn_implementation="eager")
    config = model.config
    patch = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    if resolution % patch:
        raise ValueError(f"dinov2 resolution {resolution} is not a multiple of the patch size {patch}")
    if pos_interpolation == "dinov2":
        model.embeddings.interpolate_pos_encoding = types.MethodType(_original_pos_encoding,
                                                                     model.embeddings)
    dims = int(config.hidden_size)
    grid = resolution // patch
    protocol = {
        "library": "transformers",
        "transformers": md.version("transformers"),
        "pillow": md.version("pillow"),
        "model": files.label,
        "weights_file": (files.index or files.weights[0]).name,
        "weights_sha256": files.weights_sha256(),
        "config_sha256": file_sha256(files.config),
        "resolution": resolution,
        "resize": RESIZE,
        "network_input": resolution,
        "network_resize": "none",
        "normalize": "imagenet-mean-std",
        "pos_interpolation": (f"dinov2-bicubic-scale-(n+0.1)/N-n{grid}" if pos_interpolation == "dinov2"
                              else f"transformers-bicubic-size-n{grid}"),
        "attention": "eager",
        "feature_layer": "cls-after-layernorm",
        "dims": dims,
    }
    return Dinov2Network(model, protocol, device=device, resolution=resolution, dims=dims)


# ---------------------------------------------------------------------------------- registry
def register_builtin() -> None:
    """Register `clip` and `dinov2` with bench.metrics.networks (again: replaces them)."""
    from .networks import register_network

    register_network("clip", load_clip, check=check_clip, default_source=CLIP_DEFAULT, replace=True,
                     help="open_clip image embeddings, L2-normalised (CMMD's network); source "
                          "MODEL@PRETRAINED (tag or weights file), local-dir:DIR or hf-hub:ORG/REPO")
    register_network("dinov2", load_dinov2, check=check_dinov2, default_source=DINOV2_DEFAULT, replace=True,
                     help="DINOv2 CLS features through transformers (FD-DINOv2, as dgm-eval); source "
                          "a save_pretrained folder or a repo id in the Hugging Face cache")
