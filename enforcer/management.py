"""LiteLLM-compatible management endpoints: keys, teams, users, spend.

Every route here has passed the gate like any other (the policy decides who may
call it). On top of that, a caller that is not a proxy admin may only act on its
own keys, team and user, and may not create or update teams and users, block or
unblock teams, or read the global spend (see the owner checks below). Bodies are
validated before anything is written: a bad request never changes the store.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from flask import Blueprint, current_app, g, jsonify, request

from regate.common.errors import BadRequestError, NotFoundError, RegateError
from regate.common.money import nanos_to_usd

from . import limits
from .bodies import json_body

bp = Blueprint("management", __name__)

_DURATION = re.compile(r"^([1-9]\d{0,5})([smhd])$")  # a key that is born expired is a mistake
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


class Forbidden(RegateError):
    """Raised when a non-admin caller acts on another caller's key, team or user."""

    code = "not_owner"
    status = 403


@bp.before_request
def limit_body():
    request.max_content_length = current_app.extensions["regate"].settings.max_management_body_bytes


def _components():
    return current_app.extensions["regate"]


def _body(allowed: dict[str, type]) -> dict:
    """The JSON body, with only `allowed` fields of the given types (None allowed for each)."""
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object (Content-Type: application/json)")
    for name, value in body.items():
        if name not in allowed:
            raise BadRequestError(f"unsupported field '{name}' (supported: {', '.join(sorted(allowed))})")
        if value is not None and (isinstance(value, bool) or not isinstance(value, allowed[name])):
            raise BadRequestError(f"field '{name}' has the wrong type")
        if not all(_is_text(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)):
            raise BadRequestError(f"field '{name}' is not valid Unicode text (a lone surrogate escape)")
    if isinstance(body.get("max_budget"), float):  # money: the digits the client sent, not a float's
        body["max_budget"] = json.loads(request.get_data(), parse_float=Decimal)["max_budget"]
    return body


def _is_text(value: str) -> bool:
    """JSON's \\ud800 escapes decode to lone surrogates, which no store (nor UTF-8) can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _id(value, name: str, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise BadRequestError(f"missing field '{name}'")
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise BadRequestError(f"field '{name}' must be a non-empty string of at most 256 characters")
    return value


def _query_id(name: str, default: str | None = None) -> str | None:
    value = request.args.get(name, default)
    return _id(value, name) if value is not None else None


def _string_list(value, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadRequestError(f"field '{name}' must be a list of non-empty strings")
    return value


# Owner checks: the policy decides who may call a route; these decide on whose behalf. Even a
# config that grants teams management_routes (LiteLLM documents such configs) must not let one
# team act on another's team, user or keys.
def _owner_check(team_id: str | None, user_id: str | None) -> None:
    """A non-admin may only touch what belongs to its own team or user."""
    auth = g.auth
    if auth.is_admin:
        return
    mine_team, mine_user = auth.subject["team_id"], auth.subject["user_id"]
    if (team_id is not None and team_id == mine_team) or (team_id is None and user_id is not None and user_id == mine_user):
        return
    raise Forbidden("you may only act on your own team, user and keys")


def _admin_only(action: str) -> None:
    """What changes teams, users or everyone's view (blocks, team and user records, global totals)."""
    if not g.auth.is_admin:
        raise Forbidden(f"only an admin may {action}")


def _own_or_unset(field: str, value: str | None, mine: str | None) -> None:
    """A non-admin may name on a key only its own user or organisation (the key would act as them)."""
    if value is not None and value != mine and not g.auth.is_admin:
        raise Forbidden(f"only an admin may set another {field} on a key")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _key_view(info: dict) -> dict:
    return {
        "token": info["key_hash"],
        "key_name": info["key_name"],
        "key_alias": info["key_alias"],
        "user_id": info["user_id"],
        "team_id": info["team_id"],
        "organization_id": info["organization_id"],
        "models": info["models"],
        "expires": _iso(info["expires_at"]),
        "created_at": _iso(info["created_at"]),
    }


