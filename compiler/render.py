"""Render the intermediate model into the bundle's files (Rego, data, tests).

Pure: model in, {bundle path: bytes} out. Templates live in templates/; this
module only prepares small view values (citations, Rego literals) for them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import jinja2

from regate.common.money import usd_to_nanos

from . import citations, custom_policies, resources, routes
from .claim_rules import CLAIM_RULES, ID_CLAIM_RULES
from .model import ISSUER_FIELDS, MAX_TEAMS_PER_TOKEN, ClaimField, Config, Setting
from .testcases import decision_cases

POLICY_FILES = ("identity", "teams", "roles", "routes", "email_domains", "blocked_teams", "models", "users", "budgets",
                "authz")
CUSTOM_CHECKS = "custom_checks"  # rendered only when the config lists custom policies
DATA_PATH = "regate/tables/data.json"
MASK_PATH = "regate/system/log/mask.rego"
MASK_DECISION = "/regate/system/log/mask"  # what every OPA's decision_logs.mask_decision names
PUBLIC = "public"  # the key of public_allowed_routes beside the roles' route sets


_REGO_KEYWORDS = frozenset({"as", "contains", "default", "else", "every", "false", "if", "import", "in", "not",
                            "null", "package", "some", "true", "with"})


def rego_ref(base: str, key: str) -> str:
    """`base.key`, or `base["key"]` when the key is no plain identifier (the form `opa fmt` keeps)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and key not in _REGO_KEYWORDS:
        return f"{base}.{key}"
    return f"{base}[{rego_literal(key)}]"


def rego_set(values) -> str:
    """A set of strings as a Rego term (`set()` when empty), sorted."""
    return "{" + ", ".join(rego_literal(v) for v in sorted(values)) + "}" if values else "set()"


def _grants(setting: Setting, source: str) -> _View:
    """{name: [models]} of ModelGrants (role_permissions models, scope_mappings) with their citation."""
    return _View(setting.cite(source), rego_literal({g.name: sorted(set(g.models)) for g in setting.value}))


def _role_mappings(setting: Setting, source: str) -> _View:
    table: dict[str, list[str]] = {}
    for mapping in setting.value:
        table[mapping.role] = sorted(set(table.get(mapping.role, [])) | {mapping.internal_role})
    return _View(setting.cite(source), rego_literal(dict(sorted(table.items()))))


def _role_fields(policy) -> str:
    pairs = [f"[{rego_literal(field.name)}, {rule}]" for rule, field in
             (("_roles_value", policy.roles_field.value), ("_user_roles_value", policy.user_roles_field.value)) if field]
    return "[" + ", ".join(pairs) + "]"


def rego_literal(value) -> str:
    """A JSON value as a one-line Rego term in `opa fmt` style."""
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


@dataclass(frozen=True)
class _View:
    cite: str
    rego: str = ""
    describe: str = ""
    rule: str = ""
    enabled: str = ""


def _setting_view(setting: Setting, source: str) -> _View:
    return _View(setting.cite(source), rego_literal(setting.value))


def _read(field: ClaimField | None) -> str:
    """A Rego term reading the claim, null when the token lacks it."""
    if field is None:
        return "null"
    if len(field.path) > 1:
        return f"_claim({rego_literal(field.name)}, {rego_literal(list(field.path))})"
    return f"object.get(claims, {rego_literal(field.name)}, null)"


def _overrides(policy, attr: str, source: str) -> list[dict]:
    """The issuers entries that set their own claim for `attr`, for their tokens."""
    return [{"issuer": i.issuer, "cite": i.fields[attr].cite(source), "describe": f"claim {i.fields[attr].value.name}",
             "read": _read(i.fields[attr].value), "name": i.fields[attr].value.name}
            for i in policy.issuers if attr in i.fields]


