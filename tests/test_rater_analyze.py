"""python -m rater analyze end to end on a store filled by simulated raters: every file with its
documented columns, exclusion counted, seeded results, and one clear error for bad input."""
import json

import numpy as np
import pandas as pd
import pytest

from rater import analyze
from rater import simulate as sim
from rater.store import VoteStore
from rater.tasks import system_name

COLUMNS = {
    "preferences.csv": ["question_id", "category", "system_a", "system_b", "n_votes",
                        "n_raters", "p_a", "p_a_lo", "p_a_hi", "p_indifferent",
                        "p_indifferent_lo", "p_indifferent_hi", "p_b", "p_b_lo", "p_b_hi"],
    "bradley_terry.csv": ["question_id", "system", "strength", "ci_lo", "ci_hi", "rank",
                          "n_comparisons"],
    "agreement.csv": ["question_id", "alpha", "level", "n_raters", "n_items"],
    "pareto_human.csv": ["thresholding", "guidance", "system", "reference_system",
                         "fidelity_pref", "fidelity_lo", "fidelity_hi", "alignment_pref",
                         "alignment_lo", "alignment_hi", "n"],
    "raters.csv": ["rater_id", "n_votes", "n_controls", "control_accuracy", "excluded"],
    "power.csv": ["question_id", "system_a", "system_b", "n_votes", "n_prompts", "n_raters",
                  "p_indifferent", "preference", "power", "power_lo", "power_hi", "mdp",
                  "target_power", "rater_sd", "prompt_sd", "n_sims", "statement"],
}
SUMMARY_KEYS = ["n_votes", "n_raters", "n_excluded_raters", "control_threshold", "n_boot",
                "seed", "ci_method", "app_versions"]
REF = "tiny:w3-dyn0.995-aug0-ddim64"


def demo_votes():
    """Simulated votes on a small guidance x thresholding grid, 2 careless raters."""
    systems = [f"tiny:w{w}-{m}-aug0-ddim64" for m in ("none", "dyn0.995") for w in (1, 3, 8)]
    tasks = sim.synthetic_tasks(systems, pairs="reference", reference=REF,
                                categories=("Colors", "Text"), prompts_per_category=2)
    model = sim.demo_model()
    return sim.simulate_votes(tasks, model, sim.Raters(n_raters=6, n_careless=2,
                                                       control_rate=0.5), seed=0)


