"""rater.stats: CI coverage on clustered simulated votes, Wilson bounds against 60-digit
arithmetic, Bradley-Terry against an independent scipy MLE, Krippendorff's alpha against a hand
computation, control exclusion, orientation. (Interval containment on random small vote tables:
tests/test_rater_intervals.py.)"""
from decimal import Decimal, localcontext

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import log_expit

from rater import stats
from rater.simulate import PreferenceModel, Raters, simulate_votes, synthetic_tasks

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def votes_frame(rows) -> pd.DataFrame:
    """Store-shaped votes from (rater, task, prompt, question, left, right, left_label,
    right_label, choice[, is_control, control_expected]) tuples."""
    out = []
    for i, r in enumerate(rows):
        rater, task, prompt, q, left, right, ll, rl, choice, *ctrl = r
        is_control, expected = (ctrl + [False, None])[:2]
        out.append(dict(id=i + 1, task_id=task, rater_id=rater, question_id=q, choice=choice,
                        left_system=left, right_system=right, left_label=ll, right_label=rl,
                        shown_order=f"{ll}|{rl}", category="", prompt_id=prompt,
                        is_control=is_control, control_expected=expected, time_shown=T0,
                        time_answered=T0, app_version="test"))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------ preference rates

def test_wilson_matches_published_values():
    lo, hi = stats.wilson(0.8, 10)            # 8 of 10: 0.4902 .. 0.9433 (Newcombe 1998)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    lo, hi = stats.wilson(0.0, 20)            # 0 of 20: 0 .. z^2 / (n + z^2)
    assert lo == 0 and hi == pytest.approx(1.96 ** 2 / (20 + 1.96 ** 2), rel=1e-3)


def test_wilson_is_exact_at_the_ends_at_any_n():
    """0 of n and n of n, the rates of a pilot's unanimous votes: the textbook centre - half
    gave lo = 2^-54 > p = 0 at n = 3, and the plot's error bar p - lo crashed matplotlib."""
    n = np.array([1e-9, 0.01, 0.5, 1, 2, 3, 7, 1e3, 1e9])
    z2 = stats.Z95 ** 2
    lo, hi = stats.wilson(np.zeros_like(n), n)
    assert (lo == 0).all()
    np.testing.assert_allclose(hi, z2 / (n + z2), rtol=1e-14)
    lo, hi = stats.wilson(np.ones_like(n), n)
    assert (hi == 1).all()
    np.testing.assert_allclose(lo, n / (n + z2), rtol=1e-14)


def _wilson_60_digits(p: float, n: float) -> tuple[float, float]:
    """The textbook centre -/+ half in 60-digit decimal arithmetic (cancellation harmless)."""
    with localcontext() as ctx:
        ctx.prec = 60
        p, n, z = Decimal(p), Decimal(n), Decimal(stats.Z95)
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * (p * (1 - p) / n + z * z / (4 * n * n)).sqrt() / denom
        return float(centre - half), float(centre + half)


def test_wilson_equals_the_textbook_formula_and_contains_p():
    """The same interval as before for every n (relative error 1e-14 against 60 digits, where
    the textbook form in doubles loses all digits of lo near p = 0), and lo <= p <= hi."""
    ps = np.r_[0, 1, 0.5, 1 / 3, 2 / 3, 1e-6, 1 - 1e-6, 0.999, np.arange(1, 12) / 12]
    ns = np.array([1e-9, 1e-3, 0.5, 1, 2, 3, 10, 57.3, 1e3, 1e6, 1e9])
    p, n = (x.ravel() for x in np.meshgrid(ps, ns))
    lo, hi = stats.wilson(p, n)
    ref = np.array([_wilson_60_digits(a, b) for a, b in zip(p, n)])
    np.testing.assert_allclose(lo, np.clip(ref[:, 0], 0, 1), rtol=1e-14, atol=1e-40)
    np.testing.assert_allclose(hi, np.clip(ref[:, 1], 0, 1), rtol=1e-14, atol=1e-40)
    assert ((0 <= lo) & (lo <= p) & (p <= hi) & (hi <= 1)).all()
    k = np.arange(41)[:, None]                             # every k of n, n_eff anywhere
    for n_votes in (1, 2, 3, 5, 12, 40):
        rate = np.minimum(k, n_votes) / n_votes
        lo, hi = stats.wilson(rate, np.geomspace(1e-9, n_votes, 25)[None, :])
        assert ((0 <= lo) & (lo <= rate) & (rate <= hi) & (hi <= 1)).all()