def _claim_views(policy, source: str) -> list[dict]:
    views = []
    for rule, attr in CLAIM_RULES:
        setting: Setting[ClaimField | None] = getattr(policy, attr)
        field = setting.value
        views.append({"rule": rule, "cite": setting.cite(source), "describe": f"claim {field.name}" if field else "not set",
                      "name": field.name if field else None, "path": list(field.path) if field else [],
                      "dotted": bool(field) and len(field.path) > 1, "read": _read(field),
                      "overrides": _overrides(policy, attr, source)})
    return views


def _claim_name(policy, attr: str, source: str) -> str | None:
    """A Rego term for the name of the claim `attr` reads (per issuer when issuers set their own)."""
    field = getattr(policy, attr).value
    overrides = _overrides(policy, attr, source)
    if not overrides:
        return rego_literal(field.name) if field else None
    default = field.name if field else next(key for key, name in ISSUER_FIELDS.items() if name == attr)
    names = {o["issuer"]: o["name"] for o in overrides}
    return f"object.get({rego_literal(names)}, issuer, {rego_literal(default)})"


def _id_fields(policy, source: str) -> str:
    """`[[claim name, rule], ...]` of the configured id claims: checking a claim nobody named costs every decision."""
    pairs = [f"[{name}, {rule}]" for rule, attr in ID_CLAIM_RULES if (name := _claim_name(policy, attr, source))]
    return "[" + ", ".join(pairs) + "]"


def _route_sets(policy) -> dict[str, Setting]:
    """Every route set by its key in data.regate.tables.routes: the roles', and `public`."""
    return {**policy.routes, PUBLIC: policy.public_routes}


def _budget_view(setting: Setting, source: str) -> _View:
    if setting.value is None:
        return _View(setting.cite(source), describe="not set", enabled="")
    nanos = usd_to_nanos(setting.value)
    return _View(setting.cite(source), rego_literal(nanos), f"USD {setting.value} = {nanos} nano-USD", enabled="true")


def _route_views(config: Config, source: str) -> list[dict]:
    views = []
    for key, setting in _route_sets(config.policy).items():
        rs = setting.value
        views.append(
            {
                "role": key,
                "cite": setting.cite(source),
                "entries": ", ".join(rs.entries) or "(none)",
                "summary": f"{len(rs.exact)} paths, {len(rs.templates)} templates, {len(rs.prefixes)} prefixes"
                           f" in data.regate.tables.routes.{key}",
            }
        )
    return views


def _mask_paths(fields) -> list[list[str]]:
    """Each claim by its literal name and as a dot path (as identity.rego reads them), once."""
    paths = dict.fromkeys(path for f in fields if f is not None for path in ((f.name,), f.path))
    return [list(path) for path in paths]


def _mask_view(config: Config, source: str) -> dict:
    """The claims the decision log keeps (AuthPolicy.id_claims), for tokens of each issuer."""
    p = config.policy

    def claims(issuer: str | None) -> dict:
        return {"ids": _mask_paths(p.id_claims(issuer)), "email": _mask_paths([p.claim_field("email_field", issuer)])}

    kept = [p.team_field, p.team_ids_field, p.user_field, p.org_field, p.end_user_field, p.object_id_field, p.email_field]
    return {
        "cites": [f"{s.cite(source)}: {s.value.name}" for s in kept if s.value is not None]
                 + [f"{s.cite(source)}: {s.value.name}" for i in p.issuers for s in i.fields.values()],
        "default": rego_literal(claims(None)),
        "issuers": rego_literal({i.issuer: claims(i.issuer) for i in p.issuers}),
    }


def tables(config: Config) -> dict:
    """The bundle's data document (data.regate.tables): large sets keyed by id for O(1) lookups."""
    policy = config.policy
    return {
        "email_domains": {d: True for d in policy.email_domains.value},
        "routes": {key: routes.table(setting.value) for key, setting in _route_sets(policy).items()},
    }


