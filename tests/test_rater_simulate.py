"""rater.simulate: Davidson probabilities, vote frequencies equal to the stated truth, careless
raters failing controls, randomised sides, writing through the VoteStore, the command line."""
import json

import numpy as np
import pytest

from rater import simulate as sim
from rater.stats import orient, rater_table
from rater.store import VoteStore

A, B = "m:w1-none-aug0-ddim64", "m:w5-dyn0.995-aug0-ddim64"


def test_davidson_probabilities_and_explicit_override():
    model = sim.PreferenceModel({A: 1.0}, tie=0.5)
    d = 1.0
    z = np.exp(d / 2) + np.exp(-d / 2) + 0.5
    np.testing.assert_allclose(model.probs("fidelity", A, B),
                               [np.exp(d / 2) / z, 0.5 / z, np.exp(-d / 2) / z])
    np.testing.assert_allclose(model.probs("fidelity", B, A), model.probs("fidelity", A, B)[::-1])
    per_q = sim.PreferenceModel({"alignment": {B: 2.0}}, tie=0.0)
    assert per_q.probs("alignment", A, B)[2] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert per_q.probs("fidelity", A, B) == pytest.approx([0.5, 0, 0.5])
    explicit = sim.PreferenceModel(explicit={("fidelity", A, B): (0.6, 0.1, 0.3)})
    np.testing.assert_allclose(explicit.probs("fidelity", B, A), [0.3, 0.1, 0.6])


def test_vote_frequencies_match_the_true_probabilities():
    model = sim.PreferenceModel(explicit={("fidelity", A, B): (0.6, 0.1, 0.3)})
    raters = sim.Raters(n_raters=40, n_careless=0, noise=0.1, prompt_noise=0.1, control_rate=0)
    tasks = sim.synthetic_tasks([A, B], questions=("fidelity",), categories=("C",),
                                prompts_per_category=100)
    votes = sim.simulate_votes(tasks, model, raters, seed=0)
    freq = np.bincount(orient(votes)["outcome"], minlength=3) / len(votes)
    truth = sim.true_probs(model, raters, "fidelity", A, B)
    np.testing.assert_allclose(truth, 0.8 * np.array([0.6, 0.1, 0.3]) + 0.1 / 3 + [0, 0.1, 0])
    np.testing.assert_allclose(freq, truth, atol=0.03)     # 4000 votes, clustered


def test_careless_raters_fail_controls_and_sides_are_randomised():
    tasks = sim.synthetic_tasks([A, B], prompts_per_category=10)
    votes = sim.simulate_votes(tasks, sim.PreferenceModel({B: 1.0}),
                               sim.Raters(n_raters=10, n_careless=3, control_rate=0.5), seed=1)
    table = rater_table(votes).set_index("rater_id")
    careless = [f"sim-{i:03d}" for i in range(7, 10)]
    assert table["excluded"].to_dict() == {r: r in careless for r in table.index}
    assert (table["n_controls"] >= 0.5 * table["n_votes"]).all()
    real = votes[~votes["is_control"]]
    per_task = real.groupby("task_id")["left_system"].nunique()
    assert (per_task == 2).mean() > 0.9                 # each task is seen both ways round
    a_side = np.where(real["left_label"] == "A", real["left_system"], real["right_system"])
    assert set(a_side) == {A}                           # labels travel with their systems
    ctrl = votes[votes["is_control"]]
    assert set(ctrl["question_id"]) == {"control"}
    orig = np.where(ctrl["left_system"] == "control:original", "left", "right")
    assert (orig == ctrl["control_expected"]).all()
    times = votes.sort_values(["rater_id", "time_answered"])
    assert (times["time_shown"] < times["time_answered"]).all()


def test_synthetic_tasks_are_deterministic_and_complete():
    systems = [A, B, "m:w8-static-aug0-ddim64"]
    tasks = sim.synthetic_tasks(systems, categories=("C", "D"), prompts_per_category=2)
    assert len(tasks) == 3 * 2 * 2 * 2                  # pairs x prompts x questions
    assert tasks == sim.synthetic_tasks(systems, categories=("C", "D"), prompts_per_category=2)
    star = sim.synthetic_tasks(systems, pairs="reference", reference=B, prompts_per_category=1)
    assert all(B in (sim.side_system(t["hidden"]["left"]), sim.side_system(t["hidden"]["right"]))
               for t in star)
    with pytest.raises(sim.UserError):
        sim.synthetic_tasks(systems, pairs="reference", reference="nope")


def test_votes_go_through_the_vote_store(tmp_path):
    tasks = sim.synthetic_tasks([A, B], questions=("fidelity",), categories=("C",),
                                prompts_per_category=3)
    votes = sim.simulate_votes(tasks, sim.PreferenceModel(), sim.Raters(n_raters=3, n_careless=1,
                                                                       control_rate=0.4), seed=2)
    store = VoteStore(str(tmp_path / "v.db"))
    assert sim.fill_store(store, votes, progress=False) == len(votes)
    stored = store.votes()
    store.close()
    key = ["rater_id", "task_id", "question_id"]
    got = stored.sort_values(key).reset_index(drop=True)
    want = votes.sort_values(key).reset_index(drop=True)
    for col in ("choice", "left_system", "right_system", "left_label", "is_control",
                "control_expected", "prompt_id"):
        assert got[col].fillna("-").tolist() == want[col].fillna("-").tolist(), col


def test_read_tasks_of_a_bench_tasks_file(tmp_path):
    task = {"schema": "imagen_bench.rating_task/1", "task_id": "t-0123456789abcdef",
            "question_id": "photorealism", "question": "?", "left": {"images": []},
            "right": {"images": []}, "meta": {"prompt_id": "p1", "category": "", "caption": "c",
                                              "k": 1},
            "hidden": {"a_side": "right",
                       "left": {"label": "reference", "model_id": "coco-val2014-reference",
                                "config_key": None, "run": None, "images": []},
                       "right": {"label": "A", "model_id": "tiny",
                                 "config_key": "w5-dyn0.995-aug0-ddim64", "run": "r", "images": []},
                       "coin_seed": 0}}
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(task) + "\n")
    votes = sim.simulate_votes(sim.read_tasks(path), sim.PreferenceModel(),
                               sim.Raters(n_raters=2, n_careless=0, control_rate=0), seed=0)
    assert set(votes["left_system"]) | set(votes["right_system"]) == {
        "reference", "tiny:w5-dyn0.995-aug0-ddim64"}
    path.write_text("{not json\n")
    with pytest.raises(sim.UserError, match="tasks.jsonl:1"):
        sim.read_tasks(path)


def test_command_line(tmp_path, capsys):
    db = tmp_path / "sim.db"
    assert sim.main(["--db", str(db), "--systems", f"{A},{B}", "--strength", f"{B}=1",
                     "--raters", "3", "--careless", "1", "--prompts", "1"]) == 0
    store = VoteStore(str(db))
    n = len(store.votes())
    store.close()
    assert n > 0 and str(db) in capsys.readouterr().out
    assert sim.main(["--db", str(db), "--systems", f"{A},{B}", "--strength", "x=oops"]) == 2
    assert "--strength" in capsys.readouterr().err
    assert sim.main(["--db", str(db), "--tasks", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
