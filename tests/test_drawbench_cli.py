"""`python -m bench.drawbench` end to end on CPU: a tiny random cascade (tiny-base, 2 steps),
11 DrawBench categories × 2 prompts × 2 images, one config, a tiny random open_clip model.

The real DrawBench sheet from ../shared/data is used where present; elsewhere a stand-in file
with the same 11 categories (the real one is not shipped).
"""
import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.drawbench import bootstrap_ci, main
from drawbench.suites import DRAWBENCH_COUNTS
from fakes import make_clip_dir
from test_coco_fid import write_tiny_cascade

DRAWBENCH_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "drawbench" / \
    "DrawBench.csv"
pytestmark = pytest.mark.slow


def prompts_file(folder: Path) -> str:
    if DRAWBENCH_CSV.is_file():
        return f"drawbench:{DRAWBENCH_CSV}"
    from drawbench.suites import slug

    path = folder / "standin.csv"  # a user file with the same 11 categories and DrawBench's ids
    rows = [{"id": f"drawbench-{slug(c)}-{i + 1:02d}", "text": f"a {c.lower()} picture number {i}",
             "category": c} for c in DRAWBENCH_COUNTS for i in range(3)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("drawbench")
    return SimpleNamespace(root=root, ckpt=write_tiny_cascade(root / "ckpt"),
                           clip=make_clip_dir(root / "clip"), prompts=prompts_file(root))


def cli_args(world, out, **flags) -> list[str]:
    base = {"model": str(world.ckpt), "prompts": world.prompts, "samples_per_prompt": "2",
            "limit_per_category": "2", "guidance": "3", "thresholding": "dynamic:0.995",
            "steps": "2", "batch_size": "8", "device": "cpu", "clip_model": world.clip,
            "bootstrap_samples": "200", "out": str(out), **flags}
    argv = []
    for k, v in base.items():
        argv += [f"--{k.replace('_', '-')}", v]
    return argv + ["--no-progress"]


def run_main(argv) -> int:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU kernels' last bits depend on the thread count
    try:
        return main(argv)
    finally:
        torch.set_num_threads(before)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def reference(world):
    out = world.root / "run"
    assert run_main(cli_args(world, out)) == 0
    return out


def test_tiny_run_gives_every_category_with_bootstrap_cis(reference):
    rows = read_rows(reference / "metrics" / "categories.csv")
    categories = [r["category"] for r in rows]
    assert categories == list(DRAWBENCH_COUNTS) + ["overall"]  # 11 categories, suite order
    for r in rows:
        n = 44 if r["category"] == "overall" else 4
        assert r["n_images"] == str(n) and r["n_prompts"] == str(n // 2)
        low, mean, high = float(r["ci_low"]), float(r["clip_score"]), float(r["ci_high"])
        assert math.isfinite(mean) and low <= mean + 1e-9 and mean <= high + 1e-9
        assert r["config_key"] == "w3-dyn0.995-aug0-ddim2" and r["bootstrap_samples"] == "200"
    per_image = read_rows(reference / "metrics" / "per_image.csv")
    assert len(per_image) == 44
    # the overall mean is the mean of the per-image CLIP scores (equal images per prompt)
    scores = [100 * max(float(r["clip_cosine"]), 0) for r in per_image]
    assert float(rows[-1]["clip_score"]) == pytest.approx(np.mean(scores), abs=1e-9)
    summary = read_rows(reference / "metrics" / "summary.csv")
    assert len(summary) == 1 and "fid" not in summary[0] and summary[0]["n_images"] == "44"
    assert float(summary[0]["clip_score"]) == pytest.approx(np.mean(scores), abs=1e-9)
    seeds = {}
    for line in (reference / "samples.jsonl").read_text().splitlines():
        r = json.loads(line)
        seeds.setdefault((r["prompt_id"], r["k"]), set()).add(r["seed"])
    assert len(seeds) == 44
    run = json.loads((reference / "run.json").read_text())
    assert run["spec"]["benchmark"] == "drawbench" and run["spec"]["images_per_prompt"] == 2
    assert run["prompt_source"]["selected"]["n"] == 22
    assert run["stages"]["metrics"]["categories"] == "metrics/categories.csv"
    prompts = [json.loads(x) for x in (reference / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 22 and {p["category"] for p in prompts} == set(DRAWBENCH_COUNTS)


def test_images_adapter_over_the_runs_images_reproduces_its_clip_scores(world, reference):
    out = world.root / "rescored"
    assert run_main(cli_args(world, out, model=f"images:{reference / 'images'}")) == 0
    for name in ("per_image.csv", "categories.csv"):
        assert (out / "metrics" / name).read_text() == (reference / "metrics" / name).read_text()
    got, want = (read_rows(r / "metrics" / "summary.csv") for r in (out, reference))
    assert [g["clip_score"] for g in got] == [w["clip_score"] for w in want]


def test_rerun_is_a_no_op_and_another_spec_is_refused(world, reference, capsys):
    before = (reference / "metrics" / "categories.csv").read_text()
    assert run_main(cli_args(world, reference)) == 0
    assert (reference / "metrics" / "categories.csv").read_text() == before
    run = json.loads((reference / "run.json").read_text())
    assert run["stages"]["generation"]["skipped"] == 44
    assert run_main(cli_args(world, reference, seed="3")) == 2
    assert "base_seed: 0 (recorded) vs 3 (now)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    ({"categories": "Colours"}, "unknown category 'Colours'"),
    ({"prompts": "/no/such/prompts.csv"}, "does not exist"),
    ({"model": "diffusers:DeepFloyd/IF-I-XL-v1.0"}, "diffusers pipeline folder"),
    ({"guidance": "x"}, "--guidance"),
    ({"samples_per_prompt": "0"}, "at least 1"),
    ({"sampler": "euler"}, "--sampler euler: an imagen_ref cascade samples with ddim or ddpm"),
    ({"resolution": "64"}, "--resolution does not apply to --model CKPT_DIR"),
])
def test_user_errors_exit_2_with_one_message(world, tmp_path, capsys, flags, message):
    assert run_main(cli_args(world, tmp_path / "run", **flags)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    values = np.arange(20, dtype=float)
    a = bootstrap_ci(values, 500, np.random.default_rng(1))
    assert a == bootstrap_ci(values, 500, np.random.default_rng(1))
    assert a[0] < values.mean() < a[1]
    assert bootstrap_ci(np.array([3.0]), 500, np.random.default_rng(0)) == (3.0, 3.0)