def render(config: Config) -> dict[str, bytes]:
    """Every file of the bundle except .manifest, keyed by bundle path."""
    policy = config.policy
    source = PurePosixPath(config.source_file).name
    custom = policy.custom_policies.value
    domains = policy.email_domains
    claim_views = _claim_views(policy, source)
    context = {
        "source": source,
        "claim_fields": claim_views,
        "per_issuer": any(view["overrides"] for view in claim_views),
        # _claim() reads the dotted claims of per-issuer fields (the others are read inline)
        "reads_dotted": any("_claim(" in read for view in claim_views if view["overrides"]
                            for read in (view["read"], *(o["read"] for o in view["overrides"]))),
        "any_prefixes": any(s.value.prefixes for s in _route_sets(policy).values()),
        "team_ids_name": _claim_name(policy, "team_ids_field", source),
        "role_fields": _role_fields(policy),
        "role_mappings": _role_mappings(policy.role_mappings, source),
        "object_id_cite": policy.object_id_field.cite(source),
        "user_roles": _View(policy.user_allowed_roles.cite(source), rego_set(policy.user_allowed_roles.value)),
        "role_models": _grants(policy.role_models, source),
        "enforce_scopes": _setting_view(policy.enforce_scopes, source),
        "scope_models": _grants(policy.scope_mappings, source),
        "id_fields": _id_fields(policy, source),
        "max_teams": MAX_TEAMS_PER_TOKEN,
        "enforce_models": _setting_view(policy.enforce_team_models, source),
        "enforce_team_models": policy.enforce_team_models.value,
        "default_team": _setting_view(policy.team_id_default, source),
        "team_upsert": _setting_view(policy.team_id_upsert, source),
        "team_upsert_enabled": bool(policy.team_id_upsert.value),
        "admin_scope": _setting_view(policy.admin_scope, source),
        "route_sets": _route_views(config, source),
        "domains": _View(
            domains.cite(source),
            describe=(", ".join(domains.value) + " (data.regate.tables.email_domains)") if domains.value else "not set: no email check",
            enabled=rego_literal(bool(domains.value)),
        ),
        "email_field": _View(policy.email_field.cite(source)),
        "upsert": _setting_view(policy.user_id_upsert, source),
        "user_field": _View(policy.user_field.cite(source)),
        "user_check": _View("", rego_literal(policy.checks_user_existence)),
        "jwt_enabled": _setting_view(policy.jwt_enabled, source),
        "proxy_budget": _budget_view(config.budgets.proxy_max_budget, source),
        "proxy_duration": _View(config.budgets.proxy_budget_duration.cite(source),
                                describe=(f"the enforcer counts the proxy's spend per {config.budgets.proxy_budget_duration.value}"
                                          if config.budgets.proxy_budget_duration.value else "not set: the whole lifetime")),
        "end_user_budget": _budget_view(config.budgets.max_end_user_budget, source),
        "checks_config": citations.annotation_values(config),
        "mask": _mask_view(config, source),
        "cases": decision_cases(config),
        "custom_policies": [{"cite": f"{policy.custom_policies.key}[{i}] ({source}:{p.origin.line})",
                             "path": p.path, "module": p.module, "is_test": p.is_test} for i, p in enumerate(custom)],
        "custom_modules": sorted(p.module for p in custom if not p.is_test),
        "rego": rego_literal,
        "ref": rego_ref,
    }
    env = _env()
    names = POLICY_FILES + ((CUSTOM_CHECKS,) if custom else ())
    files = {f"regate/{name}.rego": env.get_template(f"{name}.rego.j2").render(context) for name in names}
    files.update({custom_policies.bundle_path(p): p.text for p in custom})
    files[MASK_PATH] = env.get_template("mask.rego.j2").render(context)
    files["regate/authz_test.rego"] = env.get_template("authz_test.rego.j2").render(context)
    files[DATA_PATH] = json.dumps(tables(config), indent=2, sort_keys=True) + "\n"
    return {path: text.encode("utf-8") for path, text in files.items()}
