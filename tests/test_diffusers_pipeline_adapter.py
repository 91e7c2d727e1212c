"""--model diffusers:PATH_OR_ID for any text-to-image pipeline (bench/diffusers_pipeline_adapter.py)
on tiny random Stable Diffusion, SDXL, PixArt-Σ and FLUX pipelines saved to folders; nothing is
downloaded."""
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers (the optional extra) is not installed")

from bench.adapters import AdapterError, load_adapter  # noqa: E402
from bench.diffusers_pipeline_adapter import (SCHEDULERS, DiffusersPipelineAdapter,  # noqa: E402
                                              threshold_overrides, thresholding_support)
from bench.drawbench import main as drawbench_main  # noqa: E402
from bench.runner import KILL_AFTER_ENV  # noqa: E402
from bench.sampling import SAMPLERS, SamplingConfig  # noqa: E402
from diffusers_fixtures import write_pipeline  # noqa: E402
from fakes import make_clip_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# family -> (sampler its runs use, guidance knob, default image size)
FAMILIES = {"sd": ("ddim", "cfg", 32), "sdxl": ("euler", "cfg", 32),
            "pixart": ("dpmpp", "cfg", 256), "flux": ("flow-euler", "distilled", 256)}
RESOLUTION = {"flux": "64"}  # FLUX through --resolution (its default is 256 px)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers_generic")
    for family in FAMILIES:
        write_pipeline(family, root / family)
    prompts = root / "prompts.csv"
    with open(prompts, "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows([{"text": "a red cat", "category": "Colors"},
                          {"text": "a blue dog", "category": "Counting"}])
    return SimpleNamespace(path=root, prompts=prompts, clip=make_clip_dir(root / "clip"))


@pytest.fixture(scope="module")
def adapters(root):
    return {f: load_adapter(f"diffusers:{root.path / f}", device="cpu") for f in FAMILIES}


def items(pairs):
    return [SimpleNamespace(text=t, seed=s, prompt_id=f"p{i}", k=0) for i, (t, s) in enumerate(pairs)]


def config(family, **kw):
    return SamplingConfig(**{"guidance": (3.0,), "sampler": FAMILIES[family][0], "steps": 2, **kw})


def cli(root, family, out, **flags):
    base = {"model": f"diffusers:{root.path / family}", "prompts": str(root.prompts),
            "samples_per_prompt": "1", "guidance": "1,4", "thresholding": "none",
            "sampler": FAMILIES[family][0], "steps": "2", "batch_size": "1", "device": "cpu",
            "clip_model": root.clip, "bootstrap_samples": "20", "out": str(out), **flags}
    if family in RESOLUTION:
        base.setdefault("resolution", RESOLUTION[family])
    argv = []
    for k, v in base.items():
        argv += [f"--{k.replace('_', '-')}", v]
    return argv + ["--no-progress"]


def run_main(argv) -> int:
    torch.set_num_threads(1)  # CPU kernels' last bits depend on the thread count (conftest restores)
    return drawbench_main(argv)


def image_hashes(run: Path) -> dict:
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run / "images").rglob("*.png"))}


# ---------------------------------------------------------------------------------------------
# loading, guidance knobs, provenance


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_by_path_and_records_its_provenance(root, adapters, family):
    adapter = adapters[family]
    sampler, knob, size = FAMILIES[family]
    assert isinstance(adapter, DiffusersPipelineAdapter)
    cfg = config(family)
    adapter.check([], cfg)
    images = adapter.generate(items([("a red cat", 1), ("a blue dog", 2)]), cfg)
    assert [im.shape for im in images] == [(size, size, 3)] * 2 and images[0].dtype == np.uint8
    d = json.loads(json.dumps(adapter.describe()))  # JSON-ready
    index = json.loads((root.path / family / "model_index.json").read_text())
    assert d["pipeline_class"] == index["_class_name"] and d["guidance"]["knob"] == knob
    assert d["model_id"] == f"diffusers:{family}@{adapter.digest[:12]}" and d["dtype"] == "float32"
    weights = {name: c["weights"] for name, c in d["components"].items()}
    for name in ("vae", "text_encoder", "unet" if family.startswith("sd") else "transformer"):
        (file, sha), = weights[name].items()
        assert sha == hashlib.sha256((root.path / family / file).read_bytes()).hexdigest()
    saved = d["scheduler"]["saved"]["class"]
    built = d["scheduler"]["per_config"][cfg.config_key]
    assert saved == index["scheduler"][1] and built["class"] == SCHEDULERS[sampler][0]
    assert load_adapter(f"diffusers:{root.path / family}").model_id == adapter.model_id


