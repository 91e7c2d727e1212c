"""Command line of the rating app: `python -m rater serve|analyze|plan|links|upgrade-db ...`."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench.cli import HelpFormatter
from rater import ADMIN_TOKEN_ENV, DB_ENV, resolve_secrets, shown_db
from rater.tasks import add_session_args, check_session_args, session_flags

EPILOG = """examples:
  python -m rater serve      # the rating tasks of `make demo` (runs/demo/tasks/tasks.jsonl)
  python -m bench.drawbench pairs --a runs/db:w1-none-aug0-ddim64 --b runs/db:w5-dyn0.995-aug0-ddim64 \\
      --out tasks/guidance.jsonl
  RATER_ADMIN_TOKEN=s3cret python -m rater serve --tasks tasks/guidance.jsonl --db ratings.db
  RATER_DB=postgresql://user:pw@host/ratings python -m rater serve --tasks tasks/guidance.jsonl
  # raters open http://HOST:8501/?rater=alice ; the admin opens http://HOST:8501/?admin=1
  python -m rater analyze --db ratings.db --out reports/human

  # a crowd study: each screen to 3 raters, 20 screens each, Prolific's completion page
  python -m rater serve --tasks tasks/guidance.jsonl --db postgresql://rater@db/ratings \
      --ratings-per-task 3 --tasks-per-rater 20 \
      --completion-url 'https://app.prolific.com/submissions/complete?cc=C1A2B3C4'
  # Prolific's study URL: http://HOST:8501/?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID=...

  # invited raters with signed links: an edited ?rater= is refused
  export RATER_LINK_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
  python -m rater links --n 50 --base-url http://HOST:8501/
  python -m rater serve --tasks tasks/guidance.jsonl --require-signed-links

  python -m rater plan --preference 0.55 --indifferent 0.2 --out plan/   # prompts x raters
  python -m rater upgrade-db --db ratings.db    # a database of the first rater (schema 1)
"""
PASSTHROUGH = {"analyze": "analyze", "plan": "plan", "links": "links"}   # command -> module
APP = Path(__file__).with_name("app.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rater", description=__doc__,
                                     epilog=EPILOG, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the Streamlit rating app", epilog=EPILOG,
                       description="Run the rating app: streamlit run rater/app.py -- ...",
                       formatter_class=HelpFormatter)
    p.add_argument("--tasks", default=None,
                   help="tasks.jsonl of python -m bench.drawbench pairs (default: the tasks "
                   "`make demo` wrote, runs/demo/tasks/tasks.jsonl)")
    p.add_argument("--db", default=None,
                   help="SQLite file or SQLAlchemy URL (default: $RATER_DB if set, else "
                        "ratings.db; a URL with a password is better given there)")
    p.add_argument("--port", type=int, default=8501, help="HTTP port")
    p.add_argument("--address", default=None, help="address to bind (Streamlit's default: all)")
    p.add_argument("--admin-token", default=None,
                   help="token of the admin page at ?admin=1 (default: $RATER_ADMIN_TOKEN; off if "
                        "neither is set). Prefer the variable: a flag is readable by every user "
                        "of the machine in the process list")
    add_session_args(p)
    sub.add_parser("analyze", help="statistics of the votes (python -m rater analyze --help)",
                   add_help=False)
    sub.add_parser("plan", help="prompts x raters a study needs (python -m rater plan --help)",
                   add_help=False)
    sub.add_parser("links", help="signed rater links (python -m rater links --help)",
                   add_help=False)
    u = sub.add_parser("upgrade-db", help="upgrade a database of an older schema version in place",
                       formatter_class=HelpFormatter)
    u.add_argument("--db", default=None, help="SQLite file or URL (default: $RATER_DB)")
    return parser


def streamlit_command(args) -> list[str]:
    """The `streamlit run` command line equivalent to `serve` args, without the secrets (the
    admin token and the database URL travel in `streamlit_env`)."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP),
           "--server.port", str(args.port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false",
           "--client.showErrorDetails", "false",   # no tracebacks (or paths) in raters' browsers
           "--client.toolbarMode", "minimal"]
    if args.address:
        cmd += ["--server.address", args.address]
    cmd += ["--", "--tasks", str(Path(args.tasks).resolve()), *session_flags(args)]
    return cmd


