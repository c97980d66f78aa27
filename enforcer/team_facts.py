"""What the store knows about the teams a request may run as, for the OPA input's `facts`.

The enforcer looks up every team the credential could run as, read the way the policy
reads them (with the claim fields of the token's issuer): the team id claim, the object id
claim, the team list claim, the team alias claim, the default team, a virtual key's team,
and the x-litellm-team-id header (as an id and as an alias; not for requests without a
credential, which the policy judges on nothing else).
Which of them the request runs as is the policy's choice (data.regate.teams), never this
module's. A team list longer than the policy accepts is not looked up (the policy refuses
the token). With a model named, the teams whose models exclude it are listed too
(`teams_without_model`): the policy then skips them without a check each when it looks for
one that may use the model. Answers are cached briefly per list of ids (a token's groups come
again with each of its requests: one lookup, not one per team) and per alias.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from regate.common.errors import BadRequestError
from regate.compiler.model import MAX_TEAMS_PER_TOKEN, AuthPolicy

from .claims import claim_value, string_claim
from .ttl_cache import TtlCache

if TYPE_CHECKING:
    from .credentials import Credential
    from .store import Store

TEAM_HEADER = "x-litellm-team-id"
_HEADER_VALUE = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


def requested_team(headers) -> str | None:
    """The x-litellm-team-id header (a team id or alias), or None; 400 when it cannot name a team."""
    # A header sent twice reaches the app as one comma-joined value (WSGI): it then names no team.
    value = headers.get(TEAM_HEADER)
    if value is None:
        return None
    if not _HEADER_VALUE.match(value):
        raise BadRequestError(f"{TEAM_HEADER} must be a team id or alias: 1 to 256 characters, no control characters",
                              code="invalid_team_header")
    return value


def teams_without_model(teams: dict[str, list[str]], model: str | None) -> dict[str, bool]:
    """{id: True} of the teams whose models exclude `model` (an empty list allows every model)."""
    if model is None:
        return {}
    return {team: True for team, models in teams.items() if models and model not in models}


class TeamFacts:
    """`facts.teams`, `facts.teams_without_model`, `facts.team_aliases` and `facts.org_aliases` for one request."""

    def __init__(self, store: Store, policy: AuthPolicy, *, ttl: float = 5.0):
        self._store = store
        self._policy = policy
        self._default = policy.team_id_default.value
        # The ids a request names, in order -> {id: models} of those the store has.
        self._teams = TtlCache(ttl, max_bytes=_MAX_CACHED_BYTES, size_of=_teams_size)
        self._team_aliases = TtlCache(ttl)  # alias -> ids of the teams that have it (at most two)
        self._org_aliases = TtlCache(ttl)

    def for_credential(self, credential: Credential, requested: str | None = None, model: str | None = None) -> dict:
        ids, aliases, org_alias = self._candidates(credential, requested)
        facts: dict = {}
        team_aliases = {a: found for a in aliases if (found := self._team_aliases.fetch(a, self._alias_lookup))}
        if team_aliases:
            facts["team_aliases"] = {a: list(found) for a, found in team_aliases.items()}
            ids += [found[0] for found in team_aliases.values() if len(found) == 1]
        if ids:
            teams = facts["teams"] = self._teams.fetch(tuple(ids), self._teams_lookup)
            if without := teams_without_model(teams, model):
                facts["teams_without_model"] = without
        if org_alias is not None:
            found = self._org_aliases.fetch(org_alias, self._org_alias_lookup)
            if found:
                facts["org_aliases"] = {org_alias: list(found)}
        return facts

    def _candidates(self, credential: Credential, requested: str | None) -> tuple[list[str], list[str], str | None]:
        """(team ids, team aliases, organization alias) the credential and the header name."""
        ids: list[str] = []
        aliases: list[str] = []
        org_alias = None
        if credential.type == "jwt":
            claims = credential.claims

            def name(field: str) -> str | None:
                claim = self._policy.claim_field(field, credential.issuer)
                return claim.name if claim is not None else None

            ids += filter(None, [string_claim(claims, name("team_field")), string_claim(claims, name("object_id_field")),
                                 self._default])
            listed = claim_value(claims, name("team_ids_field"))
            if isinstance(listed, list) and len(listed) <= MAX_TEAMS_PER_TOKEN:
                ids += [team for team in listed if isinstance(team, str) and team]
            aliases += filter(None, [string_claim(claims, name("team_alias_field"))])
            org_alias = string_claim(claims, name("org_alias_field"))
        elif credential.type == "virtual_key" and credential.key and credential.key.get("team_id"):
            ids.append(credential.key["team_id"])
        if requested is not None and credential.type != "none":
            # Without a credential the policy judges nothing else: no store query for anyone's header.
            ids.append(requested)
            aliases.append(requested)
        return ids, aliases, org_alias

    def _teams_lookup(self, ids: tuple[str, ...]) -> dict[str, list[str]]:
        """{team id: its models} of the teams the store has, in the order named; the others are left out."""
        found = self._store.team_models(ids)
        return {team: found[team] for team in dict.fromkeys(ids) if team in found}

    def _alias_lookup(self, alias: str) -> tuple[str, ...]:
        return tuple(self._store.team_ids_with_alias(alias))

    def _org_alias_lookup(self, alias: str) -> tuple[str, ...]:
        return tuple(self._store.organization_ids_with_alias(alias))

    def changed(self, team_id: str) -> None:
        """A team was created or updated here: forget every list and alias (it may be in any)."""
        self._teams.clear()
        self._team_aliases.clear()

    def organizations_changed(self) -> None:
        self._org_aliases.clear()


_MAX_CACHED_BYTES = 32 << 20  # a token's list is bounded (MAX_TEAMS_PER_TOKEN), the lists are not


def _teams_size(ids: tuple[str, ...], found: dict[str, list[str]]) -> int:
    return 64 * len(ids) + sum(map(len, ids)) + sum(len(m) for models in found.values() for m in models)
