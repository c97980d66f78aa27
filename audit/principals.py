"""Who may call: the principal classes a config names, each as a concrete credential.

One function per kind of principal, listed in PRINCIPAL_KINDS; each reads the compiled model
(compiler/model.py) and returns the principals it implies, so a new kind is one more function.
A principal is concrete — the claims an identity provider would issue under the config's claim
names, and what the store knows about it — so one principal can be judged under two configs
(`regate diff`): a token keeps its claims when the config changes. Its label is derived from
those claims, so two configs that agree on a principal name it alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

from regate.compiler.model import AuthPolicy, Config

TEAM = "team-a"
USER = "user-1"
DEFAULT_DOMAIN = "example.com"
OUTSIDE_DOMAIN = "outside.invalid"


def _store(user_exists: bool = True, teams: Iterable[str] = ()) -> dict:
    """What the store knows: whether the user exists, and the teams it has (no model limit)."""
    return {"user_exists": user_exists, "teams": {team: [] for team in teams}}


@dataclass(frozen=True)
class Principal:
    """A caller: its OPA `credential`, what the store knows (`store`: does its user exist, which
    models its team is limited to), and whether it exists only where the config has a master key."""

    label: str
    kind: str
    credential: dict
    store: dict = field(default_factory=_store)
    needs_master_key: bool = False

    @cached_property
    def key(self) -> str:
        """Identity across configs: the same credential and store facts are the same principal."""
        return json.dumps([self.credential, self.store, self.needs_master_key], sort_keys=True)

    def describe(self) -> str:
        """The credential in a line: claims for a JWT, owner ids for a virtual key."""
        if self.credential["type"] == "jwt":
            return "JWT claims " + json.dumps(self.credential.get("claims", {}), sort_keys=True)
        if self.credential["type"] == "virtual_key":
            return "virtual key " + json.dumps(self.credential["key"], sort_keys=True)
        return self.credential["type"].replace("_", " ")

    def as_json(self) -> dict:
        return {"label": self.label, "kind": self.kind, "credential": self.credential, "store": self.store,
                "needs_master_key": self.needs_master_key}


def _jwt(claims: dict) -> dict:
    return {"type": "jwt", "claims": claims}


def _email_domain(policy: AuthPolicy) -> str | None:
    """The domain of the email claim a well-formed token carries (None: the config reads no email)."""
    if policy.email_field.value is None:
        return None
    return policy.email_domains.value[0] if policy.email_domains.value else DEFAULT_DOMAIN


def _claims(policy: AuthPolicy, *, team: str | None = None, user: bool = True, domain: str | None = None) -> dict:
    """Claims under the config's claim names: a team id, the user id, an email in `domain`."""
    claims: dict = {}
    if team is not None:
        claims = policy.team_field.value.put(claims, team)
    if user and policy.user_field.value is not None:
        claims = policy.user_field.value.put(claims, USER)
    if domain is not None and policy.email_field.value is not None:
        claims = policy.email_field.value.put(claims, f"dev@{domain}")
    return claims


def _with_email(label: str, domain: str | None) -> str:
    return f"{label} (email @{domain})" if domain else label


def master_key(config: Config) -> list[Principal]:
    return [Principal("master key", "master_key", {"type": "master_key"}, needs_master_key=True)]


def admin_token(config: Config) -> list[Principal]:
    scope = config.policy.admin_scope.value
    return [Principal(f"admin token (scope {scope})", "admin_token", _jwt({"scope": f"openid {scope}"}))]


def team_tokens(config: Config, teams: Iterable[str] = ()) -> list[Principal]:
    """A team token, and one per team named (`--team`)."""
    policy = config.policy
    if policy.team_field.value is None:
        return []
    domain = _email_domain(policy)
    out = [Principal(_with_email("team token", domain), "team_token", _jwt(_claims(policy, team=TEAM, domain=domain)),
                     _store(teams=[TEAM]))]
    for team in teams:
        out.append(Principal(_with_email(f"team {team} token", domain), "team_token",
                             _jwt(_claims(policy, team=team, domain=domain)), _store(teams=[team])))
    return out


