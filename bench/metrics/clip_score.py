"""CLIP score with open_clip: the raw image-text cosine per image, scaled only when reported.

Runs store the raw cosine; the reported score is 100 · mean(max(cos, 0)) (the per-image clamp of
Hessel et al. 2021 with w = 100; notes/eval_anchors.md §0.5). Captions longer than the text
tower's context are truncated by the tokenizer (keeping the end-of-text token) and counted.
Default model: ViT-L-14 with OpenAI's weights; any open_clip name works with a pretrained tag,
a local weights file, or `local-dir:` / `hf-hub:` names. Other scorers with the same interface
(.protocol, .cosines, .count_truncated) are registered under a model name by plugins
(`register_clip_scorer`, bench.plugins); `make_clip_scorer` picks the registered one or open_clip.
"""
from __future__ import annotations

import importlib.metadata as md
import zipfile
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..weights import ClipWeights, file_sha256, resolve_clip_weights

# model name -> (factory(pretrained, *, device, cache_dir), check(pretrained) or None)
_SCORERS: dict[str, tuple] = {}


def register_clip_scorer(name: str, factory, *, check=None, replace: bool = False) -> None:
    """Make `--clip-model NAME` build `factory(pretrained, device=..., cache_dir=...)`, an object
    with ClipScorer's interface; `check(pretrained)` resolves its weights without loading them."""
    if name in _SCORERS and not replace:
        raise ValueError(f"CLIP scorer {name!r} is already registered")
    _SCORERS[name] = (factory, check)


def _registered(model_name: str):
    from ..plugins import load_plugins

    load_plugins()
    return _SCORERS.get(model_name)


def make_clip_scorer(model_name: str = "ViT-L-14", pretrained: str | None = "openai", *,
                     device: str | torch.device = "cpu", cache_dir: str | None = None):
    """The scorer registered under `model_name`, else an open_clip ClipScorer."""
    found = _registered(model_name)
    if found is not None:
        return found[0](pretrained, device=device, cache_dir=cache_dir)
    return ClipScorer(model_name, pretrained, device=device, cache_dir=cache_dir)


def check_clip_weights(model_name: str, pretrained: str | None, cache_dir: str | None = None):
    """Resolve a scorer's weights without loading them (WeightsNotFoundError / ValueError)."""
    found = _registered(model_name)
    if found is not None:
        return found[1](pretrained) if found[1] is not None else None
    return resolve_clip_weights(model_name, pretrained, cache_dir)


def clip_score(cosines) -> float:
    """100 · mean(max(cos, 0)) of raw per-image cosines."""
    cos = np.asarray(cosines, dtype=np.float64)
    if cos.size == 0:
        raise ValueError("no cosines to score")
    return float(100.0 * np.maximum(cos, 0.0).mean())