def _spend_view(kind: str, entity_id: str) -> dict:
    summary = _components().store.spend_summary(kind, entity_id)
    return {"spend": nanos_to_usd(summary["spend_nanos"]), "spend_nanos": summary["spend_nanos"], "requests": summary["requests"]}


def _limits_view(kind: str, entity_id: str) -> dict:
    """Budget and rate limits of a principal, with its current period's spend and reset time."""
    budgets = _components().budgets
    budgets.forget(kind, entity_id)
    standing = budgets.standing([(kind, entity_id)]).get((kind, entity_id))
    return limits.view(_components().store.get_limits(kind, entity_id), standing)


def _key_limits(body: dict, *, new: bool) -> dict:
    """The limit fields of a /key/generate (defaults filled in) or /key/update body, within the config's bounds."""
    config = _components().settings.config.budgets
    if new:
        body = limits.with_defaults(body, config.default_key_params.value)
    body = limits.check_bounds(body, config.upperbound_key_params.value, fill=new)
    return body


# keys --------------------------------------------------------------------------------
@bp.post("/key/generate")
def key_generate():
    body = _body({"user_id": str, "team_id": str, "key_alias": str, "duration": str, "models": list,
                  "organization_id": str, **limits.BODY_TYPES})
    body = _key_limits(body, new=True)
    key_limits = limits.parse(body)
    components = _components()
    auth = g.auth
    user_id = _id(body.get("user_id"), "user_id")
    team_id = _id(body.get("team_id"), "team_id")
    org_id = _id(body.get("organization_id"), "organization_id")
    alias = _id(body.get("key_alias"), "key_alias")
    models = _string_list(body.get("models"), "models")
    unknown = sorted(set(models) - set(components.upstreams.model_names()))
    if unknown:
        raise BadRequestError(f"unknown model(s) {', '.join(unknown)} (GET /v1/models lists the models)")
    expires_at = None
    if body.get("duration") is not None:
        match = _DURATION.match(body["duration"])
        if not match:
            raise BadRequestError("field 'duration' must look like 30s, 15m, 12h or 30d")
        delta = timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
        expires_at = datetime.now(timezone.utc) + delta
    _own_or_unset("user_id", user_id, auth.subject["user_id"])
    _own_or_unset("organization_id", org_id, auth.subject["org_id"])
    if not auth.is_admin:
        team_id = team_id or auth.subject["team_id"]
        user_id = user_id or (auth.subject["user_id"] if team_id is None else None)
        _owner_check(team_id, user_id)
    if user_id is None and team_id is None:
        user_id = auth.subject["user_id"]
    if user_id is None and team_id is None:
        raise BadRequestError("a key is issued to someone: give user_id or team_id")
    team = components.store.get_team(team_id) if team_id is not None else None
    if team_id is not None and team is None:
        raise BadRequestError(f"team {team_id} does not exist (create it with /team/new)", code="unknown_team")
    if team is not None and team["models"]:
        # As in LiteLLM: a team key may use the team's models only, and gets them when it names none.
        outside = sorted(set(models) - set(team["models"]))
        if outside:
            raise BadRequestError(f"model(s) {', '.join(outside)} are not among team {team_id}'s models",
                                  code="model_not_in_team")
        models = models or list(team["models"])
    key, info = components.store.create_key(user_id=user_id, team_id=team_id, organization_id=org_id,
                                            alias=alias, models=models, expires_at=expires_at, create_user=True,
                                            limits=key_limits)
    return jsonify({"key": key, **_key_view(info), **_limits_view("key", info["key_hash"])})


