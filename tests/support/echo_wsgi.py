"""A WSGI app for server tests: answers what it was given, served by regate's gunicorn worker.

`python -m tests.support.echo_wsgi PORT [KEEPALIVE]` runs it with `regate serve`'s gunicorn
options (limits, hardening) on 127.0.0.1:PORT.
"""

from __future__ import annotations

import gc
import json
import sys
import time

# Paths that answer otherwise than with the echo.
STREAM_CHUNKS = (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stream":  # no Content-Length: chunked, or close-delimited for HTTP/1.0
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return iter(STREAM_CHUNKS)
    if path == "/unread":  # answers without reading the body
        body = b'{"unread":true}'
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    if path == "/error":
        raise RuntimeError("boom")
    if path == "/short":  # announces more than it sends
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345"]
    if path == "/gc":  # what the worker froze before serving (http_server.Worker.load_wsgi)
        body = json.dumps({"frozen": gc.get_freeze_count()}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
    body = environ["wsgi.input"].read()
    doc = {
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ["RAW_URI"],
        "path_info": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "script_name": environ["SCRIPT_NAME"],
        "headers": {k: v for k, v in environ.items() if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")},
        "body": body.decode("latin-1"),
    }
    out = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def main() -> None:
    from regate.enforcer.serve import GunicornApp, gunicorn_options

    port, keepalive = int(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "5")
    options = gunicorn_options("127.0.0.1", port, 1)
    options["keepalive"] = int(keepalive)
    del options["worker_exit"], options["child_exit"]  # the enforcer's own hooks
    GunicornApp(lambda: app, options).run()


if __name__ == "__main__":
    main()
