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

from .model import AuthPolicy, ClaimField, Config
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
    overrides: Overrides = ()
    kind: str = "decision"


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
                 prefix: str = "", note: str = "", cases: list | None = None):
        self.config = config
        self.policy = policy or config.policy
        self.source = config.source_file.rsplit("/", 1)[-1]
        self.overrides = overrides
        self.prefix = prefix
        self.note = note
        self.cases: list[DecisionCase | RuleCase] = [] if cases is None else cases

    def cite(self, setting) -> str:
        return setting.cite(self.source)

    def _named(self, name: str, why: str) -> tuple[str, str]:
        if not self.prefix:
            return name, why
        return f"test_{self.prefix}_{name.removeprefix('test_')}", f"{self.note}; {why}"

    def add(self, name, why, doc, allow, status, reason=None, state=STATE, upsert=False):
        name, why = self._named(name, why)
        self.cases.append(DecisionCase(name, why, doc, allow, status, reason, state, upsert, self.overrides))

    def add_rule(self, name, why, rule: str, doc: dict, expect: str, overrides: Overrides = ()):
        name, why = self._named(name, why)
        self.cases.append(RuleCase(name, why, rule, doc, expect, self.overrides + overrides))

    def as_if(self, prefix: str, note: str, overrides: Overrides, **settings) -> "_Builder":
        """A builder for this config as if `settings` (AuthPolicy fields) had these values; its cases
        replace the constants those settings compile to (`overrides`) and join this builder's."""
        policy = replace(self.policy, **{name: replace(getattr(self.policy, name), value=value, origin=None)
                                         for name, value in settings.items()})
        prefix = f"{self.prefix}_{prefix}" if self.prefix else prefix
        note = f"{self.note}, {note}" if self.note else note
        return _Builder(self.config, policy=policy, overrides=self.overrides + overrides, prefix=prefix, note=note,
                        cases=self.cases)

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
        if p.email_field.value and email:
            domain = p.email_domains.value[0] if p.email_domains.value else "example.com"
            claims = p.email_field.value.put(claims, email.format(domain=domain))
        return claims

    def derived_user(self, claims: dict) -> str | None:
        """The user id the policy derives: the user claim, else (as in LiteLLM) the email."""
        p = self.policy
        return _read(claims, p.user_field.value) or _read(claims, p.email_field.value)

    def token(self, claims: dict, path: str, *, user_exists: bool = True, facts_user: str | None = None) -> dict:
        """A JWT input; with the store's facts about the derived user when the config checks users."""
        user = self.derived_user(claims)
        facts = None
        if self.policy.checks_user_existence and user:
            facts = {"user_id": facts_user or user, "user_exists": user_exists}
        return _jwt(claims, path, facts=facts)

    def build(self) -> list[DecisionCase | RuleCase]:
        p = self.policy
        self.credentials()
        if p.jwt_enabled.value:
            self.jwt_roles()
            self.as_if("if_jwt_auth_disabled", f"{p.jwt_enabled.key} as if false",
                       (("data.regate.authz.jwt_enabled", False),)).jwt_disabled()
        else:
            self.jwt_disabled()
            self.as_if("if_jwt_auth_enabled", f"{p.jwt_enabled.key} as if true",
                       (("data.regate.authz.jwt_enabled", True),)).jwt_roles()
        self.virtual_keys()
        self.subjects()
        self.decision_log_mask()
        return self.cases

    def jwt_roles(self):
        self.admin()
        self.team()
        self.internal_user()
        self.claim_types()
        self.email_domains()
        self.users()
        self.team_models()
        self.email_domains_if_set()
        self.users_if_checked()

    def jwt_disabled(self):
        self.add("test_jwt_refused_when_jwt_auth_disabled", self.cite(self.policy.jwt_enabled),
                 _jwt(self.claims_for("proxy_admin"), "/key/generate"), False, 401, "jwt_auth_disabled")

    def email_domains_if_set(self):
        """The email check of a config without user_allowed_email_domain, as if it allowed ASSUMED_DOMAIN."""
        p = self.policy
        if p.email_domains.value:
            return
        field = p.email_field.value or ClaimField(ASSUMED_CLAIMS["email_field"])
        overrides = (("data.regate.email_domains.enabled", True),
                     ("data.regate.tables.email_domains", {ASSUMED_DOMAIN: True}))
        if p.email_field.value is None:
            overrides += (("data.regate.identity._email_field", field.as_json()),)
        self.as_if("if_email_domain_set", f"{p.email_domains.key} as if [{ASSUMED_DOMAIN}]", overrides,
                   email_domains=(ASSUMED_DOMAIN,), email_field=field).email_domains()

    def users_if_checked(self):
        """The user check the other way round: must-exist where users are upserted or not checked,
        upsert where they must exist."""
        p = self.policy
        field = p.user_field.value or ClaimField(ASSUMED_CLAIMS["user_field"])
        assumed = () if p.user_field.value else (("data.regate.identity._user_field", field.as_json()),)
        for upsert in (False, True):
            if p.checks_user_existence and p.user_id_upsert.value == upsert:
                continue
            overrides = assumed + (("data.regate.users.checked_by_config", True),)
            if p.user_id_upsert.value != upsert:
                overrides += (("data.regate.users.upsert", upsert),)
            label = "if_user_id_upsert" if upsert else "if_users_must_exist"
            self.as_if(label, f"{p.user_id_upsert.key} as if {str(upsert).lower()}, users named by a claim", overrides,
                       user_field=field, user_id_upsert=upsert).users()

    def credentials(self):
        self.add("test_master_key_may_call_any_route", "general_settings.master_key: every route",
                 {"request": {"method": "POST", "path": OUTSIDE_PATH}, "credential": {"type": "master_key"}}, True, 200)
        self.add("test_missing_credential_is_401", "no credential, no access",
                 {"request": {"method": "POST", "path": "/v1/chat/completions"}, "credential": {"type": "none"}},
                 False, 401, "missing_credential")
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
        claims = self.claims_for("internal_user")
        if self.derived_user(claims):
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
        if not path:
            return
        key = {"user_id": None, "team_id": TEAM, "org_id": None, "models": ["model-a"]}
        doc = {"request": {"method": "POST", "path": path, "model": "model-a"}, "credential": {"type": "virtual_key", "key": key}}
        self.add("test_virtual_key_of_team_may_call_team_route", "a key with a team takes the team role", doc, True, 200)
        other = {"request": dict(doc["request"], model="model-b"), "credential": doc["credential"]}
        self.add("test_virtual_key_limited_to_its_models", "/key/generate models", other, False, 403, "model_not_allowed")
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

    def _subject(self, name: str, why: str):
        p = self.policy
        claims = self.claims_with_every_id()
        read = {name: _read(claims, getattr(p, name).value) for name in ("team_field", "user_field", "org_field",
                                                                        "end_user_field", "email_field")}
        subject = {"user_id": read["user_field"] or read["email_field"], "team_id": read["team_field"],
                   "org_id": read["org_field"], "end_user_id": read["end_user_field"], "email": read["email_field"]}
        self.add_rule(name, why, "data.regate.identity.subject", _jwt(claims, "/v1/models"), _rego(subject))

    def _subject_without_user_claim(self):
        """A token without the user claim is identified by its email."""
        p = self.policy
        if p.user_field.value is None or p.email_field.value is None:
            return
        claims = self.claims_with_every_id()
        without_user = {k: v for k, v in claims.items() if k != p.user_field.value.path[0]}
        subject = {"user_id": _read(without_user, p.email_field.value), "team_id": _read(without_user, p.team_field.value),
                   "org_id": _read(without_user, p.org_field.value),
                   "end_user_id": _read(without_user, p.end_user_field.value),
                   "email": _read(without_user, p.email_field.value)}
        self.add_rule("test_subject_without_user_claim_is_the_email", f"{self.cite(p.user_field)}: else the email",
                      "data.regate.identity.subject", _jwt(without_user, "/v1/models"), _rego(subject))

    def subjects(self):
        """Who a token is (the ids spend is attributed to), from its claims and from a virtual key."""
        p = self.policy
        self._subject("test_subject_of_a_token", "the claims named by the *_jwt_field settings")
        self._subject_without_user_claim()
        unset = {name: ClaimField(claim) for name, claim in ASSUMED_CLAIMS.items() if getattr(p, name).value is None}
        if unset:
            overrides = tuple((f"data.regate.identity._{name}", claim.as_json()) for name, claim in unset.items())
            every = self.as_if("if_every_claim_field_set", f"the unset claim fields as if {sorted(ASSUMED_CLAIMS.values())}",
                               overrides, **unset)
            every._subject("test_subject_of_a_token", "every claim field read")
            every._subject_without_user_claim()
        key = {"user_id": USER, "team_id": TEAM, "org_id": "org-1", "models": []}
        doc = {"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "virtual_key", "key": key}}
        subject = {"user_id": USER, "team_id": TEAM, "org_id": "org-1", "end_user_id": None, "email": None}
        self.add_rule("test_subject_of_a_virtual_key", "a virtual key is its stored owner", "data.regate.identity.subject",
                      doc, _rego(subject))

    def decision_log_mask(self):
        """What OPA's decision log keeps of a token: its id claims only, and the email only as the user id."""
        p = self.policy
        email_is_user_id = p.user_field.value is None
        claims = self.claims_with_every_id() | {"name": "Dev One", "groups": ["admins"]}
        kept: dict = {}
        for setting in p.id_claims:
            value = _read(claims, setting.value)
            if value is not None:
                kept = setting.value.put(kept, value)
        event = {"input": _jwt(claims, "/v1/models"), "result": {"allow": True, "subject": {"email": "dev@example.com"}}}
        upsert = {"op": "upsert", "path": "/input/credential/claims", "value": kept}
        remove = {"op": "remove", "path": "/result/subject/email"}
        why = "decision_logs.mask_decision: /regate/system/log/mask"
        rule = "data.regate.system.log.mask"
        ops = [upsert] if email_is_user_id else [upsert, remove]
        self.add_rule("test_decision_log_keeps_only_id_claims", why, rule, event, rego_set(ops))
        if email_is_user_id:
            self.add_rule("test_if_user_field_set_decision_log_drops_the_email", f"{why}, as if {p.user_field.key} were set",
                          rule, event, rego_set([upsert, remove]), (("data.regate.system.log.email_is_user_id", False),))
        master = {"input": {"request": {"method": "GET", "path": "/v1/models"}, "credential": {"type": "master_key"}},
                  "result": {"allow": True, "subject": {"email": None}}}
        self.add_rule("test_decision_log_of_master_key_is_kept_whole", why, rule, master, rego_set([]))

    def team_models(self):
        p = self.policy
        path = _allowed_path(p.routes["team"].value)
        if not (path and p.team_field.value):
            return
        claims = self.claims_for("team")
        team = {"team_id": TEAM, "team_models": ["model-a"]}

        def doc(model: str, facts: dict) -> dict:
            token = self.token(claims, path)
            token["request"]["model"] = model
            token["facts"] = {**token.get("facts", {}), **facts}
            return token

        why = "/team/new models"
        self.add("test_team_may_use_its_models", why, doc("model-a", team), True, 200)
        self.add("test_team_limited_to_its_models", why, doc("model-b", team), False, 403, "model_not_allowed")
        self.add("test_team_models_for_another_team_fail_closed", "facts count only for the team id the policy derives",
                 doc("model-a", dict(team, team_id="someone-else")), False, 403, "model_not_allowed")


def _rego(value) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _read(claims: dict, claim: ClaimField | None):
    """A claim's value as the policy reads it: by literal name, else by dot path; ids only (non-empty strings)."""
    if claim is None:
        return None
    value = claims.get(claim.name)
    if value is None:
        value = claims
        for part in claim.path:
            value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, str) and value else None


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
