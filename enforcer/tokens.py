"""JWT verification: one compact JWS token checked strictly against the identity provider's keys.

`TokenVerifier` checks structure, header, signature (keys from `jwks.KeySet`), time claims,
audience and issuer, and returns the claims untouched. A token whose `iss` is one of
`litellm_jwtauth.issuers` is verified against that issuer's keys and audience only; any
other token against JWT_PUBLIC_KEY_URL's (JWT_AUDIENCE, JWT_ISSUER), or refused when that is
not set. What the claims *mean* (scopes, teams, users) is the policy's business, not this
module's; it learns which issuer verified them.

Every rejection is a `TokenError` (401) with a stable `code` from `ERROR_CODES`. Messages
never contain the token or any part of it.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from regate.common.errors import TokenError

from .jwks import ALLOWED_ALGORITHMS, JwtSettings, KeySet, SigningKey
from .ttl_cache import TtlCache

# --- stable error codes (TokenError.code) -------------------------------------------------

TOKEN_TOO_LARGE = "token_too_large"
MALFORMED_TOKEN = "malformed_token"
UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
FORBIDDEN_HEADER = "forbidden_header"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
TOKEN_EXPIRED = "token_expired"
TOKEN_NOT_YET_VALID = "token_not_yet_valid"
BAD_AUDIENCE = "bad_audience"
BAD_ISSUER = "bad_issuer"
UNKNOWN_ISSUER = "unknown_issuer"
MISSING_CLAIM = "missing_claim"
INVALID_CLAIM = "invalid_claim"

ERROR_CODES = frozenset(
    {
        TOKEN_TOO_LARGE, MALFORMED_TOKEN, UNSUPPORTED_ALGORITHM, FORBIDDEN_HEADER, UNKNOWN_KEY,
        BAD_SIGNATURE, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, BAD_AUDIENCE, BAD_ISSUER, UNKNOWN_ISSUER,
        MISSING_CLAIM, INVALID_CLAIM,
    }
)

# --- token structure ----------------------------------------------------------------------

# Header parameters that name or carry key material (RFC 7515 §4.1.2-4.1.6): the key must
# come from the configured JWKS only. `crit`/`b64` would change how the token is processed.
# `x5t`/`x5t#S256` are mere thumbprints (Azure AD sends them) and stay allowed.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit", "b64")

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _reject(code: str, message: str) -> TokenError:
    return TokenError(message, code=code)


def _b64url_decode(segment: str) -> bytes:
    """Strict base64url (RFC 7515 §2): no padding, no stray characters, canonical trailing bits."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _reject(MALFORMED_TOKEN, "token is not valid base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        raise _reject(MALFORMED_TOKEN, "token is not valid base64url")
    return data


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:  # parsers disagree on duplicates; refuse to guess
            raise ValueError("duplicate member")
        obj[name] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError("non-finite number")


def _finite_float(text: str) -> float:
    # 1e400 parses as inf, which JSON cannot carry on to the policy.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("non-finite number")
    return value


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_reject_constant,
                         parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise _reject(MALFORMED_TOKEN, f"token {what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _reject(MALFORMED_TOKEN, f"token {what} is not a JSON object")
    if b"\\u" in data and _has_lone_surrogate(obj):
        raise _reject(MALFORMED_TOKEN, f"token {what} is not valid Unicode text (a lone surrogate escape)")
    return obj


def _has_lone_surrogate(obj: dict[str, Any]) -> bool:
    # A lone \ud800 escape decodes to a str that no UTF-8 text (the store, OPA, a log line) can hold.
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass(frozen=True)
class _ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]