def test_twoway_variance_reduces_to_iid_when_every_vote_is_its_own_cluster():
    rng = np.random.default_rng(0)
    y = np.eye(3)[rng.integers(0, 3, 50)]
    v = stats.twoway_variance(y, np.arange(50), np.arange(50) + 100)
    n = len(y)
    expected = ((y - y.mean(0)) ** 2).sum(0) / (n * (n - 1))   # CR1 = n/(n-1) * iid
    np.testing.assert_allclose(v, expected, rtol=1e-12)


def _clustered_sims(n_sims, rng, raters=20, prompts=30, per_rater=15):
    """Votes whose rater has one of two preference types and whose prompt adds ambiguity;
    returns per simulation (outcomes, rater ids, prompt ids) and the population truth."""
    types = np.array([[0.7, 0.1, 0.2], [0.3, 0.3, 0.4]])
    haze_max = 0.2
    truth = (1 - haze_max / 2) * types.mean(0) + haze_max / 2 * np.array([0, 1, 0])
    sims = []
    for _ in range(n_sims):
        kind = rng.integers(0, 2, raters)
        haze = rng.uniform(0, haze_max, prompts)
        pick = np.argsort(rng.random((raters, prompts)), 1)[:, :per_rater]
        r = np.repeat(np.arange(raters), per_rater)
        p = pick.ravel()
        probs = (1 - haze[p])[:, None] * types[kind[r]] + np.outer(haze[p], [0, 1, 0])
        outcome = np.minimum((rng.random(len(r))[:, None] > probs.cumsum(1)).sum(1), 2)
        sims.append((outcome, r, p))
    return sims, truth


def test_clustered_intervals_cover_the_truth_and_iid_ones_do_not():
    """200 seeded simulations: each 95% interval covers the true rate >= 90% of the time; a
    plain Wilson interval on the same votes does not (the test can see under-coverage)."""
    sims, truth = _clustered_sims(200, np.random.default_rng(2024))
    ours, iid = np.zeros(3), np.zeros(3)
    for outcome, r, p in sims:
        y = np.eye(3)[outcome]
        mean, lo, hi = stats.rate_ci(y, r, p)
        ours += (lo <= truth) & (truth <= hi)
        ilo, ihi = stats.wilson(mean, len(y))
        iid += (ilo <= truth) & (truth <= ihi)
    ours, iid = ours / len(sims), iid / len(sims)
    print(f"coverage (A, indifferent, B): clustered {ours}, iid Wilson {iid}")
    assert (ours >= 0.90).all(), ours
    assert iid[0] < 0.85, iid      # A: the rate the two rater types disagree on most


def test_preference_rates_per_category_and_overall():
    v = votes_frame([("r1", "t1", "p1", "fidelity", "x", "y", "A", "B", "left"),
                     ("r2", "t1", "p1", "fidelity", "y", "x", "B", "A", "right"),
                     ("r3", "t1", "p1", "fidelity", "x", "y", "A", "B", "indifferent"),
                     ("r1", "t2", "p2", "fidelity", "y", "x", "B", "A", "left")])
    v["category"] = ["Colors", "Colors", "Colors", "Text"]
    prefs = stats.preference_rates(stats.orient(v))
    assert list(prefs.columns) == stats.PREF_COLUMNS
    overall = prefs[prefs["category"] == "all"].iloc[0]
    assert (overall["system_a"], overall["system_b"]) == ("x", "y")
    assert overall[["p_a", "p_indifferent", "p_b"]].tolist() == [0.5, 0.25, 0.25]
    assert (overall["n_votes"], overall["n_raters"]) == (4, 3)
    colors = prefs[prefs["category"] == "Colors"].iloc[0]
    assert colors[["p_a", "p_indifferent", "p_b"]].tolist() == pytest.approx([2 / 3, 1 / 3, 0])
    assert set(prefs["category"]) == {"all", "Colors", "Text"}
    assert (prefs["p_a_lo"] <= prefs["p_a"]).all() and (prefs["p_a"] <= prefs["p_a_hi"]).all()


