"""Who may call: the principal classes a config names, each as a concrete credential.

One function per kind of principal, listed in PRINCIPAL_KINDS; each reads the compiled model
(compiler/model.py) and returns the principals it implies, so a new kind is one more function.
A principal is concrete — the claims an identity provider would issue under the config's claim
names, the x-litellm-team-id header it sends, and what the store knows about it — so one
principal can be judged under two configs (`regate diff`): a token keeps its claims when the
config changes. Its label is derived from those claims, so two configs that agree on a
principal name it alike.

Tokens of the top-level claim fields are taken as verified by JWT_PUBLIC_KEY_URL; a token of an
`issuers` entry by that entry's keys, so under a config without the entry the enforcer refuses
it (401 unknown_issuer) before asking OPA.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property

from regate.common.money import usd_to_nanos
from regate.compiler.model import AuthPolicy, Config

TEAM = "team-a"
TEAM_B = "team-b"
OTHER_TEAM = "team-other"  # a team in the store that a token was not granted
USER = "user-1"
USER_OBJECT = "user-object-1"
END_USER = "end-user-1"  # the object id of a token whose role maps to internal_user
DEFAULT_DOMAIN = "example.com"
OUTSIDE_DOMAIN = "outside.invalid"
UNLISTED_ROLE = "regate-unlisted-role"


def _store(user_exists: bool = True, teams: dict | Iterable[str] = ()) -> dict:
    """What the store knows: whether the user exists, and the teams it has ({id: models}; [] limits
    nothing); budget principals add the spend it counted (`budgets`, input.facts.budgets)."""
    return {"user_exists": user_exists, "teams": teams if isinstance(teams, dict) else {t: [] for t in teams}}


@dataclass(frozen=True)
class Principal:
    """A caller: its OPA `credential`, the team it asks to run as (`header`, x-litellm-team-id), what
    the store knows (`store`: does its user exist, which teams it has with their models), and the
    setting the enforcer needs to accept the credential at all (the master key; an issuers entry)."""

    label: str
    kind: str
    credential: dict
    store: dict = field(default_factory=_store)
    header: str | None = None
    needs_master_key: bool = False
    needs_issuer: str | None = None

    @cached_property
    def key(self) -> str:
        """Identity across configs: the same credential, header and store facts are the same principal."""
        return json.dumps([self.credential, self.header, self.store, self.needs_master_key], sort_keys=True)

    def describe(self) -> str:
        """The credential in a line: claims for a JWT, owner ids for a virtual key."""
        if self.credential["type"] == "jwt":
            text = "JWT claims " + json.dumps(self.credential.get("claims", {}), sort_keys=True)
        elif self.credential["type"] == "virtual_key":
            text = "virtual key " + json.dumps(self.credential["key"], sort_keys=True)
        else:
            text = self.credential["type"].replace("_", " ")
        return text + (f", x-litellm-team-id: {self.header}" if self.header else "")

    def as_json(self) -> dict:
        return {"label": self.label, "kind": self.kind, "credential": self.credential, "header": self.header,
                "store": self.store, "needs_master_key": self.needs_master_key, "needs_issuer": self.needs_issuer}


def _jwt(claims: dict, issuer: str | None = None) -> dict:
    return {"type": "jwt", "claims": claims} | ({"issuer": issuer} if issuer else {})


def _email_domain(policy: AuthPolicy, issuer: str | None = None) -> str | None:
    """The domain of the email claim a well-formed token carries (None: the config reads no email)."""
    if policy.claim_field("email_field", issuer) is None:
        return None
    return policy.email_domains.value[0] if policy.email_domains.value else DEFAULT_DOMAIN


def _claims(policy: AuthPolicy, *, team: str | None = None, user: bool = True, domain: str | None = None,
            issuer: str | None = None, user_role: bool = True) -> dict:
    """Claims under the config's claim names (the issuer's own where it sets them): a team id, the user
    id, an email in `domain`, and an allowed user role where the config requires one."""
    claims: dict = {"iss": issuer} if issuer else {}
    values = {"team_field": team, "user_field": USER if user else None,
              "email_field": f"dev@{domain}" if domain else None,
              "user_roles_field": [policy.user_allowed_roles.value[0]] if user_role and policy.user_allowed_roles.value
              else None}
    for attr, value in values.items():
        claim = policy.claim_field(attr, issuer)
        if value is not None and claim is not None:
            claims = claim.put(claims, value)
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
    return [Principal(_with_email("team token" if team == TEAM else f"team {team} token", domain), "team_token",
                      _jwt(_claims(policy, team=team, domain=domain)), _store(teams=[team]))
            for team in dict.fromkeys((TEAM, *teams))]


def team_header_tokens(config: Config) -> list[Principal]:
    """A token of several teams (team_ids_jwt_field): as it is (its first team), selecting its second
    team with x-litellm-team-id, and naming a team it was not granted (one the store has)."""
    policy = config.policy
    if policy.team_ids_field.value is None:
        return []
    domain = _email_domain(policy)
    store = _store(teams=[TEAM, TEAM_B, OTHER_TEAM])
    claims = policy.team_ids_field.value.put(_claims(policy, domain=domain), [TEAM, TEAM_B])
    label = f"token of teams {TEAM}, {TEAM_B}"
    return [Principal(_with_email(label, domain), "team_list", _jwt(claims), store),
            Principal(_with_email(f"{label} selecting {TEAM_B} (x-litellm-team-id)", domain), "team_header",
                      _jwt(claims), store, header=TEAM_B),
            Principal(_with_email(f"{label} naming {OTHER_TEAM} (x-litellm-team-id)", domain), "team_header",
                      _jwt(claims), store, header=OTHER_TEAM)]


def default_team_token(config: Config) -> list[Principal]:
    """A token without a team claim, which runs as team_id_default's team."""
    policy = config.policy
    default = policy.team_id_default.value
    if default is None:
        return []
    domain = _email_domain(policy)
    return [Principal(_with_email(f"token without a team claim (team_id_default {default})", domain), "default_team",
                      _jwt(_claims(policy, domain=domain)), _store(teams=[default]))]


