"""Pairwise human rating of text-to-image systems (Imagen paper §4.2, App. E).

    python -m rater serve --tasks tasks.jsonl --db ratings.db     # the Streamlit rating app
    python -m rater analyze --db ratings.db --out DIR             # preference rates, BT, alpha

store.py keeps the votes, tasks.py reads `python -m bench.drawbench pairs` task files,
controls.py makes the control trials, app.py is the Streamlit app.
"""
import os

# `python -m rater serve` hands the app its secrets in these environment variables, not on the
# command line, where any user of the machine can read them (ps, /proc/PID/cmdline). Users may
# set them too, instead of --admin-token / --db.
ADMIN_TOKEN_ENV = "RATER_ADMIN_TOKEN"
DB_ENV = "RATER_DB"


def resolve_secrets(args, environ=None) -> None:
    """Fill `args.db` and `args.admin_token` from the environment where the flags are absent
    (the database falls back to ratings.db; no token leaves the admin page off)."""
    environ = os.environ if environ is None else environ
    args.db = args.db or environ.get(DB_ENV) or "ratings.db"
    args.admin_token = args.admin_token or environ.get(ADMIN_TOKEN_ENV) or None


def shown_db(db: str) -> str:
    """The database as printed: a URL's password masked."""
    if "://" not in db:
        return db
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(db).render_as_string(hide_password=True)
    except ArgumentError:
        return db
