"""Which config keys each check of the decision comes from, for the checks' METADATA annotations.

authz.rego annotates every check rule with its reason code and these citations
(`custom.config`), so `opa inspect` — and `regate explain` — can say which config key and
line a denial or a pass comes from. A check with no key behind it (a missing credential, a
blocked team, which is runtime state) cites nothing. Besides the reasons, two blocks of the
decision are annotated the same way: the public routes that open a route to every caller
(`public_route`) and the custom policies (`custom_policies`).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from .model import ROLES, AuthPolicy, Config, Setting

# The checks that are no reason code: they allow (a public route) or deny with codes of their own.
BLOCKS = ("public_route", "custom_policies")


def _cite(setting: Setting, source: str, **extra) -> dict:
    line = setting.origin.line if setting.origin else None
    return {"key": setting.key, "file": source, "line": line} | extra


def _set(setting: Setting) -> bool:
    """Whether the setting means anything here: written in the config, or a default that is on."""
    return setting.origin is not None or bool(setting.value)


def _issuer_fields(policy: AuthPolicy) -> list[Setting]:
    return [s for issuer in policy.issuers for s in issuer.fields.values()]


def citations(config: Config) -> dict[str, list[dict]]:
    """reason code (or BLOCKS name) → [{"key", "file", "line" (None: the documented default), ...}]."""
    p = config.policy
    source = PurePosixPath(config.source_file).name

    def cite(*settings: Setting) -> list[dict]:
        return [_cite(s, source) for s in settings]

    def named(*settings: Setting) -> list[dict]:
        """The settings that mean something here (a config with no role mappings is not cited for them)."""
        return cite(*(s for s in settings if _set(s)))

    team_claims = (p.team_field, p.team_ids_field, p.team_alias_field, p.object_id_field, p.team_id_default)
    claims = (p.team_field, p.team_ids_field, p.team_alias_field, p.user_field, p.org_field, p.org_alias_field,
              p.end_user_field, p.email_field, p.object_id_field, p.roles_field, p.user_roles_field)
    b = config.budgets
    return {
        "missing_credential": [],
        "jwt_auth_disabled": cite(p.jwt_enabled),
        "invalid_claims": named(*claims, *_issuer_fields(p)),
        "path_not_canonical": [],
        "no_role": named(p.admin_scope, p.roles_field, p.role_mappings, *team_claims, p.user_field, p.email_field),
        "role_not_allowed": named(p.user_roles_field, p.user_allowed_roles),
        "team_not_granted": named(*team_claims),
        "email_domain_not_allowed": cite(p.email_domains, p.email_field),
        "team_not_found": cite(p.enforce_team_models, p.team_id_upsert),
        "team_blocked": [],
        "state_unavailable": [],
        "route_not_allowed": [_cite(p.routes[role], source, role=role) for role in ROLES],
        "model_not_allowed": named(p.enforce_rbac, p.role_models, p.enforce_scopes, p.scope_mappings),
        "user_not_found": cite(p.user_field, p.user_id_upsert),
        "budget_exceeded": named(b.proxy_max_budget, b.proxy_budget_duration, b.max_end_user_budget),
        "public_route": [_cite(p.public_routes, source)],
        "custom_policies": [{"key": f"{p.custom_policies.key}[{i}]", "file": source,
                             "line": c.origin.line if c.origin else None, "module": c.path}
                            for i, c in enumerate(p.custom_policies.value) if not c.is_test],
    }


def annotation_values(config: Config) -> dict[str, str]:
    """Each reason's citations as the YAML value of `config:` in a METADATA `custom` block: ` []`, or
    one JSON object (a YAML flow mapping) per comment line."""
    def value(cited: list[dict]) -> str:
        return "".join(f"\n#     - {json.dumps(c, separators=(', ', ': '))}" for c in cited) or " []"

    return {reason: value(cited) for reason, cited in citations(config).items()}
