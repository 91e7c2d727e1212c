"""Streamlit app for blinded pairwise human rating (Imagen paper App. E).

    streamlit run rater/app.py -- --tasks tasks.jsonl --db ratings.db [--admin-token T]

A rater enters an id (or opens ``?rater=ID``) and sees, screen by screen, a prompt and two
image sets side by side, answering each question with "I prefer set A", "I am indifferent" or
"I prefer set B" (keys A, I, B). Which system is left is a seeded coin per (rater, screen) and
is recorded with the vote. Only the question, caption and image bytes reach the browser:
images are sent as bytes and served under content-hash URLs, so neither names, paths nor
config keys can leak. ``?admin=1`` opens the admin page (token from --admin-token or, as
`python -m rater serve` passes it, $RATER_ADMIN_TOKEN; the database likewise from $RATER_DB).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import re
import sys
from pathlib import Path

try:
    import rater  # noqa: F401
except ImportError:  # `streamlit run rater/app.py` puts rater/ (not the repo root) on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st

from rater import ADMIN_TOKEN_ENV, DB_ENV, controls, resolve_secrets
from rater.store import APP_VERSION, VoteStore
from rater.tasks import Screen, TaskFileError, add_session_args, load_screens

BUTTONS = (("I prefer set A", "left", "A"), ("I am indifferent", "indifferent", "I"),
           ("I prefer set B", "right", "B"))
RATER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


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


def schedule(cfg, screens, rater_id: str) -> list[Screen]:
    key = ("schedule", rater_id)
    if key not in st.session_state:
        st.session_state[key] = controls.build_schedule(screens, rater_id, cfg.control_rate,
                                                        cfg.seed)
    return st.session_state[key]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def record(store: VoteStore, cfg, rater_id: str, screen: Screen, q, choice: str) -> None:
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
    li = left_index(cfg.seed, rater_id, screen.screen_id)
    left, right = screen.sides[li], screen.sides[1 - li]
    store.record_vote(
        task_id=q.task_id, rater_id=rater_id, question_id=q.question_id, choice=choice,
        left_system=left.system, right_system=right.system, left_label=left.label,
        right_label=right.label, time_shown=shown, time_answered=_utcnow(),
        category=screen.category, prompt_id=screen.prompt_id, is_control=screen.is_control,
        control_expected=("left" if left.label == "original" else "right") if screen.is_control
        else None, app_version=APP_VERSION)
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


def page_rater(cfg, store: VoteStore, screens: list[Screen]) -> None:
    rater_id = st.query_params.get("rater", "").strip()
    if not rater_id:
        return ask_rater_id()
    if not RATER_ID.match(rater_id):
        st.error("This link's rater id is not valid; ask for a new link.")
        return
    plan = schedule(cfg, screens, rater_id)
    done = store.done_keys(rater_id)
    total = sum(len(s.questions) for s in plan)
    answered = sum(k in done for s in plan for k in s.keys())
    st.progress(answered / total if total else 1.0, text=f"{answered} of {total} answered")
    todo = next(((s, q) for s in plan for q in s.questions
                 if (q.task_id, q.question_id) not in done), None)
    if todo is None:
        st.success("All done - thank you!")
        return
    screen, q = todo
    if st.session_state.pop("too_fast", False):
        st.toast("Please look at the images before answering.")
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
            st.button(label, key=f"vote:{choice}", shortcut=key,
                      on_click=record, args=(store, cfg, rater_id, screen, q, choice),
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
    st.dataframe(pd.DataFrame([
        {"task": q.task_id, "question": q.question_id, "prompt": s.prompt_id,
         "category": s.category, "raters": int(counts.get((q.task_id, q.question_id), 0))}
        for s in screens for q in s.questions]), hide_index=True)
    history = store.votes(latest_only=False)
    st.download_button("Download all votes (CSV)", history.to_csv(index=False), "votes.csv",
                       mime="text/csv")
    st.caption(f"{len(history)} vote rows ({len(votes)} latest); app {APP_VERSION}")


def main(argv: list[str] | None = None) -> None:
    st.set_page_config(page_title="Image rating", layout="wide")
    try:
        cfg = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit:
        st.error("Start the app with: streamlit run rater/app.py -- --tasks FILE --db FILE")
        return
    resolve_secrets(cfg)
    try:
        screens = get_screens(cfg.tasks, Path(cfg.tasks).stat().st_mtime
                              if Path(cfg.tasks).is_file() else 0.0)
    except TaskFileError as e:  # details to the server log only: the path may name a run
        print(f"rater app: {e}", file=sys.stderr)
        st.error("The tasks file cannot be read; the server log says why.")
        return
    store = get_store(cfg.db)
    if st.query_params.get("admin"):
        page_admin(cfg, store, screens)
    else:
        page_rater(cfg, store, screens)


main()
