"""rater.assign: r distinct raters per screen, even filling, quotas, hand-over of abandoned
claims, and exactly r raters per task under 20 concurrent raters, on SQLite and PostgreSQL."""
from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import random
import time

import pytest

from rater import assign
from rater.store import NotAssignedError, VoteStore, assignments_table

from rater_fixtures import store_url  # noqa: F401  (a fixture: SQLite and PostgreSQL)

T0 = dt.datetime(2025, 1, 2, 3, 4, 5)
QUESTIONS = ("fidelity", "alignment")


def rate(store, rater, screen, now=None):
    """Answer every question of a claimed screen as the app does; the last vote completes it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    for i, q in enumerate(QUESTIONS):
        store.record_vote(task_id=f"task-{screen}", rater_id=rater, question_id=q,
                          choice="left", left_system="m:a", right_system="m:b", left_label="A",
                          right_label="B", time_shown=now, time_answered=now, prompt_id=screen,
                          screen_id=screen, completes=i == len(QUESTIONS) - 1)


def test_screens_fill_evenly_with_r_distinct_raters(tmp_path):
    store = VoteStore(str(tmp_path / "r.db"))
    screens = [f"s{i:02d}" for i in range(10)]
    claims = {s: [] for s in screens}
    for n in range(40):                                   # raters arrive one after another
        rater = f"r{n:02d}"
        claim = assign.next_screen(store, rater, assign.rater_order(screens, rater), 3)
        if n >= 30:
            assert claim.status == assign.FULL            # 10 screens x 3 raters are taken
            continue
        assert claim.status == assign.ASSIGNED and rater not in claims[claim.screen_id]
        claims[claim.screen_id].append(rater)
        filled = [len(v) for v in claims.values()]
        assert max(filled) - min(filled) <= 1             # the study fills evenly
        rate(store, rater, claim.screen_id)
    assert all(len(v) == 3 for v in claims.values())
    table = store.table(assignments_table)
    assert len(table) == 30 and table["time_done"].notna().all()


def test_a_rater_keeps_their_screen_gets_distinct_ones_and_stops_at_the_quota(tmp_path):
    store = VoteStore(str(tmp_path / "r.db"))
    screens = [f"s{i}" for i in range(5)]
    first = assign.next_screen(store, "ann", screens, 3, tasks_per_rater=2)
    again = assign.next_screen(store, "ann", screens, 3, tasks_per_rater=2)
    assert first.status == again.status == assign.ASSIGNED and first.screen_id == again.screen_id
    rate(store, "ann", first.screen_id)
    second = assign.next_screen(store, "ann", screens, 3, tasks_per_rater=2)
    assert second.screen_id != first.screen_id and second.n_done == 1
    rate(store, "ann", second.screen_id)
    assert assign.next_screen(store, "ann", screens, 3, tasks_per_rater=2) == assign.Claim(
        assign.QUOTA, None, 2)
    with pytest.raises(NotAssignedError):                 # a finished screen takes no votes
        rate(store, "ann", first.screen_id)
    with pytest.raises(NotAssignedError):                 # nor one never claimed
        rate(store, "ann", "s4" if "s4" not in (first.screen_id, second.screen_id) else "s3")
    assert store.count() == 4
    with pytest.raises(ValueError):
        assign.next_screen(store, "ann", screens, 0)


def test_an_abandoned_claim_is_handed_on_and_its_late_vote_refused(store_url):
    store = VoteStore(store_url)
    screens = ["only"]
    assert assign.next_screen(store, "gone", screens, 1, now=T0).screen_id == "only"
    assert assign.next_screen(store, "next", screens, 1, lease_s=60,
                              now=T0 + dt.timedelta(seconds=30)).status == assign.FULL
    late = T0 + dt.timedelta(seconds=61)
    assert assign.next_screen(store, "next", screens, 1, lease_s=60, now=late).screen_id == "only"
    with pytest.raises(NotAssignedError):
        rate(store, "gone", "only")
    rate(store, "next", "only")
    votes = store.votes()
    assert set(votes["rater_id"]) == {"next"} and len(votes) == 2
    # a claim kept alive by votes is not handed on
    assert assign.next_screen(store, "a", ["two"], 1, lease_s=60, now=T0).screen_id == "two"
    store.record_vote(task_id="task-two", rater_id="a", question_id="fidelity", choice="left",
                      left_system="m:a", right_system="m:b", left_label="A", right_label="B",
                      time_shown=T0, time_answered=T0, screen_id="two")   # renews the lease now
    assert assign.next_screen(store, "b", ["two"], 1, lease_s=60,
                              now=T0 + dt.timedelta(seconds=61)).status == assign.FULL


def _crowd_rater(url: str, rater: str, screens: list[str], quota: int, barrier) -> None:
    store = VoteStore(url)
    rng = random.Random(rater)
    barrier.wait()
    order = assign.rater_order(screens, rater)
    while True:
        claim = assign.next_screen(store, rater, order, 3, tasks_per_rater=quota)
        if claim.status != assign.ASSIGNED:
            break
        time.sleep(rng.random() * 0.01)
        rate(store, rater, claim.screen_id)
    store.close()


def test_twenty_concurrent_raters_leave_exactly_three_per_task(store_url):
    screens = [f"s{i:02d}" for i in range(24)]            # 72 ratings; 20 raters x 5 = 100
    VoteStore(store_url).close()
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(20)
    procs = [ctx.Process(target=_crowd_rater, args=(store_url, f"r{i:02d}", screens, 5, barrier))
             for i in range(20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0] * 20
    store = VoteStore(store_url)
    votes = store.votes(latest_only=False)
    per_task = votes.groupby(["task_id", "question_id"])["rater_id"].agg(["size", "nunique"])
    assert len(per_task) == 24 * 2
    assert (per_task["size"] == 3).all() and (per_task["nunique"] == 3).all()
    table = store.table(assignments_table)
    assert len(table) == 72 and table["time_done"].notna().all()
    assert table.groupby("rater_id").size().max() <= 5
    assert sorted(table.groupby("screen_id")["rater_id"].nunique().unique()) == [3]
