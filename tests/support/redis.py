"""A throwaway Redis server for tests: Debian's real `redis-server` on a free loopback port.

No persistence (`--save '' --appendonly no`), a temp working directory, run as the `redis`
user when we are root (as Debian runs it). `stop()` and `start()` keep the port, so clients
configured with the URL reconnect after an outage test restarts it.

Fixtures: `redis_server` (one per session) and `redis_url` (the session server, emptied for
each test). Import them from a conftest. A missing server binary FAILS the test with the
command that installs it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.net import free_port

_USER = "redis"


def find_server() -> str:
    """$REGATE_REDIS_SERVER (set by scripts/test), else redis-server on PATH."""
    configured = os.environ.get("REGATE_REDIS_SERVER")
    path = configured or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(path, os.X_OK):
        where = f"REGATE_REDIS_SERVER={configured}" if configured else "PATH"
        pytest.fail(f"redis-server not found in {where}: run scripts/ensure-redis", pytrace=False)
    return path


class RedisServer:
    def __init__(self, binary: str | None = None):
        self.binary = binary or find_server()
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="regate-redis-"))
        self._proc: subprocess.Popen | None = None
        self._as_user = os.geteuid() == 0
        if self._as_user:
            try:
                owner = pwd.getpwnam(_USER)
            except KeyError:
                pytest.fail("running as root but there is no 'redis' user to run the server: run scripts/ensure-redis",
                            pytrace=False)
            os.chown(self._dir, owner.pw_uid, owner.pw_gid)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> "RedisServer":
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(self._dir), "--daemonize", "no", "--logfile", ""]
        if self._as_user:
            command = ["runuser", "-u", _USER, "--", *command]
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                out = self._proc.stdout.read().decode(errors="replace") if self._proc.stdout else ""
                pytest.fail(f"redis-server exited with {self._proc.returncode}:\n{out[-2000:]}", pytrace=False)
            if self.command("PING") == "+PONG":
                return self
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not answer on port {self.port} within {timeout}s", pytrace=False)

    def command(self, *words: str) -> str | None:
        """One inline command; the first line of the reply, or None when nothing answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall((" ".join(words) + "\r\n").encode())
                return s.makefile("rb").readline().decode().strip()
        except OSError:
            return None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, running and empty."""
    if redis_server.command("PING") != "+PONG":
        redis_server.start()
    assert redis_server.command("FLUSHALL") == "+OK"
    return redis_server.url
