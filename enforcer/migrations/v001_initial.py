"""Version 1: the initial schema.

Frozen: these definitions describe the database as version 1 created it and must
never change. Later changes go into new, higher-numbered migrations; the store's
query-side tables (enforcer.store) describe the newest version.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

VERSION = 1
NAME = "initial schema"


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _tables() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "users",
        md,
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("user_email", sa.Text, nullable=True),
        _timestamp("created_at"),
    )
    sa.Table(
        "organizations",
        md,
        sa.Column("organization_id", sa.Text, primary_key=True),
        sa.Column("organization_alias", sa.Text, nullable=True),
        sa.Column("models", sa.JSON, nullable=False),
        _timestamp("created_at"),
    )
    sa.Table(
        "teams",
        md,
        sa.Column("team_id", sa.Text, primary_key=True),
        sa.Column("team_alias", sa.Text, nullable=True),
        sa.Column("organization_id", sa.Text, nullable=True),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("blocked", sa.Boolean, nullable=False),
        _timestamp("created_at"),
    )
    sa.Table(
        "end_users",
        md,
        sa.Column("end_user_id", sa.Text, primary_key=True),
        sa.Column("alias", sa.Text, nullable=True),
        _timestamp("created_at"),
    )
    sa.Table(
        "virtual_keys",
        md,
        sa.Column("key_hash", sa.Text, primary_key=True),  # sha256 hex of the key; never the key
        sa.Column("key_name", sa.Text, nullable=False),  # display form, sk-...AbCd
        sa.Column("key_alias", sa.Text, nullable=True, unique=True),
        sa.Column("user_id", sa.Text, nullable=True, index=True),
        sa.Column("team_id", sa.Text, nullable=True, index=True),
        sa.Column("organization_id", sa.Text, nullable=True),
        sa.Column("models", sa.JSON, nullable=False),
        _timestamp("expires_at", nullable=True),
        _timestamp("created_at"),
    )
    sa.Table(
        "spend_logs",
        md,
        sa.Column("request_id", sa.Text, primary_key=True),
        _timestamp("started_at"),
        _timestamp("ended_at"),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("route", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("spend_nanos", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.Text, nullable=True),
        sa.Column("team_id", sa.Text, nullable=True),
        sa.Column("organization_id", sa.Text, nullable=True),
        sa.Column("end_user_id", sa.Text, nullable=True),
        sa.Column("key_hash", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Index("ix_spend_logs_started_at", "started_at"),
        sa.Index("ix_spend_logs_user_started", "user_id", "started_at"),
        sa.Index("ix_spend_logs_team_started", "team_id", "started_at"),
    )
    sa.Table(
        "spend_totals",
        md,
        sa.Column("entity_kind", sa.Text, primary_key=True),
        sa.Column("entity_id", sa.Text, primary_key=True),
        sa.Column("spend_nanos", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
    )
    sa.Table(
        "block_events",
        md,
        # INTEGER PRIMARY KEY on SQLite (the rowid; AUTOINCREMENT never reuses a value), BIGSERIAL on PostgreSQL.
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("team_id", sa.Text, nullable=False),
        sa.Column("blocked", sa.Boolean, nullable=False),
        _timestamp("at"),
        sqlite_autoincrement=True,
    )
    return md


def apply(conn: Connection) -> None:
    _tables().create_all(conn, checkfirst=False)
