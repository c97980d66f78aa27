"""The real enforcer for end-to-end tests: `regate serve` (gunicorn, gevent worker) as a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .net import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]


class EnforcerProcess:
    """`regate serve --config CONFIG` on a free loopback port; stdout/stderr captured in `.output`."""

    def __init__(self, config: str | Path, *, env: dict[str, str], opa_url: str | None = None,
                 data_dir: str | Path | None = None, database_url: str | None = None, workers: int = 1,
                 port: int | None = None):
        self.config = str(config)
        self.env = env
        self.opa_url = opa_url
        self.data_dir = str(data_dir or tempfile.mkdtemp(prefix="regate-e2e-"))
        self.database_url = database_url
        self.workers = workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def start(self, *, ready: bool = True, timeout: float = 60.0) -> "EnforcerProcess":
        cmd = [sys.executable, "-m", "regate.cli", "serve", "--config", self.config, "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers)]
        if self.opa_url:
            cmd += ["--opa-url", self.opa_url]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        env = {**os.environ, **self.env, "REGATE_DATA_DIR": self.data_dir, "PYTHONUNBUFFERED": "1"}
        env.pop("DATABASE_URL", None) if not self.database_url else None
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if ready:
            try:
                wait_for_http(f"{self.url}/health/readiness", timeout=timeout)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"enforcer not ready:\n{self.output}") from None
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self._lines.append(line)

    def signal(self, sig: int) -> None:
        assert self.proc
        os.killpg(self.proc.pid, sig) if sig != signal.SIGTERM else self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc
        code = self.proc.wait(timeout=timeout)
        if self._reader:
            self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._reader:
            self._reader.join(timeout=5)

    def __enter__(self) -> "EnforcerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        wait_for_http(f"{self.url}/health/readiness", timeout=max(0.1, deadline - time.monotonic()))
