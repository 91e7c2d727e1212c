"""Samplers: plain functions over a denoiser `denoiser(z, t) -> x0` (STYLE §1, §2).

Both walk a decreasing grid of continuous times ts[0] = 1 > ... > ts[-1] = 0 and return the
final x0 prediction. Noise comes from one torch.Generator per image, so an image never
depends on the batch it was drawn in.
"""
from __future__ import annotations

from typing import Callable

import torch

from .device import randn_per_image
from .diffusion import Schedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(steps: int, device=None) -> torch.Tensor:
    """`steps + 1` evenly spaced times from 1 down to 0 (float64)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)


def _coefficients(schedule: Schedule, t: float, s: float) -> tuple[float, ...]:
    """alpha, sigma at t and s, and 1 - SNR_t / SNR_s, in float64."""
    ts = torch.tensor([t, s], dtype=torch.float64)
    alpha, sigma = schedule.alpha_sigma(ts)
    lam = schedule.log_snr(ts)
    one_minus_r = -torch.expm1(lam[0] - lam[1])  # 1 - exp(lambda_t - lambda_s), stable
    return (alpha[0].item(), sigma[0].item(), alpha[1].item(), sigma[1].item(), one_minus_r.item())


def _noise(z: torch.Tensor, generators) -> torch.Tensor:
    if generators is None:
        return torch.randn_like(z)
    return randn_per_image(z.shape, generators, z.device, z.dtype)


def sample_ddpm(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, schedule: Schedule, *,
                generators: list[torch.Generator] | None = None, gamma: float = 0.0,
                callback: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Alg. 2) in continuous time (Kingma et al. 2021 eq. 33).

    Each step draws z_s ~ q(z_s | z_t, x̂0). The variance is (σ̃²)^(1-γ) (σ²_{t|s})^γ, the
    interpolation of Nichol & Dhariwal used by the paper (App. A); γ = 0 is the posterior's.
    Args:
        x: the initial noise z_1, (B, C, H, W).
        ts: decreasing times from 1 to 0, e.g. `time_grid(steps)`.
    Returns: the final x0 prediction.
    """
    z = x
    batch = z.shape[0]
    x0 = z
    for i in range(len(ts) - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        x0 = denoiser(z, torch.full((batch,), t, device=z.device, dtype=z.dtype))
        if callback is not None:
            callback(i, t, z, x0)
        if i == len(ts) - 2:
            break
        a_t, s_t, a_s, s_s, one_minus_r = _coefficients(schedule, t, s)
        c_z = a_t * s_s**2 / (a_s * s_t**2)     # = r α_s / α_t
        c_x = a_s * one_minus_r
        var_post = one_minus_r * s_s**2          # σ̃² = (1 - r) σ_s²
        var_ts = one_minus_r * s_t**2            # σ²_{t|s} = (1 - r) σ_t²
        var = var_post ** (1 - gamma) * var_ts ** gamma
        z = c_z * z + c_x * x0 + var ** 0.5 * _noise(z, generators)
    return x0


def sample_ddim(denoiser: Denoiser, x: torch.Tensor, ts: torch.Tensor, schedule: Schedule, *,
                eta: float = 0.0, generators: list[torch.Generator] | None = None,
                callback: Callable | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12); eta = 0 is deterministic, eta = 1 matches DDPM's variance.

    Args:
        x: the initial noise z_1, (B, C, H, W).
        ts: decreasing times from 1 to 0, e.g. `time_grid(steps)`.
    Returns: the final x0 prediction.
    """
    z = x
    batch = z.shape[0]
    x0 = z
    for i in range(len(ts) - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        x0 = denoiser(z, torch.full((batch,), t, device=z.device, dtype=z.dtype))
        if callback is not None:
            callback(i, t, z, x0)
        if i == len(ts) - 2:
            break
        a_t, s_t, a_s, s_s, one_minus_r = _coefficients(schedule, t, s)
        eps = (z - a_t * x0) / s_t               # eps implied by the (thresholded) x̂0
        c = eta * (one_minus_r ** 0.5) * s_s
        z = a_s * x0 + max(s_s**2 - c**2, 0.0) ** 0.5 * eps
        if c > 0:
            z = z + c * _noise(z, generators)
    return x0


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}