def test_guidance_knob_drives_the_pipeline(adapters):
    sd, flux = adapters["sd"], adapters["flux"]
    batch = items([("a red cat", 1)])
    conditional = sd.generate(batch, config("sd", guidance=(1.0,)))[0]
    guided = sd.generate(batch, config("sd", guidance=(8.0,)))[0]
    assert not np.array_equal(conditional, guided)
    args = flux.call_arguments(batch, config("flux", guidance=(3.5,)))
    assert args["guidance_scale"] == 3.5 and "negative_prompt" not in args  # distilled: no uncond


def test_flux_without_a_guidance_embedding_gets_true_cfg_with_the_negative_prompt(tmp_path):
    adapter = load_adapter(f"diffusers:{write_pipeline('flux-cfg', tmp_path / 'flux')}",
                           device="cpu", resolution=(32, 32))
    batch = items([("a red cat", 1)])
    adapter.check(batch, config("flux"))
    assert adapter.describe()["guidance"]["knob"] == "true-cfg"
    args = adapter.call_arguments(batch, config("flux", guidance=(4.0,)))
    assert args["true_cfg_scale"] == 4.0 and args["negative_prompt"] == [""]
    assert "guidance_scale" not in args and (args["height"], args["width"]) == (32, 32)
    conditional = adapter.generate(batch, config("flux", guidance=(1.0,)))[0]
    assert not np.array_equal(conditional, adapter.generate(batch, config("flux", guidance=(4.0,)))[0])


