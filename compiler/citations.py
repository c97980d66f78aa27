"""Which config keys each check of the decision comes from, for the checks' METADATA annotations.

authz.rego annotates every check rule with its reason code and these citations
(`custom.config`), so `opa inspect` — and `regate explain` — can say which config key and
line a denial or a pass comes from. A check with no key behind it (a missing credential, a
blocked team, which is runtime state) cites nothing.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from .model import ROLES, Config, Setting


def _cite(setting: Setting, source: str, **extra) -> dict:
    line = setting.origin.line if setting.origin else None
    return {"key": setting.key, "file": source, "line": line} | extra


def citations(config: Config) -> dict[str, list[dict]]:
    """reason code → [{"key", "file", "line" (None: the documented default), ...}]."""
    p = config.policy
    source = PurePosixPath(config.source_file).name
    claims = [p.team_field, p.user_field, p.org_field, p.end_user_field, p.email_field]

    def cite(*settings: Setting) -> list[dict]:
        return [_cite(s, source) for s in settings]

    return {
        "missing_credential": [],
        "jwt_auth_disabled": cite(p.jwt_enabled),
        "invalid_claims": cite(*claims),
        "path_not_canonical": [],
        "no_role": cite(p.admin_scope, p.team_field, p.user_field, p.email_field),
        "email_domain_not_allowed": cite(p.email_domains, p.email_field),
        "team_blocked": [],
        "state_unavailable": [],
        "route_not_allowed": [_cite(p.routes[role], source, role=role) for role in ROLES],
        "model_not_allowed": [],
        "user_not_found": cite(p.user_field, p.user_id_upsert),
    }


def annotation_values(config: Config) -> dict[str, str]:
    """Each reason's citations as the YAML value of `config:` in a METADATA `custom` block: ` []`, or
    one JSON object (a YAML flow mapping) per comment line."""
    def value(cited: list[dict]) -> str:
        return "".join(f"\n#     - {json.dumps(c, separators=(', ', ': '))}" for c in cited) or " []"

    return {reason: value(cited) for reason, cited in citations(config).items()}
