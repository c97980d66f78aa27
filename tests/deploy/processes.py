"""Run the deployment files' own commands as local processes, and a stand-in bundle server."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.support.net import QuietHandler, ServerThread, wait_for_http


class Process:
    """A child process whose output is kept for failure messages; stopped with SIGTERM like `docker stop`."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 **popen):
        self.argv = argv
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.argv[:4]} exited with {self.proc.returncode}:\n{self.output}")
            try:
                wait_for_http(url, timeout=0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} not ready after {timeout}s:\n{self.output}") from None

    def stop(self, timeout: float = 45.0) -> int:
        """SIGTERM, then the exit status (SIGKILL to the whole group if it does not stop in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


BUNDLE_CONTENT_TYPE = "application/vnd.openpolicyagent.bundles"


class _BundleHandler(QuietHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        server = self.server
        server.requests.append((self.path, dict(self.headers)))
        if self.path != server.resource:
            self.send_bytes(404, b"{}")
            return
        if self.headers.get("If-None-Match") == server.etag:
            time.sleep(0.2)  # a real server would hold a long poll; do not let OPA spin
            self.send_response(304)
            self.send_header("ETag", server.etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_bytes(200, server.tarball, content_type=BUNDLE_CONTENT_TYPE, headers={"ETag": server.etag})


class StaticBundleServer:
    """Serves one bundle tarball at `resource` with an ETag, the way OPA's bundle API expects;
    records every request (path, headers). Independent of regate's own bundle service."""

    def __init__(self, tarball: bytes, resource: str = "/bundles/regate.tar.gz"):
        self._server = ServerThread(_BundleHandler, tarball=tarball, resource=resource,
                                    etag='"' + hashlib.sha256(tarball).hexdigest()[:32] + '"', requests=[])
        self.url = self._server.url

    @property
    def requests(self) -> list[tuple[str, dict]]:
        return list(self._server.httpd.requests)

    def __enter__(self) -> "StaticBundleServer":
        self._server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._server.close()
