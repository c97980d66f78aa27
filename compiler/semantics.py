"""Build the intermediate model from a schema-valid config, with the checks a schema cannot express."""

from __future__ import annotations

from decimal import Decimal

from regate.common.env import is_reference

from .diagnostics import Diagnostic
from .loader import LoadedConfig
from .model import (
    ISSUER_FIELDS,
    ROLES,
    AuthPolicy,
    BudgetSettings,
    ClaimField,
    Config,
    CustomPolicy,
    Deployment,
    Issuer,
    ModelGrant,
    Origin,
    RoleMapping,
    Setting,
)
from .routes import expand

JWT = ("general_settings", "litellm_jwtauth")
DEFAULT_ROUTES = {
    "proxy_admin": ("admin_allowed_routes", ("management_routes",)),
    "team": ("team_allowed_routes", ("openai_routes", "info_routes")),
    "internal_user": ("user_allowed_routes", ("openai_routes", "info_routes")),
}
PROXIED_PROVIDERS = ("openai", "azure")
DEFAULT_AZURE_API_VERSION = "2024-10-21"


class _Reader:
    """Reads settings with their origins and collects diagnostics."""

    def __init__(self, loaded: LoadedConfig):
        self.loaded = loaded
        self.diagnostics: list[Diagnostic] = []

    def origin(self, path) -> Origin:
        pos = self.loaded.position(path)
        dotted = ".".join(str(p) for p in path)
        return Origin(self.loaded.file, pos.line, pos.col, dotted)

    def get(self, path, default=None):
        node = self.loaded.data
        for part in path:
            if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
                continue
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    def setting(self, path, default=None, convert=lambda v: v) -> Setting:
        value = self.get(path)
        key = ".".join(str(p) for p in path)
        if value is None:
            return Setting(convert(default) if default is not None else None, None, key)
        return Setting(convert(value), self.origin(path), key)

    def error(self, path, message: str, code: str, severity: str = "error") -> None:
        self.diagnostics.append(self.loaded.diagnostic(path, message, code, severity=severity))

    def warn(self, path, message: str, code: str) -> None:
        self.error(path, message, code, severity="warning")


def _claim(value) -> ClaimField:
    return ClaimField(value)


def _domains(value) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    return tuple(sorted({d.lower() for d in items}))


def _issuers(r: _Reader) -> tuple[Issuer, ...]:
    path = JWT + ("issuers",)
    issuers = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(r.get(path, [])):
        here = path + (i,)
        name = entry["issuer"]
        if name in seen:
            r.error(here + ("issuer",), f"issuer {name} is listed already (issuers[{seen[name]}])", "duplicate-issuer")
        seen.setdefault(name, i)
        disabled = entry.get("disable_audience_validation") is True
        if "audience" in entry and disabled:
            r.error(here, "set audience or disable_audience_validation: true, not both", "audience-and-no-audience")
        elif "audience" not in entry and not disabled:
            r.error(here, "needs audience (the aud its tokens carry) or disable_audience_validation: true, so tokens "
                          "minted for another application are not accepted", "audience-required")
        if "jwks_url" not in entry and not name.startswith(("https://", "http://")):
            r.error(here, f"needs jwks_url: keys can be discovered only from an http(s) issuer, not {name!r}",
                    "jwks-url-required")
        fields = {attr: r.setting(here + (key,), None, _claim) for key, attr in ISSUER_FIELDS.items() if key in entry}
        issuers.append(Issuer(name, entry.get("audience"), entry.get("jwks_url"), fields, r.origin(here)))
    return tuple(issuers)


def _custom_policies(r: _Reader) -> Setting:
    path = JWT + ("custom_policies",)
    entries = r.get(path, [])
    policies = tuple(CustomPolicy(entry, r.origin(path + (i,))) for i, entry in enumerate(entries))
    return Setting(policies, r.origin(path) if entries else None, ".".join(path))


