"""The enforcer's state: users, teams, keys, blocks and spend, on SQLite or PostgreSQL.

One interface, two backends, SQLAlchemy Core. SQLite (a file, WAL mode) is the
zero-set-up default; PostgreSQL (`DATABASE_URL`, driver psycopg 3) lets several
replicas share state. Everything returns plain dicts; failures raise
`StoreError` (unreachable, failed), `NotFoundError` or `ConflictError`.

Money is integer nano-USD (1e-9 USD) end to end. Virtual keys are stored only as
the sha256 of the key: the plaintext exists once, in `create_key`'s return value.
No error message or log line carries the database password.

The store creates no OS threads: under gunicorn's gevent worker psycopg (>= 3.1.14)
and SQLAlchemy's pool cooperate with gevent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sqlite3
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError, StatementError

from regate.common.durations import Duration, parse_duration
from regate.common.errors import BadRequestError, ConflictError, RegateError, StoreError

from . import migrations
from .schema import (
    LIMIT_FIELDS,
    SPEND_COLUMNS,
    block_events,
    end_users,
    limits,
    organizations,
    spend_logs,
    spend_totals,
    teams,
    users,
    virtual_keys,
)
from .spend_record import SpendRecord

log = logging.getLogger(__name__)

KEY_PREFIX = "sk-"
KEY_RANDOM_BYTES = 32  # token_urlsafe(32) -> 43 urlsafe characters after the prefix
ENTITY_KINDS = ("user", "team", "organization", "end_user", "key")
GLOBAL = ("global", "")  # the whole-proxy total (and budget), kept beside the entity totals
# The spend log column that names each kind of principal (for re-adding a period's spend).
_LOG_COLUMN = {"user": "user_id", "team": "team_id", "organization": "organization_id",
               "end_user": "end_user_id", "key": "key_hash"}
_MAX_ID_LENGTH = 512
_MAX_KEY_LENGTH = 256  # longer "keys" are not ours: refuse before hashing attacker-sized input

# Fixed ids for PostgreSQL advisory locks (any bigint; these spell "regate" + purpose).
_MIGRATION_LOCK = 0x7265676174650001
_BLOCK_EVENT_LOCK = 0x7265676174650002
_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock


def hash_key(plaintext: str) -> str:
    """The stored form of a virtual key. Keys carry 256 random bits, so a fast hash suffices."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _check_id(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_LENGTH:
        raise BadRequestError(f"{name} must be a non-empty string of at most {_MAX_ID_LENGTH} characters")


def _check_models(models: Iterable[str]) -> list[str]:
    if isinstance(models, str):
        raise BadRequestError("models must be a list of model names, not a string")
    out = list(models)
    if not all(isinstance(m, str) and m for m in out):
        raise BadRequestError("models must be a list of non-empty strings")
    return out


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
        raise BadRequestError(f"{name} must be a timezone-aware datetime")


class _RetryableError(StoreError):
    """A transaction lost a deadlock or serialization race; running it again is safe."""


