"""Everything the enforcer needs to start, resolved once from the config and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

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
        )
        values.update(overrides)
        settings = cls(**values)
        if settings.master_key is not None and not settings.master_key.startswith("sk-"):
            raise RegateError("general_settings.master_key must start with 'sk-'", code="invalid_master_key")
        return settings