@bp.post("/key/update")
def key_update():
    """Change a key's budget and rate limits (within upperbound_key_generate_params). A non-admin
    may only lower the limits of its own keys: a key that could lift its own budget has none."""
    body = _body({"key": str, **limits.BODY_TYPES})
    key = body.get("key")
    if key is None:
        raise BadRequestError("missing field 'key'")
    changes = limits.parse(_key_limits({k: v for k, v in body.items() if k != "key"}, new=False))
    components = _components()
    info = components.store.get_key_info(key)
    if info is None:
        raise NotFoundError("no such key")
    _owner_check(info["team_id"], info["user_id"])
    if not g.auth.is_admin and (raised := limits.loosened(components.store.get_limits("key", info["key_hash"]), changes)):
        raise Forbidden(f"only an admin may raise or remove a key's limits or change its budget period: {', '.join(raised)}")
    components.store.update_key(key, limits=changes)
    return jsonify({"key": info["key_hash"], **_key_view(info), **_limits_view("key", info["key_hash"])})


@bp.get("/key/info")
def key_info():
    components = _components()
    key = request.args.get("key")
    if key is None:
        raise BadRequestError("missing query parameter 'key'")
    info = components.store.get_key_info(key)
    if info is None:
        raise NotFoundError("no such key")
    _owner_check(info["team_id"], info["user_id"])
    return jsonify({"key": info["key_hash"], "info": {**_key_view(info), **_spend_view("key", info["key_hash"]),
                                                      **_limits_view("key", info["key_hash"])}})


@bp.post("/key/delete")
def key_delete():
    body = _body({"keys": list, "key_aliases": list})
    keys = _string_list(body.get("keys"), "keys")
    aliases = _string_list(body.get("key_aliases"), "key_aliases")
    if not keys and not aliases:
        raise BadRequestError("give 'keys' or 'key_aliases' to delete")
    components = _components()
    if not g.auth.is_admin:
        if aliases:
            raise Forbidden("only an admin may delete keys by alias")
        for key in keys:
            info = components.store.get_key_info(key)
            if info is None:
                raise NotFoundError("no such key")
            _owner_check(info["team_id"], info["user_id"])
    deleted = components.store.delete_keys(keys, aliases=aliases)
    for key in keys:
        components.authenticator.forget_key(key)
    if deleted == 0:
        raise NotFoundError("no such key")
    return jsonify({"deleted_keys": deleted})


# teams -------------------------------------------------------------------------------
def _team_view(team: dict) -> dict:
    return {
        "team_id": team["team_id"],
        "team_alias": team["team_alias"],
        "organization_id": team["organization_id"],
        "models": team["models"],
        "blocked": team["blocked"],
        "created_at": _iso(team["created_at"]),
    }


@bp.post("/team/new")
def team_new():
    body = _body({"team_id": str, "team_alias": str, "models": list, "organization_id": str, **limits.BODY_TYPES})
    team_id = _id(body.get("team_id"), "team_id") or str(uuid.uuid4())
    alias = _id(body.get("team_alias"), "team_alias")
    org_id = _id(body.get("organization_id"), "organization_id")
    models = _string_list(body.get("models"), "models")
    team_limits = limits.parse(body)
    _admin_only("create a team")
    team = _components().store.create_team(team_id, alias=alias, organization_id=org_id, models=models,
                                           limits=team_limits)
    _components().facts.team_changed(team_id)
    return jsonify({**_team_view(team), **_limits_view("team", team_id)})


@bp.post("/organization/new")
def organization_new():
    """An organization (id and alias): org_alias_jwt_field resolves aliases to ids through these. Admins only."""
    body = _body({"organization_id": str, "organization_alias": str})
    org_id = _id(body.get("organization_id"), "organization_id") or str(uuid.uuid4())
    alias = _id(body.get("organization_alias"), "organization_alias")
    _admin_only("create an organization")
    org = _components().store.create_organization(org_id, alias=alias)
    _components().facts.teams.organizations_changed()
    return jsonify({"organization_id": org["organization_id"], "organization_alias": org["organization_alias"],
                    "created_at": _iso(org["created_at"])})


