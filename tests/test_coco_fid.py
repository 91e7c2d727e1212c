"""`python -m bench.coco_fid` end to end on CPU: a generated COCO fixture, a tiny random cascade,
random InceptionV3 weights and a tiny open_clip model saved to files (offline).

Every run here uses one CPU thread per process: the CPU kernels' last bits depend on the thread
count, and torchrun gives each worker one thread (OMP_NUM_THREADS=1), so the one-process runs
that the torchrun run is compared with must do the same.
"""
import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.coco_fid import main
from bench.runner import KILL_AFTER_ENV
from bench.statistics import CLIP_FIELDS, FID_FIELDS, KID_FIELDS
from conftest import shape_items
from fakes import TINY_CLIP_CONFIG, make_clip_weights, make_inception_weights

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# summary.csv columns computed from network outputs (rounding may differ between runs that
# batch differently); the others are counts and settings
METRIC_VALUES = set(FID_FIELDS + KID_FIELDS + CLIP_FIELDS) - {"clip_truncated"}


# ---------------------------------------------------------------------------------------------
# fixtures: COCO, cascade, metric weights


def write_coco_val(root: Path, n: int = 8) -> Path:
    """annotations/captions_val2014.json + val2014/*.jpg, two captions per image."""
    (root / "val2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for i, (im, caption) in enumerate(shape_items(n, size=48)):
        image_id = 100 + i
        name = f"COCO_val2014_{image_id:012d}.jpg"
        im.save(root / "val2014" / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": 48, "height": 48})
        for j, text in enumerate((caption, f"{caption} on a white background")):
            annotations.append({"id": 10 * image_id + j, "image_id": image_id, "caption": text})
    data = {"info": {}, "licenses": [], "images": images, "annotations": annotations}
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(data))
    return root


def write_tiny_cascade(directory: Path) -> Path:
    """A one-stage cascade: tiny-base (32²) with perturbed random weights (output layers are
    zero-initialised, so unperturbed they would ignore the text)."""
    from imagen_ref.checkpoint import save_stage
    from imagen_ref.configs import build_unet, get_config
    from imagen_ref.diffusion import Schedule

    model = build_unet(get_config("tiny-base")).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    te = {"name_or_path": "minilm-l6", "encoder_id": "minilm-l6", "max_length": 16, "dim": 384}
    save_stage(directory, "base", model, schedule=Schedule("cosine"), aug_schedule=None,
               text_encoder_meta=te, training_meta={"step": 0})
    return directory


def write_clip_dir(folder: Path) -> str:
    """The tiny open_clip model as a `local-dir:` folder, loadable by name in any process."""
    _, weights = make_clip_weights(folder / "src")
    out = folder / "tiny-clip"
    out.mkdir(parents=True)
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    shutil.copy(weights, out / "open_clip_pytorch_model.bin")
    return f"local-dir:{out}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_fid")
    return SimpleNamespace(root=root, coco=write_coco_val(root / "coco"),
                           ckpt=write_tiny_cascade(root / "ckpt"),
                           inception=make_inception_weights(root / "weights" / "inception.pth"),
                           clip=write_clip_dir(root / "clip"), stats=root / "stats")


def cli_args(world, out, model=None, **flags) -> list[str]:
    """2 guidance weights × 2 thresholding modes, 4 COCO captions, 2 sampling steps."""
    base = {"model": str(model or world.ckpt), "coco_root": str(world.coco), "num_samples": "4",
            "guidance": "1,3", "thresholding": "none,dynamic:0.995", "steps": "2",
            "batch_size": "4", "device": "cpu", "inception_weights": str(world.inception),
            "clip_model": world.clip, "stats_cache": str(world.stats), "out": str(out),
            "fid_dims": "64", **flags}  # 64-d features: FID's eigenvalues of 2048² take seconds
    argv = []
    for k, v in base.items():
        argv += [f"--{k.replace('_', '-')}", v] if v is not True else [f"--{k.replace('_', '-')}"]
    return argv + ["--no-progress"]


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_main(argv) -> int:
    with one_thread():
        return main(argv)


