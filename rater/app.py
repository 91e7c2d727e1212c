"""Streamlit app for blinded pairwise human rating (Imagen paper App. E).

    streamlit run rater/app.py -- --tasks tasks.jsonl --db ratings.db [--admin-token T]

A rater enters an id (or opens ``?rater=ID``, or comes from Prolific with ``?PROLIFIC_PID=..&
STUDY_ID=..&SESSION_ID=..``, recorded in the participants table) and sees, screen by screen, a
prompt and two image sets side by side, answering each question with "I prefer set A", "I am
indifferent" or "I prefer set B" (keys A, I, B). Which system is left is a seeded coin per
(rater, screen) and is recorded with the vote. Screens are assigned (rater.assign): each goes to
--ratings-per-task distinct raters, the study filling evenly, up to a rater's
--tasks-per-rater; then the rater sees the completion code of --completion-url, whatever their
control answers (the admin page flags raters under 80% on controls). With
--require-signed-links a rater id counts only with its token (rater.links): a link without a
valid one gets a refusal page and no buttons. Only the question, caption and image bytes reach the browser:
images are sent as bytes and served under content-hash URLs, so neither names, paths nor
config keys can leak. ``?admin=1`` opens the admin page (token from --admin-token or, as
`python -m rater serve` passes it, $RATER_ADMIN_TOKEN; the database likewise from $RATER_DB).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import os
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

try:
    import rater  # noqa: F401
except ImportError:  # `streamlit run rater/app.py` puts rater/ (not the repo root) on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from rater import ADMIN_TOKEN_ENV, DB_ENV, assign, controls, links, resolve_secrets
from rater.store import (APP_VERSION, NotAssignedError, SchemaVersionError, VoteStore,
                         participants_table)
from rater.tasks import (Screen, TaskFileError, add_session_args, check_session_args,
                         load_screens)

BUTTONS = (("I prefer set A", "left", "A"), ("I am indifferent", "indifferent", "I"),
           ("I prefer set B", "right", "B"))
RATER_ID = links.RATER_ID
PROLIFIC = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID")
REFUSED = ("This link is not valid for this study. Please use the personal link you were sent, "
           "unchanged, or ask the study's organiser for a new one.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rater/app.py", description="Pairwise rating app.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tasks", required=True, help="tasks.jsonl of python -m bench.drawbench pairs")
    p.add_argument("--db", default=None,
                   help=f"SQLite file or SQLAlchemy URL (default: ${DB_ENV}, else ratings.db)")
    p.add_argument("--admin-token", default=None,
                   help=f"token of the admin page (default: ${ADMIN_TOKEN_ENV}; off if neither)")
    add_session_args(p)
    return p


@st.cache_resource
def get_store(url: str) -> VoteStore:
    return VoteStore(url)


@st.cache_resource
def get_screens(path: str, mtime: float) -> list[Screen]:
    return load_screens(path)


@st.cache_data(max_entries=2048, show_spinner=False)
def image_bytes(path: str, corrupt_seed: int | None) -> bytes:
    """An image file's bytes, or a control's corrupted copy of it."""
    data = Path(path).read_bytes()
    return data if corrupt_seed is None else controls.corrupt(data, corrupt_seed)


def left_index(seed: int, rater_id: str, screen_id: str) -> int:
    """Which of screen.sides goes left: a seeded coin per (rater, screen)."""
    h = hashlib.sha256(f"sides|{seed}|{rater_id}|{screen_id}".encode()).digest()
    return h[0] & 1


@dataclass(frozen=True)
class Identity:
    """Who is rating, and how they came in."""

    rater_id: str
    platform: str          # prolific | link
    study_id: str = ""
    session_id: str = ""
    signed: bool = False


def identify(cfg, params, secret: bytes | None) -> Identity | str | None:
    """The rater of a page's URL parameters; None: ask for an id; a str: refuse with it."""
    pid = params.get("PROLIFIC_PID", "").strip()
    rid, platform = (pid, "prolific") if pid else (params.get("rater", "").strip(), "link")
    if not rid:
        return REFUSED if cfg.require_signed_links else None
    if not RATER_ID.match(rid):
        return "This link's rater id is not valid; ask for a new link."
    signed = secret is not None and links.verify(secret, rid, params.get(links.SIG_PARAM))
    if cfg.require_signed_links and not signed:
        return REFUSED
    return Identity(rid, platform, params.get("STUDY_ID", "").strip()[:128] if pid else "",
                    params.get("SESSION_ID", "").strip()[:128] if pid else "", signed)


