"""python -m rater plan: the solved effect is the asked population preference, and the planned
study, simulated 200 times through rater.simulate and the analysis' own interval, detects a known
effect in >= 75% of runs at the requested 80% (and half of it does not); the power of a study
that was run, in `rater analyze`; one clear error for bad input."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rater import plan
from rater import simulate as sim
from rater.stats import orient, rate_ci

A, B = "m:w5-dyn0.995-aug0-ddim64", "m:w1-none-aug0-ddim64"


def test_solved_effect_has_the_asked_population_rates():
    """An independent Monte Carlo average over the random effects agrees with the quadrature."""
    eff = plan.solve_effect(0.58, 0.25, rater_sd=0.4, prompt_sd=0.7)
    rng = np.random.default_rng(0)
    d = eff.d0 + 0.4 * rng.standard_normal(400_000) + 0.7 * rng.standard_normal(400_000)
    w = np.stack([np.exp(d / 2), np.full_like(d, eff.nu), np.exp(-d / 2)])
    p = (w / w.sum(0)).mean(1)
    assert p[0] + p[1] / 2 == pytest.approx(0.58, abs=2e-3)
    assert p[1] == pytest.approx(0.25, abs=2e-3)
    none = plan.solve_effect(0.3, 0.0, 0.0, 0.0)       # B preferred, no ties, no effects
    assert none.nu == 0 and 1 / (1 + np.exp(-none.d0)) == pytest.approx(0.3, abs=1e-9)


def pipeline_detects(n_prompts: int, r: int, q: int, eff: plan.Effect, seed: int) -> bool:
    """One simulated study through rater.simulate (tasks, balanced assignment, sides, votes) and
    the analysis (orient, the clustered Wilson CI of the preference)."""
    tasks = sim.synthetic_tasks([A, B], questions=("fidelity",), categories=("C",),
                                prompts_per_category=n_prompts, seed=seed)
    n_raters = -(-n_prompts * r // min(q, n_prompts))
    raters = sim.Raters(n_raters=n_raters, n_careless=0, noise=0.0, prompt_noise=0.0,
                        control_rate=0.0, tasks_per_rater=q, ratings_per_task=r,
                        rater_sd=eff.rater_sd, prompt_sd=eff.prompt_sd)
    votes = sim.simulate_votes(tasks, sim.PreferenceModel({A: eff.d0, B: 0.0}, tie=eff.nu),
                               raters, seed=seed)
    o = orient(votes)
    score = np.where(o["system_a"] == A, o["score"], 1 - o["score"])
    _, lo, _ = rate_ci(score[:, None], o["rater_id"].to_numpy(), o["prompt_id"].to_numpy())
    return bool(lo[0] > 0.5)


def test_simulated_votes_follow_the_design_and_the_effect():
    eff = plan.solve_effect(0.6, 0.2, rater_sd=0.3, prompt_sd=0.5)
    tasks = sim.synthetic_tasks([A, B], questions=("fidelity", "alignment"), categories=("C",),
                                prompts_per_category=30)
    raters = sim.Raters(n_raters=9, n_careless=0, noise=0.0, prompt_noise=0.0, control_rate=0.0,
                        tasks_per_rater=10, ratings_per_task=3, rater_sd=0.3, prompt_sd=0.5)
    votes = sim.simulate_votes(tasks, sim.PreferenceModel({A: eff.d0, B: 0.0}, tie=eff.nu),
                               raters, seed=3)
    per_task = votes.groupby(["task_id", "question_id"])["rater_id"].nunique()
    assert len(per_task) == 60 and (per_task == 3).all()            # r distinct raters
    screens = votes.groupby("rater_id")["prompt_id"].nunique()
    assert (screens == 10).all() and len(screens) == 9               # quota, filled in turn
    both = votes.groupby(["rater_id", "prompt_id"])["question_id"].nunique()
    assert (both == 2).all()                                         # a screen's questions go together
    with pytest.raises(sim.UserError, match="need 9 raters"):
        sim.simulate_votes(tasks, sim.PreferenceModel(), sim.Raters(
            n_raters=8, n_careless=0, tasks_per_rater=10, ratings_per_task=3), seed=0)


@pytest.mark.slow
def test_the_planned_study_detects_the_effect_at_the_requested_power(tmp_path, capsys):
    out = tmp_path / "plan"
    assert plan.main(["--preference", "0.6", "--indifferent", "0.2", "--power", "0.8",
                      "--rater-sd", "0.3", "--prompt-sd", "0.5", "--ratings-per-task", "3",
                      "--tasks-per-rater", "20", "--sims", "200", "--seed", "1",
                      "--out", str(out)]) == 0
    assert "fewest votes" in capsys.readouterr().out
    result = json.loads((out / "plan.json").read_text())
    design = result["cheapest"]
    eff = plan.Effect(**result["effect"])
    n, r, q = design["n_prompts"], design["ratings_per_task"], design["tasks_per_rater"]
    assert 10 < n < 1000 and design["power"] >= 0.8
    hits = [pipeline_detects(n, r, q, eff, 10_000 + i) for i in range(200)]
    assert np.mean(hits) >= 0.75                       # the plan's power holds in the pipeline
    half = [pipeline_detects(n // 2, r, q, eff, 20_000 + i) for i in range(100)]
    assert np.mean(half) < 0.7                         # and the plan is not needlessly large
    table = pd.read_csv(out / "plan.csv")
    assert {"n_prompts", "n_raters", "n_votes", "power", "power_lo", "power_hi",
            "chosen"} <= set(table.columns) and table["chosen"].sum() == 1
    assert (out / "plan.png").read_bytes()[:4] == b"\x89PNG"


def test_power_grows_with_the_study_and_the_effect():
    eff = plan.solve_effect(0.6, 0.2, 0.3, 0.5)
    small = plan.design_power(eff, 20, 3, 20, 300, seed=0)["power"]
    large = plan.design_power(eff, 200, 3, 20, 300, seed=0)["power"]
    null_like = plan.solve_effect(0.501, 0.2, 0.3, 0.5)
    tiny = plan.design_power(null_like, 60, 3, 20, 400, seed=0)
    assert small < 0.6 < 0.95 < large
    assert tiny["power"] < 0.06                         # ~ the test's one-sided 2.5% size


def test_study_power_of_the_votes_that_were_run():
    eff = plan.solve_effect(0.6, 0.2, 0.3, 0.5)
    tasks = sim.synthetic_tasks([A, B], questions=("fidelity",), categories=("C",),
                                prompts_per_category=40)
    votes = sim.simulate_votes(tasks, sim.PreferenceModel({A: eff.d0, B: 0.0}, tie=eff.nu),
                               sim.Raters(n_raters=6, n_careless=0, control_rate=0,
                                          tasks_per_rater=20, ratings_per_task=3), seed=0)
    table = plan.study_power(orient(votes), 0.6, n_sims=200)
    row = table.iloc[0]
    assert (row["n_votes"], row["n_prompts"], row["n_raters"]) == (120, 40, 6)
    assert 0 < row["power_lo"] <= row["power"] <= row["power_hi"] < 1
    assert 0.5 < row["mdp"] < 0.8
    more = plan.study_power(orient(votes), 0.7, n_sims=200).iloc[0]
    assert more["power"] > row["power"]
    assert (row["mdp"] > 0.6) == (row["power"] < 0.8)   # consistent up to simulation noise
    assert "power to detect a 60% preference" in plan.power_statement(row)


@pytest.mark.parametrize("argv, message", [
    (["--preference", "0.5"], "not 0.5"),
    (["--preference", "1.2"], "must be in (0, 1)"),
    (["--preference", "0.55", "--indifferent", "0.95"], "lower it"),
    (["--preference", "0.55", "--power", "1"], "--power"),
    (["--preference", "0.55", "--ratings-per-task", "0,x"], "--ratings-per-task"),
    (["--preference", "0.55", "--rater-sd", "-1"], "--rater-sd"),
])
def test_bad_input_is_one_clear_error(argv, message, tmp_path, capsys):
    assert plan.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
