"""The store's interface, run unchanged against SQLite and a real PostgreSQL."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from regate.common.errors import BadRequestError, ConflictError, StoreError
from regate.enforcer import migrations, schema
from regate.enforcer.store import ENTITY_KINDS, Store, hash_key
from tests.store.records import GPT4O_IN, GPT4O_OUT, T0, expected_nanos, make_record

# -- schema and migrations --------------------------------------------------------


def test_migrate_is_idempotent(store: Store):
    assert store.migrate() == []
    assert store.migrate() == []
    assert store.schema_version() == migrations.LATEST_VERSION
    with store.engine.connect() as conn:
        versions = conn.execute(sa.select(migrations.schema_version.c.version)).scalars().all()
    assert versions == [m.version for m in migrations.MIGRATIONS]


def test_fresh_database_reports_version_zero_then_migrates(open_store):
    s = open_store()
    assert s.schema_version() == 0
    assert s.migrate() == [m.version for m in migrations.MIGRATIONS]
    assert s.schema_version() == migrations.LATEST_VERSION


def test_migrated_schema_matches_the_query_tables(store: Store):
    """The frozen migrations and the store's query-side tables describe the same schema."""
    inspector = sa.inspect(store.engine)
    for table in schema.metadata.sorted_tables:
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert set(columns) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, f"{table.name}.{column.name}"
        assert inspector.get_pk_constraint(table.name)["constrained_columns"] == [c.name for c in table.primary_key.columns]


def test_v002_keeps_the_rows_of_a_version_1_database_as_reported_usage(open_store):
    from regate.enforcer.migrations import v001_initial

    s = open_store()
    with s.engine.begin() as conn:  # a database as regate 1 left it, with a spend row
        v001_initial.apply(conn)
        migrations.schema_version.create(conn)
        conn.execute(sa.insert(migrations.schema_version).values(version=1, name=v001_initial.NAME,
                                                                 applied_at=datetime(2025, 1, 1)))
        row = {c: v for c, v in make_record("old-row").__dict__.items() if c != "usage_estimated"}
        conn.execute(sa.insert(sa.table("spend_logs", *(sa.column(c) for c in row))).values(row))
    assert s.migrate() == [2, 3, 4]
    [logged] = s.spend_logs()
    assert logged["request_id"] == "old-row" and logged["usage_estimated"] is False
    s.record_spend([make_record("estimated-row", usage_estimated=True)])
    assert {r["request_id"]: r["usage_estimated"] for r in s.spend_logs()} == {"old-row": False,
                                                                                "estimated-row": True}


def test_a_newer_schema_is_refused(store: Store):
    with store.engine.begin() as conn:
        conn.execute(sa.insert(migrations.schema_version).values(version=999, name="from the future", applied_at=datetime(2030, 1, 1)))
    with pytest.raises(StoreError) as err:
        store.migrate()
    assert err.value.code == "schema_too_new"
    assert "999" in str(err.value)


def test_ping_and_dialect(store: Store, store_url):
    store.ping()
    assert store.dialect == ("sqlite" if store_url is None else "postgresql")


# -- users, teams, organizations, end users ----------------------------------------


def test_users(store: Store):
    created = store.create_user("u1", email="ada@example.com")
    assert created["user_id"] == "u1" and created["user_email"] == "ada@example.com"
    assert created["created_at"].tzinfo is not None
    assert store.get_user("u1") == created
    assert store.user_exists("u1") and not store.user_exists("u2")
    assert store.get_user("u2") is None
    with pytest.raises(ConflictError) as err:
        store.create_user("u1")
    assert err.value.status == 409
    # if_missing returns the existing record untouched (the upsert path).
    assert store.create_user("u1", email="other@example.com", if_missing=True) == created
    assert store.create_user("u2", if_missing=True)["user_email"] is None
    for bad in ("", None, "x" * 513, 7):
        with pytest.raises(BadRequestError):
            store.create_user(bad)


