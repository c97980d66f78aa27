"""The config's expected decisions, rendered into the bundle's authz_test.rego.

Each case is an OPA input, the runtime state to evaluate it with, and the
expected allow/status/first reason (a DecisionCase), or the expected value of one
rule (a RuleCase: the subject a token maps to, what the decision-log mask keeps).
Cases are derived from the model alone, so every bundle carries tests of its own
rules (`opa test bundle/`), and together they evaluate every rule of the policy
(`regate compile --check` holds them to full coverage).

Rules a setting switches off in this config (no email domains, no user check, JWTs
disabled, ...) are still in the policy; they are tested as if the setting were on,
by replacing the constants that setting compiles to (`with data.regate... as`), in
cases named `test_if_<setting>_...`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from . import access_testcases, as_if_testcases, budget_testcases, team_testcases
from .claim_rules import CLAIM_RULES, RULE_OF
from .model import AuthPolicy, ClaimField, Config, Setting
from .routes import is_template

TEAM = "team-a"
BLOCKED_TEAM = "team-blocked"
USER = "user-1"
# Paths tried, in order, when a case needs one a role may (or may not) call.
PREFERRED_PATHS = ("/v1/chat/completions", "/chat/completions", "/key/generate", "/key/info", "/global/spend", "/user/new")
OUTSIDE_PATH = "/regate/not-a-configured-route"
STATE = {"blocked_teams": {BLOCKED_TEAM: True}, "sync_id": "test"}
# Claim names assumed for claim fields a config leaves unset, in the cases that test them anyway.
ASSUMED_CLAIMS = {"user_field": "user_claim", "org_field": "org_claim", "end_user_field": "end_user_claim",
                  "email_field": "email_claim"}
ASSUMED_DOMAIN = "example.com"

Overrides = tuple[tuple[str, object], ...]  # (data reference, value) pairs for `with ... as ...`


def _terms(overrides: Overrides) -> tuple[tuple[str, str], ...]:
    """The overrides' values as Rego terms: JSON values as they are, a frozenset as a Rego set."""
    return tuple((ref, rego_set(sorted(value)) if isinstance(value, frozenset) else _rego(value))
                 for ref, value in overrides)


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
    overrides: Overrides = ()
    kind: str = "decision"

    @property
    def replaces_custom(self) -> bool:
        """The case brings its own stand-in for the custom policies (data.regate.custom)."""
        return any(ref == "data.regate.custom" for ref, _ in self.overrides)


@dataclass(frozen=True)
class RuleCase:
    """The value `rule` (a data reference) takes for `input`; `expect` is Rego source."""

    name: str
    why: str
    rule: str
    input: dict
    expect: str
    overrides: Overrides = ()
    kind: str = "rule"


def rego_set(items: list) -> str:
    """A Rego set literal of JSON values (`set()` when empty), in a stable order."""
    terms = sorted(json.dumps(item, separators=(", ", ": "), sort_keys=True) for item in items)
    return "{" + ", ".join(terms) + "}" if terms else "set()"


