"""A small per-worker TTL cache for the hot paths (keys, user facts, tokens, decisions)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable

_MISSING = object()


class TtlCache:
    """Thread-safe writes, lock-free reads; bounded by clearing when full (entries are cheap to refetch)."""

    def __init__(self, ttl: float, maxsize: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.maxsize, self.clock = ttl, maxsize, clock
        self._items: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, default=None):
        item = self._items.get(key)
        if item is None or item[0] < self.clock():
            return default
        return item[1]

    def fetch(self, key: Hashable, load: Callable[[Hashable], Any]) -> Any:
        """The cached value, else `load(key)`, cached (None too: a miss is worth remembering)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = load(key)
            self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if len(self._items) >= self.maxsize:
                self._items.clear()
            self._items[key] = (self.clock() + self.ttl, value)

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