def test_a_repo_id_is_found_in_the_hugging_face_cache_and_never_downloaded(root, monkeypatch,
                                                                            tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-sd"
    shutil.copytree(root.path / "sd", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = load_adapter("diffusers:tiny-org/tiny-sd", device="cpu")
    assert adapter.model_id == f"diffusers:tiny-org/tiny-sd@{commit[:12]}"
    assert adapter.describe()["revision"] == commit
    assert load_adapter(f"diffusers:tiny-org/tiny-sd@{commit}").model_id == adapter.model_id
    with pytest.raises(AdapterError, match="holds no snapshot of the repo tiny-org/nope"):
        load_adapter("diffusers:tiny-org/nope")


def test_bad_models_and_options_are_refused_before_any_work(root, adapters, tmp_path):
    img2img = tmp_path / "img2img"
    shutil.copytree(root.path / "sd", img2img)
    index = json.loads((img2img / "model_index.json").read_text())
    (img2img / "model_index.json").write_text(
        json.dumps({**index, "_class_name": "StableDiffusionImg2ImgPipeline"}))
    cases = [
        (lambda: load_adapter(f"diffusers:{img2img}"), "is not a text-to-image pipeline"),
        (lambda: load_adapter(f"diffusers:{root.path / 'sd'}", num_stages=1), "--num-stages"),
        (lambda: load_adapter(f"diffusers:{root.path / 'sd'}", precision="fp16", device="cpu"),
         "fp16 needs a CUDA device"),
        (lambda: load_adapter(f"diffusers:{root.path / 'sd'}", cpu_offload=True, device="cpu"),
         "needs a CUDA --device"),
        (lambda: load_adapter(str(root.path / "sd"), resolution=(64, 64)),
         "--resolution does not apply to --model CKPT_DIR"),
        (lambda: load_adapter(str(root.path / "sd"), precision="fp16"),
         "an imagen_ref cascade samples in fp32 or bf16"),
        (lambda: adapters["sd"].check([], config("sd", guidance=(0.5,))), "guidance 0.5 < 1"),
        (lambda: adapters["sd"].check([], config("sd", guidance=(1.35, 8.0))),
         "per-stage guidance 1.35/8"),
        (lambda: adapters["sd"].check([], config("sd", aug_level=0.1)), "--aug-level 0.1"),
        (lambda: adapters["sd"].check([], config("sd", sampler="flow-euler")),
         "cannot drive StableDiffusionPipeline"),
        (lambda: adapters["flux"].check([], config("flux", sampler="ddim")),
         "use one of flow-euler, native"),
        (lambda: load_adapter(f"diffusers:{root.path / 'flux'}", negative_prompt="blurry",
                              device="cpu").check([], config("flux")),
         "FluxPipeline uses no negative prompt"),
        (lambda: load_adapter(f"diffusers:{root.path / 'sd'}", resolution=(30, 30),
                              device="cpu").check([], config("sd")), "needs multiples of 4"),
    ]
    for call, message in cases:
        with pytest.raises(AdapterError, match=message):
            call()


def test_every_sampler_name_maps_to_a_scheduler():
    assert set(SCHEDULERS) == set(SAMPLERS)


def test_both_commands_take_the_model_flags():
    from bench.cli import parse_resolution
    from bench.coco_fid import build_parser as coco_parser
    from bench.drawbench import build_parser as drawbench_parser

    flags = ["--scheduler", "euler-a", "--resolution", "1216x832", "--negative-prompt", "blurry",
             "--cpu-offload", "--precision", "fp16"]
    for parser in (coco_parser(), drawbench_parser()):
        args = parser.parse_args(flags)
        assert (args.sampler, args.negative_prompt, args.cpu_offload, args.precision) == \
            ("euler-a", "blurry", True, "fp16")
        assert parse_resolution(args.resolution) == (832, 1216)  # (height, width)
    assert parse_resolution("512") == (512, 512) and parse_resolution(None) is None
    for bad in ("x", "0", "64x64x3", "-8"):
        with pytest.raises(ValueError, match="--resolution"):
            parse_resolution(bad)


# ---------------------------------------------------------------------------------------------
# seeds and batches


@pytest.mark.parametrize("family", FAMILIES)
def test_same_prompt_and_seed_give_the_same_image_alone_and_in_a_batch(adapters, family):
    adapter, cfg = adapters[family], config(family, sampler="native" if family != "sd" else "ddpm")
    triple = items([("a red cat", 1), ("a blue dog", 2), ("a red cat", 1)])
    gens = adapter.call_arguments(triple, cfg)["generator"]  # one per image, seeded by it
    assert [g.initial_seed() for g in gens] == [1, 2, 1] and gens[0] is not gens[2]
    batch = adapter.generate(triple, cfg)
    alone = adapter.generate(items([("a red cat", 1)]), cfg)[0]
    other = adapter.generate(items([("a red cat", 7)]), cfg)[0]
    # the same noise; the networks' CPU kernels (convolutions, matmuls) differ in their last
    # float bits (~1e-6) with the batch size and the row in the batch, which can move a pixel by
    # one level; another seed moves most pixels
    for image in (batch[2], alone):
        diff = np.abs(image.astype(int) - batch[0].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001
    assert (np.abs(other.astype(int) - alone.astype(int)) > 1).mean() > 0.05


# ---------------------------------------------------------------------------------------------
# thresholding


@pytest.mark.parametrize("mode, sampler, want", [
    ("none", "ddpm", {"thresholding": False, "clip_sample": False}),
    ("static", "ddim", {"thresholding": False, "clip_sample": True, "clip_sample_range": 1.0}),
    ("dynamic:0.995", "ddim", {"thresholding": True, "clip_sample": False,
                               "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1e9}),
    ("dynamic:0.9:2", "dpmpp", {"thresholding": True, "dynamic_thresholding_ratio": 0.9,
                                "sample_max_value": 2.0}),
    ("static", "unipc", {"thresholding": True, "sample_max_value": 1.0}),  # s = 1: clip
])
def test_modes_map_onto_the_schedulers_own_clipping(adapters, mode, sampler, want):
    sched = adapters["sd"].scheduler(config("sd", sampler=sampler, thresholding=mode))
    assert type(sched).__name__ == SCHEDULERS[sampler][0]
    for key, value in want.items():
        assert sched.config[key] == pytest.approx(value), key
    assert sched.config.beta_schedule == "scaled_linear"  # the rest is the pipeline's config
    import diffusers

    assert thresholding_support(diffusers.EulerDiscreteScheduler, {}) == (False, False)
    assert thresholding_support(diffusers.UniPCMultistepScheduler, {"predict_x0": False}) == \
        (False, False)  # its thresholding acts on x0 predictions only
    assert threshold_overrides("none", diffusers.EulerDiscreteScheduler) == {}


def test_on_ddim_thresholding_changes_the_images_and_static_is_dynamic_with_cap_1(adapters):
    sd, batch = adapters["sd"], items([("a red cat", 3)])
    kw = dict(guidance=(8.0,), sampler="ddim", steps=3)
    static = sd.generate(batch, SamplingConfig(thresholding="static", **kw))[0]
    capped = sd.generate(batch, SamplingConfig(thresholding="dynamic:0.9:1", **kw))[0]
    plain = sd.generate(batch, SamplingConfig(thresholding="none", **kw))[0]
    dynamic = sd.generate(batch, SamplingConfig(thresholding="dynamic:0.995", **kw))[0]
    np.testing.assert_array_equal(static, capped)
    assert not np.array_equal(static, plain) and not np.array_equal(dynamic, plain)
    assert not np.array_equal(dynamic, static)


@pytest.mark.parametrize("family, flags, message", [
    ("sdxl", {"thresholding": "static"}, "--sampler euler (EulerDiscreteScheduler) has no static "
     "thresholding; the samplers that can, for StableDiffusionXLPipeline: ddim, ddpm, dpmpp"),
    ("flux", {"thresholding": "dynamic:0.995"}, "no sampler that can drive FluxPipeline can; use "
     "--thresholding none"),
    ("sd", {"resolution": "64x"}, "--resolution '64x'"),
    ("sd", {"aug_level": "0.2"}, "no noise augmentation"),
])
def test_a_mode_the_scheduler_cannot_do_exits_2_with_the_message(root, tmp_path, capsys, family,
                                                                  flags, message):
    out = tmp_path / "run"
    assert run_main(cli(root, family, out, **flags)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# bench.drawbench end to end


@pytest.fixture(scope="module")
def runs(root):
    """One uninterrupted drawbench run per family: 2 prompts x 2 guidance weights."""
    out = {}
    for family in FAMILIES:
        out[family] = root.path / f"run_{family}"
        assert run_main(cli(root, family, out[family])) == 0
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_drawbench_with_two_guidance_weights_gives_the_files_and_rows(root, runs, family):
    run, (sampler, knob, size) = runs[family], FAMILIES[family]
    keys = [f"w1-none-aug0-{sampler}2", f"w4-none-aug0-{sampler}2"]
    with open(run / "metrics" / "categories.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["config_key"], r["category"]) for r in rows] == \
        [(k, c) for k in keys for c in ("Colors", "Counting", "overall")]
    assert all(r["n_images"] == ("2" if r["category"] == "overall" else "1") for r in rows)
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert sorted((s["config_key"], s["k"]) for s in samples) == sorted((k, 0) for k in keys
                                                                       for _ in range(2))
    side = int(RESOLUTION.get(family, size))
    for s in samples:
        path = run / s["path"]
        assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == s["sha256"]
    from PIL import Image

    assert Image.open(run / samples[0]["path"]).size == (side, side)
    record = json.loads((run / "run.json").read_text())
    model = record["model"]
    assert model["kind"] == "diffusers" and model["guidance"]["knob"] == knob
    assert set(model["scheduler"]["per_config"]) == set(keys)
    assert record["spec"]["model"]["pipeline_class"] == model["pipeline_class"]
    assert record["spec"]["model"]["resolution"] == ([side, side] if family in RESOLUTION else None)
    assert record["versions"]["torch"] and record["stages"]["metrics"]["complete"]
    # the same seeds in both configs: w = 1 and w = 4 differ only by guidance
    seeds = {}
    for s in samples:
        seeds.setdefault(s["prompt_id"], set()).add(s["seed"])
    assert all(len(v) == 1 for v in seeds.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_a_killed_run_resumes_to_the_same_files(root, runs, tmp_path, family):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", KILL_AFTER_ENV: "2",
           "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-m", "bench.drawbench", *cli(root, family, out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len((out / "samples.rank0.jsonl").read_text().splitlines()) == 2
    assert not (out / "samples.jsonl").exists()
    assert run_main(cli(root, family, out)) == 0
    assert json.loads((out / "run.json").read_text())["stages"]["generation"]["skipped"] == 2
    assert image_hashes(out) == image_hashes(runs[family])
    drop = lambda line: {k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
    assert [drop(x) for x in (out / "samples.jsonl").read_text().splitlines()] == \
        [drop(x) for x in (runs[family] / "samples.jsonl").read_text().splitlines()]
