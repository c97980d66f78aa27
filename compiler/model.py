"""The intermediate model: what a validated config means, as plain frozen dataclasses.

Every value keeps the `Origin` it came from (None when it is a default), so the
rendered Rego can cite the config key and line a rule came from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

T = TypeVar("T")

ROLES = ("proxy_admin", "team", "internal_user")
# A token naming more teams than this is refused (invalid_claims): one decision stays cheap.
MAX_TEAMS_PER_TOKEN = 100


@dataclass(frozen=True)
class Origin:
    """Where a value stands in the config file (1-based line and column)."""

    file: str
    line: int
    col: int
    path: str


@dataclass(frozen=True)
class Setting(Generic[T]):
    """A config value with its origin; origin None means the documented default applies."""

    value: T
    origin: Origin | None = None
    key: str = ""  # dotted config path, e.g. general_settings.litellm_jwtauth.admin_jwt_scope

    def cite(self, source: str) -> str:
        """`key (source:line)` or `key (default)`, for comments in generated files."""
        where = f"{source}:{self.origin.line}" if self.origin else "default"
        return f"{self.key} ({where})"


@dataclass(frozen=True)
class ClaimField:
    """A JWT claim named in the config: a literal key, or a dot path into nested claims."""

    name: str

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))

    def put(self, claims: dict, value) -> dict:
        """A copy of `claims` with `value` at this claim's dot path (nested objects), the way IdPs nest them."""
        claims = copy.deepcopy(claims)
        node = claims
        *parents, leaf = self.path
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        return claims


@dataclass(frozen=True)
class RouteSet:
    """The routes one role may call, with group names expanded to explicit paths."""

    entries: tuple[str, ...]  # as written in the config: group names and paths
    exact: tuple[str, ...]  # sorted literal paths
    templates: tuple[str, ...]  # sorted templates, `{param}` matching one segment
    prefixes: tuple[str, ...] = ()  # sorted `/prefix/` of `/prefix/*` entries: every path below it


@dataclass(frozen=True)
class RoleMapping:
    """role_mappings entry: a role of the roles claim and the regate role it gives."""

    role: str
    internal_role: str
    origin: Origin | None = None


@dataclass(frozen=True)
class ModelGrant:
    """A scope_mappings entry (scope → models), or the models of a role_permissions entry (role → models)."""

    name: str
    models: tuple[str, ...]
    origin: Origin | None = None


# Claim fields an issuers entry may set for its tokens: config key -> AuthPolicy field.
ISSUER_FIELDS = {"team_id_jwt_field": "team_field", "team_ids_jwt_field": "team_ids_field",
                 "user_id_jwt_field": "user_field", "user_email_jwt_field": "email_field",
                 "org_id_jwt_field": "org_field", "end_user_id_jwt_field": "end_user_field"}


@dataclass(frozen=True)
class Issuer:
    """An `issuers` entry: where its keys are, the audience its tokens must carry (None: not
    checked), and the claim fields that replace the top-level ones for its tokens."""

    issuer: str
    audience: str | None
    jwks_url: str | None  # None: the issuer's OpenID discovery document
    fields: dict[str, Setting[ClaimField]]  # AuthPolicy field name -> the entry's claim
    origin: Origin | None = None


@dataclass(frozen=True)
class CustomPolicy:
    """A custom_policies entry: the path as written (relative to the config), and once loaded
    (compiler.custom_policies.load) its module name after regate.custom., text and shown path."""

    path: str
    origin: Origin | None = None
    module: str = ""
    text: str = field(default="", repr=False)
    shown: str = ""  # the file as diagnostics name it

    @property
    def is_test(self) -> bool:
        return self.module.endswith("_test")


