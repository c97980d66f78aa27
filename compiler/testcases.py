"""The config's expected decisions, rendered into the bundle's authz_test.rego.

Each case is an OPA input, the runtime state to evaluate it with, and the
expected allow/status/first reason. Cases are derived from the model alone, so
every bundle carries tests of its own rules (`opa test bundle/`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from . import access_testcases, budget_testcases, team_testcases
from .model import ClaimField, Config
from .routes import is_template

TEAM = "team-a"
BLOCKED_TEAM = "team-blocked"
USER = "user-1"
# Paths tried, in order, when a case needs one a role may (or may not) call.
PREFERRED_PATHS = ("/v1/chat/completions", "/chat/completions", "/key/generate", "/key/info", "/global/spend", "/user/new")
OUTSIDE_PATH = "/regate/not-a-configured-route"
STATE = {"blocked_teams": {BLOCKED_TEAM: True}, "sync_id": "test"}


@dataclass(frozen=True)
class DecisionCase:
    name: str
    why: str
    input: dict
    expect_allow: bool
    expect_status: int
    expect_reason: str | None = None
    state: dict | None = field(default_factory=lambda: STATE)
    expect_upsert: bool = False
    expect_team: str | None = None  # the team the request runs as (subject.team_id), when the case names one
    expect_upsert_team: bool = False


def _set_claim(claims: dict, claim: ClaimField, value) -> dict:
    """A copy of `claims` with `value` at the claim's dot path (nested objects), the way IdPs nest them."""
    claims = copy.deepcopy(claims)
    node = claims
    *parents, leaf = claim.path
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return claims


def _claim_at(claims: dict, claim: ClaimField):
    node = claims
    for part in claim.path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _jwt(claims: dict, path: str, model: str | None = None, facts: dict | None = None) -> dict:
    request = {"method": "POST", "path": path}
    if model:
        request["model"] = model
    doc = {"request": request, "credential": {"type": "jwt", "claims": claims}}
    if facts is not None:
        doc["facts"] = facts
    return doc


def _instance(path: str) -> str:
    """A concrete path matching a template: each {param} becomes a plain segment."""
    return "/".join("x1" if is_template(seg) else seg for seg in path.split("/"))


def _allowed_path(routes) -> str | None:
    for p in PREFERRED_PATHS:
        if p in routes.exact:
            return p
    return routes.exact[0] if routes.exact else (_instance(routes.templates[0]) if routes.templates else None)


def _denied_path(routes) -> str:
    for p in PREFERRED_PATHS:
        if p not in routes.exact:
            return p
    return OUTSIDE_PATH