def streamlit_env(args, environ=os.environ) -> dict[str, str]:
    """The app's environment: `environ`, the repository on PYTHONPATH, and the database URL
    and admin token (if any) in their variables rather than on the visible command line."""
    env = dict(environ)
    root = str(APP.parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
    env[DB_ENV] = args.db
    env.pop(ADMIN_TOKEN_ENV, None)
    if args.admin_token:
        env[ADMIN_TOKEN_ENV] = args.admin_token
    return env


def serve(args) -> int:
    from .links import LinkError, check_secret
    from .store import SchemaVersionError, VoteStore
    from .tasks import TaskFileError, load_screens

    if args.tasks is None:
        from bench.plugins import data_defaults

        plugin = data_defaults()
        args.tasks = str(plugin.demo_layout()["tasks"]) if plugin and plugin.demo_layout else ""
        if not args.tasks or not Path(args.tasks).is_file():
            print(f"error: no --tasks given and no demo tasks in {args.tasks}: run `make demo` "
                  "first, or pass --tasks FILE", file=sys.stderr)
            return 2
    if args.admin_token:
        print(f"note: --admin-token can be read by every user of this machine in the process "
              f"list; set ${ADMIN_TOKEN_ENV} instead", file=sys.stderr)
    resolve_secrets(args)
    problem = check_session_args(args)
    if problem is None and args.require_signed_links:
        try:
            check_secret(os.environ.get(args.link_secret_env), args.link_secret_env)
        except LinkError as e:
            problem = f"--require-signed-links: {e}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        screens = load_screens(args.tasks)
    except TaskFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        VoteStore(args.db).close()
    except SchemaVersionError as e:
        print(f"error: --db {shown_db(args.db)}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bad URL, a missing driver, an unwritable folder
        reason = str(e).replace(args.db, shown_db(args.db))
        print(f"error: --db {shown_db(args.db)}: {type(e).__name__}: {reason}", file=sys.stderr)
        return 2
    n = sum(len(s.questions) for s in screens)
    print(f"{len(screens)} screens, {n} questions; votes go to {shown_db(args.db)}")
    if args.ratings_per_task:
        print(f"each screen goes to {args.ratings_per_task} raters"
              + (f", {args.tasks_per_rater} screens each" if args.tasks_per_rater else ""))
    print(f"raters: http://localhost:{args.port}/?rater=ID"
          + ("&sig=TOKEN (python -m rater links)" if args.require_signed_links else "")
          + (f"   admin: http://localhost:{args.port}/?admin=1" if args.admin_token else ""))
    try:
        return subprocess.call(streamlit_command(args), env=streamlit_env(args))
    except KeyboardInterrupt:
        return 0


def upgrade_db(args) -> int:
    from .store import SchemaVersionError, upgrade

    db = args.db or os.environ.get(DB_ENV)
    if not db or ("://" not in db and not Path(db).is_file()):
        print(f"error: --db {db}: no such database; pass the file or URL to upgrade",
              file=sys.stderr)
        return 2
    try:
        before, after = upgrade(db)
    except SchemaVersionError as e:
        print(f"error: --db {shown_db(db)}: {e}", file=sys.stderr)
        return 2
    print(f"{shown_db(db)}: schema version {before} -> {after}" if before != after
          else f"{shown_db(db)}: already schema version {after}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in PASSTHROUGH:
        import importlib

        module = importlib.import_module(f"rater.{PASSTHROUGH[argv[0]]}")  # only when asked for
        return module.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "upgrade-db":
        return upgrade_db(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
