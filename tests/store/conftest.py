"""Fixtures for the state layer: the same store tests run on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest

from regate.enforcer.store import Store
from tests.support.postgres import PostgresCluster, postgres_cluster, postgres_url  # noqa: F401 - fixtures


def _open(url: str | None, tmp_path) -> Store:
    return Store.from_url(url, default_sqlite_path=str(tmp_path / "state" / "regate.db"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str | None:
    """A database URL for a fresh, empty database of each backend (None means the SQLite default)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def open_store(store_url, tmp_path):
    """Open more stores on the same fresh database (each with its own connection pool)."""
    opened = []

    def _factory() -> Store:
        store = _open(store_url, tmp_path)
        opened.append(store)
        return store

    yield _factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store) -> Store:
    """A migrated store on a fresh database, on each backend."""
    s = open_store()
    s.migrate()
    return s


@pytest.fixture
def dump_database(postgres_cluster: PostgresCluster, tmp_path):  # noqa: F811 - fixture from tests.support
    """Everything a store's database holds, as text: pg_dump, or SQLite's dump plus the raw file bytes."""

    def _dump(store: Store) -> str:
        if store.dialect == "postgresql":
            return postgres_cluster.dump(store.engine.url.database)
        path = store.engine.url.database
        with sqlite3.connect(path) as conn:
            text = "\n".join(conn.iterdump())
        raw = b""
        for suffix in ("", "-wal", "-shm"):
            try:
                with open(path + suffix, "rb") as f:
                    raw += f.read()
            except FileNotFoundError:
                pass
        return text + "\n" + raw.decode("latin-1")

    return _dump
