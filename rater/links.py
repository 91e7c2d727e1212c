"""Signed rater links: `?rater=ID&sig=TOKEN`, TOKEN an HMAC-SHA256 of the id under a secret.

    RATER_LINK_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    python -m rater links --secret-env RATER_LINK_SECRET --n 50 --base-url https://rate.example.org/
    RATER_LINK_SECRET=... python -m rater serve --tasks tasks.jsonl --require-signed-links

With --require-signed-links the app accepts a rater id only with its token, so nobody can vote
under someone else's id by editing the link; a missing or forged token sees a refusal page. The
token is the first 128 bits of HMAC-SHA256(secret, "rater-link/1|" + id) in hex (RFC 2104),
compared in constant time.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import os
import re
import sys
import urllib.parse
from pathlib import Path

from bench.cli import HelpFormatter

SECRET_ENV = "RATER_LINK_SECRET"
SIG_PARAM = "sig"
MIN_SECRET = 16                         # characters
RATER_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_DOMAIN = b"rater-link/1|"

EPILOG = """examples:
  export RATER_LINK_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
  python -m rater links --n 50 --base-url https://rate.example.org/
  python -m rater links --secret-env MY_SECRET --ids raters.txt --base-url http://host:8501/ \\
      --out links.csv
"""


class LinkError(ValueError):
    """A secret or rater id that cannot be used; the message says what to do."""


def check_secret(secret: str | None, env: str = SECRET_ENV) -> bytes:
    """The secret as bytes; LinkError when it is missing or too short to be safe."""
    if not secret:
        raise LinkError(f"${env} is not set: set it to a long random string, e.g. "
                        "`export {0}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`"
                        .format(env))
    if len(secret) < MIN_SECRET:
        raise LinkError(f"${env} has {len(secret)} characters; use at least {MIN_SECRET} "
                        "random ones (secrets.token_urlsafe(32))")
    return secret.encode()


def sign(secret: bytes, rater_id: str) -> str:
    """The link token of a rater id: 32 hex digits."""
    return hmac.new(secret, _DOMAIN + rater_id.encode(), hashlib.sha256).hexdigest()[:32]


def verify(secret: bytes, rater_id: str, token: str | None) -> bool:
    """True iff `token` is the rater id's token under `secret` (constant-time compare)."""
    if not token or not rater_id:
        return False
    return hmac.compare_digest(sign(secret, rater_id).encode(), str(token).encode())


def link(base_url: str, secret: bytes, rater_id: str) -> str:
    """base_url with rater and sig added to its query (other parameters kept)."""
    if not RATER_ID.match(rater_id):
        raise LinkError(f"rater id {rater_id!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    parts = urllib.parse.urlsplit(base_url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k not in ("rater", SIG_PARAM)]
    query += [("rater", rater_id), (SIG_PARAM, sign(secret, rater_id))]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rater links", description=__doc__,
                                epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--secret-env", default=SECRET_ENV, metavar="NAME",
                   help="environment variable holding the secret (the app's --link-secret-env)")
    p.add_argument("--base-url", required=True, metavar="URL", help="the app's address")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--n", type=int, default=None, help="links for raters PREFIX001..PREFIXn")
    src.add_argument("--ids", metavar="FILE", help="links for the rater ids of FILE, one a line")
    p.add_argument("--prefix", default="rater-", help="rater id prefix of --n")
    p.add_argument("--start", type=int, default=1, help="first number of --n")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="also write rater_id,url as CSV (default: print the links only)")
    return p


def _ids(args) -> list[str]:
    if args.ids:
        path = Path(args.ids)
        if not path.is_file():
            raise LinkError(f"--ids {path}: no such file; give one rater id per line")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        n = 50 if args.n is None else args.n
        if n < 1 or args.start < 0:
            raise LinkError("--n must be >= 1 and --start >= 0")
        width = max(3, len(str(args.start + n - 1)))
        ids = [f"{args.prefix}{i:0{width}d}" for i in range(args.start, args.start + n)]
    if len(set(ids)) != len(ids):
        raise LinkError("rater ids repeat; each rater needs an id of their own")
    return ids


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parts = urllib.parse.urlsplit(args.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise LinkError(f"--base-url {args.base_url!r}: expected http(s)://HOST[:PORT]/PATH")
        secret = check_secret(os.environ.get(args.secret_env), args.secret_env)
        rows = [(rid, link(args.base_url, secret, rid)) for rid in _ids(args)]
    except LinkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for _, url in rows:
        print(url)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            csv.writer(f).writerows([("rater_id", "url"), *rows])
        print(f"{len(rows)} links: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
