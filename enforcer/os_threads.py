"""Real OS threads, locks and sleeps, also inside a gevent-patched worker.

Under gunicorn's gevent worker `threading`, `time.sleep` and the locks are cooperative
greenlet versions: work run that way shares the worker's event loop, and a long batch holds
every request up. Work that must not (the spend writer's store writes) runs in a real thread;
everything it shares with the request side is a real lock or a deque, never a gevent object.
"""

from __future__ import annotations

import importlib


def _original(module: str, name: str):
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency; plain Python works too
        monkey = None
    if monkey is not None and monkey.is_module_patched(module):
        return monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


def lock():
    """A real (non-cooperative) lock: hold it only for a few statements."""
    return _original("_thread", "allocate_lock")()


def sleep(seconds: float) -> None:
    """Sleep the calling OS thread (only ever call it from a real thread)."""
    _original("time", "sleep")(seconds)


class OsThread:
    """`target()` in a new OS thread; join() waits (blocking the caller) up to a timeout."""

    def __init__(self, target, name: str):
        self._target = target
        self.name = name
        self._done = lock()
        self._done.acquire()

    def start(self) -> "OsThread":
        _original("_thread", "start_new_thread")(self._run, ())
        return self

    def _run(self) -> None:
        try:
            self._target()
        finally:
            self._done.release()

    def join(self, timeout: float) -> bool:
        """True when the thread has finished within `timeout` seconds."""
        if self._done.acquire(True, max(timeout, 0.0)):
            self._done.release()
            return True
        return False

    def is_alive(self) -> bool:
        if self._done.acquire(False):
            self._done.release()
            return False
        return True
