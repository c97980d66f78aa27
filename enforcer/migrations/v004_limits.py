"""Version 4: budgets and rate limits, and spend per budget period.

Frozen (see v001). Adds:
- `limits`: one row per principal that has a budget or rate limits (keys by key hash,
  teams, users, end users, and the whole proxy as ("global", "")), LiteLLM's fields.
- `spend_totals.period_start` / `period_spend_nanos`: the spend of the principal's
  current budget period (epoch second it began; 0 = no duration, the whole lifetime).
  Existing totals start as lifetime periods.
- indexes on spend_logs by key and by end user, for re-adding a period's spend when a
  budget's duration changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

VERSION = 4
NAME = "budgets and rate limits"


def _tables() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "limits",
        md,
        sa.Column("entity_kind", sa.Text, primary_key=True),  # key | team | user | end_user | global
        sa.Column("entity_id", sa.Text, primary_key=True),
        sa.Column("max_budget_nanos", sa.BigInteger, nullable=True),
        sa.Column("budget_duration", sa.Text, nullable=True),
        sa.Column("tpm_limit", sa.BigInteger, nullable=True),
        sa.Column("rpm_limit", sa.BigInteger, nullable=True),
        sa.Column("max_parallel_requests", sa.BigInteger, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    return md


def apply(conn: Connection) -> None:
    _tables().create_all(conn, checkfirst=False)
    conn.exec_driver_sql("ALTER TABLE spend_totals ADD COLUMN period_start BIGINT NOT NULL DEFAULT 0")
    conn.exec_driver_sql("ALTER TABLE spend_totals ADD COLUMN period_spend_nanos BIGINT NOT NULL DEFAULT 0")
    conn.exec_driver_sql("UPDATE spend_totals SET period_spend_nanos = spend_nanos")
    conn.exec_driver_sql("CREATE INDEX ix_spend_logs_key_started ON spend_logs (key_hash, started_at)")
    conn.exec_driver_sql("CREATE INDEX ix_spend_logs_end_user_started ON spend_logs (end_user_id, started_at)")
