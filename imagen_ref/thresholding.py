"""Static and dynamic thresholding of the x0 prediction (paper §2.3, Fig. A.31).

A thresholding mode is a string, and that string is what runs and reports record:

- ``none``            — leave x̂0 as predicted;
- ``static``          — clip x̂0 to [-1, 1] elementwise;
- ``dynamic:P``       — s = the P-quantile of |x̂0| per sample over all non-batch dims,
                        s = max(s, 1), x̂0 = clip(x̂0, -s, s) / s (the paper: P = 0.995);
- ``dynamic:P:CAP``   — as above and also s = min(s, CAP), the semantics of DeepFloyd IF and
                        diffusers' ``sample_max_value`` (``dynamic:P:1`` is static clipping).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ThresholdMode:
    """A parsed thresholding mode."""

    kind: str                 # "none" | "static" | "dynamic"
    percentile: float = 0.0   # quantile P in (0, 1] for dynamic thresholding
    cap: float = math.inf     # upper bound on s (DeepFloyd IF / diffusers); inf = the paper's

    def __str__(self) -> str:
        if self.kind != "dynamic":
            return self.kind
        text = f"dynamic:{self.percentile:g}"
        return text if math.isinf(self.cap) else f"{text}:{self.cap:g}"


def parse_mode(mode: str | ThresholdMode) -> ThresholdMode:
    """Parse a mode string; raise ValueError naming the expected forms on anything else."""
    if isinstance(mode, ThresholdMode):
        return mode
    text = str(mode).strip().lower()
    if text in ("none", "static"):
        return ThresholdMode(text)
    parts = text.split(":")
    if parts[0] == "dynamic" and len(parts) in (2, 3):
        try:
            p = float(parts[1])
            cap = float(parts[2]) if len(parts) == 3 else math.inf
        except ValueError:
            p, cap = math.nan, math.nan
        if 0 < p <= 1 and cap >= 1:
            return ThresholdMode("dynamic", p, cap)
    raise ValueError(
        f"bad thresholding mode {mode!r}: expected 'none', 'static', 'dynamic:P' or "
        "'dynamic:P:CAP' with 0 < P <= 1 and CAP >= 1 (e.g. 'dynamic:0.995')")


def _row_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(flat, q, dim=1) with linear interpolation, for rows of any length.

    torch.quantile refuses inputs above 2**24 elements (a batch of 1024² images), so the two
    order statistics around position q * (n - 1) are taken with kthvalue instead.
    """
    n = flat.shape[1]
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo = flat.kthvalue(lo + 1, dim=1).values
    if hi == lo:
        return v_lo
    v_hi = flat.kthvalue(hi + 1, dim=1).values
    return v_lo + (v_hi - v_lo) * (pos - lo)


def threshold(x0: torch.Tensor, mode: str | ThresholdMode) -> torch.Tensor:
    """Apply a thresholding mode to a batch of x0 predictions (B, ...)."""
    m = parse_mode(mode)
    if m.kind == "none":
        return x0
    if m.kind == "static":
        return x0.clamp(-1.0, 1.0)
    # quantile needs float32/64 (not implemented for half on CPU); compute there, cast back.
    flat = x0.reshape(x0.shape[0], -1).abs()
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    s = _row_quantile(flat, m.percentile)  # (B,)
    s = s.clamp(min=1.0, max=m.cap).to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s
