"""Spend per budget period, on both backends: which period a record counts in, late replays,
changed durations, and limits written atomically with the principal they belong to."""

from __future__ import annotations

import time

import pytest

from regate.common.durations import parse_duration
from regate.common.errors import ConflictError
from regate.enforcer.store import GLOBAL, Store
from tests.store.records import T0, make_record

HOUR = 3600


def period(store: Store, kind: str, entity_id: str) -> tuple[int, int, int]:
    """(period_start, period_spend_nanos, lifetime spend_nanos) as written."""
    s = store.budget_state([(kind, entity_id)])[(kind, entity_id)]
    return s["period_start"], s["period_spend_nanos"], s["spend_nanos"]


# Periods follow the wall clock (a new duration starts the current period): records are placed
# relative to a period start the test reads when it runs.


def at(start: int, hours: float, rid: str, nanos: int, **who):
    return make_record(rid, spend_nanos=nanos, offset_s=start - T0.timestamp() + hours * HOUR, **who)


def test_spend_counts_in_the_period_of_its_start_and_late_records_only_in_the_lifetime(store: Store):
    store.set_limits("team", "t1", {"max_budget_nanos": 1000, "budget_duration": "1h"})
    hour0 = period(store, "team", "t1")[0]  # the current hour, as the store began it
    store.record_spend([at(hour0, 0.1, "a", 10, team_id="t1"), at(hour0, 0.5, "b", 20, team_id="t1")])
    assert period(store, "team", "t1") == (hour0, 30, 30)
    store.record_spend([at(hour0, 1.2, "c", 5, team_id="t1")])  # the next hour starts afresh
    assert period(store, "team", "t1") == (hour0 + HOUR, 5, 35)
    store.record_spend([at(hour0, 0.9, "d", 7, team_id="t1")])  # replayed late from the spool: lifetime only
    assert period(store, "team", "t1") == (hour0 + HOUR, 5, 42)
    # One batch spanning two periods: the later one is the row's period.
    store.record_spend([at(hour0, 2.5, "e", 1, team_id="t1"), at(hour0, 1.5, "f", 2, team_id="t1"),
                        at(hour0, 2.7, "g", 4, team_id="t1")])
    assert period(store, "team", "t1") == (hour0 + 2 * HOUR, 5, 49)
    store.record_spend([at(hour0, 2.5, "e", 1, team_id="t1")])  # idempotent by request id
    assert period(store, "team", "t1") == (hour0 + 2 * HOUR, 5, 49)


def test_principals_without_a_duration_count_their_whole_lifetime(store: Store):
    store.record_spend([at(0, 0, "a", 10, team_id="t2", user_id="u2"), at(0, 100, "b", 20, user_id="u2")])
    assert period(store, "user", "u2") == (0, 30, 30)
    assert period(store, *GLOBAL) == (0, 30, 30)


def test_a_new_duration_re_adds_the_current_periods_spend_from_the_log(store: Store):
    day = parse_duration("1d").period_start(time.time())
    store.record_spend([at(day, -30, "old", 100, key_hash="k1"),  # yesterday or before
                        at(day, 0.001, "today-1", 7, key_hash="k1"),
                        at(day, 0.002, "today-2", 3, key_hash="k1")])
    assert period(store, "key", "k1") == (0, 110, 110)
    store.set_limits("key", "k1", {"budget_duration": "1d"})
    assert period(store, "key", "k1") == (day, 10, 110)  # today's records, read back from the spend log
    store.set_limits("key", "k1", {"budget_duration": None})  # back to the lifetime
    assert period(store, "key", "k1") == (0, 110, 110)


def test_limits_are_written_with_their_principal_or_not_at_all(store: Store):
    store.create_team("t3", limits={"rpm_limit": 5, "max_budget_nanos": 10})
    with pytest.raises(ConflictError):
        store.create_team("t3", limits={"rpm_limit": 99})
    assert store.get_limits("team", "t3")["rpm_limit"] == 5
    plaintext, info = store.create_key(team_id="t3", limits={"tpm_limit": 7})
    assert store.get_limits("key", info["key_hash"])["tpm_limit"] == 7
    store.update_key(plaintext, limits={"tpm_limit": None, "max_parallel_requests": 2})
    limits = store.get_limits("key", info["key_hash"])
    assert (limits["tpm_limit"], limits["max_parallel_requests"]) == (None, 2)
    assert store.delete_keys([plaintext]) == 1
    assert (store.get_limits("key", info["key_hash"]) or {}).get("max_parallel_requests") is None  # gone with the key
    assert store.update_user("nobody", limits={"rpm_limit": 1}) is None
    assert store.get_limits("user", "nobody") is None
