"""Vote latency of the rating app's store: `python -m bench.perf votes ...`.

Simulated raters (20 by default) vote at once through rater.store on a SQLite file in WAL mode
and/or a PostgreSQL database (--backend; without --pg-url a throwaway server is started with
rater.pgserver), each vote timed as the app's button callback plus the next screen's lookups
cost it: one committed `record_vote` on the rater's assigned screen (which checks and renews
the claim), the rater's `done_keys`, the claim lookup (rater.assign.holding) and, once a
screen's questions are all answered, a new claim (rater.assign.next_screen, each screen to
--ratings-per-task raters). "Served" means the store as the Streamlit server drives it:
`threads` runs every rater as a thread of one process sharing one VoteStore (Streamlit serves
all sessions from threads of one process); `processes` runs each rater as a process with its
own connection (several server replicas on one database). --think-ms / --think-max-ms give the
pause between a rater's votes (uniform; human pace is 1000 to 3000 ms). Browser, websocket and
page rendering time are not included. Target: p99 < 200 ms on a 2-core machine.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from .cli import HelpFormatter

TARGET_P99_MS = 200.0

QUESTIONS = ("fidelity", "alignment")  # questions per screen, as DrawBench tasks have

EPILOG = """examples:
  python -m bench.perf votes
  python -m bench.perf votes --raters 20 --votes 100 --mode processes --out runs/perf/votes.json
  python -m bench.perf votes --think-ms 500        # raters who pause half a second per answer
  # a crowd study at human pace (a vote every 1-3 s per rater) on SQLite and PostgreSQL
  python -m bench.perf votes --raters 50 --votes 40 --think-ms 1000 --think-max-ms 3000 \
      --backend both --mode threads --out runs/perf/votes-crowd.json
"""


def add_votes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--raters", type=int, default=20, help="simulated raters voting at once")
    p.add_argument("--votes", type=int, default=50, help="votes per rater")
    p.add_argument("--mode", choices=("threads", "processes", "both"), default="both",
                   help="raters as threads of one server process, or as separate processes")
    p.add_argument("--think-ms", type=float, default=0.0,
                   help="pause between a rater's votes (0: vote as fast as possible)")
    p.add_argument("--think-max-ms", type=float, default=None,
                   help="pauses uniform in [--think-ms, this] (default: always --think-ms)")
    p.add_argument("--ratings-per-task", type=int, default=3, help="raters per screen")
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="sqlite",
                   help="database(s) to time")
    p.add_argument("--db", default=None, help="SQLite file (default: a fresh temporary one)")
    p.add_argument("--pg-url", default=None,
                   help="PostgreSQL URL of an empty database (default: a throwaway server in a "
                        "temporary folder, rater.pgserver)")
    p.add_argument("--out", default=None, help="JSON results file")


def _rater(store, rater: int, votes: int, think: tuple[float, float], start: float,
           screens: list[str], r: int) -> list[float]:
    """One rater's votes; returns the seconds each took (vote + next-screen lookups)."""
    from rater import assign
    from rater.store import CHOICES

    rid = f"sim{rater:03d}"
    order = assign.rater_order(screens, rid)
    rng = random.Random(rater)
    claim = assign.next_screen(store, rid, order, r)   # the first page, before the clock
    while time.perf_counter() < start:
        time.sleep(0.001)
    out, q = [], 0
    for i in range(votes):
        if claim.status != assign.ASSIGNED:
            break
        now = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        store.record_vote(task_id=f"t-{claim.screen_id}", rater_id=rid, question_id=QUESTIONS[q],
                          choice=CHOICES[i % 3], left_system="model:a", right_system="model:b",
                          left_label="A", right_label="B", time_shown=now, time_answered=now,
                          category="Colors", prompt_id=claim.screen_id,
                          screen_id=claim.screen_id, completes=q == len(QUESTIONS) - 1)
        store.done_keys(rid)
        held, _, _ = assign.holding(store, rid, order)
        q = (q + 1) % len(QUESTIONS)
        if held is None:
            claim = assign.next_screen(store, rid, order, r)
        out.append(time.perf_counter() - t0)
        if think[1]:
            time.sleep(rng.uniform(*think))
    return out


def _process_rater(db: str, rater: int, votes: int, think, start_wall: float, q, screens,
                   r: int) -> None:
    from rater.store import VoteStore

    store = VoteStore(db)
    start = time.perf_counter() + (start_wall - time.time())
    q.put(_rater(store, rater, votes, think, start, screens, r))
    store.close()


