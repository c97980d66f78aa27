"""Ordered schema migrations, applied once each and recorded in `schema_version`.

The caller (Store.migrate) runs `apply_pending` inside one transaction that holds
the migration lock (an advisory lock on PostgreSQL, the write lock on SQLite), so
replicas starting at once apply each migration exactly once. Both databases have
transactional DDL: a failed migration leaves no half-applied schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from regate.common.errors import StoreError

from . import v001_initial, v002_usage_estimated, v003_alias_indexes, v004_limits


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


# Append only, in version order. Never edit a released migration: add a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(v001_initial.VERSION, v001_initial.NAME, v001_initial.apply),
    Migration(v002_usage_estimated.VERSION, v002_usage_estimated.NAME, v002_usage_estimated.apply),
    Migration(v003_alias_indexes.VERSION, v003_alias_indexes.NAME, v003_alias_indexes.apply),
    Migration(v004_limits.VERSION, v004_limits.NAME, v004_limits.apply),
)

LATEST_VERSION = MIGRATIONS[-1].version

schema_version = sa.Table(
    "schema_version",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


def apply_pending(conn: Connection) -> list[int]:
    """Apply the migrations this database lacks; return their versions (empty when up to date)."""
    schema_version.create(conn, checkfirst=True)
    applied = set(conn.execute(sa.select(schema_version.c.version)).scalars())
    newest = max(applied, default=0)
    if newest > LATEST_VERSION:
        raise StoreError(
            f"the database schema is at version {newest}, newer than this regate supports ({LATEST_VERSION}); "
            "upgrade regate",
            code="schema_too_new",
        )
    done = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        migration.apply(conn)
        now = datetime.now(timezone.utc)
        if conn.dialect.name == "sqlite":
            now = now.replace(tzinfo=None)
        conn.execute(sa.insert(schema_version).values(version=migration.version, name=migration.name, applied_at=now))
        done.append(migration.version)
    return done


def current_version(conn: Connection) -> int:
    """The highest applied version, 0 for an empty database."""
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
