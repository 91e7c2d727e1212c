"""Append-only vote store of the rating app (SQLAlchemy 2.x).

A plain file path opens a SQLite file in WAL mode with a busy timeout, so many raters (threads
or processes) can vote at once; any SQLAlchemy URL (``postgresql://...``) serves a team. Every
vote is one committed INSERT; a rater who changes an answer adds a new row, and the newest row
per (rater, task, question) counts while the earlier ones stay as history. Times are stored as
UTC.
"""
from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, ProgrammingError, IntegrityError

APP_VERSION = "rater/1"
CHOICES = ("left", "indifferent", "right")  # "I prefer set A" | "I am indifferent" | "I prefer set B"

COLUMNS = ("id", "task_id", "rater_id", "question_id", "choice", "left_system", "right_system",
           "left_label", "right_label", "shown_order", "category", "prompt_id", "is_control",
           "control_expected", "time_shown", "time_answered", "app_version")

metadata = sa.MetaData()
votes_table = sa.Table(
    "votes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("rater_id", sa.String(128), nullable=False),
    sa.Column("question_id", sa.String(64), nullable=False),
    sa.Column("choice", sa.String(16), nullable=False),
    sa.Column("left_system", sa.String(512), nullable=False),
    sa.Column("right_system", sa.String(512), nullable=False),
    sa.Column("left_label", sa.String(32), nullable=False),
    sa.Column("right_label", sa.String(32), nullable=False),
    sa.Column("shown_order", sa.String(80), nullable=False),   # f"{left_label}|{right_label}"
    sa.Column("category", sa.String(128), nullable=False, default=""),
    sa.Column("prompt_id", sa.String(128), nullable=False, default=""),
    sa.Column("is_control", sa.Boolean, nullable=False, default=False),
    sa.Column("control_expected", sa.String(16), nullable=True),  # side holding the original
    sa.Column("time_shown", sa.DateTime, nullable=False),        # UTC
    sa.Column("time_answered", sa.DateTime, nullable=False),     # UTC
    sa.Column("app_version", sa.String(32), nullable=False),
    sa.Index("ix_votes_rater_task_question", "rater_id", "task_id", "question_id"),
)

_RETRIES = 50           # tries of one write when SQLite still reports a lock after busy_timeout
_BUSY_TIMEOUT_MS = 30_000


def _is_lock_error(e: Exception) -> bool:
    text = str(e).lower()
    return "database is locked" in text or "database is busy" in text or "busy" in text


def _utc_naive(t: dt.datetime) -> dt.datetime:
    """An aware time converted to naive UTC; a naive time is taken to be UTC already."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def make_engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine for a file path (SQLite, WAL, busy timeout) or any database URL."""
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # busy timeout first: switching to WAL may wait
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if ":memory:" not in url:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # a committed vote survives a power cut too
        cur.close()

    return engine


class VoteStore:
    """Votes of the rating app; safe for concurrent writers (threads and processes)."""

    def __init__(self, url: str):
        self.url = str(url)
        self.engine = make_engine(self.url)
        # Threads of one process (the sessions of one Streamlit server) queue here, in order,
        # instead of in SQLite's busy handler, whose sleeps of up to 100 ms make a long tail.
        self._write_lock = threading.Lock()
        self._retry(lambda: metadata.create_all(self.engine, checkfirst=True), create=True)

    # ------------------------------------------------------------------ writing

    def _retry(self, fn, create: bool = False):
        """Run fn, retrying on SQLite lock errors (and a concurrent CREATE TABLE when creating)."""
        for attempt in range(_RETRIES):
            try:
                return fn()
            except (OperationalError, ProgrammingError, IntegrityError) as e:
                raced = create and "already exists" in str(e).lower()
                if attempt == _RETRIES - 1 or not (_is_lock_error(e) or raced):
                    raise
                time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * (0.5 + random.random()))

    def record_vote(self, *, task_id: str, rater_id: str, question_id: str, choice: str,
                    left_system: str, right_system: str, left_label: str, right_label: str,
                    time_shown: dt.datetime, time_answered: dt.datetime,
                    category: str = "", prompt_id: str = "", is_control: bool = False,
                    control_expected: str | None = None, app_version: str = APP_VERSION) -> int:
        """Append one vote in its own committed transaction.

        Returns:
            The new row's id.
        """
        if choice not in CHOICES:
            raise ValueError(f"choice {choice!r} is not one of {CHOICES}")
        if control_expected not in (None, "left", "right"):
            raise ValueError(f"control_expected {control_expected!r} is not left, right or None")
        if not rater_id or not task_id or not question_id:
            raise ValueError("task_id, rater_id and question_id must be non-empty")
        row = dict(task_id=task_id, rater_id=rater_id, question_id=question_id, choice=choice,
                   left_system=left_system, right_system=right_system, left_label=left_label,
                   right_label=right_label, shown_order=f"{left_label}|{right_label}",
                   category=category or "", prompt_id=prompt_id or "",
                   is_control=bool(is_control), control_expected=control_expected,
                   time_shown=_utc_naive(time_shown), time_answered=_utc_naive(time_answered),
                   app_version=app_version)

        def insert() -> int:
            with self._write_lock, self.engine.begin() as conn:
                return int(conn.execute(sa.insert(votes_table).values(**row)).inserted_primary_key[0])

        return self._retry(insert)

    # ------------------------------------------------------------------ reading

    def votes(self, latest_only: bool = True):
        """All votes as a pandas DataFrame (columns COLUMNS, times as UTC timestamps).

        Args:
            latest_only: keep only the newest vote (highest id) per (rater_id, task_id,
                question_id); False returns the whole history.
        """
        import pandas as pd

        t = votes_table
        query = sa.select(*[t.c[c] for c in COLUMNS]).order_by(t.c.id)
        if latest_only:
            newest = (sa.select(sa.func.max(t.c.id))
                      .group_by(t.c.rater_id, t.c.task_id, t.c.question_id))
            query = query.where(t.c.id.in_(newest))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        df = pd.DataFrame([tuple(r) for r in rows], columns=list(COLUMNS))
        df["id"] = df["id"].astype("int64")
        df["is_control"] = df["is_control"].astype(bool)
        for c in ("time_shown", "time_answered"):
            df[c] = pd.to_datetime(df[c], utc=True)
        return df

    def done_keys(self, rater_id: str) -> set[tuple[str, str]]:
        """(task_id, question_id) pairs this rater has answered."""
        t = votes_table
        query = sa.select(t.c.task_id, t.c.question_id).where(t.c.rater_id == rater_id).distinct()
        with self.engine.connect() as conn:
            return {(r[0], r[1]) for r in conn.execute(query)}

    def count(self) -> int:
        """Number of vote rows, history included."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(votes_table)).scalar())

    def rater_ids(self) -> list[str]:
        """Every rater who has voted, sorted."""
        t = votes_table
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(t.c.rater_id).distinct()))

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()
