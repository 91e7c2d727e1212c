"""Defaults with no arguments (the calibration world, the bundled models) and `make demo` at toy size.

The unit tests parse empty command lines with a toy default world in a temporary cache and a
stand-in bundled cascade folder; the demo test runs every stage through the same code with tiny
sizes, a random one-stage cascade and the bundled metric networks (toy ones trained on the spot
where this checkout has none).
"""
import json
import warnings
from pathlib import Path

import pytest
import torch

import calibration_world.bundled as bundled
from bench import coco_fid, drawbench
from bench import report as report_cli
from bench.sampling import PAPER_GUIDANCE, PAPER_THRESHOLDING
from calibration_world import defaults as cw
from calibration_world import demo
from calibration_world.scenes import BACKGROUNDS

TOY_WORLD = cw.WorldSpec(n_train=2, n_val=6, n_prompts=2)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder whose default world is a toy one; a stand-in bundled cascade."""
    monkeypatch.setenv(cw.CACHE_ENV, str(tmp_path / "cache"))
    make = cw.ensure_world
    monkeypatch.setattr(cw, "ensure_world",
                        lambda root=None, spec=None, progress=True: make(root, TOY_WORLD, progress=False))
    ckpt = tmp_path / "bundled_cascade"
    ckpt.mkdir()
    (ckpt / "cascade.json").write_text("{}")
    monkeypatch.setattr(bundled, "bundled_cascade_path", lambda: ckpt)
    return tmp_path


def parse(module, argv):
    args = module.build_parser().parse_args(argv)
    return args, module.resolve_defaults(args, progress=False)


# ---------------------------------------------------------------------------------------------
# the rule


def test_coco_fid_without_arguments_runs_on_the_world_with_bundled_models(cache):
    args, record = parse(coco_fid, [])
    world = cache / "cache" / "calibration_world" / "0-64"
    assert Path(args.coco_root) == world and (world / "world.json").is_file()
    assert Path(args.model) == cache / "bundled_cascade"
    assert args.fid_network == args.clip_model == "calibration-world"
    assert args.inception_weights is None
    assert (args.cmmd_network, args.prdc_features) == ("calibration-world-clip", "calibration-world")
    assert args.metrics == cw.COCO_FID["metrics"]
    assert (args.num_samples, args.guidance, args.thresholding, args.steps) == tuple(
        cw.COCO_FID[k] for k in ("num_samples", "guidance", "thresholding", "steps"))
    assert args.sampler == cw.COCO_FID["sampler"] == "ddpm"  # ancestral, the paper's
    assert args.fid_dims == 2048  # the world's feature network takes the default
    assert record["defaults"]["set"] == "calibration-world"
    assert record["defaults"]["filled"]["coco_root"] == str(world)
    assert record["world"]["calibration_world"] is True and record["world"]["root"] == str(world)
    assert record["world"]["n_images"]["val2014"] == TOY_WORLD.n_val
    assert "calibration-world numbers" in record["world"]["statement"].lower()


def test_flags_given_win_over_the_world_defaults(cache):
    args, record = parse(coco_fid, ["--steps", "3", "--clip-model", "ViT-B-32", "--guidance", "2"])
    assert (args.steps, args.clip_model, args.guidance) == (3, "ViT-B-32", "2")
    assert args.fid_network == "calibration-world"
    assert not {"steps", "clip_model", "guidance"} & set(record["defaults"]["filled"])


def test_a_real_coco_root_keeps_the_paper_defaults(cache):
    coco = cache / "coco"
    (coco / "annotations").mkdir(parents=True)  # no world.json: real data
    args, record = parse(coco_fid, ["--coco-root", str(coco)])
    assert args.inception_weights is None            # the torch.hub cache copy of Inception
    assert (args.fid_network, args.metrics) == ("inception", "fid,clip_score")
    assert (args.clip_model, args.clip_pretrained) == ("ViT-L-14", "openai")
    assert (args.num_samples, args.guidance, args.thresholding, args.steps, args.sampler) == (
        30000, PAPER_GUIDANCE, PAPER_THRESHOLDING, 64, "ddim")
    assert record == {"defaults": {"set": "paper", "filled": {
        "model": str(cache / "bundled_cascade"), "num_samples": 30000, "guidance": PAPER_GUIDANCE,
        "thresholding": PAPER_THRESHOLDING, "steps": 64, "sampler": "ddim", "clip_model": "ViT-L-14",
        "fid_network": "inception", "cmmd_network": "clip", "prdc_features": "dinov2",
        "metrics": "fid,clip_score"}}}
    assert not (cache / "cache").exists()             # no world was made


def test_the_default_world_is_made_once_and_a_partial_one_replaced(cache):
    world = cw.ensure_world()
    stamp = (world / "world.json").stat().st_mtime_ns
    assert cw.ensure_world() == world and (world / "world.json").stat().st_mtime_ns == stamp
    (world / "world.json").unlink()                   # as if killed before the last file
    assert cw.is_world(cw.ensure_world())
    assert not list(world.parent.glob(".*tmp*"))      # no temporary folder left behind
    # a world cached with other background colours (an older world) is made again
    info = json.loads((world / "world.json").read_text())
    assert info["background_colors"] == [list(c) for c in BACKGROUNDS]
    info["background_colors"] = [[128, 128, 128]]
    (world / "world.json").write_text(json.dumps(info))
    assert json.loads((cw.ensure_world() / "world.json").read_text())["background_colors"] == \
        [list(c) for c in BACKGROUNDS]
    other = cache / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("not a world")
    with pytest.raises(ValueError, match="not a calibration world"):
        cw.ensure_world(other)                        # a user's folder is never replaced


def test_drawbench_without_arguments_uses_the_world_prompts(cache):
    args, record = parse(drawbench, [])
    world = cache / "cache" / "calibration_world" / "0-64"
    assert Path(args.prompts) == world / "prompts.csv" and Path(args.model).name == "bundled_cascade"
    assert args.clip_model == "calibration-world"
    assert (args.samples_per_prompt, args.limit_per_category, args.steps, args.sampler) == tuple(
        cw.DRAWBENCH[k] for k in ("samples_per_prompt", "limit_per_category", "steps", "sampler"))
    assert record["world"]["root"] == str(world)
    paper, record = parse(drawbench, ["--prompts", "drawbench"])
    assert (paper.samples_per_prompt, paper.limit_per_category, paper.guidance, paper.steps,
            paper.clip_model, paper.sampler) == (8, None, "1.35/8", 64, "ViT-L-14", "ddim")
    assert record["defaults"]["set"] == "paper" and "world" not in record


def test_missing_bundled_cascade_stops_before_any_work(cache, monkeypatch, capsys):
    monkeypatch.setattr(bundled, "bundled_cascade_path", lambda: cache / "nowhere")
    assert coco_fid.main(["--no-progress"]) == 2
    assert "bundled calibration-world cascade is missing" in capsys.readouterr().err
    assert not (cache / "cache").exists()


def test_report_and_rater_without_inputs_ask_for_make_demo(tmp_path, monkeypatch, capsys):
    from rater.__main__ import main as rater_main

    monkeypatch.chdir(tmp_path)
    assert report_cli.main([]) == 2
    assert "run `make demo` first" in capsys.readouterr().err
    assert rater_main(["serve"]) == 2
    assert "run `make demo` first" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# make demo, toy size


def tiny_cascade(directory: Path, seed: int = 0) -> Path:
    from imagen_ref.checkpoint import save_stage
    from imagen_ref.configs import build_unet, get_config
    from imagen_ref.diffusion import Schedule

    model = build_unet(get_config("tiny-base")).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # output layers start at zero: perturb so text matters
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    te = {"name_or_path": "minilm-l6", "encoder_id": "minilm-l6", "max_length": 16, "dim": 384}
    save_stage(directory, "base", model, schedule=Schedule("cosine"), aug_schedule=None,
               text_encoder_meta=te, training_meta={"step": 0})
    return directory


def metric_networks(folder: Path, monkeypatch) -> None:
    """The bundled metric networks, or toy ones trained in seconds where the checkout has none."""
    if bundled.bundled_features_path().is_file() and bundled.bundled_clip_path().is_file():
        return
    from calibration_world.train_metrics import main

    trunk = {"resolution": 32, "widths": [8, 8, 16], "groups": 4}
    common = {"seed": 3, "n_train": 16, "n_val": 8, "steps": 2, "batch_size": 8, "lr": 0.002}
    models = {"features": {"trunk": trunk, "dims": 16},
              "clip": {"trunk": trunk, "embed": 16, "text_width": 16, "text_heads": 2}}
    folder.mkdir()
    for kind, model in models.items():
        recipe = folder / f"{kind}.recipe.json"   # <out>.json is the trainer's record
        recipe.write_text(json.dumps({"kind": kind, **common, "model": model,
                                      **({"negatives": 2} if kind == "clip" else {})}))
        assert main([kind, "--recipe", str(recipe), "--out", str(folder / f"{kind}.safetensors"),
                     "--no-progress"]) == 0
    monkeypatch.setattr(bundled, "bundled_features_path", lambda: folder / "features.safetensors")
    monkeypatch.setattr(bundled, "bundled_clip_path", lambda: folder / "clip.safetensors")


TOY_DEMO = ["--num-samples", "3", "--guidance", "0,1,3", "--thresholding", "none,static",
            "--steps", "2", "--db-limit", "1", "--db-samples", "1", "--raters", "4",
            "--base-samples", "2", "--base-guidance", "1,3", "--base-steps", "3",
            "--n-real", "8", "--world-val", "8", "--device", "cpu", "--workers", "1", "--no-progress"]


def test_toy_demo_end_to_end_and_resumed(tmp_path, monkeypatch, capsys):
    from rater import __main__ as rater_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cw.CACHE_ENV, str(tmp_path / "cache"))
    metric_networks(tmp_path / "nets", monkeypatch)
    ckpt = tiny_cascade(tmp_path / "ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert demo.main(["--model", str(ckpt), *TOY_DEMO]) == 0
        out = capsys.readouterr().out
        report = Path("runs/demo/report/index.html")
        assert out.rstrip().splitlines()[-1] == f"report: {report}" and report.is_file()
        html = report.read_text(encoding="utf-8")
        assert "calibration-world numbers" in html.lower()
        run = json.loads(Path("runs/demo/coco_fid/run.json").read_text())
        assert run["world"]["calibration_world"] and run["defaults"]["set"] == "calibration-world"
        for name in ("oracle_summary.csv", "saturation.csv", "thresholding_modes.csv",
                     "clip_auc.csv", "degradations.csv", "metric_degradations.csv",
                     "metric_validity.csv"):
            assert Path("runs/demo/coco_fid/metrics", name).is_file(), name
        assert {g["sampler"] for g in run["spec"]["grid"]} == {"ddpm"}  # the paper's, ancestral
        assert ": thresholding modes against each other" in html
        assert "which metric tracks the truth" in html.lower()
        assert "power of this study" in html.lower() and "% power to detect a 55% preference" in html
        assert Path("runs/demo/human/preferences.csv").is_file()
        summary = json.loads(Path("runs/demo/demo.json").read_text())
        assert list(summary["stages"]) == ["world", "sweep", "checks", "base", "drawbench",
                                           "db-checks", "pairs", "raters", "analyze", "report"]
        assert len(list(Path("runs/demo/base_stage/images").rglob("*.png"))) == 2 * 2 * 2
        base_run = json.loads(Path("runs/demo/base_stage/run.json").read_text())
        assert {g["steps"] for g in base_run["spec"]["grid"]} == {3}   # --base-steps, not --steps
        assert {g["steps"] for g in run["spec"]["grid"]} == {2}
        modes = Path("runs/demo/base_stage/metrics/thresholding_modes.csv").read_text()
        assert modes.count("none,static") == 2 * 6            # w = 1 and 3, six skills
        assert html.count(": thresholding modes against each other") == 2  # sweep, base stage
        samples = Path("runs/demo/coco_fid/samples.jsonl").read_text()
        assert demo.main(["--model", str(ckpt), *TOY_DEMO]) == 0   # resumes: nothing redone
        assert Path("runs/demo/coco_fid/samples.jsonl").read_text() == samples
        capsys.readouterr()
        other = tiny_cascade(tmp_path / "other", seed=1)  # e.g. updated bundled weights
        assert demo.main(["--model", str(other), *TOY_DEMO]) == 2
        err = capsys.readouterr().err
        assert "holds a demo of another cascade" in err and "make clean" in err
        assert Path("runs/demo/coco_fid/samples.jsonl").read_text() == samples
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    with warnings.catch_warnings():                   # the demo's report builds without a warning
        warnings.simplefilter("error")
        assert report_cli.main([]) == 0               # no RUN_DIR: the demo's runs
    assert capsys.readouterr().out.rstrip().endswith(f"report: {report}")
    calls = []
    monkeypatch.setattr(rater_cli.subprocess, "call", lambda cmd, env: calls.append(cmd) or 0)
    assert rater_cli.main(["serve"]) == 0             # no --tasks: the demo's
    assert str(Path("runs/demo/tasks/tasks.jsonl").resolve()) in calls[0]
