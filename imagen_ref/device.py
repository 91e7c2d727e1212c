"""The one device helper: pick a device, an autocast context, per-image generators."""
from __future__ import annotations

import contextlib
import hashlib

import torch

PRECISIONS = ("fp32", "bf16")


def get_device(name: str | None = None) -> torch.device:
    """`name` if given ('cpu', 'cuda', 'cuda:1'), else CUDA when available, else CPU."""
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str = "fp32"):
    """bf16 autocast on CUDA or CPU when asked; a no-op context for fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def derive_seed(*parts) -> int:
    """A stable 63-bit seed from any parts (base seed, prompt id, sample index, stage...)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") & ((1 << 63) - 1)


def make_generators(seeds, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded torch.Generator per image."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def randn_per_image(shape, generators: list[torch.Generator], device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` (B, ...) where row i comes from generators[i] alone,
    so an image never depends on the batch it was drawn in."""
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=torch.float32)
            for g in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)