@dataclass
class Schedule:
    """A rater's task screens in their order, and the controls due before each of them."""

    real: list[Screen]
    due: list[list[Screen]]    # due[i]: controls before real screen i (due[len(real)]: all)


def schedule(cfg, screens, rater_id: str) -> Schedule:
    key = ("schedule", rater_id)
    if key not in st.session_state:
        plan = controls.build_schedule(screens, rater_id, cfg.control_rate, cfg.seed)
        real, due, seen = [], [], []
        for s in plan:
            if s.is_control:
                seen.append(s)
            else:
                due.append(list(seen))
                real.append(s)
        st.session_state[key] = Schedule(real, due + [seen])
    return st.session_state[key]


@dataclass
class Work:
    """What a rater sees now: a screen (and whether it is an assigned one), or the end."""

    screen: Screen | None
    assigned: bool = False
    n_done: int = 0            # task screens finished
    status: str = assign.QUOTA


def _first_open(screens: list[Screen], done) -> Screen | None:
    return next((s for s in screens if any(k not in done for k in s.keys())), None)


def next_work(cfg, store: VoteStore, sched: Schedule, rater_id: str, done) -> Work:
    """The rater's next screen: a control that is due, the assigned screen they hold, a new
    claim (rater.assign), or the end of their work."""
    quota = cfg.tasks_per_rater or len(sched.real)
    if not cfg.ratings_per_task:           # every rater rates every screen, in their order
        n_done = sum(all(k in done for k in s.keys()) for s in sched.real)
        control = _first_open(sched.due[min(n_done, quota)], done)
        screen = None if n_done >= quota else _first_open(sched.real, done)
        return Work(control or screen, False, n_done, assign.QUOTA)
    order = [s.screen_id for s in sched.real]
    held, n_done, n_claims = assign.holding(store, rater_id, order)
    if held is None:
        control = _first_open(sched.due[min(n_done, len(sched.real))], done)
        if control is not None:
            return Work(control, False, n_done, assign.ASSIGNED)
        if n_claims >= quota:
            return Work(None, False, n_done, assign.QUOTA)
        claim = assign.next_screen(store, rater_id, order, cfg.ratings_per_task,
                                   cfg.tasks_per_rater, cfg.claim_timeout_min * 60)
        held, n_done = claim.screen_id, claim.n_done
        if held is None:
            return Work(None, False, n_done, claim.status)
    screen = next(s for s in sched.real if s.screen_id == held)
    if all(k in done for k in screen.keys()):  # answered before it was claimed (r = 0 earlier)
        assign.complete(store, rater_id, screen.screen_id)
        return next_work(cfg, store, sched, rater_id, done)
    return Work(screen, True, n_done, assign.ASSIGNED)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def record(store: VoteStore, cfg, rater_id: str, screen: Screen, q, choice: str,
           assigned: bool = False, completes: bool = False) -> None:
    """Button callback: one vote, committed before the next screen is drawn."""
    answered = st.session_state.setdefault("answered", set())
    if (rater_id, q.task_id, q.question_id) in answered:
        return
    shown = st.session_state.get("shown", {}).get((q.task_id, q.question_id))
    # The buttons keep their keys from screen to screen (Streamlit re-binds keyboard shortcuts
    # unreliably when button keys change), so a second click sent before the next screen was
    # drawn arrives here as an answer to that next screen: drop answers faster than a person.
    if shown is None or (_utcnow() - shown).total_seconds() < cfg.min_answer_s:
        st.session_state["too_fast"] = True
        return
    if st.session_state.get("identity") is None or \
            st.session_state["identity"].rater_id != rater_id:
        return                               # not the rater this page was drawn for
    li = left_index(cfg.seed, rater_id, screen.screen_id)
    left, right = screen.sides[li], screen.sides[1 - li]
    try:
        store.record_vote(
            task_id=q.task_id, rater_id=rater_id, question_id=q.question_id, choice=choice,
            left_system=left.system, right_system=right.system, left_label=left.label,
            right_label=right.label, time_shown=shown, time_answered=_utcnow(),
            category=screen.category, prompt_id=screen.prompt_id, is_control=screen.is_control,
            control_expected=("left" if left.label == "original" else "right")
            if screen.is_control else None, app_version=APP_VERSION,
            screen_id=screen.screen_id if assigned else None, completes=completes)
    except NotAssignedError:   # idle past --claim-timeout-min: the screen went to someone else
        st.session_state["reassigned"] = True
        return
    answered.add((rater_id, q.task_id, q.question_id))


def side_images(screen: Screen, side) -> list[bytes]:
    seed = None
    if side.system == controls.CORRUPTED:
        seed = controls._seed("corrupt", screen.screen_id)
    return [image_bytes(str(p), seed) for p in side.images]


