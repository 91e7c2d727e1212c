"""`python -m bench.plan`: sample-size planning from a pilot run's stored per-image results.

The pilot runs are made by hand with the files a metric stage stores (per-config CLIP cosines,
3-d stand-in FID features, a reference) and `bench.statistics.summarize`, with paired CLIP
scores whose per-prompt difference has a known standard deviation σ, so the fitted SE curve and
the prompts needed have closed forms to check against.
"""
import csv
import math
import warnings

import numpy as np
import pytest

from bench.feature_store import RowWriter, features_dir, keys_sha256
from bench.plan import (fit_inverse_sqrt, main, power_at, prompts_needed, resolving_width,
                        subsample_sizes)
from bench.runs import RunDir, atomic_write_json, atomic_write_text, csv_text
from bench.sampling import SamplingConfig
from bench.statistics import StatsOptions, summarize

Z = 1.959963984540054 + 0.8416212335729143   # z_{0.975} + z_{0.8}


def make_run(root, *, n_prompts=200, k=2, sigma=2.0, shift=1.0, weights=("1", "3"), fid=True,
             bootstrap=20, seed=0) -> RunDir:
    """A scored run: config i's CLIP score (100 · cos) is the reference's plus i · d_p per prompt,
    d_p ~ N(shift, sigma²); FID features are 3-d Gaussians, shifted per config."""
    run = RunDir(root)
    prompts = [{"prompt_id": f"p{i:03d}", "text": f"prompt {i}", "category": "t"}
               for i in range(n_prompts)]
    run.write_prompts(prompts)
    grid = [SamplingConfig(float(w), "none", 0, "ddim", 4) for w in weights]
    rng = np.random.default_rng(seed)
    base = 0.3 + 0.02 * rng.standard_normal((n_prompts, k))   # cosines, far from the clamp at 0
    diff = shift + sigma * rng.standard_normal(n_prompts)    # per-prompt Δ of the score
    keys = [(p["prompt_id"], j) for p in prompts for j in range(k)]
    for i, c in enumerate(grid):
        cos = (base + i * diff[:, None] / 100.0).ravel()
        rows = [{"config_key": c.config_key, "prompt_id": p, "k": j, "clip_cosine": repr(float(x))}
                for (p, j), x in zip(keys, cos)]
        atomic_write_text(run.config_metrics / f"{c.config_key}.csv",
                          csv_text(rows, ["config_key", "prompt_id", "k", "clip_cosine"]))
        atomic_write_json(run.config_metrics / f"{c.config_key}.json",
                          {**c.to_dict(), "n_images": len(rows), "clip_truncated": 0,
                           "seconds": 0.0})
        if fid:  # as bench.scoring.score_config stores them
            folder = features_dir(run.metrics, c.config_key)
            writer = RowWriter(folder / "fake.npy", len(keys), 3)
            writer.write(0, rng.standard_normal((len(keys), 3)) + 0.2 * i)
            writer.close()
            atomic_write_json(folder / "fake.json",
                              {"rows": len(keys), "dims": 3, "network": "fake",
                               "keys_sha256": keys_sha256(keys), "protocol": {"resize": "fake"}})
    if fid:
        from coco.reference import ReferenceStats

        ReferenceStats.from_features(rng.standard_normal((300, 3)), {"resize": "fake"}) \
            .with_root().save(run.metrics / "reference.npz")
    summarize(run, grid, {}, StatsOptions(bootstrap=bootstrap, seed=0, fid_inf_points=0),
              feature_name="fake" if fid else None, progress=False)
    return run


def read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plan(run, tmp_path, name, *flags) -> list[dict]:
    out = tmp_path / name
    assert main([str(run.root), "--out", str(out), "--no-progress", "--device", "cpu",
                 *flags]) == 0
    return read(out / "plan.csv")


@pytest.fixture(scope="module")
def pilot(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("pilot") / "run")


# ------------------------------------------------------------------------------ the formulas


