"""Assignment of screens to raters: each screen to r distinct raters, the study filling evenly.

A rater asks for work with `next_screen`: they get back the screen they hold (claimed, not yet
finished), else a new claim on the screen with the fewest live claims among those they have not
had (ties in the rater's own seeded order, so concurrent raters rarely want the same one), until
their quota is reached or no screen needs them. A claim is a row of the store's assignments
table in slot 0..r-1 of its screen; a slot whose rater has not voted for `lease_s` seconds is
handed to the next rater who asks, so no screen waits on someone who left.

Claims are serialized (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-level advisory lock),
and the table's keys (screen, slot) and (screen, rater) make a double claim impossible even so.
A vote on a claimed screen is stored only while the rater still holds it (VoteStore.record_vote
with screen_id), and the vote renews the claim under a row lock, so a hand-over and a vote never
both succeed: every screen ends with exactly r distinct raters.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from .store import PG_ASSIGN_LOCK, VoteStore, assignments_table, utcnow

ASSIGNED, QUOTA, FULL = "assigned", "quota", "full"
DEFAULT_LEASE_S = 30 * 60


@dataclass(frozen=True)
class Claim:
    """What `next_screen` decided: status ASSIGNED with the screen id, QUOTA or FULL."""

    status: str
    screen_id: str | None = None
    n_done: int = 0          # screens this rater has finished


def rater_order(screen_ids: list[str], rater_id: str, seed: int = 0) -> list[str]:
    """The screens in a seeded order of this rater's own (ties between equally filled screens)."""
    def key(s: str) -> bytes:
        return hashlib.sha256(f"order|{seed}|{rater_id}|{s}".encode()).digest()

    return sorted(screen_ids, key=key)


def next_screen(store: VoteStore, rater_id: str, order: list[str], ratings_per_task: int,
                tasks_per_rater: int | None = None, lease_s: float = DEFAULT_LEASE_S,
                now: dt.datetime | None = None) -> Claim:
    """The screen this rater should rate now, claiming a new one if needed.

    Args:
        order: the study's screen ids, in this rater's order of preference among equally
            filled screens (rater_order, or the rater's schedule).
        ratings_per_task: r, the distinct raters each screen goes to.
        tasks_per_rater: the rater's quota of screens (None: no limit).
        lease_s: a claim without a vote for this long is handed to the next rater who asks.
        now: the time (naive UTC; tests move it); default now.
    """
    if ratings_per_task < 1:
        raise ValueError(f"ratings per task {ratings_per_task} must be >= 1")
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=lease_s)
    wanted = set(order)
    a = assignments_table

    def claim() -> Claim:
        with store.write() as conn:
            if store.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_ASSIGN_LOCK})
            rows = conn.execute(sa.select(a.c.screen_id, a.c.slot, a.c.rater_id, a.c.time_active,
                                          a.c.time_done)).all()
            mine = [r for r in rows if r.rater_id == rater_id and r.screen_id in wanted]
            n_done = sum(r.time_done is not None for r in mine)
            held = [r for r in mine if r.time_done is None]
            if held:
                r = min(held, key=lambda r: (r.time_active, r.screen_id))
                conn.execute(sa.update(a).where(a.c.screen_id == r.screen_id, a.c.slot == r.slot)
                             .values(time_active=now))
                return Claim(ASSIGNED, r.screen_id, n_done)
            if tasks_per_rater is not None and len(mine) >= tasks_per_rater:
                return Claim(QUOTA, None, n_done)
            had = {r.screen_id for r in mine}
            slots: dict[str, dict[int, bool]] = {}     # screen -> {slot: live}
            for r in rows:
                if r.screen_id in wanted:
                    live = r.time_done is not None or r.time_active >= cutoff
                    slots.setdefault(r.screen_id, {})[r.slot] = live
            rank = {s: i for i, s in enumerate(order)}
            candidates = sorted(
                (s for s in wanted - had
                 if sum(slots.get(s, {}).values()) < ratings_per_task),
                key=lambda s: (sum(slots.get(s, {}).values()), rank[s]))
            for s in candidates:
                taken = slots.get(s, {})
                free = [i for i in range(ratings_per_task) if i not in taken]
                if free:
                    conn.execute(sa.insert(a).values(screen_id=s, slot=free[0], rater_id=rater_id,
                                                     time_assigned=now, time_active=now))
                    return Claim(ASSIGNED, s, n_done)
                stale = [i for i, live in sorted(taken.items()) if not live]
                for i in stale:   # hand on a slot whose rater left; a vote meanwhile keeps it
                    moved = conn.execute(
                        sa.update(a).where(a.c.screen_id == s, a.c.slot == i,
                                           a.c.time_done.is_(None), a.c.time_active < cutoff)
                        .values(rater_id=rater_id, time_assigned=now, time_active=now))
                    if moved.rowcount == 1:
                        return Claim(ASSIGNED, s, n_done)
            return Claim(FULL, None, n_done)

    return store._retry(claim)


def holding(store: VoteStore, rater_id: str, order: list[str]) -> tuple[str | None, int, int]:
    """(the screen of `order` the rater holds, or None; screens done; claims in all), read only."""
    a = assignments_table
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(a.c.screen_id, a.c.time_active, a.c.time_done)
                            .where(a.c.rater_id == rater_id)).all()
    wanted = set(order)
    mine = [r for r in rows if r.screen_id in wanted]
    held = sorted((r.time_active, r.screen_id) for r in mine if r.time_done is None)
    return (held[0][1] if held else None, sum(r.time_done is not None for r in mine), len(mine))


def complete(store: VoteStore, rater_id: str, screen_id: str) -> bool:
    """Mark a held screen done (all its questions were answered before); True if it was held."""
    a = assignments_table

    def done() -> bool:
        with store.write() as conn:
            res = conn.execute(sa.update(a).where(a.c.screen_id == screen_id,
                                                  a.c.rater_id == rater_id,
                                                  a.c.time_done.is_(None))
                               .values(time_done=utcnow(), time_active=utcnow()))
            return res.rowcount == 1

    return store._retry(done)


def progress(store: VoteStore):
    """Per screen: raters claimed (live or not), done; a DataFrame (screen_id, claimed, done)."""
    table = store.table(assignments_table)
    if table.empty:
        import pandas as pd

        return pd.DataFrame(columns=["screen_id", "claimed", "done"])
    table["done"] = table["time_done"].notna()
    return (table.groupby("screen_id").agg(claimed=("slot", "size"), done=("done", "sum"))
            .reset_index())
