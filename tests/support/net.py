"""Loopback helpers: free ports and readiness polling; the stand-in server classes live in regate.devtools.stub_server."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request

from regate.devtools.stub_server import QuietHandler, ServerThread  # noqa: F401 - re-exported for the stand-ins


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, *, timeout: float = 30.0, ok=(200,)) -> None:
    """Poll `url` until it answers with a status in `ok`; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok:
                    return
                last = f"status {resp.status}"
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = f"status {e.code}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")
