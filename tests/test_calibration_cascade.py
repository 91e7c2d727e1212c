"""The bundled calibration-world cascade: it loads offline and samples, the recipe command
trains and bundles a loadable cascade end to end at toy size, and the oracle sweep's rows."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from calibration_world import render
from calibration_world.bundled import bundled_cascade_path
from calibration_world.dataset import split_scenes
from calibration_world.evaluate import SKILL_FIELDS, heldout_captions, oracle_sweep, summarize
from calibration_world.scenes import (BACKGROUND_SETS, BACKGROUNDS, DEFAULT_BACKGROUNDS,
                                      TRAIN_SKILL_WEIGHTS)
from calibration_world.train_cascade import (default_recipe, load_recipe, main, stage_args,
                                              warmup_args, warmup_dir, warmup_phases)
from imagen_ref.checkpoint import read_manifest
from imagen_ref.configs import CONFIGS
from imagen_ref.pipeline import Cascade, StageSampling


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def bundled() -> Cascade:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return Cascade.from_pretrained(bundled_cascade_path(), device="cpu")


def test_bundled_cascade_loads_and_samples(bundled):
    path = bundled_cascade_path()
    manifest = json.loads((path / "cascade.json").read_text())
    assert [s["key"] for s in manifest["stages"]] == ["base", "sr64"]
    assert manifest["text_encoder"]["name_or_path"] == "minilm-l6"
    for record in manifest["stages"]:
        with safe_open(str(path / record["file"]), framework="pt") as f:  # shipped as float16
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        assert record["training"]["bundled_dtype"] == "float16"
        assert record["training"]["step"] > 0
    assert all(p.dtype == torch.float32 for s in bundled.stages for p in s.model.parameters())
    base, sr = bundled.sample(["a red circle", "a blue square above a green triangle"], [0, 1],
                              StageSampling(guidance=3.0, thresholding="static", steps=3))
    assert base.shape == (2, 3, 32, 32) and sr.shape == (2, 3, 64, 64)
    assert torch.isfinite(sr).all() and sr.abs().max() <= 1.0
    # the SR stage follows its low-res input: its 64x64 output, downsampled, is close to it
    down = torch.nn.functional.avg_pool2d(sr, 2)
    assert (down - base).abs().mean() < 0.25


def test_shipped_recipe_is_valid():
    recipe = load_recipe(default_recipe())
    assert [s["config"] for s in recipe["stages"]] == ["calworld-base-32-xattn", "calworld-sr-64"]
    assert all(s["config"] in CONFIGS and s["max_minutes"] > 0 for s in recipe["stages"])
    # the budget, 60 minutes on 2 CPU cores, is the steps the bundled run reached in them:
    # the recipe's steps are the bundle's (the stage's own and its last warm-up phase's), and
    # its time caps, which only stop a slower machine, stay within 1.5 times that hour
    bundle = {s["key"]: s["training"] for s in read_manifest(bundled_cascade_path())["stages"]}
    for stage, key in zip(recipe["stages"], ("base", "sr64")):
        assert bundle[key]["step"] == stage["steps"], key
        assert bundle[key]["data"]["init_from"]["step"] == warmup_phases(stage)[-1]["steps"], key
    minutes = sum(s["max_minutes"] + sum(w["max_minutes"] for w in warmup_phases(s))
                  for s in recipe["stages"])
    assert minutes <= 90
    sr = next(s for s in recipe["stages"] if s["stage"] == "sr")
    args = stage_args(sr, recipe, Path("data"), Path("ckpt"), Path("cache"), None, False)
    assert args.max_aug_level == sr["max_aug_level"] < 1.0


def test_recipe_stage_passes_the_high_noise_options():
    recipe = load_recipe(default_recipe())
    base = next(s for s in recipe["stages"] if s["stage"] == "base")
    paper = {k: v for k, v in base.items() if not k.startswith("high_noise")}
    plain = stage_args(paper, recipe, Path("data"), Path("ckpt"), Path("cache"), None, False)
    assert plain.high_noise_fraction == 0.0  # absent: t ~ U(0, 1) as in the paper
    args = stage_args({**base, "high_noise_fraction": 0.25, "high_noise_max_log_snr": -3.0}, recipe,
                      Path("data"), Path("ckpt"), Path("cache"), None, False)
    assert (args.high_noise_fraction, args.high_noise_max_log_snr) == (0.25, -3.0)
    # the shipped warm-up: relation scenes at 16x16, all at high noise; the stage's other settings
    first, second = warmup_phases(base)
    warm = warmup_args(base, recipe, Path("out"), None, False)
    assert (warm.image_size, warm.high_noise_fraction, warm.steps, warm.max_total_minutes) == (
        16, 1.0, first["steps"], first["max_minutes"])
    # then the base stage's own size and settings on the full skill mix, from the first phase's
    # weights; both phases draw the light background set, the stage itself the world's own
    then = warmup_args(base, recipe, Path("out"), None, False, phase=1)
    assert (then.image_size, then.high_noise_fraction, then.batch_size, then.max_total_minutes) == (
        None, base["high_noise_fraction"], base["batch_size"], second["max_minutes"])
    assert then.init_from == str(Path("out") / "base-warmup" / "checkpoint")
    assert then.data == str(Path("out") / "base-warmup2" / "data")
    assert first["backgrounds"] == second["backgrounds"] == "light" != DEFAULT_BACKGROUNDS
    assert "backgrounds" not in base and second["skills"] == TRAIN_SKILL_WEIGHTS
    # a recipe's minutes are the stage's budget over resumed runs, and an interrupted run resumes
    assert (warm.max_minutes, warm.resume) == (0.0, True)
    assert (warm.lr, warm.config) == (base["lr"], base["config"])
    assert warm.batch_size == first["batch_size"] != base["batch_size"]
    assert warm.data == str(Path("out") / "base-warmup" / "data") and warm.init_from is None
    # a stage's learning-rate decay is its own: its warm-up anneals only if it asks
    decaying = {**base, "lr_decay_fraction": 0.3}
    assert stage_args(decaying, recipe, Path("data"), Path("ckpt"), Path("cache"), None,
                      False).lr_decay_fraction == 0.3
    assert warmup_args(decaying, recipe, Path("out"), None, False).lr_decay_fraction == 0.0
    decaying["warmup"] = {**first, "lr_decay_fraction": 0.2}
    assert warmup_args(decaying, recipe, Path("out"), None, False).lr_decay_fraction == 0.2


def _toy_recipe(tmp_path):
    recipe = load_recipe(default_recipe())
    recipe["dataset"].update(n_train=6, n_val=2, n_prompts=2)
    for stage in recipe["stages"]:
        stage.update(steps=2, batch_size=2, warmup_steps=1)
        for warm in warmup_phases(stage):
            warm.update(n_train=4, steps=2)
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(recipe))
    return path


def test_recipe_command_end_to_end(tmp_path, capsys):
    out, bundle = tmp_path / "run", tmp_path / "bundle"
    argv = ["--out", str(out), "--recipe", str(_toy_recipe(tmp_path)), "--device", "cpu",
            "--bundle", str(bundle), "--no-progress"]
    assert main(argv) == 0
    assert str(bundle) in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert [s["step"] for s in run["stages"]] == [2, 2]
    # every warm-up phase trained on its own scene mix: the SR stage's first phase is not the
    # base stage's (a shared folder once gave the SR warm-up the base's relation scenes)
    recipe = json.loads(_toy_recipe(tmp_path).read_text())
    for stage, key in zip(recipe["stages"], ("base", "sr64")):
        for phase, warm in enumerate(warmup_phases(stage)):
            world = json.loads((warmup_dir(out, key, phase) / "data" / "world.json").read_text())
            assert world["skill_weights"] == warm["skills"], (key, phase)
            assert world["backgrounds"] == warm["backgrounds"]
    assert warmup_phases(recipe["stages"][1])[0]["skills"] != \
        warmup_phases(recipe["stages"][0])[0]["skills"]
    cascade = Cascade.from_pretrained(bundle, device="cpu")
    assert [s.config.image_size for s in cascade.stages] == [32, 64]
    assert cascade.stages[0].schedule.log_snr_min == -10.0
    # a rerun skips the completed stages: the weights stay byte-identical
    before = (out / "checkpoint" / "base.safetensors").read_bytes()
    assert main(argv) == 0
    assert (out / "checkpoint" / "base.safetensors").read_bytes() == before
    # a warm-up folder holding another dataset is refused, not trained on
    (out / "sr64.done.json").unlink()
    (out / "sr64-warmup" / "sr64.done.json").unlink()
    shutil.rmtree(out / "sr64-warmup" / "data")
    shutil.copytree(out / "base-warmup" / "data", out / "sr64-warmup" / "data")
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "sr64-warmup" in err and "skill_weights" in err and "another dataset" in err


def _train_base_with_warmup(tmp_path, warmup):
    """Train the toy recipe's base stage with `warmup`; returns its stage, OUT and the argv."""
    recipe = json.loads(_toy_recipe(tmp_path).read_text())
    base = recipe["stages"][0]
    base["warmup"] = warmup
    path = tmp_path / "warm.json"
    path.write_text(json.dumps(recipe))
    out = tmp_path / "run"
    argv = ["--out", str(out), "--recipe", str(path), "--device", "cpu", "--stages", "base",
            "--no-progress"]
    assert main(argv) == 0
    return base, out, argv