def _role_mappings(r: _Reader) -> Setting:
    path = JWT + ("role_mappings",)
    entries = r.get(path, [])
    mappings = tuple(RoleMapping(e["role"], e["internal_role"], r.origin(path + (i,))) for i, e in enumerate(entries))
    return Setting(mappings, r.origin(path) if entries else None, ".".join(path))


def _scope_mappings(r: _Reader) -> Setting:
    path = JWT + ("scope_mappings",)
    entries = r.get(path, [])
    grants = tuple(ModelGrant(e["scope"], tuple(e["models"]), r.origin(path + (i,))) for i, e in enumerate(entries))
    return Setting(grants, r.origin(path) if entries else None, ".".join(path))


def _role_permissions(r: _Reader, routes: dict[str, Setting]) -> Setting:
    """role_permissions: each role's models (returned) and routes (replacing `routes[role]`)."""
    path = ("general_settings", "role_permissions")
    entries = r.get(path, [])
    grants = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        role = entry["role"]
        if role in seen:
            r.error(path + (i, "role"), f"role {role} has permissions already (role_permissions[{seen[role]}])",
                    "duplicate-role")
            continue
        seen[role] = i
        if entry.get("models") is not None:
            grants.append(ModelGrant(role, tuple(entry["models"]), r.origin(path + (i, "models"))))
        if entry.get("routes") is not None:
            key = path + (i, "routes")
            routes[role] = Setting(expand(tuple(entry["routes"])), r.origin(key), f"general_settings.role_permissions[{i}].routes")
    return Setting(tuple(grants), r.origin(path) if entries else None, ".".join(path))


def _policy(r: _Reader) -> AuthPolicy:
    jwt_enabled = r.setting(("general_settings", "enable_jwt_auth"), False)
    routes = {}
    for role in ROLES:
        key, default = DEFAULT_ROUTES[role]
        routes[role] = r.setting(JWT + (key,), default, lambda v: expand(tuple(v)))
    enforce_rbac = r.setting(JWT + ("enforce_rbac",), False)
    role_models = _role_permissions(r, routes) if enforce_rbac.value else Setting((), None, "general_settings.role_permissions")
    policy = AuthPolicy(
        jwt_enabled=jwt_enabled,
        admin_scope=r.setting(JWT + ("admin_jwt_scope",), "litellm_proxy_admin"),
        team_field=r.setting(JWT + ("team_id_jwt_field",), "client_id", _claim),
        user_field=r.setting(JWT + ("user_id_jwt_field",), None, _claim),
        org_field=r.setting(JWT + ("org_id_jwt_field",), None, _claim),
        end_user_field=r.setting(JWT + ("end_user_id_jwt_field",), None, _claim),
        email_field=r.setting(JWT + ("user_email_jwt_field",), None, _claim),
        team_ids_field=r.setting(JWT + ("team_ids_jwt_field",), None, _claim),
        team_alias_field=r.setting(JWT + ("team_alias_jwt_field",), None, _claim),
        org_alias_field=r.setting(JWT + ("org_alias_jwt_field",), None, _claim),
        team_id_default=r.setting(JWT + ("team_id_default",)),
        team_id_upsert=r.setting(JWT + ("team_id_upsert",), False),
        enforce_team_models=r.setting(JWT + ("enforce_team_based_model_access",), False),
        roles_field=r.setting(JWT + ("roles_jwt_field",), None, _claim),
        role_mappings=_role_mappings(r),
        object_id_field=r.setting(JWT + ("object_id_jwt_field",), None, _claim),
        enforce_rbac=enforce_rbac,
        role_models=role_models,
        user_roles_field=r.setting(JWT + ("user_roles_jwt_field",), None, _claim),
        user_allowed_roles=r.setting(JWT + ("user_allowed_roles",), (), tuple),
        scope_mappings=_scope_mappings(r),
        enforce_scopes=r.setting(JWT + ("enforce_scope_based_access",), False),
        custom_policies=_custom_policies(r),
        email_domains=r.setting(JWT + ("user_allowed_email_domain",), (), _domains),
        user_id_upsert=r.setting(JWT + ("user_id_upsert",), False),
        public_key_ttl=r.setting(JWT + ("public_key_ttl",), 600.0, float),
        public_key_stale_ttl=r.setting(JWT + ("public_key_stale_ttl",), 3600.0, float),
        issuers=_issuers(r),
        routes=routes,
        public_routes=r.setting(JWT + ("public_allowed_routes",), ("public_routes",), lambda v: expand(tuple(v))),
        master_key_configured=r.get(("general_settings", "master_key")) is not None,
    )
    _check_roles_and_scopes(r, policy)
    if policy.email_domains.value and policy.email_field.value is None:
        r.error(
            JWT + ("user_allowed_email_domain",),
            "user_allowed_email_domain needs user_email_jwt_field (the claim holding the email)",
            "email-field-required",
        )
    if r.get(JWT) is not None and not jwt_enabled.value:
        r.warn(JWT, "litellm_jwtauth is set but enable_jwt_auth is not true: every JWT will be refused", "jwt-disabled")
    if policy.user_id_upsert.value and policy.user_field.value is None and policy.email_field.value is None:
        r.warn(
            JWT + ("user_id_upsert",),
            "user_id_upsert has no effect without user_id_jwt_field or user_email_jwt_field",
            "upsert-without-user-field",
        )
    return policy