def claim_value(claims: dict, claim: ClaimField | None):
    """A claim's value as the policy reads it: by its literal name, else by its dot path (None: absent)."""
    if claim is None:
        return None
    if claims.get(claim.name) is not None:
        return claims[claim.name]
    node = claims
    for part in claim.path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _read(claims: dict, claim: ClaimField | None) -> str | None:
    """An id claim's value: a non-empty string, else None."""
    value = claim_value(claims, claim)
    return value if isinstance(value, str) and value else None


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
    def __init__(self, config: Config, *, policy: AuthPolicy | None = None, overrides: Overrides = (),
                 prefix: str = "", note: str = "", assumed: tuple[tuple[str, ClaimField], ...] = (),
                 cases: list | None = None):
        self.config = config
        self.policy = policy or config.policy
        self.source = config.source_file.rsplit("/", 1)[-1]
        self.overrides = overrides
        self.prefix = prefix
        self.note = note
        self.assumed = assumed  # (identity rule, claim) of claim fields the config leaves unset, read as if set
        self.cases: list[DecisionCase | RuleCase] = [] if cases is None else cases

    def cite(self, setting) -> str:
        return setting.cite(self.source)

    def _named(self, name: str, why: str) -> tuple[str, str]:
        if not self.prefix:
            return name, why
        return f"test_{self.prefix}_{name.removeprefix('test_')}", f"{self.note}; {why}"

    def _claim_overrides(self, doc: dict) -> Overrides:
        """The assumed claims this input carries, for the identity rules that read them (unset here, so
        compiled to read nothing: a token without the claim is read by the compiled rule)."""
        credential = doc.get("credential", {})
        claims = credential.get("claims", {}) if credential.get("type") == "jwt" else {}
        values = ((rule, claim_value(claims, claim)) for rule, claim in self.assumed)
        return tuple((f"data.regate.identity.{rule}", value) for rule, value in values if value is not None)

    def as_if(self, prefix: str, note: str, overrides: Overrides, assumed: tuple[tuple[str, ClaimField], ...] = (),
              **settings) -> "_Builder":
        """A builder for this config as if `settings` (AuthPolicy fields) had these values; its cases
        replace the constants those settings compile to (`overrides`), read the `assumed` claims
        (identity rule, claim) the config leaves unset, and join this builder's."""
        def setting(name: str, value):
            current = getattr(self.policy, name)
            return replace(current, value=value, origin=None) if isinstance(current, Setting) else value

        policy = replace(self.policy, **{name: setting(name, value) for name, value in settings.items()})
        prefix = f"{self.prefix}_{prefix}" if self.prefix else prefix
        note = f"{self.note}, {note}" if self.note else note
        return _Builder(self.config, policy=policy, overrides=self.overrides + overrides, prefix=prefix, note=note,
                        assumed=self.assumed + assumed, cases=self.cases)

    @property
    def role_or_scope_models(self) -> bool:
        """Role or scope model limits apply: the cases about key and team models (made-up model
        names) would meet them too, so those are left to the role and scope cases."""
        return bool(self.policy.role_models.value) or bool(self.policy.enforce_scopes.value)

    def add(self, name, why, doc, allow, status, reason=None, state=STATE, upsert=False, team=None, upsert_team=False,
            overrides: Overrides = ()):
        name, why = self._named(name, why)
        self.cases.append(DecisionCase(name, why, doc, allow, status, reason, state, upsert, team, upsert_team,
                                       _terms(self.overrides + self._claim_overrides(doc) + overrides)))

    def add_rule(self, name, why, rule: str, doc: dict, expect: str, overrides: Overrides = ()):
        name, why = self._named(name, why)
        self.cases.append(RuleCase(name, why, rule, doc, expect, _terms(self.overrides + self._claim_overrides(doc) + overrides)))

    def path_for(self, role: str) -> str | None:
        """A path `role` may call (None: it may call none)."""
        return _allowed_path(self.policy.routes[role].value)

    def with_claim(self, claims: dict, claim: ClaimField, value) -> dict:
        return claim.put(claims, value)

    def claims_for(self, role: str, email: str | None = "dev@{domain}") -> dict:
        """Claims of a well-formed token of `role`, passing the email check when one is configured."""
        p = self.policy
        claims: dict = {}
        if role == "proxy_admin":
            claims["scope"] = f"openid {p.admin_scope.value}"
        if role == "team":
            claims = p.team_field.value.put(claims, TEAM)
        if role in ("team", "internal_user") and p.user_field.value:
            claims = p.user_field.value.put(claims, USER)
        if role in ("team", "internal_user") and p.user_allowed_roles.value:
            claims = p.user_roles_field.value.put(claims, [p.user_allowed_roles.value[0]])
        if p.email_field.value and email:
            domain = p.email_domains.value[0] if p.email_domains.value else "example.com"
            claims = p.email_field.value.put(claims, email.format(domain=domain))
        return claims

    def derived_user(self, claims: dict) -> str | None:
        """The user id the policy derives: the user claim, else (as in LiteLLM) the email."""
        p = self.policy
        return _read(claims, p.user_field.value) or _read(claims, p.email_field.value)

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
            value = claim_value(claims, claim)
            values = value if isinstance(value, list) else [value]
            found += [v for v in values if isinstance(v, str) and v]
        return found

    def build(self) -> list[DecisionCase | RuleCase]:
        p = self.policy
        self.credentials()
        self.public_routes()
        if p.jwt_enabled.value:
            self.jwt_roles()
            self.as_if("if_jwt_auth_disabled", f"{p.jwt_enabled.key} as if false",
                       (("data.regate.authz.jwt_enabled", False),), jwt_enabled=False).jwt_disabled()
        else:
            self.jwt_disabled()
            self.as_if("if_jwt_auth_enabled", f"{p.jwt_enabled.key} as if true",
                       (("data.regate.authz.jwt_enabled", True),), jwt_enabled=True).jwt_roles()
        self.virtual_keys()
        if self.role_or_scope_models:
            free = self.as_if("if_no_role_or_scope_models", "role_permissions models and scope_mappings as if unset",
                              (("data.regate.models._role_models", {}), ("data.regate.models.enforce_scopes", False)),
                              role_models=(), enforce_scopes=False)
            if p.jwt_enabled.value:
                free.team_models()
            free.virtual_keys()
        budget_testcases.add_cases(self)
        if p.custom_policies.value:
            as_if_testcases.custom_policies(self)
        self.subjects()
        self.dotted_claims()
        self.decision_log_mask()
        return self.cases

    def dotted_claims(self):
        """A claim named by a dot path is read by its literal name first (names like
        https://example.com/team contain dots), else through nested objects (the other cases)."""
        p = self.policy
        for rule, attr in CLAIM_RULES:
            claim = getattr(p, attr).value
            if claim is None or len(claim.path) < 2 or any(attr in i.fields for i in p.issuers):
                continue
            value = [TEAM] if attr in ("team_ids_field", "roles_field", "user_roles_field") else "id-1"
            doc = _jwt({claim.name: value}, "/v1/models")
            self.add_rule(f"test_claim_{attr}_by_its_literal_name", self.cite(getattr(p, attr)),
                          f"data.regate.identity.{rule}", doc, _rego(value))

    def jwt_roles(self):
        self.admin()
        self.team()
        self.internal_user()
        self.claim_types()
        self.email_domains()
        self.users()
        self.team_models()
        team_testcases.add_cases(self)
        access_testcases.add_cases(self)
        self.email_domains_if_set()
        self.users_if_checked()
        as_if_testcases.add_cases(self, self.path_for("team"))
        as_if_testcases.add_budget_cases(self)

    def jwt_disabled(self):
        self.add("test_jwt_refused_when_jwt_auth_disabled", self.cite(self.policy.jwt_enabled),
                 _jwt(self.claims_for("proxy_admin"), "/key/generate"), False, 401, "jwt_auth_disabled")

    def assume(self, attr: str, name: str | None = None) -> tuple[ClaimField, tuple[tuple[str, ClaimField], ...]]:
        """The claim `attr` (an AuthPolicy field) names, or (unset here) the claim `name` (default:
        ASSUMED_CLAIMS') with the identity rule that would read it, for as_if()."""
        claim = getattr(self.policy, attr).value
        if claim is not None:
            return claim, ()
        claim = ClaimField(name or ASSUMED_CLAIMS[attr])
        return claim, ((RULE_OF[attr], claim),)

    def email_domains_if_set(self):
        """The email check of a config without user_allowed_email_domain, as if it allowed ASSUMED_DOMAIN."""
        p = self.policy
        if p.email_domains.value:
            return
        claim, assumed = self.assume("email_field")
        overrides = (("data.regate.email_domains.enabled", True),
                     ("data.regate.tables.email_domains", {ASSUMED_DOMAIN: True}))
        self.as_if("if_email_domain_set", f"{p.email_domains.key} as if [{ASSUMED_DOMAIN}]", overrides, assumed,
                   email_domains=(ASSUMED_DOMAIN,), email_field=claim).email_domains()

    def users_if_checked(self):
        """The user check the other way round: must-exist where users are upserted or not checked,
        upsert where they must exist."""
        p = self.policy
        claim, assumed = self.assume("user_field")
        for upsert in (False, True):
            if p.checks_user_existence and p.user_id_upsert.value == upsert:
                continue
            overrides = (("data.regate.users.checked_by_config", True),)
            if p.user_id_upsert.value != upsert:
                overrides += (("data.regate.users.upsert", upsert),)
            label = "if_user_id_upsert" if upsert else "if_users_must_exist"
            self.as_if(label, f"{p.user_id_upsert.key} as if {str(upsert).lower()}, users named by a claim", overrides,
                       assumed, user_field=claim, user_id_upsert=upsert).users()

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
        owner = {"user_id": None, "team_id": None, "org_id": None, "models": []}
        self.add("test_virtual_key_without_owner_has_no_role", "a key with neither a team nor a user",
                 {"request": {"method": "POST", "path": private}, "credential": {"type": "virtual_key", "key": owner}},
                 False, 403, "no_role")
        for name, path in (("dot_segments", "/v1/chat/completions/../../key/generate"), ("empty_segment", "/v1//models"),
                           ("trailing_slash", "/v1/models/"), ("escaped_slash", "/v1%2Fmodels")):
            self.add(f"test_non_canonical_path_{name}_is_400", "paths are compared only in canonical form",
                     {"request": {"method": "POST", "path": path}, "credential": {"type": "master_key"}},
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
            blocked_admin = p.team_field.value.put(claims, BLOCKED_TEAM)
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
            blocked = p.team_field.value.put(claims, BLOCKED_TEAM)
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
        bad_team = p.team_field.value.put({}, {"id": TEAM})
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
        self.add("test_known_user_is_allowed", why, self.token(claims, path), True, 200)
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
        user_path = _allowed_path(self.policy.routes["internal_user"].value)
        if user_path:
            key = {"user_id": USER, "team_id": None, "org_id": None, "models": []}
            doc = {"request": {"method": "POST", "path": user_path}, "credential": {"type": "virtual_key", "key": key}}
            self.add("test_virtual_key_of_user_may_call_user_route", "a key without a team takes the internal_user role",
                     doc, True, 200)

    def claims_with_every_id(self) -> dict:
        """Claims carrying every id the config reads: team, user, organization, end user, email."""
        values = {"team_field": TEAM, "user_field": USER, "org_field": "org-1", "end_user_field": "customer-1",
                  "email_field": f"dev@{ASSUMED_DOMAIN}"}
        claims: dict = {}
        for name, value in values.items():
            claim = getattr(self.policy, name).value
            if claim is not None:
                claims = claim.put(claims, value)
        return claims

    def _subject_case(self, name: str, why: str, claims: dict):
        p = self.policy
        read = {attr: _read(claims, getattr(p, attr).value)
                for attr in ("team_field", "user_field", "org_field", "end_user_field", "email_field")}
        subject = {"user_id": read["user_field"] or read["email_field"], "team_id": read["team_field"],
                   "org_id": read["org_field"], "end_user_id": read["end_user_field"], "email": read["email_field"]}
        self.add_rule(name, why, "data.regate.authz.subject", self.token(claims, "/v1/models"), _rego(subject))

    def _subjects_of_tokens(self):
        p = self.policy
        claims = self.claims_with_every_id()
        self._subject_case("test_subject_of_a_token", "the claims named by the *_jwt_field settings", claims)
        if p.user_field.value is not None and p.email_field.value is not None:
            without_user = {k: v for k, v in claims.items() if k != p.user_field.value.path[0]}
            self._subject_case("test_subject_without_user_claim_is_the_email", f"{self.cite(p.user_field)}: else the email",
                               without_user)

    def subjects(self):
        """Who a token is (the ids spend is attributed to), from its claims and from a virtual key."""
        p = self.policy
        self._subjects_of_tokens()
        unset = {attr: self.assume(attr) for attr in ASSUMED_CLAIMS if getattr(p, attr).value is None}
        if unset:
            assumed = tuple(rule for _, rules in unset.values() for rule in rules)
            self.as_if("if_every_claim_field_set", f"the unset claim fields as if {sorted(ASSUMED_CLAIMS.values())}",
                       (), assumed, **{attr: claim for attr, (claim, _) in unset.items()})._subjects_of_tokens()
        key = {"user_id": USER, "team_id": TEAM, "org_id": "org-1", "models": []}
        doc = {"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "virtual_key", "key": key},
               "facts": {"teams": {TEAM: []}}}
        subject = {"user_id": USER, "team_id": TEAM, "org_id": "org-1", "end_user_id": None, "email": None}
        self.add_rule("test_subject_of_a_virtual_key", "a virtual key is its stored owner", "data.regate.authz.subject",
                      doc, _rego(subject))

    def decision_log_mask(self):
        """What OPA's decision log keeps of a token: its id claims only, and the email only as the user id."""
        p = self.policy
        why = "decision_logs.mask_decision: /regate/system/log/mask"
        rule = "data.regate.system.log.mask"
        values = {"team_field": TEAM, "team_ids_field": [TEAM, "team-b"], "user_field": USER, "org_field": "org-1",
                  "end_user_field": "customer-1", "email_field": f"dev@{ASSUMED_DOMAIN}", "object_id_field": "object-1",
                  "team_alias_field": "Team A", "org_alias_field": "Org A", "roles_field": ["admins"],
                  "user_roles_field": ["users"]}
        for issuer in (None, *(i.issuer for i in p.issuers)):
            # Every claim of the top-level fields and of this issuer's own, and two no config names.
            claims = {"name": "Dev One", "iss": issuer or "https://idp.invalid", "scope": "openid profile"}
            for view in dict.fromkeys((None, issuer)):
                for attr, value in values.items():
                    if (claim := p.claim_field(attr, view)) is not None:
                        claims = claim.put(claims, value)
            kept: dict = {}
            for claim in p.id_claims(issuer):
                if (value := claim_value(claims, claim)) is not None:
                    kept = claim.put(kept, value)
            credential = {"type": "jwt", "claims": claims} | ({"issuer": issuer} if issuer else {})
            doc = {"request": {"method": "GET", "path": "/v1/models"}, "credential": credential}
            slug = _slug(issuer.split("://")[-1]) + "_" if issuer else ""
            email = f"dev@{ASSUMED_DOMAIN}"
            remove = {"op": "remove", "path": "/result/subject/email"}
            event = {"input": doc, "result": {"allow": True, "subject": {"user_id": USER, "email": email}}}
            self.add_rule(f"test_decision_log_{slug}keeps_only_id_claims", why, rule, event,
                          rego_set([_upsert_claims(kept), remove]))
            # Where the email is the user id (the token has no user claim) it is an id, and stays.
            email_claim = p.claim_field("email_field", issuer)
            as_user = email_claim.put(kept, claim_value(claims, email_claim)) if email_claim else kept
            event = {"input": doc, "result": {"allow": True, "subject": {"user_id": email, "email": email}}}
            self.add_rule(f"test_decision_log_{slug}keeps_the_email_that_is_the_user_id", why, rule, event,
                          rego_set([_upsert_claims(as_user)]))
        master = {"input": {"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "master_key"}},
                  "result": {"allow": True, "subject": {"email": None}}}
        self.add_rule("test_decision_log_of_master_key_is_kept_whole", why, rule, master, rego_set([]))

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


def _upsert_claims(claims: dict) -> dict:
    return {"op": "upsert", "path": "/input/credential/claims", "value": claims}


def _rego(value) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _slug(path: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in path.strip("/"))
    return "_".join(part for part in out.split("_") if part) or "root"


def decision_cases(config: Config) -> list[DecisionCase | RuleCase]:
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