@bp.post("/team/update")
def team_update():
    """Change a team's alias, organisation or models (fields left out stay as they are). Admins only:
    a team that could change its own models could widen what its tokens may call."""
    body = _body({"team_id": str, "team_alias": str, "models": list, "organization_id": str, **limits.BODY_TYPES})
    team_id = _id(body.get("team_id"), "team_id", required=True)
    alias = _id(body.get("team_alias"), "team_alias")
    org_id = _id(body.get("organization_id"), "organization_id")
    models = _string_list(body["models"], "models") if body.get("models") is not None else None
    team_limits = limits.parse(body)
    _admin_only("update a team")
    team = _components().store.update_team(team_id, alias=alias, organization_id=org_id, models=models,
                                           limits=team_limits)
    if team is None:
        raise NotFoundError(f"team {team_id} does not exist (create it with /team/new)")
    _components().facts.team_changed(team_id)
    return jsonify({**_team_view(team), **_limits_view("team", team_id)})


@bp.get("/team/info")
def team_info():
    team_id = _query_id("team_id", g.auth.subject["team_id"])
    if team_id is None:
        raise BadRequestError("missing query parameter 'team_id'")
    _owner_check(team_id, None)
    team = _components().store.get_team(team_id)
    spend = _spend_view("team", team_id)
    if team is None:
        # JWT teams come from the IdP and get a record only when managed (/team/new, /team/block):
        # a team the caller belongs to, or one that has spent, exists all the same.
        if spend["requests"] == 0 and team_id != g.auth.subject["team_id"]:
            raise NotFoundError(f"team {team_id} does not exist")
        team = {"team_id": team_id, "team_alias": None, "organization_id": None, "models": [], "blocked": False,
                "created_at": None}
    return jsonify({"team_id": team_id, "team_info": {**_team_view(team), **spend, **_limits_view("team", team_id)}})


def _set_blocked(blocked: bool):
    body = _body({"team_id": str})
    team_id = _id(body.get("team_id"), "team_id", required=True)
    _admin_only("block or unblock a team")
    components = _components()
    # JWT teams come from the IdP: blocking one without a record creates the record.
    team = components.store.set_team_blocked(team_id, blocked)
    components.facts.team_changed(team_id)
    components.block_sync.pushed(team_id, blocked)
    return jsonify(_team_view(team))


@bp.post("/team/block")
def team_block():
    return _set_blocked(True)


@bp.post("/team/unblock")
def team_unblock():
    return _set_blocked(False)


# users -------------------------------------------------------------------------------
def _user_view(user: dict) -> dict:
    return {"user_id": user["user_id"], "user_email": user["user_email"], "created_at": _iso(user["created_at"])}


@bp.post("/user/new")
def user_new():
    body = _body({"user_id": str, "user_email": str, **limits.BODY_TYPES})
    user_id = _id(body.get("user_id"), "user_id") or str(uuid.uuid4())
    email = _email(body.get("user_email"))
    user_limits = limits.parse(body)
    _admin_only("create a user")
    user = _components().store.create_user(user_id, email=email, limits=user_limits)
    _components().facts.created(user_id)
    return jsonify({**_user_view(user), **_limits_view("user", user_id)})


def _email(value: str | None) -> str | None:
    if value is not None and (value.count("@") != 1 or len(value) > 320):
        raise BadRequestError("field 'user_email' must be an email address")
    return value


@bp.post("/user/update")
def user_update():
    """Change a user's email, budget and rate limits. Admins only: a user must not lift its own budget."""
    body = _body({"user_id": str, "user_email": str, **limits.BODY_TYPES})
    user_id = _id(body.get("user_id"), "user_id", required=True)
    email = _email(body.get("user_email"))
    user_limits = limits.parse(body)
    _admin_only("update a user")
    user = _components().store.update_user(user_id, email=email, limits=user_limits)
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist (create it with /user/new)")
    return jsonify({**_user_view(user), **_limits_view("user", user_id)})


