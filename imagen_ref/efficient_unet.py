"""Efficient U-Net for the super-resolution stages (Imagen App. B.1, F.2, F.3; Figs. A.27-A.29).

Differences from the ADM U-Net (App. B.1):
1. More ResNet blocks at low resolution (parameters move to cheap resolutions).
2. Skip connections are scaled by 1/sqrt(2): a UBlock starts from (previous UBlock + DBlock skip) / sqrt(2).
3. Reversed resampling order: a DBlock downsamples (strided Conv3x3) *before* its ResNet blocks, a UBlock
   upsamples (strided transposed Conv3x3) *after* them, so the ResNet blocks run at the lower resolution.
The model is conditioned on the noise-augmentation level `aug_t` (§2.4) through a second time embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .configs import EfficientUNetConfig
from .layers import (Attention, AttentionPool, ResBlock, TextProjection, TimeEmbedding, ctx_key_mask,
                     group_norm, zero_)

SKIP_SCALE = 1.0 / math.sqrt(2.0)  # App. B.1: "scaling the skip connections by 1/sqrt(2)"


class _Stage(nn.Module):
    """CombineEmbs + ResNet blocks + optional attention: the body shared by DBlock and UBlock."""

    def __init__(self, ch: int, num_res: int, c: EfficientUNetConfig, attention: str):
        super().__init__()
        self.combine = nn.Linear(c.emb_dim, ch)  # CombineEmbs: conditioning embedding added per channel
        layers = []
        n_attn = num_res if c.attn_each_resblock else 1
        for i in range(num_res):
            layers.append(ResBlock(ch, ch, c.emb_dim, scale_shift=c.use_scale_shift_norm,
                                   dropout=c.dropout, groups=c.norm_groups))
            if attention != "none" and i >= num_res - n_attn:
                inner = c.attn_hidden_mult * ch
                layers.append(Attention(ch, c.ctx_dim, c.num_heads, inner // c.num_heads,
                                        self_attention=attention == "self_text", groups=c.norm_groups))
        self.layers = nn.ModuleList(layers)

    def forward(self, h: torch.Tensor, emb: torch.Tensor, ctx: torch.Tensor,
                ctx_mask: torch.Tensor) -> torch.Tensor:
        h = h + self.combine(emb)[:, :, None, None]
        for layer in self.layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h, ctx, ctx_mask)
        return h


class DBlock(nn.Module):
    """Strided Conv3x3 downsample, then CombineEmbs -> ResNet blocks -> optional attention (Fig. A.28)."""

    def __init__(self, in_ch: int, ch: int, num_res: int, c: EfficientUNetConfig, attention: str):
        super().__init__()
        self.down = nn.Conv2d(in_ch, ch, 3, stride=2, padding=1)
        self.stage = _Stage(ch, num_res, c, attention)

    def forward(self, h, emb, ctx, ctx_mask):
        return self.stage(self.down(h), emb, ctx, ctx_mask)


class UBlock(nn.Module):
    """(previous + skip) / sqrt(2), CombineEmbs -> ResNet blocks -> optional attention -> 2x upsample (Fig. A.29)."""

    def __init__(self, ch: int, out_ch: int, num_res: int, c: EfficientUNetConfig, attention: str):
        super().__init__()
        self.skip_scale = SKIP_SCALE
        self.stage = _Stage(ch, num_res, c, attention)
        self.up = nn.ConvTranspose2d(ch, out_ch, 3, stride=2, padding=1, output_padding=1)

    def forward(self, h, skip, emb, ctx, ctx_mask):
        if skip is not None:
            h = (h + skip) * self.skip_scale
        return self.up(self.stage(h, emb, ctx, ctx_mask))


class EfficientUNet(nn.Module):
    """Text- and low-res-conditioned Efficient U-Net predicting eps (or v); see `EfficientUNetConfig`."""

    def __init__(self, config: EfficientUNetConfig):
        super().__init__()
        self.config = c = config
        chs, E = c.channels, c.emb_dim
        n = len(chs)
        if not (len(c.num_res_blocks) == len(c.block_attention) == n):
            raise ValueError("channels, num_res_blocks and block_attention need one entry per block")
        bad = set(c.block_attention) - {"none", "self_text", "cross"}
        if bad:
            raise ValueError(f"block_attention entries must be 'none', 'self_text' or 'cross', got {sorted(bad)}")
        self.time_embed = TimeEmbedding(chs[0], E)
        self.aug_embed = TimeEmbedding(chs[0], E)  # noise-augmentation level, embedded like t (§2.4)
        self.text_proj = TextProjection(c.text_dim, c.ctx_dim)
        self.text_pool = AttentionPool(c.ctx_dim, E, max(1, c.ctx_dim // c.pool_head_dim))
        self.input_conv = nn.Conv2d(2 * c.in_channels, chs[0], 3, padding=1)  # [x, upsampled lowres]
        self.down = nn.ModuleList(
            DBlock(chs[max(i - 1, 0)], chs[i], c.num_res_blocks[i], c, c.block_attention[i])
            for i in range(n))
        self.up = nn.ModuleList(  # up[0] is the deepest UBlock
            UBlock(chs[i], chs[max(i - 1, 0)], c.num_res_blocks[i], c, c.block_attention[i])
            for i in reversed(range(n)))
        self.skip_scale = SKIP_SCALE  # the stem skip joins the last upsample output
        self.out = nn.Sequential(group_norm(chs[0], c.norm_groups), nn.SiLU(),
                                 zero_(nn.Conv2d(chs[0], c.out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                lowres: torch.Tensor | None = None, aug_t: torch.Tensor | None = None) -> torch.Tensor:
        """Predict eps (or v) for noisy high-res images given the (noise-augmented) low-res image.

        Args:
            x: (B, C_in, H, W) noisy images z_t; H and W divisible by 2**len(channels).
            t: (B,) continuous diffusion times in [0, 1] (a 0-dim tensor is broadcast).
            text: (B, L, text_dim) text-encoder embeddings.
            text_mask: (B, L) bool, True = real token; all-False rows are legal (unconditional).
            lowres: (B, C_in, h, w) low-res conditioning image, already noise-augmented; upsampled here.
            aug_t: (B,) noise-augmentation level in [0, 1]; None means 0 (no augmentation).
        Returns:
            (B, C_out, H, W) prediction.
        """
        if lowres is None:
            raise ValueError("EfficientUNet is a super-resolution stage: pass lowres=(B, C, h, w)")
        B, _, H, W = x.shape
        if H % 2 ** len(self.down) or W % 2 ** len(self.down):
            raise ValueError(f"image size {H}x{W} must be divisible by {2 ** len(self.down)}")
        t = t.expand(B) if t.ndim == 0 else t
        aug_t = t.new_zeros(B) if aug_t is None else (aug_t.expand(B) if aug_t.ndim == 0 else aug_t)
        lowres = F.interpolate(lowres, size=(H, W), mode="bilinear", align_corners=False, antialias=False)
        ctx = self.text_proj(text)  # (B, L, ctx_dim)
        ctx_mask = ctx_key_mask(text_mask)  # (B, 1, 1, 1+L)
        emb = self.time_embed(t) + self.aug_embed(aug_t) + self.text_pool(ctx, ctx_mask)
        emb = F.silu(emb)  # (B, E)
        h = stem = self.input_conv(torch.cat([x, lowres.to(x.dtype)], dim=1))
        skips = []
        for block in self.down:
            h = block(h, emb, ctx, ctx_mask)
            skips.append(h)
        skips[-1] = None  # the deepest UBlock starts from the deepest DBlock's output itself
        for block in self.up:
            h = block(h, skips.pop(), emb, ctx, ctx_mask)
        return self.out((h + stem) * self.skip_scale)
