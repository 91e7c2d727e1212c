"""Guidance, thresholding and the cascade pipeline on small randomly initialised U-Nets."""
import pytest
import torch

from imagen_ref.configs import build_unet, get_config
from imagen_ref.diffusion import Schedule, null_text, x0_from_eps
from imagen_ref.guidance import call_model, guided_prediction, make_denoiser
from imagen_ref.pipeline import Cascade, Stage, StageSampling, to_uint8


def _perturbed(name, seed):
    """A tiny U-Net whose zero-initialised output layers are perturbed, so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    model = build_unet(get_config(name)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def cascade(minilm):
    stages = [Stage("base", _perturbed("tiny-base", 0), Schedule()),
              Stage("sr64", _perturbed("tiny-sr", 1), Schedule())]
    return Cascade(stages, minilm)


@pytest.fixture(scope="module")
def minilm():
    from imagen_ref.text_encoder import FrozenTextEncoder
    return FrozenTextEncoder("minilm-l6", max_length=32, device="cpu")


def _inputs(model, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    z = torch.randn(b, 3, c.image_size, c.image_size, generator=g)
    text = torch.randn(b, 5, c.text_dim, generator=g)
    mask = torch.ones(b, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return z, torch.rand(b, generator=g), text, mask


def test_guidance_one_is_exactly_the_conditional_prediction():
    model = _perturbed("tiny-base", 2)
    z, t, text, mask = _inputs(model, b=4)
    with torch.no_grad():
        cond = model(z, t, text, mask)
        assert torch.equal(guided_prediction(model, z, t, text, mask, guidance=1.0), cond)


def test_guidance_combines_conditional_and_unconditional_per_eq2():
    model = _perturbed("tiny-base", 3)
    z, t, text, mask = _inputs(model, b=4)
    with torch.no_grad():
        cond = model(z, t, text, mask)
        uncond = model(z, t, *null_text(text, mask))
        for w in (0.0, 3.0, 7.5):
            got = guided_prediction(model, z, t, text, mask, guidance=w)
            torch.testing.assert_close(got, w * cond + (1 - w) * uncond, rtol=1e-5, atol=1e-5)
        # guidance actually changes the prediction (the text matters to this network)
        assert (cond - uncond).abs().max() > 1e-3


def test_denoiser_thresholds_the_x0_prediction():
    model, sch = _perturbed("tiny-base", 4), Schedule()
    z, t, text, mask = _inputs(model, b=4)
    t = torch.full((4,), 0.98)  # little signal: x0 = (z - sigma eps) / alpha leaves [-1, 1]
    with torch.no_grad():
        raw = make_denoiser(model, sch, text, mask, guidance=5.0, thresholding="none")(z, t)
        assert raw.abs().max() > 1.5
        static = make_denoiser(model, sch, text, mask, guidance=5.0, thresholding="static")(z, t)
        assert torch.equal(static, raw.clamp(-1, 1))
        dyn = make_denoiser(model, sch, text, mask, guidance=5.0, thresholding="dynamic:0.995")(z, t)
        assert dyn.abs().max() <= 1.0 + 1e-6
        eps = guided_prediction(model, z, t, text, mask, guidance=5.0)
        torch.testing.assert_close(raw, x0_from_eps(z, eps, t, sch))


def test_small_batches_are_padded_to_a_batch_independent_result():
    model = _perturbed("tiny-base", 5)
    z, t, text, mask = _inputs(model, b=6)
    with torch.no_grad():
        full = call_model(model, z, t, text, mask)
        for i in range(3):
            one = call_model(model, z[i:i + 1], t[i:i + 1], text[i:i + 1], mask[i:i + 1])
            assert torch.equal(one[0], full[i])


def test_same_prompt_and_seed_give_identical_images_alone_or_in_a_batch_of_8(cascade):
    prompts = ["a red circle", "two blue squares to the left of a green triangle", "a", "a yellow star",
               "a purple square above a red circle", "b c", "three green circles", "a tiny orange triangle"]
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    settings = [StageSampling(guidance=3.0, thresholding="dynamic:0.995", steps=3),
                StageSampling(guidance=2.0, thresholding="static", steps=2, aug_level=0.2, sampler="ddpm")]
    batch = cascade.sample(prompts, seeds, settings)
    assert [b.shape for b in batch] == [(8, 3, 32, 32), (8, 3, 64, 64)]
    for i in (0, 1, 6):
        alone = cascade.sample([prompts[i]], [seeds[i]], settings)
        for k in range(2):
            assert torch.equal(to_uint8(alone[k])[0], to_uint8(batch[k])[i])
            assert torch.equal(alone[k][0], batch[k][i])
    other = cascade.sample([prompts[0]], [99], settings)
    assert not torch.equal(other[1][0], batch[1][0])


def test_prefix_of_stages_and_sr_needs_a_base(cascade):
    out = cascade.sample(["a red circle"], [0], StageSampling(steps=2), num_stages=1)
    assert len(out) == 1 and out[0].shape == (1, 3, 32, 32)
    sr_only = Cascade(cascade.stages[1:], cascade.text_encoder)
    with pytest.raises(ValueError, match="super-resolution stage"):
        sr_only.sample(["a red circle"], [0], StageSampling(steps=2))


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError):
        StageSampling(thresholding="dynamic:2")
    with pytest.raises(ValueError):
        StageSampling(sampler="euler")
    with pytest.raises(ValueError):
        StageSampling(aug_level=1.5)


def test_save_then_load_gives_identical_samples(cascade, minilm, tmp_path):
    from imagen_ref.checkpoint import save_stage
    meta = {"name_or_path": "minilm-l6", "encoder_id": minilm.encoder_id, "max_length": minilm.max_length,
            "dim": minilm.dim}
    for stage in cascade.stages:
        save_stage(tmp_path, stage.key, stage.model, schedule=stage.schedule,
                   aug_schedule=stage.schedule if stage.config.lowres_size else None,
                   text_encoder_meta=meta, training_meta={"step": 0})
    loaded = Cascade.from_pretrained(tmp_path, device="cpu")
    settings = [StageSampling(guidance=4.0, thresholding="dynamic:0.995", steps=3, sampler="ddpm"),
                StageSampling(guidance=2.0, steps=2, aug_level=0.3)]
    before = cascade.sample(["a blue square", "a red circle"], [5, 6], settings)
    after = loaded.sample(["a blue square", "a red circle"], [5, 6], settings)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
