"""Spend under load across replicas: two enforcers (gunicorn, 2 workers each, own OPA sidecar)
on ONE PostgreSQL. Every total is exact to the nano-USD, every proxied request has exactly
one spend-log row, and a SIGTERM to one replica in the middle of the load loses none.

Expected costs come from examples/regate.yaml's model_info prices (read as exact decimal
strings) and the upstream stand-in's deterministic usage: prompt tokens = words of the
prompt, completion tokens = max_tokens.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal

import pytest
import sqlalchemy as sa
import urllib3
import yaml

from regate.enforcer import schema as tables
from tests.support.mock_openai import Behavior

from .conftest import EXAMPLE, chat_body, metric, open_store

NANOS_PER_USD = Decimal(10**9)


def _model_prices() -> dict[str, tuple[Decimal, Decimal]]:
    """model_name -> (input, output) USD per token, exactly as written in the YAML."""
    doc = yaml.load(EXAMPLE.read_text(), Loader=yaml.BaseLoader)  # every scalar stays a string
    return {m["model_name"]: (Decimal(m["model_info"]["input_cost_per_token"]),
                              Decimal(m["model_info"]["output_cost_per_token"]))
            for m in doc["model_list"]}


PRICES = _model_prices()
MODELS = ("gpt-4o-mini", "azure-gpt-4o")


@dataclass(frozen=True)
class Identity:
    team: str | None
    user: str
    org: str | None = None
    customer: str | None = None

    def token(self, idp) -> str:
        claims = {"sub": self.user, "email": f"{self.user}@example.com"}
        if self.team:
            claims["team_id"] = self.team
        if self.org:
            claims["org_id"] = self.org
        if self.customer:
            claims["customer_id"] = self.customer
        return idp.mint(claims, ttl=600)


def identities(tag: str) -> list[Identity]:
    """Team tokens (one user in two teams), an org and end users, and one internal_user (no team)."""
    return [
        Identity(f"{tag}-t1", f"{tag}-u1", org=f"{tag}-org1"),
        Identity(f"{tag}-t1", f"{tag}-u2", customer=f"{tag}-c1"),
        Identity(f"{tag}-t2", f"{tag}-u2", org=f"{tag}-org1", customer=f"{tag}-c2"),
        Identity(f"{tag}-t2", f"{tag}-u3"),
        Identity(f"{tag}-t3", f"{tag}-u4", customer=f"{tag}-c1"),
        Identity(None, f"{tag}-u5"),
    ]


@dataclass(frozen=True)
class Planned:
    """One request and what it must cost."""

    index: int
    identity: Identity
    model: str
    words: int
    max_tokens: int
    stream: bool

    @property
    def expected_nanos(self) -> int:
        price_in, price_out = PRICES[self.model]
        usd = price_in * self.words + price_out * self.max_tokens
        nanos = usd * NANOS_PER_USD
        assert nanos == nanos.to_integral_value(), "test prices must be whole nano-USD per token"
        return int(nanos)

    def body(self) -> dict:
        extra = {"max_tokens": self.max_tokens}
        if self.stream:
            extra["stream"] = True
        return chat_body(self.model, " ".join(f"w{k}" for k in range(self.words)), **extra)


def plan(count: int, people: list[Identity]) -> list[Planned]:
    return [Planned(i, people[i % len(people)], MODELS[(i // 3) % 2], 1 + (i * 7) % 11, 1 + (i * 5) % 17,
                    stream=i % 10 == 0)
            for i in range(count)]


@dataclass
class Outcome:
    planned: Planned
    replica: str
    status: int | None  # None: no HTTP answer (connection refused/reset)
    request_id: str | None
    finished_at: float
    error: object = None  # the body of a non-200 answer, or the transport error


def send(replica, planned: Planned, token: str) -> Outcome:
    try:
        status, body, headers = replica.client.post("/v1/chat/completions", planned.body(), token=token)
    except urllib3.exceptions.HTTPError as e:
        return Outcome(planned, replica.name, None, None, time.monotonic(), repr(e))
    if status == 200 and planned.stream:
        assert isinstance(body, str) and body.rstrip().endswith("data: [DONE]"), body
    return Outcome(planned, replica.name, status, headers.get("X-Request-ID"), time.monotonic(),
                   None if status == 200 else body)


def run_load(replicas, planned: list[Planned], idp, *, threads: int = 48, on_progress=None) -> list[Outcome]:
    tokens = {p.identity: p.identity.token(idp) for p in planned}
    done = [0]
    lock = threading.Lock()

    def task(p: Planned) -> Outcome:
        outcome = send(replicas[p.index % len(replicas)], p, tokens[p.identity])
        with lock:
            done[0] += 1
            count = done[0]
        if on_progress:
            on_progress(count)
        return outcome

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(task, planned))


def expected_totals(outcomes: list[Outcome]) -> dict[tuple[str, str], list[int]]:
    """(kind, id) -> [nanos, requests] over the requests that were answered 200."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for o in outcomes:
        if o.status != 200:
            continue
        p = o.planned
        for kind, entity in (("user", p.identity.user), ("team", p.identity.team),
                             ("organization", p.identity.org), ("end_user", p.identity.customer),
                             ("global", "")):
            if entity is not None:
                totals[(kind, entity)][0] += p.expected_nanos
                totals[(kind, entity)][1] += 1
    return totals