@dataclass(frozen=True)
class AuthPolicy:
    """Everything the policy decides from: general_settings and litellm_jwtauth."""

    jwt_enabled: Setting[bool]
    admin_scope: Setting[str]
    team_field: Setting[ClaimField | None]
    user_field: Setting[ClaimField | None]
    org_field: Setting[ClaimField | None]
    end_user_field: Setting[ClaimField | None]
    email_field: Setting[ClaimField | None]
    team_ids_field: Setting[ClaimField | None]
    team_alias_field: Setting[ClaimField | None]
    org_alias_field: Setting[ClaimField | None]
    team_id_default: Setting[str | None]
    team_id_upsert: Setting[bool]
    enforce_team_models: Setting[bool]
    roles_field: Setting[ClaimField | None]
    role_mappings: Setting[tuple[RoleMapping, ...]]
    object_id_field: Setting[ClaimField | None]
    enforce_rbac: Setting[bool]
    role_models: Setting[tuple[ModelGrant, ...]]  # role_permissions models, by role (with enforce_rbac)
    user_roles_field: Setting[ClaimField | None]
    user_allowed_roles: Setting[tuple[str, ...]]
    scope_mappings: Setting[tuple[ModelGrant, ...]]
    enforce_scopes: Setting[bool]
    custom_policies: Setting[tuple[CustomPolicy, ...]]
    email_domains: Setting[tuple[str, ...]]
    user_id_upsert: Setting[bool]
    public_key_ttl: Setting[float]
    public_key_stale_ttl: Setting[float]
    issuers: tuple[Issuer, ...]
    routes: dict[str, Setting[RouteSet]]  # keyed by role
    public_routes: Setting[RouteSet]  # public_allowed_routes: any caller, with or without a credential
    master_key_configured: bool = False

    def claim_field(self, name: str, issuer: str | None = None) -> ClaimField | None:
        """The claim an AuthPolicy field (`team_field`, ...) names for tokens of `issuer`: the
        issuers entry's own field when it sets one, else the top-level one."""
        entry = next((i for i in self.issuers if i.issuer == issuer), None) if issuer else None
        if entry is not None and name in entry.fields:
            return entry.fields[name].value
        return getattr(self, name).value

    def mapped_roles(self, jwt_roles) -> set[str]:
        """The regate roles a token's roles map to (role_mappings)."""
        return {m.internal_role for m in self.role_mappings.value if m.role in jwt_roles}

    def id_claims(self, issuer: str | None = None) -> list[ClaimField]:
        """The claims that carry identity ids in tokens of `issuer` (what the decision log keeps): `iss`,
        team, team list, user, organization, end user, object id; unset ones left out. The email is an
        id only where the policy identifies a token's user by it, which the mask decides per token."""
        fields = [self.claim_field(attr, issuer) for attr in ("team_field", "team_ids_field", "user_field",
                                                                "org_field", "end_user_field", "object_id_field")]
        return [ClaimField("iss")] + [f for f in fields if f is not None]

    @property
    def checks_user_existence(self) -> bool:
        """Users named by a claim must exist (or are created, with user_id_upsert)."""
        return self.user_field.value is not None or bool(self.user_id_upsert.value)


@dataclass(frozen=True)
class Deployment:
    """One `model_list` entry: how to reach the upstream for a public model name.

    `api_key` and `api_base` may be `os.environ/NAME` references; they are resolved
    by the enforcer at start and never written into a bundle.
    """

    model_name: str  # the name clients send in the body's `model`
    provider: str  # "openai" or "azure" (others are accepted but not proxied)
    upstream_model: str  # model (openai) or deployment name (azure) sent upstream
    api_base: str | None = None
    api_key: str | None = None
    api_version: str | None = None
    timeout: float | None = None  # seconds for the whole upstream call (non-streaming)
    stream_timeout: float | None = None  # seconds between stream chunks
    input_cost_per_token: Decimal | None = None  # USD
    output_cost_per_token: Decimal | None = None  # USD
    base_model: str | None = None  # model_info.base_model: what an Azure deployment is priced as
    origin: Origin | None = None


@dataclass(frozen=True)
class BudgetSettings:
    """litellm_settings budget keys and router_settings' Redis: budgets are decided by the policy,
    key defaults and bounds by the management endpoints, Redis shares rate-limit counters."""

    proxy_max_budget: Setting[Decimal | None]  # USD
    proxy_budget_duration: Setting[str | None]
    max_end_user_budget: Setting[Decimal | None]  # USD
    default_key_params: Setting[dict]  # field -> value, as LiteLLM names them (max_budget in USD)
    upperbound_key_params: Setting[dict]
    redis_host: Setting[str | None]  # may be os.environ/NAME
    redis_port: Setting[int | str | None]
    redis_password: Setting[str | None] = field(default_factory=lambda: Setting(None), repr=False)


def no_budgets() -> BudgetSettings:
    return BudgetSettings(*(Setting(None) for _ in range(3)), Setting({}), Setting({}), Setting(None), Setting(None))


@dataclass(frozen=True)
class Config:
    """A compiled config: the auth policy plus the upstreams and the master key reference."""

    source_file: str
    source_sha256: str
    policy: AuthPolicy
    deployments: tuple[Deployment, ...] = ()
    master_key: str | None = field(default=None, repr=False)  # literal or os.environ/NAME
    warnings: tuple[str, ...] = ()
    budgets: BudgetSettings = field(default_factory=no_budgets)