# ------------------------------------------------------------------------------ orientation

def test_orient_undoes_the_side_randomisation():
    v = votes_frame([("r1", "t1", "p1", "fidelity", "good", "bad", "A", "B", "left"),
                     ("r2", "t1", "p1", "fidelity", "bad", "good", "B", "A", "right"),
                     ("r3", "t1", "p1", "fidelity", "bad", "good", "B", "A", "left"),
                     ("r4", "t2", "p2", "fidelity", "ref", "good", "reference", "A", "right"),
                     ("c", "c1", "p1", "control", "control:original", "control:corrupted",
                      "original", "corrupted", "left", True, "left")])
    o = stats.orient(v)
    assert len(o) == 4                                        # the control is left out
    assert o["system_a"].tolist()[:3] == ["good"] * 3
    assert o["outcome"].tolist() == [0, 0, 2, 0]
    assert o["score"].tolist() == [1.0, 1.0, 0.0, 1.0]
    flipped = stats.orient(v, reference="good")               # the reference is always B
    assert flipped["system_b"].tolist()[:3] == ["good"] * 3
    assert flipped["outcome"].tolist()[:3] == [2, 2, 0]


# ---------------------------------------------------------------------------------- controls

def test_raters_failing_controls_are_excluded_and_counted():
    rows = []
    for i, choice in enumerate(["left", "left", "left", "indifferent"]):   # 3 of 4 = 0.75
        rows.append(("r1", f"c{i}", "", "control", "control:original", "control:corrupted",
                     "original", "corrupted", choice, True, "left"))
    for i in range(5):                                                     # 5 of 5
        rows.append(("r2", f"c{i}", "", "control", "control:corrupted", "control:original",
                     "corrupted", "original", "right", True, "right"))
    rows += [("r1", "t1", "p1", "fidelity", "x", "y", "A", "B", "left"),
             ("r3", "t1", "p1", "fidelity", "x", "y", "A", "B", "left")]    # r3: no controls
    table = stats.rater_table(votes_frame(rows), threshold=0.8).set_index("rater_id")
    assert table.loc["r1", "control_accuracy"] == 0.75 and table.loc["r1", "excluded"]
    assert table.loc["r1", "n_votes"] == 1 and table.loc["r1", "n_controls"] == 4
    assert not table.loc["r2", "excluded"] and table.loc["r2", "control_accuracy"] == 1.0
    assert not table.loc["r3", "excluded"] and np.isnan(table.loc["r3", "control_accuracy"])
    assert not stats.rater_table(votes_frame(rows), threshold=0.7)["excluded"].any()


# ---------------------------------------------------------------------------- Bradley-Terry

def _scipy_bt(wins: np.ndarray) -> np.ndarray:
    """Independent MLE: L-BFGS-B on the negative log-likelihood, centred afterwards."""
    n = len(wins)

    def nll(theta):
        d = theta[:, None] - theta[None, :]
        p = np.exp(log_expit(d))
        grad = -(wins.sum(1) - ((wins + wins.T) * p).sum(1))
        return -(wins * log_expit(d)).sum(), grad

    res = minimize(nll, np.zeros(n), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000})
    return res.x - res.x.mean()


def test_bt_fit_equals_an_independent_scipy_mle():
    rng = np.random.default_rng(7)
    wins = rng.integers(1, 20, (5, 5)).astype(float) + 0.5 * rng.integers(0, 4, (5, 5))
    np.fill_diagonal(wins, 0)
    ours = stats.bt_fit(wins, ridge=0.0)
    np.testing.assert_allclose(ours, _scipy_bt(wins), atol=1e-5)
    assert abs(ours.sum()) < 1e-12                                       # sum-zero anchor
    batch = stats.bt_fit(np.stack([wins, wins.T]), ridge=0.0)            # a batch at once
    np.testing.assert_allclose(batch[0], ours, atol=1e-10)
    np.testing.assert_allclose(batch[1], -ours, atol=1e-8)