def fill(url: str) -> None:
    store = VoteStore(url)
    sim.fill_store(store, demo_votes(), progress=False)
    store.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A SQLite store of demo_votes."""
    path = tmp_path_factory.mktemp("ratings") / "ratings.db"
    fill(str(path))
    return path


def test_analyze_writes_every_file_with_its_columns(db, tmp_path, capsys):
    out = tmp_path / "out"
    assert analyze.main(["--db", str(db), "--out", str(out), "--bootstrap", "50"]) == 0
    assert str(out) in capsys.readouterr().out
    for name, cols in COLUMNS.items():
        table = pd.read_csv(out / name)
        assert list(table.columns[:len(cols)]) == cols, name
        assert len(table) > 0, name
    for png in ("preferences.png", "bradley_terry.png", "pareto_human.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert all(k in summary for k in SUMMARY_KEYS)
    raters = pd.read_csv(out / "raters.csv")
    assert summary["n_excluded_raters"] == raters["excluded"].sum() == 2
    assert summary["n_raters"] == 6 and summary["n_boot"] == 50
    assert summary["n_votes"] == raters.loc[~raters["excluded"], "n_votes"].sum()
    prefs = pd.read_csv(out / "preferences.csv", keep_default_na=False)
    assert {"all", "Colors", "Text"} <= set(prefs["category"])
    assert (prefs.loc[prefs["category"] == "all", "n_votes"] == 4 * 2 * 2).all()
    pareto = pd.read_csv(out / "pareto_human.csv")
    assert set(pareto["reference_system"]) == {REF}
    assert set(pareto["thresholding"]) == {"none", "dynamic:0.995"}


def test_postgresql_gives_the_same_tables_as_sqlite(db, pg_url, tmp_path):
    """The same votes in a PostgreSQL server started by the tests: every file is the same."""
    fill(pg_url)
    a = analyze.run_analysis(str(db), tmp_path / "sqlite", n_boot=50, power_sims=50)
    b = analyze.run_analysis(pg_url, tmp_path / "pg", n_boot=50, power_sims=50)
    for name in COLUMNS:
        pd.testing.assert_frame_equal(pd.read_csv(a[name.split(".")[0]]),
                                      pd.read_csv(b[name.split(".")[0]]), check_exact=True)
    assert json.loads(a["summary"].read_text()) == json.loads(b["summary"].read_text())
    assert pd.read_csv(a["preferences"])["n_votes"].sum() > 0


def test_power_of_the_study_is_written(db, tmp_path):
    paths = analyze.run_analysis(str(db), tmp_path, n_boot=0, power_preference=0.7,
                                 power_sims=100)
    power = pd.read_csv(paths["power"])
    prefs = pd.read_csv(paths["preferences"], keep_default_na=False)
    prefs = prefs[prefs["category"] == "all"]
    assert len(power) == len(prefs) > 0
    assert (power["n_votes"].to_numpy() == prefs["n_votes"].to_numpy()).all()
    assert ((0 <= power["power_lo"]) & (power["power_lo"] <= power["power"])
            & (power["power"] <= power["power_hi"]) & (power["power_hi"] <= 1)).all()
    assert (power["preference"] == 0.7).all() and power["statement"].str.contains("power").all()
    summary = json.loads(paths["summary"].read_text())["power"]
    assert summary["file"] == "power.csv" and summary["preference"] == 0.7


def test_analyze_is_seeded_and_takes_the_reference(db, tmp_path):
    a = analyze.run_analysis(str(db), tmp_path / "a", n_boot=30, seed=5, reference=REF)
    b = analyze.run_analysis(str(db), tmp_path / "b", n_boot=30, seed=5, reference=REF)
    assert set(a) == set(analyze.FILES)
    pd.testing.assert_frame_equal(pd.read_csv(a["bradley_terry"]), pd.read_csv(b["bradley_terry"]))
    prefs = pd.read_csv(a["preferences"])
    assert (prefs["system_b"] == REF).all()              # the reference is always set B


def test_control_threshold_zero_keeps_everyone(db, tmp_path):
    paths = analyze.run_analysis(str(db), tmp_path, n_boot=0, control_threshold=0.0)
    assert json.loads(paths["summary"].read_text())["n_excluded_raters"] == 0


def test_missing_or_empty_store_is_one_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert analyze.main(["--db", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and err.count("\n") == 1
    assert not missing.exists()                          # nothing created by looking
    empty = tmp_path / "empty.db"
    VoteStore(str(empty)).close()
    assert analyze.main(["--db", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no votes" in capsys.readouterr().err


def test_python_m_rater_dispatches_to_analyze(db, tmp_path):
    from rater.__main__ import main

    assert main(["analyze", "--db", str(db), "--out", str(tmp_path), "--bootstrap", "0"]) == 0
    assert (tmp_path / "summary.json").is_file()


def test_a_pilot_of_one_rater_analyses_cleanly(tmp_path, capsys):
    """One rater's first six votes, as the app writes them: three fidelity tasks "I prefer set
    A", three alignment tasks "I am indifferent", one prompt per category. The 0-of-3 rates got
    a Wilson lower bound of 2^-54 > 0 and the preference plot's error bars crashed matplotlib."""
    a = "tiny:w8-dyn0.995-aug0-ddim64"
    tasks = sim.synthetic_tasks([a, REF], pairs="reference", reference=REF,
                                categories=("Colors", "Counting", "Text"), prompts_per_category=1)
    db = tmp_path / "pilot.db"
    store = VoteStore(str(db))
    t = pd.Timestamp("2025-01-01", tz="UTC").to_pydatetime()
    for task in tasks:
        h, q = task["hidden"], task["question_id"]
        store.record_vote(task_id=task["task_id"], rater_id="pilot", question_id=q,
                          choice=h["a_side"] if q == "fidelity" else "indifferent",
                          left_system=system_name(h["left"]), right_system=system_name(h["right"]),
                          left_label=h["left"]["label"], right_label=h["right"]["label"],
                          time_shown=t, time_answered=t, **task["meta"])
    store.close()
    out = tmp_path / "out"
    assert analyze.main(["--db", str(db), "--out", str(out), "--bootstrap", "100"]) == 0
    assert "6 votes from 1 raters" in capsys.readouterr().out
    for name in analyze.FILES.values():
        assert (out / name).is_file(), name
    for png in ("preferences.png", "bradley_terry.png", "pareto_human.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    def read(name):
        return pd.read_csv(out / name)

    prefs = read("preferences.csv").set_index(["question_id", "category"])
    assert len(prefs) == 2 * 4                         # all + 3 categories of one vote each
    for k in ("p_a", "p_indifferent", "p_b"):
        lo, est, hi = (prefs[c].to_numpy() for c in (f"{k}_lo", k, f"{k}_hi"))
        assert ((0 <= lo) & (lo <= est) & (est <= hi) & (hi <= 1)).all(), k
    z2 = 1.959963984540054 ** 2                        # unanimous: Wilson at n_eff = n exactly
    fid, ali = prefs.loc[("fidelity", "all")], prefs.loc[("alignment", "all")]
    assert (fid["p_a"], fid["p_a_hi"], fid["p_b_lo"], fid["p_indifferent_lo"]) == (1, 1, 0, 0)
    assert fid["p_a_lo"] == pytest.approx(3 / (3 + z2), rel=1e-12)
    assert (ali["p_indifferent"], ali["p_a_lo"], ali["p_b_lo"]) == (1, 0, 0)
    assert prefs.loc[("fidelity", "Text"), "p_a_lo"] == pytest.approx(1 / (1 + z2), rel=1e-12)
    bt = read("bradley_terry.csv")
    assert len(bt) == 4
    assert ((bt["ci_lo"] <= bt["strength"]) & (bt["strength"] <= bt["ci_hi"])).all()
    pareto = read("pareto_human.csv").set_index("system")
    assert pareto.loc[REF, "n"] == 0 and np.isnan(pareto.loc[REF, "fidelity_lo"])
    row = pareto.loc[a]
    assert (row["fidelity_pref"], row["fidelity_hi"], row["alignment_pref"]) == (1, 1, 0.5)
    for q in ("fidelity", "alignment"):
        assert row[f"{q}_lo"] <= row[f"{q}_pref"] <= row[f"{q}_hi"], q
