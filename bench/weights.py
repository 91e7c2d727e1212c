"""Where metric weights come from: the usual caches or an explicit path, never a silent download.

Inception (FID): torch-fidelity's converted TF Inception file, looked up in
`$TORCH_HOME/hub/checkpoints/` (torch.hub's cache, where torch-fidelity itself downloads it) or
given with `--inception-weights PATH`. CLIP: an open_clip pretrained tag resolved in the Hugging
Face cache or open_clip's URL cache (`~/.cache/clip`), or a weights file given with
`--clip-pretrained PATH`. Other feature networks and CLIP scorers resolve their own weights
(bench.metrics.networks, bench.metrics.clip_score registries). `check_weights` is called by the
commands before any work, so an offline machine stops with one message naming each missing file
and where to put it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

INCEPTION_URL_ATTR = "URL_INCEPTION_V3"  # torch_fidelity.feature_extractor_inceptionv3.<this>
OFFICIAL_INCEPTION_SHA256_PREFIX = "6726825d"  # the hash torch.hub puts in the file name
_SHA_CACHE: dict[tuple, str] = {}


class WeightsNotFoundError(FileNotFoundError):
    """A metric's weights are not on this machine; the message says which file and where to put it."""


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (memoised per path, size and mtime: weights files are large)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


# ---------------------------------------------------------------------------------- Inception
def inception_url() -> str:
    """The URL torch-fidelity downloads its Inception weights from (its file name is the cache key)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    return getattr(fe, INCEPTION_URL_ATTR)


def inception_cache_path() -> Path:
    """Where torch.hub (and so torch-fidelity / torchmetrics) caches the Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(inception_url())


def resolve_inception_weights(path: str | Path | None = None) -> Path:
    """The Inception weights file: `path` if given, else the torch.hub cache copy.

    Raises:
        WeightsNotFoundError: the file is missing (message: the file and where to put it).
    """
    if path is not None:
        if not Path(path).is_file():
            raise WeightsNotFoundError(
                f"FID Inception weights not found: {path} (given with --inception-weights) is not a "
                f"file. Pass the path of {os.path.basename(inception_url())} (from {inception_url()}).")
        return Path(path)
    cached = inception_cache_path()
    if not cached.is_file():
        raise WeightsNotFoundError(
            f"FID Inception weights not found: {cached.name}. Put it at {cached} (download it from "
            f"{inception_url()}; the folder is $TORCH_HOME/hub/checkpoints) or pass "
            "--inception-weights PATH.")
    return cached


# ---------------------------------------------------------------------------------- CLIP
@dataclass(frozen=True)
class ClipWeights:
    """A resolved open_clip checkpoint."""

    path: Path                  # the local weights file
    tag: str | None             # the open_clip pretrained tag, None for a file given by path
    tag_cfg: dict | None        # open_clip's pretrained config of the tag (mean/std, quick_gelu...)