def spend_rows(database_url: str) -> dict[str, dict]:
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            return {r.request_id: dict(r._mapping) for r in conn.execute(sa.select(tables.spend_logs))}
    finally:
        store.close()


def wait_for_global_requests(replica, admin_token: str, count: int, timeout: float = 30.0) -> dict:
    """The spend writers flush in batches off the request path: wait until they have caught up."""
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = replica.client.get("/global/spend", token=admin_token)
        assert status == 200, body
        if body["requests"] >= count or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def assert_rows_match(rows: dict[str, dict], outcomes: list[Outcome]) -> None:
    """Exactly one spend-log row per 200, with the exact cost, tokens and attribution; no other rows."""
    ok = [o for o in outcomes if o.status == 200]
    ids = [o.request_id for o in ok]
    assert all(ids) and len(set(ids)) == len(ids), "every 200 carries its own X-Request-ID"
    assert set(rows) == set(ids), (f"{len(set(ids) - set(rows))} answered requests have no spend row; "
                                   f"{len(set(rows) - set(ids))} rows belong to no answered request")
    for o in ok:
        row, p = rows[o.request_id], o.planned
        assert (row["spend_nanos"], row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
            p.expected_nanos, p.words, p.max_tokens, p.words + p.max_tokens), (p, row)
        assert (row["user_id"], row["team_id"], row["organization_id"], row["end_user_id"]) == (
            p.identity.user, p.identity.team, p.identity.org, p.identity.customer), (p, row)
        assert (row["model"], row["status"]) == (p.model, "success"), (p, row)


def assert_totals(replica, admin_token: str, database_url: str, totals) -> None:
    """/user/info, /team/info and /global/spend (and the org/end-user totals in the store) are exact."""
    for (kind, entity), (nanos, requests) in totals.items():
        if kind == "user":
            status, body, _ = replica.client.get(f"/user/info?user_id={entity}", token=admin_token)
            assert status == 200, body
            info = body["user_info"]
        elif kind == "team":
            status, body, _ = replica.client.get(f"/team/info?team_id={entity}", token=admin_token)
            assert status == 200, body
            info = body["team_info"]
        elif kind == "global":
            status, info, _ = replica.client.get("/global/spend", token=admin_token)
            assert status == 200 and "max_budget" in info, info
        else:
            continue
        assert (info["spend_nanos"], info["requests"]) == (nanos, requests), (replica.name, kind, entity)
        # LiteLLM's `spend` is USD as a JSON number: the float nearest to the exact total.
        assert info["spend"] == float(Decimal(nanos) / NANOS_PER_USD), (kind, entity)
    store = open_store(database_url)
    try:
        for (kind, entity), (nanos, requests) in totals.items():
            if kind in ("organization", "end_user"):
                assert store.spend_summary(kind, entity) == {"spend_nanos": nanos, "requests": requests}, (kind, entity)
    finally:
        store.close()


