"""Prometheus metrics. With several gunicorn workers, PROMETHEUS_MULTIPROC_DIR (set by
`regate serve`) makes /metrics aggregate every worker."""

from __future__ import annotations

import functools
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

DECISIONS = Counter("regate_decisions_total", "Authorization decisions by result and first reason.",
                    ["result", "reason"])
DECISION_SECONDS = Histogram("regate_decision_seconds", "Time to get a decision from OPA.",
                             buckets=_LATENCY_BUCKETS)
DECISION_CACHE = Counter("regate_decision_cache_total", "Decisions answered from the cache (hit) or by OPA (miss).",
                         ["result"])
UPSTREAM_SECONDS = Histogram("regate_upstream_seconds", "Time until the model upstream's response headers.",
                             ["model"], buckets=_LATENCY_BUCKETS)
REQUESTS = Counter("regate_requests_total", "Requests answered, by status code.", ["status"])
IN_FLIGHT = Gauge("regate_requests_in_flight", "Requests being handled.", multiprocess_mode="livesum")
SPEND_EVENTS = Counter("regate_spend_events_total",
                       "Spend-writer events: written, retries, spooled, queue_full, replayed, unpriced, estimated.",
                       ["event"])
SPEND_QUEUED = Gauge("regate_spend_queue_depth", "Spend records waiting to be written.", multiprocess_mode="livesum")
STATE_SYNCS = Counter("regate_state_syncs_total",
                      "Blocked-team state: pushes into OPA (push, event, full), and checks that OPA still holds it.",
                      ["kind", "result"])


@functools.cache
def labelled(metric, *values: str):
    """metric.labels(*values), looked up once: labels() checks the values and takes a lock on every call.
    For label values from a small set only (a status, a configured model), as every label here."""
    return metric.labels(*values)


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type, aggregated over workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