def test_teams(store: Store):
    team = store.create_team("t1", alias="Research", organization_id="o1", models=["gpt-4o", "gpt-4o-mini"])
    assert team["models"] == ["gpt-4o", "gpt-4o-mini"] and team["blocked"] is False
    assert store.get_team("t1") == team
    assert store.get_team("nope") is None
    with pytest.raises(ConflictError):
        store.create_team("t1")
    with pytest.raises(BadRequestError):
        store.create_team("t2", models="gpt-4o")


def test_team_update_changes_only_the_given_fields(store: Store):
    created = store.create_team("t1", alias="Research", organization_id="o1", models=["gpt-4o"])
    store.set_team_blocked("t1", True)
    updated = store.update_team("t1", models=["gpt-4o-mini"])
    assert updated == {**created, "models": ["gpt-4o-mini"], "blocked": True} == store.get_team("t1")
    assert store.update_team("t1", alias="R&D", organization_id="o2")["team_alias"] == "R&D"
    assert store.update_team("t1", models=[])["models"] == []  # no list: every model, as in LiteLLM
    assert store.update_team("t1") == store.get_team("t1")  # nothing given: nothing changes
    assert store.update_team("nope", models=["gpt-4o"]) is None and store.get_team("nope") is None
    for bad in ({"models": "gpt-4o"}, {"models": [""]}, {"alias": ""}, {"organization_id": 7}):
        with pytest.raises(BadRequestError):
            store.update_team("t1", **bad)
    assert store.get_team("t1")["team_alias"] == "R&D"


def test_organizations_and_end_users(store: Store):
    org = store.create_organization("o1", alias="Acme", models=["gpt-4o"])
    assert store.get_organization("o1") == org
    with pytest.raises(ConflictError):
        store.create_organization("o1")
    end_user = store.create_end_user("customer-7")
    assert store.get_end_user("customer-7") == end_user
    assert store.create_end_user("customer-7", if_missing=True) == end_user
    with pytest.raises(ConflictError):
        store.create_end_user("customer-7")
    assert store.get_organization("o2") is None and store.get_end_user("x") is None


# -- blocks -----------------------------------------------------------------------


def test_block_and_unblock_are_logged_and_snapshotted(store: Store):
    assert store.blocked_teams_snapshot() == (0, [])
    store.create_team("t1", alias="Research")
    blocked = store.set_team_blocked("t1", True)
    assert blocked["blocked"] is True and blocked["team_alias"] == "Research"
    # Blocking a team with no record (a JWT team from the IdP) creates the record.
    assert store.get_team("t2") is None
    assert store.set_team_blocked("t2", True)["blocked"] is True
    assert store.get_team("t2")["models"] == []

    seq, teams = store.blocked_teams_snapshot()
    assert teams == ["t1", "t2"]
    events = store.block_events_since(0)
    assert [(t, b) for _, t, b in events] == [("t1", True), ("t2", True)]
    assert events[-1][0] == seq and events[0][0] < events[1][0]

    store.set_team_blocked("t1", False)
    seq2, teams2 = store.blocked_teams_snapshot()
    assert teams2 == ["t2"] and seq2 > seq
    assert store.block_events_since(seq) == [(seq2, "t1", False)]
    assert store.block_events_since(seq2) == []
    assert store.get_team("t1")["blocked"] is False


def test_block_requires_a_bool(store: Store):
    with pytest.raises(BadRequestError):
        store.set_team_blocked("t1", "yes")


# -- virtual keys -------------------------------------------------------------------


