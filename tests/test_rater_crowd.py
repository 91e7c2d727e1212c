"""The crowd-study flow through streamlit's AppTest: Prolific's URL parameters recorded, screens
assigned to r raters, the completion code at the end of a quota (the same for raters who fail
controls), and signed links (rater.links): a missing or forged token stores no vote."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rater import controls, links
from rater.__main__ import main as rater_main
from rater.store import VoteStore, assignments_table, participants_table

from rater_fixtures import make_tasks

APP = str(Path(__file__).resolve().parents[1] / "rater" / "app.py")
SECRET = "s3cret-s3cret-s3cret-s3cret"
DONE_URL = "https://app.prolific.com/submissions/complete?cc=C0DE1234"


@pytest.fixture
def tasks(tmp_path):
    return make_tasks(tmp_path, n_prompts=3, k=1)


def app(monkeypatch, tasks, db, params: dict, *extra):
    monkeypatch.setattr(sys, "argv", ["app.py", "--tasks", str(tasks), "--db", str(db),
                                      "--min-answer-s", "0", *extra])
    at = AppTest.from_file(APP, default_timeout=30)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def vote_all(at, choice: int = 0, limit: int = 50):
    for _ in range(limit):
        if not at.button:
            return at
        at.button[choice].click().run()
        assert not at.exception
    raise AssertionError("never finished")


def end_page(at) -> list[str]:
    """Everything the end page shows, as text."""
    out = [e.value for e in at.success] + [e.value for e in at.info] + [
        e.value for e in at.markdown]
    out += [f"link:{b.proto.label}->{b.proto.url}" for b in at.get("link_button")]
    return out


def test_prolific_ids_are_recorded_and_the_quota_ends_with_the_code(monkeypatch, tmp_path, tasks):
    db = tmp_path / "r.db"
    params = {"PROLIFIC_PID": "5f0c0ffee0c0ffee0c0ffee0", "STUDY_ID": "study1",
              "SESSION_ID": "sess9"}
    at = app(monkeypatch, tasks, db, params, "--tasks-per-rater", "2", "--control-rate", "0",
             "--completion-url", DONE_URL)
    assert "0 of 4 answered" in at.get("progress")[0].proto.text
    vote_all(at)
    page = end_page(at)
    assert "All done - thank you!" in page and any("C0DE1234" in m for m in page)
    assert f"link:Finish the study and return to the platform->{DONE_URL}" in page
    store = VoteStore(str(db))
    votes = store.votes()
    assert len(votes) == 4 and set(votes["rater_id"]) == {params["PROLIFIC_PID"]}
    people = store.table(participants_table)
    assert people[["rater_id", "platform", "study_id", "session_id", "signed"]].values.tolist() == [
        [params["PROLIFIC_PID"], "prolific", "study1", "sess9", False]]
    claims = store.table(assignments_table)
    assert len(claims) == 2 and claims["time_done"].notna().all()


def test_each_screen_goes_to_r_raters_then_the_study_is_full(monkeypatch, tmp_path, tasks):
    db = tmp_path / "r.db"
    for rater in ("ann", "bob"):                            # r = 1: three screens, 2 + 1
        vote_all(app(monkeypatch, tasks, db, {"rater": rater}, "--ratings-per-task", "1",
                     "--tasks-per-rater", "2", "--control-rate", "0"))
    late = app(monkeypatch, tasks, db, {"rater": "cat"}, "--ratings-per-task", "1",
               "--control-rate", "0", "--completion-url", DONE_URL)
    assert not late.button and "nothing left to rate" in late.info[0].value
    assert not late.get("link_button")                      # no code for no work
    votes = VoteStore(str(db)).votes()
    per_prompt = votes.groupby("prompt_id")["rater_id"].agg(["nunique", "first"])
    assert len(per_prompt) == 3 and (per_prompt["nunique"] == 1).all()
    assert sorted(votes.groupby("rater_id")["prompt_id"].nunique()) == [1, 2]


def test_failing_controls_changes_nothing_the_rater_sees(monkeypatch, tmp_path, tasks):
    db = tmp_path / "r.db"
    flags = ("--tasks-per-rater", "2", "--control-rate", "0.5", "--completion-url", DONE_URL)
    pages = {}
    for rater, choice in (("good", 0), ("bad", 1)):        # "bad" answers every control wrong
        at = app(monkeypatch, tasks, db, {"rater": rater}, *flags)
        for _ in range(20):
            if not at.button:
                break
            ctrl = at.subheader[-1].value in controls.TEXT.values()
            at.button[choice if ctrl else 0].click().run()
        pages[rater] = end_page(at)
    votes = VoteStore(str(db)).votes()
    ctrl = votes[votes["is_control"]]
    acc = (ctrl["choice"] == ctrl["control_expected"]).groupby(ctrl["rater_id"]).mean()
    assert set(ctrl["rater_id"]) == {"good", "bad"} and acc["bad"] == 0       # flagged (< 80%)
    assert pages["good"] == pages["bad"] and any("C0DE1234" in m for m in pages["bad"])


@pytest.mark.parametrize("sig", [None, "0" * 32, "forged", links.sign(b"another-secret-xxxxx", "eve")])
def test_missing_or_forged_tokens_see_a_refusal_and_cast_no_vote(monkeypatch, tmp_path, tasks,
                                                                 sig):
    monkeypatch.setenv("RATER_LINK_SECRET", SECRET)
    db = tmp_path / "r.db"
    params = {"rater": "eve"} | ({"sig": sig} if sig else {})
    at = app(monkeypatch, tasks, db, params, "--require-signed-links")
    assert at.error and "not valid for this study" in at.error[0].value
    assert not at.button and not at.get("image") and not at.text_input
    assert VoteStore(str(db)).count() == 0
    nobody = app(monkeypatch, tasks, db, {}, "--require-signed-links")   # no id: no id form
    assert not nobody.text_input and "not valid" in nobody.error[0].value


def test_a_signed_link_votes_and_its_token_fits_no_other_id(monkeypatch, tmp_path, tasks):
    monkeypatch.setenv("RATER_LINK_SECRET", SECRET)
    db = tmp_path / "r.db"
    url = links.link("http://host:8501/?lang=en", SECRET.encode(), "eve")
    query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
    assert query["lang"] == "en" and links.verify(SECRET.encode(), "eve", query["sig"])
    stolen = app(monkeypatch, tasks, db, {"rater": "mallory", "sig": query["sig"]},
                 "--require-signed-links")
    assert not stolen.button
    at = app(monkeypatch, tasks, db, {"rater": "eve", "sig": query["sig"]},
             "--require-signed-links", "--control-rate", "0")
    vote_all(at)
    store = VoteStore(str(db))
    assert set(store.votes()["rater_id"]) == {"eve"} and store.count() == 6
    assert store.table(participants_table)["signed"].tolist() == [True]


def test_without_the_secret_signed_links_refuse_to_start(monkeypatch, tmp_path, tasks, capsys):
    monkeypatch.delenv("RATER_LINK_SECRET", raising=False)
    assert rater_main(["serve", "--tasks", str(tasks), "--db", str(tmp_path / "r.db"),
                       "--require-signed-links"]) == 2
    assert "RATER_LINK_SECRET is not set" in capsys.readouterr().err
    at = app(monkeypatch, tasks, tmp_path / "r.db", {"rater": "eve", "sig": "x"},
             "--require-signed-links")
    assert "misconfigured" in at.error[0].value and not at.button


def test_links_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MY_SECRET", SECRET)
    assert rater_main(["links", "--secret-env", "MY_SECRET", "--n", "3",
                       "--base-url", "https://rate.example.org/s?x=1"]) == 0
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3 and printed[0].startswith("https://rate.example.org/s?x=1&rater=rater-001&sig=")
    for line in printed:
        q = dict(p.split("=") for p in line.split("?", 1)[1].split("&"))
        assert links.verify(SECRET.encode(), q["rater"], q["sig"])
        assert not links.verify(b"other-secret-other", q["rater"], q["sig"])
    ids = tmp_path / "ids.txt"
    ids.write_text("ann\nbob\n")
    out = tmp_path / "links.csv"
    assert rater_main(["links", "--secret-env", "MY_SECRET", "--ids", str(ids), "--base-url",
                       "http://h:8501/", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "rater_id,url" and "bob" in out.read_text()
    capsys.readouterr()
    monkeypatch.setenv("MY_SECRET", "short")
    assert rater_main(["links", "--secret-env", "MY_SECRET", "--n", "2",
                       "--base-url", "http://h/"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    ids.write_text("ok\nnot valid!\n")
    monkeypatch.setenv("MY_SECRET", SECRET)
    assert rater_main(["links", "--secret-env", "MY_SECRET", "--ids", str(ids),
                       "--base-url", "http://h/"]) == 2
    assert "not valid!" in capsys.readouterr().err
    assert rater_main(["links", "--n", "2", "--base-url", "ftp://h/"]) == 2
