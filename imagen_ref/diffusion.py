"""Continuous-time variance-preserving diffusion: schedules, forward process, training loss.

Notation follows the Imagen paper (App. A) and Kingma et al., "Variational Diffusion Models":
time t ~ U(0, 1), z_t = alpha_t * x + sigma_t * eps, alpha_t^2 + sigma_t^2 = 1, and the
log signal-to-noise ratio log_snr(t) = log(alpha_t^2 / sigma_t^2), decreasing in t.
Schedule math is done in float64 and cast to the caller's dtype at the end.

Named schedules are never changed once committed, only added.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCHEDULES = ("cosine", "linear")
COSINE_OFFSET = 0.008             # Nichol & Dhariwal's s
LINEAR_B0, LINEAR_B1 = 0.1, 9.95  # -log(alpha_t^2) = B0 t + B1 t^2 (DDPM betas 1e-4..0.02)


@dataclass(frozen=True)
class Schedule:
    """A log-SNR schedule clipped to [log_snr_min, log_snr_max].

    The clip keeps a little signal at t = 1: with none left (alpha_1 ~ 0), an eps-prediction
    model's x0 estimate at the first sampling step is its error divided by alpha_1, and even
    unguided, unthresholded sampling then looks broken. DDPM's linear 1e-4..0.02 schedule ends
    at log-SNR ~ -10; we end there too by default.
    """

    name: str = "cosine"      # "cosine" (paper: base and 64->256 models) or "linear" (256->1024 model)
    log_snr_min: float = -10.0  # log-SNR at t = 1 (most noise)
    log_snr_max: float = 15.0   # log-SNR at t = 0 (least noise)

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {self.name!r}; expected one of {SCHEDULES}")
        if not self.log_snr_min < self.log_snr_max:
            raise ValueError("log_snr_min must be smaller than log_snr_max")

    def _raw_log_snr(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "cosine":
            # Nichol & Dhariwal cosine schedule in continuous time, offset s = 0.008:
            # alpha_t^2 ∝ cos^2((t + s) / (1 + s) * pi / 2).
            s = COSINE_OFFSET
            angle = (t + s) / (1 + s) * (math.pi / 2)
            return -2.0 * torch.log(torch.tan(angle).clamp_min(1e-20))
        # Continuous analogue of DDPM's linear betas 1e-4 .. 0.02 over 1000 steps: the VP SDE
        # with beta(t) = 0.1 + 19.9 t, so alpha_t^2 = exp(-(0.1 t + 9.95 t^2)) (Song et al. 2021, eq. 29).
        return -torch.log(torch.expm1(LINEAR_B0 * t + LINEAR_B1 * t * t).clamp_min(1e-30))

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """log(alpha_t^2 / sigma_t^2) for t in [0, 1], clipped to the schedule's range."""
        t64 = torch.as_tensor(t).to(torch.float64)
        out = self._raw_log_snr(t64).clamp(self.log_snr_min, self.log_snr_max)
        return out.to(t.dtype if torch.is_tensor(t) and t.is_floating_point() else torch.float32)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) with alpha^2 = sigmoid(log_snr), sigma^2 = sigmoid(-log_snr)."""
        t64 = torch.as_tensor(t).to(torch.float64)
        lam = self._raw_log_snr(t64).clamp(self.log_snr_min, self.log_snr_max)
        dtype = t.dtype if torch.is_tensor(t) and t.is_floating_point() else torch.float32
        return torch.sigmoid(lam).sqrt().to(dtype), torch.sigmoid(-lam).sqrt().to(dtype)

    def t_from_log_snr(self, log_snr: torch.Tensor) -> torch.Tensor:
        """The t in [0, 1] whose (unclipped) log-SNR is `log_snr`: the inverse of `log_snr` inside
        the clip range. Values beyond the clip map to the end where the clip starts."""
        lam = torch.as_tensor(log_snr).to(torch.float64).clamp(self.log_snr_min, self.log_snr_max)
        if self.name == "cosine":
            s = COSINE_OFFSET
            t = torch.atan(torch.exp(-lam / 2)) / (math.pi / 2) * (1 + s) - s
        else:  # B0 t + B1 t^2 = log(1 + exp(-lam)), the positive root
            q = F.softplus(-lam)
            t = (-LINEAR_B0 + torch.sqrt(LINEAR_B0**2 + 4 * LINEAR_B1 * q)) / (2 * LINEAR_B1)
        dtype = log_snr.dtype if torch.is_tensor(log_snr) and log_snr.is_floating_point() else torch.float32
        return t.clamp(0.0, 1.0).to(dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "log_snr_min": self.log_snr_min, "log_snr_max": self.log_snr_max}


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in the dtype and device of `like`."""
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Forward process z_t = alpha_t x0 + sigma_t eps (paper App. A)."""
    alpha, sigma = schedule.alpha_sigma(t)
    return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise


def x0_from_eps(z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x̂0 = (z_t - sigma_t eps) / alpha_t."""
    alpha, sigma = schedule.alpha_sigma(t)
    return (z - _bcast(sigma, z) * eps) / _bcast(alpha, z)