def _token_count(tokenizer, text: str) -> int | None:
    """Tokens `text` needs with start/end tokens, or None when the tokenizer cannot tell."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # open_clip SimpleTokenizer
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip HFTokenizer wraps a transformers one
    if inner is not None and callable(inner):
        return len(inner(text)["input_ids"])
    return None


class ClipScorer:
    """open_clip image and text towers, loaded from local weights only."""

    def __init__(self, model_name: str = "ViT-L-14", pretrained: str | None = "openai", *,
                 device: str | torch.device = "cpu", cache_dir: str | None = None):
        """Args:
            model_name: an open_clip model name (`open_clip.list_models()`), or `local-dir:DIR`,
                `hf-hub:ORG/REPO`.
            pretrained: an open_clip pretrained tag of that model (resolved in the local caches)
                or a weights file path.
            device: where the towers run.
            cache_dir: open_clip / Hugging Face cache folder, if not the default.
        Raises:
            WeightsNotFoundError: the weights are not on this machine.
        """
        import open_clip

        loaded = load_open_clip(model_name, pretrained, device=device, cache_dir=cache_dir)
        self.model, self.preprocess, weights = loaded.model, loaded.preprocess, loaded.weights
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = torch.device(device)
        self.context_length = int(getattr(self.tokenizer, "context_length", 0) or 0)
        self.protocol = {
            "library": "open_clip",
            "open_clip": md.version("open_clip_torch"),
            "model": model_name,
            "pretrained": weights.tag or weights.path.name,
            "weights_sha256": file_sha256(weights.path),
            "context_length": self.context_length,
            "image_size": _image_size(self.model),
            "quick_gelu": loaded.quick_gelu,
            "score": "100*mean(max(cos,0))",
        }

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many texts exceed the context length (and are therefore truncated)."""
        counts = [_token_count(self.tokenizer, t) for t in texts]
        return sum(1 for c in counts if c is not None and c > self.context_length)

    def _pixels(self, images) -> torch.Tensor:
        """open_clip's eval transform of uint8 (B, 3, H, W) or PIL images -> (B, 3, S, S) float."""
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} "
                                 f"{tuple(images.shape)}")
            images = [Image.fromarray(x.permute(1, 2, 0).cpu().numpy()) for x in images]
        return torch.stack([self.preprocess(im.convert("RGB")) for im in images])

    @torch.no_grad()
    def cosines(self, images, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Raw cosine of each image with its text.

        Args:
            images: uint8 (B, 3, H, W) or a list of B PIL images.
            texts: B captions.
        Returns: (float64 (B,) cosines, number of captions truncated to the context length).
        """
        texts = list(texts)
        if len(texts) != len(images):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        pixels = self._pixels(images).to(self.device)
        tokens = self.tokenizer(texts).to(self.device)
        img = self.model.encode_image(pixels, normalize=True).float()  # (B, D)
        txt = self.model.encode_text(tokens, normalize=True).float()   # (B, D)
        cos = (img * txt).sum(dim=-1).double().cpu().numpy()
        return cos, self.count_truncated(texts)


@dataclass(frozen=True)
class OpenClip:
    """An open_clip model loaded from local weights (load_open_clip)."""

    model: torch.nn.Module      # in eval mode, on the requested device
    preprocess: Callable        # open_clip's eval transform: PIL image -> (3, S, S) float
    weights: ClipWeights        # the resolved checkpoint
    quick_gelu: bool            # QuickGELU activations (OpenAI's weights)


def load_open_clip(model_name: str, pretrained: str | None, *, device: str | torch.device = "cpu",
                   cache_dir: str | None = None) -> OpenClip:
    """An open_clip model and its eval transform from local weights only (never downloads).

    Args:
        model_name: an open_clip model name, or `local-dir:DIR`, `hf-hub:ORG/REPO`.
        pretrained: an open_clip pretrained tag of that model (resolved in the local caches)
            or a weights file path.
        device: where the model goes.
        cache_dir: open_clip / Hugging Face cache folder, if not the default.
    Raises:
        WeightsNotFoundError: the weights are not on this machine.
        ValueError: `pretrained` is neither a file nor a known tag of `model_name`.
    """
    import open_clip

    weights = resolve_clip_weights(model_name, pretrained, cache_dir)
    kwargs = {}
    if weights.tag_cfg:  # what open_clip applies for a tag, applied to the cached file
        cfg = weights.tag_cfg
        kwargs = dict(force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                      image_mean=cfg.get("mean"), image_std=cfg.get("std"),
                      image_interpolation=cfg.get("interpolation"),
                      image_resize_mode=cfg.get("resize_mode"))
    source = None  # 'local-dir:' / 'hf-hub:' names: open_clip finds the file itself
    if not model_name.startswith(("hf-hub:", "local-dir:")):
        source = str(weights.path)
        # OpenAI's original files are TorchScript archives, which torch.load refuses with
        # weights_only=True; open_clip reads their state dict when allowed to unpickle
        kwargs["weights_only"] = not _is_torchscript(weights.path)
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=source, device=device, **kwargs)
    model.eval()
    quick_gelu = bool(kwargs.get("force_quick_gelu")
                      or (open_clip.get_model_config(model_name) or {}).get("quick_gelu"))
    return OpenClip(model, preprocess, weights, quick_gelu)


def _is_torchscript(path) -> bool:
    """A TorchScript archive: a zip with the TorchScript constants table."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/constants.pkl") for name in z.namelist())


def _image_size(model) -> int:
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return int(size) if size is not None else 0
