"""Tests for imagen_ref.data and imagen_ref.train: datasets, training, resume, the command line."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagen_ref import checkpoint as ck
from imagen_ref import train as train_mod
from imagen_ref.configs import build_unet, get_config
from imagen_ref.data import (CaptionedImages, DataError, Preprocess, ShardedSampler,
                             find_records, load_rgb, to_tensor)
from imagen_ref.diffusion import Schedule
from imagen_ref.train import TrainArgs, build_model, main, train


@pytest.fixture(scope="module", autouse=True)
def shared_encoder():
    """Load MiniLM once per module (train() would load it per call); never touch the hub."""
    real, loaded = train_mod.FrozenTextEncoder, {}

    def make(name, **kw):
        key = (name, kw["max_length"], str(kw["cache_dir"]))
        if key not in loaded:
            loaded[key] = real(name, **kw)
        return loaded[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(train_mod, "FrozenTextEncoder", make)
        yield


def args_for(data, out, cache, **kw) -> TrainArgs:
    base = dict(stage="base", config="tiny-base", data=str(data), out=str(out), steps=2,
                batch_size=4, lr=1e-3, warmup_steps=0, embedding_cache=str(cache),
                progress=False, save_every=0, log_every=10, device="cpu")
    return TrainArgs(**{**base, **kw})


# ---------------------------------------------------------------------------------------------
# data


def test_coco_layout(shapes_coco):
    records, layout = find_records(shapes_coco)
    assert layout == "coco" and len(records) == 64
    assert records[0].path.name == "COCO_train2014_000000001000.jpg" and records[0].path.is_file()
    assert records[0].captions == ("a red square", "a red square on a white background")


def test_pairs_layout_is_recursive_and_skips_uncaptioned(shapes_pairs, tmp_path):
    records, layout = find_records(shapes_pairs)
    assert layout == "pairs" and len(records) == 64
    assert {r.path.parent.name for r in records} == {"part0", "part1"}
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.JPG")
    (tmp_path / "b.txt").write_text("first caption\n\n  second caption \n")
    records, _ = find_records(tmp_path)
    assert [(r.path.name, r.captions) for r in records] == [("b.JPG", ("first caption",
                                                                       "second caption"))]


def test_base_item_is_center_crop_bicubic_in_unit_range(tmp_path):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    im.save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("noise")
    ds = CaptionedImages(find_records(tmp_path)[0], Preprocess(32))
    item = ds[0]
    expected = im.crop((10, 0, 70, 60)).resize((32, 32), Image.Resampling.BICUBIC)
    ref = torch.from_numpy(np.asarray(expected, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert item["caption"] == "noise" and "lowres" not in item
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert torch.allclose(item["image"], ref, atol=1e-6)
    assert item["image"].min() >= -1 and item["image"].max() <= 1


def test_sr_item_random_crop_and_bicubic_lowres(tmp_path):
    im = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    im.save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("noise")
    ds = CaptionedImages(find_records(tmp_path)[0], Preprocess(64, 32), seed=3)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["lowres"].shape == (3, 32, 32)
    crop = Image.fromarray(((item["image"] + 1) * 127.5).round().to(torch.uint8)
                           .permute(1, 2, 0).numpy())
    low = to_tensor(crop.resize((32, 32), Image.Resampling.BICUBIC))
    assert torch.allclose(item["lowres"], low, atol=1e-6)
    assert torch.equal(ds[0]["image"], item["image"])            # seeded: same key, same crop
    crops = {tuple(ds[k * len(ds)]["image"][0, 0, :4].tolist()) for k in range(8)}
    assert len(crops) > 1                                         # new position per epoch


def test_caption_choice_is_seeded_per_epoch(shapes_coco):
    records, _ = find_records(shapes_coco)
    ds, ds2 = CaptionedImages(records, Preprocess(32), 0), CaptionedImages(records, Preprocess(32), 1)
    picks = [ds[e * 64 + 5]["caption"] for e in range(12)]
    assert picks == [ds[e * 64 + 5]["caption"] for e in range(12)]
    assert set(picks) == set(records[5].captions)
    assert picks != [ds2[e * 64 + 5]["caption"] for e in range(12)]


@pytest.mark.parametrize("mode, value, rgb", [
    ("L", 128, (128, 128, 128)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ("RGBA", (10, 20, 30, 0), (255, 255, 255)),      # fully transparent: white background
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ("I;16", 65535, (255, 255, 255)),
    ("P", 0, (0, 0, 0)),
])
def test_any_mode_becomes_rgb(tmp_path, mode, value, rgb):
    ext = ".jpg" if mode == "CMYK" else ".png"
    Image.new(mode, (16, 16), value).save(tmp_path / f"x{ext}")
    im = load_rgb(tmp_path / f"x{ext}")
    assert im.mode == "RGB" and im.size == (16, 16)
    assert all(abs(a - b) <= 2 for a, b in zip(im.getpixel((8, 8)), rgb))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_names_the_file(tmp_path, damage):
    path = tmp_path / "sub" / "broken.png"
    path.parent.mkdir()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    data = path.read_bytes()
    path.write_bytes(b"not an image at all" if damage == "garbage" else data[: len(data) // 2])
    path.with_suffix(".txt").write_text("a broken picture")
    ds = CaptionedImages(find_records(tmp_path)[0], Preprocess(32))
    with pytest.raises(DataError, match=rf"{path}: cannot read the image .* replace or remove"):
        ds[0]


def test_find_records_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope does not exist; pass a COCO root"):
        find_records(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no captioned images found under .*same-stem .txt"):
        find_records(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2014.json").write_text("{}")
    with pytest.raises(DataError, match=r"captions_train2014.json: not COCO caption annotations"):
        find_records(tmp_path)


def test_sampler_shards_are_disjoint_equal_and_resumable():
    n, world = 10, 3
    take = lambda it, k: [next(it) for _ in range(k)]  # noqa: E731
    shards = [take(iter(ShardedSampler(n, seed=4, rank=r, world_size=world)), 4) for r in range(world)]
    firsts = [s for shard in shards for s in shard]
    assert sorted(set(firsts)) == list(range(n))       # epoch 0 covered, 2 wrapped repeats
    assert all(len(s) == 4 for s in shards)
    full = take(iter(ShardedSampler(n, seed=4, rank=1, world_size=world)), 12)
    assert take(iter(ShardedSampler(n, seed=4, rank=1, world_size=world, start=5)), 7) == full[5:]
    assert [k // n for k in full] == [0] * 4 + [1] * 4 + [2] * 4
    assert [k % n for k in full[:4]] != [k % n for k in full[4:8]]   # reshuffled each epoch


# ---------------------------------------------------------------------------------------------
# training


@pytest.fixture(scope="module")
def base_run(shapes_pairs, embedding_cache, tmp_path_factory):
    """tiny-base trained for 200 steps on the shapes; its checkpoint directory is shared."""
    out = tmp_path_factory.mktemp("cascade")
    result = train(args_for(shapes_pairs, out, embedding_cache, steps=200, save_every=100,
                            log_every=50))
    return result, out


def test_base_loss_falls(base_run):
    result, out = base_run
    losses = result["losses"]
    assert len(losses) == 200 and all(np.isfinite(losses))
    first, last = statistics.mean(losses[:30]), statistics.mean(losses[-30:])
    assert last <= 0.7 * first, (first, last)
    stage = next(s for s in ck.read_manifest(out)["stages"] if s["key"] == "base")
    assert stage["training"]["step"] == 200 and stage["training"]["images_seen"] == 800
    assert stage["training"]["data"]["layout"] == "pairs"
    log = [json.loads(line) for line in (out / "base.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [50, 100, 150, 200]
    assert ck.read_train_state(out, "base")[0]["step"] == 200


def test_sr_stage_lands_in_the_same_checkpoint(base_run, shapes_coco, embedding_cache):
    _, out = base_run
    base_before = ck.read_manifest(out)["stages"][0]
    result = train(args_for(shapes_coco, out, embedding_cache, stage="sr", config="tiny-sr",
                            steps=3, batch_size=2))
    assert result["key"] == "sr64" and len(result["losses"]) == 3
    manifest = ck.read_manifest(out)
    assert [s["key"] for s in manifest["stages"]] == ["base", "sr64"]
    assert manifest["stages"][0] == base_before
    sr = manifest["stages"][1]
    assert sr["aug_schedule"] is not None and sr["training"]["data"]["layout"] == "coco"
    assert {p.name for p in out.glob("*.safetensors")} == {
        "base.safetensors", "base.train.safetensors", "sr64.safetensors", "sr64.train.safetensors"}
    # The directory is a working cascade: text -> 32px base -> 64px SR.
    from imagen_ref.pipeline import Cascade, StageSampling

    cascade = Cascade.from_pretrained(out, device="cpu", embedding_cache=str(embedding_cache))
    images = cascade.sample(["a red square"], [0], StageSampling(steps=2))
    assert [tuple(x.shape) for x in images] == [(1, 3, 32, 32), (1, 3, 64, 64)]


def test_resume_is_bit_exact(shapes_pairs, embedding_cache, tmp_path):
    """4 steps in one go == 2 steps, stop, --resume to 4: weights, EMA, optimizer, losses."""
    common = dict(batch_size=2, grad_accum=2, warmup_steps=4, ema_decay=0.99, log_every=1)
    full = train(args_for(shapes_pairs, tmp_path / "a", embedding_cache, steps=4, **common))
    first = train(args_for(shapes_pairs, tmp_path / "b", embedding_cache, steps=2, **common))
    rest = train(args_for(shapes_pairs, tmp_path / "b", embedding_cache, steps=4, resume=True,
                          **common))
    assert (first["step"], rest["start_step"], rest["step"]) == (2, 2, 4)
    assert first["losses"] + rest["losses"] == full["losses"]
    (ha, ta), (hb, tb) = ck.read_train_state(tmp_path / "a", "base"), ck.read_train_state(
        tmp_path / "b", "base")
    assert ta.keys() == tb.keys() and any(k.startswith("optim/") for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta), [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert ha["optimizer"] == hb["optimizer"] and hb["step"] == 4
    sha = [ck.read_manifest(tmp_path / d)["stages"][0]["sha256"] for d in "ab"]
    assert sha[0] == sha[1]


def test_max_total_minutes_counts_the_runs_it_resumes(shapes_pairs, embedding_cache, tmp_path,
                                                     capsys):
    first = train(args_for(shapes_pairs, tmp_path, embedding_cache, steps=2, log_every=1))
    header, before = ck.read_train_state(tmp_path, "base")
    spent = header["train_seconds"]
    assert 0 < spent <= first["train_seconds"]
    # a stage budget already spent: the resumed run trains nothing and leaves the state alone
    idle = train(args_for(shapes_pairs, tmp_path, embedding_cache, steps=6, log_every=1,
                          resume=True, max_total_minutes=spent / 60 / 2))
    assert (idle["start_step"], idle["step"], idle["losses"]) == (2, 2, [])
    assert "--max-total-minutes" in capsys.readouterr().err
    _, after = ck.read_train_state(tmp_path, "base")
    assert all(torch.equal(before[k], after[k]) for k in before)
    # budget left: it trains on, and the recorded time adds up over the runs
    more = train(args_for(shapes_pairs, tmp_path, embedding_cache, steps=4, log_every=1,
                          resume=True, max_total_minutes=60))
    assert (more["start_step"], more["step"]) == (2, 4)
    assert more["train_seconds"] > spent
    record = ck.read_manifest(tmp_path)["stages"][0]["training"]
    assert spent < record["train_seconds"] <= more["train_seconds"] + 0.05
    assert record["max_total_minutes"] == 60
    # --max-minutes is this run's budget only: a tiny one stops at the first log step past it
    last = train(args_for(shapes_pairs, tmp_path, embedding_cache, steps=9, log_every=1,
                          resume=True, max_minutes=1e-9))
    assert (last["start_step"], last["step"]) == (4, 5)


def test_lr_decay_fraction_anneals_the_last_part_of_the_steps():
    args = TrainArgs(lr=2e-3, steps=100, warmup_steps=10, lr_decay_fraction=0.3)
    steps = np.arange(100)
    # independently: the lower of the warm-up ramp and the decay ramp, each piecewise linear
    ramp_up = np.interp(steps, [-1, 9], [0.0, 2e-3])
    ramp_down = np.interp(steps, [70, 100], [2e-3, 0.0])
    expected = np.minimum(ramp_up, ramp_down)
    np.testing.assert_allclose([train_mod.lr_at(args, int(s)) for s in steps], expected, atol=1e-12)
    # without it the rate stays at --lr after the warm-up, as before
    constant = dataclasses.replace(args, lr_decay_fraction=0.0)
    assert [train_mod.lr_at(constant, s) for s in (9, 70, 99)] == [2e-3] * 3
    # progress by time: past 1 - F of the budget the rate falls whatever the step
    timed = dataclasses.replace(args, max_total_minutes=10.0)
    progress = train_mod.time_progress(timed, 60.0 * 3, prior_seconds=60.0 * 5)  # 8 of 10 min
    assert progress == pytest.approx(0.8)
    assert train_mod.lr_at(timed, 20, progress) == pytest.approx(2e-3 * 0.2 / 0.3)
    assert train_mod.lr_at(timed, 20, 1.0) == 0.0
    # --max-minutes counts this run alone; the larger share wins
    both = dataclasses.replace(timed, max_minutes=2.0)
    assert train_mod.time_progress(both, 60.0, prior_seconds=0.0) == pytest.approx(0.5)


def test_lr_decay_by_time_counts_the_runs_it_resumes(shapes_pairs, embedding_cache, tmp_path):
    first = train(args_for(shapes_pairs, tmp_path, embedding_cache, steps=2, log_every=1))
    assert first["step"] == 2
    spent = ck.read_train_state(tmp_path, "base")[0]["train_seconds"]
    # a quarter of the stage budget spent before this run, the decay over all of it: the first
    # step of the resumed run trains at 3/4 of the rate, and the rate only falls from there
    train(args_for(shapes_pairs, tmp_path, embedding_cache, steps=1000, log_every=1, resume=True,
                   max_total_minutes=4 * spent / 60, lr_decay_fraction=1.0))
    log = [json.loads(line) for line in (tmp_path / "base.log.jsonl").read_text().splitlines()]
    resumed = [r for r in log if r["step"] > 2]
    assert resumed[0]["step"] == 3 and resumed[0]["lr"] == pytest.approx(0.75e-3)
    rates = [r["lr"] for r in resumed]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert len(resumed) < 1000 - 2  # stopped by the budget, not the step count
    record = ck.read_manifest(tmp_path)["stages"][0]["training"]
    assert record["lr_decay_fraction"] == 1.0


def test_init_from_starts_from_another_runs_raw_weights(shapes_pairs, embedding_cache, tmp_path):
    train(args_for(shapes_pairs, tmp_path / "a", embedding_cache, steps=3))
    _, ta = ck.read_train_state(tmp_path / "a", "base")
    raw = {k[len("model/"):]: v for k, v in ta.items() if k.startswith("model/")}
    fresh = build_model(get_config("tiny-base"), 0).state_dict()
    assert any(not torch.equal(fresh[k], v) for k, v in raw.items())  # a trained away from init
    # at lr 0 nothing moves, so b ends (raw and EMA) exactly where --init-from started it
    result = train(args_for(shapes_pairs, tmp_path / "b", embedding_cache, steps=2, lr=0.0,
                            init_from=str(tmp_path / "a")))
    assert (result["start_step"], result["step"]) == (0, 2)
    _, tb = ck.read_train_state(tmp_path / "b", "base")
    assert all(torch.equal(tb["model/" + k], v) and torch.equal(tb["ema/" + k], v)
               for k, v in raw.items())
    model, _ = ck.load_stage(tmp_path / "b", "base")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in raw.items())
    record = ck.read_manifest(tmp_path / "b")["stages"][0]["training"]
    assert record["data"]["init_from"] == {"step": 3, "config_name": "tiny-base", "image_size": 32,
                                           "images_seen": 12}
    assert record["step"] == 2
    # resuming b continues b (the state --resume finds wins) and keeps the record of its start
    again = train(args_for(shapes_pairs, tmp_path / "b", embedding_cache, steps=3, lr=0.0,
                           init_from=str(tmp_path / "c"), resume=True))
    assert (again["start_step"], again["step"]) == (2, 3)
    record = ck.read_manifest(tmp_path / "b")["stages"][0]["training"]
    assert record["data"]["init_from"]["step"] == 3 and record["step"] == 3


def test_init_from_a_lower_resolution_run_resamples_its_position_tables(shapes_pairs,
                                                                        embedding_cache, tmp_path):
    from imagen_ref.unet import resize_position_tables

    common = dict(config="calworld-base-32-xattn", batch_size=2, steps=1)
    train(args_for(shapes_pairs, tmp_path / "low", embedding_cache, image_size=16, **common))
    header, low = ck.read_raw_weights(tmp_path / "low", "base")
    assert (header["config"]["image_size"], header["config"]["attn_resolutions"]) == (16, [8, 4])
    train(args_for(shapes_pairs, tmp_path / "high", embedding_cache, lr=0.0,
                   init_from=str(tmp_path / "low"), **common))
    _, high = ck.read_raw_weights(tmp_path / "high", "base")
    want = resize_position_tables(low, build_unet(get_config("calworld-base-32-xattn")))
    assert high.keys() == want.keys() and all(torch.equal(high[k], want[k]) for k in want)
    assert high["pos_emb"].shape[-1] == 32 and low["pos_emb"].shape[-1] == 16
    record = ck.read_manifest(tmp_path / "high")["stages"][0]
    assert record["config"]["image_size"] == 32
    assert record["training"]["data"]["init_from"]["image_size"] == 16


def test_adafactor_bf16_run(shapes_pairs, embedding_cache, tmp_path):
    result = train(args_for(shapes_pairs, tmp_path, embedding_cache, optimizer="adafactor",
                            precision="bf16", steps=2, batch_size=2, warmup_steps=10))
    assert len(result["losses"]) == 2 and all(np.isfinite(result["losses"]))
    header, _ = ck.read_train_state(tmp_path, "base")
    assert header["optimizer"]["kind"] == "Adafactor"
    assert header["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-4)  # warmup 2/10


def test_ema_follows_the_tensorflow_warmup_rule():
    from imagen_ref.ema import EMA

    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.999)
    assert [ema.decay_at(n) for n in (0, 90)] == [0.1, 0.91] and ema.decay_at(10**6) == 0.999
    start = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 0)
    assert torch.allclose(ema.model.weight, 0.1 * start + 0.9 * model.weight)
    assert not ema.model.weight.requires_grad


# ---------------------------------------------------------------------------------------------
# command line


def cli(data, out, cache, *extra) -> list[str]:
    return ["--stage", "base", "--config", "tiny-base", "--data", str(data), "--out", str(out),
            "--embedding-cache", str(cache), "--steps", "1", "--batch-size", "2", "--no-progress",
            "--device", "cpu", *extra]


def test_cli_end_to_end_prints_the_checkpoint(shapes_pairs, embedding_cache, tmp_path, capsys):
    assert main(cli(shapes_pairs, tmp_path / "ck", embedding_cache)) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(f"checkpoint: {tmp_path / 'ck'} (stage base, step 1")
    ck.load_stage(tmp_path / "ck", "base")


def test_cli_help_has_defaults_and_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0
    assert "examples:" in text and "--grad-accum" in text and "(default: 0.9999)" in text


def _broken_image_dir(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "bad.png").write_bytes(b"\x89PNG garbage")
    (d / "bad.txt").write_text("a red square")
    return d


def _other_encoder_ckpt(tmp_path):
    """A checkpoint directory whose base stage used another text encoder."""
    d = tmp_path / "ck"
    ck.save_stage(d, "base", build_unet(get_config("tiny-base")), schedule=Schedule(),
                  aug_schedule=None, text_encoder_meta={"name_or_path": "t5", "encoder_id": "t5",
                                                        "max_length": 128, "dim": 4096},
                  training_meta={"step": 0})
    return d


USER_ERRORS = {
    # name: (argv edits (data, out) -> argv, words in the message)
    "missing data": (lambda t, p: cli(t / "nope", t / "o", t / "c"), r"nope does not exist"),
    "unknown config": (lambda t, p: cli(p, t / "o", t / "c", "--config", "huge"),
                       r"unknown config 'huge'; choose one of \[.*'tiny-base'"),
    "stage mismatch": (lambda t, p: cli(p, t / "o", t / "c", "--stage", "sr"),
                       r"--config tiny-base is a base model but --stage is sr; use --stage base"),
    "no images": (lambda t, p: cli(t, t / "o", t / "c"), r"no captioned images found under"),
    "bad number": (lambda t, p: cli(p, t / "o", t / "c", "--steps", "0"), r"--steps must be >= 1"),
    "negative stage budget": (lambda t, p: cli(p, t / "o", t / "c", "--max-total-minutes", "-1"),
                              r"--max-total-minutes must be >= 0 \(0: no limit\)"),
    "bad lr decay": (lambda t, p: cli(p, t / "o", t / "c", "--lr-decay-fraction", "2"),
                     r"--lr-decay-fraction must be in \[0, 1\]"),
    "bad aug level": (lambda t, p: cli(p, t / "o", t / "c", "--max-aug-level", "0"),
                      r"--max-aug-level must be in \(0, 1\]"),
    "bad high-noise fraction": (lambda t, p: cli(p, t / "o", t / "c", "--high-noise-fraction", "1.5"),
                                r"--high-noise-fraction must be in \[0, 1\]"),
    "empty high-noise band": (lambda t, p: cli(p, t / "o", t / "c", "--high-noise-fraction", "0.5",
                                               "--high-noise-max-log-snr", "-20"),
                              r"--high-noise-max-log-snr -20 must be above the schedule's minimum "
                              r"log-SNR -10"),
    "unreadable image": (lambda t, p: cli(_broken_image_dir(t), t / "o", t / "c"),
                         r"broken/bad.png: cannot read the image"),
    "other text encoder": (lambda t, p: cli(p, _other_encoder_ckpt(t), t / "c", "--stage", "sr",
                                            "--config", "tiny-sr"),
                           r"cascade.json: the new stage's text encoder differs"),
    "bad image size": (lambda t, p: cli(p, t / "o", t / "c", "--image-size", "12"),
                       r"--image-size 12: size 12 must divide the config's image size 32"),
    "init-from without a state": (lambda t, p: cli(p, t / "o", t / "c", "--init-from", str(t / "x")),
                                  r"x/base.train.safetensors is missing: --init-from needs the "
                                  r"checkpoint directory of a run that trained stage base"),
    "init-from another config": (lambda t, p: cli(p, t / "o", t / "c", "--init-from",
                                                  str(_other_config_state(t))),
                                 r"other: its stage base was trained with config 'calworld-base-32', "
                                 r"which is not --config tiny-base at this or another resolution"),
    "init-from a corrupt state": (lambda t, p: _corrupt_state(t) or cli(p, t / "o2", t / "c",
                                                                        "--init-from", str(t / "o")),
                                  r"o/base.train.safetensors is not a readable training state .*"
                                  r"re-copy that run's checkpoint or start without --init-from"),
    "corrupt train state": (lambda t, p: _corrupt_state(t) or cli(p, t / "o", t / "c", "--resume"),
                            r"base.train.safetensors is not a readable training state"),
}


def _other_config_state(tmp_path):
    """A checkpoint directory with a training state of a base config other than tiny-base."""
    model = build_unet(get_config("calworld-base-32"))
    ck.save_train_state(tmp_path / "other", "base", model=model, ema_model=model,
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        meta={"step": 1, "config_name": "calworld-base-32",
                              "config": dataclasses.asdict(get_config("calworld-base-32"))})
    return tmp_path / "other"


def _corrupt_state(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "base.train.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_cli_user_errors_exit_2_with_one_line(case, shapes_pairs, tmp_path, capsys):
    make_argv, pattern = USER_ERRORS[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = make_argv(empty if case == "no images" else tmp_path, shapes_pairs)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


# ---------------------------------------------------------------------------------------------
# data-parallel


@pytest.mark.slow
def test_torchrun_two_ranks_on_cpu(shapes_pairs, embedding_cache, tmp_path):
    """Two gloo ranks: one checkpoint, images counted over both ranks, printed once."""
    out = tmp_path / "ddp"
    argv = cli(shapes_pairs, out, embedding_cache, "--steps", "2", "--save-every", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "imagen_ref.train", *argv]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint: ") == 1
    stage = ck.read_manifest(out)["stages"][0]
    assert stage["training"]["world_size"] == 2 and stage["training"]["images_seen"] == 8
    header, tensors = ck.read_train_state(out, "base")
    assert {"rng/loss_rank0", "rng/loss_rank1"} <= set(tensors)
    assert not torch.equal(tensors["rng/loss_rank0"], tensors["rng/loss_rank1"])
    ck.load_stage(out, "base")
