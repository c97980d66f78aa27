"""Everything the enforcer needs to start, resolved once from the config and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import quote

from regate.common import env
from regate.common.errors import RegateError
from regate.compiler.model import Config

from .jwks import IssuerSettings, JwtSettings


def _float(environ: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise RegateError(f"{name} must be a number, got {raw!r}", code="invalid_setting") from None
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise RegateError(f"{name} must be > 0{' or 0' if allow_zero else ''}, got {raw!r}", code="invalid_setting")
    return value


def redis_url(config: Config, environ: Mapping[str, str]) -> str | None:
    """REDIS_URL, else a URL from router_settings.redis_host/redis_port/redis_password (as LiteLLM reads them)."""
    if environ.get("REDIS_URL"):
        return environ["REDIS_URL"]
    budgets = config.budgets
    host = env.resolve(budgets.redis_host.value, "router_settings.redis_host", environ)
    if not host:
        return None
    port = env.resolve(str(budgets.redis_port.value), "router_settings.redis_port", environ) if budgets.redis_port.value else "6379"
    if not port.isdigit():
        raise RegateError(f"router_settings.redis_port must be a port number, got {port!r}", code="invalid_setting")
    password = env.resolve(budgets.redis_password.value, "router_settings.redis_password", environ)
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


@dataclass(frozen=True)
class Settings:
    """Resolved settings. `master_key` is the secret itself: never log or repr it."""

    config: Config
    opa_url: str
    database_url: str | None = None
    data_dir: Path = Path(".regate")
    jwt: JwtSettings | None = None
    master_key: str | None = field(default=None, repr=False)
    opa_timeout: float = 1.0  # seconds for one decision; slower means 503, never allow
    state_poll_interval: float = 0.5  # seconds between looks at the block log
    state_check_interval: float = 2.0  # seconds between checks that OPA still holds the state
    user_cache_ttl: float = 5.0
    key_cache_ttl: float = 2.0
    decision_cache_ttl: float = 0.5  # seconds a decision is reused for the same input; 0 = ask OPA every time
    max_body_bytes: int = 10 * 1024 * 1024
    max_management_body_bytes: int = 64 * 1024
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    budget_cache_ttl: float = 0.5  # seconds a principal's limits and period spend are reused

    @property
    def ratelimit_path(self) -> Path:
        return self.data_dir / "ratelimits.db"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "regate.db"

    @classmethod
    def from_config(cls, config: Config, *, opa_url: str, database_url: str | None = None,
                    environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        policy = config.policy
        issuers = tuple(
            IssuerSettings.of(i.issuer, audience=i.audience,
                              jwks_url=env.resolve(i.jwks_url, "litellm_jwtauth.issuers.jwks_url", environ) if i.jwks_url else None)
            for i in policy.issuers)
        jwt = JwtSettings.from_env(environ, public_key_ttl=policy.public_key_ttl.value,
                                   public_key_stale_ttl=policy.public_key_stale_ttl.value, issuers=issuers)
        values = dict(
            config=config,
            opa_url=opa_url.rstrip("/"),
            database_url=database_url or environ.get("DATABASE_URL") or None,
            data_dir=Path(environ.get("REGATE_DATA_DIR", ".regate")),
            jwt=jwt,
            master_key=env.resolve(config.master_key, "general_settings.master_key", environ),
            opa_timeout=_float(environ, "REGATE_OPA_TIMEOUT", 1.0),
            decision_cache_ttl=_float(environ, "REGATE_DECISION_CACHE_TTL", 0.5, allow_zero=True),
            environ=environ,
            redis_url=redis_url(config, environ),
        )
        values.update(overrides)
        settings = cls(**values)
        if settings.master_key is not None and not settings.master_key.startswith("sk-"):
            raise RegateError("general_settings.master_key must start with 'sk-'", code="invalid_master_key")
        return settings
