"""Fixtures every test layer shares. Required components are never skipped: a missing
OPA or PostgreSQL fails the run with the command that provides it."""

from __future__ import annotations

import subprocess

import pytest

from regate.common.opa import OPA_VERSION, OpaNotFoundError, find_opa


@pytest.fixture(scope="session")
def opa_bin() -> str:
    try:
        path = find_opa()
    except OpaNotFoundError as e:
        pytest.fail(f"{e.message} (scripts/test does it for you)", pytrace=False)
    out = subprocess.run([path, "version"], capture_output=True, text=True, check=True).stdout
    if f"Version: {OPA_VERSION}" not in out:
        pytest.fail(f"{path} is not OPA {OPA_VERSION}: {out.splitlines()[0]}", pytrace=False)
    return path


def pytest_collection_modifyitems(items):
    # Every test that starts PostgreSQL carries the `postgres` marker, so `-m "not postgres"`
    # gives a quick local run (CI runs everything).
    # Likewise `redis` for every test that starts Redis.
    for item in items:
        if "postgres_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