def parse_token(token: Any, max_bytes: int) -> _ParsedToken:
    """Structural checks only (size, three parts, base64url, JSON objects); no trust implied."""
    if not isinstance(token, str):
        raise _reject(MALFORMED_TOKEN, "token is not a string")
    if len(token) > max_bytes or len(token.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _reject(TOKEN_TOO_LARGE, f"token is larger than {max_bytes} bytes")
    if not token.isascii():
        raise _reject(MALFORMED_TOKEN, "token is not valid base64url")
    parts = token.split(".")
    if len(parts) != 3:
        raise _reject(MALFORMED_TOKEN, "token must have exactly three dot-separated parts")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not payload_b64:
        raise _reject(MALFORMED_TOKEN, "token has an empty part")
    header = _json_object(_b64url_decode(header_b64), "header")
    claims = _json_object(_b64url_decode(payload_b64), "payload")
    _b64url_decode(signature_b64)
    return _ParsedToken(header=header, claims=claims)


def _check_header(header: dict[str, Any]) -> tuple[str, str | None]:
    """The token's (alg, kid) after the header passed the allowlists."""
    for name in FORBIDDEN_HEADERS:
        if name in header:
            raise _reject(FORBIDDEN_HEADER, f"token header parameter '{name}' is not accepted")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise _reject(UNSUPPORTED_ALGORITHM, "token algorithm is not allowed")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _reject(MALFORMED_TOKEN, "token kid is not a string")
    return alg, kid


# One pyjwt verifier per algorithm, each allowing exactly that algorithm.
_JWS_BY_ALG = {alg: jwt.PyJWS(algorithms=[alg]) for alg in ALLOWED_ALGORITHMS}


def _is_number(value: Any) -> bool:
    """A JSON number usable as a NumericDate: not a bool, not inf/nan (1e400 parses as inf)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


@dataclass(frozen=True)
class _Source:
    """Where a token's keys come from and what its claims must say."""

    keyset: KeySet
    audience: str | None  # None: not checked
    issuer: str | None  # the `iss` required; None: not checked
    name: str | None  # the issuers entry (what the policy sees), None for JWT_PUBLIC_KEY_URL


class TokenVerifier:
    """Verify compact JWS tokens against their issuer's keys and the configured audience/issuer.

    Differences from LiteLLM, on purpose: `exp` is required (LiteLLM accepts tokens without
    one), only asymmetric algorithms are accepted, and keys named by the token are refused.
    """

    def __init__(self, settings: JwtSettings, keyset: KeySet | None = None, *, clock: Callable[[], float] = time.time,
                 cache_size: int = 4096, cache_bytes: int = 16 * 1024 * 1024,
                 issuer_keysets: dict[str, KeySet] | None = None):
        self.settings = settings
        # keyset: JWT_PUBLIC_KEY_URL's (None when unset); issuer_keysets: one per issuers entry.
        self.keyset = keyset if keyset is not None else (KeySet(settings) if settings.jwks_urls else None)
        keysets = issuer_keysets or {}
        self._issuers = {
            entry.issuer: _Source(
                keysets.get(entry.issuer) or KeySet(settings, urls=(entry.jwks_url,),
                                                     expected_issuer=entry.issuer if entry.discovered else None),
                entry.audience, entry.issuer, entry.issuer)
            for entry in settings.issuers
        }
        self._fallback = _Source(self.keyset, settings.audience, settings.issuer, None) if self.keyset else None
        self._clock = clock
        # token -> (claims, alg, kid, the key that verified it). The signature check is most of a
        # verification's cost; a cached one counts only while the keyset still serves that very key
        # object (every fetch makes new ones), and the claims are re-checked on every use. Bounded in
        # bytes too: tokens run up to 8 KiB, and their claims weigh about as much again.
        self._verified = TtlCache(settings.public_key_ttl, maxsize=cache_size, max_bytes=cache_bytes,
                                  size_of=lambda token, _: 2 * len(token) + 1024)

    def keysets(self) -> list[KeySet]:
        return [source.keyset for source in self._issuers.values()] + ([self.keyset] if self.keyset else [])

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, as they are, once signature and time/aud/iss checks pass."""
        return self.verify_issued(token)[0]

    def verify_issued(self, token: str) -> tuple[dict[str, Any], str | None]:
        """(claims, the issuers entry that verified them, or None for JWT_PUBLIC_KEY_URL)."""
        cached = self._verified.get(token) if isinstance(token, str) else None
        if cached is not None:
            claims, alg, kid, key = cached
            source = self._source(claims)
            if any(candidate is key for candidate in source.keyset.get(kid, alg)):
                self._check_claims(claims, source)
                return claims, source.name
        parsed = parse_token(token, self.settings.max_token_bytes)
        alg, kid = _check_header(parsed.header)
        source = self._source(parsed.claims)
        candidates = source.keyset.get(kid, alg)
        if not candidates:
            if kid is not None and source.keyset.knows(kid):
                raise _reject(UNSUPPORTED_ALGORITHM, "token algorithm does not fit its key")
            if kid is None:
                raise _reject(UNKNOWN_KEY, "no signing key fits the token's algorithm")
            raise _reject(UNKNOWN_KEY, "token key id is not in the identity provider's key set")
        key = self._check_signature(token, alg, candidates)
        self._check_claims(parsed.claims, source)
        self._verified.put(token, (parsed.claims, alg, kid, key))
        return parsed.claims, source.name

    def _source(self, claims: dict[str, Any]) -> _Source:
        """The listed issuer the (unverified) `iss` names, else JWT_PUBLIC_KEY_URL. Choosing by `iss`
        is safe: the signature must then verify with that issuer's keys, and `iss` is checked."""
        iss = claims.get("iss")
        source = self._issuers.get(iss) if isinstance(iss, str) else None
        if source is None:
            source = self._fallback
        if source is None:
            raise _reject(UNKNOWN_ISSUER, "token issuer is not one of litellm_jwtauth.issuers (and JWT_PUBLIC_KEY_URL is not set)")
        return source

    @staticmethod
    def _check_signature(token: str, alg: str, candidates: list[SigningKey]) -> SigningKey:
        """The candidate that verifies the token's signature."""
        verifier = _JWS_BY_ALG[alg]
        for candidate in candidates:
            try:
                verifier.decode_complete(token, key=candidate.key, algorithms=[alg])
                return candidate
            except (jwt.PyJWTError, ValueError, TypeError):  # this key does not verify it; try the next
                continue
        raise _reject(BAD_SIGNATURE, "token signature is invalid")

    def _check_claims(self, claims: dict[str, Any], source: _Source) -> None:
        now = self._clock()
        leeway = self.settings.leeway
        for name in ("exp", "nbf", "iat"):
            if name in claims and not _is_number(claims[name]):
                raise _reject(INVALID_CLAIM, f"token claim '{name}' is not a number")
        if "exp" not in claims:
            raise _reject(MISSING_CLAIM, "token has no 'exp' claim")
        if now - leeway >= claims["exp"]:  # never exp + leeway: a huge int would overflow float
            raise _reject(TOKEN_EXPIRED, "token has expired")
        if "nbf" in claims and claims["nbf"] > now + leeway:
            raise _reject(TOKEN_NOT_YET_VALID, "token is not valid yet (nbf)")
        if "iat" in claims and claims["iat"] > now + leeway:
            raise _reject(TOKEN_NOT_YET_VALID, "token is issued in the future (iat)")
        if source.audience is not None:
            self._check_audience(claims, source.audience)
        if source.issuer is not None:
            if "iss" not in claims:
                raise _reject(MISSING_CLAIM, "token has no 'iss' claim")
            if not isinstance(claims["iss"], str):
                raise _reject(INVALID_CLAIM, "token claim 'iss' is not a string")
            if claims["iss"] != source.issuer:
                raise _reject(BAD_ISSUER, "token issuer is not accepted")

    @staticmethod
    def _check_audience(claims: dict[str, Any], audience: str) -> None:
        if "aud" not in claims:
            raise _reject(MISSING_CLAIM, "token has no 'aud' claim")
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise _reject(INVALID_CLAIM, "token claim 'aud' is not a string or list of strings")
        if audience not in audiences:
            raise _reject(BAD_AUDIENCE, "token audience is not accepted")