def _requires(r: _Reader, policy: AuthPolicy, key: str, needs: str, present, why: str) -> None:
    """A located error at `key` unless `needs` is set too (both are litellm_jwtauth keys)."""
    if present(getattr(policy, _FIELD[key]).value) and not present(getattr(policy, _FIELD[needs]).value):
        r.error(JWT + (key,), f"{key} needs {needs}: {why}", f"{key.replace('_', '-')}-without-{needs.replace('_', '-')}")


_FIELD = {"object_id_jwt_field": "object_id_field", "role_mappings": "role_mappings", "roles_jwt_field": "roles_field",
          "user_roles_jwt_field": "user_roles_field", "user_allowed_roles": "user_allowed_roles",
          "scope_mappings": "scope_mappings", "enforce_scope_based_access": "enforce_scopes"}


def _check_roles_and_scopes(r: _Reader, policy: AuthPolicy) -> None:
    """Keys that mean nothing without their partner are errors (LiteLLM refuses most of these too)."""
    _requires(r, policy, "object_id_jwt_field", "role_mappings", bool,
              "the mapped role says whether the object id is a team or a user")
    _requires(r, policy, "role_mappings", "roles_jwt_field", bool, "the claim holding the roles to map")
    _requires(r, policy, "roles_jwt_field", "role_mappings", bool, "without mappings the roles change nothing")
    _requires(r, policy, "user_roles_jwt_field", "user_allowed_roles", bool, "the roles a token must carry")
    _requires(r, policy, "user_allowed_roles", "user_roles_jwt_field", bool, "the claim holding the user's roles")
    _requires(r, policy, "scope_mappings", "enforce_scope_based_access", bool,
              "set enforce_scope_based_access: true, or the mappings would change nothing")
    _requires(r, policy, "enforce_scope_based_access", "scope_mappings", bool,
              "with no scope mapped, no token could use any model")
    if r.get(("general_settings", "role_permissions")) and not policy.enforce_rbac.value:
        r.error(("general_settings", "role_permissions"),
                "role_permissions apply only with litellm_jwtauth.enforce_rbac: true (as in LiteLLM); set it or remove them",
                "role-permissions-without-enforce-rbac")


def _price(value) -> Decimal | None:
    # str() first: the YAML float's shortest repr is what the author wrote (2.5e-06), not its binary expansion.
    return None if value is None else Decimal(str(value))