def test_formulas_match_their_closed_forms():
    sizes = [5, 10, 40, 160]
    c, residual = fit_inverse_sqrt(sizes, [3.0 / math.sqrt(m) for m in sizes])
    assert c == pytest.approx(3.0, rel=1e-12) and residual == pytest.approx(0.0, abs=1e-12)
    assert fit_inverse_sqrt(sizes, [0.0] * 4) == (0.0, 0.0)
    n = prompts_needed(2.0, 0.5, 0.8, 0.05)
    assert n == math.ceil((Z * 2.0 / 0.5) ** 2) == 126
    # the rounded-up n reaches the power; one prompt less does not (up to the far tail)
    assert power_at(n, 2.0, 0.5, 0.05) >= 0.8 > power_at(n - 1, 2.0, 0.5, 0.05) - 1e-4
    assert power_at(1e9, 2.0, 0.5, 0.05) == pytest.approx(1.0)
    # at n the CI width 2·z·c/√n has fallen to the plotted resolving width
    assert 2 * 1.959963984540054 * 2.0 / math.sqrt((Z * 2.0 / 0.5) ** 2) == \
        pytest.approx(resolving_width(0.5, 0.8, 0.05))
    assert subsample_sizes(200) == sorted(set(subsample_sizes(200)))
    assert subsample_sizes(200)[0] == 25 and subsample_sizes(200)[-1] == 200
    assert subsample_sizes(20)[0] == 5 and subsample_sizes(3) == [3]


# ---------------------------------------------------------------------------- the command


def test_fitted_c_and_prompts_needed_match_the_known_sigma(pilot, tmp_path):
    rows = plan(pilot, tmp_path, "plan", "--delta-clip", "0.5")
    clip = next(r for r in rows if r["metric"] == "delta_clip")
    assert (clip["config_key"], clip["reference_key"]) == ("w3-none-aug0-ddim4",
                                                          "w1-none-aug0-ddim4")
    assert clip["goal"] == "detect" and int(clip["n_pilot_prompts"]) == 200
    assert float(clip["c"]) == pytest.approx(2.0, rel=0.2)
    closed = (Z * 2.0 / 0.5) ** 2
    assert int(clip["prompts_needed"]) == pytest.approx(closed, rel=0.4)
    assert int(clip["prompts_needed"]) == math.ceil((Z * float(clip["c"]) / 0.5) ** 2)
    # the pilot's 200 prompts exceed the ~126 needed: more than the target power
    assert float(clip["power_at_pilot"]) > 0.8
    assert float(clip["fit_max_rel_residual"]) < 0.25
    assert float(clip["se_at_pilot"]) == pytest.approx(2.0 / math.sqrt(200), rel=0.25)
    fid = next(r for r in rows if r["metric"] == "delta_fid")
    assert float(fid["c"]) > 0 and int(fid["prompts_needed"]) >= 1


def test_bigger_delta_needs_fewer_prompts(pilot, tmp_path):
    needed = {}
    for delta in ("0.25", "0.5", "1", "2"):
        rows = plan(pilot, tmp_path, f"d{delta}", "--delta-clip", delta, "--delta-fid", delta)
        needed[delta] = {r["metric"]: int(r["prompts_needed"]) for r in rows}
    for metric in ("delta_clip", "delta_fid"):
        series = [needed[d][metric] for d in ("0.25", "0.5", "1", "2")]
        assert series == sorted(series, reverse=True) and series[0] > series[-1], (metric, series)


