"""--model diffusers:PATH (bench/diffusers_adapter.py) on tiny randomly initialised IF-style
pipelines built from configs on CPU; nothing is downloaded."""
import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers (the optional extra) is not installed")

from diffusers import (DDIMScheduler, DDPMScheduler, IFPipeline,  # noqa: E402
                       IFSuperResolutionPipeline, UNet2DConditionModel)
from transformers import T5Config, T5EncoderModel, T5Tokenizer  # noqa: E402

from bench.adapters import AdapterError, load_adapter  # noqa: E402
from bench.diffusers_adapter import UNCAPPED, DiffusersIFAdapter, noise_level  # noqa: E402
from bench.sampling import SamplingConfig  # noqa: E402
from fakes import make_clip_dir  # noqa: E402

WORDS = ["a", "red", "blue", "cat", "dog", "picture", "of", "number", "colors", "counting"]
LOW, HIGH = 16, 32  # stage I and stage II resolutions


def _tokenizer_and_encoder(seed: int):
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in WORDS]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0)
    torch.manual_seed(seed)
    enc = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=64,
                                  num_layers=2, num_heads=4))
    return tok, enc.eval()


def _unet(size: int, in_channels: int, sr: bool):
    extra = {"class_embed_type": "timestep"} if sr else {}
    return UNet2DConditionModel(
        sample_size=size, in_channels=in_channels, out_channels=6,  # eps + variance, as IF
        layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8, **extra)


def _scheduler():
    # IF's schedulers: learned variance range, cosine schedule, eps prediction
    return DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                         variance_type="learned_range", thresholding=True,
                         dynamic_thresholding_ratio=0.95, sample_max_value=1.5)


def write_tiny_if(root: Path, stage_ii: bool = True, seed: int = 0) -> Path:
    tok, enc = _tokenizer_and_encoder(seed)
    torch.manual_seed(seed + 1)
    IFPipeline(tokenizer=tok, text_encoder=enc, unet=_unet(LOW, 3, False), scheduler=_scheduler(),
               safety_checker=None, feature_extractor=None, watermarker=None,
               requires_safety_checker=False).save_pretrained(root / "stage_I")
    if stage_ii:
        torch.manual_seed(seed + 2)
        IFSuperResolutionPipeline(
            tokenizer=None, text_encoder=None, unet=_unet(HIGH, 6, True), scheduler=_scheduler(),
            image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
            safety_checker=None, feature_extractor=None, watermarker=None,
            requires_safety_checker=False).save_pretrained(root / "stage_II")
    return root


