"""The OPA binary and an `opa run --server` child process.

regate never ships OPA: `find_opa()` takes `REGATE_OPA_BIN`, else `opa` on PATH, and says
how to get it when there is none. `OpaProcess` is the one place that starts a local OPA
server and waits for it (the managed OPA of `regate serve`, the audit tools, the tests).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from .errors import RegateError

OPA_VERSION = "1.22.3"
HOW_TO_GET_OPA = (f"put OPA {OPA_VERSION} on PATH or set REGATE_OPA_BIN (build it: "
                  f"go install github.com/open-policy-agent/opa@v{OPA_VERSION}; in a checkout: scripts/ensure-opa)")


class OpaNotFoundError(RegateError):
    """Raised when no OPA binary is found at REGATE_OPA_BIN or on PATH."""

    code = "opa_not_found"
    status = 400  # a set-up the caller has to fix (the CLI exits 2), not a failure of regate


class OpaProcessError(RegateError):
    """Raised when a local OPA server exits or does not become ready."""

    code = "opa_failed"


def find_opa() -> str:
    """The OPA binary: $REGATE_OPA_BIN, else `opa` on PATH."""
    configured = os.environ.get("REGATE_OPA_BIN")
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise OpaNotFoundError(f"REGATE_OPA_BIN={configured} is not an executable file; {HOW_TO_GET_OPA}")
    found = shutil.which("opa")
    if found:
        return found
    raise OpaNotFoundError(f"OPA is not installed: {HOW_TO_GET_OPA}")


def free_port() -> int:
    """A free TCP port on loopback (free now; the caller binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OpaProcess:
    """`opa run --server` on 127.0.0.1:`port` with `args` (bundles, --set, --config-file, ...).

    With `capture_output`, OPA's stdout and stderr are read into `log_lines` as they come (its
    decision log would otherwise fill the pipe and stall it); else OPA writes to ours.
    """

    def __init__(self, args: Sequence[str] = (), *, port: int | None = None, opa_bin: str | None = None,
                 capture_output: bool = False, log_level: str = "error"):
        self.opa_bin = opa_bin or find_opa()
        self.args = list(args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.capture_output = capture_output
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        return [self.opa_bin, "run", "--server", "--addr", f"127.0.0.1:{self.port}", "--log-level", self.log_level,
                "--skip-version-check", *self.args]

    def start(self, *, wait_bundle: bool = True, timeout: float = 30.0) -> "OpaProcess":
        """Start OPA and return once it answers /health (with `wait_bundle`: once its bundles are active)."""
        pipe = subprocess.PIPE if self.capture_output else None
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=pipe,
                                     stderr=subprocess.STDOUT if self.capture_output else None, text=True)
        self.log_lines = []
        if self.capture_output:
            self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
            self._reader.start()
        health = f"{self.url}/health" + ("?bundles" if wait_bundle else "")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise OpaProcessError(f"OPA exited with status {self.proc.returncode}" + self._tail())
            try:
                with urllib.request.urlopen(health, timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise OpaProcessError(f"OPA did not become ready within {timeout:.0f}s" + self._tail())
            time.sleep(0.05)

    def _drain(self, stream) -> None:
        for line in stream:
            self.log_lines.append(line.rstrip("\n"))

    def _tail(self) -> str:
        output = self.output()
        return f": {output}" if output else ""

    def output(self) -> str:
        """What OPA printed (all of it once it has exited); empty without `capture_output`."""
        if self.proc is not None and self.proc.poll() is not None and self._reader is not None:
            self._reader.join(timeout=5)
        return "\n".join(self.log_lines)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> "OpaProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