def show_images(images: list[bytes], side, per_row: int) -> None:
    """A grid of images as sent: the format is kept, so Streamlit passes the bytes through
    unchanged (no server-side JPEG re-encoding or resizing); the browser scales them."""
    for start in range(0, len(images), per_row):
        for col, data, path in zip(st.columns(per_row), images[start:start + per_row],
                                   side.images[start:start + per_row]):
            fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
            if side.system == controls.CORRUPTED:
                fmt = "PNG"  # controls.corrupt writes PNG
            col.image(data, width="stretch", output_format=fmt)


def ask_rater_id() -> None:
    st.title("Image rating")
    with st.form("rater-id"):
        rid = st.text_input("Your rater id", max_chars=64)
        if st.form_submit_button("Start"):
            rid = rid.strip()
            if RATER_ID.match(rid):
                st.query_params["rater"] = rid
                st.rerun()
            st.error("Use 1-64 letters, digits, '.', '_', '@' or '-'.")


def completion_code(url: str | None) -> str | None:
    """The completion code of a --completion-url (its cc parameter, as Prolific's has)."""
    if not url:
        return None
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    return (query.get("cc") or query.get("code") or [None])[0]


def page_done(cfg, work: Work) -> None:
    """The end of a rater's work: the same for every rater, whatever their control answers."""
    if work.n_done == 0 and work.status == assign.FULL:
        st.info("Every screen of this study has all the ratings it needs: there is nothing left "
                "to rate. Thank you for your time!")
        return
    st.success("All done - thank you!")
    code = completion_code(cfg.completion_url)
    if code:
        st.markdown(f"Your completion code: **`{code}`**")
    if cfg.completion_url:
        st.link_button("Finish the study and return to the platform", cfg.completion_url,
                       type="primary")


def page_rater(cfg, store: VoteStore, screens: list[Screen], secret: bytes | None) -> None:
    who = identify(cfg, st.query_params, secret)
    if who is None:
        return ask_rater_id()
    if isinstance(who, str):
        st.session_state.pop("identity", None)
        st.error(who)
        return
    st.session_state["identity"] = who
    rater_id = who.rater_id
    if st.session_state.get("participant") != who:
        store.record_participant(who.rater_id, who.platform, who.study_id, who.session_id,
                                 who.signed)
        st.session_state["participant"] = who
    sched = schedule(cfg, screens, rater_id)
    done = store.done_keys(rater_id)
    work = next_work(cfg, store, sched, rater_id, done)
    k = min(cfg.tasks_per_rater or len(sched.real), len(sched.real))
    keys = {key for s in sched.real for key in s.keys()} | {
        key for s in sched.due[k] for key in s.keys()}
    per_screen = len(sched.real[0].questions) if sched.real else 0
    total = k * per_screen + len(sched.due[k])
    answered = len(done & keys)
    if work.screen is None:
        total = answered
    st.progress(min(1.0, answered / total) if total else 1.0, text=f"{answered} of {total} answered")
    if work.screen is None:
        return page_done(cfg, work)
    screen = work.screen
    q = next(q for q in screen.questions if (q.task_id, q.question_id) not in done)
    remaining = sum(key not in done for key in screen.keys())
    if st.session_state.pop("too_fast", False):
        st.toast("Please look at the images before answering.")
    if st.session_state.pop("reassigned", False):
        st.toast("After a long pause your screen went to another rater: here is a new one.")
    st.session_state.setdefault("shown", {}).setdefault((q.task_id, q.question_id), _utcnow())
    li = left_index(cfg.seed, rater_id, screen.screen_id)
    st.markdown(f"**Prompt:** {screen.caption}")
    cols = st.columns(2, gap="large")
    per_row = 1 if screen.k == 1 else 2 if screen.k <= 4 else 4
    for col, name, side in zip(cols, ("Set A", "Set B"), (screen.sides[li], screen.sides[1 - li])):
        with col:
            st.subheader(name)
            show_images(side_images(screen, side), side, per_row)
    st.subheader(q.text)
    for col, (label, choice, key) in zip(st.columns(3), BUTTONS):
        with col:
            st.button(label, key=f"vote:{choice}", shortcut=key, on_click=record,
                      args=(store, cfg, rater_id, screen, q, choice, work.assigned,
                            work.assigned and remaining == 1),
                      width="stretch")
    st.caption("Keys: A = set A, I = indifferent, B = set B.")