def test_a_replicate_that_repeats_the_data_reproduces_the_estimate_exactly():
    """Each fit of a batch stops on its own. With one stop for the whole batch, a bootstrap
    replicate equal to the data missed the estimate by 3.5e-12 on separated wins (3.9 vs its
    CI [0, 3.9 - 3e-12] on a pilot-size table), so the percentile CI did not contain it."""
    wins = np.array([[0, 3, 1], [0, 0, 1.5], [0, 0.5, 0]])          # system 0 never loses
    batch = stats.bt_fit(np.stack([wins, 2 * wins, np.zeros((3, 3)), wins.T, wins]))
    np.testing.assert_array_equal(batch[0], stats.bt_fit(wins))
    np.testing.assert_array_equal(batch[4], batch[0])
    np.testing.assert_array_equal(batch[1], stats.bt_fit(2 * wins))
    assert (batch[2] == 0).all()


def test_a_percentile_interval_that_misses_the_estimate_is_widened_to_it(monkeypatch):
    _, o = _four_systems()
    boot = stats.bt_bootstrap
    monkeypatch.setattr(stats, "bt_bootstrap", lambda *a, **k: boot(*a, **k) + 10.0)
    bt = stats.bradley_terry(o, n_boot=20)
    assert (bt["ci_lo"] == bt["strength"]).all() and (bt["ci_hi"] > bt["strength"] + 9).all()


def test_bt_stays_finite_when_one_system_wins_everything():
    wins = np.array([[0, 5, 5], [0, 0, 3], [0, 2, 0]], float)
    theta = stats.bt_fit(wins)
    assert np.isfinite(theta).all() and theta[0] > theta[1] + 5


def _four_systems(seed=0):
    systems = ["m:w1-none-aug0-ddim64", "m:w2-none-aug0-ddim64", "m:w4-none-aug0-ddim64",
               "m:w8-none-aug0-ddim64"]
    true = dict(zip(systems, [0.0, 0.6, 1.2, 1.8]))
    tasks = synthetic_tasks(systems, questions=("fidelity",), categories=("C",),
                            prompts_per_category=10, seed=seed)
    votes = simulate_votes(tasks, PreferenceModel(true, tie=0.4),
                           Raters(n_raters=12, n_careless=0, control_rate=0), seed=seed)
    return true, stats.orient(votes)


def test_bradley_terry_recovers_the_true_order_and_matches_scipy_on_the_same_data():
    true, o = _four_systems()
    bt = stats.bradley_terry(o, n_boot=200, seed=0)
    assert list(bt.columns) == stats.BT_COLUMNS
    assert bt["system"].tolist() == sorted(true, key=true.get, reverse=True)
    assert (bt["ci_lo"] <= bt["strength"]).all() and (bt["strength"] <= bt["ci_hi"]).all()
    assert bt["rank"].iloc[0] == 1 and bt["rank"].iloc[-1] > 1
    assert (bt["n_comparisons"] == 3 * 10 * 12).all()
    # the same votes as a win matrix, ties as half wins, fitted by scipy
    systems = sorted(true)
    idx = {s: i for i, s in enumerate(systems)}
    wins = np.zeros((4, 4))
    for a, b, s in zip(o["system_a"], o["system_b"], o["score"]):
        wins[idx[a], idx[b]] += s
        wins[idx[b], idx[a]] += 1 - s
    ref = dict(zip(systems, _scipy_bt(wins)))
    np.testing.assert_allclose(bt["strength"], [ref[s] for s in bt["system"]], atol=1e-4)


def test_bradley_terry_bootstrap_is_seeded():
    _, o = _four_systems(seed=1)
    a = stats.bradley_terry(o, n_boot=50, seed=3)
    b = stats.bradley_terry(o, n_boot=50, seed=3)
    c = stats.bradley_terry(o, n_boot=50, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["ci_lo"], c["ci_lo"])
    np.testing.assert_allclose(a["strength"], c["strength"])


# -------------------------------------------------------------------------------- agreement