def test_recipe_warmup_trains_on_its_own_mix_and_the_stage_starts_from_it(tmp_path):
    base, out, _ = _train_base_with_warmup(tmp_path, {
        "skills": {"Positional": 1}, "n_train": 4, "data_seed": 7, "steps": 3, "max_minutes": 1,
        "high_noise_fraction": 1.0, "high_noise_max_log_snr": -8.0, "image_size": 16})
    warm = out / "base-warmup"
    truth = [json.loads(line) for line in (warm / "data" / "truth_train2014.jsonl").open()]
    assert len(truth) == 4 and {t["skill"] for t in truth} == {"Positional"}
    assert json.loads((warm / "data" / "world.json").read_text())["skill_weights"] == {"Positional": 1}
    warm_stage = read_manifest(warm / "checkpoint")["stages"][0]
    assert warm_stage["config"]["image_size"] == 16  # trained at half size, 4x cheaper per image
    warm_training = warm_stage["training"]
    assert (warm_training["step"], warm_training["high_noise_fraction"],
            warm_training["high_noise_max_log_snr"]) == (3, 1.0, -8.0)
    main_training = read_manifest(out / "checkpoint")["stages"][0]["training"]
    assert main_training["step"] == 2  # the stage's own settings, not the warm-up's
    assert main_training["high_noise_fraction"] == base.get("high_noise_fraction", 0.0) != 1.0
    assert main_training["data"]["init_from"] == {"step": 3, "config_name": base["config"],
                                                  "image_size": 16, "images_seen": 6}
    assert read_manifest(out / "checkpoint")["stages"][0]["config"]["image_size"] == 32
    run = json.loads((out / "run.json").read_text())
    assert run["stages"][0]["warmup"]["step"] == 3 and run["stages"][0]["step"] == 2


