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


# Dense kernels on the CPU pick other code paths for other row counts (GEMV for one to three
# rows; on AVX-512/AMX machines also other GEMM and convolution blockings for four rows against
# eight), which changes the last bits of a row's result. For a given row count a row's result
# does not depend on the other rows or its place among them. So on the CPU every call runs in
# chunks of exactly CPU_ROWS rows (the last one padded with copies of its last row), and an image
# is the same alone or in any batch. On other devices a call is padded to MIN_ROWS rows only.
MIN_ROWS = 4
CPU_ROWS = 4


def _padded(x, rows: int):
    if x is None or x.shape[0] == rows:
        return x
    return torch.cat([x, x[-1:].expand(rows - x.shape[0], *x.shape[1:])])


def call_model(model, z, t, text, text_mask, lowres=None, aug_t=None) -> torch.Tensor:
    """model(...) in fixed-size row chunks on the CPU (CPU_ROWS), elsewhere padded to MIN_ROWS
    rows (copies of the last row), then cut back to the rows asked for."""
    rows = z.shape[0]
    args = (z, t, text, text_mask, lowres, aug_t)
    if z.device.type != "cpu":
        if rows >= MIN_ROWS:
            return model(z, t, text, text_mask, lowres=lowres, aug_t=aug_t)
        z_, t_, text_, mask_, low_, aug_ = (_padded(x, MIN_ROWS) for x in args)
        return model(z_, t_, text_, mask_, lowres=low_, aug_t=aug_)[:rows]
    outs = []
    for start in range(0, rows, CPU_ROWS):
        part = [None if x is None else x[start:start + CPU_ROWS] for x in args]
        n = part[0].shape[0]
        z_, t_, text_, mask_, low_, aug_ = (_padded(x, CPU_ROWS) for x in part)
        outs.append(model(z_, t_, text_, mask_, lowres=low_, aug_t=aug_)[:n])
    return torch.cat(outs)


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

