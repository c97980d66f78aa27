"""Error responses in the OpenAI shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from flask import Response, jsonify

from regate.common.errors import RegateError

_TYPES = {
    400: "invalid_request_error",
    401: "auth_error",
    403: "auth_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    501: "not_implemented",
    503: "service_unavailable",
}
# Reasons whose LiteLLM error type clients match on (ProxyErrorTypes.budget_exceeded).
_REASON_TYPES = {"budget_exceeded": "budget_exceeded"}


def error_response(status: int, message: str, reason: str | None = None, *, param: str | None = None) -> Response:
    kind = _REASON_TYPES.get(reason or "") or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": str(status)}}
    response = jsonify(body)
    response.status_code = status
    if reason:
        response.headers["X-Regate-Reason"] = reason
    return response


def from_error(error: RegateError) -> Response:
    return error_response(error.status, error.message, error.code)
