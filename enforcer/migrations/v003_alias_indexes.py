"""Version 3: indexes on team and organization aliases, which JWT claims and the
x-litellm-team-id header resolve to ids on the request path.

Frozen once released; later changes go into new migrations.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

VERSION = 3
NAME = "alias indexes"


def apply(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE INDEX ix_teams_team_alias ON teams (team_alias)")
    conn.exec_driver_sql("CREATE INDEX ix_organizations_organization_alias ON organizations (organization_alias)")
