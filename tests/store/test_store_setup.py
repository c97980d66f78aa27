"""Opening a store: URL handling, SQLite defaults, and errors that never show the password."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import traceback

import pytest

from regate.common.errors import StoreError
from regate.enforcer.store import Store
from tests.support.net import free_port
from tests.support.postgres import PostgresCluster

PASSWORD = "Pa55-w0rd-that-must-not-leak"


def _logged(error: BaseException) -> str:
    """What `log.exception` would print for this error, chained causes included."""
    return "".join(traceback.format_exception(error))


def test_sqlite_default_file_is_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "nested" / "dir" / "regate.db"
    store = Store.from_url(None, default_sqlite_path=str(path))
    try:
        store.migrate()
        assert store.dialect == "sqlite"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()


def test_sqlite_url_names_a_file(tmp_path):
    path = tmp_path / "explicit.db"
    store = Store.from_url(f"sqlite:///{path}", default_sqlite_path=str(tmp_path / "unused.db"))
    try:
        store.migrate()
        assert path.exists() and not (tmp_path / "unused.db").exists()
    finally:
        store.close()
    with pytest.raises(StoreError) as err:
        Store.from_url("sqlite://", default_sqlite_path=str(tmp_path / "x.db"))
    assert err.value.code == "invalid_database_url"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgresql_urls_are_normalised_to_psycopg3(postgres_cluster: PostgresCluster, scheme, tmp_path):
    url = postgres_cluster.create_database().replace("postgresql://", f"{scheme}://", 1)
    store = Store.from_url(url, default_sqlite_path=str(tmp_path / "unused.db"))
    try:
        assert store.engine.url.drivername == "postgresql+psycopg"
        store.migrate()
        store.ping()
        assert PASSWORD not in store.display_url and postgres_cluster.password not in store.display_url
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://root:{PASSWORD}@127.0.0.1/db",
        f"postgresql+psycopg2://root:{PASSWORD}@127.0.0.1/db",
        f"postgresql://root:{PASSWORD}@127.0.0.1:notaport/db",
        f"::{PASSWORD}",
    ],
)
def test_bad_urls_are_refused_without_the_password(url, tmp_path):
    with pytest.raises(StoreError) as err:
        Store.from_url(url, default_sqlite_path=str(tmp_path / "x.db"))
    assert err.value.code == "invalid_database_url"
    assert PASSWORD not in str(err.value) and PASSWORD not in _logged(err.value)


def test_unreachable_postgresql_raises_store_error_without_the_password(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://regate:{PASSWORD}@127.0.0.1:{free_port()}/regate"
    store = Store.from_url(url, default_sqlite_path=str(tmp_path / "x.db"), connect_timeout=2)
    try:
        for call in (store.ping, store.migrate, lambda: store.get_user("u1")):
            with pytest.raises(StoreError) as err:
                call()
            assert err.value.code == "store_unavailable" and err.value.status == 503
            assert "failed" in str(err.value)
            assert PASSWORD not in _logged(err.value)
    finally:
        store.close()
    assert PASSWORD not in caplog.text


def test_wrong_password_is_a_store_error_without_either_password(postgres_cluster: PostgresCluster, tmp_path):
    good = postgres_cluster.create_database()
    bad = good.replace(postgres_cluster.password, PASSWORD)
    store = Store.from_url(bad, default_sqlite_path=str(tmp_path / "x.db"))
    try:
        with pytest.raises(StoreError) as err:
            store.ping()
        message = str(err.value)
        assert "password authentication failed" in message
        assert PASSWORD not in _logged(err.value) and postgres_cluster.password not in _logged(err.value)
    finally:
        store.close()