def run_mode(mode: str, db: str, raters: int, votes: int, think: tuple[float, float],
             r: int = 3) -> tuple[list[float], float]:
    """All raters' latencies (s) and the wall time of the run."""
    from rater.store import VoteStore

    VoteStore(db).close()  # tables exist before the clock starts
    # enough screens for every vote (2 questions each), each going to r raters
    screens = [f"s{mode[0]}{i:05d}" for i in range(raters * votes // (len(QUESTIONS) * r) + raters)]
    lat: list[float] = []
    t0 = time.perf_counter()
    if mode == "threads":
        store = VoteStore(db)
        start = time.perf_counter() + 0.5 + 0.02 * raters
        results = [None] * raters
        threads = [threading.Thread(target=lambda r_=i: results.__setitem__(
            r_, _rater(store, r_, votes, think, start, screens, r))) for i in range(raters)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for res in results:
            lat += res
        wall = time.perf_counter() - start
        store.close()
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        start_wall = time.time() + 2.0 + 0.05 * raters  # all have connected and claimed by then
        procs = [ctx.Process(target=_process_rater, args=(db, i, votes, think, start_wall, q,
                                                          screens, r))
                 for i in range(raters)]
        for p in procs:
            p.start()
        for _ in procs:
            lat += q.get(timeout=600)
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0 - 2.0 - 0.05 * raters
    return lat, wall


def summarize(mode: str, lat: list[float], wall: float, raters: int,
              backend: str = "sqlite") -> dict:
    ms = sorted(1000 * x for x in lat)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    p99 = q[98]
    return {"backend": backend, "mode": mode, "raters": raters, "votes": len(ms),
            "median_ms": statistics.median(ms),
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
    try:
        import psycopg
        info["psycopg"] = psycopg.__version__
    except ImportError:
        pass
    return info


def cmd_votes(args) -> int:
    """Time concurrent votes, print the table, write the JSON if --out."""
    for flag in ("raters", "votes", "ratings_per_task"):
        if getattr(args, flag) < 1:
            print(f"bench.perf votes: --{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    think_max = args.think_ms if args.think_max_ms is None else args.think_max_ms
    if not 0 <= args.think_ms <= think_max:
        print("bench.perf votes: need 0 <= --think-ms <= --think-max-ms", file=sys.stderr)
        return 2
    think = (args.think_ms / 1000, think_max / 1000)
    modes = ("threads", "processes") if args.mode == "both" else (args.mode,)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        for backend in backends:
            for mode in modes:
                if backend == "sqlite":
                    db = args.db or str(Path(tmp) / f"votes-{mode}.db")
                else:
                    try:
                        db = args.pg_url or _pg(stack).url(f"votes_{mode}")
                    except Exception as e:   # no server binaries, or it would not start
                        print(f"bench.perf votes: no PostgreSQL: {e}", file=sys.stderr)
                        return 2
                lat, wall = run_mode(mode, db, args.raters, args.votes, think,
                                     args.ratings_per_task)
                rows.append(summarize(mode, lat, wall, args.raters, backend))
    result = {"benchmark": "votes", "spec": {k: v for k, v in vars(args).items()
                                             if k not in ("func", "pg_url")},
              "what": "record_vote on the assigned screen (claim checked and renewed, one "
                      "committed INSERT) + done_keys + claim lookup (+ a new claim after each "
                      "screen) per vote; SQLite WAL synchronous=FULL or PostgreSQL; no browser or "
                      "websocket time",
              "machine": machine_info(), "rows": rows}
    m = result["machine"]
    pace = f"{args.think_ms:g}-{think_max:g}" if think_max != args.think_ms else f"{args.think_ms:g}"
    print(f"\nvote latency: {args.raters} raters x {args.votes} votes, think {pace} ms, "
          f"r = {args.ratings_per_task}, on {m['cpu']} ({m['cpu_count']} cores, "
          f"load {m.get('load_avg_1m', 0):.1f})")
    head = f"{'backend':<12}{'mode':<11}{'votes':>7}{'median ms':>11}{'p90 ms':>9}{'p99 ms':>9}" \
           f"{'max ms':>9}{'votes/s':>9}  p99 < {TARGET_P99_MS:.0f} ms"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['backend']:<12}{r['mode']:<11}{r['votes']:>7}{r['median_ms']:>11.1f}"
              f"{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{r['votes_per_s']:>9.1f}  "
              f"{'met' if r['meets_target'] else 'NOT met'}")
    print("threads: raters share one store in one process, as Streamlit sessions do; "
          "processes: one connection per rater")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {out}")
    return 0


def _pg(stack: contextlib.ExitStack):
    """The run's throwaway PostgreSQL server, started on first use."""
    if not hasattr(stack, "pg"):
        from rater.pgserver import TempPostgres

        stack.pg = stack.enter_context(TempPostgres())
    return stack.pg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf_votes", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    add_votes_args(p)
    return cmd_votes(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
