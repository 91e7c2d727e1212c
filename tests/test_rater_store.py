"""rater.store: append-only votes, latest vote per key, concurrent writers, crash safety, the
schema version; on SQLite and on a PostgreSQL server the tests start (tests/conftest.py)."""
from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import sqlalchemy as sa

from rater.store import (APP_VERSION, CHOICES, COLUMNS, SCHEMA_VERSION, SchemaVersionError,
                         VoteStore, meta_table, upgrade)

from rater_fixtures import store_url  # noqa: F401  (a fixture: SQLite and PostgreSQL)

T0 = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def vote(store, **kw):
    args = dict(task_id="t-1", rater_id="r1", question_id="fidelity", choice="left",
                left_system="m:a", right_system="m:b", left_label="A", right_label="B",
                time_shown=T0, time_answered=T0 + dt.timedelta(seconds=3))
    args.update(kw)
    return store.record_vote(**args)


def test_latest_vote_counts_and_history_stays(store_url):
    store = VoteStore(store_url)
    first = vote(store, choice="left")
    second = vote(store, choice="right", left_system="m:b", right_system="m:a",
                  left_label="B", right_label="A")
    other = vote(store, question_id="alignment", choice="indifferent")
    assert first < second < other
    latest = store.votes()
    assert list(latest.columns) == list(COLUMNS)
    assert sorted(latest["id"]) == [second, other]
    row = latest.set_index("id").loc[second]
    assert (row.choice, row.left_system, row.shown_order) == ("right", "m:b", "B|A")
    assert row.app_version == APP_VERSION and not row.is_control
    assert len(store.votes(latest_only=False)) == 3
    assert store.done_keys("r1") == {("t-1", "fidelity"), ("t-1", "alignment")}
    assert store.done_keys("nobody") == set()


def test_times_are_utc_and_fields_round_trip(store_url):
    store = VoteStore(store_url)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    vote(store, time_shown=T0.astimezone(plus2), is_control=True, control_expected="right",
         category="Colors", prompt_id="p7", left_label="original", right_label="corrupted")
    row = store.votes().iloc[0]
    assert row.time_shown.to_pydatetime() == T0
    assert (row.time_answered - row.time_shown).total_seconds() == pytest.approx(3.0)
    assert row.is_control and row.control_expected == "right"
    assert (row.category, row.prompt_id, row.shown_order) == ("Colors", "p7", "original|corrupted")


def test_bad_choice_is_refused(store_url):
    store = VoteStore(store_url)
    with pytest.raises(ValueError, match="choice"):
        vote(store, choice="A")
    with pytest.raises(ValueError, match="control_expected"):
        vote(store, control_expected="up")
    assert CHOICES == ("left", "indifferent", "right")
    assert store.count() == 0 and store.votes().empty


def test_file_store_is_sqlite_in_wal_mode(tmp_path):
    path = tmp_path / "sub" / "r.db"
    VoteStore(str(path))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    VoteStore(f"sqlite:///{tmp_path / 'url.db'}")  # a SQLAlchemy URL works too
    assert (tmp_path / "url.db").is_file()


def _writer(path: str, proc: int, n: int, barrier) -> None:
    store = VoteStore(path)
    barrier.wait()
    for i in range(n):
        vote(store, task_id=f"t-{i}", rater_id=f"rater{proc}", choice=CHOICES[i % 3])


def test_eight_processes_100_votes_each_store_exactly_800(store_url):
    path = store_url
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_writer, args=(path, p, 100, barrier)) for p in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 8
    store = VoteStore(path)
    history = store.votes(latest_only=False)
    assert len(history) == 800 and history["id"].is_unique
    assert sorted(set(zip(history.rater_id, history.task_id))) == sorted(
        (f"rater{p}", f"t-{i}") for p in range(8) for i in range(100))
    assert len(store.votes()) == 800


