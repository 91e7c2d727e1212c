"""Behavioural tests of BaseUNet / EfficientUNet on the tiny configs (CPU, seconds)."""

import math

import pytest
import torch
import torch.nn.functional as F

from imagen_ref.configs import build_unet, get_config
from imagen_ref.efficient_unet import EfficientUNet, UBlock
from imagen_ref.layers import Attention, TextTransformer, ctx_key_mask, timestep_embedding
from imagen_ref.unet import BaseUNet

NAMES = ["tiny-base", "tiny-sr", "calworld-base-32", "calworld-base-32-xattn"]  # text layers, positions
L = 7  # text length used throughout


def _randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter so zero-initialised output layers do not hide the computation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = 0.5 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.05
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    torch.manual_seed(0)  # test-only: parameter init
    return _randomize_(build_unet(get_config(request.param)))


def _inputs(cfg, B: int, seed: int = 1) -> dict:
    """Deterministic inputs; row 0 has an all-False text mask (the unconditional branch)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, L, generator=g) < 0.6
    mask[:, 0] = True
    mask[0] = False
    kw = dict(x=torch.randn(B, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g),
              t=torch.rand(B, generator=g),
              text=torch.randn(B, L, cfg.text_dim, generator=g), text_mask=mask)
    if cfg.lowres_size is not None:
        s = cfg.lowres_size
        kw["lowres"] = torch.randn(B, cfg.in_channels, s, s, generator=g)
        kw["aug_t"] = torch.rand(B, generator=g)
    return kw


def _select(kw: dict, idx) -> dict:
    return {k: v[idx] for k, v in kw.items()}


@torch.no_grad()
def test_output_shape_and_finite_with_all_masked_row(model):
    cfg = model.config
    out = model(**_inputs(cfg, B=3))
    assert out.shape == (3, cfg.out_channels, cfg.image_size, cfg.image_size)
    assert torch.isfinite(out).all()
    assert out[0].abs().max() > 0  # the unconditional row is a real prediction, not zeros


@torch.no_grad()
def test_per_sample_independence(model):
    kw = _inputs(model.config, B=3)
    batched = model(**kw)
    for i in range(3):
        alone = model(**_select(kw, slice(i, i + 1)))
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-5)
    changed = dict(kw, x=kw["x"].clone(), text=kw["text"].clone())
    changed["x"][1:] = torch.randn_like(changed["x"][1:])
    changed["text"][1:] = torch.randn_like(changed["text"][1:])
    torch.testing.assert_close(model(**changed)[0], batched[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_tokens_are_ignored(model):
    kw = _inputs(model.config, B=3)
    ref = model(**kw)
    text = kw["text"].clone()
    text[~kw["text_mask"]] = 100.0 * torch.randn_like(text[~kw["text_mask"]])
    torch.testing.assert_close(model(**dict(kw, text=text)), ref, atol=1e-6, rtol=1e-6)
    # ... while a real token does matter
    text = kw["text"].clone()
    text[1, 0] = torch.randn_like(text[1, 0])  # (a constant shift would vanish in the LayerNorm)
    assert not torch.allclose(model(**dict(kw, text=text))[1], ref[1], atol=1e-6)


@torch.no_grad()
def test_output_depends_on_every_conditioning_input(model):
    kw = _inputs(model.config, B=2)
    ref = model(**kw)
    keys = ["t", "x"] + (["lowres", "aug_t"] if model.config.lowres_size else [])
    for key in keys:
        other = (kw[key] + 0.25) if key in ("t", "aug_t") else torch.randn_like(kw[key])
        assert not torch.allclose(model(**dict(kw, **{key: other})), ref, atol=1e-5), key


@torch.no_grad()
def test_sr_upsamples_lowres_bilinear_without_antialias():
    model = _randomize_(build_unet(get_config("tiny-sr")))
    kw = _inputs(model.config, B=2)
    size = model.config.image_size
    pre = F.interpolate(kw["lowres"], size=(size, size), mode="bilinear", align_corners=False,
                        antialias=False)
    torch.testing.assert_close(model(**dict(kw, lowres=pre)), model(**kw), atol=1e-6, rtol=1e-6)


@torch.no_grad()
def test_skip_connections_scaled_by_inv_sqrt2():
    model = _randomize_(build_unet(get_config("tiny-sr")))
    seen = {}
    model.down[-2].register_forward_hook(lambda m, a, out: seen.__setitem__("skip", out))
    model.up[0].register_forward_hook(lambda m, a, out: seen.__setitem__("prev", out))
    model.up[1].stage.register_forward_pre_hook(lambda m, a: seen.__setitem__("stage_in", a[0]))
    model(**_inputs(model.config, B=2))
    expected = (seen["prev"] + seen["skip"]) / math.sqrt(2.0)
    torch.testing.assert_close(seen["stage_in"], expected)
    assert all(u.skip_scale == pytest.approx(2**-0.5) for u in model.modules() if isinstance(u, UBlock))


@pytest.mark.parametrize("name", NAMES)
def test_tiny_forward_backward_batch8(name):
    cfg = get_config(name)
    model = build_unet(cfg).train()
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    kw = _inputs(cfg, B=8)
    out = model(**kw)
    F.mse_loss(out, torch.randn_like(kw["x"])).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_base_rejects_lowres_and_sr_requires_it():
    base, sr = build_unet(get_config("tiny-base")), build_unet(get_config("tiny-sr"))
    assert isinstance(base, BaseUNet) and isinstance(sr, EfficientUNet)
    kw = _inputs(sr.config, B=1)
    with pytest.raises(ValueError):
        base(**_inputs(base.config, B=1), lowres=kw["lowres"])
    with pytest.raises(ValueError):
        sr(**dict(kw, lowres=None))


def test_timestep_embedding_of_1000t():
    emb = timestep_embedding(torch.tensor([0.0, 0.5]), 8)
    assert emb.dtype == torch.float32 and emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1, :4], torch.cos(500.0 * freqs))


def test_attention_modes():
    x, ctx = torch.randn(2, 32, 4, 4), torch.randn(2, 5, 16)
    mask = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    for self_attention in (True, False):
        layer = _randomize_(Attention(32, 16, heads=2, head_dim=8, self_attention=self_attention))
        assert hasattr(layer, "to_qkv") == self_attention and hasattr(layer, "to_q") != self_attention
        out = layer(x, ctx, mask)
        assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name,overrides", [
    ("tiny-base", dict(resblock_updown=False, use_scale_shift_norm=False)),
    ("tiny-sr", dict(block_attention=("none", "none", "none", "cross"), attn_each_resblock=False)),
])
@torch.no_grad()
def test_config_variants_run(name, overrides):
    cfg = get_config(name, **overrides)
    out = _randomize_(build_unet(cfg))(**_inputs(cfg, B=2))
    assert out.shape == (2, cfg.out_channels, cfg.image_size, cfg.image_size)
    assert torch.isfinite(out).all()


def _reference_text_layer(blk, h, mask, heads):
    """One TextTransformer block written out with explicit softmax (no SDPA)."""
    B, L, D = h.shape
    d = D // heads
    x = F.layer_norm(h, (D,), blk["norm1"].weight, blk["norm1"].bias)
    q, k, v = (x @ blk["qkv"].weight.T + blk["qkv"].bias).split(D, dim=-1)
    out = torch.empty_like(h)
    for b in range(B):
        for n in range(heads):
            sl = slice(n * d, (n + 1) * d)
            keys = torch.cat([blk.null_kv[0, 0, n], k[b, :, sl]])  # (1 + L, d)
            vals = torch.cat([blk.null_kv[1, 0, n], v[b, :, sl]])
            logits = q[b, :, sl] @ keys.T / math.sqrt(d)  # (L, 1 + L)
            allowed = torch.cat([torch.tensor([True]), mask[b]])
            logits = logits.masked_fill(~allowed, float("-inf"))
            out[b, :, sl] = logits.softmax(-1) @ vals
    h = h + out @ blk["out"].weight.T + blk["out"].bias
    lin1, lin2 = blk["mlp"][0], blk["mlp"][2]
    y = F.layer_norm(h, (D,), blk["norm2"].weight, blk["norm2"].bias)
    return h + F.gelu(y @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias


@torch.no_grad()
def test_text_transformer_matches_an_explicit_softmax_reference():
    torch.manual_seed(0)  # test-only: parameter init
    layers = _randomize_(TextTransformer(16, layers=2, heads=2, max_len=8))
    g = torch.Generator().manual_seed(3)
    ctx, mask = torch.randn(3, 5, 16, generator=g), torch.rand(3, 5, generator=g) < 0.6
    mask[0] = False  # the unconditional row: only the null key
    mask[1:, 0] = True
    ref = ctx + layers.pos[:, :5]
    for blk in layers.blocks:
        ref = _reference_text_layer(blk, ref, mask, heads=2)
    out = layers(ctx, ctx_key_mask(mask))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        layers(torch.randn(1, 9, 16), ctx_key_mask(torch.ones(1, 9, dtype=torch.bool)))


@torch.no_grad()
def test_text_layers_make_the_base_unet_see_word_order():
    """Text attention alone is blind to the order of the tokens (keys and values are a set);
    the trainable text layers add token positions, so swapping two words changes the output."""
    def swapped_gap(cfg):
        torch.manual_seed(0)  # test-only: parameter init
        model = _randomize_(build_unet(cfg))
        kw = _inputs(cfg, B=2)
        kw["text_mask"][:] = True
        text = kw["text"].clone()
        text[:, [1, 4]] = text[:, [4, 1]]
        return (model(**dict(kw, text=text)) - model(**kw)).abs().max().item()

    assert swapped_gap(get_config("tiny-base")) < 1e-5
    assert swapped_gap(get_config("tiny-base", text_layers=1)) > 1e-3
    assert swapped_gap(get_config("calworld-base-32")) > 1e-3


def test_position_embedding_fixes_the_image_size():
    cfg = get_config("calworld-base-32")
    model = build_unet(cfg)
    assert model.pos_emb.shape == (1, cfg.model_channels, 32, 32)
    kw = _inputs(cfg, B=1)
    kw["x"] = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="position embedding"):
        model(**kw)


@torch.no_grad()
def test_query_positions_let_attention_fetch_different_words_at_different_places():
    """Every pixel the same: plain attention gives every pixel the same output; with query
    positions each place asks its own question. A wrong input size is refused."""
    g = torch.Generator().manual_seed(0)
    ctx, mask = torch.randn(1, 5, 16, generator=g), ctx_key_mask(torch.ones(1, 5, dtype=torch.bool))
    x = torch.randn(1, 8, 1, 1, generator=g).expand(1, 8, 4, 4).contiguous()

    def spread(query_pos):
        torch.manual_seed(0)  # test-only: parameter init
        attn = _randomize_(Attention(8, 16, 2, 4, self_attention=False, groups=4, query_pos=query_pos))
        out = attn(x, ctx, mask).flatten(2)  # (1, C, HW)
        return (out - out[..., :1]).abs().max().item(), attn

    assert spread(None)[0] < 1e-6
    gap, attn = spread((4, 4))
    assert gap > 1e-3
    assert attn.query_pos.shape == (1, 2, 16, 4)
    with pytest.raises(ValueError, match="query positions are 4x4"):
        attn(torch.randn(1, 8, 2, 2), ctx, mask)


def test_base_unet_text_attention_options():
    cfg = get_config("calworld-base-32-xattn")
    model = build_unet(cfg)
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    assert attns and not any(a.self_attention for a in attns)  # text_attention="cross"
    assert all(a.query_pos is not None for a in attns)
    assert len(model.out_attn) == 1 and model.out_attn[0].query_hw == (32, 32)
    assert model.text_layers.pos.std().item() == pytest.approx(0.5, rel=0.05)
    imagen = build_unet(get_config("calworld-base-32"))  # the paper's layout: text in self-attention k/v
    assert all(m.self_attention and m.query_pos is None for m in imagen.modules() if isinstance(m, Attention))
    assert len(imagen.out_attn) == 0
    with pytest.raises(ValueError, match="text_attention"):
        build_unet(get_config("tiny-base", text_attention="both"))


def test_position_tables_resample_along_the_right_axes():
    """A table that is linear in the row and column index stays linear after resampling to twice
    the grid (bilinear, half-pixel centres: the interior is exact), in every head and channel:
    rows, columns, heads and channels are not mixed up by the reshapes."""
    from imagen_ref.configs import at_resolution
    from imagen_ref.unet import resize_position_tables

    cfg = get_config("calworld-base-32-xattn")
    small, big = build_unet(at_resolution(cfg, 16)), build_unet(cfg)

    def ramp(rows, cols, extra):  # value = 10 * row + col + extra
        r = torch.arange(rows, dtype=torch.float32)[:, None]
        c = torch.arange(cols, dtype=torch.float32)[None, :]
        return 10 * r + c + extra

    state = small.state_dict()
    out = resize_position_tables(state, big)
    big_state = big.state_dict()
    assert out.keys() == state.keys()
    changed = sorted(k for k in state if state[k].shape != big_state[k].shape)
    assert "pos_emb" in changed and all(k == "pos_emb" or k.endswith(".query_pos") for k in changed)
    name = next(k for k in changed if k.endswith(".query_pos"))
    _, heads, n, d = state[name].shape
    side = int(n ** 0.5)
    extra = torch.arange(heads)[:, None] * 1000 + torch.arange(d)[None, :] * 100  # (heads, d)
    grid = ramp(side, side, 0)[None, :, :, None] + extra[:, None, None, :]  # (heads, s, s, d)
    state = {**state, name: grid.reshape(1, heads, n, d),
             "pos_emb": ramp(16, 16, 0).expand_as(state["pos_emb"]).clone()}
    out = resize_position_tables(state, big)
    big.load_state_dict(out)  # every shape now fits
    new = out[name].reshape(heads, 2 * side, 2 * side, d)
    coord = (torch.arange(2 * side, dtype=torch.float32) + 0.5) / 2 - 0.5  # source coordinates
    want = 10 * coord[:, None] + coord[None, :]
    inner = slice(1, 2 * side - 1)
    for h in range(heads):
        for k in (0, d - 1):
            torch.testing.assert_close(new[h, inner, inner, k] - extra[h, k], want[inner, inner])
    coord = (torch.arange(32, dtype=torch.float32) + 0.5) / 2 - 0.5
    torch.testing.assert_close(out["pos_emb"][0, 5, 1:31, 1:31],
                               (10 * coord[:, None] + coord[None, :])[1:31, 1:31])
    assert all(torch.equal(out[k], state[k]) for k in state if k not in changed)
