"""Tiny randomly initialised diffusers text-to-image pipelines, built from configs (nothing is
downloaded): Stable Diffusion, SDXL, PixArt-Σ and FLUX, each saved with save_pretrained.

Every network has a layer or two and 8-32 channels. SD, SDXL and FLUX make 32x32 images from
16x16 latents (FLUX packs them into 8x8 tokens); PixArt-Σ makes 256x256 ones (see there)."""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["a", "red", "blue", "cat", "dog", "picture", "of", "number", "colors", "counting", "green"]
SIZE = 32  # pixels of every family's default image


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2's table), in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(161, 173)) + list(range(174, 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def clip_tokenizer(max_length: int = 16):
    """A byte-level CLIP tokenizer over single characters (no merges), 77 -> `max_length`."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def t5_encoder(vocab_size: int, d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64,
                                   num_layers=1, num_heads=4)).eval()


def clip_text(projection: bool = False, hidden: int = 32, projection_dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=514, hidden_size=hidden, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=16,
                            projection_dim=projection_dim, bos_token_id=512, eos_token_id=513,
                            pad_token_id=513)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def vae(levels: int = 2, **extra):
    """A KL autoencoder with 4 latent channels, downsampling 2 ** (levels - 1) times."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         block_out_channels=(8,) * (levels - 1) + (16,), layers_per_block=1,
                         norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * levels,
                         up_block_types=("UpDecoderBlock2D",) * levels, sample_size=SIZE, **extra)


def unet(cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=8, **extra)


def sd_scheduler():
    """Stable Diffusion's saved scheduler (PNDM, scaled-linear betas)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         skip_prk_steps=True, steps_offset=1)


def build_sd():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=vae(), text_encoder=clip_text(), tokenizer=clip_tokenizer(),
                                   unet=unet(32), scheduler=sd_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def build_sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    # the U-Net sees both encoders' hidden states concatenated (32 + 32) and the pooled
    # projection of the second with 6 size/crop numbers (8 each)
    net = unet(64, addition_embed_type="text_time", addition_time_embed_dim=8,
               projection_class_embeddings_input_dim=32 + 6 * 8)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", steps_offset=1)
    return StableDiffusionXLPipeline(
        vae=vae(), text_encoder=clip_text(), text_encoder_2=clip_text(projection=True),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), unet=net, scheduler=sched,
        force_zeros_for_empty_prompt=True, add_watermarker=False)


def build_pixart_sigma():
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    tok = t5_tokenizer()
    # PixArt-Σ bins sizes by its latent size (32 -> the 256 px table), so its VAE downsamples 8x
    # as the real one does: 256 px images from 32x32 latents, 16x16 tokens
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=1,
        cross_attention_dim=16, sample_size=32, patch_size=2, caption_channels=32,
        norm_num_groups=8)
    return PixArtSigmaPipeline(tokenizer=tok, text_encoder=t5_encoder(len(tok)), vae=vae(4),
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())


def build_flux(guidance_embeds: bool = True):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tok = t5_tokenizer()
    # 4 latent channels packed 2x2 -> 16 per token; rope axes 2 + 3 + 3 = head dim 8
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4))
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae(shift_factor=0.0),
                        text_encoder=clip_text(), tokenizer=clip_tokenizer(),
                        text_encoder_2=t5_encoder(len(tok)), tokenizer_2=tok,
                        transformer=transformer)


FAMILIES = {"sd": build_sd, "sdxl": build_sdxl, "pixart": build_pixart_sigma, "flux": build_flux,
            "flux-cfg": lambda: build_flux(guidance_embeds=False)}  # FLUX-schnell-like: no embedding


def write_pipeline(family: str, folder: Path, seed: int = 0) -> Path:
    """The tiny `family` pipeline, seeded, saved to `folder` (save_pretrained)."""
    torch.manual_seed(seed)
    FAMILIES[family]().save_pretrained(folder)
    return folder
