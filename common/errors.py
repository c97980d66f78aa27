"""One exception root for everything regate raises on purpose.

Every error has a stable `code` (for logs, metrics and API clients) and an HTTP
`status` for the enforcer. `str(error)` is safe to show to a caller and to log:
it never contains a token, key or other secret.
"""

from __future__ import annotations


class RegateError(Exception):
    """Base class of every error regate raises on purpose."""

    code = "regate_error"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ConfigError(RegateError):
    """Raised when a config file cannot be read, parsed or validated; carries every diagnostic."""

    code = "invalid_config"

    def __init__(self, diagnostics):
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class TokenError(RegateError):
    """Raised when a bearer credential is missing, malformed or fails verification."""

    code = "invalid_token"
    status = 401


class KeySetError(RegateError):
    """Raised when the identity provider's JWKS cannot be fetched or parsed (and no last good
    copy is younger than public_key_ttl + public_key_stale_ttl)."""

    code = "idp_unavailable"
    status = 503


class DecisionError(RegateError):
    """Raised when OPA gives no well-formed decision: unreachable, slow, undefined or malformed."""

    code = "decision_unavailable"
    status = 503


class StoreError(RegateError):
    """Raised when the store is unreachable or a read or write fails."""

    code = "store_unavailable"
    status = 503


class NotFoundError(StoreError):
    """Raised when a user, team or key named in a request does not exist."""

    code = "not_found"
    status = 404


class ConflictError(StoreError):
    """Raised when creating a user, team or key whose id already exists."""

    code = "conflict"
    status = 409


class BadRequestError(RegateError):
    """Raised when a request body or parameter is missing, of the wrong type or out of range."""

    code = "bad_request"
    status = 400


class UnknownModelError(BadRequestError):
    """Raised when a request names a model that no `model_list` entry serves."""

    code = "unknown_model"


class UpstreamError(RegateError):
    """Raised when the model upstream fails (502) or times out (504)."""

    code = "upstream_error"
    status = 502