def internal_user_token(config: Config) -> list[Principal]:
    """A token with a user id (or, without user_id_jwt_field, an email) and no team."""
    policy = config.policy
    domain = _email_domain(policy)
    claims = _claims(policy, domain=domain)
    if not claims:
        return []
    return [Principal(_with_email("internal user token", domain), "internal_user_token", _jwt(claims))]


def email_domain_tokens(config: Config) -> list[Principal]:
    """A team token per allowed email domain, and one outside them."""
    policy = config.policy
    if not policy.email_domains.value or policy.team_field.value is None:
        return []
    out = [Principal(_with_email("team token", d), "email_domain", _jwt(_claims(policy, team=TEAM, domain=d)),
                     _store(teams=[TEAM])) for d in policy.email_domains.value]
    out.append(Principal("team token, email outside the allowed domains", "email_domain",
                         _jwt(_claims(policy, team=TEAM, domain=OUTSIDE_DOMAIN)), _store(teams=[TEAM])))
    return out


def unknown_user_token(config: Config) -> list[Principal]:
    """A team token whose user the store does not know, where the config checks users."""
    policy = config.policy
    if not policy.checks_user_existence or policy.team_field.value is None:
        return []
    domain = _email_domain(policy)
    return [Principal(_with_email("team token of a user not in the store", domain), "unknown_user",
                      _jwt(_claims(policy, team=TEAM, domain=domain)), store=_store(user_exists=False, teams=[TEAM]))]


def virtual_keys(config: Config) -> list[Principal]:
    """Keys from /key/generate: one issued to a team, one to a user without a team."""
    def key(**owner) -> dict:
        return {"type": "virtual_key", "key": {"user_id": None, "team_id": None, "org_id": None, "models": []} | owner}

    return [Principal("virtual key of a team", "virtual_key", key(team_id=TEAM), _store(teams=[TEAM])),
            Principal("virtual key of a user", "virtual_key", key(user_id=USER))]


def token_without_role(config: Config) -> list[Principal]:
    return [Principal("token without a role", "no_role", _jwt({"scope": "openid"}))]


def no_credential(config: Config) -> list[Principal]:
    return [Principal("no credential", "no_credential", {"type": "none"})]


# In matrix order. Kinds the LiteLLM-parity settings will add: one token per role mapping
# (roles_jwt_field + role_mappings), per scope mapping (scope_mappings, with model limits),
# per issuer (issuers[], under that issuer's claim names), a team token selecting a granted
# and a not-granted team with the x-litellm-team-id header, and team_id_default's team.
PRINCIPAL_KINDS: tuple[Callable[[Config], list[Principal]], ...] = (
    master_key,
    admin_token,
    team_tokens,
    internal_user_token,
    email_domain_tokens,
    unknown_user_token,
    virtual_keys,
    token_without_role,
    no_credential,
)


def principals(config: Config, teams: Iterable[str] = ()) -> list[Principal]:
    """Every principal class `config` names, in matrix order, each once."""
    found = []
    for kind in PRINCIPAL_KINDS:
        found += team_tokens(config, teams) if kind is team_tokens else kind(config)
    return merge(found)


def merge(*groups: Iterable[Principal]) -> list[Principal]:
    """The principals of several configs, each credential once (first label wins); labels that
    name different credentials are told apart by their credential."""
    by_key: dict[str, Principal] = {}
    for group in groups:
        for p in group:
            by_key.setdefault(p.key, p)
    found = list(by_key.values())
    labels: dict[str, int] = {}
    for p in found:
        labels[p.label] = labels.get(p.label, 0) + 1
    return [p if labels[p.label] == 1 else Principal(f"{p.label} [{p.describe()}]", p.kind, p.credential, p.store,
                                                     p.needs_master_key)
            for p in found]
