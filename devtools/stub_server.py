"""Tiny threaded HTTP servers for regate's local stand-ins (dev identity provider, model stub).

Handlers speak HTTP/1.1 keep-alive with Nagle off: without that, headers and body go
out in separate segments and some clients stall 40 ms per response on delayed ACKs.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) overflows under benchmark bursts: connections reset, 502s.
    request_queue_size = 1024


class ServerThread:
    """Run a ThreadingHTTPServer on a free loopback port in a daemon thread."""

    def __init__(self, handler_cls, **attrs):
        self.httpd = _Server(("127.0.0.1", 0), handler_cls)
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
