"""Streams whose client left before the end, read on in the background for their usage.

The upstream bills the whole call whether the client stayed or not, and the usage comes in the
stream's last chunk. So when a client leaves, regate keeps reading the upstream, discarding,
until the usage shows or the answer ends — for at most the model's stream wait (`stream_timeout`,
else `timeout`) and DRAIN_MAX_BYTES — off the client's request: its connection, access-log line
and in-flight count are done at once, while its rate-limit lease is renewed as the stream goes
on (it still counts against max_parallel_requests). Then the spend is recorded, with an
estimate if the usage never came (proxy.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from .upstreams import UpstreamCall

log = logging.getLogger("regate.proxy")

DRAIN_MAX_BYTES = 4 * 1024 * 1024  # about 20,000 streamed tokens of a chat completion


class StreamDrains:
    """The drains of one worker (threads; greenlets under gevent)."""

    def __init__(self, *, max_bytes: int = DRAIN_MAX_BYTES):
        self.max_bytes = max_bytes
        self._running: dict[threading.Thread, UpstreamCall] = {}
        self._lock = threading.Lock()

    def start(self, call: UpstreamCall, then: Callable[[], None], on_chunk: Callable[[], None] | None = None) -> None:
        """Drain `call` in the background (running `on_chunk` after each chunk), then run `then`
        (which records the spend)."""
        thread = threading.Thread(target=self._run, args=(call, then, on_chunk), name="regate-stream-drain",
                                  daemon=True)
        with self._lock:
            self._running[thread] = call
        thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Cut every drain short (each still records what it has) and wait for them."""
        with self._lock:
            running = dict(self._running)
        for call in running.values():
            call.close()
        for thread in running:
            thread.join(timeout)

    def _run(self, call: UpstreamCall, then: Callable[[], None], on_chunk: Callable[[], None] | None) -> None:
        try:
            call.drain(self.max_bytes, on_chunk)
            then()
        except Exception:  # a background thread has nobody to raise to
            log.exception("recording the spend of a stream its client left failed")
        finally:
            with self._lock:
                self._running.pop(threading.current_thread(), None)
