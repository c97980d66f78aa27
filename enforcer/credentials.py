"""Who is calling: read the bearer credential, verify it, and shape it as the OPA input's `credential`.

Order (DESIGN.md §3.1): the master key (constant-time compare), a virtual key
(`sk-...`, looked up by hash), a JWT (exactly three dot-separated parts, verified
against the JWKS). A credential that is present but not valid is a 401 here; a
missing one is sent to the policy as `none`, which decides the 401.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from regate.common.errors import TokenError
from regate.compiler.model import AuthPolicy, ClaimField

from .claims import claim_value, role_names, string_claim
from .store import Store, hash_key
from .team_facts import TeamFacts
from .tokens import TokenVerifier
from .ttl_cache import TtlCache

# Headers LiteLLM accepts a key in, in the order they are read.
CREDENTIAL_HEADERS = ("Authorization", "x-litellm-api-key", "api-key", "x-api-key")
MAX_CREDENTIAL_BYTES = 8192


@dataclass(frozen=True)
class Credential:
    type: str  # jwt | master_key | virtual_key | none
    claims: dict[str, Any] = field(default_factory=dict)
    key: dict[str, Any] | None = None  # the stored key's owner ids and models (never the key)
    key_hash: str | None = None
    issuer: str | None = None  # the issuers entry that verified a JWT; None: JWT_PUBLIC_KEY_URL

    def as_input(self) -> dict:
        doc: dict[str, Any] = {"type": self.type}
        if self.type == "jwt":
            doc["claims"] = self.claims
            doc["issuer"] = self.issuer
        if self.key is not None:
            doc["key"] = self.key
        return doc


NO_CREDENTIAL = Credential("none")


def read_bearer(headers: Mapping[str, str]) -> str | None:
    """The credential from the first header that carries one; `Bearer` is optional outside Authorization."""
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        value = value.strip()
        if name == "Authorization":
            scheme, _, rest = value.partition(" ")
            if scheme.lower() != "bearer":
                raise TokenError("Authorization must use the Bearer scheme", code="malformed_credential")
            value = rest.strip()
        elif value[:7].lower() == "bearer ":
            value = value[7:].strip()
        if not value:
            raise TokenError("empty credential", code="malformed_credential")
        return value
    return None


class Authenticator:
    def __init__(self, *, master_key: str | None, store: Store, verifier: TokenVerifier | None,
                 jwt_enabled: bool, key_cache_ttl: float = 2.0):
        self._master = master_key.encode() if master_key else None
        self._store = store
        self._verifier = verifier
        self._jwt_enabled = jwt_enabled
        self._keys = TtlCache(key_cache_ttl)

    def authenticate(self, headers: Mapping[str, str]) -> Credential:
        token = read_bearer(headers)
        if token is None:
            return NO_CREDENTIAL
        if len(token) > MAX_CREDENTIAL_BYTES:
            raise TokenError(f"credential larger than {MAX_CREDENTIAL_BYTES} bytes", code="token_too_large")
        raw = token.encode("utf-8", "surrogateescape")
        if self._master is not None and hmac.compare_digest(raw, self._master):
            return Credential("master_key")
        if token.startswith("sk-"):
            return self._virtual_key(token)
        if token.count(".") == 2:
            return self._jwt(token)
        raise TokenError("credential is neither a key nor a JWT", code="malformed_credential")

    def _virtual_key(self, token: str) -> Credential:
        digest = hash_key(token)
        record = self._keys.fetch(digest, lambda _: self._store.find_key(token))
        if record is None:
            raise TokenError("unknown or deleted key", code="invalid_key")
        if record["expires_at"] is not None and record["expires_at"].timestamp() <= time.time():
            raise TokenError("key has expired", code="expired_key")
        key = {
            "user_id": record["user_id"],
            "team_id": record["team_id"],
            "org_id": record["organization_id"],
            "models": list(record["models"] or []),
        }
        return Credential("virtual_key", key=key, key_hash=digest)

    def forget_key(self, token: str) -> None:
        self._keys.drop(hash_key(token))

    def _jwt(self, token: str) -> Credential:
        if not self._jwt_enabled:
            # Never verified, so no claims: the policy answers jwt_auth_disabled.
            return Credential("jwt")
        if self._verifier is None:
            raise TokenError("JWT auth is enabled but neither JWT_PUBLIC_KEY_URL nor litellm_jwtauth.issuers is set",
                             code="jwt_not_configured")
        claims, issuer = self._verifier.verify_issued(token)
        return Credential("jwt", claims=claims, issuer=issuer)


class Facts:
    """`facts` for the OPA input, from the store (cached briefly): whether the user the token
    names exists, and what the store knows about the teams the credential may run as."""

    def __init__(self, store: Store, policy: AuthPolicy, *, teams: TeamFacts, ttl: float = 5.0):
        self._store = store
        self._policy = policy
        self._checks_users = policy.checks_user_existence
        self._users = TtlCache(ttl)
        self.teams = teams

    def user_id(self, credential: Credential) -> str | None:
        """The user id the policy derives (identity.rego): the object id of a token whose roles map
        to internal_user only, else the user claim, else (as in LiteLLM) the email claim."""
        if credential.type != "jwt":
            return None
        claims, policy = credential.claims, self._policy
        if policy.object_id_field.value is not None:
            roles = role_names(claim_value(claims, _name(policy.roles_field.value)))
            if policy.mapped_roles(roles) == {"internal_user"} and (object_id := string_claim(
                    claims, policy.object_id_field.value.name)):
                return object_id
        names = (_name(policy.claim_field(f, credential.issuer)) for f in ("user_field", "email_field"))
        return next(filter(None, (string_claim(claims, name) for name in names)), None)

    def for_credential(self, credential: Credential, requested_team: str | None = None,
                       model: str | None = None) -> dict | None:
        facts: dict = {}
        user_id = self.user_id(credential) if self._checks_users else None
        if user_id is not None:
            exists = self._users.fetch(user_id, self._store.user_exists)
            facts.update(user_id=user_id, user_exists=exists)
        facts.update(self.teams.for_credential(credential, requested_team, model))
        return facts or None

    def created(self, user_id: str) -> None:
        self._users.put(user_id, True)

    def team_changed(self, team_id: str) -> None:
        self.teams.changed(team_id)


def _name(field: ClaimField | None) -> str | None:
    return field.name if field is not None else None