def _switch_to_wal(cursor, timeout: float) -> None:
    """PRAGMA journal_mode=WAL, retried: on a new file, processes switching it at once get
    "database is locked" at once (SQLite's busy timeout does not cover this pragma)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class Store:
    """Users, teams, keys, blocks and spend on SQLite or PostgreSQL. See module docstring."""

    def __init__(self, engine: Engine, *, secrets_to_hide: Sequence[str] = ()):
        self._engine = engine
        self._hide = [s for s in secrets_to_hide if s]
        self.display_url = engine.url.render_as_string(hide_password=True)
        self._add_totals_stmt: Any = None  # built on first use, for this engine's dialect

    # -- construction -----------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str | None,
        *,
        default_sqlite_path: str | os.PathLike[str],
        pool_size: int = 10,
        connect_timeout: int = 5,
        statement_timeout_ms: int = 15_000,
        sqlite_busy_timeout: float = 10.0,
    ) -> "Store":
        """A store for `url`: None/"" → SQLite at default_sqlite_path; postgresql:// → PostgreSQL."""
        if not url:
            return cls._sqlite(Path(default_sqlite_path), busy_timeout=sqlite_busy_timeout)
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            # The parser's message would repeat the URL, password included: say nothing of it.
            raise StoreError("DATABASE_URL is not a valid database URL", code="invalid_database_url") from None
        driver = parsed.drivername.lower()
        if driver in ("postgres", "postgresql", "postgresql+psycopg"):
            return cls._postgresql(
                parsed.set(drivername="postgresql+psycopg"),
                pool_size=pool_size,
                connect_timeout=connect_timeout,
                statement_timeout_ms=statement_timeout_ms,
            )
        if driver in ("sqlite", "sqlite+pysqlite"):
            if not parsed.database or parsed.database == ":memory:":
                raise StoreError("an SQLite DATABASE_URL must name a file: sqlite:///path/to/regate.db", code="invalid_database_url")
            return cls._sqlite(Path(parsed.database), busy_timeout=sqlite_busy_timeout)
        raise StoreError(
            f"unsupported DATABASE_URL scheme {driver!r}: use postgresql://... (psycopg 3) or sqlite:///path",
            code="invalid_database_url",
        )

    @classmethod
    def _sqlite(cls, path: Path, *, busy_timeout: float) -> "Store":
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # create it private: it holds key hashes and e-mail addresses
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        engine = sa.create_engine(
            sa.URL.create("sqlite+pysqlite", database=str(path)),
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Take transaction control from the sqlite3 module: it would otherwise begin
            # lazily before the first write, so reads of one transaction would not share a snapshot.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            _switch_to_wal(cur, busy_timeout)
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # Writers take the write lock up front (no lock upgrade deadlocks); readers share.
            conn.exec_driver_sql(conn.get_execution_options().get("regate_sqlite_begin", "BEGIN IMMEDIATE"))

        return cls(engine)

    @classmethod
    def _postgresql(cls, url: sa.URL, *, pool_size: int, connect_timeout: int, statement_timeout_ms: int) -> "Store":
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,  # reconnect transparently after a database restart
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=10,
            pool_recycle=1800,
            connect_args={
                "connect_timeout": max(int(connect_timeout), 2),
                "application_name": "regate",
                "options": f"-c statement_timeout={int(statement_timeout_ms)}",
            },
        )
        return cls(engine, secrets_to_hide=[url.password or ""])

    # -- plumbing -----------------------------------------------------------

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        return self._engine

    def _insert(self, table: sa.Table):
        return (pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert)(table)

    def _create(self, conn: Connection, table: sa.Table, values: dict, *, what: str, if_missing: bool = False) -> dict:
        """Insert a row new by its primary key. An existing row is a ConflictError ("<what> already
        exists"), or with `if_missing` the answer as it stands."""
        row = conn.execute(self._insert(table).values(**values).on_conflict_do_nothing().returning(*table.c)).first()
        if row is None:
            if not if_missing:
                raise ConflictError(f"{what} already exists")
            (key,) = table.primary_key.columns
            row = conn.execute(sa.select(table).where(key == values[key.name])).one()
        return dict(row._mapping)

    def _get(self, table: sa.Table, entity_id: str, action: str) -> dict | None:
        """The row whose (single-column) primary key is `entity_id`, or None."""
        (key,) = table.primary_key.columns
        with self._tx(action) as conn:
            row = conn.execute(sa.select(table).where(key == entity_id)).first()
            return dict(row._mapping) if row else None

    @contextmanager
    def _tx(self, action: str, *, write: bool = False, snapshot: bool = False) -> Iterator[Connection]:
        """One transaction; database failures become StoreError without SQL, parameters or password."""
        try:
            with self._engine.connect() as conn:
                if self.dialect == "sqlite":
                    conn = conn.execution_options(regate_sqlite_begin="BEGIN IMMEDIATE" if write else "BEGIN")
                elif snapshot:
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                with conn.begin():
                    yield conn
        except RegateError:
            raise
        except SQLAlchemyError as e:
            raise self._store_error(e, action) from None

    def _store_error(self, error: SQLAlchemyError, action: str) -> StoreError:
        # A StatementError's own str() includes the SQL and its parameters: describe its cause only.
        orig: BaseException = error
        if isinstance(error, StatementError) and error.orig is not None:
            orig = error.orig
        lines = str(orig).strip().splitlines()
        text = lines[0].strip() if lines else ""
        for secret in self._hide:
            text = text.replace(secret, "***")
        message = f"store {action} failed: {type(orig).__name__}" + (f": {text}" if text else "")
        if getattr(orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
            return _RetryableError(message)
        return StoreError(message)

    # -- lifecycle ------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Bring the schema to the newest version; return the versions applied now.

        Idempotent, and safe when several replicas start at once: the whole run holds
        a PostgreSQL advisory lock (SQLite: the database write lock).
        """
        with self._tx("migration", write=True) as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")  # waiting for another replica is fine
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            applied = migrations.apply_pending(conn)
        if applied:
            log.info("store %s migrated to schema version %d", self.display_url, applied[-1])
        return applied

    def schema_version(self) -> int:
        with self._tx("schema version read") as conn:
            return migrations.current_version(conn)

    def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        with self._tx("ping") as conn:
            conn.exec_driver_sql("SELECT 1")

    def close(self) -> None:
        self._engine.dispose()

    # -- users, organizations, end users, teams ---------------------------------

    def create_user(self, user_id: str, *, email: str | None = None, if_missing: bool = False,
                    limits: dict[str, Any] | None = None) -> dict:
        """Create a user (with its limits, atomically); with if_missing, return the existing record instead of a conflict."""
        _check_id("user_id", user_id)
        if email is not None and not isinstance(email, str):
            raise BadRequestError("email must be a string")
        with self._tx("user create", write=True) as conn:
            user = self._create(conn, users, dict(user_id=user_id, user_email=email, created_at=_now()),
                                what=f"user {user_id!r}", if_missing=if_missing)
            if limits:
                self.set_limits("user", user_id, limits, conn=conn)
            return user

    def update_user(self, user_id: str, *, email: str | None = None, limits: dict[str, Any] | None = None) -> dict | None:
        """Change an existing user's email and/or limits; None when there is no such user."""
        _check_id("user_id", user_id)
        with self._tx("user update", write=True) as conn:
            query = sa.update(users).where(users.c.user_id == user_id)
            if email is not None:
                row = conn.execute(query.values(user_email=email).returning(*users.c)).first()
            else:
                row = conn.execute(sa.select(users).where(users.c.user_id == user_id)).first()
            if row is None:
                return None
            if limits:
                self.set_limits("user", user_id, limits, conn=conn)
            return dict(row._mapping)

    def get_user(self, user_id: str) -> dict | None:
        return self._get(users, user_id, "user read")

    def user_exists(self, user_id: str) -> bool:
        with self._tx("user read") as conn:
            return conn.execute(sa.select(users.c.user_id).where(users.c.user_id == user_id)).first() is not None

    def create_organization(self, organization_id: str, *, alias: str | None = None, models: Iterable[str] = ()) -> dict:
        _check_id("organization_id", organization_id)
        values = dict(organization_id=organization_id, organization_alias=alias, models=_check_models(models), created_at=_now())
        with self._tx("organization create", write=True) as conn:
            return self._create(conn, organizations, values, what=f"organization {organization_id!r}")

    def get_organization(self, organization_id: str) -> dict | None:
        return self._get(organizations, organization_id, "organization read")

    def create_end_user(self, end_user_id: str, *, alias: str | None = None, if_missing: bool = False,
                        limits: dict[str, Any] | None = None) -> dict:
        _check_id("end_user_id", end_user_id)
        with self._tx("end user create", write=True) as conn:
            end_user = self._create(conn, end_users, dict(end_user_id=end_user_id, alias=alias, created_at=_now()),
                                    what=f"end user {end_user_id!r}", if_missing=if_missing)
            if limits:
                self.set_limits("end_user", end_user_id, limits, conn=conn)
            return end_user

    def get_end_user(self, end_user_id: str) -> dict | None:
        return self._get(end_users, end_user_id, "end user read")

    def create_team(
        self, team_id: str, *, alias: str | None = None, organization_id: str | None = None, models: Iterable[str] = (),
        if_missing: bool = False, limits: dict[str, Any] | None = None,
    ) -> dict:
        _check_id("team_id", team_id)
        _check_id("organization_id", organization_id, optional=True)
        values = dict(
            team_id=team_id,
            team_alias=alias,
            organization_id=organization_id,
            models=_check_models(models),
            blocked=False,
            created_at=_now(),
        )
        with self._tx("team create", write=True) as conn:
            team = self._create(conn, teams, values, what=f"team {team_id!r}", if_missing=if_missing)
            if limits:
                self.set_limits("team", team_id, limits, conn=conn)
            return team

    def update_team(self, team_id: str, *, alias: str | None = None, organization_id: str | None = None,
                    models: Iterable[str] | None = None, limits: dict[str, Any] | None = None) -> dict | None:
        """Change the given fields of an existing team (None: unchanged); None when there is no such team."""
        _check_id("team_id", team_id)
        _check_id("team_alias", alias, optional=True)
        _check_id("organization_id", organization_id, optional=True)
        values = {"team_alias": alias, "organization_id": organization_id,
                  "models": None if models is None else _check_models(models)}
        values = {name: value for name, value in values.items() if value is not None}
        with self._tx("team update", write=True) as conn:
            if not values:
                row = conn.execute(sa.select(teams).where(teams.c.team_id == team_id)).first()
            else:
                row = conn.execute(
                    sa.update(teams).where(teams.c.team_id == team_id).values(**values).returning(*teams.c)).first()
            if row is not None and limits:
                self.set_limits("team", team_id, limits, conn=conn)
            return dict(row._mapping) if row else None

    def get_team(self, team_id: str) -> dict | None:
        return self._get(teams, team_id, "team read")

    def team_models(self, team_ids: Iterable[str]) -> dict[str, list[str]]:
        """{team id: models} for those of `team_ids` the store has, in one query."""
        ids = sorted(set(team_ids))
        if not ids:
            return {}
        with self._tx("team read") as conn:
            rows = conn.execute(sa.select(teams.c.team_id, teams.c.models).where(teams.c.team_id.in_(ids)))
            return {team_id: list(models or []) for team_id, models in rows}

    def team_ids_with_alias(self, alias: str, *, limit: int = 2) -> list[str]:
        """The ids of teams whose team_alias is `alias`, sorted; at most `limit` (two tell unique from ambiguous)."""
        return self._ids_with_alias(teams, teams.c.team_alias, alias, limit, "team alias read")

    def organization_ids_with_alias(self, alias: str, *, limit: int = 2) -> list[str]:
        return self._ids_with_alias(organizations, organizations.c.organization_alias, alias, limit,
                                    "organization alias read")

    def _ids_with_alias(self, table: sa.Table, column: sa.Column, alias: str, limit: int, action: str) -> list[str]:
        (key,) = table.primary_key.columns
        with self._tx(action) as conn:
            return list(conn.execute(sa.select(key).where(column == alias).order_by(key).limit(limit)).scalars())

    # -- blocks ---------------------------------------------------------------

    def set_team_blocked(self, team_id: str, blocked: bool) -> dict:
        """Block or unblock a team (creating its record if needed) and log the event, atomically."""
        _check_id("team_id", team_id)
        if not isinstance(blocked, bool):
            raise BadRequestError("blocked must be a boolean")
        now = _now()
        with self._tx("team block", write=True) as conn:
            if self.dialect == "postgresql":
                # Serialise event writers so seq order is commit order: a follower reading
                # "events after seq N" can then never miss one that commits late with a lower seq.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BLOCK_EVENT_LOCK})
            stmt = self._insert(teams).values(team_id=team_id, models=[], blocked=blocked, created_at=now)
            row = conn.execute(
                stmt.on_conflict_do_update(index_elements=[teams.c.team_id], set_={"blocked": blocked}).returning(*teams.c)
            ).one()
            conn.execute(sa.insert(block_events).values(team_id=team_id, blocked=blocked, at=now))
            return dict(row._mapping)

    def blocked_teams_snapshot(self) -> tuple[int, list[str]]:
        """(last block event seq, sorted blocked team ids), read from one snapshot."""
        with self._tx("blocked teams read", snapshot=True) as conn:
            seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(block_events.c.seq), 0))).scalar_one()
            ids = conn.execute(sa.select(teams.c.team_id).where(teams.c.blocked.is_(True)).order_by(teams.c.team_id)).scalars()
            return int(seq), list(ids)

    def block_events_since(self, seq: int, *, limit: int = 10_000) -> list[tuple[int, str, bool]]:
        """Block events with a seq greater than `seq`, oldest first."""
        with self._tx("block events read") as conn:
            rows = conn.execute(
                sa.select(block_events.c.seq, block_events.c.team_id, block_events.c.blocked)
                .where(block_events.c.seq > seq)
                .order_by(block_events.c.seq)
                .limit(limit)
            )
            return [(int(s), t, bool(b)) for s, t, b in rows]

    # -- virtual keys ---------------------------------------------------------

    def create_key(
        self,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        organization_id: str | None = None,
        alias: str | None = None,
        models: Iterable[str] = (),
        expires_at: datetime | None = None,
        create_user: bool = False,
        limits: dict[str, Any] | None = None,
    ) -> tuple[str, dict]:
        """Issue a key; return (plaintext, info). The plaintext is never stored and cannot be shown again.

        With create_user, a missing user_id record is created in the same transaction, so a
        refused key (alias taken) leaves no user behind.
        """
        if user_id is None and team_id is None:
            raise BadRequestError("a key must be issued to a user or a team (user_id or team_id)")
        for name, value in (("user_id", user_id), ("team_id", team_id), ("organization_id", organization_id), ("key_alias", alias)):
            _check_id(name, value, optional=True)
        _check_aware("expires_at", expires_at)
        plaintext = KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)
        values = dict(
            key_hash=hash_key(plaintext),
            key_name=f"{KEY_PREFIX}...{plaintext[-4:]}",
            key_alias=alias,
            user_id=user_id,
            team_id=team_id,
            organization_id=organization_id,
            models=_check_models(models),
            expires_at=expires_at,
            created_at=_now(),
        )
        with self._tx("key create", write=True) as conn:
            if create_user and user_id is not None:
                conn.execute(self._insert(users).values(user_id=user_id, user_email=None, created_at=_now())
                             .on_conflict_do_nothing())
            row = conn.execute(self._insert(virtual_keys).values(**values).on_conflict_do_nothing().returning(*virtual_keys.c)).first()
            if row is None:  # the hash cannot collide in practice: it is the alias
                raise ConflictError(f"a key with alias {alias!r} already exists")
            if limits:
                self.set_limits("key", values["key_hash"], limits, conn=conn)
        return plaintext, _key_info(row)

    def update_key(self, plaintext: str, *, limits: dict[str, Any]) -> dict | None:
        """Change an existing key's limits; answer its info, None when there is no such key."""
        if not isinstance(plaintext, str) or not plaintext or len(plaintext) > _MAX_KEY_LENGTH:
            return None
        digest = hash_key(plaintext)
        with self._tx("key update", write=True) as conn:
            row = conn.execute(sa.select(virtual_keys).where(virtual_keys.c.key_hash == digest)).first()
            if row is None:
                return None
            if limits:
                self.set_limits("key", digest, limits, conn=conn)
        return _key_info(row)

    def find_key(self, plaintext: str) -> dict | None:
        """The key's info by hash, or None. Includes expires_at and `expired`; the caller refuses expired keys."""
        if not isinstance(plaintext, str) or not plaintext or len(plaintext) > _MAX_KEY_LENGTH:
            return None
        with self._tx("key read") as conn:
            row = conn.execute(sa.select(virtual_keys).where(virtual_keys.c.key_hash == hash_key(plaintext))).first()
        return _key_info(row) if row else None

    def get_key_info(self, plaintext: str) -> dict | None:
        """Same as find_key: for /key/info."""
        return self.find_key(plaintext)

    def delete_keys(self, plaintexts: Iterable[str] = (), *, aliases: Iterable[str] = ()) -> int:
        """Delete keys given by plaintext and/or alias; return how many were deleted."""
        hashes = [hash_key(k) for k in plaintexts if isinstance(k, str) and k and len(k) <= _MAX_KEY_LENGTH]
        alias_list = [a for a in aliases if isinstance(a, str) and a]
        if not hashes and not alias_list:
            return 0
        with self._tx("key delete", write=True) as conn:
            deleted = conn.execute(
                sa.delete(virtual_keys).where(
                    sa.or_(virtual_keys.c.key_hash.in_(hashes), virtual_keys.c.key_alias.in_(alias_list))
                ).returning(virtual_keys.c.key_hash)
            ).scalars().all()
            if deleted:
                conn.execute(sa.delete(limits).where((limits.c.entity_kind == "key") & limits.c.entity_id.in_(deleted)))
            return len(deleted)

    # -- spend ----------------------------------------------------------------

    def record_spend(self, records: Sequence[SpendRecord]) -> int:
        """Log records and add them to their totals in ONE transaction; return how many were new.

        Idempotent by request_id: a record already logged adds nothing anywhere, so a
        batch can be replayed (from a retry or the spool) without double counting.
        Rows are written in sorted order, so concurrent writers cannot deadlock each other.
        """
        unique: dict[str, SpendRecord] = {}
        for record in records:
            if not isinstance(record, SpendRecord):
                raise BadRequestError("record_spend takes SpendRecord values")
            unique.setdefault(record.request_id, record)
        if not unique:
            return 0
        rows = [{c: getattr(unique[rid], c) for c in SPEND_COLUMNS} for rid in sorted(unique)]
        for attempt in range(1, 4):
            try:
                return self._record_spend_once(rows, unique)
            except _RetryableError:
                if attempt == 3:
                    raise
                log.info("spend transaction lost a concurrency race; retrying (attempt %d)", attempt + 1)
        raise AssertionError("unreachable")

    def _record_spend_once(self, rows: list[dict], by_id: dict[str, SpendRecord]) -> int:
        with self._tx("spend write", write=True) as conn:
            stmt = self._insert(spend_logs).on_conflict_do_nothing(index_elements=[spend_logs.c.request_id])
            inserted = set(conn.execute(stmt.returning(spend_logs.c.request_id), rows).scalars())
            if not inserted:
                return 0
            touched: dict[tuple[str, str], list[SpendRecord]] = defaultdict(list)
            for rid in inserted:
                record = by_id[rid]
                for kind, entity_id in (
                    ("user", record.user_id),
                    ("team", record.team_id),
                    ("organization", record.organization_id),
                    ("end_user", record.end_user_id),
                    ("key", record.key_hash),
                ):
                    if entity_id is not None:
                        touched[(kind, entity_id)].append(record)
                touched[GLOBAL].append(record)
            # The global row last: every writer touches it, so hold its lock for the shortest time.
            order = sorted(k for k in touched if k != GLOBAL) + [GLOBAL]
            # Lock the totals rows first (sorted: no deadlocks between writers), then read the
            # budget durations: set_limits takes the same row lock before changing a duration, so
            # a batch is always split into periods by the duration its row was last accounted with.
            self._lock_totals(conn, order)
            durations = self._durations(conn, order)
            deltas = []
            for key in order:
                deltas.append((*key, *_period_delta(touched[key], durations.get(key))))
            self._add_totals(conn, deltas)
            return len(inserted)

    def _lock_totals(self, conn: Connection, keys: list[tuple[str, str]]) -> None:
        stmt = self._insert(spend_totals).values(
            entity_kind=sa.bindparam("k"), entity_id=sa.bindparam("i"),
            spend_nanos=0, requests=0, period_start=0, period_spend_nanos=0,
        )
        stmt = stmt.on_conflict_do_update(  # a no-op update: it only takes the row lock
            index_elements=[spend_totals.c.entity_kind, spend_totals.c.entity_id],
            set_={"requests": spend_totals.c.requests},
        )
        conn.execute(stmt, [{"k": k, "i": i} for k, i in keys])

    def _durations(self, conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Duration]:
        ids = sorted({i for _, i in keys})
        rows = conn.execute(sa.select(limits.c.entity_kind, limits.c.entity_id, limits.c.budget_duration)
                            .where(limits.c.entity_id.in_(ids), limits.c.budget_duration.is_not(None)))
        wanted = set(keys)
        return {(k, i): parse_duration(d) for k, i, d in rows if (k, i) in wanted}

    def _add_totals(self, conn: Connection, deltas: list[tuple[str, str, int, int, int, int]]) -> None:
        """Add (kind, id, spend, requests, period_start, period_spend) to the totals.

        A delta of a later period than the row's starts the row's period afresh; one of the
        row's period adds to it; one of an earlier period (a late replay) only adds to the
        lifetime total. One statement, executed for many parameter sets: compiled once.
        """
        if self._add_totals_stmt is None:
            stmt = self._insert(spend_totals).values(
                entity_kind=sa.bindparam("k"), entity_id=sa.bindparam("i"),
                spend_nanos=sa.bindparam("n"), requests=sa.bindparam("r"),
                period_start=sa.bindparam("p"), period_spend_nanos=sa.bindparam("pn"),
            )
            new, old = stmt.excluded, spend_totals.c
            self._add_totals_stmt = stmt.on_conflict_do_update(
                index_elements=[spend_totals.c.entity_kind, spend_totals.c.entity_id],
                set_={
                    "spend_nanos": old.spend_nanos + new.spend_nanos,
                    "requests": old.requests + new.requests,
                    "period_spend_nanos": sa.case(
                        (new.period_start > old.period_start, new.period_spend_nanos),
                        (new.period_start == old.period_start, old.period_spend_nanos + new.period_spend_nanos),
                        else_=old.period_spend_nanos,
                    ),
                    "period_start": sa.case((new.period_start > old.period_start, new.period_start),
                                            else_=old.period_start),
                },
            )
        conn.execute(self._add_totals_stmt,
                     [{"k": k, "i": i, "n": n, "r": r, "p": p, "pn": pn} for k, i, n, r, p, pn in deltas])

    def spend_logs(
        self,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict]:
        """Spend log rows, oldest first; start inclusive, end exclusive."""
        _check_aware("start", start)
        _check_aware("end", end)
        if type(limit) is not int or not 1 <= limit <= 100_000:
            raise BadRequestError("limit must be an integer between 1 and 100000")
        query = sa.select(spend_logs)
        if user_id is not None:
            query = query.where(spend_logs.c.user_id == user_id)
        if team_id is not None:
            query = query.where(spend_logs.c.team_id == team_id)
        if start is not None:
            query = query.where(spend_logs.c.started_at >= start)
        if end is not None:
            query = query.where(spend_logs.c.started_at < end)
        query = query.order_by(spend_logs.c.started_at, spend_logs.c.request_id).limit(limit)
        with self._tx("spend log read") as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def spend_summary(self, kind: str, entity_id: str) -> dict:
        """{"spend_nanos": int, "requests": int} for one entity (zeros when it never spent)."""
        if kind not in ENTITY_KINDS:
            raise BadRequestError(f"unknown spend entity kind {kind!r}; expected one of {', '.join(ENTITY_KINDS)}")
        return self._summary(kind, entity_id)

    def total_spend(self, kind: str, entity_id: str) -> int:
        return self.spend_summary(kind, entity_id)["spend_nanos"]

    def global_spend(self) -> int:
        return self._summary(*GLOBAL)["spend_nanos"]

    def global_summary(self) -> dict:
        return self._summary(*GLOBAL)

    def _summary(self, kind: str, entity_id: str) -> dict:
        with self._tx("spend total read") as conn:
            row = conn.execute(
                sa.select(spend_totals.c.spend_nanos, spend_totals.c.requests).where(
                    spend_totals.c.entity_kind == kind, spend_totals.c.entity_id == entity_id
                )
            ).first()
        return {"spend_nanos": int(row[0]), "requests": int(row[1])} if row else {"spend_nanos": 0, "requests": 0}


    # -- budgets and rate limits ------------------------------------------------

    def set_limits(self, kind: str, entity_id: str, changes: dict[str, Any], *, conn: Connection | None = None) -> dict:
        """Set some of a principal's limit fields (None clears one); answer the whole row.

        When the budget duration changes, the current period's spend is re-added from the
        spend log under the new duration, in the same transaction, holding the totals row
        lock the spend writer takes: no batch can be counted under the old period meanwhile.
        """
        unknown = set(changes) - set(LIMIT_FIELDS)
        if unknown:
            raise BadRequestError(f"unknown limit fields {sorted(unknown)}")
        if conn is None:
            with self._tx("limits write", write=True) as own:
                return self.set_limits(kind, entity_id, changes, conn=own)
        self._lock_totals(conn, [(kind, entity_id)])
        key = (limits.c.entity_kind == kind) & (limits.c.entity_id == entity_id)
        before = conn.execute(sa.select(limits).where(key)).first()
        values = {name: (before._mapping[name] if before else None) for name in LIMIT_FIELDS}
        values.update(changes)
        row = dict(entity_kind=kind, entity_id=entity_id, updated_at=_now(), **values)
        stmt = self._insert(limits).values(**row)
        conn.execute(stmt.on_conflict_do_update(index_elements=[limits.c.entity_kind, limits.c.entity_id],
                                                set_={k: v for k, v in row.items() if k not in ("entity_kind", "entity_id")}))
        old_duration = before._mapping["budget_duration"] if before else None
        if values["budget_duration"] != old_duration:
            self._restart_period(conn, kind, entity_id, values["budget_duration"])
        return row

    def _restart_period(self, conn: Connection, kind: str, entity_id: str, duration: str | None) -> None:
        start = parse_duration(duration).period_start(time.time()) if duration else 0
        where = (spend_totals.c.entity_kind == kind) & (spend_totals.c.entity_id == entity_id)
        if start == 0:
            spent = sa.select(spend_totals.c.spend_nanos).where(where).scalar_subquery()
        else:
            logs = sa.select(sa.func.coalesce(sa.func.sum(spend_logs.c.spend_nanos), 0)).where(
                spend_logs.c.started_at >= datetime.fromtimestamp(start, timezone.utc))
            if kind in _LOG_COLUMN:
                logs = logs.where(spend_logs.c[_LOG_COLUMN[kind]] == entity_id)
            spent = logs.scalar_subquery()
        conn.execute(sa.update(spend_totals).where(where).values(period_start=start, period_spend_nanos=spent))

    def get_limits(self, kind: str, entity_id: str) -> dict | None:
        return self.budget_state([(kind, entity_id)]).get((kind, entity_id))

    def budget_state(self, principals: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """For each principal that has limits or spend: its limit fields (None when unset) and its
        totals: `spend_nanos` (lifetime), `period_start`, `period_spend_nanos` as last written."""
        wanted = set(principals)
        if not wanted:
            return {}
        ids = sorted({i for _, i in wanted})
        found: dict[tuple[str, str], dict] = {}
        with self._tx("limits read") as conn:
            for row in conn.execute(sa.select(limits).where(limits.c.entity_id.in_(ids))):
                key = (row.entity_kind, row.entity_id)
                if key in wanted:
                    found[key] = {name: row._mapping[name] for name in LIMIT_FIELDS}
            totals = sa.select(spend_totals.c.entity_kind, spend_totals.c.entity_id, spend_totals.c.spend_nanos,
                               spend_totals.c.period_start, spend_totals.c.period_spend_nanos)
            for kind, entity_id, spent, start, period_spent in conn.execute(totals.where(spend_totals.c.entity_id.in_(ids))):
                if (kind, entity_id) in wanted:
                    entry = found.setdefault((kind, entity_id), dict.fromkeys(LIMIT_FIELDS))
                    entry.update(spend_nanos=int(spent), period_start=int(start), period_spend_nanos=int(period_spent))
        for entry in found.values():
            entry.setdefault("spend_nanos", 0)
            entry.setdefault("period_start", 0)
            entry.setdefault("period_spend_nanos", 0)
        return found


def _period_delta(records: list[SpendRecord], duration: Duration | None) -> tuple[int, int, int, int]:
    """(spend, requests, period_start, spend in that period) of one principal's records in a batch:
    the period is the latest one among the records (by started_at); see Store._add_totals."""
    spend = sum(r.spend_nanos for r in records)
    if duration is None:
        return spend, len(records), 0, spend
    periods: dict[int, int] = defaultdict(int)
    for r in records:
        periods[duration.period_start(r.started_at.timestamp())] += r.spend_nanos
    latest = max(periods)
    return spend, len(records), latest, periods[latest]


def _key_info(row) -> dict:
    info = dict(row._mapping)
    expires_at = info.get("expires_at")
    info["expired"] = expires_at is not None and expires_at <= _now()
    return info
