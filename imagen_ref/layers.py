"""Layers shared by the base U-Net and the Efficient U-Net (Imagen, Saharia et al. 2022, §2.5, App. B.1, F).

Conventions used throughout:
- `emb` passed to blocks is the *activated* conditioning embedding, SiLU(time + aug + pooled text), computed
  once per forward pass (ADM applies SiLU before every embedding projection; doing it once is equivalent).
- Text arrives already projected to `ctx_dim` by `TextProjection`. Every text consumer prepends ONE learned
  null key/value that is always attended, so a fully masked text row (the unconditional branch of
  classifier-free guidance) is legal and never yields NaN.
- `ctx_mask` is the key mask for [null, text tokens]: bool (B, 1, 1, 1 + L), True = attend.
- All attention goes through `F.scaled_dot_product_attention` with a boolean mask.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def zero_(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place (residual branches start as identity, as in ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `groups` that divides `channels`."""
    return nn.GroupNorm(math.gcd(channels, groups), channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of 1000 * t in float32 (Vaswani et al. 2017 / DDPM), for continuous t in [0, 1].

    Args:
        t: (B,) diffusion times.
        dim: embedding width.
    Returns:
        (B, dim) float32 embedding, [cos | sin].
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = (1000.0 * t.float())[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def ctx_key_mask(text_mask: torch.Tensor) -> torch.Tensor:
    """Key mask for [null, text]: (B, L) bool -> (B, 1, 1, 1 + L) bool, null always True."""
    return F.pad(text_mask.bool(), (1, 0), value=True)[:, None, None, :]


class TimeEmbedding(nn.Module):
    """Sinusoidal features of 1000*t followed by a 2-layer MLP (ADM `time_embed`)."""

    def __init__(self, freq_dim: int, emb_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))  # (B, E)


class TextProjection(nn.Module):
    """LayerNorm + Linear mapping encoder embeddings (B, L, text_dim) to the U-Net's text width once."""

    def __init__(self, text_dim: int, ctx_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(text_dim)
        self.proj = nn.Linear(text_dim, ctx_dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(text))  # (B, L, ctx_dim)


class TextTransformer(nn.Module):
    """Trainable pre-norm transformer layers over the projected text, with learned token positions.

    Not in Imagen, whose frozen T5-XXL embeddings already say which words go together; an option
    for small frozen encoders: the pooled MiniLM-L6 vectors of "A left of B" and "B left of A" are
    nearly equal, and these layers let a tiny model learn which object a token belongs to and
    where in the caption it stands. Padding is masked; a fully masked row (the unconditional
    branch) attends only to a learned null key, so it never yields NaN. Residual branches start
    at zero: an untrained stack is the identity.
    """

    def __init__(self, dim: int, layers: int, heads: int, max_len: int = 256, mlp_mult: int = 2,
                 pos_std: float = 0.02):
        super().__init__()
        if dim % heads:
            raise ValueError(f"text width {dim} is not divisible by {heads} heads")
        self.heads, self.max_len = heads, max_len
        self.pos = nn.Parameter(torch.randn(1, max_len, dim) * pos_std)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            block = nn.ModuleDict({
                "norm1": nn.LayerNorm(dim), "qkv": nn.Linear(dim, 3 * dim),
                "out": zero_(nn.Linear(dim, dim)), "norm2": nn.LayerNorm(dim),
                "mlp": nn.Sequential(nn.Linear(dim, mlp_mult * dim), nn.GELU(),
                                     zero_(nn.Linear(mlp_mult * dim, dim)))})
            block.null_kv = nn.Parameter(torch.randn(2, 1, heads, 1, dim // heads) * 0.02)
            self.blocks.append(block)

    def forward(self, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, dim) text and its `ctx_key_mask` (B, 1, 1, 1 + L) -> (B, L, dim)."""
        B, L, D = ctx.shape
        if L > self.max_len:
            raise ValueError(f"{L} text tokens, but the text layers know {self.max_len} positions")
        n = self.heads
        h = ctx + self.pos[:, :L].to(ctx.dtype)
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["norm1"](h)).unflatten(-1, (3, n, D // n)).permute(2, 0, 3, 1, 4)
            null = blk.null_kv.to(h.dtype).expand(2, B, n, 1, D // n)
            k, v = torch.cat([null[0], k], dim=2), torch.cat([null[1], v], dim=2)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx_mask)  # (B, n, L, d)
            h = h + blk["out"](a.transpose(1, 2).flatten(2))
            h = h + blk["mlp"](blk["norm2"](h))
        return h


class ResBlock(nn.Module):
    """ADM residual block: GN-SiLU-Conv3x3, embedding via scale-shift norm, GN-SiLU-Conv3x3, + shortcut.

    `resample="up"|"down"` gives the BigGAN variant (Brock et al. 2019; ADM `resblock_updown`):
    nearest-upsample / average-pool both branches between the first norm and the first conv.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, scale_shift: bool = True,
                 resample: str | None = None, dropout: float = 0.0, groups: int = 32):
        super().__init__()
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        self.resample = resample
        self.scale_shift = scale_shift
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.shortcut = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(x))
        h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)
        e = self.emb_proj(emb)[:, :, None, None]  # (B, 2C or C, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)  # AdaGN (ADM §3)
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.shortcut(x) + h


class Attention(nn.Module):
    """Multi-head attention on image tokens whose keys/values also hold [null, text] tokens.

    `self_attention=True`: keys/values = [null, text, image] (Imagen §2.5: text concatenated to the
    key-value pairs of each self-attention layer). `self_attention=False`: text cross-attention only,
    keys/values = [null, text] (the 256->1024 model, App. F.3). Residual output, pre-GroupNorm.

    `query_pos=(H, W)` (not in Imagen; an option for small models) adds a learned position, one per
    pixel and head, to the queries, so this layer can fetch different words for different places
    ("a red circle to the left of a blue square": red on the left) without waiting for the
    convolutions below it to make position readable. The layer then only takes H x W inputs.
    """

    def __init__(self, channels: int, ctx_dim: int, heads: int, head_dim: int, *,
                 self_attention: bool = True, groups: int = 32,
                 query_pos: tuple[int, int] | None = None):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.self_attention = self_attention
        self.query_hw = tuple(query_pos) if query_pos is not None else None
        self.query_pos = (nn.Parameter(torch.randn(1, heads, query_pos[0] * query_pos[1], head_dim))
                          if query_pos is not None else None)
        inner = heads * head_dim
        self.norm = group_norm(channels, groups)
        if self_attention:
            self.to_qkv = nn.Linear(channels, 3 * inner)  # q, image k, image v
        else:
            self.to_q = nn.Linear(channels, inner)
        self.ctx_norm = nn.LayerNorm(ctx_dim)
        self.to_ctx_kv = nn.Linear(ctx_dim, 2 * inner)
        self.null_kv = nn.Parameter(torch.randn(2, 1, heads, 1, head_dim) * head_dim**-0.5)
        self.to_out = zero_(nn.Linear(inner, channels))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        n, d = self.heads, self.head_dim
        if self.query_hw is not None and (H, W) != self.query_hw:
            raise ValueError(f"attention input {H}x{W}: this layer's query positions are "
                             f"{self.query_hw[0]}x{self.query_hw[1]}")
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        ctx_kv = self.to_ctx_kv(self.ctx_norm(ctx))  # (B, L, 2*n*d)
        ctx_kv = ctx_kv.unflatten(-1, (2, n, d)).permute(2, 0, 3, 1, 4)  # (2, B, n, L, d)
        null_kv = self.null_kv.to(ctx_kv.dtype).expand(2, B, n, 1, d)
        if self.self_attention:
            q, k, v = self.to_qkv(tokens).unflatten(-1, (3, n, d)).permute(2, 0, 3, 1, 4)  # (B, n, HW, d)
            k = torch.cat([null_kv[0], ctx_kv[0], k], dim=2)  # (B, n, 1+L+HW, d)
            v = torch.cat([null_kv[1], ctx_kv[1], v], dim=2)
            mask = F.pad(ctx_mask, (0, H * W), value=True)  # (B, 1, 1, 1+L+HW)
        else:
            q = self.to_q(tokens).unflatten(-1, (n, d)).transpose(1, 2)  # (B, n, HW, d)
            k = torch.cat([null_kv[0], ctx_kv[0]], dim=2)  # (B, n, 1+L, d)
            v = torch.cat([null_kv[1], ctx_kv[1]], dim=2)
            mask = ctx_mask
        if self.query_pos is not None:
            q = q + self.query_pos.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, n, HW, d)
        out = self.to_out(out.transpose(1, 2).flatten(2))  # (B, HW, C)
        return x + out.transpose(1, 2).unflatten(2, (H, W))  # (B, C, H, W)