def test_files_are_written_without_warnings(pilot, tmp_path, capsys):
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([str(pilot.root), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"results: {out / 'plan.csv'}" in printed and "delta_clip" in printed
    assert (out / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read(out / "plan.csv")
    assert [r["metric"] for r in rows] == ["delta_fid", "delta_clip"]
    assert list(rows[0])[:9] == ["config_key", "reference_key", "metric", "goal", "delta",
                                 "estimate", "n_pilot_prompts", "images_per_prompt",
                                 "se_at_pilot"]
    curve = read(out / "plan_curve.csv")
    assert len(curve) == 2 * len(subsample_sizes(200))
    for p in curve:
        assert float(p["ci_width"]) == pytest.approx(2 * 1.959963984540054 * float(p["se"]))
        assert int(p["n_replicates"]) == 100
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_pilot_size_replicates_are_the_runs_own_bootstrap(pilot, tmp_path):
    """At m = P with the run's seed and B, the draws are those behind comparisons.csv."""
    out = tmp_path / "same"
    main([str(pilot.root), "--out", str(out), "--bootstrap", "20", "--device", "cpu",
          "--no-progress"])
    comparison = read(pilot.metrics / "comparisons.csv")[0]
    at_pilot = {p["metric"]: p for p in read(out / "plan_curve.csv") if int(p["m"]) == 200}
    for metric in ("delta_clip", "delta_fid"):
        width = float(comparison[f"{metric}_ci_high"]) - float(comparison[f"{metric}_ci_low"])
        assert float(at_pilot[metric]["ci_width_percentile"]) == pytest.approx(width, rel=1e-9)
    rows = read(out / "plan.csv")
    assert float(rows[1]["estimate"]) == pytest.approx(float(comparison["delta_clip"]), rel=1e-12)


def test_one_config_plans_the_precision_of_its_own_numbers(tmp_path, capsys):
    run = make_run(tmp_path / "one", n_prompts=60, weights=("3",), fid=False)
    rows = plan(run, tmp_path, "plan", "--delta-clip", "0.25")
    assert "no pair" in capsys.readouterr().out
    assert len(rows) == 1
    row = rows[0]
    assert (row["metric"], row["goal"], row["reference_key"]) == ("clip_score", "precision", "")
    assert row["power_at_pilot"] == ""
    # the CLIP score's per-prompt SD: image noise 2 (100 · 0.02) averaged over k = 2
    assert float(row["c"]) == pytest.approx(2.0 / math.sqrt(2), rel=0.25)
    z = 1.959963984540054
    assert int(row["prompts_needed"]) == math.ceil((z * float(row["c"]) / 0.25) ** 2)


def test_config_flag_plans_one_pair(tmp_path):
    run = make_run(tmp_path / "three", n_prompts=30, weights=("1", "3", "5"), fid=False)
    rows = plan(run, tmp_path, "plan", "--config", "w5-none-aug0-ddim4")
    assert [(r["config_key"], r["reference_key"], r["metric"]) for r in rows] == \
        [("w5-none-aug0-ddim4", "w1-none-aug0-ddim4", "delta_clip")]


# --------------------------------------------------------------------------------- errors


def test_old_run_without_stored_files_exits_2_with_one_message(tmp_path, capsys):
    run = RunDir(tmp_path / "old")
    run.write_prompts([{"prompt_id": "p0", "text": "a", "category": "t"}])
    atomic_write_text(run.summary, "config_key,fid,clip_score\nw1-none-aug0-ddim4,1.0,20.0\n")
    assert main([str(run.root), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "statistics.json" in err[0] and "python -m bench.rescore" in err[0]
    assert not (run.root / "plan").exists()


def test_missing_features_exit_2(tmp_path, capsys):
    run = make_run(tmp_path / "run", n_prompts=12)
    (features_dir(run.metrics, "w3-none-aug0-ddim4") / "fake.npy").unlink()
    assert main([str(run.root), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fake.npy not found" in err[0]


@pytest.mark.parametrize("flags, match", [
    (["--delta-fid", "0"], "--delta-fid must be > 0"),
    (["--delta-clip", "-1"], "--delta-clip must be > 0"),
    (["--power", "1"], "--power must be in (0, 1)"),
    (["--alpha", "0"], "--alpha must be in (0, 1)"),
    (["--bootstrap", "1"], "--bootstrap must be at least 2"),
    (["--config", "w7-none-aug0-ddim4"], "--config w7-none-aug0-ddim4: not a config"),
    (["--config", "w1-none-aug0-ddim4"], "is the reference config"),
])
def test_bad_flags_exit_2_with_one_message(pilot, tmp_path, capsys, flags, match):
    assert main([str(pilot.root), "--out", str(tmp_path / "x"), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]
