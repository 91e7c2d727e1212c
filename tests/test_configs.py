"""Config registry, serialisation, paper parameter counts and attention placement (meta device: no memory)."""

import dataclasses
import json

import pytest
import torch

from imagen_ref.configs import (CONFIGS, EfficientUNetConfig, UNetConfig, build_unet, config_from_dict,
                                count_params, get_config)
from imagen_ref.layers import Attention

PAPER_PARAMS = {"imagen-base-64": 2.0e9, "imagen-sr-256": 6.0e8, "imagen-sr-1024": 4.0e8}  # §4.1


def _meta(name):
    with torch.device("meta"):
        return build_unet(get_config(name))


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_param_counts_within_15_percent(name):
    n = count_params(get_config(name))
    assert abs(n / PAPER_PARAMS[name] - 1) <= 0.15, f"{name}: {n / 1e6:.1f}M"


@pytest.mark.parametrize("name", ["tiny-base", "tiny-sr"])
def test_tiny_param_counts(name):
    assert 0.5e6 < count_params(get_config(name)) < 5e6


def test_paper_configs_as_printed():
    base, sr256, sr1024 = (CONFIGS[k] for k in ("imagen-base-64", "imagen-sr-256", "imagen-sr-1024"))
    assert (base.model_channels, base.channel_mult, base.num_res_blocks) == (512, (1, 2, 3, 4), 3)
    assert base.attn_resolutions == (32, 16, 8) and base.head_dim == 64 and base.resblock_updown
    for c in (sr256, sr1024):
        assert c.channels == (128, 256, 512, 1024) and c.num_res_blocks == (2, 4, 8, 8)
        assert c.num_heads == 8 and c.use_scale_shift_norm and c.dropout == 0
    assert all(c.text_dim == 4096 and c.prediction == "eps" for c in (base, sr256, sr1024))
    assert (base.lowres_size, sr256.lowres_size, sr1024.lowres_size) == (None, 64, 256)
    assert (base.image_size, sr256.image_size, sr1024.image_size) == (64, 256, 1024)


def test_sr1024_has_cross_attention_and_no_self_attention():
    attn = [m for m in _meta("imagen-sr-1024").modules() if isinstance(m, Attention)]
    assert attn and not any(m.self_attention for m in attn)


@pytest.mark.parametrize("name", ["imagen-sr-256", "tiny-sr"])
def test_sr_attention_only_in_lowest_block(name):
    model = _meta(name)
    lowest = [model.down[-1], model.up[0]]  # up[0] is the deepest UBlock
    for block in list(model.down) + list(model.up):
        attn = [m for m in block.modules() if isinstance(m, Attention)]
        if any(block is b for b in lowest):
            assert attn and all(m.self_attention for m in attn)
        else:
            assert not attn


def test_base_attention_at_listed_resolutions():
    model = _meta("tiny-base")
    cfg = model.config
    seen = set()
    res = cfg.image_size
    for layers in model.down:
        if any(isinstance(m, Attention) for m in layers):
            seen.add(res)
        if any(getattr(m, "resample", None) == "down" for m in layers):
            res //= 2
    assert seen == set(cfg.attn_resolutions)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_json_round_trip(name):
    cfg = CONFIGS[name]
    back = config_from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and type(back) is type(cfg)
    assert isinstance(cfg, (UNetConfig, EfficientUNetConfig))
    assert {"image_size", "lowres_size", "text_dim", "prediction", "kind"} <= set(dataclasses.asdict(cfg))


def test_get_config_overrides_and_errors():
    cfg = get_config("tiny-base", text_dim=512)
    assert cfg.text_dim == 512 and CONFIGS["tiny-base"].text_dim == 384
    with pytest.raises(KeyError):
        get_config("nope")
    with pytest.raises(ValueError):
        config_from_dict({"kind": "unet", "bogus": 1})
    with pytest.raises(ValueError):
        config_from_dict({"kind": "transformer"})


def test_at_resolution_scales_attention_and_keeps_everything_else():
    from imagen_ref.configs import at_resolution

    cfg = get_config("calworld-base-32-xattn")
    low = at_resolution(cfg, 16)
    assert (low.image_size, low.attn_resolutions) == (16, (8, 4))
    assert dataclasses.replace(low, image_size=32, attn_resolutions=(16, 8)) == cfg
    assert at_resolution(low, 32) == cfg and at_resolution(cfg, 64).attn_resolutions == (32, 16)
    for bad, words in ((12, "must divide"), (2, "whole numbers")):
        with pytest.raises(ValueError, match=words):
            at_resolution(cfg, bad)
    with pytest.raises(ValueError, match="only a base U-Net"):
        at_resolution(get_config("calworld-sr-64"), 32)
