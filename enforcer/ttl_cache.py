"""A small per-worker TTL cache for the hot paths (keys, user facts, tokens, decisions)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable

_MISSING = object()


class TtlCache:
    """Thread-safe writes, lock-free reads. Bounded by `maxsize` entries and, with `size_of`,
    by `max_bytes` of what they weigh.

    Every entry lives `ttl` seconds and a put moves its key to the end, so the entries stand
    in expiry order: each put drops the expired ones at the front (their memory comes back
    at once, not when the cache fills), and a full cache makes room by dropping its oldest,
    never by clearing itself (a flood of misses must not flush the entries in use).
    """

    def __init__(self, ttl: float, maxsize: int = 10_000, clock: Callable[[], float] = time.monotonic, *,
                 max_bytes: int | None = None, size_of: Callable[[Hashable, Any], int] | None = None):
        self.ttl, self.maxsize, self.clock = ttl, maxsize, clock
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: dict[Hashable, tuple[float, Any, int]] = {}  # key -> (expiry, value, size)
        self.weight = 0  # the sizes of the entries, summed
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

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
        size = self._size_of(key, value) if self._size_of is not None else 0
        fits = self.max_bytes is None or size <= self.max_bytes
        now = self.clock()
        with self._lock:
            self._remove(key)
            items = self._items
            while items:
                oldest = next(iter(items))
                full = fits and (len(items) >= self.maxsize or (self.max_bytes is not None
                                                                and self.weight + size > self.max_bytes))
                if not (full or items[oldest][0] < now):
                    break
                self._remove(oldest)
            if fits:
                items[key] = (now + self.ttl, value, size)
                self.weight += size

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.weight = 0

    def _remove(self, key: Hashable) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.weight -= item[2]
