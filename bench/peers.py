"""Benchmark-only peers: lucidrains' `imagen-pytorch` (PyPI), configured to match our perf configs.

The suite never imports a peer; only `python -m bench.perf sampling --peer imagen-pytorch` does.
Install with `pip install -e ".[peers]"`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from imagen_ref.diffusion import Schedule, x0_from_prediction
from imagen_ref.thresholding import parse_mode, threshold

PEERS = ("imagen-pytorch",)

# d_model of the T5 encoders imagen-pytorch names, so its import needs no hub request.
T5_DIMS = {"google/t5-v1_1-small": 512, "google/t5-v1_1-base": 768, "google/t5-v1_1-large": 1024,
           "google/t5-v1_1-xl": 2048, "google/t5-v1_1-xxl": 4096}

# imagen-pytorch `Unet` kwargs matched to our perf configs (same resolution, channel widths
# 64/128/256, parameters within 10%, FLOPs per image within 1%). 32x32 output comes from the input.
IMAGEN_PYTORCH_UNETS = {
    "perf-base-32": dict(
        dim=64, dim_mults=(1, 2, 4), num_resnet_blocks=2,
        layer_attns=(False, True, True), layer_cross_attns=(False, True, True),
        attn_heads=4, attn_dim_head=64),
}


class PeerNotInstalledError(ImportError):
    """A requested benchmark peer is not importable."""


def load_imagen_pytorch():
    """Import `imagen_pytorch` without network access and return the package.

    Its import evaluates `get_encoded_dim(DEFAULT_T5_NAME)` as a default argument, which asks the
    Hugging Face hub for T5's config. Loading `imagen_pytorch.t5` on its own first and replacing
    that function with a table lookup lets the package import offline.
    """
    cached = sys.modules.get("imagen_pytorch")
    if cached is not None:
        return cached
    spec = importlib.util.find_spec("imagen_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise PeerNotInstalledError(
            "the benchmark peer imagen-pytorch is not installed; install it with "
            "`pip install -e \".[peers]\"` (or `pip install imagen-pytorch`), or drop --peer")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t5_path = Path(next(iter(spec.submodule_search_locations))) / "t5.py"
    t5_spec = importlib.util.spec_from_file_location("imagen_pytorch.t5", t5_path)
    t5 = importlib.util.module_from_spec(t5_spec)
    sys.modules["imagen_pytorch.t5"] = t5
    t5_spec.loader.exec_module(t5)
    hub_lookup = t5.get_encoded_dim
    t5.get_encoded_dim = lambda name: T5_DIMS[name] if name in T5_DIMS else hub_lookup(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its torch.jit.script deprecation warnings
        return importlib.import_module("imagen_pytorch")


def imagen_pytorch_version() -> str:
    """The installed imagen-pytorch version string."""
    from importlib.metadata import version
    return version("imagen-pytorch")


def build_imagen_pytorch_unet(config_name: str, *, text_dim: int, text_len: int) -> torch.nn.Module:
    """The imagen-pytorch `Unet` matched to one of our perf configs.

    Args:
        config_name: a key of IMAGEN_PYTORCH_UNETS.
        text_dim: text-embedding width (384 for MiniLM-L6).
        text_len: tokens per caption; its `max_text_len`, so text is not padded to 256.
    """
    if config_name not in IMAGEN_PYTORCH_UNETS:
        raise KeyError(f"no imagen-pytorch peer for config {config_name!r}; "
                       f"choose one of {sorted(IMAGEN_PYTORCH_UNETS)}")
    ip = load_imagen_pytorch()
    with contextlib.redirect_stdout(io.StringIO()):  # its "dim should be >= 128" advice
        return ip.Unet(**IMAGEN_PYTORCH_UNETS[config_name], text_embed_dim=text_dim,
                       max_text_len=text_len)


def imagen_pytorch_denoiser(unet, schedule: Schedule, text: torch.Tensor, text_mask: torch.Tensor, *,
                            guidance: float, thresholding: str = "none",
                            autocast: Callable[[], contextlib.AbstractContextManager] | None = None):
    """`denoiser(z, t) -> x0` around an imagen-pytorch Unet, guided the way it guides.

    Classifier-free guidance runs as imagen-pytorch's `forward_with_cond_scale`: two forward
    passes of batch B (conditional, then with its null text), not one of 2B. Its default
    "remove parallel component" tweak is off, so the guidance is the paper's eq. 2, as ours.
    The network is conditioned on log-SNR(t), as imagen-pytorch's continuous-time sampler does.
    """
    mode = parse_mode(thresholding)
    ctx = autocast or contextlib.nullcontext

    def denoiser(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with ctx():
            eps = unet.forward_with_cond_scale(
                z, schedule.log_snr(t), text_embeds=text, text_mask=text_mask,
                cond_scale=guidance, remove_parallel_component=False)
        return threshold(x0_from_prediction(z, eps.float(), t, schedule, "eps"), mode)

    return denoiser
