"""Every interval rater.stats reports contains its estimate and stays in range, on 300 seeded
random vote tables as small as one vote (Bradley-Terry and Pareto on the first 100). A pilot
study must analyse, and the plots' error bars, estimate - lo and hi - estimate, must be >= 0."""
import numpy as np
import pandas as pd
import pytest

from rater import stats

T0 = pd.Timestamp("2025-01-01", tz="UTC")
N_TABLES = 300
N_FIT = 100  # tables for Bradley-Terry and Pareto: ~15 ms of pandas overhead each
MODES = ("none", "static", "dyn0.995")


def random_table(t: int, rng: np.random.Generator) -> pd.DataFrame:
    """Store-shaped votes of table t: 1-4 raters, 1-5 prompts, 2-3 systems of one model (a vote
    needs two), 1-12 votes with random questions, sides, categories and choices. Names carry t,
    so tables in one frame share no system, rater, prompt or Pareto family."""
    n_raters, n_prompts = rng.integers(1, 5), rng.integers(1, 6)
    n_systems, n_votes = rng.integers(2, 4), rng.integers(1, 13)
    systems = [f"t{t}:w{w}-{rng.choice(MODES)}-aug0-ddim64"
               for w in rng.choice([1, 2, 3, 5, 8], n_systems, replace=False)]
    rows = []
    for i in range(n_votes):
        a, b = rng.choice(n_systems, 2, replace=False)
        a_left = bool(rng.integers(2))
        (left, ll), (right, rl) = ((systems[a], "A"), (systems[b], "B"))[::1 if a_left else -1]
        prompt = int(rng.integers(n_prompts))
        rows.append(dict(task_id=f"t{t}-task{i}", rater_id=f"t{t}-r{rng.integers(n_raters)}",
                         question_id=("fidelity", "alignment")[rng.integers(2)],
                         choice=("left", "right", "indifferent")[rng.integers(3)],
                         left_system=left, right_system=right, left_label=ll, right_label=rl,
                         shown_order=f"{ll}|{rl}", category=("Colors", "Text", "")[prompt % 3],
                         prompt_id=f"t{t}-p{prompt}", is_control=False, control_expected=None,
                         time_shown=T0, time_answered=T0, app_version="test"))
    return pd.DataFrame(rows)


def first_tables(oriented: pd.DataFrame, k: int) -> pd.DataFrame:
    return oriented[oriented["table"].str[1:].astype(int) < k]


@pytest.fixture(scope="module")
def oriented():
    rng = np.random.default_rng(20250101)
    votes = pd.concat([random_table(t, rng) for t in range(N_TABLES)], ignore_index=True)
    votes.insert(0, "id", np.arange(1, len(votes) + 1))
    out = stats.orient(votes)
    out["table"] = out["rater_id"].str.split("-").str[0]
    return out


def assert_contained(est, lo, hi, low=-np.inf, high=np.inf, what=""):
    est, lo, hi = (np.asarray(x, float) for x in (est, lo, hi))
    assert np.isfinite([est, lo, hi]).all(), what
    bad = ~((low <= lo) & (lo <= est) & (est <= hi) & (hi <= high))
    assert not bad.any(), f"{what}: {np.c_[lo, est, hi][bad][:5]}"
    assert (est - lo >= 0).all() and (hi - est >= 0).all(), what   # the plots' error bars


def test_tables_cover_the_small_cases(oriented):
    per = oriented.groupby("table").agg(n=("outcome", "size"), r=("rater_id", "nunique"),
                                        p=("prompt_id", "nunique"))
    assert len(per) == N_TABLES and per["n"].min() == 1 and per["n"].max() == 12
    assert per["r"].min() == 1 and per["r"].max() == 4 and per["p"].max() == 5
    assert set(oriented["outcome"]) == {0, 1, 2}


def test_preference_rate_intervals_contain_their_rates(oriented):
    prefs = stats.preference_rates(oriented)
    assert prefs["n_votes"].min() == 1 and (prefs["n_raters"] == 1).any()
    assert prefs.groupby(["question_id", "system_a", "system_b"]).ngroups >= N_TABLES
    for k in ("p_a", "p_indifferent", "p_b"):
        assert_contained(prefs[k], prefs[f"{k}_lo"], prefs[f"{k}_hi"], 0, 1, k)
    # the pilot case that crashed the plot: unanimous votes give the rate 0 or 1 exactly
    zero, one = prefs["p_a"] == 0, prefs["p_a"] == 1
    assert zero.any() and one.any()
    assert (prefs.loc[zero, "p_a_lo"] == 0).all() and (prefs.loc[one, "p_a_hi"] == 1).all()


def test_human_pareto_intervals_contain_their_preferences(oriented):
    pareto = stats.pareto_human(first_tables(oriented, N_FIT))
    rows = pareto[pareto["n"] > 0]
    assert rows["reference_system"].nunique() > N_FIT // 2
    for q in ("fidelity", "alignment"):
        has = rows[rows[f"n_{q}"] > 0]
        assert len(has) > N_FIT // 4
        assert_contained(has[f"{q}_pref"], has[f"{q}_lo"], has[f"{q}_hi"], 0, 1, q)
        assert rows.loc[rows[f"n_{q}"] == 0, f"{q}_lo"].isna().all()   # no votes, no interval


def test_bradley_terry_intervals_contain_their_strengths(oriented):
    # one question per table and question, so each table is fitted and bootstrapped alone
    o = first_tables(oriented, N_FIT)
    bt = stats.bradley_terry(o.assign(question_id=o["question_id"] + "#" + o["table"]),
                             n_boot=20, seed=0)
    assert bt["question_id"].nunique() > N_FIT
    assert_contained(bt["strength"], bt["ci_lo"], bt["ci_hi"], what="bradley_terry")
