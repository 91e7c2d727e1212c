"""The paper's central finding on the bundled cascade (Saharia et al. 2022, §2.3): without
thresholding, high guidance breaks the images; at w = 1 the thresholding modes agree.

One sweep of the bundled base stage with the paper's ancestral sampler: 150 held-out world
captions, w in {1, 5, 8} x {none, static, dynamic:0.995}, 12 steps (the demo's), the same noise
in every setting, scored by the world's oracle. The comparisons are calibration_world.checks'
(`mode_comparisons`: exact McNemar on the paired images), whose arithmetic
test_calibration_checks checks against hand counts. About three minutes on 2 CPU cores.
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


def _key(w: float, mode: str) -> str:
    return f"w{w:g}-{mode}"


@pytest.fixture(scope="module")
def comparisons() -> dict:
    """(guidance, mode_a, mode_b, skill) -> checks.mode_comparisons row, and the mean
    saturation per (guidance, mode)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        cascade = Cascade.from_pretrained(bundled_cascade_path(), device="cpu", num_stages=1)
    rows = oracle_sweep(cascade, heldout_captions(N), GUIDANCE, MODES, steps=STEPS,
                        sampler=SAMPLER)
    configs = {_key(w, m): {"config_key": _key(w, m), "guidance": f"{w:g}", "thresholding": m,
                            "aug_level": 0.0, "sampler": SAMPLER, "steps": STEPS}
               for w in GUIDANCE for m in MODES}
    per_image = [{"config_key": _key(r["guidance"], r["thresholding"]),
                  "prompt_id": str(r["index"]), "k": 0, "seed": r["seed"],
                  "saturated": r["saturation"],
                  **{s: "" if r[s] is None else str(int(r[s])) for s in checks.SKILLS}}
                 for r in rows]
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
    strict=True, reason="issue 25, open: at w = 8 static thresholding breaks this small base "
    "nearly as much as none (all right 7.3% against 4.7%, 2 / 6 discordant, p = 0.29), though "
    "on 500 captions none is worse on colour, count, shape and relation each; with 50 steps "
    "11.3% against 4.0% (p = 0.013) here, but not on the demo's captions (10.7% against 9.3%)"))])
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
