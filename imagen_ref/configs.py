"""U-Net configurations of the Imagen cascade (App. F.1-F.3) and small CPU-trainable variants.

Paper parameter counts (§4.1): base 2B, 64->256 600M, 256->1024 400M; `count_params` gives ours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class UNetConfig:
    """Base U-Net (ADM-style, App. F.1)."""

    kind: str = "unet"  # config type tag for config_from_dict
    image_size: int = 64  # output resolution (square)
    lowres_size: int | None = None  # base stage: no low-res conditioning
    in_channels: int = 3  # image channels in
    out_channels: int = 3  # predicted channels out
    model_channels: int = 512  # paper `embed_dim`: channels at full resolution
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)  # channels per level = mult * model_channels
    num_res_blocks: int = 3  # ResBlocks per level in the encoder (decoder uses one more)
    attn_resolutions: tuple[int, ...] = (32, 16, 8)  # self-attn (+ text in k/v) at these resolutions
    head_dim: int = 64  # paper `per_head_channels`; heads = channels // head_dim
    emb_dim: int = 512  # conditioning (time + pooled text) width; see the note on CONFIGS
    text_dim: int = 4096  # text-encoder width (T5-XXL 4096, MiniLM-L6 384)
    ctx_dim: int = 1024  # width the text sequence is projected to once, before pooling/attention
    pool_head_dim: int = 64  # head width of the text attention pooling
    resblock_updown: bool = True  # BigGAN-style ResBlock resampling (`res_block_type="biggan"`)
    use_scale_shift_norm: bool = True  # AdaGN conditioning in ResBlocks
    dropout: float = 0.0  # paper: 0
    norm_groups: int = 32  # GroupNorm groups (gcd with channels)
    prediction: str = "eps"  # "eps" (Imagen) | "v"
    # Options for small models, off in the paper's configs (see layers.TextTransformer):
    text_layers: int = 0  # trainable transformer layers over the projected text (Imagen: 0)
    pos_emb: bool = False  # learned absolute position embedding added after the input conv
    text_pos_std: float = 0.02  # init std of the text layers' token positions (0.5: subject/object apart)
    text_attention: str = "self_text"  # "self_text": text in self-attention k/v (Imagen) | "cross": text only
    query_pos: bool = False  # learned per-layer position added to every attention layer's queries
    out_text_attention: int = 0  # text cross-attention layers at full resolution, before the output


@dataclass
class EfficientUNetConfig:
    """Efficient U-Net for super-resolution (App. B.1, F.2, F.3)."""

    kind: str = "efficient_unet"  # config type tag for config_from_dict
    image_size: int = 256  # output resolution (square)
    lowres_size: int | None = 64  # conditioning image resolution
    in_channels: int = 3  # image channels (the input conv sees 2 * in_channels: x and upsampled lowres)
    out_channels: int = 3  # predicted channels out
    channels: tuple[int, ...] = (128, 256, 512, 1024)  # per-block channels; each block has stride 2
    num_res_blocks: tuple[int, ...] = (2, 4, 8, 8)  # ResNet blocks per DBlock (and per UBlock)
    block_attention: tuple[str, ...] = ("none", "none", "none", "self_text")  # "none" | "self_text" | "cross"
    attn_each_resblock: bool = True  # attention after every ResBlock of a block (else once per block)
    num_heads: int = 8  # attention heads (App. F.2)
    attn_hidden_mult: int = 2  # attention hidden width = mult * channels (Fig. A.28)
    emb_dim: int = 512  # conditioning (time + aug + pooled text) width; 4 * channels[0]
    text_dim: int = 4096  # text-encoder width (T5-XXL 4096, MiniLM-L6 384)
    ctx_dim: int = 1024  # width the text sequence is projected to once, before pooling/attention
    pool_head_dim: int = 64  # head width of the text attention pooling
    use_scale_shift_norm: bool = True  # AdaGN conditioning in ResBlocks
    dropout: float = 0.0  # paper: 0
    norm_groups: int = 32  # GroupNorm groups (gcd with channels)
    prediction: str = "eps"  # "eps" (Imagen) | "v"


Config = UNetConfig | EfficientUNetConfig
_KINDS = {"unet": UNetConfig, "efficient_unet": EfficientUNetConfig}

# Interpretations (the paper prints structure, not every width; counts from `count_params`, text_dim=4096):
# - Base (App. F.1): `embed_dim=512` is read as model_channels (channels at 64x64; mult [1,2,3,4] then gives
#   512/1024/1536/2048). The conditioning-embedding width is also 512: ADM's 4 * model_channels = 2048
#   would add ~150M of scale-shift projections (2.18B instead of 2.02B; paper: 2B).
# - Text is projected once to ctx_dim=1024 (LayerNorm + Linear from T5's 4096); every attention / pooling
#   layer then applies its own LayerNorm and k/v projection (§2.5).
# - SR (App. F.2/F.3): the strided conv + ResNet trunk of the printed 4-block table alone is ~401M. Where the
#   attention sits inside block 4 is not printed. 64->256 (600M): self-attention with text in k/v after
#   every ResNet block of block 4 (the ADM convention `attn_resolutions` also uses; 16 layers x ~12.6M,
#   hidden 2*channels) -> 640M. 256->1024 (400M, "no self-attention layers"): one explicit text
#   cross-attention layer per D/U block, as Figs. A.28/A.29 draw it -> 455M; cross-attention after every
#   ResNet block would give ~570M. Conditioning width 512 = 4 * channels[0] (ADM rule).
# - Tiny configs keep the structures (ADM base; 4-block Efficient U-Net, attention only in the lowest
#   block) at ~0.2-0.4 GFLOP per 32x32 / 64x64 sample forward, to train on 2 CPU cores in minutes.
CONFIGS: dict[str, Config] = {
    "imagen-base-64": UNetConfig(),
    "imagen-sr-256": EfficientUNetConfig(),
    "imagen-sr-1024": EfficientUNetConfig(
        image_size=1024, lowres_size=256,
        block_attention=("none", "none", "none", "cross"), attn_each_resblock=False),
    "tiny-base": UNetConfig(
        image_size=32, model_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1,
        attn_resolutions=(16, 8), head_dim=32, emb_dim=128, text_dim=384, ctx_dim=128),
    # v-prediction: a small eps-prediction SR stage learns to use its low-res input only slowly
    # (on simple scenes its eps loss barely depends on it, measured in the demo); v weights the
    # x0 error at high noise, where the low-res image is what decides the layout.
    "tiny-sr": EfficientUNetConfig(
        image_size=64, lowres_size=32, channels=(16, 32, 64, 128), num_res_blocks=(1, 1, 2, 2),
        emb_dim=64, text_dim=384, ctx_dim=128, prediction="v"),
    # The calibration world's bundled cascade (calibration_world/recipes/cascade.json), trained on
    # 2 CPU cores. The pooled MiniLM vectors of "A left of B" and "B left of A" are nearly equal
    # (notes/calibration_feasibility.md), and a plain ADM U-Net with text attention at 16x16 and
    # 8x8 drew relations at chance order there. Two trainable text layers with token positions
    # let the keys say which object comes first, and a learned position embedding lets the
    # queries say where a pixel is. Text attention at 32x32 as well costs 1.7x the training
    # time per image (2 CPU cores), which the 60-minute budget cannot pay. v-prediction keeps
    # the first unthresholded DDIM step sound (no 1/alpha_t amplification of the network's
    # error where almost no signal is left).
    "calworld-base-32": UNetConfig(
        image_size=32, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attn_resolutions=(16, 8), head_dim=32, emb_dim=128, text_dim=384, ctx_dim=128,
        prediction="v", text_layers=2, pos_emb=True),
    # calworld-base-32 with the text options that calibration_world.relation_probe found. On the
    # probe, calworld-base-32 and every variant lacking either learned query positions in every
    # attention layer or one text cross-attention (two heads) at full resolution after the last
    # ResBlock stayed at chance order for as long as they ran (600-1,600 steps, one run each);
    # this config learned the order in 450-1,000 steps (4 runs). Attention is text-only (image
    # keys dilute the dozen text keys, which halved the plateau of a smaller net) and token
    # positions start at std 0.5 (subject and object apart). It trains 14% faster per image than
    # calworld-base-32 on 2 CPU cores. Trained by the base recipe (40 minutes, or 60), it still
    # drew relations at chance order: passing the probe did not carry over to diffusion training.
    # The bundled cascade's base: a 16x16 warm-up on relation scenes at high noise first (the
    # recipe's "warmup"), after which 92% of swapped-caption pairs came out in the right order.
    "calworld-base-32-xattn": UNetConfig(
        image_size=32, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
        attn_resolutions=(16, 8), head_dim=32, emb_dim=128, text_dim=384, ctx_dim=128,
        prediction="v", text_layers=2, pos_emb=True, text_pos_std=0.5, text_attention="cross",
        query_pos=True, out_text_attention=1),
    "calworld-sr-64": EfficientUNetConfig(
        image_size=64, lowres_size=32, channels=(16, 32, 64, 128), num_res_blocks=(1, 1, 2, 2),
        emb_dim=64, text_dim=384, ctx_dim=128, prediction="v"),
}


def get_config(name: str, **overrides) -> Config:
    """A copy of a named config with fields overridden.

    Args:
        name: a key of CONFIGS.
        **overrides: field values to replace.
    Returns:
        A new config dataclass.
    """
    if name not in CONFIGS:
        raise KeyError(f"unknown config {name!r}; choose one of {sorted(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name], **overrides)


def at_resolution(config: Config, size: int) -> Config:
    """A base config trained at `size`² instead: attention resolutions scale along, every other
    field is kept (so the weights differ only in the grids of the learned position tables).

    Raises ValueError for a super-resolution config, or a size that is not the config's image
    size times or divided by a whole number.
    """
    if not isinstance(config, UNetConfig):
        raise ValueError(f"only a base U-Net can change resolution, not a {type(config).__name__}")
    big, small = max(config.image_size, size), min(config.image_size, size)
    if size < 1 or big % small:
        raise ValueError(f"size {size} must divide the config's image size {config.image_size} "
                         "or be a multiple of it")
    if size <= config.image_size:
        f = config.image_size // size
        if any(r % f for r in config.attn_resolutions):
            raise ValueError(f"size {size} does not scale attention resolutions "
                             f"{config.attn_resolutions} to whole numbers")
        attn = tuple(r // f for r in config.attn_resolutions)
    else:
        attn = tuple(r * (size // config.image_size) for r in config.attn_resolutions)
    return dataclasses.replace(config, image_size=size, attn_resolutions=attn)


def config_from_dict(d: dict) -> Config:
    """Rebuild a config from `dataclasses.asdict` output (possibly JSON round-tripped: lists -> tuples)."""
    kind = d.get("kind", "unet")
    if kind not in _KINDS:
        raise ValueError(f"config kind {kind!r} is not one of {sorted(_KINDS)}")
    cls = _KINDS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def build_unet(config: Config) -> nn.Module:
    """Instantiate the network a config describes (BaseUNet or EfficientUNet)."""
    if isinstance(config, UNetConfig):
        from .unet import BaseUNet
        return BaseUNet(config)
    if isinstance(config, EfficientUNetConfig):
        from .efficient_unet import EfficientUNet
        return EfficientUNet(config)
    raise TypeError(f"not a U-Net config: {type(config).__name__}")


def count_params(config: Config) -> int:
    """Number of parameters, counted on the meta device (no memory allocated)."""
    with torch.device("meta"):
        model = build_unet(config)
    return sum(p.numel() for p in model.parameters())
