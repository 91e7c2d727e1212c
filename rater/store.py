"""Vote store of the rating app (SQLAlchemy 2.x): votes, assignments, participants.

A plain file path opens a SQLite file in WAL mode with a busy timeout, so many raters (threads
or processes) can vote at once; a ``postgresql://`` URL (driver: psycopg 3) serves a team or a
crowd study. Every vote is one committed INSERT; a rater who changes an answer adds a new row,
and the newest row per (rater, task, question) counts while the earlier ones stay as history.
Times are stored as UTC.

The database records its schema version (table rater_meta); a database of another version is
refused with one message (SchemaVersionError) instead of being read wrongly. Version 1 had the
votes table only; version 2 added assignments and participants (`python -m rater upgrade-db`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

APP_VERSION = "rater/2"
SCHEMA_VERSION = 2
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
meta_table = sa.Table(
    "rater_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
# One row per (screen, slot): a screen goes to at most `ratings per task` raters (slots
# 0..r-1), never twice to one rater. A slot whose rater was idle past the lease is handed on.
assignments_table = sa.Table(
    "assignments", metadata,
    sa.Column("screen_id", sa.String(64), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("rater_id", sa.String(128), nullable=False),
    sa.Column("time_assigned", sa.DateTime, nullable=False),     # UTC
    sa.Column("time_active", sa.DateTime, nullable=False),       # UTC: claim or last vote
    sa.Column("time_done", sa.DateTime, nullable=True),          # UTC: every question answered
    sa.UniqueConstraint("screen_id", "rater_id", name="uq_assignments_screen_rater"),
    sa.Index("ix_assignments_rater", "rater_id"),
)
# Who came in how: the crowd platform's ids (Prolific: PROLIFIC_PID, STUDY_ID, SESSION_ID).
participants_table = sa.Table(
    "participants", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rater_id", sa.String(128), nullable=False),
    sa.Column("platform", sa.String(32), nullable=False),        # prolific | link | form
    sa.Column("study_id", sa.String(128), nullable=False, default=""),
    sa.Column("session_id", sa.String(128), nullable=False, default=""),
    sa.Column("signed", sa.Boolean, nullable=False, default=False),
    sa.Column("time_first", sa.DateTime, nullable=False),        # UTC
    sa.UniqueConstraint("rater_id", "platform", "study_id", "session_id",
                        name="uq_participants_session"),
)

_RETRIES = 50           # tries of one write when the database still reports a lock
_BUSY_TIMEOUT_MS = 30_000
_PG_INIT_LOCK = 0x72617465_72000001   # pg_advisory_xact_lock keys: schema creation,
PG_ASSIGN_LOCK = 0x72617465_72000002  # and claiming screens (rater.assign)


class SchemaVersionError(RuntimeError):
    """The database was written by another schema version of the rater; the message says what
    to do."""


class NotAssignedError(ValueError):
    """A vote on a screen the rater does not hold (never assigned, handed on, or finished)."""


def _is_lock_error(e: Exception) -> bool:
    text = str(e).lower()
    return ("database is locked" in text or "database is busy" in text or "busy" in text
            or "deadlock detected" in text or "could not serialize" in text)


def _utc_naive(t: dt.datetime) -> dt.datetime:
    """An aware time converted to naive UTC; a naive time is taken to be UTC already."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