def page_admin(cfg, store: VoteStore, screens: list[Screen]) -> None:
    st.title("Rating admin")
    if not cfg.admin_token:
        st.error(f"The admin page is off: start the app with ${ADMIN_TOKEN_ENV} set "
                 "(or --admin-token).")
        return
    if not st.session_state.get("admin_ok"):
        token = st.text_input("Admin token", type="password")
        if token and hmac.compare_digest(token.encode(), cfg.admin_token.encode()):
            st.session_state["admin_ok"] = True
            st.rerun()
        if token:
            st.error("Wrong token.")
        return
    import pandas as pd

    votes = store.votes(latest_only=True)
    acc = controls.control_accuracy(votes).set_index("rater_id")
    rows = []
    for rid in store.rater_ids():
        plan = controls.build_schedule(screens, rid, cfg.control_rate, cfg.seed)
        keys = {k for s in plan for k in s.keys()}
        mine = votes[votes["rater_id"] == rid]
        got = sum((t, qid) in keys for t, qid in zip(mine["task_id"], mine["question_id"]))
        a = acc.loc[rid] if rid in acc.index else None
        rows.append({"rater": rid, "answered": got, "total": len(keys),
                     "progress": got / len(keys) if keys else 1.0,
                     "controls": 0 if a is None else int(a["n_controls"]),
                     "control accuracy": None if a is None else float(a["accuracy"]),
                     "flagged": False if a is None else bool(a["flagged"]),
                     "last vote": mine["time_answered"].max()})
    per_rater = pd.DataFrame(rows)
    flagged = [r["rater"] for r in rows if r["flagged"]]
    st.subheader("Raters")
    if flagged:
        st.warning(f"Under {controls.THRESHOLD:.0%} correct on controls: {', '.join(flagged)}")
    st.dataframe(per_rater, hide_index=True)
    st.subheader("Tasks")
    counts = votes[~votes["is_control"]].groupby(["task_id", "question_id"]).size()
    claims = assign.progress(store).set_index("screen_id")
    st.dataframe(pd.DataFrame([
        {"task": q.task_id, "question": q.question_id, "prompt": s.prompt_id,
         "category": s.category, "raters": int(counts.get((q.task_id, q.question_id), 0)),
         "assigned": int(claims["claimed"].get(s.screen_id, 0)),
         "assignments done": int(claims["done"].get(s.screen_id, 0))}
        for s in screens for q in s.questions]), hide_index=True)
    if cfg.ratings_per_task:
        full = sum(int(claims["done"].get(s.screen_id, 0)) >= cfg.ratings_per_task
                   for s in screens)
        st.caption(f"{full} of {len(screens)} screens rated by {cfg.ratings_per_task} raters")
    people = store.table(participants_table)
    if len(people):
        st.subheader("Participants")
        st.dataframe(people.drop(columns="id"), hide_index=True)
    history = store.votes(latest_only=False)
    st.download_button("Download all votes (CSV)", history.to_csv(index=False), "votes.csv",
                       mime="text/csv")
    st.caption(f"{len(history)} vote rows ({len(votes)} latest); app {APP_VERSION}")


def link_secret(cfg) -> bytes | None:
    """The signed links' secret from its environment variable; None if unset or unusable."""
    try:
        return links.check_secret(os.environ.get(cfg.link_secret_env), cfg.link_secret_env)
    except links.LinkError:
        return None


def main(argv: list[str] | None = None) -> None:
    st.set_page_config(page_title="Image rating", layout="wide")
    try:
        cfg = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit:
        st.error("Start the app with: streamlit run rater/app.py -- --tasks FILE --db FILE")
        return
    resolve_secrets(cfg)
    problem = check_session_args(cfg)
    secret = link_secret(cfg)
    if problem is None and cfg.require_signed_links and secret is None:
        problem = f"--require-signed-links: ${cfg.link_secret_env} is unset or too short"
    if problem:   # details to the server log only
        print(f"rater app: {problem}", file=sys.stderr)
        st.error("The rating app is misconfigured; the server log says why.")
        return
    try:
        screens = get_screens(cfg.tasks, Path(cfg.tasks).stat().st_mtime
                              if Path(cfg.tasks).is_file() else 0.0)
    except TaskFileError as e:  # details to the server log only: the path may name a run
        print(f"rater app: {e}", file=sys.stderr)
        st.error("The tasks file cannot be read; the server log says why.")
        return
    try:
        store = get_store(cfg.db)
    except SchemaVersionError as e:
        print(f"rater app: {e}", file=sys.stderr)
        st.error("The ratings database was written by another version of the app; the server "
                 "log says what to do.")
        return
    if st.query_params.get("admin"):
        page_admin(cfg, store, screens)
    else:
        page_rater(cfg, store, screens, secret)


main()