def test_vote_survives_a_killed_process(store_url):
    """A vote is committed when record_vote returns: SIGKILL right after loses nothing."""
    path = store_url
    code = textwrap.dedent(f"""
        import datetime as dt, os, signal
        from rater.store import VoteStore
        s = VoteStore({path!r})
        now = dt.datetime.now(dt.timezone.utc)
        for i in range(5):
            s.record_vote(task_id=f"t-{{i}}", rater_id="r", question_id="q", choice="left",
                          left_system="a", right_system="b", left_label="A", right_label="B",
                          time_shown=now, time_answered=now)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert VoteStore(path).count() == 5


def test_vote_latency_benchmark_writes_its_numbers(tmp_path, capsys):
    from bench import perf_votes

    out = tmp_path / "votes.json"
    assert perf_votes.main(["--raters", "3", "--votes", "4", "--mode", "threads",
                            "--out", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["votes"] == 12 and 0 < row["median_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert "p99" in capsys.readouterr().out
    assert perf_votes.main(["--raters", "0"]) == 2
    assert perf_votes.main(["--think-ms", "5", "--think-max-ms", "1"]) == 2


def test_vote_latency_benchmark_on_postgresql(pg_url, tmp_path):
    """Both modes on a PostgreSQL database; every vote goes through an assigned screen."""
    from bench import perf_votes

    out = tmp_path / "votes.json"
    assert perf_votes.main(["--raters", "4", "--votes", "6", "--mode", "both", "--backend",
                            "postgresql", "--pg-url", pg_url, "--think-ms", "1",
                            "--think-max-ms", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["mode"], r["votes"]) for r in rows] == [
        ("postgresql", "threads", 24), ("postgresql", "processes", 24)]
    store = VoteStore(pg_url)
    votes = store.votes()
    assert len(votes) == 48
    per_task = votes.groupby(["task_id", "question_id"])["rater_id"].nunique()
    assert per_task.max() <= 3                            # r = 3 raters per screen at most


def _set_version(url: str, value: str) -> None:
    store = VoteStore(url)
    with store.write() as conn:
        conn.execute(sa.update(meta_table).where(meta_table.c.key == "schema_version")
                     .values(value=value))
    store.close()


def test_schema_version_is_recorded_and_another_is_refused(store_url):
    store = VoteStore(store_url)
    assert store.schema_version() == SCHEMA_VERSION
    vote(store)
    store.close()
    VoteStore(store_url).close()                      # the same version opens again
    _set_version(store_url, str(SCHEMA_VERSION + 1))
    with pytest.raises(SchemaVersionError, match=f"version {SCHEMA_VERSION + 1}, newer"):
        VoteStore(store_url)


def test_a_version_1_database_is_refused_until_upgraded(tmp_path, capsys):
    """The first rater's database: a votes table and no rater_meta."""
    from rater import analyze
    from rater.__main__ import main

    path = tmp_path / "old.db"
    VoteStore(str(path)).close()
    con = sqlite3.connect(path)
    con.executescript("DROP TABLE rater_meta; DROP TABLE assignments; DROP TABLE participants;")
    con.execute("INSERT INTO votes (task_id, rater_id, question_id, choice, left_system, "
                "right_system, left_label, right_label, shown_order, category, prompt_id, "
                "is_control, time_shown, time_answered, app_version) VALUES ('t', 'r', 'q', "
                "'left', 'a', 'b', 'A', 'B', 'A|B', '', '', 0, '2025-01-01 00:00:00', "
                "'2025-01-01 00:00:03', 'rater/1')")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError, match="version 1 .* upgrade-db"):
        VoteStore(str(path))
    assert analyze.main(["--db", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --db") and "upgrade-db" in err and err.count("\n") == 1
    assert main(["upgrade-db", "--db", str(path)]) == 0
    assert "version 1 -> 2" in capsys.readouterr().out
    store = VoteStore(str(path))
    assert store.count() == 1 and store.schema_version() == SCHEMA_VERSION
    assert upgrade(str(path)) == (SCHEMA_VERSION, SCHEMA_VERSION)   # nothing left to do


def test_postgresql_url_without_driver_uses_psycopg3(pg_url):
    """`postgresql://` is psycopg2 to SQLAlchemy, which is not a dependency: psycopg 3 is."""
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    store = VoteStore(plain)
    assert store.engine.dialect.driver == "psycopg"
    vote(store)
    assert store.count() == 1
    store.close()
