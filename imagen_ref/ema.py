"""Exponential moving average of model weights, the copy that checkpoints ship."""
from __future__ import annotations

import copy

import torch


class EMA:
    """Keeps `model`'s EMA in a frozen deep copy.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates (the `num_updates`
    rule of TensorFlow's ExponentialMovingAverage), so short runs still get a useful average
    instead of weights stuck near the initialisation (at 0.9999 that takes ~10^4 steps).
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, num_updates: int) -> float:
        """The decay used for update number `num_updates` (0-based)."""
        return min(self.decay, (1.0 + num_updates) / (10.0 + num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, num_updates: int) -> None:
        """ema <- d * ema + (1 - d) * model for parameters; buffers are copied."""
        weight = 1.0 - self.decay_at(num_updates)
        live = dict(model.named_parameters())
        for name, p in self.model.named_parameters():
            p.lerp_(live[name].detach().to(p.dtype), weight)
        live_buffers = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(live_buffers[name])
