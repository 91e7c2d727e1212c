"""Classifier-free guidance and thresholding as wrappers around a network (STYLE §2).

`make_denoiser` turns a U-Net and its conditioning into `denoiser(z, t) -> x0`, the only
interface the samplers see.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .diffusion import Schedule, null_text, x0_from_prediction
from .thresholding import parse_mode, threshold


# Dense kernels on the CPU pick other code paths (GEMV, another conv algorithm) for one to three
# rows, which changes the last bits of a row's result; from four rows on, a row's result does not
# depend on the others. Calls with fewer rows are padded, so an image is the same alone or in a batch.
MIN_ROWS = 4


def call_model(model, z, t, text, text_mask, lowres=None, aug_t=None) -> torch.Tensor:
    """model(...) with the batch padded to MIN_ROWS rows (copies of the last row), then cut back."""
    rows = z.shape[0]
    if rows >= MIN_ROWS:
        return model(z, t, text, text_mask, lowres=lowres, aug_t=aug_t)

    def pad(x):
        return None if x is None else torch.cat([x, x[-1:].expand(MIN_ROWS - rows, *x.shape[1:])])

    out = model(pad(z), pad(t), pad(text), pad(text_mask), lowres=pad(lowres), aug_t=pad(aug_t))
    return out[:rows]


def guided_prediction(model, z, t, text, text_mask, *, guidance: float = 1.0,
                      lowres=None, aug_t=None) -> torch.Tensor:
    """Network output with classifier-free guidance (paper eq. 2): w·ε(z, c) + (1 - w)·ε(z).

    The conditional and unconditional branches run in one batched forward pass. w = 1 skips
    the unconditional branch, so it returns exactly the conditional model's prediction.
    (The combination is linear, so guiding v is the same as guiding eps.)
    """
    if guidance == 1.0:
        return call_model(model, z, t, text, text_mask, lowres=lowres, aug_t=aug_t)
    u_text, u_mask = null_text(text, text_mask)
    both = call_model(
        model, torch.cat([z, z]), torch.cat([t, t]),
        torch.cat([text, u_text]), torch.cat([text_mask, u_mask]),
        lowres=None if lowres is None else torch.cat([lowres, lowres]),
        aug_t=None if aug_t is None else torch.cat([aug_t, aug_t]),
    )
    cond, uncond = both.float().chunk(2)
    return uncond + guidance * (cond - uncond)


def make_denoiser(model, schedule: Schedule, text: torch.Tensor, text_mask: torch.Tensor, *,
                  guidance: float = 1.0, thresholding: str = "none", prediction: str = "eps",
                  lowres: torch.Tensor | None = None, aug_t: torch.Tensor | None = None,
                  autocast: Callable[[], contextlib.AbstractContextManager] | None = None):
    """Build `denoiser(z, t) -> x0`: guided prediction -> x̂0 -> thresholding.

    Args:
        guidance: the classifier-free guidance weight w (1 = none).
        thresholding: a mode string of `imagen_ref.threshold`.
        autocast: a factory of the precision context for the network call (bf16 on CUDA).
    """
    mode = parse_mode(thresholding)
    ctx = autocast or contextlib.nullcontext

    def denoiser(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with ctx():
            pred = guided_prediction(model, z, t, text, text_mask, guidance=guidance,
                                     lowres=lowres, aug_t=aug_t)
        x0 = x0_from_prediction(z, pred.float(), t, schedule, prediction)
        return threshold(x0, mode)

    return denoiser

