"""The paper's central findings on the bundled cascade (Saharia et al. 2022, §2.3): without
thresholding, high guidance breaks the images, while at w = 1 the thresholding modes agree; and
guidance buys alignment over the unconditional model (the bundle's bar since issue 7).

Two sweeps with the paper's ancestral sampler on 150 held-out world captions, 12 steps per stage
(the demo's), the same noise in every setting, scored by the world's oracle:

- the base stage alone, w in {1, 5, 8} x {none, static, dynamic:0.995}; the comparisons are
  calibration_world.checks' (`mode_comparisons`: exact McNemar on the paired images);
- the full cascade at w = 0 and w = 3, static thresholding; the gains are `checks.summarize`'s
  paired ones against w = 0, as the demo's report shows them.

test_calibration_checks checks the arithmetic of both against hand counts. About six minutes
on 2 CPU cores.
"""
from __future__ import annotations

import pytest

from calibration_world import checks
from calibration_world.bundled import bundled_cascade_path
from calibration_world.evaluate import heldout_captions, oracle_sweep
from imagen_ref.pipeline import Cascade

GUIDANCE = (1.0, 5.0, 8.0)
MODES = ("none", "static", "dynamic:0.995")
N, STEPS, SAMPLER = 150, 12, "ddpm"
GAIN_SKILLS = ("color", "count", "shape", "relation")  # the skills of the issue-7 bar
MIN_GAIN = 0.30  # oracle accuracy at static w = 3 over w = 0, per skill


def _key(w: float, mode: str) -> str:
    return f"w{w:g}-{mode}"


def _sweep(num_stages: int, guidance, modes) -> tuple[list[dict], list[dict], dict]:
    """The bundled cascade's first `num_stages` stages over guidance x modes: oracle_sweep's
    rows, the same rows as calibration_world.checks reads a run's per-image file, and the
    configs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        cascade = Cascade.from_pretrained(bundled_cascade_path(), device="cpu",
                                          num_stages=num_stages)
    rows = oracle_sweep(cascade, heldout_captions(N), guidance, modes, steps=STEPS,
                        sampler=SAMPLER, num_stages=num_stages)
    configs = {_key(w, m): {"config_key": _key(w, m), "guidance": f"{w:g}", "thresholding": m,
                            "aug_level": 0.0, "sampler": SAMPLER, "steps": STEPS}
               for w in guidance for m in modes}
    per_image = [{"config_key": _key(r["guidance"], r["thresholding"]),
                  "prompt_id": str(r["index"]), "k": 0, "seed": r["seed"],
                  "saturated": r["saturation"],
                  **{s: "" if r[s] is None else str(int(r[s])) for s in checks.SKILLS}}
                 for r in rows]
    return rows, per_image, configs


@pytest.fixture(scope="module")
def comparisons() -> dict:
    """(guidance, mode_a, mode_b, skill) -> checks.mode_comparisons row, and the mean
    saturation per (guidance, mode)."""
    rows, per_image, configs = _sweep(1, GUIDANCE, MODES)
    table = {(r["guidance"], r["mode_a"], r["mode_b"], r["skill"]): r
             for r in checks.mode_comparisons(per_image, configs)}
    saturation = {(w, m): sum(r["saturation"] for r in rows
                              if r["guidance"] == w and r["thresholding"] == m) / N
                  for w in GUIDANCE for m in MODES}
    return {"table": table, "saturation": saturation}


@pytest.mark.slow
def test_at_w1_the_three_modes_agree_on_every_skill(comparisons):
    rows = [r for (w, *_), r in comparisons["table"].items() if w == "1"]
    assert len(rows) == 3 * len(checks.SKILLS)
    for r in rows:
        assert r["n_paired"] > 0
        assert r["mcnemar_p"] >= 0.05, (r["mode_a"], r["mode_b"], r["skill"], r["n_a_only"],
                                        r["n_b_only"])


@pytest.mark.slow
@pytest.mark.parametrize("w", [5.0, 8.0])
def test_at_high_guidance_no_thresholding_saturates_most(comparisons, w):
    sat = comparisons["saturation"]
    assert sat[(w, "none")] > max(sat[(w, "static")], sat[(w, "dynamic:0.995")])


@pytest.mark.slow
@pytest.mark.parametrize("w", [5.0, pytest.param(8.0, marks=pytest.mark.xfail(
    strict=True, reason="issue 25, measured: at w = 8 static thresholding breaks this 2.1M-"
    "parameter base nearly as much as none on all right (7.3% against 4.7%, 2 / 6 discordant, "
    "p = 0.29; on 500 captions 5.0% against 4.0%, p = 0.38), though there none is worse on "
    "colour, count, shape and relation each (p < 0.03); with 50 steps 11.3% against 4.0% "
    "(p = 0.013) here, but not on the demo's captions (10.7% against 9.3%)"))])
def test_at_high_guidance_no_thresholding_is_worse_than_static(comparisons, w):
    r = comparisons["table"][(f"{w:g}", "none", "static", "all_right")]
    assert r["n_paired"] == N
    assert r["verdict"] == "a_worse", (r["n_a_only"], r["n_b_only"], r["mcnemar_p"])
    assert r["accuracy_a"] < r["accuracy_b"]


@pytest.mark.slow
@pytest.mark.parametrize("w", [5.0, 8.0])
def test_at_high_guidance_no_thresholding_is_worse_than_dynamic(comparisons, w):
    r = comparisons["table"][(f"{w:g}", "none", "dynamic:0.995", "all_right")]
    assert r["n_paired"] == N
    assert r["verdict"] == "a_worse", (r["n_a_only"], r["n_b_only"], r["mcnemar_p"])
    assert r["accuracy_a"] < r["accuracy_b"]


@pytest.fixture(scope="module")
def gains() -> dict:
    """skill -> the checks.summarize row of the full cascade at static w = 3 (with its paired
    comparison against static w = 0)."""
    _, per_image, configs = _sweep(2, (0.0, 3.0), ("static",))
    return {r["skill"]: r for r in checks.summarize(per_image, configs)
            if r["config_key"] == _key(3.0, "static")}


@pytest.mark.slow
@pytest.mark.parametrize("skill", GAIN_SKILLS)
def test_guidance_gains_at_least_30_points_over_the_unconditional_model(gains, skill):
    r = gains[skill]
    assert r["uncond_key"] == _key(0.0, "static")
    assert r["vs0_n_paired"] == r["n"] > 0
    assert r["vs0_delta"] >= MIN_GAIN, (r["vs0_n_gained"], r["vs0_n_lost"], r["vs0_n_paired"])
    assert r["vs0_mcnemar_p"] < 0.05
