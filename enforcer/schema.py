"""The store's tables as the newest schema version has them (SQLAlchemy Core), for queries.

The DDL that creates and changes them lives in enforcer/migrations (frozen per version);
these definitions must describe what the latest migration leaves behind.
"""

from __future__ import annotations

from datetime import timezone

import sqlalchemy as sa


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps naive UTC text)."""

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must be timezone-aware")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("user_id", sa.Text, primary_key=True),
    sa.Column("user_email", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("organization_id", sa.Text, primary_key=True),
    sa.Column("organization_alias", sa.Text),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_organizations_organization_alias", "organization_alias"),  # v003
)
teams = sa.Table(
    "teams",
    metadata,
    sa.Column("team_id", sa.Text, primary_key=True),
    sa.Column("team_alias", sa.Text),
    sa.Column("organization_id", sa.Text),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_teams_team_alias", "team_alias"),  # v003
)
end_users = sa.Table(
    "end_users",
    metadata,
    sa.Column("end_user_id", sa.Text, primary_key=True),
    sa.Column("alias", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
virtual_keys = sa.Table(
    "virtual_keys",
    metadata,
    sa.Column("key_hash", sa.Text, primary_key=True),
    sa.Column("key_name", sa.Text, nullable=False),
    sa.Column("key_alias", sa.Text, unique=True),
    sa.Column("user_id", sa.Text),
    sa.Column("team_id", sa.Text),
    sa.Column("organization_id", sa.Text),
    sa.Column("models", sa.JSON, nullable=False),
    sa.Column("expires_at", UTCDateTime()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)
spend_logs = sa.Table(
    "spend_logs",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("route", sa.Text, nullable=False),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("total_tokens", sa.BigInteger, nullable=False),
    sa.Column("spend_nanos", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.Text),
    sa.Column("team_id", sa.Text),
    sa.Column("organization_id", sa.Text),
    sa.Column("end_user_id", sa.Text),
    sa.Column("key_hash", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("usage_estimated", sa.Boolean, nullable=False),  # v002
)
spend_totals = sa.Table(
    "spend_totals",
    metadata,
    sa.Column("entity_kind", sa.Text, primary_key=True),
    sa.Column("entity_id", sa.Text, primary_key=True),
    sa.Column("spend_nanos", sa.BigInteger, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("period_start", sa.BigInteger, nullable=False),  # epoch second; 0 = lifetime (no duration)
    sa.Column("period_spend_nanos", sa.BigInteger, nullable=False),
)
limits = sa.Table(
    "limits",
    metadata,
    sa.Column("entity_kind", sa.Text, primary_key=True),
    sa.Column("entity_id", sa.Text, primary_key=True),
    sa.Column("max_budget_nanos", sa.BigInteger),
    sa.Column("budget_duration", sa.Text),
    sa.Column("tpm_limit", sa.BigInteger),
    sa.Column("rpm_limit", sa.BigInteger),
    sa.Column("max_parallel_requests", sa.BigInteger),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
block_events = sa.Table(
    "block_events",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("team_id", sa.Text, nullable=False),
    sa.Column("blocked", sa.Boolean, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)

SPEND_COLUMNS = tuple(c.name for c in spend_logs.columns)
LIMIT_FIELDS = ("max_budget_nanos", "budget_duration", "tpm_limit", "rpm_limit", "max_parallel_requests")
