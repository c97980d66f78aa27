"""Version 2: `spend_logs.usage_estimated`, true when the tokens of a row were estimated by regate
(a stream whose usage never came: the client left and the upstream did not send it in time, or the
upstream sends none) rather than reported by the upstream.

Frozen, like every migration: later changes go into new, higher-numbered ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

VERSION = 2
NAME = "spend_logs.usage_estimated"


def apply(conn: Connection) -> None:
    # Both databases add a NOT NULL column with a default without rewriting the rows they hold.
    conn.execute(sa.text("ALTER TABLE spend_logs ADD COLUMN usage_estimated BOOLEAN NOT NULL DEFAULT FALSE"))
