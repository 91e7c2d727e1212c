"""Base text-to-image U-Net (Imagen App. F.1): the Improved-DDPM / ADM U-Net with text conditioning.

Text enters twice (Imagen §2.5): an attention-pooled text vector is added to the time embedding, and the
text sequence is concatenated to the keys/values of every self-attention layer (at `attn_resolutions`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configs import UNetConfig
from .layers import (Attention, AttentionPool, ResBlock, TextProjection, TextTransformer,
                     TimeEmbedding, ctx_key_mask, group_norm, zero_)


def _run(layers: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, ctx: torch.Tensor,
         ctx_mask: torch.Tensor) -> torch.Tensor:
    """Apply a list of ResBlock / Attention layers, routing each the inputs it needs."""
    for layer in layers:
        if isinstance(layer, ResBlock):
            h = layer(h, emb)
        elif isinstance(layer, Attention):
            h = layer(h, ctx, ctx_mask)
        else:  # plain resampling conv
            h = layer(h)
    return h


class BaseUNet(nn.Module):
    """ADM-style U-Net predicting eps (or v) for the 64x64 base stage; see `UNetConfig`."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        mc, E = c.model_channels, c.emb_dim
        self.time_embed = TimeEmbedding(mc, E)
        self.text_proj = TextProjection(c.text_dim, c.ctx_dim)
        if c.text_attention not in ("self_text", "cross"):
            raise ValueError(f"text_attention must be 'self_text' or 'cross', got {c.text_attention!r}")
        self.text_layers = (TextTransformer(c.ctx_dim, c.text_layers, max(1, c.ctx_dim // c.pool_head_dim),
                                            pos_std=c.text_pos_std)
                            if c.text_layers else None)
        self.text_pool = AttentionPool(c.ctx_dim, E, max(1, c.ctx_dim // c.pool_head_dim))
        self.input_conv = nn.Conv2d(c.in_channels, mc, 3, padding=1)
        self.pos_emb = (nn.Parameter(torch.randn(1, mc, c.image_size, c.image_size) * 0.02)
                        if c.pos_emb else None)

        def res(i, o, resample=None):
            return ResBlock(i, o, E, scale_shift=c.use_scale_shift_norm, resample=resample,
                            dropout=c.dropout, groups=c.norm_groups)

        def attn(ch, size):
            return Attention(ch, c.ctx_dim, ch // c.head_dim, c.head_dim, groups=c.norm_groups,
                             self_attention=c.text_attention == "self_text",
                             query_pos=(size, size) if c.query_pos else None)

        # Encoder: every entry of self.down produces one skip (ADM `input_blocks`).
        self.down = nn.ModuleList()
        skip_chs, ch, res_ = [mc], mc, c.image_size
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if res_ in c.attn_resolutions:
                    layers.append(attn(ch, res_))
                self.down.append(nn.ModuleList(layers))
                skip_chs.append(ch)
            if level < len(c.channel_mult) - 1:
                down = res(ch, ch, "down") if c.resblock_updown else nn.Conv2d(ch, ch, 3, 2, 1)
                self.down.append(nn.ModuleList([down]))
                skip_chs.append(ch)
                res_ //= 2
        self.middle = nn.ModuleList([res(ch, ch), attn(ch, res_), res(ch, ch)])

        # Decoder: num_res_blocks + 1 blocks per level, each consuming one skip (ADM `output_blocks`).
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skip_chs.pop(), mult * mc)]
                ch = mult * mc
                if res_ in c.attn_resolutions:
                    layers.append(attn(ch, res_))
                if level > 0 and i == c.num_res_blocks:
                    layers.append(res(ch, ch, "up") if c.resblock_updown else _ConvUpsample(ch))
                    res_ *= 2
                self.up.append(nn.ModuleList(layers))
        # Text cross-attention at full resolution after the last ResBlock (off in Imagen). A small
        # U-Net whose text reached the layout only through low-resolution attention and the
        # ResBlocks after it drew "A left of B" with A on either side (calibration_world.relation_probe);
        # with this layer it learned the order, with two heads here (one head: not in 700 steps).
        self.out_attn = nn.ModuleList(
            Attention(ch, c.ctx_dim, max(2, ch // c.head_dim), c.head_dim, groups=c.norm_groups,
                      self_attention=False, query_pos=(res_, res_) if c.query_pos else None)
            for _ in range(c.out_text_attention))
        self.out = nn.Sequential(group_norm(ch, c.norm_groups), nn.SiLU(),
                                 zero_(nn.Conv2d(ch, c.out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                lowres: torch.Tensor | None = None, aug_t: torch.Tensor | None = None) -> torch.Tensor:
        """Predict eps (or v) for noisy images.

        Args:
            x: (B, C_in, H, W) noisy images z_t.
            t: (B,) continuous diffusion times in [0, 1] (a 0-dim tensor is broadcast).
            text: (B, L, text_dim) text-encoder embeddings.
            text_mask: (B, L) bool, True = real token; all-False rows are legal (unconditional).
            lowres, aug_t: must be None (super-resolution stages only).
        Returns:
            (B, C_out, H, W) prediction.
        """
        if lowres is not None or aug_t is not None:
            raise ValueError("BaseUNet is the base stage: lowres and aug_t must be None")
        factor = 2 ** (len(self.config.channel_mult) - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {factor}")
        if self.pos_emb is not None and tuple(x.shape[-2:]) != tuple(self.pos_emb.shape[-2:]):
            raise ValueError(f"image size {tuple(x.shape[-2:])}: this model's position embedding "
                             f"is {tuple(self.pos_emb.shape[-2:])}")
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        ctx = self.text_proj(text)  # (B, L, ctx_dim)
        ctx_mask = ctx_key_mask(text_mask)  # (B, 1, 1, 1+L)
        if self.text_layers is not None:
            ctx = self.text_layers(ctx, ctx_mask)
        emb = F.silu(self.time_embed(t) + self.text_pool(ctx, ctx_mask))  # (B, E)
        h = self.input_conv(x)
        if self.pos_emb is not None:
            h = h + self.pos_emb.to(h.dtype)
        skips = [h]
        for layers in self.down:
            h = _run(layers, h, emb, ctx, ctx_mask)
            skips.append(h)
        h = _run(self.middle, h, emb, ctx, ctx_mask)
        for layers in self.up:
            h = _run(layers, torch.cat([h, skips.pop()], dim=1), emb, ctx, ctx_mask)
        h = _run(self.out_attn, h, emb, ctx, ctx_mask)
        return self.out(h)


class _ConvUpsample(nn.Module):
    """Nearest 2x upsample + Conv3x3 (ADM `Upsample`), used when `resblock_updown` is off."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def resize_position_tables(state: dict, model: nn.Module) -> dict:
    """`state` with its learned position tables resampled (bilinear) to `model`'s grids.

    For starting a BaseUNet from weights trained at another resolution (`configs.at_resolution`):
    `pos_emb` (1, C, H, W) and each attention's `query_pos` (1, heads, H*W, head_dim) are the
    only weights whose shapes depend on the image size. Other entries pass through unchanged.
    """
    target = model.state_dict()
    out = dict(state)
    for name, saved in state.items():
        want = target.get(name)
        if want is None or want.shape == saved.shape:
            continue
        if name == "pos_emb" and saved.ndim == 4:
            out[name] = F.interpolate(saved.float(), size=want.shape[-2:], mode="bilinear",
                                      align_corners=False).to(saved.dtype)
        elif name.endswith(".query_pos") and saved.ndim == 4 and saved.shape[:2] == want.shape[:2]:
            _, heads, n, d = saved.shape
            side, new_side = math.isqrt(n), math.isqrt(want.shape[2])
            if side * side != n or new_side * new_side != want.shape[2]:
                continue  # not square grids: left for the shape check to report
            grid = saved.float().reshape(1, heads, side, side, d).permute(0, 1, 4, 2, 3)
            grid = F.interpolate(grid.reshape(1, heads * d, side, side), size=(new_side, new_side),
                                 mode="bilinear", align_corners=False)
            out[name] = (grid.reshape(1, heads, d, new_side, new_side).permute(0, 1, 3, 4, 2)
                         .reshape(1, heads, new_side * new_side, d).to(saved.dtype))
    return out