def test_recipe_warmup_in_phases_each_from_the_one_before_on_its_backgrounds(tmp_path):
    other = next(name for name in BACKGROUND_SETS if name != DEFAULT_BACKGROUNDS)
    _, out, argv = _train_base_with_warmup(tmp_path, [
        {"skills": {"Positional": 1}, "n_train": 4, "data_seed": 7, "steps": 3, "max_minutes": 1,
         "image_size": 16, "backgrounds": other},
        {"skills": {"Colors": 1}, "n_train": 3, "data_seed": 8, "steps": 4, "max_minutes": 1}])
    first, second = out / "base-warmup", out / "base-warmup2"
    for where, n, skill, colors in ((first, 4, "Positional", BACKGROUND_SETS[other]),
                                    (second, 3, "Colors", BACKGROUNDS)):
        truth = [json.loads(line) for line in (where / "data" / "truth_train2014.jsonl").open()]
        assert len(truth) == n and {t["skill"] for t in truth} == {skill}
        assert {tuple(t["scene"]["background"]) for t in truth} <= set(colors)
        world = json.loads((where / "data" / "world.json").read_text())
        assert world["background_colors"] == [list(c) for c in colors]
    assert set(BACKGROUND_SETS[other]).isdisjoint(BACKGROUNDS)
    second_training = read_manifest(second / "checkpoint")["stages"][0]["training"]
    assert second_training["step"] == 4
    assert second_training["data"]["init_from"]["step"] == 3          # from the first phase
    assert second_training["data"]["init_from"]["image_size"] == 16
    main_training = read_manifest(out / "checkpoint")["stages"][0]["training"]
    assert main_training["data"]["init_from"]["step"] == 4            # from the last phase
    run = json.loads((out / "run.json").read_text())
    assert [w["step"] for w in run["stages"][0]["warmup"]] == [3, 4]
    # a rerun finds every phase done and trains nothing
    before = (second / "checkpoint" / "base.safetensors").read_bytes()
    assert main(argv) == 0
    assert (second / "checkpoint" / "base.safetensors").read_bytes() == before