def _looks_like_path(pretrained: str) -> bool:
    return (os.sep in pretrained or "/" in pretrained
            or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")))


def _hf_cached(repo_filename: str, cache_dir: str | None) -> tuple[str | None, str, str]:
    """(cached path or None, repo id, file name) for open_clip's 'org/repo/' or 'org/repo/file'."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if repo_filename.endswith("/"):  # open_clip's convention: a repo id alone, default file name
        repo_id, filename = repo_filename.rstrip("/"), HF_WEIGHTS_NAME
    else:
        repo_id, filename = os.path.split(repo_filename)
    candidates = [filename]
    if filename == HF_WEIGHTS_NAME:
        candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        candidates.insert(0, filename[:-4] + ".safetensors")
    for name in candidates:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit, repo_id, name
    return None, repo_id, " or ".join(candidates)


def resolve_clip_weights(model_name: str, pretrained: str | None,
                         cache_dir: str | None = None) -> ClipWeights:
    """The local checkpoint for an open_clip (model name, pretrained tag or path).

    Raises:
        WeightsNotFoundError: nothing on this machine (message: the file and where to put it).
        ValueError: `pretrained` is neither a file path nor a known tag of `model_name`.
    """
    import open_clip

    if model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:"):])
        found = [p for ext in ("safetensors", "bin", "pth") for p in sorted(folder.glob(f"*.{ext}"))]
        preferred = [p for p in found if p.stem in ("open_clip_model", "open_clip_pytorch_model")]
        if not (folder / "open_clip_config.json").is_file() or not found:
            raise WeightsNotFoundError(
                f"CLIP model folder incomplete: {folder} needs open_clip_config.json and a weights file "
                "(open_clip_model.safetensors or open_clip_pytorch_model.bin) for --clip-model local-dir:DIR.")
        return ClipWeights((preferred or found)[0], None, None)
    if model_name.startswith("hf-hub:"):
        repo = model_name[len("hf-hub:"):]
        hit, repo_id, name = _hf_cached(repo + "/", cache_dir)
        config, _, _ = _hf_cached(repo + "/open_clip_config.json", cache_dir)
        if hit is None or config is None:
            name = name if hit is None else "open_clip_config.json"
            raise WeightsNotFoundError(
                f"CLIP weights not found: {name} of the Hugging Face repo {repo_id} is not in the "
                f"Hugging Face cache ({_hf_cache_dir(cache_dir)}). Download it there "
                f"(`huggingface-cli download {repo_id}`) or pass --clip-pretrained PATH with a "
                "built-in --clip-model name.")
        return ClipWeights(Path(hit), None, None)
    if not pretrained:
        raise ValueError(f"--clip-pretrained is required for the CLIP model {model_name!r}")
    if os.path.isfile(pretrained):
        return ClipWeights(Path(pretrained), None, None)
    if _looks_like_path(pretrained):
        raise WeightsNotFoundError(
            f"CLIP weights not found: {pretrained} (given with --clip-pretrained) is not a file.")
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"{pretrained!r} is not an open_clip pretrained tag of {model_name!r} "
                         f"(known: {', '.join(tags) or 'none'}) nor a weights file")
    return ClipWeights(_clip_tag_file(model_name, pretrained, cfg, cache_dir), pretrained, cfg)


def _hf_cache_dir(cache_dir: str | None) -> str:
    from huggingface_hub import constants

    return str(cache_dir or constants.HF_HUB_CACHE)


def _clip_tag_file(model_name: str, tag: str, cfg: dict, cache_dir: str | None) -> Path:
    """The cached file of an open_clip tag: HF cache first (open_clip prefers it), then URL cache."""
    where = []
    if cfg.get("hf_hub"):
        hit, repo_id, name = _hf_cached(cfg["hf_hub"], cache_dir)
        if hit:
            return Path(hit)
        where.append(f"{name} of the Hugging Face repo {repo_id} in {_hf_cache_dir(cache_dir)} "
                     f"(`huggingface-cli download {repo_id} {name.split(' or ')[0]}`)")
    if cfg.get("url"):
        url_cache = Path(cache_dir or os.path.expanduser("~/.cache/clip"))
        target = url_cache / os.path.basename(cfg["url"])
        if target.is_file():
            return target
        where.append(f"{target} (from {cfg['url']})")
    raise WeightsNotFoundError(
        f"CLIP weights not found for {model_name} / {tag}: put " + " or ".join(where)
        + ", or pass --clip-pretrained PATH.")


# ---------------------------------------------------------------------------------- both
def check_weights(*, fid: bool = True, clip: bool = True, inception_weights: str | None = None,
                  clip_model: str = "ViT-L-14", clip_pretrained: str | None = "openai",
                  clip_cache_dir: str | None = None,
                  networks: dict[str, str | None] | None = None) -> dict:
    """Resolve every metric's weights before any work; one error lists all that are missing.

    Args:
        fid, inception_weights: check the Inception file (the default FID network).
        clip, clip_model, clip_pretrained, clip_cache_dir: check the CLIP scorer's weights.
        networks: other feature networks to check, name -> source (None: its default).
    Returns: {"inception": Path, "clip": ClipWeights, <network>: what its check resolved, ...}
        for those asked for.
    Raises:
        WeightsNotFoundError: with one line per missing file.
    """
    from .metrics import networks as registry
    from .metrics.clip_score import check_clip_weights

    found, missing = {}, []
    wanted = dict(networks or {})
    if fid:
        wanted.setdefault("inception", inception_weights)
    for name, source in wanted.items():
        try:
            found[name] = registry.check(name, source)
        except WeightsNotFoundError as e:
            missing.append(str(e))
    if clip:
        try:
            found["clip"] = check_clip_weights(clip_model, clip_pretrained, clip_cache_dir)
        except WeightsNotFoundError as e:
            missing.append(str(e))
    if missing:
        raise WeightsNotFoundError("\n".join(missing))
    return found
