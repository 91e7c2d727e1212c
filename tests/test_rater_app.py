"""The rating app through streamlit's AppTest: flow, resume, blinding, controls, admin."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from streamlit.runtime.memory_media_file_storage import _calculate_file_id
from streamlit.testing.v1 import AppTest

from rater import controls, resolve_secrets
from rater.__main__ import (build_parser, main as rater_main, shown_db, streamlit_command,
                            streamlit_env)
from rater.app import left_index
from rater.store import VoteStore
from rater.tasks import TaskFileError, load_screens, read_tasks, system_name

from rater_fixtures import SECRETS, SYSTEM_A, SYSTEM_B, make_tasks, store_url  # noqa: F401

APP = str(Path(__file__).resolve().parents[1] / "rater" / "app.py")
LABELS = ("I prefer set A", "I am indifferent", "I prefer set B")


@pytest.fixture
def tasks(tmp_path):
    return make_tasks(tmp_path, n_prompts=3, k=2)


def make_app(monkeypatch, tasks, db, rater=None, *extra):
    monkeypatch.setattr(sys, "argv", ["app.py", "--tasks", str(tasks), "--db", str(db),
                                      "--min-answer-s", "0", *extra])
    at = AppTest.from_file(APP, default_timeout=30)
    if rater:
        at.query_params["rater"] = rater
    return at.run()


def media_systems(tasks: Path) -> dict[str, str]:
    """Streamlit media id of each image file -> the system it belongs to."""
    out = {}
    for t in read_tasks(tasks):
        for side in ("left", "right"):
            for rel in t[side]["images"]:
                data = (tasks.parent / rel).read_bytes()
                out[_calculate_file_id(data, "image/png")] = system_name(t["hidden"][side])
    return out


def shown(at) -> tuple[list[str], list[str]]:
    """Media ids of the images of set A (left) and set B (right)."""
    ids = [Path(im.proto.imgs[0].url).stem for im in at.get("image")]
    return ids[:len(ids) // 2], ids[len(ids) // 2:]


def protos(node):
    """Serialized protos of every element and block of the page."""
    if getattr(node, "proto", None) is not None:
        yield node.proto.SerializeToString()
    for child in getattr(node, "children", {}).values():
        yield from protos(child)


def assert_blind(at):
    page = b"".join(protos(at._tree)) + repr(at._tree).encode()
    for secret in SECRETS:
        assert secret.encode() not in page


def vote_through(at, db, choices, limit=100):
    """Click buttons until done; returns [(task_id, question_id, choice, left ids, right ids)]."""
    seen = []
    for i in range(limit):
        if not at.button:
            return seen
        assert_blind(at)
        left, right = shown(at)
        n = choices[i % len(choices)]
        at.button[n].click().run()
        assert not at.exception
        last = VoteStore(str(db)).votes(latest_only=False).iloc[-1]   # the vote just cast
        seen.append((last.task_id, last.question_id, ("left", "indifferent", "right")[n],
                     left, right))
    raise AssertionError("never finished")


def test_flow_records_what_was_shown(monkeypatch, store_url, tasks):
    db = store_url                                   # SQLite and a PostgreSQL server
    at = make_app(monkeypatch, tasks, db, None, "--control-rate", "0.25")
    assert [b.label for b in at.button] == ["Start"] and not at.get("image")  # id first
    at.text_input[0].input("alice")
    at.button[0].click().run()
    assert at.query_params["rater"] == "alice"
    assert [b.label for b in at.button] == list(LABELS)
    assert [b.proto.shortcut.upper() for b in at.button] == ["A", "I", "B"]
    seen = vote_through(at, db, [0, 2, 1])
    assert at.success and "All done" in at.success[0].value
    votes = VoteStore(str(db)).votes().set_index(["task_id", "question_id"])
    assert len(seen) == len(votes) == 6 + 1               # 3 prompts x 2 questions + 1 control
    systems = media_systems(tasks)
    for task_id, qid, choice, left, right in seen:
        row = votes.loc[(task_id, qid)]
        assert row.choice == choice and row.rater_id == "alice"
        if row.is_control:
            original = all(i in systems for i in left)       # corrupted copies are new images
            assert row.control_expected == ("left" if original else "right")
            assert {row.left_system, row.right_system} == {controls.ORIGINAL, controls.CORRUPTED}
            assert not all(i in systems for i in right if original)
        else:
            assert {systems[i] for i in left} == {row.left_system}
            assert {systems[i] for i in right} == {row.right_system}
            assert {row.left_system, row.right_system} == {SYSTEM_A, SYSTEM_B}
            labels = {SYSTEM_A: "A", SYSTEM_B: "B"}
            assert row.shown_order == f"{labels[row.left_system]}|{labels[row.right_system]}"
    # one screen per prompt: both questions of a prompt are asked with the same images, one
    # after the other
    by_task = [s for s in seen if not s[0].startswith("c-")]
    assert by_task[0][3] == by_task[1][3] and by_task[0][1] != by_task[1][1]


def test_resume_and_never_the_same_task_twice(monkeypatch, tmp_path, tasks):
    db = tmp_path / "r.db"
    at = make_app(monkeypatch, tasks, db, "bob", "--control-rate", "0")
    first = []
    for _ in range(3):
        at.button[2].click().run()
        last = VoteStore(str(db)).votes(latest_only=False).iloc[-1]
        first.append((last.task_id, last.question_id))
    again = make_app(monkeypatch, tasks, db, "bob", "--control-rate", "0")   # a new session
    assert "3 of 6 answered" in again.get("progress")[0].proto.text
    rest = vote_through(again, db, [1])
    assert len(rest) == 3 and not {(t, q) for t, q, *_ in rest} & set(first)
    store = VoteStore(str(db))
    assert len(store.votes(latest_only=False)) == 6 and len(store.done_keys("bob")) == 6
    done = make_app(monkeypatch, tasks, db, "bob", "--control-rate", "0")
    assert not done.button and "All done" in done.success[0].value


def test_answers_faster_than_a_person_are_dropped(monkeypatch, tmp_path, tasks):
    db = tmp_path / "r.db"
    at = make_app(monkeypatch, tasks, db, "fred", "--min-answer-s", "60")   # last flag wins
    at.button[0].click().run()
    assert VoteStore(str(db)).count() == 0 and "0 of" in at.get("progress")[0].proto.text
    assert at.toast


def test_sides_are_a_seeded_coin_per_rater_and_screen(tasks):
    screens = load_screens(tasks)
    coins = {(r, s.screen_id): left_index(0, f"r{r}", s.screen_id) for r in range(40) for s in screens}
    assert set(coins.values()) == {0, 1}
    assert all(left_index(0, f"r{r}", sid) == c for (r, sid), c in coins.items())
    per_rater = [tuple(left_index(0, f"r{r}", s.screen_id) for s in screens) for r in range(40)]
    assert len(set(per_rater)) > 1


def test_admin_page_needs_the_token(monkeypatch, tmp_path, tasks):
    db = tmp_path / "r.db"
    store = VoteStore(str(db))
    for i, choice in enumerate(["left", "right", "right", "left", "right"]):   # 2 of 5 right
        store.record_vote(task_id=f"c-{i}", rater_id="carol", question_id="control",
                          choice=choice, left_system=controls.ORIGINAL,
                          right_system=controls.CORRUPTED, left_label="original",
                          right_label="corrupted", time_shown=controls_time(),
                          time_answered=controls_time(), is_control=True, control_expected="left")
    monkeypatch.setattr(sys, "argv", ["app.py", "--tasks", str(tasks), "--db", str(db)])
    off = AppTest.from_file(APP, default_timeout=30)
    off.query_params["admin"] = "1"
    off.run()
    assert "off" in off.error[0].value and not off.dataframe
    monkeypatch.setattr(sys, "argv", sys.argv + ["--admin-token", "t0ken"])
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["admin"] = "1"
    at.run()
    at.text_input[0].input("wrong").run()
    assert at.error[0].value == "Wrong token." and not at.dataframe
    at.text_input[0].input("t0ken").run()
    assert not at.exception
    assert "carol" in at.warning[0].value
    assert len(at.dataframe) == 2 and at.get("download_button")


def test_admin_token_and_database_from_the_environment(monkeypatch, tmp_path, tasks):
    """How `python -m rater serve` starts the app: no --db, no --admin-token on its command
    line; both come from RATER_DB / RATER_ADMIN_TOKEN."""
    db = tmp_path / "env.db"
    VoteStore(str(db)).record_vote(
        task_id="c-0", rater_id="dave", question_id="control", choice="left",
        left_system=controls.ORIGINAL, right_system=controls.CORRUPTED, left_label="original",
        right_label="corrupted", time_shown=controls_time(), time_answered=controls_time(),
        is_control=True, control_expected="left")
    monkeypatch.setattr(sys, "argv", ["app.py", "--tasks", str(tasks)])
    monkeypatch.setenv("RATER_DB", str(db))
    monkeypatch.setenv("RATER_ADMIN_TOKEN", "fr0m-env")
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["admin"] = "1"
    at.run()
    at.text_input[0].input("fr0m-env").run()
    assert not at.exception and not at.error
    assert len(at.dataframe) == 2 and "dave" in at.dataframe[0].value.to_string()


def controls_time():
    import datetime as dt
    return dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)


def test_bad_tasks_file_shows_no_path(monkeypatch, tmp_path):
    bad = tmp_path / "SECRETRUNPATH" / "tasks.jsonl"
    bad.parent.mkdir()
    bad.write_text("{not json\n")
    at = make_app(monkeypatch, bad, tmp_path / "r.db", "dave")
    assert at.error and "SECRETRUNPATH" not in at.error[0].value and not at.button


# ----------------------------------------------------------------------------- tasks, controls, CLI

def test_tasks_errors_name_file_and_line(tmp_path, tasks):
    lines = tasks.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
    with pytest.raises(TaskFileError, match=r"bad\.jsonl:2: not valid JSON"):
        read_tasks(bad)
    broken = json.loads(lines[0])
    del broken["hidden"]
    bad.write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    with pytest.raises(TaskFileError, match=r"bad\.jsonl:2: missing key\(s\) hidden"):
        read_tasks(bad)
    bad.write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(TaskFileError, match=r":2: .* repeats line 1"):
        read_tasks(bad)
    next((tasks.parent / "media").iterdir()).unlink()
    with pytest.raises(TaskFileError, match="not found under"):
        load_screens(tasks)


def test_questions_of_one_prompt_share_a_screen(tasks):
    screens = load_screens(tasks)
    assert len(screens) == 3
    assert all([q.question_id for q in s.questions] == ["fidelity", "alignment"] for s in screens)
    assert {(s.sides[0].system, s.sides[1].system) for s in screens} == {(SYSTEM_A, SYSTEM_B)}


def test_control_schedule(tasks):
    screens = load_screens(tasks) * 1
    plan = controls.build_schedule(screens, "erin", control_rate=0.5, seed=3)
    assert plan == controls.build_schedule(screens, "erin", control_rate=0.5, seed=3)
    ctrl = [s for s in plan if s.is_control]
    assert len(ctrl) == 3 and len(plan) == 6
    assert len({s.questions[0].task_id for s in ctrl}) == 3       # distinct control tasks
    assert {s.screen_id for s in plan if not s.is_control} == {s.screen_id for s in screens}
    orders = {tuple(s.screen_id for s in controls.build_schedule(screens, f"r{i}", 0.5))
              for i in range(10)}
    assert len(orders) > 1
    assert not any(s.is_control for s in controls.build_schedule(screens, "erin", 0.0))


def test_corrupted_copy_is_far_from_the_original():
    import io
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    bad = np.asarray(Image.open(io.BytesIO(controls.corrupt(buf.getvalue(), 1))))
    assert bad.shape == img.shape and np.abs(bad.astype(float) - img).mean() > 40
    assert controls.corrupt(buf.getvalue(), 1) == controls.corrupt(buf.getvalue(), 1)


def test_control_accuracy_flags_under_80_percent():
    import pandas as pd

    votes = pd.DataFrame({
        "rater_id": ["a"] * 5 + ["b"] * 5 + ["c"],
        "is_control": [True] * 5 + [True] * 4 + [False] + [False],
        "choice": ["left"] * 4 + ["right"] + ["left", "left", "indifferent", "right", "left"]
        + ["left"],
        "control_expected": ["left"] * 5 + ["left"] * 4 + [None] + [None]})
    acc = controls.control_accuracy(votes).set_index("rater_id")
    assert acc.loc["a", "accuracy"] == 0.8 and not acc.loc["a", "flagged"]
    assert acc.loc["b", "accuracy"] == 0.5 and acc.loc["b", "flagged"]
    assert "c" not in acc.index and controls.flagged_raters(votes) == {"b"}


def test_cli(monkeypatch, tmp_path, tasks, capsys):
    assert rater_main(["serve", "--tasks", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl: tasks file not found" in capsys.readouterr().err
    assert rater_main(["serve", "--tasks", str(tasks), "--control-rate", "1.5"]) == 2
    capsys.readouterr()
    assert rater_main(["serve", "--tasks", str(tasks), "--db", "nosuchdb://u:hunter2@h/x"]) == 2
    err = capsys.readouterr().err
    assert "error: --db nosuchdb://u:***@h/x" in err and "hunter2" not in err
    args = build_parser().parse_args(["serve", "--tasks", str(tasks), "--db", "x.db",
                                      "--port", "9999", "--admin-token", "tok"])
    resolve_secrets(args, {})
    cmd = streamlit_command(args)
    assert cmd[cmd.index("--server.port") + 1] == "9999" and cmd[3] == "run"
    assert cmd[cmd.index("--") + 1:] == ["--tasks", str(tasks.resolve()),
                                         "--control-rate", "0.1", "--seed", "0",
                                         "--min-answer-s", "0.3", "--ratings-per-task", "3",
                                         "--claim-timeout-min", "30.0",
                                         "--link-secret-env", "RATER_LINK_SECRET"]
    env = streamlit_env(args, {"PATH": "/bin", "RATER_ADMIN_TOKEN": "stale"})
    assert (env["RATER_ADMIN_TOKEN"], env["RATER_DB"], env["PATH"]) == ("tok", "x.db", "/bin")
    # no flags: the variables the user set are used, and nothing secret reaches the command line
    args = build_parser().parse_args(["serve", "--tasks", str(tasks)])
    resolve_secrets(args, {"RATER_ADMIN_TOKEN": "s3cret", "RATER_DB": "postgresql://u:pw@h/r"})
    assert (args.admin_token, args.db) == ("s3cret", "postgresql://u:pw@h/r")
    assert not any("s3cret" in c or "pw@" in c for c in streamlit_command(args))
    assert shown_db(args.db) == "postgresql://u:***@h/r" and shown_db("x.db") == "x.db"
    args = build_parser().parse_args(["serve", "--tasks", str(tasks)])
    resolve_secrets(args, {})
    assert (args.admin_token, args.db) == (None, "ratings.db")
    assert "RATER_ADMIN_TOKEN" not in streamlit_env(args, {"RATER_ADMIN_TOKEN": ""})
    fake = types.ModuleType("rater.analyze")
    fake.main = lambda argv: 7 if argv == ["--db", "r.db"] else 1
    monkeypatch.setitem(sys.modules, "rater.analyze", fake)
    import rater
    monkeypatch.setattr(rater, "analyze", fake, raising=False)
    assert rater_main(["analyze", "--db", "r.db"]) == 7