def eps_from_x0(z: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """eps = (z_t - alpha_t x0) / sigma_t."""
    alpha, sigma = schedule.alpha_sigma(t)
    return (z - _bcast(alpha, z) * x0) / _bcast(sigma, z)


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022)."""
    alpha, sigma = schedule.alpha_sigma(t)
    return _bcast(alpha, x0) * noise - _bcast(sigma, x0) * x0


def x0_from_v(z: torch.Tensor, v: torch.Tensor, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x̂0 = alpha_t z_t - sigma_t v."""
    alpha, sigma = schedule.alpha_sigma(t)
    return _bcast(alpha, z) * z - _bcast(sigma, z) * v


def x0_from_prediction(z, pred, t, schedule: Schedule, prediction: str = "eps") -> torch.Tensor:
    """x̂0 from a network output in either parameterisation."""
    if prediction == "eps":
        return x0_from_eps(z, pred, t, schedule)
    if prediction == "v":
        return x0_from_v(z, pred, t, schedule)
    raise ValueError(f"unknown prediction type {prediction!r}; expected 'eps' or 'v'")


def null_text(text: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unconditional branch: text embeddings zeroed (paper §4.1) and masked out.

    Masking as well as zeroing keeps the unconditional prediction independent of the prompt's
    length; the networks always attend to one learned null token, so the row stays valid.
    """
    return torch.zeros_like(text), torch.zeros_like(mask, dtype=torch.bool)


def drop_text(text, mask, drop_prob: float, generator: torch.Generator | None = None):
    """Replace each example's text by `null_text` with probability `drop_prob` (CFG training)."""
    if drop_prob <= 0:
        return text, mask
    keep = torch.rand(text.shape[0], generator=generator, device=text.device) >= drop_prob
    text = text * keep.view(-1, 1, 1).to(text.dtype)
    mask = mask & keep.view(-1, 1)
    return text, mask


def noise_augment(lowres: torch.Tensor, aug_t: torch.Tensor, schedule: Schedule,
                  noise: torch.Tensor) -> torch.Tensor:
    """Noise conditioning augmentation (paper §2.4): corrupt the low-res image with the forward
    process at level aug_t in [0, 1]; aug_t = 0 leaves it (almost) untouched."""
    aug = q_sample(lowres, aug_t, noise, schedule)
    # Level exactly 0 means "no augmentation": return the input bit for bit.
    zero = _bcast((aug_t == 0).to(lowres.dtype), lowres)
    return zero * lowres + (1 - zero) * aug


def training_loss(model, x0: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                  schedule: Schedule, *, generator: torch.Generator | None = None,
                  cond_drop_prob: float = 0.1, lowres: torch.Tensor | None = None,
                  aug_schedule: Schedule | None = None, prediction: str = "eps",
                  max_aug_level: float = 1.0, high_noise_fraction: float = 0.0,
                  high_noise_max_log_snr: float = -2.0) -> torch.Tensor:
    """Simple squared-error loss on eps (or v) at t ~ U(0, 1) (paper App. A, §4.1).

    With `high_noise_fraction` f > 0, each example instead draws, with probability f, its
    log-SNR uniformly from [schedule.log_snr_min, high_noise_max_log_snr] (the levels where a
    sample's layout is decided, which t ~ U(0, 1) visits a few percent of the time under the
    cosine schedule). Not in the paper; f = 0 draws exactly what it always did.

    Text is zeroed for `cond_drop_prob` of the examples. For super-resolution stages
    (`lowres` given) each example draws its own augmentation level aug_t ~ U(0, max_aug_level)
    (paper: U(0, 1)), and the model sees the augmented low-res image and aug_t (paper §2.4).
    Returns the mean loss over the batch.
    """
    b, dev = x0.shape[0], x0.device
    t = torch.rand(b, generator=generator, device=dev)
    if high_noise_fraction > 0:
        lo, hi = schedule.log_snr_min, high_noise_max_log_snr
        lam = lo + (hi - lo) * torch.rand(b, generator=generator, device=dev)
        pick = torch.rand(b, generator=generator, device=dev) < high_noise_fraction
        t = torch.where(pick, schedule.t_from_log_snr(lam).to(t.dtype), t)
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    z = q_sample(x0, t, noise, schedule)
    text, text_mask = drop_text(text, text_mask, cond_drop_prob, generator)
    aug_t = None
    if lowres is not None:
        aug_t = torch.rand(b, generator=generator, device=dev) * max_aug_level
        lr_noise = torch.randn(lowres.shape, generator=generator, device=dev, dtype=lowres.dtype)
        lowres = noise_augment(lowres, aug_t, aug_schedule or schedule, lr_noise)
    pred = model(z, t, text, text_mask, lowres=lowres, aug_t=aug_t)
    target = noise if prediction == "eps" else v_target(x0, noise, t, schedule)
    return F.mse_loss(pred.float(), target.float())
