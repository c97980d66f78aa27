"""Throwaway PostgreSQL clusters for tests: real server binaries, a temp dir, a free loopback port.

`PostgresCluster` runs initdb + pg_ctl (as the `postgres` user when we are root,
because PostgreSQL refuses to run as root), with password authentication on
127.0.0.1 and fsync off for speed, and deletes everything on exit.

Fixtures: `postgres_cluster` (one per session) and `postgres_url` (a fresh, empty
database per test, so tests are independent). Use them from a conftest with
`from tests.support.postgres import postgres_cluster, postgres_url  # noqa: F401`.
Missing server binaries FAIL the test with the command that installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.support.net import free_port

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
_SUPERUSER = "postgres"


def find_bindir() -> str:
    """The PostgreSQL server bin dir: $REGATE_PG_BINDIR, else the newest /usr/lib/postgresql/*/bin."""
    configured = os.environ.get("REGATE_PG_BINDIR")
    candidates = [configured] if configured else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0, reverse=True
    )
    for candidate in candidates:
        if candidate and all(os.access(os.path.join(candidate, b), os.X_OK) for b in SERVER_BINARIES):
            return candidate
    where = f"REGATE_PG_BINDIR={configured}" if configured else "/usr/lib/postgresql/*/bin"
    pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {where}: run scripts/ensure-postgres", pytrace=False)


class PostgresCluster:
    """One PostgreSQL server on a temp data dir; `with PostgresCluster() as pg: pg.create_database()`."""

    def __init__(self, bindir: str | None = None):
        self.bindir = bindir or find_bindir()
        self.password = secrets.token_urlsafe(18)
        self.port = 0
        self._root: Path | None = None
        self._running = False
        self._as_postgres = os.geteuid() == 0
        self._db_counter = 0

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> "PostgresCluster":
        try:
            self.init()
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    @property
    def data_dir(self) -> Path:
        assert self._root is not None
        return self._root / "data"

    @property
    def log_file(self) -> Path:
        assert self._root is not None
        return self._root / "server.log"

    def init(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="regate-pg-"))
        pwfile = self._root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_postgres:
            try:
                owner = pwd.getpwnam(_SUPERUSER)
            except KeyError:
                pytest.fail("running as root but there is no 'postgres' user to run the server: run scripts/ensure-postgres", pytrace=False)
            for path in (self._root, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", _SUPERUSER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )
        pwfile.unlink()

    def start(self, attempts: int = 3) -> None:
        """Start (or restart) the server; a restart keeps the port, so existing URLs stay valid."""
        for attempt in range(attempts):
            if not self.port or attempt > 0:
                self.port = free_port()
            options = " ".join([
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self._root}",
                "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                "-c max_connections=200", "-c shared_buffers=32MB",
            ])
            result = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "-t", "30", "start",
                check=False,
            )
            if result.returncode == 0:
                self._running = True
                return
        pytest.fail(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}\n{self._log_tail()}", pytrace=False)

    def stop(self, mode: str = "fast") -> None:
        if self._running:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop", check=False)
            self._running = False

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None

    # -- databases ------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its postgresql:// URL."""
        if name is None:
            self._db_counter += 1
            name = f"t{self._db_counter}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dump(self, dbname: str) -> str:
        """pg_dump of one database (schema and data), as text."""
        result = subprocess.run(
            [os.path.join(self.bindir, "pg_dump"), "--dbname", self.url(dbname)],
            capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {result.stderr}")
        return result.stdout

    # -- helpers -----------------------------------------------------------------

    def _run(self, binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [os.path.join(self.bindir, binary), *args]
        if self._as_postgres:
            command = ["runuser", "-u", _SUPERUSER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if check and result.returncode != 0:
            pytest.fail(f"{binary} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{self._log_tail()}", pytrace=False)
        return result

    def _log_tail(self) -> str:
        try:
            return "server log:\n" + "\n".join(self.log_file.read_text().splitlines()[-20:])
        except (OSError, AssertionError):
            return ""


def wait_until_accepting(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def postgres_cluster():
    """One throwaway PostgreSQL server for the whole session."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh empty database on the session cluster, as a postgresql:// URL with a password."""
    return postgres_cluster.create_database()
