"""Tests for imagen_ref.checkpoint: round trips, manifests, training state, every CheckpointError."""
from __future__ import annotations

import json
import pickle
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from imagen_ref import checkpoint as ck
from imagen_ref.checkpoint import CheckpointError
from imagen_ref.configs import build_unet, get_config
from imagen_ref.diffusion import Schedule

TE = {"name_or_path": "minilm-l6", "encoder_id": "minilm-l6-test", "max_length": 32, "dim": 384}
TRAINING = {"step": 7, "images_seen": 28, "ema_decay": 0.999}


def seeded_model(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A U-Net with weights drawn from `seed` (global RNG untouched)."""
    model = build_unet(get_config(name, **overrides))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def inputs(config, batch: int = 2, seed: int = 1):
    """Deterministic model inputs for `config`."""
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    x = torch.randn(batch, 3, s, s, generator=g)
    t = torch.rand(batch, generator=g)
    text = torch.randn(batch, 5, config.text_dim, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])[:batch]
    if config.lowres_size is None:
        return x, t, text, mask, None, None
    low = torch.randn(batch, 3, config.lowres_size, config.lowres_size, generator=g)
    return x, t, text, mask, low, torch.rand(batch, generator=g)


def save(d, model, key=None, te=TE, aug=None):
    key = key or ck.stage_key(model.config)
    return ck.save_stage(d, key, model, schedule=Schedule("cosine"), aug_schedule=aug,
                         text_encoder_meta=te, training_meta=TRAINING)


@pytest.fixture(scope="module")
def base_model():
    return seeded_model("tiny-base")


@pytest.fixture(scope="module")
def sr_model():
    return seeded_model("tiny-sr", seed=1)


@pytest.fixture
def saved(tmp_path, base_model):
    """A checkpoint directory with one base stage."""
    save(tmp_path / "ckpt", base_model)
    return tmp_path / "ckpt"


# ---------------------------------------------------------------------------------------------
# round trip and manifest


@pytest.mark.parametrize("which", ["base", "sr"])
def test_round_trip_identical_weights_and_outputs(tmp_path, base_model, sr_model, which):
    model = base_model if which == "base" else sr_model
    aug = Schedule("cosine") if which == "sr" else None
    path = save(tmp_path, model, aug=aug)
    loaded, spec = ck.load_stage(tmp_path, ck.stage_key(model.config))
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    x, t, text, mask, low, aug_t = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(model(x, t, text, mask, lowres=low, aug_t=aug_t),
                           loaded(x, t, text, mask, lowres=low, aug_t=aug_t))
    assert spec.config == model.config and not loaded.training
    assert spec.schedule == Schedule("cosine") and spec.aug_schedule == aug
    assert spec.sha256 == ck.sha256_file(path) and spec.training == TRAINING
    assert spec.text_encoder == TE and spec.prediction == model.config.prediction


def test_manifest_layout_keys_and_order(tmp_path, base_model, sr_model):
    save(tmp_path, sr_model, aug=Schedule("cosine"))    # SR first: the manifest sorts by size
    save(tmp_path, base_model)
    m = ck.read_manifest(tmp_path)
    assert m["format"] == "imagen_ref.cascade" and m["version"] == 1 and m["text_encoder"] == TE
    assert [s["key"] for s in m["stages"]] == ["base", "sr64"]
    base, sr = m["stages"]
    assert base["file"] == "base.safetensors" and base["aug_schedule"] is None
    assert base["config"]["kind"] == "unet" and sr["config"]["kind"] == "efficient_unet"
    assert sr["aug_schedule"] == Schedule("cosine").to_dict()
    assert base["schedule"] == {"name": "cosine", "log_snr_min": -10.0, "log_snr_max": 15.0}
    # Replacing a stage keeps one entry per key and records the new file's hash.
    other = seeded_model("tiny-base", seed=5)
    save(tmp_path, other)
    m2 = ck.read_manifest(tmp_path)
    assert [s["key"] for s in m2["stages"]] == ["base", "sr64"]
    assert m2["stages"][0]["sha256"] != base["sha256"] and m2["stages"][1] == sr
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_text_encoder_mismatch_is_an_error(tmp_path, base_model, sr_model):
    save(tmp_path, base_model)
    with pytest.raises(CheckpointError, match=r"text encoder.*max_length: 32 vs 64"):
        save(tmp_path, sr_model, te={**TE, "max_length": 64})
    with pytest.raises(CheckpointError, match="text encoder"):
        ck.check_compatible(tmp_path, "sr64", {**TE, "encoder_id": "t5"})
    assert [s["key"] for s in ck.read_manifest(tmp_path)["stages"]] == ["base"]
    # Replacing the only stage may change the encoder: nothing else depends on it.
    save(tmp_path, base_model, te={**TE, "max_length": 64})
    assert ck.read_manifest(tmp_path)["text_encoder"]["max_length"] == 64


def test_loading_never_unpickles(saved, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a checkpoint load must not unpickle")

    for mod, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(mod, name, boom)
    ck.load_stage(saved, "base")
    assert set(load_file(str(saved / "base.safetensors"))) == set(
        build_unet(get_config("tiny-base")).state_dict())


# ---------------------------------------------------------------------------------------------
# every CheckpointError


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01                       # inside the tensor data, not the header
    path.write_bytes(bytes(data))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_manifest(d, fn):
    path = d / "cascade.json"
    m = json.loads(path.read_text())
    fn(m)
    path.write_text(json.dumps(m))


def _mismatched_config(m):
    m["stages"][0]["config"]["model_channels"] *= 2   # wider than the saved weights


CASES = {
    # name: (damage(ckpt_dir), target dir (relative), words the message must contain)
    "missing dir": (lambda d: None, "nope", [r"nope does not exist", "cascade.json"]),
    "missing cascade.json": (lambda d: (d / "cascade.json").unlink(), ".",
                             [r"cascade.json is missing", "train a stage"]),
    "malformed json": (lambda d: (d / "cascade.json").write_text('{"format": '), ".",
                       [r"cascade.json: not valid JSON \(line 1", "restore"]),
    "unknown format": (lambda d: _edit_manifest(d, lambda m: m.update(format="other")), ".",
                       [r"cascade.json: unknown format 'other'", "not an imagen_ref"]),
    "unknown version": (lambda d: _edit_manifest(d, lambda m: m.update(version=99)), ".",
                        [r"cascade.json: unsupported version 99", "upgrade imagen_ref"]),
    "missing stage field": (lambda d: _edit_manifest(d, lambda m: m["stages"][0].pop("sha256")),
                            ".", [r"cascade.json: stage #0 lacks \['sha256'\]"]),
    "missing stage file": (lambda d: (d / "base.safetensors").unlink(), ".",
                           [r"base.safetensors is missing", "copy the whole checkpoint"]),
    "truncated file": (lambda d: _truncate(d / "base.safetensors"), ".",
                       [r"base.safetensors is corrupt or truncated", "sha256", "re-copy"]),
    "flipped byte": (lambda d: _flip_byte(d / "base.safetensors"), ".",
                     [r"base.safetensors is corrupt or truncated", "re-copy"]),
    "config mismatch": (lambda d: _edit_manifest(d, _mismatched_config), ".",
                        [r"base.safetensors: the weights do not match the stage's config",
                         "shape mismatches", "different model"]),
    "unknown config kind": (lambda d: _edit_manifest(
        d, lambda m: m["stages"][0]["config"].update(kind="transformer")), ".",
        [r"config or schedule this imagen_ref cannot build", "transformer"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_errors_name_the_file_and_the_fix(saved, case):
    damage, target, words = CASES[case]
    damage(saved)
    with pytest.raises(CheckpointError) as info:
        ck.load_stage(saved / target, "base")
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    for w in words:
        assert re.search(w, msg), (w, msg)


def test_unknown_stage_key_lists_the_stages(saved):
    with pytest.raises(CheckpointError, match=r"has no stage 'sr256' \(stages: \['base'\]\)"):
        ck.load_stage(saved, "sr256")


def test_state_dict_mismatch_with_valid_hash(tmp_path, base_model):
    """Weights of another (narrower) model, re-hashed so only the key/shape check can catch it."""
    save(tmp_path, base_model)
    wide = seeded_model("tiny-base", model_channels=2 * get_config("tiny-base").model_channels)
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()},
              str(tmp_path / "base.safetensors"))
    _edit_manifest(tmp_path, lambda m: m["stages"][0].update(
        sha256=ck.sha256_file(tmp_path / "base.safetensors")))
    pattern = r"shape mismatches \(e.g. \S+: file \(\d+,.*\) vs config \(\d+,"
    with pytest.raises(CheckpointError, match=pattern):
        ck.load_stage(tmp_path, "base")


# ---------------------------------------------------------------------------------------------
# training state


def _stepped(model, optimizer, steps=2, seed=0):
    """A few real optimizer steps so every state tensor is non-trivial."""
    x, t, text, mask, low, aug_t = inputs(model.config, seed=seed)
    for _ in range(steps):
        model(x, t, text, mask, lowres=low, aug_t=aug_t).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("kind", ["AdamW", "Adafactor"])
def test_train_state_restores_optimizer_exactly(tmp_path, kind):
    model = seeded_model("tiny-sr").train()
    ema = seeded_model("tiny-sr", seed=3)

    def make(m):
        return getattr(torch.optim, kind)(m.parameters(), lr=1e-3, weight_decay=0.01)

    opt = make(model)
    _stepped(model, opt)
    gen = torch.Generator().manual_seed(11)
    torch.rand(5, generator=gen)
    meta = {"step": 2, "samples_per_rank": 8, "seed": 0}
    ck.save_train_state(tmp_path, "sr64", model=model, ema_model=ema, optimizer=opt, meta=meta,
                        rng={"loss_rank0": gen.get_state()})

    model2, ema2 = seeded_model("tiny-sr", seed=9).train(), seeded_model("tiny-sr", seed=8)
    opt2 = make(model2)
    header = ck.load_train_state(tmp_path, "sr64", model=model2, ema_model=ema2, optimizer=opt2)
    assert header["step"] == 2 and header["samples_per_rank"] == 8
    for a, b in ((model, model2), (ema, ema2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]      # tuples (betas, eps) restored as tuples
    assert s1["state"].keys() == s2["state"].keys()
    for idx in s1["state"]:
        for name, v in s1["state"][idx].items():
            assert torch.equal(v, s2["state"][idx][name]), (idx, name)
    gen2 = torch.Generator()
    gen2.set_state(header["rng"]["loss_rank0"])
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=gen2))
    # The restored optimizer takes the very same next step.
    _stepped(model, opt, steps=1, seed=4)
    _stepped(model2, opt2, steps=1, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(model.parameters(), model2.parameters()))


def test_train_state_errors(tmp_path):
    model, ema = seeded_model("tiny-sr"), seeded_model("tiny-sr")
    opt = torch.optim.AdamW(model.parameters())
    _stepped(model, opt, steps=1)
    with pytest.raises(CheckpointError, match=r"sr64.train.safetensors is missing; .*without --resume"):
        ck.load_train_state(tmp_path, "sr64", model=model, ema_model=ema, optimizer=opt)
    path = ck.save_train_state(tmp_path, "sr64", model=model, ema_model=ema, optimizer=opt,
                               meta={"step": 1})
    with pytest.raises(CheckpointError, match="holds AdamW state but the run uses Adafactor"):
        ck.load_train_state(tmp_path, "sr64", model=model, ema_model=ema,
                            optimizer=torch.optim.Adafactor(model.parameters()))
    narrow = seeded_model("tiny-sr", channels=tuple(c // 2 for c in get_config("tiny-sr").channels))
    with pytest.raises(CheckpointError, match="do not match the model built from the run's config"):
        ck.load_train_state(tmp_path, "sr64", model=narrow, ema_model=narrow,
                            optimizer=torch.optim.AdamW(narrow.parameters()))
    _flip_byte(path)
    with pytest.raises(CheckpointError, match=r"sr64.train.safetensors is corrupt: its tensors"):
        ck.load_train_state(tmp_path, "sr64", model=model, ema_model=ema, optimizer=opt)
    _truncate(path)
    with pytest.raises(CheckpointError, match=r"not a readable training state .* corrupt or truncated"):
        ck.load_train_state(tmp_path, "sr64", model=model, ema_model=ema, optimizer=opt)


def test_concurrent_stage_saves_keep_every_stage(tmp_path, base_model, sr_model):
    """Two trainings writing into one directory at once (here: threads) lose no stage."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(base_model, None), (sr_model, Schedule("cosine"))] * 4
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda job: save(tmp_path, job[0], aug=job[1]), jobs))
    manifest = ck.read_manifest(tmp_path)
    assert [s["key"] for s in manifest["stages"]] == ["base", "sr64"]
    for key in ("base", "sr64"):
        ck.load_stage(tmp_path, key)
