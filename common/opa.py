"""The OPA binary and an `opa run --server` child process.

regate never ships OPA: `find_opa()` takes `REGATE_OPA_BIN`, else `opa` on PATH, and says
how to get it when there is none. `OpaProcess` is the one place that starts a local OPA
server and waits for it (the managed OPA of `regate serve`, the audit tools, the tests).
"""

from __future__ import annotations

import json
import os
import secrets
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
INSTANCE_LABEL = "regate_instance"  # labels.<this> tells the OPA regate started from any other server
PORT_ATTEMPTS = 3
HOW_TO_GET_OPA = (f"put OPA {OPA_VERSION} on PATH or set REGATE_OPA_BIN (build it: "
                  f"go install github.com/open-policy-agent/opa@v{OPA_VERSION}; in a checkout: scripts/ensure-opa)")


class OpaNotFoundError(RegateError):
    """Raised when no OPA binary is found at REGATE_OPA_BIN or on PATH."""

    code = "opa_not_found"
    status = 400  # a set-up the caller has to fix (the CLI exits 2), not a failure of regate


class OpaProcessError(RegateError):
    """Raised when a local OPA server exits or does not become ready."""

    code = "opa_failed"


class PortTaken(OpaProcessError):
    """Raised when another server answers on the port a local OPA was started on."""

    code = "opa_port_taken"


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
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.capture_output = capture_output
        self.log_level = log_level
        # A label only this process has (see _ready_server). OPA reads `--set` values as YAML: a hex
        # string of digits alone would be a number, which labels refuse (OPA exits).
        self.instance = "regate-" + secrets.token_hex(8)
        self.proc: subprocess.Popen | None = None
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [self.opa_bin, "run", "--server", "--addr", f"127.0.0.1:{self.port}", "--log-level", self.log_level,
                "--skip-version-check", "--set", f"labels.{INSTANCE_LABEL}={self.instance}", *self.args]

    def start(self, *, wait_bundle: bool = True, timeout: float = 30.0) -> "OpaProcess":
        """Start OPA and return once it answers /health (with `wait_bundle`: once its bundles are active).
        A port of our choosing that another server took before the first start is given up for a new one."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_once(wait_bundle, timeout)
                self.fixed_port = True  # a restart comes back where its clients look for it
                return self
            except PortTaken:
                if self.fixed_port or attempt == PORT_ATTEMPTS:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self, wait_bundle: bool, timeout: float) -> "OpaProcess":
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
            exited = self.proc.poll() is not None
            owner = self._ready_server(health)
            if owner == self.instance and not exited:
                return self
            if owner is not None and owner != self.instance:
                self.stop()
                raise PortTaken(f"another server answers on 127.0.0.1:{self.port}, not the OPA regate started")
            if exited:
                raise OpaProcessError(f"OPA exited with status {self.proc.returncode}" + self._tail())
            if time.monotonic() > deadline:
                self.stop()
                raise OpaProcessError(f"OPA did not become ready within {timeout:.0f}s" + self._tail())
            time.sleep(0.05)

    def _ready_server(self, health: str) -> str | None:
        """The instance label of the server that answers `health` on our port ("" for a server that is
        not one we started), None while nothing is ready. Another process may bind the port between
        free_port() and OPA's bind: ours then exits, and without this check its caller would query the
        other server (two audit OPAs started at once did exactly that)."""
        try:
            with urllib.request.urlopen(health, timeout=1) as resp:
                if resp.status != 200:
                    return None
        except (OSError, ValueError):
            return None
        try:
            with urllib.request.urlopen(f"{self.url}/v1/config", timeout=1) as resp:
                labels = json.load(resp).get("result", {}).get("labels", {})
        except urllib.error.HTTPError:
            return ""  # an answer, from a server that is no OPA of ours
        except (OSError, ValueError):
            return None
        return str(labels.get(INSTANCE_LABEL, "")) if isinstance(labels, dict) else ""

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