def test_an_interrupted_stage_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    from imagen_ref import train as train_mod
    from safetensors.torch import load_file
    import calibration_world.train_cascade as tc

    recipe = json.loads(_toy_recipe(tmp_path).read_text())
    recipe["stages"] = recipe["stages"][:1]
    recipe["stages"][0].pop("warmup")
    recipe["stages"][0]["steps"] = 4
    path = tmp_path / "four.json"
    path.write_text(json.dumps(recipe))
    monkeypatch.setattr(tc, "SAVE_EVERY", 1)
    argv = ["--recipe", str(path), "--device", "cpu", "--no-progress"]
    assert main(["--out", str(tmp_path / "whole"), *argv]) == 0

    real_save, saves = train_mod.save_checkpoint, []

    def killed_after_two_saves(run):  # the process dies right after saving step 2
        real_save(run)
        saves.append(run.step)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "save_checkpoint", killed_after_two_saves)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        main(["--out", str(out), *argv])
    assert not (out / "base.done.json").exists()
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    assert main(["--out", str(out), *argv]) == 0
    done = json.loads((out / "base.done.json").read_text())
    assert (done["resumed_at_step"], done["step"]) == (2, 4)
    # the same weights as the uninterrupted run (resume is bit-exact)
    a, b = (load_file(str(d / "checkpoint" / "base.safetensors")) for d in (tmp_path / "whole", out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another recipe does not resume that state, nor reuse the completed stage
    recipe["stages"][0]["lr"] *= 2
    path.write_text(json.dumps(recipe))
    assert main(["--out", str(out), *argv]) == 2
    assert "base.done.json records a stage trained with another recipe" in capsys.readouterr().err
    (out / "base.done.json").unlink()
    assert main(["--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert "base.train.safetensors was started with other settings (lr)" in err, err
    # a setting newer than the saved state reads as its default there: the old recipe resumes
    # it (nothing left to train), one that asks for a learning-rate decay does not
    recipe["stages"][0]["lr"] /= 2
    path.write_text(json.dumps(recipe))
    from imagen_ref import checkpoint as ck

    def header_before_the_setting(*a, **kw):
        header = real_read(*a, **kw)
        header["args"].pop("lr_decay_fraction")
        return header

    real_read = ck.read_train_state_header
    monkeypatch.setattr(ck, "read_train_state_header", header_before_the_setting)
    assert main(["--out", str(out), *argv]) == 0
    (out / "base.done.json").unlink()
    recipe["stages"][0]["lr_decay_fraction"] = 0.3
    path.write_text(json.dumps(recipe))
    assert main(["--out", str(out), *argv]) == 2
    assert "other settings (lr_decay_fraction)" in capsys.readouterr().err


@pytest.mark.parametrize("warmup, words", [
    ({"skills": {"Positional": 1}}, r"stages\[0\].warmup: lacks \['n_train', 'data_seed'"),
    ({"skills": {"Relations": 1}, "n_train": 4, "data_seed": 1, "steps": 1, "max_minutes": 1},
     r"stages\[0\].warmup.skills must map skills of"),
    ({"skills": {"Positional": 1}, "n_train": 4, "data_seed": 1, "steps": 1, "max_minutes": 1,
      "ema_decay": 0.9}, r"stages\[0\].warmup: unknown keys \['ema_decay'\]"),
    ([1, 2], r"stages\[0\].warmup\[0\] must be an object"),
    ([], r"stages\[0\].warmup is an empty list"),
    ({"skills": {"Positional": 1}, "n_train": 4, "data_seed": 1, "steps": 1, "max_minutes": 1,
      "backgrounds": "dark"}, r"stages\[0\].warmup.backgrounds must be one of \[.*'mid'.*\], not 'dark'"),
    ([{"skills": {"Positional": 1}, "n_train": 4, "data_seed": 1, "steps": 1, "max_minutes": 1},
      {"skills": {"Colors": 1}, "n_train": 4}], r"stages\[0\].warmup\[1\]: lacks \['data_seed'"),
])
def test_recipe_warmup_errors_name_the_key(tmp_path, capsys, warmup, words):
    recipe = json.loads(_toy_recipe(tmp_path).read_text())
    recipe["stages"][0]["warmup"] = warmup
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(recipe))
    assert main(["--out", str(tmp_path / "o"), "--recipe", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and re.search(words, err[0]), err
    assert not (tmp_path / "o" / "data").exists()  # rejected before any work


def test_recipe_errors_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "calibration_world.cascade_recipe", "dataset": {},
                               "text_encoder": "minilm-l6", "max_length": 32,
                               "stages": [{"stage": "base"}]}))
    assert main(["--out", str(tmp_path / "o"), "--recipe", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "stages[0]" in err


def _rendered(scene) -> torch.Tensor:
    arr = torch.from_numpy(np.asarray(render(scene, 64), dtype=np.float32))  # (H, W, 3)
    return arr.permute(2, 0, 1) / 127.5 - 1  # (3, 64, 64) in [-1, 1]


class _TruthCascade:
    """Stands in for a cascade: its 'samples' are the captions' ground-truth renders."""

    def __init__(self, n):
        caps = [c for c, _ in heldout_captions(n, 0)]
        self.truth = dict(zip(caps, split_scenes("val2014", n, 0)))

    def sample(self, prompts, seeds, cfg, num_stages=1):
        return [torch.stack([_rendered(self.truth[p]) for p in prompts])]


def test_oracle_sweep_rows_per_skill():
    caps = heldout_captions(12, 0)
    rows = oracle_sweep(_TruthCascade(12), caps, guidances=(0.0, 1.0), modes=("none", "static"),
                        steps=2, batch_size=5)
    assert len(rows) == 4 * 12
    assert {(r["guidance"], r["thresholding"]) for r in rows} == {
        (0.0, "none"), (0.0, "static"), (1.0, "none"), (1.0, "static")}
    for r in rows:
        assert set(SKILL_FIELDS) <= set(r) and r["skill"] is not None
        assert (r["relation"] is None) == (r["skill"] != "Positional")
    # the same caption gets the same noise seed in every setting (paired comparisons)
    assert len({(r["index"], r["seed"]) for r in rows}) == 12
    summary = summarize(rows)
    assert len(summary) == 4
    for s in summary:  # ground-truth renders: the oracle finds them right (>= 95% per skill)
        assert s["n"] == 12 and s["all_right"] >= 11 / 12
        assert s["saturation"] < 0.05


def test_oracle_sweep_on_bundled_base(bundled):
    rows = oracle_sweep(bundled, heldout_captions(2, 0), guidances=(1.0,), modes=("static",),
                        steps=2)
    assert len(rows) == 2 and all(isinstance(r["all_right"], bool) for r in rows)


def test_train_time_budget_stops_and_saves(tmp_path):
    from calibration_world.dataset import write_dataset
    from imagen_ref.checkpoint import stage_spec
    from imagen_ref.train import TrainArgs, train

    write_dataset(tmp_path / "world", n_train=4, n_val=2, size=32, n_prompts=1, progress=False)
    args = TrainArgs(stage="base", config="tiny-base", data=str(tmp_path / "world"),
                     out=str(tmp_path / "ckpt"), steps=50, batch_size=2, warmup_steps=0,
                     max_minutes=1e-9, log_every=2, save_every=0, device="cpu", progress=False,
                     embedding_cache=str(tmp_path / "emb"), max_length=32)
    result = train(args)
    assert result["step"] == 2  # the first log step past the budget
    assert stage_spec(tmp_path / "ckpt", "base").training["max_minutes"] == 1e-9


def test_sr_stage_started_on_given_lowres_reproduces_the_full_cascade(bundled):
    prompts, seeds = ["a red circle to the left of a blue square", "two green triangles"], [3, 4]
    cfg = StageSampling(guidance=3.0, thresholding="static", steps=3)
    base, sr = bundled.sample(prompts, seeds, cfg)
    (sr_only,) = bundled.sample(prompts, seeds, cfg, start=1, lowres=base)
    torch.testing.assert_close(sr_only, sr)
    (other,) = bundled.sample(prompts, seeds, cfg, start=1, lowres=base.flip(-1))
    assert (other - sr).abs().mean() > 0.05  # the input is used, not ignored


def test_sample_start_checks_its_input(bundled):
    one = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="low-res input is needed"):
        bundled.sample(["a red circle"], [0], start=1)
    with pytest.raises(ValueError, match="low-res input is needed"):
        bundled.sample(["a red circle"], [0], lowres=one)
    with pytest.raises(ValueError, match="one image per prompt"):
        bundled.sample(["a red circle"], [0], start=1, lowres=torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        bundled.sample(["a red circle"], [0], start=1, lowres=torch.full_like(one, float("nan")))
    with pytest.raises(ValueError, match="start=2"):
        bundled.sample(["a red circle"], [0], start=2, lowres=one)


def test_truth_lowres_is_what_sr_training_sees(tmp_path):
    from calibration_world.evaluate import truth_lowres
    from imagen_ref.data import CaptionedImages, Preprocess, Record

    scenes = split_scenes("val2014", 3, 0)
    records = []
    for k, scene in enumerate(scenes):
        path = tmp_path / f"{k}.png"
        render(scene, 64).save(path)
        records.append(Record(path, ("x",)))
    ds = CaptionedImages(records, Preprocess(64, 32))
    expected = torch.stack([ds[k]["lowres"] for k in range(3)])
    got = truth_lowres(scenes, 64, 32)
    assert got.shape == (3, 3, 32, 32)
    torch.testing.assert_close(got, expected)


def test_evaluate_sr_from_truth_command(tmp_path, capsys):
    import shutil

    from calibration_world.evaluate import main as evaluate_main

    out = tmp_path / "sr"
    argv = ["--n", "3", "--steps", "2", "--guidance", "1", "--thresholding", "static"]
    assert evaluate_main(["--sr-from-truth", *argv, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["from_truth"] and r["stages"] == 2 for r in rows)
    assert {r["caption"] for r in rows} == {c for c, _ in heldout_captions(3)}
    base_only = tmp_path / "base_only"
    shutil.copytree(bundled_cascade_path(), base_only)
    manifest = json.loads((base_only / "cascade.json").read_text())
    manifest["stages"] = manifest["stages"][:1]
    (base_only / "cascade.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert evaluate_main(["--sr-from-truth", *argv, "--cascade", str(base_only),
                          "--out", str(tmp_path / "x")]) == 2
    assert "super-resolution stage" in capsys.readouterr().err


class _LayoutCascade:
    """Stands in for a cascade: two objects on the caption's axis, the caption's subject first
    (`reads_order`) or whichever pair sorts first whatever the words say."""

    def __init__(self, reads_order: bool):
        self.reads_order = reads_order

    def _render(self, text):
        from calibration_world.captions import AXIS, parse_caption
        from calibration_world.scenes import PALETTE, Obj, Scene

        req = parse_caption(text)
        i, rel, j = req.relation
        first, second = req.groups[i], req.groups[j]
        if rel in ("right", "below"):
            first, second = second, first
        if not self.reads_order:
            first, second = sorted([first, second], key=lambda g: (g.color, g.shape))
        spots = [(0.25, 0.5), (0.75, 0.5)] if AXIS[rel] == "x" else [(0.5, 0.25), (0.5, 0.75)]
        objs = tuple(Obj(g.shape, g.color, x, y, 0.3, PALETTE[g.color])
                     for g, (x, y) in zip((first, second), spots))
        return _rendered(Scene(objs, "Positional"))

    def sample(self, prompts, seeds, cfg, num_stages=1):
        return [torch.stack([self._render(p) for p in prompts])]


def test_order_swap_test_tells_a_model_that_reads_the_order_from_one_that_does_not():
    from calibration_world.evaluate import order_swap_test, swapped_captions

    pairs = swapped_captions(8)
    assert len(set(pairs)) == 8
    for a, b in pairs:  # the same words, the two objects swapped
        assert sorted(a.split()) == sorted(b.split()) and a != b
    good = order_swap_test(_LayoutCascade(True), 8, steps=1, batch_size=3)
    assert good["n_found"] == 8 and good["order_right"] == 1.0 and good["flip_rate"] == 1.0
    blind = order_swap_test(_LayoutCascade(False), 8, steps=1, batch_size=3)
    assert blind["n_found"] == 8 and blind["order_right"] == 0.5 and blind["flip_rate"] == 0.0


def test_evaluate_swap_test_command(tmp_path):
    from calibration_world.evaluate import main as evaluate_main

    out = tmp_path / "swap"
    assert evaluate_main(["--swap-test", "--n", "2", "--steps", "2", "--out", str(out)]) == 0
    result = json.loads((out / "swap.json").read_text())  # default: guided, not w = 0
    assert result["n_pairs"] == 2 and result["stages"] == 1
    assert (result["guidance"], result["thresholding"]) == (3.0, "static")
    assert 0 <= result["n_found"] <= 2
