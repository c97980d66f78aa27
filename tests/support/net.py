"""Loopback helpers: free ports, readiness polling, and a threaded HTTP stand-in server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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


class QuietHandler(BaseHTTPRequestHandler):
    """Base for stand-in handlers: HTTP/1.1 keep-alive, Nagle off, no stderr noise."""

    protocol_version = "HTTP/1.1"
    # Without this, headers and body go out in separate segments and some clients
    # stall 40 ms per response on delayed ACKs.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass

    def send_bytes(self, status: int, body: bytes, content_type: str = "application/json", headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class ServerThread:
    """Run a ThreadingHTTPServer on a free loopback port in a daemon thread."""

    def __init__(self, handler_cls, **attrs):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.daemon_threads = True
        for name, value in attrs.items():
            setattr(self.httpd, name, value)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