def items(texts, seeds):
    return [SimpleNamespace(text=t, seed=s, prompt_id=f"p{i}", k=0)
            for i, (t, s) in enumerate(zip(texts, seeds))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_if(tmp_path_factory.mktemp("tiny_if"))


@pytest.fixture(scope="module")
def both(tiny):
    return DiffusersIFAdapter(tiny, device="cpu")


@pytest.fixture(scope="module")
def stage_one(tiny):
    return DiffusersIFAdapter(tiny / "stage_I", device="cpu")


CFG = SamplingConfig(guidance=(3.0, 2.0), thresholding="dynamic:0.995", aug_level=0.1,
                     sampler="ddim", steps=2)


def test_sizes_for_stage_one_and_the_cascade(both, stage_one):
    assert both.num_stages == 2 and stage_one.num_stages == 1
    batch = items(["a red cat", "a blue dog"], [1, 2])
    both.check(batch, CFG)
    for adapter, size in ((stage_one, LOW), (both, HIGH)):
        images = adapter.generate(batch, CFG)
        assert len(images) == 2
        for im in images:
            assert im.dtype == np.uint8 and im.shape == (size, size, 3)


def test_seeds_fix_images_independent_of_the_batch(stage_one):
    cfg = SamplingConfig(guidance=(3.0,), thresholding="none", sampler="ddpm", steps=2)
    a = stage_one.generate(items(["a red cat", "a blue dog"], [1, 2]), cfg)
    b = stage_one.generate(items(["a red cat"], [1]), cfg)
    c = stage_one.generate(items(["a red cat"], [5]), cfg)
    np.testing.assert_array_equal(a[0], b[0])  # same seed, alone or in a batch
    assert not np.array_equal(a[0], c[0])      # another seed, another image


@pytest.mark.parametrize("mode, want", [
    ("none", {"thresholding": False, "clip_sample": False}),
    ("static", {"thresholding": False, "clip_sample": True, "clip_sample_range": 1.0}),
    ("dynamic:0.995", {"thresholding": True, "clip_sample": False,
                       "dynamic_thresholding_ratio": 0.995, "sample_max_value": UNCAPPED}),
    ("dynamic:0.95:1.5", {"thresholding": True, "clip_sample": False,
                          "dynamic_thresholding_ratio": 0.95, "sample_max_value": 1.5}),
])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_thresholding_modes_map_onto_the_scheduler(both, mode, want, sampler):
    cfg = SamplingConfig(guidance=(2.0,), thresholding=mode, aug_level=0.25, sampler=sampler,
                         steps=3)
    pipes = both.load()
    for pipe in pipes:
        sched = both.scheduler(pipe, cfg)
        assert isinstance(sched, DDPMScheduler if sampler == "ddpm" else DDIMScheduler)
        for key, value in want.items():
            assert sched.config[key] == pytest.approx(value), key
        assert sched.config.beta_schedule == "squaredcos_cap_v2"  # the rest comes from the saved one
    assert noise_level(0.25) == 250 and noise_level(1.0) == 999 and noise_level(0.0) == 0


def test_generate_uses_the_configs_schedulers_and_steps(both):
    cfg = SamplingConfig(guidance=(2.0,), thresholding="dynamic:0.9:2", sampler="ddpm", steps=3)
    both.generate(items(["a cat"], [0]), cfg)
    assert len(both.last_schedulers) == 2
    for sched in both.last_schedulers:
        assert isinstance(sched, DDPMScheduler) and len(sched.timesteps) == 3
        assert sched.config.sample_max_value == 2 and sched.config.dynamic_thresholding_ratio == 0.9


def test_dynamic_with_cap_1_is_static(stage_one):
    batch = items(["a red cat"], [3])
    cfg = dict(guidance=(8.0,), sampler="ddpm", steps=3)
    static = stage_one.generate(batch, SamplingConfig(thresholding="static", **cfg))
    capped = stage_one.generate(batch, SamplingConfig(thresholding="dynamic:0.9:1", **cfg))
    np.testing.assert_array_equal(static[0], capped[0])
    plain = stage_one.generate(batch, SamplingConfig(thresholding="none", **cfg))
    assert not np.array_equal(static[0], plain[0])  # the clipping did act at this w


def test_model_id_and_errors(tiny, both, tmp_path):
    assert both.model_id.startswith("diffusers:") and both.model_id == DiffusersIFAdapter(tiny).model_id
    assert [s["config_sha256"] for s in both.describe()["stages"]] == both.digests
    assert isinstance(load_adapter(f"diffusers:{tiny}", device="cpu"), DiffusersIFAdapter)
    with pytest.raises(AdapterError, match="does not exist"):
        load_adapter(f"diffusers:{tmp_path / 'nope'}")
    with pytest.raises(AdapterError, match="model_index.json is missing"):
        load_adapter(f"diffusers:{tmp_path}")
    with pytest.raises(AdapterError, match="guidance 0.5 < 1"):
        both.check([], SamplingConfig(guidance=(0.5,)))


def test_if_refuses_what_its_cascade_mapping_cannot_do(tiny, both):
    with pytest.raises(AdapterError, match="--resolution does not apply to DeepFloyd IF"):
        load_adapter(f"diffusers:{tiny}", resolution=(64, 64))
    with pytest.raises(AdapterError, match="--precision fp16: the IF cascade"):
        load_adapter(f"diffusers:{tiny}", precision="fp16")
    with pytest.raises(AdapterError, match="--sampler euler: the IF cascade samples with ddim or ddpm"):
        both.check([], SamplingConfig(guidance=(2.0,), sampler="euler"))
    assert load_adapter(f"diffusers:{tiny}", num_stages=1).num_stages == 1
    assert isinstance(load_adapter(f"diffusers:{tiny / 'stage_I'}"), DiffusersIFAdapter)


def test_drawbench_end_to_end(tiny, tmp_path):
    from bench.drawbench import main

    prompts = tmp_path / "prompts.csv"
    with open(prompts, "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows([{"text": "a red cat", "category": "Colors"},
                          {"text": "a blue dog", "category": "Counting"}])
    out = tmp_path / "run"
    argv = ["--model", f"diffusers:{tiny}", "--prompts", str(prompts),
            "--samples-per-prompt", "1", "--guidance", "3/2", "--thresholding", "dynamic:0.995",
            "--aug-level", "0.1", "--steps", "2", "--batch-size", "2", "--device", "cpu",
            "--clip-model", make_clip_dir(tmp_path / "clip"), "--bootstrap-samples", "50",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    with open(out / "metrics" / "categories.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["category"] for r in rows] == ["Colors", "Counting", "overall"]
    assert rows[0]["config_key"] == "w3_2-dyn0.995-aug0.1-ddim2"
    assert sorted(p.name for p in (out / "images" / rows[0]["config_key"]).iterdir())