def run_process(argv, *, torchrun=False, env=None, timeout=300) -> subprocess.CompletedProcess:
    launcher = (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
                if torchrun else [])
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, *launcher, "-m", "bench.coco_fid", *argv], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def read_rows(path: Path, drop=("seconds",)) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def image_hashes(run: Path) -> dict[str, str]:
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((run / "images").rglob("*.png"))}


def samples(run: Path) -> list[dict]:
    lines = (run / "samples.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.fixture(scope="module")
def reference(world):
    """One uninterrupted one-process run: what the others must reproduce."""
    out = world.root / "uninterrupted"
    assert run_main(cli_args(world, out)) == 0
    return out


# ---------------------------------------------------------------------------------------------
# tests


def test_grid_of_four_configs_gives_four_finite_rows_and_the_run_files(reference):
    rows = read_rows(reference / "metrics" / "summary.csv", drop=())
    assert [(r["guidance"], r["thresholding"]) for r in rows] == [
        ("1", "none"), ("3", "none"), ("1", "dynamic:0.995"), ("3", "dynamic:0.995")]
    for r in rows:
        assert r["n_images"] == "4" and r["steps"] == "2" and r["aug_level"] == "0.0"
        for f in ("fid", "clip_score", "clip_score_std", "seconds"):
            assert math.isfinite(float(r[f])), (f, r)
        assert r["fid_resize"] == "pil-bicubic-center-crop" and r["fid_reference_n"] == "8"
    assert len({r["fid"] for r in rows}) == 4  # guidance and thresholding change the images
    per_image = read_rows(reference / "metrics" / "per_image.csv", drop=())
    assert list(per_image[0]) == ["config_key", "prompt_id", "k", "clip_cosine"]
    assert len(per_image) == 16 and all(-1 <= float(r["clip_cosine"]) <= 1 for r in per_image)
    assert (reference / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    prompts = [json.loads(line) for line in (reference / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 4 and all(p["prompt_id"].startswith("coco-") for p in prompts)
    records = samples(reference)
    assert len(records) == 16 and len(image_hashes(reference)) == 16
    seeds = {}
    for r in records:  # one seed per (prompt, k), shared by every config
        seeds.setdefault(r["prompt_id"], set()).add(r["seed"])
    assert all(len(s) == 1 for s in seeds.values())
    run = json.loads((reference / "run.json").read_text())
    assert run["spec"]["model"]["model_id"].startswith("imagen_ref:ckpt@")
    assert len(run["model"]["stages"][0]["sha256"]) == 64
    assert [c["config_key"] for c in run["spec"]["grid"]] == [r["config_key"] for r in rows]
    assert run["spec"]["base_seed"] == 0 and run["prompt_source"]["caption_seed"] == 0
    assert run["versions"]["torch"] and "commit" in run["git"] and run["device"]["device"] == "cpu"
    assert run["stages"]["generation"]["complete"] and run["stages"]["metrics"]["complete"]
    assert run["wall_seconds"] > 0 and run["reference"]["n"] == 8


def test_a_killed_run_resumes_to_the_summary_of_an_uninterrupted_run(world, reference):
    out = world.root / "killed"
    killed = run_process(cli_args(world, out), env={KILL_AFTER_ENV: "6"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "samples.jsonl").exists() and not (out / "metrics").exists()
    assert len((out / "samples.rank0.jsonl").read_text().splitlines()) == 6
    assert json.loads((out / "run.json").read_text())["stages"] == {}  # no stage complete
    assert run_main(cli_args(world, out)) == 0
    assert read_rows(out / "metrics" / "summary.csv") == \
        read_rows(reference / "metrics" / "summary.csv")
    assert (out / "metrics" / "per_image.csv").read_text() == \
        (reference / "metrics" / "per_image.csv").read_text()
    assert image_hashes(out) == image_hashes(reference)
    assert samples(out) == samples(reference)
    run = json.loads((out / "run.json").read_text())
    assert run["stages"]["generation"]["skipped"] == 6 and len(run["history"]) == 2


def test_torchrun_two_processes_match_one_process(world, reference):
    out = world.root / "torchrun"
    proc = run_process(cli_args(world, out), torchrun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert image_hashes(out) == image_hashes(reference)
    assert samples(out) == samples(reference)
    got, want = (read_rows(r / "metrics" / "summary.csv") for r in (out, reference))
    for g, w in zip(got, want, strict=True):
        for k in w:
            # each rank runs Inception and CLIP on its own batches (float32, other batch sizes)
            # and FID sums are reduced across ranks: the statistics of those values, intervals
            # included, are equal up to rounding (on some CPUs the last digits of a CLIP
            # interval differ); the counts and settings are equal
            if k in METRIC_VALUES and g[k] != w[k]:
                assert "" not in (g[k], w[k]), k
                assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-6), k
            else:
                assert g[k] == w[k], k
    per_got, per_want = (read_rows(r / "metrics" / "per_image.csv") for r in (out, reference))
    assert [r["prompt_id"] for r in per_got] == [r["prompt_id"] for r in per_want]
    assert [float(r["clip_cosine"]) for r in per_got] == pytest.approx(
        [float(r["clip_cosine"]) for r in per_want], abs=1e-6)
    assert json.loads((out / "run.json").read_text())["device"]["world_size"] == 2


def test_images_dir_model_scores_a_runs_images_identically(world, reference):
    out = world.root / "from_images"
    assert run_main(cli_args(world, out, model=f"images:{reference / 'images'}", kid=True)) == 0
    assert image_hashes(out) == image_hashes(reference)
    got, want = (read_rows(r / "metrics" / "summary.csv") for r in (out, reference))
    assert [{k: g[k] for k in w} for g, w in zip(got, want, strict=True)] == want
    assert all(math.isfinite(float(g["kid"])) and float(g["kid_std"]) >= 0 for g in got)
    assert json.loads((out / "run.json").read_text())["model"]["kind"] == "images"


def test_missing_weights_offline_stop_before_any_stage(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    out = tmp_path / "run"
    argv = cli_args(world, out, clip_model="ViT-B-32",
                    clip_pretrained=str(tmp_path / "nope" / "clip.bin"))
    argv = argv[:argv.index("--inception-weights")] + argv[argv.index("--inception-weights") + 2:]
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert "FID Inception weights not found" in err and "empty_torch_home" in err
    assert "--inception-weights" in err and "clip.bin" in err
    assert not out.exists()  # nothing written, so no stage is complete


@pytest.mark.parametrize("flags, message", [
    ({"guidance": "1,abc"}, "--guidance"),
    ({"thresholding": "dynamic:7"}, "thresholding"),
    ({"num_samples": "99"}, "only 8 captioned images"),
    ({"num_samples": "1"}, "at least 2 images"),
    ({"model": "images:/definitely/not/here"}, "does not exist"),
])
def test_user_errors_exit_2_with_one_message(world, tmp_path, capsys, flags, message):
    assert run_main(cli_args(world, tmp_path / "run", **flags)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_rerun_with_another_spec_is_refused(world, reference, capsys):
    assert run_main(cli_args(world, reference, seed="5")) == 2
    assert "base_seed: 0 (recorded) vs 5 (now)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# stored features, rescoring, comparisons (bench.statistics, bench.rescore, bench.compare)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_features_are_stored_and_the_summary_has_intervals(reference):
    import numpy as np

    rows = read_rows(reference / "metrics" / "summary.csv", drop=())
    for r in rows:
        fid, lo, hi = (float(r[k]) for k in ("fid", "fid_ci_low", "fid_ci_high"))
        assert 0 <= lo <= fid <= hi
        clip, lo, hi = (float(r[k]) for k in ("clip_score", "clip_score_ci_low",
                                              "clip_score_ci_high"))
        assert 0 <= lo <= clip <= hi <= 100
        assert r["bootstrap_samples"] == "200" and r["n_prompts"] == "4"
        assert r["fid_inf"] == ""  # 4 prompts: too few subset sizes for FID-infinity
        feats = np.load(reference / "metrics" / "features" / r["config_key"] / "inception.npy")
        assert feats.shape == (4, 64) and feats.dtype == np.float32
    comparisons = read_rows(reference / "metrics" / "comparisons.csv", drop=())
    # w = 3 of each mode against w = 1 of the same mode
    assert [(c["config_key"], c["reference_key"]) for c in comparisons] == [
        ("w3-none-aug0-ddim2", "w1-none-aug0-ddim2"),
        ("w3-dyn0.995-aug0-ddim2", "w1-dyn0.995-aug0-ddim2")]
    by_key = {r["config_key"]: r for r in rows}
    for c in comparisons:
        delta = float(by_key[c["config_key"]]["fid"]) - float(by_key[c["reference_key"]]["fid"])
        assert float(c["delta_fid"]) == pytest.approx(delta, rel=1e-12)
        assert float(c["delta_fid_ci_low"]) <= float(c["delta_fid"]) <= float(c["delta_fid_ci_high"])
        assert 0 < float(c["delta_fid_p"]) <= 1 and c["paired"] == "true"


def test_rescore_from_stored_features_gives_the_same_files(world, reference, tmp_path):
    from bench.rescore import main as rescore

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    before = tree_bytes(copy / "metrics")
    (copy / "metrics" / "summary.csv").unlink()
    (copy / "metrics" / "comparisons.csv").unlink()
    # no network may run: rescoring must not need the weights
    assert rescore([str(copy), "--no-progress"]) == 0
    after = tree_bytes(copy / "metrics")
    assert after == before
    # other options are applied and recorded; the default ones come back byte for byte
    assert rescore([str(copy), "--bootstrap", "50", "--no-progress"]) == 0
    assert read_rows(copy / "metrics" / "summary.csv")[0]["bootstrap_samples"] == "50"
    assert rescore([str(copy), "--bootstrap", "200", "--no-progress"]) == 0
    assert tree_bytes(copy / "metrics") == before


def test_a_run_killed_while_writing_features_resumes_to_the_same_files(world, reference):
    from bench.scoring import KILL_IN_METRICS_ENV

    out = world.root / "killed_in_metrics"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("metrics"))
    killed = run_process(cli_args(world, out), env={KILL_IN_METRICS_ENV: "3"})  # in config 3
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "metrics" / "summary.csv").exists()
    assert run_main(cli_args(world, out)) == 0
    got, want = tree_bytes(out / "metrics"), tree_bytes(reference / "metrics")
    assert sorted(got) == sorted(want)  # no temporary file or rank part is left behind
    for name in want:
        if name.endswith(".npy") or name in ("per_image.csv", "comparisons.csv"):
            assert got[name] == want[name], name
    assert read_rows(out / "metrics" / "summary.csv") == read_rows(reference / "metrics" /
                                                                   "summary.csv")


def test_compare_a_run_with_itself_and_refuse_other_prompts(world, reference, tmp_path, capsys):
    from bench.compare import main as compare

    key = "w3-none-aug0-ddim2"
    assert compare([f"{reference}:{key}", f"{reference}:{key}", "--out", str(tmp_path),
                    "--no-progress"]) == 0
    [row] = read_rows(tmp_path / "comparisons.csv", drop=())
    assert float(row["delta_fid"]) == 0 and float(row["delta_clip"]) == 0
    assert float(row["delta_fid_p"]) == 1 and float(row["delta_clip_p"]) == 1
    assert row["paired"] == "true"
    # every shared config, model A (w = 3) against itself: all four rows
    assert compare([str(reference), str(reference), "--bootstrap", "20", "--no-progress"]) == 0
    other = world.root / "other_prompts"
    assert run_main(cli_args(world, other, caption_seed="1", guidance="3",
                             thresholding="none")) == 0
    capsys.readouterr()
    assert compare([f"{reference}:{key}", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "prompts differ" in err and "--unpaired" in err
    assert len(err.splitlines()) == 1
    assert compare([f"{reference}:{key}", str(other), "--unpaired", "--out", str(tmp_path / "u"),
                    "--no-progress"]) == 0
    [row] = read_rows(tmp_path / "u" / "comparisons.csv", drop=())
    assert row["paired"] == "false" and "unpaired" in capsys.readouterr().out
    assert float(row["delta_fid_ci_low"]) <= float(row["delta_fid"]) <= float(row["delta_fid_ci_high"])
