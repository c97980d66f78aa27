"""enforcer.ttl_cache with a hand-moved clock: expiry, and what goes when it is full."""

from __future__ import annotations

from regate.enforcer.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_ttl():
    clock = Clock()
    cache = TtlCache(1.0, clock=clock)
    cache.put("k", "v")
    clock.now = 1.0
    assert cache.get("k") == "v"
    clock.now = 1.01
    assert cache.get("k") is None


def test_a_full_cache_drops_its_expired_entries_then_its_oldest_never_everything():
    # A flood of misses (random sk- keys, say) must not flush the entries still in use.
    clock = Clock()
    cache = TtlCache(10.0, maxsize=3, clock=clock)
    cache.put("old", 1)
    clock.now = 5
    cache.put("a", 2)
    cache.put("b", 3)
    clock.now = 11  # "old" has expired, "a" and "b" have not
    cache.put("c", 4)
    assert [cache.get(k) for k in ("old", "a", "b", "c")] == [None, 2, 3, 4]
    cache.put("d", 5)  # nothing expired: the oldest ("a") makes room
    assert [cache.get(k) for k in ("a", "b", "c", "d")] == [None, 3, 4, 5]
    assert len(cache) == 3


def test_expired_entries_are_dropped_before_the_cache_is_full():
    clock = Clock()
    cache = TtlCache(1.0, maxsize=1000, clock=clock)
    for i in range(100):
        cache.put(i, "x" * 1000)
    clock.now = 2
    cache.put("new", 1)
    assert len(cache) == 1


def test_putting_a_key_again_renews_it():
    clock = Clock()
    cache = TtlCache(10.0, maxsize=2, clock=clock)
    cache.put("a", 1)
    clock.now = 1
    cache.put("b", 2)
    cache.put("a", 3)  # now the newest
    cache.put("c", 4)  # makes room by dropping "b", the oldest
    assert [cache.get(k) for k in ("a", "b", "c")] == [3, None, 4]


def test_a_byte_budget_bounds_what_the_entries_weigh():
    clock = Clock()
    cache = TtlCache(10.0, maxsize=1000, clock=clock, max_bytes=100, size_of=lambda key, value: len(key))
    for key in ("a" * 40, "b" * 40, "c" * 40):
        cache.put(key, True)
    assert cache.get("a" * 40) is None and cache.get("b" * 40) and cache.get("c" * 40)
    assert cache.weight == 80
    cache.put("d" * 101, True)  # larger than the whole budget: not kept, nothing evicted for it
    assert cache.get("d" * 101) is None and cache.weight == 80


def test_drop_and_clear_keep_the_weight_right():
    cache = TtlCache(10.0, max_bytes=100, size_of=lambda key, value: len(key))
    cache.put("aaaa", 1)
    cache.put("bb", 2)
    cache.drop("aaaa")
    assert cache.weight == 2
    cache.clear()
    assert cache.weight == 0 and len(cache) == 0