class AttentionPool(nn.Module):
    """Attention pooling of the text sequence into one vector (Imagen §2.5, `feature_pooling_type="attention"`).

    A learned query attends over [null, text] (LayerNorm on the text); the result is projected to the
    conditioning width and added to the time embedding.
    """

    def __init__(self, ctx_dim: int, out_dim: int, heads: int):
        super().__init__()
        if ctx_dim % heads:
            raise ValueError(f"ctx_dim {ctx_dim} is not divisible by pooling heads {heads}")
        self.heads, self.head_dim = heads, ctx_dim // heads
        self.norm = nn.LayerNorm(ctx_dim)
        self.query = nn.Parameter(torch.randn(1, heads, 1, self.head_dim) * self.head_dim**-0.5)
        self.to_kv = nn.Linear(ctx_dim, 2 * ctx_dim)
        self.null_kv = nn.Parameter(torch.randn(2, 1, heads, 1, self.head_dim) * self.head_dim**-0.5)
        self.to_out = nn.Linear(ctx_dim, out_dim)

    def forward(self, ctx: torch.Tensor, ctx_mask: torch.Tensor) -> torch.Tensor:
        B = ctx.shape[0]
        n, d = self.heads, self.head_dim
        kv = self.to_kv(self.norm(ctx)).unflatten(-1, (2, n, d)).permute(2, 0, 3, 1, 4)  # (2, B, n, L, d)
        kv = torch.cat([self.null_kv.to(kv.dtype).expand(2, B, n, 1, d), kv], dim=3)  # (2, B, n, 1+L, d)
        q = self.query.to(kv.dtype).expand(B, n, 1, d)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=ctx_mask)  # (B, n, 1, d)
        return self.to_out(out.flatten(1))  # (B, out_dim)