def test_concurrent_load_on_two_replicas_is_counted_exactly(start_replicas, idp, upstream, admin_token,
                                                            pg_database):
    a, b = start_replicas(2, workers=2)
    planned = plan(2000, identities("load"))
    outcomes = run_load([a, b], planned, idp)

    statuses = defaultdict(int)
    for o in outcomes:
        statuses[o.status] += 1
    assert statuses == {200: 2000}, (dict(statuses), [o.error for o in outcomes if o.status != 200][:5])
    assert {o.replica for o in outcomes} == {"A", "B"}

    wait_for_global_requests(a, admin_token, 2000)
    rows = spend_rows(pg_database)
    assert len(rows) == 2000
    assert_rows_match(rows, outcomes)
    totals = expected_totals(outcomes)
    assert len([k for k in totals if k[0] == "team"]) == 3 and len([k for k in totals if k[0] == "user"]) == 5
    assert totals[("global", "")] == [sum(p.expected_nanos for p in planned), 2000]
    for replica in (a, b):
        assert_totals(replica, admin_token, pg_database, totals)
    # The writers' counts reach Prometheus (each worker hands its writer thread's counts over
    # within 0.1 s): every record written once, none spooled or dropped.
    deadline = time.monotonic() + 10
    while sum(written := [metric(r, "regate_spend_events_total", event="written") for r in (a, b)]) < 2000:
        assert time.monotonic() < deadline, written
        time.sleep(0.05)
    assert sum(written) == 2000 and all(written), written
    for event in ("queue_full", "spooled", "spool_errors"):
        assert metric(a, "regate_spend_events_total", event=event) == 0
        assert metric(b, "regate_spend_events_total", event=event) == 0
    assert metric(a, "regate_spend_queue_depth") == 0 and metric(b, "regate_spend_queue_depth") == 0


@pytest.fixture
def slow_upstream(upstream):
    """Every upstream answer takes a little while, so requests are surely in flight at the SIGTERM."""
    saved = upstream.default
    upstream.default = Behavior(headers_delay=0.03)
    yield upstream
    upstream.default = saved


def test_sigterm_during_load_loses_no_spend(start_replicas, idp, slow_upstream, admin_token, pg_database):
    a, b = start_replicas(2, workers=2)
    planned = plan(1200, identities("term"))
    signalled: dict[str, float] = {}

    def on_progress(count: int) -> None:
        if count == 300 and not signalled:
            signalled["at"] = time.monotonic()
            b.enforcer.signal(signal.SIGTERM)  # to the gunicorn master, as Kubernetes does

    outcomes = run_load([a, b], planned, idp, threads=48, on_progress=on_progress)
    # The whole output: a worker's boot traceback can be longer than any tail (a rare failure in CI).
    assert b.enforcer.wait(timeout=60) == 0, b.enforcer.output

    on_a = [o for o in outcomes if o.replica == "A"]
    on_b = [o for o in outcomes if o.replica == "B"]
    assert all(o.status == 200 for o in on_a), ({o.status for o in on_a}, a.enforcer.output)
    # Requests B refused while stopping failed without an answer; none got anything but 200 or nothing.
    assert {o.status for o in on_b} <= {200, None}, {o.status for o in on_b}
    b_ok_after = [o for o in on_b if o.status == 200 and o.finished_at > signalled["at"]]
    b_failed = [o for o in on_b if o.status is None]
    assert b_ok_after, "no request was in flight on B when it got SIGTERM"
    assert b_failed, "the load did not go on after B stopped"

    # B is gone: whatever it answered must already be in the database (flushed at exit).
    answered_by_b = {o.request_id for o in on_b if o.status == 200}
    rows = spend_rows(pg_database)
    assert answered_by_b <= set(rows), f"{len(answered_by_b - set(rows))} spend records of B were lost"

    ok = [o for o in outcomes if o.status == 200]
    wait_for_global_requests(a, admin_token, len(ok))
    rows = spend_rows(pg_database)
    assert len(rows) == len(ok)
    assert_rows_match(rows, outcomes)
    totals = expected_totals(outcomes)
    assert_totals(a, admin_token, pg_database, totals)

    b.client.close()
    b.enforcer.start()  # back after the deploy: same database, same totals
    assert_totals(b, admin_token, pg_database, totals)