class _Builder:
    def __init__(self, config: Config):
        self.config = config
        self.policy = config.policy
        self.source = config.source_file.rsplit("/", 1)[-1]
        self.cases: list[DecisionCase] = []

    def cite(self, setting) -> str:
        return setting.cite(self.source)

    @property
    def role_or_scope_models(self) -> bool:
        """Role or scope model limits apply: the cases about key and team models (made-up model
        names) would meet them too, so those are left to the role and scope cases."""
        return bool(self.policy.role_models.value) or bool(self.policy.enforce_scopes.value)

    def add(self, name, why, doc, allow, status, reason=None, state=STATE, upsert=False, team=None, upsert_team=False):
        self.cases.append(DecisionCase(name, why, doc, allow, status, reason, state, upsert, team, upsert_team))

    def with_claim(self, claims: dict, claim: ClaimField, value) -> dict:
        return _set_claim(claims, claim, value)

    def claims_for(self, role: str, email: str | None = "dev@{domain}") -> dict:
        """Claims of a well-formed token of `role`, passing the email check when one is configured."""
        p = self.policy
        claims: dict = {}
        if role == "proxy_admin":
            claims["scope"] = f"openid {p.admin_scope.value}"
        if role == "team":
            claims = _set_claim(claims, p.team_field.value, TEAM)
        if role in ("team", "internal_user") and p.user_field.value:
            claims = _set_claim(claims, p.user_field.value, USER)
        if role in ("team", "internal_user") and p.user_allowed_roles.value:
            claims = _set_claim(claims, p.user_roles_field.value, [p.user_allowed_roles.value[0]])
        if p.email_field.value and email:
            domain = p.email_domains.value[0] if p.email_domains.value else "example.com"
            claims = _set_claim(claims, p.email_field.value, email.format(domain=domain))
        return claims

    def derived_user(self, claims: dict) -> str | None:
        """The user id the policy derives: the user claim, else (as in LiteLLM) the email."""
        p = self.policy
        for claim in (p.user_field.value, p.email_field.value):
            value = _claim_at(claims, claim) if claim else None
            if isinstance(value, str) and value:
                return value
        return None

    def token(self, claims: dict, path: str, *, user_exists: bool = True, facts_user: str | None = None,
              teams: dict | None = None) -> dict:
        """A JWT input; with the store's facts about the derived user when the config checks users, and
        about the teams the claims name: each in the store with no model limit, unless `teams` maps
        it to its models, or to None for a team not in the store."""
        user = self.derived_user(claims)
        facts: dict = {}
        if self.policy.checks_user_existence and user:
            facts = {"user_id": facts_user or user, "user_exists": user_exists}
        named = {team: [] for team in self.claimed_teams(claims)} | (teams or {})
        if named:
            facts["teams"] = {team: models for team, models in named.items() if models is not None}
        return _jwt(claims, path, facts=facts or None)

    def claimed_teams(self, claims: dict) -> list[str]:
        """The team ids the claims name (id claim, team list), as the enforcer looks them up."""
        p = self.policy
        found = []
        for claim in (p.team_field.value, p.team_ids_field.value):
            value = _claim_at(claims, claim) if claim else None
            values = value if isinstance(value, list) else [value]
            found += [v for v in values if isinstance(v, str) and v]
        return found

    def build(self) -> list[DecisionCase]:
        self.credentials()
        self.public_routes()
        if self.policy.jwt_enabled.value:
            self.admin()
            self.team()
            self.internal_user()
            self.claim_types()
            self.email_domains()
            self.users()
            self.team_models()
            team_testcases.add_cases(self)
            access_testcases.add_cases(self)
        else:
            self.add("test_jwt_refused_when_jwt_auth_disabled", self.cite(self.policy.jwt_enabled),
                     _jwt(self.claims_for("proxy_admin"), "/key/generate"), False, 401, "jwt_auth_disabled")
        self.virtual_keys()
        budget_testcases.add_cases(self)
        return self.cases

    def public_routes(self):
        public = self.policy.public_routes
        path = _allowed_path(public.value)
        if path is None:
            return
        anonymous = {"request": {"method": "GET", "path": path}, "credential": {"type": "none"}}
        self.add(f"test_public_route_{_slug(path)}_needs_no_credential", self.cite(public), anonymous, True, 200)

    def credentials(self):
        self.add("test_master_key_may_call_any_route", "general_settings.master_key: every route",
                 {"request": {"method": "POST", "path": OUTSIDE_PATH}, "credential": {"type": "master_key"}}, True, 200)
        private = OUTSIDE_PATH if "/v1/chat/completions" in self.policy.public_routes.value.exact else "/v1/chat/completions"
        self.add("test_missing_credential_is_401", "no credential, no access",
                 {"request": {"method": "POST", "path": private}, "credential": {"type": "none"}},
                 False, 401, "missing_credential")
        self.add("test_non_canonical_path_is_400", "paths are compared only in canonical form",
                 {"request": {"method": "POST", "path": "/v1/chat/completions/../../key/generate"}, "credential": {"type": "master_key"}},
                 False, 400, "path_not_canonical")

    def _role_routes(self, role: str, claims: dict, label: str):
        routes = self.policy.routes[role]
        allowed = _allowed_path(routes.value)
        if allowed:
            self.add(f"test_{label}_may_call_{_slug(allowed)}", self.cite(routes), self.token(claims, allowed), True, 200)
        denied = _denied_path(routes.value)
        self.add(f"test_{label}_may_not_call_{_slug(denied)}", self.cite(routes), self.token(claims, denied),
                 False, 403, "route_not_allowed")
        if routes.value.templates:
            template = routes.value.templates[0]
            self.add(f"test_{label}_may_call_template_{_slug(template)}", f"{self.cite(routes)}: {template}",
                     self.token(claims, _instance(template)), True, 200)
        if routes.value.prefixes:
            prefix = routes.value.prefixes[0]
            self.add(f"test_{label}_may_call_below_{_slug(prefix)}", f"{self.cite(routes)}: {prefix}*",
                     self.token(claims, prefix + "x1/x2"), True, 200)
            if prefix != "/" and prefix[:-1] not in routes.value.exact:
                self.add(f"test_{label}_may_not_call_bare_{_slug(prefix)}", f"{self.cite(routes)}: {prefix}* (not the prefix)",
                         self.token(claims, prefix[:-1]), False, 403, "route_not_allowed")

    def admin(self):
        p = self.policy
        why = self.cite(p.admin_scope)
        claims = self.claims_for("proxy_admin")
        self._role_routes("proxy_admin", claims, "admin")
        path = _allowed_path(p.routes["proxy_admin"].value)
        if path:
            as_list = dict(claims, scope=["openid", p.admin_scope.value])
            self.add("test_admin_scope_as_list", why, _jwt(as_list, path), True, 200)
            via_scp = {k: v for k, v in claims.items() if k != "scope"} | {"scp": [p.admin_scope.value]}
            self.add("test_admin_scope_in_scp", why, _jwt(via_scp, path), True, 200)
            blocked_admin = _set_claim(claims, p.team_field.value, BLOCKED_TEAM)
            self.add("test_admin_with_blocked_team_is_not_blocked", "admins are not team tokens", _jwt(blocked_admin, path), True, 200)
        if p.team_id_default.value is None:
            self.add("test_token_without_role_is_403", "no admin scope, no team id, no user id",
                     _jwt({"scope": "openid"}, "/v1/chat/completions"), False, 403, "no_role")

    def team(self):
        p = self.policy
        claims = self.claims_for("team")
        self._role_routes("team", claims, "team")
        path = _allowed_path(p.routes["team"].value)
        if path:
            blocked = _set_claim(claims, p.team_field.value, BLOCKED_TEAM)
            self.add("test_blocked_team_is_403", "data.regate_state.blocked_teams", self.token(blocked, path),
                     False, 403, "team_blocked")
            self.add("test_team_refused_until_state_loaded", "blocked teams cannot be checked before the state is loaded",
                     self.token(claims, path), False, 503, "state_unavailable", state=None)

    def internal_user(self):
        p = self.policy
        claims = self.claims_for("internal_user")
        # With a default team or enforced team model access, such a token is no internal user (team cases cover it).
        if self.derived_user(claims) and p.team_id_default.value is None and not p.enforce_team_models.value:
            self._role_routes("internal_user", claims, "user")

    def claim_types(self):
        p = self.policy
        self.add("test_scope_of_wrong_type_is_401", "scope must be a string or a list of strings",
                 _jwt({"scope": 42}, "/v1/chat/completions"), False, 401, "invalid_claims")
        bad_team = _set_claim({}, p.team_field.value, {"id": TEAM})
        self.add("test_team_id_of_wrong_type_is_401", self.cite(p.team_field), _jwt(bad_team, "/v1/chat/completions"),
                 False, 401, "invalid_claims")

    def email_domains(self):
        p = self.policy
        if not p.email_domains.value:
            return
        why = self.cite(p.email_domains)
        path = _allowed_path(p.routes["team"].value) or "/v1/chat/completions"
        domain = p.email_domains.value[0]

        def case(name, email, allow, extra=None):
            claims = self.claims_for("team", email=email) | (extra or {})
            reason = None if allow else "email_domain_not_allowed"
            self.add(name, why, self.token(claims, path), allow, 200 if allow else 403, reason)

        case("test_email_in_allowed_domain", f"dev@{domain}", True)
        case("test_email_domain_is_case_insensitive", f"dev@{domain.upper()}", True)
        case("test_email_in_other_domain_is_403", "dev@other.invalid", False)
        case("test_email_with_two_at_signs_is_403", f"a@b@{domain}", False)
        case("test_email_subdomain_is_403", f"dev@sub.{domain}", False)
        case("test_missing_email_is_403", None, False)
        case("test_unverified_email_is_403", f"dev@{domain}", False, {"email_verified": False})
        case("test_email_verified_true_is_allowed", f"dev@{domain}", True, {"email_verified": True})
        # Only `true` (or no claim) verifies: strings, numbers and null that some IdPs send do not.
        case("test_email_verified_string_false_is_403", f"dev@{domain}", False, {"email_verified": "false"})
        case("test_email_verified_string_true_is_403", f"dev@{domain}", False, {"email_verified": "true"})
        case("test_email_verified_zero_is_403", f"dev@{domain}", False, {"email_verified": 0})
        case("test_email_verified_null_is_403", f"dev@{domain}", False, {"email_verified": None})

    def users(self):
        p = self.policy
        claims = self.claims_for("team")
        if not (p.checks_user_existence and self.derived_user(claims)):
            return
        path = _allowed_path(p.routes["team"].value) or "/v1/chat/completions"
        why = self.cite(p.user_id_upsert)
        unknown = self.token(claims, path, user_exists=False)
        if p.user_id_upsert.value:
            self.add("test_unknown_user_is_upserted", why, unknown, True, 200, upsert=True)
            return
        self.add("test_unknown_user_is_401", why, unknown, False, 401, "user_not_found")
        self.add("test_user_facts_for_another_user_do_not_count", "facts count only for the user id the policy derives",
                 self.token(claims, path, facts_user="someone-else"), False, 401, "user_not_found")

    def virtual_keys(self):
        team_routes = self.policy.routes["team"].value
        path = _allowed_path(team_routes)
        if not path or self.role_or_scope_models:
            return
        key = {"user_id": None, "team_id": TEAM, "org_id": None, "models": ["model-a"]}
        doc = {"request": {"method": "POST", "path": path, "model": "model-a"}, "credential": {"type": "virtual_key", "key": key}}
        self.add("test_virtual_key_of_team_may_call_team_route", "a key with a team takes the team role", doc, True, 200)
        other = {"request": dict(doc["request"], model="model-b"), "credential": doc["credential"]}
        self.add("test_virtual_key_limited_to_its_models", "/key/generate models", other, False, 403, "model_not_allowed")
        narrowed = dict(doc, facts={"teams": {TEAM: ["model-b"]}})
        self.add("test_virtual_key_held_to_its_team_models", "/team/update models bound the team's keys too",
                 narrowed, False, 403, "model_not_allowed")

    def team_models(self):
        p = self.policy
        path = _allowed_path(p.routes["team"].value)
        if not (path and p.team_field.value) or self.role_or_scope_models:
            return
        claims = self.claims_for("team")

        def doc(model: str, models: list[str]) -> dict:
            token = self.token(claims, path, teams={TEAM: models})
            token["request"]["model"] = model
            return token

        why = "/team/new models"
        self.add("test_team_may_use_its_models", why, doc("model-a", ["model-a"]), True, 200, team=TEAM)
        self.add("test_team_limited_to_its_models", why, doc("model-b", ["model-a"]), False, 403, "model_not_allowed")
        self.add("test_team_with_no_models_may_use_every_model", why, doc("model-b", []), True, 200)


def _slug(path: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in path.strip("/"))
    return "_".join(part for part in out.split("_") if part) or "root"


def decision_cases(config: Config) -> list[DecisionCase]:
    """The expected decisions for `config`, in a stable order with unique names."""
    cases = _Builder(config).build()
    seen: set[str] = set()
    unique = []
    for case in cases:
        if case.name in seen:
            continue
        seen.add(case.name)
        unique.append(case)
    return unique