def _deployment(r: _Reader, index: int, entry: dict) -> Deployment:
    path = ("model_list", index)
    params = entry["litellm_params"]
    info = entry.get("model_info") or {}
    provider, _, upstream = params["model"].partition("/")
    if not upstream:
        provider, upstream = "openai", params["model"]
    api_version = params.get("api_version")
    if provider not in PROXIED_PROVIDERS:
        r.warn(
            path + ("litellm_params", "model"),
            f"provider '{provider}' is not proxied by regate; requests for '{entry['model_name']}' will get 501",
            "provider-not-proxied",
        )
    if provider == "azure":
        if not params.get("api_base"):
            r.error(path + ("litellm_params",), "an azure/ model needs api_base (https://<resource>.openai.azure.com)", "azure-needs-api-base")
        if not api_version:
            api_version = DEFAULT_AZURE_API_VERSION
            r.warn(path + ("litellm_params",), f"no api_version for an azure/ model: using {api_version}", "azure-default-api-version")
    api_key = params.get("api_key")
    if api_key and not is_reference(api_key):
        r.warn(path + ("litellm_params", "api_key"), "api_key is a literal secret: prefer os.environ/NAME", "literal-secret")
    return Deployment(
        model_name=entry["model_name"],
        provider=provider,
        upstream_model=upstream,
        api_base=params.get("api_base"),
        api_key=api_key,
        api_version=api_version,
        timeout=params.get("timeout"),
        stream_timeout=params.get("stream_timeout"),
        input_cost_per_token=_price(info.get("input_cost_per_token")),
        output_cost_per_token=_price(info.get("output_cost_per_token")),
        base_model=info.get("base_model"),
        origin=r.origin(path),
    )


def _key_params(value: dict) -> dict:
    return {name: (_price(v) if name == "max_budget" else v) for name, v in value.items()}


def _budgets(r: _Reader) -> BudgetSettings:
    litellm, router = ("litellm_settings",), ("router_settings",)
    password = r.setting(router + ("redis_password",))
    if password.value and not is_reference(password.value):
        r.warn(router + ("redis_password",), "redis_password is a literal secret: prefer os.environ/NAME", "literal-secret")
    budgets = BudgetSettings(
        proxy_max_budget=r.setting(litellm + ("max_budget",), None, _price),
        proxy_budget_duration=r.setting(litellm + ("budget_duration",)),
        max_end_user_budget=r.setting(litellm + ("max_end_user_budget",), None, _price),
        default_key_params=r.setting(litellm + ("default_key_generate_params",), {}, _key_params),
        upperbound_key_params=r.setting(litellm + ("upperbound_key_generate_params",), {}, _key_params),
        redis_host=r.setting(router + ("redis_host",)),
        redis_port=r.setting(router + ("redis_port",)),
        redis_password=password,
    )
    if budgets.proxy_budget_duration.value and budgets.proxy_max_budget.value is None:
        r.warn(litellm + ("budget_duration",), "budget_duration has no effect without litellm_settings.max_budget",
               "duration-without-budget")
    defaults, bounds = budgets.default_key_params.value, budgets.upperbound_key_params.value
    for name in sorted(set(defaults) & set(bounds)):
        if name != "budget_duration" and defaults[name] > bounds[name]:
            r.error(litellm + ("default_key_generate_params", name),
                    f"default {name} {defaults[name]} is above upperbound_key_generate_params.{name} ({bounds[name]})",
                    "default-above-upperbound")
    return budgets


def interpret(loaded: LoadedConfig) -> tuple[Config | None, list[Diagnostic]]:
    """The model of a schema-valid config, plus diagnostics (errors make the model None)."""
    r = _Reader(loaded)
    policy = _policy(r)
    deployments = tuple(_deployment(r, i, entry) for i, entry in enumerate(r.get(("model_list",), [])))
    budgets = _budgets(r)
    master_key = r.get(("general_settings", "master_key"))
    if master_key and not is_reference(master_key):
        r.warn(("general_settings", "master_key"), "master_key is a literal secret: prefer os.environ/NAME", "literal-secret")
    diagnostics = sorted(r.diagnostics)
    if any(d.severity == "error" for d in diagnostics):
        return None, diagnostics
    warnings = tuple(str(d) for d in diagnostics)
    config = Config(loaded.file, loaded.sha256, policy, deployments, master_key, warnings, budgets)
    return config, diagnostics
