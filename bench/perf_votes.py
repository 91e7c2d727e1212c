"""Vote latency of the rating app's store: `python -m bench.perf votes ...`.

20 simulated raters vote at once against one SQLite file in WAL mode through rater.store,
each vote timed as the app's button callback plus the next screen's lookup cost it: one
committed `record_vote` and one `done_keys` query. "Served" means the store as the Streamlit
server drives it: `threads` runs every rater as a thread of one process sharing one VoteStore
(Streamlit serves all sessions from threads of one process); `processes` runs each rater as a
process with its own connection (several server replicas on one file). Browser, websocket and
page rendering time are not included. Target: p99 < 200 ms on a 2-core machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from .cli import HelpFormatter

TARGET_P99_MS = 200.0

EPILOG = """examples:
  python -m bench.perf votes
  python -m bench.perf votes --raters 20 --votes 100 --mode processes --out runs/perf/votes.json
  python -m bench.perf votes --think-ms 500        # raters who pause half a second per answer
"""


def add_votes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raters", type=int, default=20, help="simulated raters voting at once")
    p.add_argument("--votes", type=int, default=50, help="votes per rater")
    p.add_argument("--mode", choices=("threads", "processes", "both"), default="both",
                   help="raters as threads of one server process, or as separate processes")
    p.add_argument("--think-ms", type=float, default=0.0,
                   help="pause between a rater's votes (0: vote as fast as possible)")
    p.add_argument("--db", default=None, help="SQLite file (default: a fresh temporary one)")
    p.add_argument("--out", default=None, help="JSON results file")


def _rater(store, rater: int, votes: int, think_s: float, start: float) -> list[float]:
    """One rater's votes; returns the seconds each took (record_vote + done_keys)."""
    from rater.store import CHOICES

    while time.perf_counter() < start:
        time.sleep(0.001)
    out = []
    for i in range(votes):
        now = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        store.record_vote(task_id=f"t-{i:05d}", rater_id=f"sim{rater:03d}",
                          question_id=("fidelity", "alignment")[i % 2], choice=CHOICES[i % 3],
                          left_system="model:a", right_system="model:b", left_label="A",
                          right_label="B", time_shown=now, time_answered=now,
                          category="Colors", prompt_id=f"p{i:05d}")
        store.done_keys(f"sim{rater:03d}")
        out.append(time.perf_counter() - t0)
        if think_s:
            time.sleep(think_s)
    return out


def _process_rater(db: str, rater: int, votes: int, think_s: float, start_wall: float, q) -> None:
    from rater.store import VoteStore

    store = VoteStore(db)
    start = time.perf_counter() + (start_wall - time.time())
    q.put(_rater(store, rater, votes, think_s, start))


def run_mode(mode: str, db: str, raters: int, votes: int, think_s: float) -> tuple[list[float], float]:
    """All raters' latencies (s) and the wall time of the run."""
    from rater.store import VoteStore

    VoteStore(db).close()  # tables exist before the clock starts
    lat: list[float] = []
    t0 = time.perf_counter()
    if mode == "threads":
        store = VoteStore(db)
        start = time.perf_counter() + 0.2
        results = [None] * raters
        threads = [threading.Thread(target=lambda r=r: results.__setitem__(
            r, _rater(store, r, votes, think_s, start))) for r in range(raters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            lat += r
        wall = time.perf_counter() - start
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        start_wall = time.time() + 2.0  # every process has imported and connected by then
        procs = [ctx.Process(target=_process_rater, args=(db, r, votes, think_s, start_wall, q))
                 for r in range(raters)]
        for p in procs:
            p.start()
        for _ in procs:
            lat += q.get(timeout=600)
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0 - 2.0
    return lat, wall


def summarize(mode: str, lat: list[float], wall: float, raters: int) -> dict:
    ms = sorted(1000 * x for x in lat)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    p99 = q[98]
    return {"mode": mode, "raters": raters, "votes": len(ms), "median_ms": statistics.median(ms),
            "p90_ms": q[89], "p99_ms": p99, "max_ms": ms[-1], "votes_per_s": len(ms) / wall,
            "target_p99_ms": TARGET_P99_MS, "meets_target": p99 < TARGET_P99_MS}


def machine_info() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    import sqlite3
    import sqlalchemy
    info["sqlite"] = sqlite3.sqlite_version
    info["sqlalchemy"] = sqlalchemy.__version__
    return info


def cmd_votes(args) -> int:
    """Time concurrent votes, print the table, write the JSON if --out."""
    for flag in ("raters", "votes"):
        if getattr(args, flag) < 1:
            print(f"bench.perf votes: --{flag} must be >= 1", file=sys.stderr)
            return 2
    modes = ("threads", "processes") if args.mode == "both" else (args.mode,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            db = args.db or str(Path(tmp) / f"votes-{mode}.db")
            lat, wall = run_mode(mode, db, args.raters, args.votes, args.think_ms / 1000)
            rows.append(summarize(mode, lat, wall, args.raters))
    result = {"benchmark": "votes", "spec": {k: v for k, v in vars(args).items() if k != "func"},
              "what": "record_vote (one committed INSERT) + done_keys per vote, SQLite WAL, "
                      "synchronous=FULL; no browser or websocket time",
              "machine": machine_info(), "rows": rows}
    m = result["machine"]
    print(f"\nvote latency: {args.raters} raters x {args.votes} votes, think {args.think_ms:g} ms, "
          f"SQLite WAL on {m['cpu']} ({m['cpu_count']} cores, load {m.get('load_avg_1m', 0):.1f})")
    head = f"{'mode':<11}{'votes':>7}{'median ms':>11}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}" \
           f"{'votes/s':>9}  p99 < {TARGET_P99_MS:.0f} ms"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['mode']:<11}{r['votes']:>7}{r['median_ms']:>11.1f}{r['p90_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{r['votes_per_s']:>9.0f}  "
              f"{'met' if r['meets_target'] else 'NOT met'}")
    print("threads: raters share one store in one process, as Streamlit sessions do; "
          "processes: one connection per rater")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf_votes", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    add_votes_args(p)
    return cmd_votes(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