@bp.get("/user/info")
def user_info():
    user_id = _query_id("user_id", g.auth.subject["user_id"])
    if user_id is None:
        raise BadRequestError("missing query parameter 'user_id'")
    _owner_check(None, user_id)
    user = _components().store.get_user(user_id)
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return jsonify({"user_id": user_id, "user_info": {**_user_view(user), **_spend_view("user", user_id),
                                                      **_limits_view("user", user_id)}})


# end users (LiteLLM's customers) ---------------------------------------------------------
def _customer_view(end_user: dict) -> dict:
    limits_doc = _limits_view("end_user", end_user["end_user_id"])
    spend = _spend_view("end_user", end_user["end_user_id"])
    return {"user_id": end_user["end_user_id"], "alias": end_user["alias"], "blocked": False,
            "spend": spend["spend"], "spend_nanos": spend["spend_nanos"], "requests": spend["requests"],
            "created_at": _iso(end_user["created_at"]), "litellm_budget_table": limits_doc}


@bp.post("/customer/new")
def customer_new():
    """Create an end user (the `end_user_id_jwt_field` claim) with its budget and rate limits."""
    body = _body({"user_id": str, "alias": str, "blocked": bool, **limits.BODY_TYPES})
    end_user_id = _id(body.get("user_id"), "user_id", required=True)
    _admin_only("create end users")
    alias = _id(body.get("alias"), "alias")
    if body.get("blocked"):
        raise BadRequestError("field 'blocked' is not supported: block end users in the identity provider")
    end_user = _components().store.create_end_user(end_user_id, alias=alias, limits=limits.parse(body))
    return jsonify(_customer_view(end_user))


@bp.get("/customer/info")
def customer_info():
    end_user_id = _query_id("end_user_id")
    if end_user_id is None:
        raise BadRequestError("missing query parameter 'end_user_id'")
    _admin_only("read end users")
    end_user = _components().store.get_end_user(end_user_id)
    if end_user is None:
        raise NotFoundError(f"End User Id={end_user_id} does not exist in db")
    return jsonify(_customer_view(end_user))


# spend -------------------------------------------------------------------------------
def _date(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequestError(f"query parameter '{name}' must be an ISO date (2025-01-31)") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _log_view(row: dict) -> dict:
    row = dict(row)
    for name in ("started_at", "ended_at"):
        row[name] = _iso(row.get(name))
    row["spend"] = nanos_to_usd(row["spend_nanos"])
    return row


@bp.get("/spend/logs")
def spend_logs():
    user_id = _query_id("user_id")
    team_id = _query_id("team_id")
    auth = g.auth
    if not auth.is_admin:
        # A non-admin sees its own team's logs (team role) or its own (user role).
        team_id = team_id or auth.subject["team_id"]
        user_id = user_id if team_id else (user_id or auth.subject["user_id"])
        _owner_check(team_id, user_id)
    try:
        limit = int(request.args.get("limit", "1000"))
    except ValueError:
        raise BadRequestError("query parameter 'limit' must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise BadRequestError("query parameter 'limit' must be between 1 and 10000")
    rows = _components().store.spend_logs(user_id=user_id, team_id=team_id, start=_date("start_date"),
                                          end=_date("end_date"), limit=limit)
    return jsonify([_log_view(r) for r in rows])


@bp.get("/global/spend")
def global_spend():
    _admin_only("read the spend of every team")
    summary = _components().store.global_summary()
    proxy = _limits_view("global", "")
    return jsonify({"spend": nanos_to_usd(summary["spend_nanos"]), "spend_nanos": summary["spend_nanos"],
                    "requests": summary["requests"], "max_budget": proxy["max_budget"],
                    **{k: proxy.get(k) for k in ("budget_duration", "budget_spend", "budget_spend_nanos", "budget_reset_at")}})