def test_keys_are_random_and_found_by_hash(store: Store):
    plaintext, info = store.create_key(user_id="u1", team_id="t1", organization_id="o1", alias="ci", models=["gpt-4o"])
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{43}", plaintext)
    assert info["key_name"] == f"sk-...{plaintext[-4:]}"
    assert info["key_hash"] == hash_key(plaintext) and plaintext not in info.values()
    assert (info["user_id"], info["team_id"], info["organization_id"], info["models"]) == ("u1", "t1", "o1", ["gpt-4o"])
    assert info["expires_at"] is None and info["expired"] is False
    assert store.find_key(plaintext) == info
    assert store.get_key_info(plaintext) == info

    other, _ = store.create_key(team_id="t1")
    assert other != plaintext
    assert store.find_key(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert store.find_key("sk-" + "x" * 5000) is None
    assert store.find_key("") is None


def test_key_expiry_is_returned(store: Store):
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    key, info = store.create_key(user_id="u1", expires_at=soon)
    assert info["expires_at"] == soon and info["expired"] is False
    found = store.find_key(key)
    assert found["expires_at"] == soon and found["expires_at"].tzinfo is not None

    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    old, _ = store.create_key(user_id="u1", expires_at=past)
    assert store.find_key(old)["expired"] is True

    # Expiry in another zone is the same instant.
    cet = timezone(timedelta(hours=1))
    key3, _ = store.create_key(user_id="u1", expires_at=datetime(2031, 1, 1, 1, 0, tzinfo=cet))
    assert store.find_key(key3)["expires_at"] == datetime(2031, 1, 1, 0, 0, tzinfo=timezone.utc)

    with pytest.raises(BadRequestError):
        store.create_key(user_id="u1", expires_at=datetime(2031, 1, 1))  # naive


def test_key_conflicts_and_validation(store: Store):
    store.create_key(user_id="u1", alias="deploy")
    with pytest.raises(ConflictError):
        store.create_key(user_id="u2", alias="deploy")
    with pytest.raises(BadRequestError):
        store.create_key(organization_id="o1")  # issued to nobody


def test_delete_keys_by_plaintext_and_alias(store: Store):
    k1, _ = store.create_key(user_id="u1")
    k2, _ = store.create_key(user_id="u1", alias="old")
    k3, _ = store.create_key(user_id="u1")
    assert store.delete_keys([k1, "sk-not-a-key"]) == 1
    assert store.delete_keys(aliases=["old", "missing"]) == 1
    assert store.delete_keys([k1]) == 0
    assert store.find_key(k1) is None and store.find_key(k2) is None
    assert store.find_key(k3) is not None
    assert store.delete_keys() == 0


def test_only_the_key_hash_is_stored(store: Store, dump_database):
    plaintext, info = store.create_key(user_id="u1", alias="secret-test")
    store.record_spend([make_record("r-key", user_id="u1", key_hash=info["key_hash"])])
    dump = dump_database(store)
    assert "secret-test" in dump and info["key_hash"] in dump  # the dump really holds the key's row
    assert plaintext not in dump
    assert plaintext[3:] not in dump  # nor the random part alone
    assert plaintext[3:23] not in dump


# -- spend --------------------------------------------------------------------------


def _spend_batch():
    # (request_id, prompt, completion, identities)
    specs = [
        ("r1", 1000, 200, dict(user_id="u1", team_id="t1", organization_id="o1", key_hash="k1")),
        ("r2", 1, 1, dict(user_id="u1", team_id="t1", end_user_id="c9")),
        ("r3", 333, 77, dict(user_id="u2", team_id="t1")),
        ("r4", 7, 0, dict(team_id="t2", organization_id="o1")),
        ("r5", 0, 0, dict(user_id="u2")),
        ("r6", 123457, 98765, dict()),  # no identities: counts only in the global total
    ]
    return [make_record(rid, prompt_tokens=p, completion_tokens=c, offset_s=i, **ids) for i, (rid, p, c, ids) in enumerate(specs)], specs


def _expected_totals(specs):
    totals: dict[tuple[str, str], list] = {}
    for _, p, c, ids in specs:
        usd = GPT4O_IN * p + GPT4O_OUT * c  # exact Decimal, rounded once per request
        nanos = int((usd * Decimal(10**9)).to_integral_value())
        for kind, field in (("user", "user_id"), ("team", "team_id"), ("organization", "organization_id"), ("end_user", "end_user_id"), ("key", "key_hash")):
            if ids.get(field) is not None:
                entry = totals.setdefault((kind, ids[field]), [0, 0])
                entry[0] += nanos
                entry[1] += 1
    return totals


def test_record_spend_adds_exact_totals(store: Store):
    records, specs = _spend_batch()
    assert store.record_spend(records) == len(records)
    expected = _expected_totals(specs)
    assert expected[("team", "t1")][0] == expected_nanos(1000, 200) + expected_nanos(1, 1) + expected_nanos(333, 77)
    for (kind, entity_id), (nanos, requests) in expected.items():
        assert store.spend_summary(kind, entity_id) == {"spend_nanos": nanos, "requests": requests}, (kind, entity_id)
        assert store.total_spend(kind, entity_id) == nanos
    assert store.global_spend() == sum(r.spend_nanos for r in records)
    assert store.global_summary()["requests"] == len(records)
    # $2.5/M in + $10/M out: 1000 in + 200 out = 0.0025 + 0.002 USD, to the nano.
    assert store.total_spend("key", "k1") == 4_500_000
    assert store.total_spend("organization", "nobody") == 0
    for kind in ENTITY_KINDS:
        assert isinstance(store.total_spend(kind, "x"), int)
    with pytest.raises(BadRequestError):
        store.total_spend("global", "")


def test_record_spend_is_idempotent_by_request_id(store: Store):
    records, specs = _spend_batch()
    assert store.record_spend(records) == 6
    before = {k: store.spend_summary(*k) for k in _expected_totals(specs)}
    global_before = store.global_summary()
    assert store.record_spend(records) == 0  # a full replay adds nothing
    assert store.record_spend(list(reversed(records[:3]))) == 0
    assert {k: store.spend_summary(*k) for k in before} == before
    assert store.global_summary() == global_before

    # A batch mixing logged and new records adds only the new ones; duplicates inside it count once.
    fresh = make_record("r7", prompt_tokens=10, completion_tokens=10, user_id="u1", team_id="t1")
    assert store.record_spend([records[0], fresh, fresh, records[1]]) == 1
    assert store.spend_summary("team", "t1") == {
        "spend_nanos": before[("team", "t1")]["spend_nanos"] + fresh.spend_nanos,
        "requests": before[("team", "t1")]["requests"] + 1,
    }
    assert len(store.spend_logs(limit=100)) == 7
    assert store.record_spend([]) == 0


def test_record_spend_takes_large_exact_amounts(store: Store):
    big = 2**61 + 12345  # ~2.3 billion USD in nanos: still exact, far from float precision
    store.record_spend([make_record("b1", spend_nanos=big, team_id="t"), make_record("b2", spend_nanos=big + 1, team_id="t")])
    assert store.total_spend("team", "t") == 2 * big + 1
    assert store.spend_logs(team_id="t")[1]["spend_nanos"] == big + 1


def test_spend_logs_filters_and_order(store: Store):
    records, _ = _spend_batch()
    store.record_spend(list(reversed(records)))
    rows = store.spend_logs()
    assert [r["request_id"] for r in rows] == ["r1", "r2", "r3", "r4", "r5", "r6"]
    first = rows[0]
    assert first["started_at"] == T0 and first["started_at"].tzinfo is not None
    assert (first["prompt_tokens"], first["completion_tokens"], first["total_tokens"]) == (1000, 200, 1200)
    assert first["spend_nanos"] == records[0].spend_nanos and first["status"] == "success"
    assert (first["model"], first["route"], first["key_hash"]) == ("gpt-4o", "/v1/chat/completions", "k1")

    assert [r["request_id"] for r in store.spend_logs(user_id="u1")] == ["r1", "r2"]
    assert [r["request_id"] for r in store.spend_logs(team_id="t1", user_id="u2")] == ["r3"]
    window = store.spend_logs(start=T0 + timedelta(seconds=1), end=T0 + timedelta(seconds=3))
    assert [r["request_id"] for r in window] == ["r2", "r3"]  # start inclusive, end exclusive
    assert [r["request_id"] for r in store.spend_logs(limit=2)] == ["r1", "r2"]
    with pytest.raises(BadRequestError):
        store.spend_logs(limit=0)
    with pytest.raises(BadRequestError):
        store.spend_logs(start=datetime(2025, 1, 1))  # naive