def test_krippendorff_alpha_matches_a_hand_computation():
    """2 raters, 4 tasks; oriented values r1: A A B I, r2: A B B I (sides shuffled below).
    Coincidences: o_AA = 2, o_AB = o_BA = 1, o_BB = 2, o_II = 2; n_A = n_B = 3, n_I = 2, n = 8.
    Nominal: D_o = 2/8, D_e = 2(9 + 6 + 6)/56 = 42/56, alpha = 1 - (1/4)/(3/4) = 2/3.
    Ordinal (A < I < B): d2(A,I) = d2(I,B) = (5 - 2.5)^2 = 6.25, d2(A,B) = (8 - 3)^2 = 25;
    D_o = 2 * 25 / 8 = 6.25, D_e = 2(3*2*6.25 + 2*3*6.25 + 3*3*25)/56 = 600/56,
    alpha = 1 - 6.25 * 56 / 600 = 5/12."""
    x, y = "m:w1-none-aug0-ddim64", "m:w5-none-aug0-ddim64"
    rows = []
    for rater, answers in (("r1", "AABI"), ("r2", "ABBI")):
        for k, ans in enumerate(answers):
            x_left = (k + (rater == "r2")) % 2 == 0
            side_x = "left" if x_left else "right"
            side_y = "right" if x_left else "left"
            choice = {"A": side_x, "B": side_y, "I": "indifferent"}[ans]
            left, right = (x, y) if x_left else (y, x)
            labels = ("A", "B") if x_left else ("B", "A")
            rows.append((rater, f"t{k}", f"p{k}", "alignment", left, right, *labels, choice))
    agr = stats.agreement(stats.orient(votes_frame(rows))).set_index("level")
    assert list(agr.reset_index().columns) == ["level"] + [
        c for c in stats.AGREEMENT_COLUMNS if c != "level"]
    assert agr.loc["nominal", "alpha"] == pytest.approx(2 / 3, abs=1e-12)
    assert agr.loc["ordinal", "alpha"] == pytest.approx(5 / 12, abs=1e-12)
    assert agr.loc["nominal", "n_raters"] == 2 and agr.loc["nominal", "n_items"] == 4


# ------------------------------------------------------------------------------ Pareto data

def test_parse_system():
    info = stats.parse_system("tiny:w1.35_8-dyn0.995cap2-aug0.1-ddpm256")
    assert info == {"model_id": "tiny", "guidance": (1.35, 8.0), "guidance_label": "1.35/8",
                    "thresholding": "dynamic:0.995:2", "rest": "aug0.1-ddpm256"}
    assert stats.parse_system("a:b:w5-static-aug0-ddim64")["model_id"] == "a:b"
    assert stats.parse_system("m:w5-none-aug0-ddim64")["thresholding"] == "none"
    for other in ("reference", "control:original", "m:not-a-key", "w5-none-aug0-ddim64"):
        assert stats.parse_system(other) is None


def test_pareto_human_prefers_against_the_reference():
    ref, hi, other = ("m:w3-dyn0.995-aug0-ddim64", "m:w8-static-aug0-ddim64",
                      "m:w8-static-aug0-ddpm256")          # other sampler: not in the family
    rows = []
    for k, (fid, ali) in enumerate([("left", "left"), ("right", "left"), ("indifferent", "left"),
                                    ("right", "right")]):
        rows.append((f"r{k}", f"f{k}", f"p{k}", "fidelity", hi, ref, "A", "B", fid))
        rows.append((f"r{k}", f"a{k}", f"p{k}", "alignment", ref, hi, "B", "A", ali))
    rows.append(("r0", "o", "p0", "fidelity", other, ref, "A", "B", "left"))
    pareto = stats.pareto_human(stats.orient(votes_frame(rows)), reference=ref)
    assert list(pareto.columns) == stats.PARETO_COLUMNS
    assert pareto["system"].tolist() == [ref, hi]
    row = pareto.set_index("system").loc[hi]
    assert row["fidelity_pref"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert row["alignment_pref"] == pytest.approx(1 / 4)     # hi was on the right: "left" = ref
    assert (row["thresholding"], row["guidance"], row["n"]) == ("static", "8", 8)
    assert row["fidelity_lo"] < row["fidelity_pref"] < row["fidelity_hi"]