def internal_user_token(config: Config) -> list[Principal]:
    """A token with a user id (or, without user_id_jwt_field, an email) and no team."""
    policy = config.policy
    domain = _email_domain(policy)
    if policy.user_field.value is None and domain is None:
        return []
    return [Principal(_with_email("internal user token", domain), "internal_user_token",
                      _jwt(_claims(policy, domain=domain)))]


def user_role_tokens(config: Config) -> list[Principal]:
    """With user_allowed_roles, the other principals carry the first allowed role: here a team token
    with each other allowed role, and one with none of them."""
    policy = config.policy
    if not policy.user_allowed_roles.value or policy.team_field.value is None:
        return []
    domain = _email_domain(policy)
    out = []
    for role in (*policy.user_allowed_roles.value[1:], UNLISTED_ROLE):
        claims = policy.user_roles_field.value.put(_claims(policy, team=TEAM, domain=domain), [role])
        label = f"team token with user role {role}" if role != UNLISTED_ROLE else "team token without an allowed user role"
        out.append(Principal(_with_email(label, domain), "user_role", _jwt(claims), _store(teams=[TEAM])))
    return out


def role_mapping_tokens(config: Config) -> list[Principal]:
    """A token per role of role_mappings (roles_jwt_field), with an object id named after the role:
    the team of a role mapped to team (the store has it), the user of one mapped to internal_user.
    The claims do not depend on what the role maps to, so a mapping changed between two configs is
    one principal judged by both."""
    policy = config.policy
    if policy.roles_field.value is None:
        return []
    domain = _email_domain(policy)
    out = []
    for role in dict.fromkeys(m.role for m in policy.role_mappings.value):
        claims = policy.roles_field.value.put(_claims(policy, domain=domain), [role])
        object_id = f"object-{role}"
        if policy.object_id_field.value is not None:
            claims = policy.object_id_field.value.put(claims, object_id)
        out.append(Principal(_with_email(f"token with role {role}", domain), "role_mapping", _jwt(claims),
                             _store(teams=[object_id])))
    return out


def scope_mapping_tokens(config: Config) -> list[Principal]:
    """A team token per scope_mappings entry, carrying that scope."""
    policy = config.policy
    if policy.team_field.value is None:
        return []
    domain = _email_domain(policy)
    return [Principal(_with_email(f"team token with scope {grant.name}", domain), "scope_mapping",
                      _jwt(_claims(policy, team=TEAM, domain=domain) | {"scope": f"openid {grant.name}"}),
                      _store(teams=[TEAM]))
            for grant in policy.scope_mappings.value]


