"""End to end: serve the rating app and vote in a real headless Chromium (Python playwright).

Every byte the browser receives (HTTP bodies and websocket frames) and the final page source
are searched for the fixture systems' distinctive names, run paths and config keys. With
--require-signed-links, a forged or missing token gets the refusal page and stores no vote.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rater import links
from rater.store import VoteStore

from rater_fixtures import SECRETS, SYSTEM_A, SYSTEM_B, make_tasks

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is absent (Debian package chromium; make test installs it)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(tmp_path, *extra, env=None):
    """(base url, tasks path, db path) of `python -m rater serve ...extra` on a free port."""
    tasks = make_tasks(tmp_path, n_prompts=2, k=2)
    db = tmp_path / "ratings.db"
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
               **(env or {}))
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rater", "serve", "--tasks", str(tasks), "--db", str(db),
         "--port", str(port), "--address", "127.0.0.1", *extra],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("server did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.3)
        yield url, tasks, db
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # the serve process and the streamlit it started
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def served(tmp_path):
    with serving(tmp_path, "--admin-token", "tok", "--control-rate", "0.34") as s:
        yield s


def chromium(p):
    return p.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"])


def idle(page) -> None:
    """Wait until the script run behind the page has finished (no "Running" status widget)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000)
    page.get_by_text("Keys: A = set A").click()   # focus the page, not a stale button
    page.wait_for_timeout(400)   # a person's minimum: faster answers are dropped (--min-answer-s)


def _app_processes(marker: str) -> list[int]:
    """Pids of running processes whose command line mentions `marker`."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except OSError:  # gone meanwhile, or not ours
            pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_serve_keeps_the_token_and_database_off_the_app_command_line(served):
    """Any user can read a process's command line; the app gets its secrets in its environment."""
    _, tasks, db = served
    apps = [pid for pid in _app_processes(str(tasks.resolve())) if pid != os.getpid()]
    apps = [pid for pid in apps if b"streamlit" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert apps, "the streamlit process was not found"
    for pid in apps:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert not any(a == b"tok" or a.endswith(b"=tok") for a in args)
        assert str(db).encode() not in b" ".join(args)
        env = dict(kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                   if b"=" in kv)
        assert env[b"RATER_ADMIN_TOKEN"] == b"tok" and env[b"RATER_DB"] == str(db).encode()


def test_vote_in_chromium_and_nothing_leaks(served):
    from playwright.sync_api import sync_playwright

    url, tasks, db = served
    responses, frames = [], []
    with sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page()
        page.on("response", lambda r: responses.append(r))
        page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))
        page.goto(f"{url}/?rater=alice")
        total = 5                                  # 2 prompts x 2 questions + 1 control
        page.get_by_text(f"0 of {total} answered").wait_for(timeout=60_000)
        how = ["click:A", "key:b", "key:i", "click:B", "click:I"]
        for n, action in enumerate(how):
            page.get_by_role("button", name="I prefer set A").wait_for(timeout=30_000)
            page.locator("img").first.wait_for(timeout=30_000)
            idle(page)
            kind, what = action.split(":")
            if kind == "key":
                page.keyboard.press(what)
            else:
                name = {"A": "I prefer set A", "I": "I am indifferent", "B": "I prefer set B"}[what]
                page.get_by_role("button", name=name).click()
            nxt = "All done" if n + 1 == total else f"{n + 1} of {total} answered"
            page.get_by_text(nxt).first.wait_for(timeout=30_000)
        html = page.content()
        bodies, unread = [], 0
        for r in responses:
            try:
                bodies.append((r.url, r.body()))
            except Exception:  # redirects and aborted requests have no body
                unread += 1
        browser.close()

    votes = VoteStore(str(db)).votes().sort_values("id")
    assert list(votes["choice"]) == ["left", "right", "indifferent", "right", "indifferent"]
    assert votes["is_control"].sum() == 1
    assert set(votes.loc[~votes.is_control, "left_system"]) <= {SYSTEM_A, SYSTEM_B}

    media = {f.read_bytes() for f in (tasks.parent / "media").iterdir()}
    images = [b for u, b in bodies if "/media/" in u]
    assert images and any(b in media for b in images)   # served as the task file's bytes
    assert len(bodies) > 5 and unread < len(responses) // 2
    assert frames, "no websocket frames captured"
    everything = [html.encode()] + [b for _, b in bodies] + [
        f.encode() if isinstance(f, str) else bytes(f) for f in frames]
    assert any(b"a red cube number" in blob for blob in everything[1:])  # the scan sees content
    for secret in SECRETS:
        for blob in everything:
            assert secret.encode() not in blob, secret


def test_signed_links_in_chromium(tmp_path):
    """A forged and a missing token see the refusal page, their key presses store nothing; the
    signed link of the same id votes."""
    from playwright.sync_api import sync_playwright

    secret = "chromium-link-secret-0123456789"
    with serving(tmp_path, "--require-signed-links", "--control-rate", "0",
                 env={"RATER_LINK_SECRET": secret}) as (url, _, db), sync_playwright() as p:
        browser = chromium(p)
        page = browser.new_page()
        good = links.link(url + "/", secret.encode(), "eve")
        forged = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
        for bad in (forged, f"{url}/?rater=eve", f"{url}/?rater=mallory&sig={good[-32:]}"):
            page.goto(bad)
            page.get_by_text("not valid for this study").wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            assert page.get_by_role("button", name="I prefer set A").count() == 0
            for key in ("a", "b", "i"):
                page.keyboard.press(key)
            assert page.locator("img").count() == 0
        page.wait_for_timeout(500)
        assert VoteStore(str(db)).count() == 0              # checked in the database
        page.goto(good)
        page.get_by_text("0 of 4 answered").wait_for(timeout=60_000)
        page.locator("img").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        page.get_by_role("button", name="I prefer set B").click()
        page.get_by_text("1 of 4 answered").wait_for(timeout=30_000)
        browser.close()
    votes = VoteStore(str(db)).votes()
    assert votes["rater_id"].tolist() == ["eve"] and votes["choice"].tolist() == ["right"]
