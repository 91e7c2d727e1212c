"""--model python:MODULE:CALLABLE (bench/python_adapter.py): this module's `paint` run end to end
by bench.drawbench, and the errors a user can make."""
import csv
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bench.adapters import AdapterError, load_adapter
from bench.drawbench import main as drawbench_main
from bench.sampling import SamplingConfig
from fakes import make_clip_dir

CALLS: list[dict] = []  # the config of every call of `paint`
NOT_CALLABLE = 3


def paint(prompts, seeds, config):
    """A toy model: a colour drawn from the seed, a bar as long as the prompt, as bright as w."""
    CALLS.append(config)
    height, width = config["resolution"] or (24, 24)
    images = []
    for text, seed in zip(prompts, seeds):
        rng = np.random.default_rng(seed)
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = rng.integers(0, 256, 3)
        image[: height // 2, : len(text) % width] = int(config["guidance"][0] * 40) % 256
        images.append(Image.fromarray(image))
    return images


paint.describe = lambda: {"name": "paint", "version": 1}


def two_arguments(prompts, seeds):
    return []


def too_few(prompts, seeds, config):
    return []


def floats(prompts, seeds, config):
    return [np.zeros((8, 8, 3), dtype=np.float32) for _ in prompts]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("python_adapter")
    prompts = root / "prompts.csv"
    with open(prompts, "w", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows([{"text": "a red cat", "category": "Colors"},
                          {"text": "two blue dogs", "category": "Counting"}])
    return SimpleNamespace(root=root, prompts=prompts, clip=make_clip_dir(root / "clip"))


def cli(world, out, **flags):
    base = {"model": "python:test_python_adapter:paint", "prompts": str(world.prompts),
            "samples_per_prompt": "2", "guidance": "1,4", "thresholding": "none", "steps": "2",
            "batch_size": "3", "device": "cpu", "clip_model": world.clip,
            "bootstrap_samples": "20", "resolution": "32x16", "negative_prompt": "blurry",
            "out": str(out), **flags}
    argv = []
    for k, v in base.items():
        argv += [f"--{k.replace('_', '-')}", v]
    return argv + ["--no-progress"]


def test_drawbench_runs_a_callable_end_to_end_and_resumes(world):
    out = world.root / "run"
    CALLS.clear()
    assert drawbench_main(cli(world, out)) == 0
    configs = list(CALLS)  # one per batch: 2 configs x 4 images in batches of 3
    assert len(configs) == 4
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8  # 2 configs x 2 prompts x 2 images
    texts = {json.loads(x)["prompt_id"]: json.loads(x)["text"]
             for x in (out / "prompts.jsonl").read_text().splitlines()}
    for s in samples:  # every file is the callable's image for that prompt, seed and weight
        w = 1.0 if s["config_key"].startswith("w1-") else 4.0
        want = np.asarray(paint([texts[s["prompt_id"]]], [s["seed"]],
                                {"resolution": [16, 32], "guidance": [w]})[0])
        got = np.asarray(Image.open(out / s["path"]))
        assert got.shape == (16, 32, 3)  # --resolution is width x height
        np.testing.assert_array_equal(got, want)
    assert {c["config_key"] for c in configs} == {"w1-none-aug0-ddim2", "w4-none-aug0-ddim2"}
    assert all(c["negative_prompt"] == "blurry" and c["steps"] == 2 for c in configs)
    with open(out / "metrics" / "categories.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 6
    record = json.loads((out / "run.json").read_text())
    model = record["model"]
    sha = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    assert model["model_id"] == f"python:test_python_adapter:paint@{sha[:12]}"
    assert model["callable_describe"] == {"name": "paint", "version": 1}
    assert record["spec"]["model"]["resolution"] == [16, 32]
    before = len(CALLS)
    assert drawbench_main(cli(world, out)) == 0  # a rerun generates nothing
    assert len(CALLS) == before
    assert json.loads((out / "run.json").read_text())["stages"]["generation"]["skipped"] == 8


@pytest.mark.parametrize("flags, message", [
    ({"model": "python:no_such_module_xyz:paint"}, "cannot import no_such_module_xyz"),
    ({"model": "python:test_python_adapter:nope"}, "test_python_adapter has no nope"),
    ({"model": "python:test_python_adapter:NOT_CALLABLE"}, "NOT_CALLABLE is not callable (int)"),
    ({"model": "python:test_python_adapter:two_arguments"}, "takes 2 arguments"),
    ({"model": "python:paint"}, "expected python:MODULE:CALLABLE"),
    ({"cpu_offload": None}, "--cpu-offload does not apply to --model python:MODULE:CALLABLE"),
])
def test_user_errors_exit_2_with_one_message(world, tmp_path, capsys, flags, message):
    flags = dict(flags)
    extra = ["--cpu-offload"] if flags.pop("cpu_offload", 0) is None else []
    out = tmp_path / "run"
    assert drawbench_main(cli(world, out, **flags) + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_what_a_callable_returns_is_checked():
    batch = [SimpleNamespace(text="a cat", seed=1, prompt_id="p0", k=0)]
    cfg = SamplingConfig(guidance=(2.0,), steps=2)
    with pytest.raises(AdapterError, match="returned 0 images for 1 prompts"):
        load_adapter("python:test_python_adapter:too_few").generate(batch, cfg)
    with pytest.raises(AdapterError, match="returned a float32 array"):
        load_adapter("python:test_python_adapter:floats").generate(batch, cfg)
    adapter = load_adapter("python:test_python_adapter:paint", device=torch.device("cpu"))
    call = adapter.call_config(cfg)
    assert call["guidance"] == [2.0] and call["device"] == "cpu" and call["resolution"] is None