def issuer_tokens(config: Config) -> list[Principal]:
    """A team token per issuers entry, under that entry's claim names (its iss), verified by its keys."""
    policy = config.policy
    out = []
    for entry in policy.issuers:
        domain = _email_domain(policy, entry.issuer)
        team = TEAM if policy.claim_field("team_field", entry.issuer) is not None else None
        claims = _claims(policy, team=team, domain=domain, issuer=entry.issuer)
        out.append(Principal(_with_email(f"token of issuer {entry.issuer}", domain), "issuer",
                             _jwt(claims, entry.issuer), _store(teams=[TEAM] if team else []),
                             needs_issuer=entry.issuer))
    return out


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
                      _jwt(_claims(policy, team=TEAM, domain=domain)), _store(user_exists=False, teams=[TEAM]))]


def virtual_keys(config: Config) -> list[Principal]:
    """Keys from /key/generate: one issued to a team, one to a user without a team."""
    def key(**owner) -> dict:
        return {"type": "virtual_key", "key": {"user_id": None, "team_id": None, "org_id": None, "models": []} | owner}

    return [Principal("virtual key of a team", "virtual_key", key(team_id=TEAM), _store(teams=[TEAM])),
            Principal("virtual key of a user", "virtual_key", key(user_id=USER))]


def model_limited(config: Config, models: tuple[str, ...]) -> list[Principal]:
    """Where the matrix has model columns: a key limited to the first model (/key/generate models),
    and a team token whose team is (/team/new models)."""
    if not models:
        return []
    first = models[0]
    key = {"user_id": USER, "team_id": None, "org_id": None, "models": [first]}
    out = [Principal(f"virtual key limited to {first}", "model_limit", {"type": "virtual_key", "key": key})]
    for p in team_tokens(config):
        out.append(replace(p, label=p.label.replace("team token", f"team token, team limited to {first}", 1),
                           kind="model_limit", store=_store(teams={TEAM: [first]})))
    return out


def budget_spenders(config: Config) -> list[Principal]:
    """Where the config sets a budget (litellm_settings max_budget, max_end_user_budget), a team
    token whose proxy, or end user, has spent exactly that much in the current period: over the
    budget under this config, under it under a config that raises or removes it."""
    policy, budgets = config.policy, config.budgets
    if policy.team_field.value is None:
        return []
    domain = _email_domain(policy)
    claims = _claims(policy, team=TEAM, domain=domain)
    out = []
    if budgets.proxy_max_budget.value is not None:
        spent = usd_to_nanos(budgets.proxy_max_budget.value)
        out.append(Principal(_with_email(f"team token, proxy spend USD {budgets.proxy_max_budget.value}", domain),
                             "budget", _jwt(claims), _store(teams=[TEAM]) | {"budgets": {"proxy": {"spend_nanos": spent}}}))
    if budgets.max_end_user_budget.value is not None and policy.end_user_field.value is not None:
        spent = usd_to_nanos(budgets.max_end_user_budget.value)
        with_end_user = policy.end_user_field.value.put(claims, END_USER)
        facts = {"end_user": {"id": END_USER, "spend_nanos": spent, "max_budget_nanos": None}}
        out.append(Principal(_with_email(f"team token of end user {END_USER}, spend USD "
                                         f"{budgets.max_end_user_budget.value}", domain), "budget",
                             _jwt(with_end_user), _store(teams=[TEAM]) | {"budgets": facts}))
    return out


def token_without_role(config: Config) -> list[Principal]:
    return [Principal("token without a role", "no_role", _jwt({"scope": "openid"}))]


def no_credential(config: Config) -> list[Principal]:
    return [Principal("no credential", "no_credential", {"type": "none"})]


# In matrix order; team_tokens and model_limited take more than the config (see principals()).
PRINCIPAL_KINDS: tuple[Callable[..., list[Principal]], ...] = (
    master_key,
    admin_token,
    team_tokens,
    team_header_tokens,
    default_team_token,
    internal_user_token,
    role_mapping_tokens,
    scope_mapping_tokens,
    user_role_tokens,
    issuer_tokens,
    email_domain_tokens,
    unknown_user_token,
    virtual_keys,
    model_limited,
    budget_spenders,
    token_without_role,
    no_credential,
)


def principals(config: Config, teams: Iterable[str] = (), models: tuple[str, ...] = ()) -> list[Principal]:
    """Every principal class `config` names, in matrix order, each once; `teams` adds a team token
    each (`--team`), `models` (the matrix's model columns) the model-limited principals."""
    found = []
    for kind in PRINCIPAL_KINDS:
        found += kind(config, teams) if kind is team_tokens else kind(config, models) if kind is model_limited \
            else kind(config)
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
    return [p if labels[p.label] == 1 else replace(p, label=f"{p.label} [{p.describe()}]") for p in found]
