"""A real OPA server for tests: `opa run --server` on a free loopback port, loaded with a bundle."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request

from .net import free_port, wait_for_http


class OpaStartError(RuntimeError):
    """Raised when OPA exits or never becomes ready; the message is OPA's own output."""


class OpaServer:
    """Start/stop/restart a real OPA; query decisions and write runtime state through its REST API."""

    def __init__(self, opa_bin: str, *, bundle: str | None = None, config_file: str | None = None,
                 extra_args: tuple[str, ...] = (), port: int | None = None):
        self.opa_bin = opa_bin
        self.bundle = bundle
        self.config_file = config_file
        self.extra_args = extra_args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_lines: list[str] = []

    def start(self, *, wait_bundle: bool = True) -> "OpaServer":
        cmd = [self.opa_bin, "run", "--server", "--addr", f"127.0.0.1:{self.port}", "--log-level", "error",
               "--skip-version-check"]
        if self.config_file:
            cmd += ["--config-file", self.config_file]
        cmd += list(self.extra_args)
        if self.bundle:
            cmd += ["--bundle", self.bundle]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Drained as it comes: OPA's decision log (console) would otherwise fill the pipe and stall it.
        self.log_lines = []
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        health = f"{self.url}/health" + ("?bundles" if wait_bundle and (self.bundle or self.config_file) else "")
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise OpaStartError(self.output())
            try:
                wait_for_http(health, timeout=0.2)
                return self
            except TimeoutError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise OpaStartError(f"not ready after 30 s: {self.output()}") from None

    def _drain(self, stream) -> None:
        for line in stream:
            self.log_lines.append(line.rstrip("\n"))

    def output(self) -> str:
        """What OPA printed (all of it once it has exited)."""
        if self.proc and self.proc.poll() is not None:
            self._reader.join(timeout=5)
        return "\n".join(self.log_lines)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self._reader.join(timeout=5)
            self.proc.stdout.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "OpaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def request(self, method: str, path: str, body=None, timeout: float = 10):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def decide(self, input_doc: dict) -> dict | None:
        """The decision document, or None when OPA answers `undefined`."""
        status, body = self.request("POST", "/v1/data/regate/authz/decision", {"input": input_doc})
        assert status == 200, (status, body)
        return body.get("result")

    def put_state(self, state: dict) -> None:
        status, body = self.request("PUT", "/v1/data/regate_state", state)
        assert status == 204, (status, body)

    def wait(self, predicate, *, timeout: float = 10.0, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise TimeoutError("condition not met")