def utcnow() -> dt.datetime:
    """Now, as the store keeps times (naive UTC)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def database_url(url: str) -> str:
    """The SQLAlchemy URL of a file path or URL; postgresql:// and postgres:// without a driver
    get psycopg 3 (SQLAlchemy's own default there is psycopg2, which is not installed)."""
    if "://" not in url:
        path = Path(url).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def make_engine(url: str) -> sa.Engine:
    """A SQLAlchemy engine for a file path (SQLite, WAL, busy timeout) or any database URL.

    SQLite transactions are begun by SQLAlchemy (the driver's own implicit BEGIN is off), so a
    write can begin with BEGIN IMMEDIATE (`VoteStore.write`): it takes the write lock first
    and waits for it in the busy handler, instead of failing when a read turns into a write.
    """
    url = database_url(url)
    if not url.startswith("sqlite"):
        # Streamlit serves every session from threads of one process: room for each.
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=90)
    engine = sa.create_engine(url, connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # busy timeout first: switching to WAL may wait
        dbapi_conn.isolation_level = None      # no implicit BEGIN: see _sqlite_begin
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if ":memory:" not in url:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # a committed vote survives a power cut too
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _sqlite_begin(conn):
        immediate = conn.get_execution_options().get("rater_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class VoteStore:
    """Votes of the rating app; safe for concurrent writers (threads and processes)."""

    def __init__(self, url: str, create: bool = True):
        """Open (and, on an empty database, create) a store.

        Raises:
            SchemaVersionError: the database has another schema version.
        """
        self.url = str(url)
        self.engine = make_engine(self.url)
        self.dialect = self.engine.dialect.name
        # Threads of one process (the sessions of one Streamlit server) queue here, in order,
        # instead of in SQLite's busy handler, whose sleeps of up to 100 ms make a long tail.
        # PostgreSQL locks rows, not the database: its writers need no queue.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()
        try:
            self._retry(lambda: self._init_schema(create))
        except Exception:
            self.engine.dispose()
            raise

    # ------------------------------------------------------------------ schema

    def _init_schema(self, create: bool) -> None:
        with self.write() as conn:
            if self.dialect == "postgresql":  # one creator at a time; DDL is transactional
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_INIT_LOCK})
            version = schema_version(conn)
            if version is None and create:
                metadata.create_all(conn, checkfirst=True)
                conn.execute(sa.insert(meta_table).values(key="schema_version",
                                                          value=str(SCHEMA_VERSION)))
                conn.execute(sa.insert(meta_table).values(key="created_by", value=APP_VERSION))
            elif version is not None and version != SCHEMA_VERSION:
                raise SchemaVersionError(version_message(version))

    def schema_version(self) -> int | None:
        with self.engine.connect() as conn:
            return schema_version(conn)

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def write(self):
        """A write transaction (BEGIN IMMEDIATE on SQLite), committed on leaving the block."""
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(rater_write=True)
            with conn.begin():
                yield conn

    def _retry(self, fn):
        """Run fn, retrying on lock errors (SQLite's after its busy timeout, deadlocks)."""
        for attempt in range(_RETRIES):
            try:
                return fn()
            except (OperationalError, ProgrammingError, IntegrityError) as e:
                if attempt == _RETRIES - 1 or not _is_lock_error(e):
                    raise
                time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * (0.5 + random.random()))

    def record_vote(self, *, task_id: str, rater_id: str, question_id: str, choice: str,
                    left_system: str, right_system: str, left_label: str, right_label: str,
                    time_shown: dt.datetime, time_answered: dt.datetime,
                    category: str = "", prompt_id: str = "", is_control: bool = False,
                    control_expected: str | None = None, app_version: str = APP_VERSION,
                    screen_id: str | None = None, completes: bool = False) -> int:
        """Append one vote in its own committed transaction.

        Args:
            screen_id: the assigned screen the vote belongs to: the vote is stored only while
                the rater holds that screen (NotAssignedError otherwise), and renews the lease.
            completes: the vote answers the screen's last question: the assignment is done.
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
            with self.write() as conn:
                if screen_id is not None:
                    a = assignments_table
                    now = utcnow()
                    held = conn.execute(
                        sa.update(a).where(a.c.screen_id == screen_id, a.c.rater_id == rater_id,
                                           a.c.time_done.is_(None))
                        .values(time_active=now, **({"time_done": now} if completes else {})))
                    if held.rowcount != 1:   # the row lock also holds off a hand-over meanwhile
                        raise NotAssignedError(f"rater {rater_id} does not hold screen {screen_id}")
                return int(conn.execute(sa.insert(votes_table).values(**row)).inserted_primary_key[0])

        return self._retry(insert)

    def record_participant(self, rater_id: str, platform: str, study_id: str = "",
                           session_id: str = "", signed: bool = False) -> bool:
        """Record how a rater came in (once per platform session); True if new."""
        row = dict(rater_id=rater_id, platform=platform, study_id=study_id or "",
                   session_id=session_id or "", signed=bool(signed), time_first=utcnow())
        t = participants_table
        key = [t.c[k] == row[k] for k in ("rater_id", "platform", "study_id", "session_id")]

        def insert() -> bool:
            with self.write() as conn:
                if conn.execute(sa.select(t.c.id).where(*key)).first() is not None:
                    return False
                conn.execute(sa.insert(t).values(**row))
                return True

        try:
            return self._retry(insert)
        except IntegrityError:   # the same session, recorded by a concurrent page load
            return False

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

    def table(self, table: sa.Table):
        """Every row of `table` (assignments_table, participants_table) as a DataFrame."""
        import pandas as pd

        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table)).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=[c.name for c in table.columns])

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


def schema_version(conn) -> int | None:
    """The schema version of the database behind `conn`: None when it is empty, 1 for the
    votes table of the first rater (before versions were recorded)."""
    tables = set(sa.inspect(conn).get_table_names())
    if meta_table.name in tables:
        value = conn.execute(sa.select(meta_table.c.value)
                             .where(meta_table.c.key == "schema_version")).scalar()
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return -1
    return 1 if votes_table.name in tables else None


def version_message(version: int) -> str:
    if version == 1 and SCHEMA_VERSION == 2:
        return ("the database has rater schema version 1 (votes only); this rater uses version 2 "
                "(votes, assignments, participants). Upgrade it in place with `python -m rater "
                "upgrade-db --db DB` (adds two tables; the votes stay as they are), or use a new "
                "database")
    if version > SCHEMA_VERSION:
        return (f"the database has rater schema version {version}, newer than this rater's "
                f"version {SCHEMA_VERSION}: update this checkout (git pull) to the version that "
                "wrote it, or use a new database")
    return (f"the database has rater schema version {version}, not this rater's version "
            f"{SCHEMA_VERSION}; use a new database")


def upgrade(url: str) -> tuple[int | None, int]:
    """Upgrade a version-1 database in place (the new tables; votes untouched).

    Returns:
        (version before, version after).
    Raises:
        SchemaVersionError: a version this function cannot upgrade.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(rater_write=True)
            with conn.begin():
                before = schema_version(conn)
                if before == SCHEMA_VERSION:
                    return before, before
                if before not in (None, 1):
                    raise SchemaVersionError(version_message(before))
                metadata.create_all(conn, checkfirst=True)
                conn.execute(sa.delete(meta_table).where(meta_table.c.key == "schema_version"))
                conn.execute(sa.insert(meta_table).values(key="schema_version",
                                                          value=str(SCHEMA_VERSION)))
        return before, SCHEMA_VERSION
    finally:
        engine.dispose()
