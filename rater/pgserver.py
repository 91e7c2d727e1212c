"""A throwaway PostgreSQL server in a temporary folder, for the tests and `python -m bench.perf votes`.

    with TempPostgres() as pg:          # initdb + pg_ctl start; stopped and deleted on exit
        store = VoteStore(pg.url("ratings"))

The server binaries are found on $RATER_PG_BIN, then under Debian's /usr/lib/postgresql/*/bin
(package postgresql-15), then on PATH. initdb refuses to run as root, so as root the server runs
as an unprivileged system user (postgres, else nobody) through runuser or setpriv, in a folder
it owns. It listens on a Unix socket only (no TCP port, so no clash with another server), with
fsync off: these databases hold test data and are deleted with the folder.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BIN_ENV = "RATER_PG_BIN"
TOOLS = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or no way to run them; the message says why."""


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    candidates = [os.environ.get(BIN_ENV, "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)  # newest first
    which = shutil.which("initdb")
    candidates.append(str(Path(which).parent) if which else "")
    for c in candidates:
        if c and all((Path(c) / t).is_file() for t in TOOLS):
            return Path(c)
    return None


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """(command prefix, user) to run the server binaries unprivileged; ([], None) if not root."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                    "--clear-groups", "--"], user
    raise PostgresUnavailable("running as root, and neither runuser nor setpriv, nor a "
                              "postgres or nobody user, is there to run initdb unprivileged")


def _socket_parent(user) -> str | None:
    """tempfile's folder, unless the server user cannot reach it or a socket path there would
    pass the Unix limit (107 bytes): then /tmp."""
    base = Path(tempfile.gettempdir()).resolve()
    if len(str(base)) > 60:
        return "/tmp"
    if user is not None:
        for folder in [base, *base.parents]:
            if not os.stat(folder).st_mode & 0o001:      # not searchable by others
                return "/tmp"
    return None


class TempPostgres:
    """A PostgreSQL server in a fresh temporary folder; start() / stop() or a `with` block."""

    def __init__(self, bindir: str | Path | None = None, port: int = 5432):
        found = Path(bindir) if bindir else find_bindir()
        if found is None:
            raise PostgresUnavailable(
                f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) under ${BIN_ENV}, "
                "/usr/lib/postgresql/*/bin or PATH; install Debian's postgresql-15")
        self.bindir = found
        self.port = port      # only names the socket file: the server listens on no TCP port
        self.root: Path | None = None
        self.user = "postgres"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        prefix, _ = _run_as()
        return [*prefix, str(self.bindir / tool), *args]

    def start(self) -> "TempPostgres":
        prefix, user = _run_as()
        # tempfile's folder, not pytest's tmp_path: the server user must reach the socket folder
        self.root = Path(tempfile.mkdtemp(prefix="rater-pg-", dir=_socket_parent(user)))
        if user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        data = self.root / "data"
        env = dict(os.environ, LC_ALL="C", LANG="C")
        try:
            subprocess.run(self._cmd("initdb", "-D", str(data), "-U", self.user, "-A", "trust",
                                     "-E", "UTF8", "--locale=C", "--no-sync"),
                           check=True, capture_output=True, text=True, env=env, cwd=self.root)
            opts = (f"-k {self.root} -c listen_addresses='' -p {self.port} -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            subprocess.run(self._cmd("pg_ctl", "-D", str(data), "-o", opts, "-l",
                                     str(self.root / "server.log"), "-w", "-t", "60", "start"),
                           check=True, capture_output=True, text=True, env=env, cwd=self.root)
        except subprocess.CalledProcessError as e:
            log = self.root / "server.log"
            detail = (e.stderr or e.stdout or "").strip()
            if log.is_file():
                detail += "\n" + log.read_text()[-2000:]
            self._remove()
            raise PostgresUnavailable(f"{Path(e.cmd[len(prefix)]).name} failed: {detail}") from e
        return self

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database on this server (created if missing)."""
        if database != "postgres":
            self.create_database(database)
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.root}&port={self.port}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host=str(self.root), port=self.port, user=self.user,
                             dbname="postgres", autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder."""
        if self.root is None:
            return
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(self._cmd("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "-t",
                                     "30", "stop"), capture_output=True, cwd=self.root)
        self._remove()

    def _remove(self) -> None:
        if self.root is not None:
            for _ in range(3):
                shutil.rmtree(self.root, ignore_errors=True)
                if not self.root.exists():
                    break
                time.sleep(0.2)
            self.root = None

    def __enter__(self) -> "TempPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
