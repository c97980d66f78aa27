"""JWT verification against the identity provider's JWKS (LiteLLM's JWT_* settings).

Three parts:

- `JwtSettings`: the environment (`JWT_PUBLIC_KEY_URL`, `JWT_AUDIENCE`, `JWT_ISSUER`) plus
  `litellm_jwtauth.public_key_ttl` and a few bounded knobs.
- `KeySet`: fetches and caches the signing keys of every configured JWKS URL (an OpenID
  discovery URL is resolved to its `jwks_uri`). One per process; safe under threads and gevent.
- `TokenVerifier`: checks one compact JWS token strictly and returns its claims untouched.
  What the claims *mean* (scopes, teams, users) is the policy's business, not this module's.

Every rejection is a `TokenError` (401) with a stable `code` from `ERROR_CODES`; a JWKS that
was never obtainable is a `KeySetError` (503). Messages never contain the token or any part of it.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
import urllib3
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from regate.errors import KeySetError, RegateError, TokenError

from .ttl_cache import TtlCache

log = logging.getLogger("regate.enforcer.tokens")

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
MISSING_CLAIM = "missing_claim"
INVALID_CLAIM = "invalid_claim"

ERROR_CODES = frozenset(
    {
        TOKEN_TOO_LARGE, MALFORMED_TOKEN, UNSUPPORTED_ALGORITHM, FORBIDDEN_HEADER, UNKNOWN_KEY,
        BAD_SIGNATURE, TOKEN_EXPIRED, TOKEN_NOT_YET_VALID, BAD_AUDIENCE, BAD_ISSUER,
        MISSING_CLAIM, INVALID_CLAIM,
    }
)

# --- algorithm allowlist --------------------------------------------------------------------

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})
ALLOWED_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHM_BY_CURVE.values()) | {"EdDSA"}

# Header parameters that name or carry key material (RFC 7515 §4.1.2-4.1.6): the key must
# come from the configured JWKS only. `crit`/`b64` would change how the token is processed.
# `x5t`/`x5t#S256` are mere thumbprints (Azure AD sends them) and stay allowed.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit", "b64")

MIN_RSA_BITS = 2048
MAX_KIDLESS_CANDIDATES = 10  # keys tried for a token without `kid` (bounds the work per token)
MAX_KEYS_PER_SOURCE = 100
MAX_JWKS_BYTES = 1 << 20
DEFAULT_STALE_FLOOR = 86400.0  # last good keys stay usable at least a day through an IdP outage

# Private-key members of RSA/EC/OKP/oct JWKs: a JWKS publishing them is a leak, never trusted.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JwtSettings:
    """How tokens are verified; built from the environment by `from_env`."""

    jwks_urls: tuple[str, ...]  # JWT_PUBLIC_KEY_URL, comma-separated
    audience: str | None = None  # JWT_AUDIENCE; None = not checked
    issuer: str | None = None  # JWT_ISSUER; None = not checked
    public_key_ttl: float = 600.0  # litellm_jwtauth.public_key_ttl
    leeway: float = 30.0  # clock skew allowed for exp/nbf/iat
    unknown_kid_cooldown: float = 30.0  # at most one refetch per cooldown for an unknown kid
    retry_interval: float = 5.0  # minimum gap between fetch attempts while keys are missing/expired
    fetch_timeout: float = 3.0  # per JWKS (or discovery) HTTP request, connect + read
    max_token_bytes: int = 8192

    def __post_init__(self) -> None:
        if not self.jwks_urls:
            raise _settings_error("JWT_PUBLIC_KEY_URL names no URL")
        for url in self.jwks_urls:
            if not _is_http_url(url):
                raise _settings_error(f"JWT_PUBLIC_KEY_URL entry is not an http(s) URL: {url!r}")
        for name in ("public_key_ttl", "fetch_timeout"):
            if not getattr(self, name) > 0:
                raise _settings_error(f"{name} must be > 0")
        for name in ("leeway", "unknown_kid_cooldown", "retry_interval"):
            if not getattr(self, name) >= 0:
                raise _settings_error(f"{name} must be >= 0")
        if self.max_token_bytes < 64:
            raise _settings_error("max_token_bytes must be >= 64")

    @property
    def stale_limit(self) -> float:
        """Seconds a source's last good keys keep serving while refreshes fail: max(10 x ttl, 1 day)."""
        return max(10 * self.public_key_ttl, DEFAULT_STALE_FLOOR)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], public_key_ttl: float = 600.0) -> JwtSettings | None:
        """Settings from LiteLLM's variables; None when JWT_PUBLIC_KEY_URL is unset or blank."""
        urls = tuple(u.strip() for u in (environ.get("JWT_PUBLIC_KEY_URL") or "").split(",") if u.strip())
        if not urls:
            return None
        return cls(
            jwks_urls=urls,
            audience=(environ.get("JWT_AUDIENCE") or "").strip() or None,
            issuer=(environ.get("JWT_ISSUER") or "").strip() or None,
            public_key_ttl=float(public_key_ttl),
        )


def _settings_error(message: str) -> RegateError:
    return RegateError(message, code="invalid_jwt_settings", status=500)


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# --- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """One verification key from a JWKS, parsed once.

    `key` is the `cryptography` public key object, passed to pyjwt as is.
    """

    kid: str | None
    kty: str  # RSA | EC | OKP
    crv: str | None
    alg: str | None  # the JWK's own `alg`, when it declares one
    key: Any = field(repr=False, compare=False)
    source: str = ""

    @property
    def algorithms(self) -> frozenset[str]:
        """The token algorithms this key may verify."""
        if self.kty == "RSA":
            family = RSA_ALGORITHMS
        elif self.kty == "EC":
            family = frozenset({EC_ALGORITHM_BY_CURVE[self.crv]})
        else:
            family = frozenset({"EdDSA"})
        return family & {self.alg} if self.alg else family

    def accepts(self, alg: str) -> bool:
        return alg in self.algorithms


class _SkipKey(Exception):
    """A JWKS entry that is ignored (with the reason logged), never fatal for the whole set."""


def parse_jwk(jwk: Any, source: str = "") -> SigningKey:
    """Parse one JWK into a SigningKey; raise _SkipKey when it is unusable for signatures."""
    if not isinstance(jwk, dict):
        raise _SkipKey("not a JSON object")
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _SkipKey("kid is not a string")
    if jwk.get("use", "sig") != "sig":
        raise _SkipKey("use is not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _SkipKey("key_ops does not allow 'verify'")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise _SkipKey("contains private key material")
    alg = jwk.get("alg")
    if alg is not None and alg not in ALLOWED_ALGORITHMS:
        raise _SkipKey(f"alg {alg!r} is not allowed")
    crv = jwk.get("crv")
    try:
        if kty == "RSA":
            key = RSAAlgorithm.from_jwk(jwk)
            if key.key_size < MIN_RSA_BITS:
                raise _SkipKey(f"RSA key shorter than {MIN_RSA_BITS} bits")
            crv = None
        elif kty == "EC":
            if crv not in EC_ALGORITHM_BY_CURVE:
                raise _SkipKey(f"EC curve {crv!r} is not allowed")
            key = ECAlgorithm.from_jwk(jwk)
        elif kty == "OKP":
            if crv not in OKP_CURVES:
                raise _SkipKey(f"OKP curve {crv!r} is not allowed")
            key = OKPAlgorithm.from_jwk(jwk)
        else:
            raise _SkipKey(f"kty {kty!r} is not allowed")
    except _SkipKey:
        raise
    except Exception as exc:  # malformed numbers/base64 from the IdP: skip the key, keep the rest
        raise _SkipKey(f"cannot be parsed ({type(exc).__name__})") from None
    signing_key = SigningKey(kid=kid, kty=kty, crv=crv, alg=alg, key=key, source=source)
    if not signing_key.algorithms:
        raise _SkipKey(f"alg {alg!r} does not fit kty {kty}")
    return signing_key


def parse_jwks(document: Any, source: str = "") -> tuple[SigningKey, ...]:
    """The usable signature keys of a JWKS document; unusable entries are skipped and logged."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("document has no 'keys' list")
    keys: list[SigningKey] = []
    for index, entry in enumerate(document["keys"]):
        if len(keys) >= MAX_KEYS_PER_SOURCE:
            log.warning("JWKS %s: more than %d keys, ignoring the rest", _display(source), MAX_KEYS_PER_SOURCE)
            break
        try:
            keys.append(parse_jwk(entry, source))
        except _SkipKey as why:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            log.warning("JWKS %s: skipping key #%d (kid=%r): %s", _display(source), index, kid, why)
    return tuple(keys)


@dataclass(frozen=True)
class _SourceKeys:
    """The last good keys of one JWKS URL."""

    url: str
    keys: tuple[SigningKey, ...]
    fetched_at: float

    def by_kid(self, kid: str) -> list[SigningKey]:
        return [k for k in self.keys if k.kid == kid]


class KeySet:
    """The signing keys of every configured JWKS URL, cached `public_key_ttl` seconds.

    - Refetch on TTL expiry, and on an unknown `kid` at most once per `unknown_kid_cooldown`.
    - While keys are missing or expired, fetch attempts are at least `retry_interval` apart.
    - A failed fetch keeps serving that URL's last good keys for `stale_limit` seconds.
    - One fetch at a time: concurrent misses wait for it instead of fetching again.
    - `get` raises KeySetError only when no key at all is available.

    `http` is a urllib3.PoolManager dedicated to this KeySet (e.g. to set a CA bundle or proxy);
    it is cleared after every fetch, so do not share it. Default: a private PoolManager.
    """

    def __init__(
        self,
        settings: JwtSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        http: urllib3.PoolManager | None = None,
    ):
        self.settings = settings
        self._clock = clock
        self._http = http if http is not None else urllib3.PoolManager(num_pools=4)
        # threading.Lock is gevent-aware once gevent has monkey-patched the process.
        self._fetch_lock = threading.Lock()
        self._sources: dict[str, _SourceKeys] = {}  # replaced wholesale, read without the lock
        self._errors: dict[str, str] = {}
        self._last_attempt: float | None = None
        for url in settings.jwks_urls:
            host = urlsplit(url).hostname or ""
            if url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("JWKS URL %s is plain http: keys can be substituted in transit", _display(url))

    # -- lookups --

    def get(self, kid: str | None, alg: str) -> list[SigningKey]:
        """Candidate keys for a token with this `kid` (None: any key) and `alg`.

        Returns [] when no key fits; raises KeySetError when no key is available at all.
        """
        if alg not in ALLOWED_ALGORITHMS:
            return []
        settings = self.settings
        if self._expired(self._clock()):
            blocking = not self._find(kid, alg)  # with usable stale keys, don't queue behind a fetch
            self._fetch_if(
                lambda now: self._expired(now) if self._may_attempt(now, settings.retry_interval) else [],
                blocking=blocking,
            )
        found = self._find(kid, alg)
        if found or not self._servable(self._clock()):
            return self._or_unavailable(found)
        if kid is not None and self.knows(kid):
            return []  # the kid exists, only not for this alg: a refetch would not help
        # Unknown kid (or no kid-less key of that type): maybe the IdP rotated keys.
        self._fetch_if(
            lambda now: list(settings.jwks_urls) if self._may_attempt(now, settings.unknown_kid_cooldown) else [],
            blocking=True,
        )
        return self._or_unavailable(self._find(kid, alg))

    def knows(self, kid: str) -> bool:
        """Whether any available key has this kid (no fetch)."""
        return any(src.by_kid(kid) for src in self._servable(self._clock()))

    def _find(self, kid: str | None, alg: str) -> list[SigningKey]:
        sources = self._servable(self._clock())
        if kid is not None:
            matches = [k for src in sources for k in src.by_kid(kid) if k.accepts(alg)]
        else:
            matches = [k for src in sources for k in src.keys if k.accepts(alg)]
        return matches[:MAX_KIDLESS_CANDIDATES]

    def _or_unavailable(self, found: list[SigningKey]) -> list[SigningKey]:
        if not found and not self._servable(self._clock()):
            raise KeySetError("identity provider signing keys are unavailable")
        return found

    def _servable(self, now: float) -> list[_SourceKeys]:
        limit = self.settings.stale_limit
        return [src for src in self._sources.values() if now - src.fetched_at <= limit]

    def _expired(self, now: float) -> list[str]:
        """The URLs whose keys are missing or older than the TTL."""
        sources = self._sources
        ttl = self.settings.public_key_ttl
        return [url for url in self.settings.jwks_urls if url not in sources or now - sources[url].fetched_at >= ttl]

    def _may_attempt(self, now: float, interval: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= interval

    # -- fetching --

    def refresh(self) -> None:
        """Fetch every URL now (e.g. at start-up). Raises KeySetError when every URL failed;
        keys already held stay in use either way."""
        with self._fetch_lock:
            if not self._fetch_all(self.settings.jwks_urls):
                raise KeySetError("could not fetch any JWKS: " + "; ".join(self._errors.values()))

    def _fetch_if(self, due: Callable[[float], list[str]], *, blocking: bool) -> None:
        """Fetch the URLs `due(now)` names, evaluated under the fetch lock."""
        if not self._fetch_lock.acquire(blocking=blocking):
            return
        try:
            # Evaluated under the lock: whoever held it may have just fetched.
            urls = due(self._clock())
            if urls:
                self._fetch_all(urls)
        finally:
            self._fetch_lock.release()

    def _fetch_all(self, urls: Sequence[str]) -> bool:
        """Fetch `urls` (caller holds the lock); True when at least one succeeded."""
        started = self._clock()
        self._last_attempt = started
        sources = dict(self._sources)
        any_ok = False
        for url in urls:
            try:
                keys = self._fetch_keys(url)
            except Exception as exc:  # any failure of one URL keeps that URL's last good keys
                reason = _describe(exc)
                self._errors = {**self._errors, url: reason}  # copy-on-write: read without the lock
                log.warning("JWKS fetch from %s failed: %s", _display(url), reason)
                continue
            sources[url] = _SourceKeys(url=url, keys=keys, fetched_at=started)
            self._errors = {u: e for u, e in self._errors.items() if u != url}
            any_ok = True
        self._sources = sources
        return any_ok

    def _fetch_keys(self, url: str) -> tuple[SigningKey, ...]:
        document = self._fetch_json(url)
        if isinstance(document, dict) and "keys" not in document and "jwks_uri" in document:
            jwks_uri = document["jwks_uri"]  # OpenID discovery document
            if not isinstance(jwks_uri, str) or not _is_http_url(jwks_uri):
                raise _FetchError("discovery document has no usable http(s) jwks_uri")
            document = self._fetch_json(jwks_uri)
        try:
            keys = parse_jwks(document, url)
        except ValueError as exc:
            raise _FetchError(f"not a JWKS: {exc}") from None
        if not keys:
            # Treated as a failure so a broken publication cannot wipe the last good keys.
            raise _FetchError("JWKS has no usable signature keys")
        return keys

    def _fetch_json(self, url: str) -> Any:
        deadline = time.monotonic() + self.settings.fetch_timeout
        response = self._http.request(
            "GET",
            url,
            headers={"Accept": "application/json", "Connection": "close"},
            timeout=urllib3.Timeout(total=self.settings.fetch_timeout),
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=3),
            preload_content=False,
        )
        try:
            if response.status != 200:
                raise _FetchError(f"HTTP {response.status}")
            body = bytearray()
            for chunk in response.stream(65536):
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _FetchError(f"response larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise _FetchError("response too slow")
        finally:
            # No connection reuse: fetches are minutes apart, and a pooled connection the IdP has
            # meanwhile closed would turn into a spurious failure. (Callers hold the fetch lock.)
            response.release_conn()
            self._http.clear()
        try:
            return json.loads(bytes(body).decode("utf-8"))
        except (ValueError, RecursionError):
            raise _FetchError("response is not JSON") from None

    # -- readiness --

    def healthy(self) -> bool:
        """True when at least one signing key is available."""
        return bool(self._servable(self._clock()))

    @property
    def last_error(self) -> str | None:
        errors = list(self._errors.values())
        return "; ".join(errors) if errors else None

    def status(self) -> dict[str, Any]:
        """Readiness details per URL (no key material)."""
        now = self._clock()
        servable = {src.url for src in self._servable(now)}
        sources = []
        for url in self.settings.jwks_urls:
            src = self._sources.get(url)
            sources.append(
                {
                    "url": _display(url),
                    "keys": len(src.keys) if src and url in servable else 0,
                    "age_seconds": round(now - src.fetched_at, 3) if src else None,
                    "last_error": self._errors.get(url),
                }
            )
        return {"healthy": bool(servable), "sources": sources}

    def close(self) -> None:
        self._http.clear()


class _FetchError(Exception):
    """A JWKS/discovery response that cannot be used; the message names no secret."""


def _describe(exc: BaseException) -> str:
    """A fetch failure for logs and readiness, without the URL's query or credentials."""
    if isinstance(exc, _FetchError):
        return str(exc)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason  # its own message repeats the full URL
    return f"{type(exc).__name__}: {exc}"


def _display(url: str) -> str:
    """scheme://host[:port]/path: drops userinfo and query, which may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# --- tokens ---------------------------------------------------------------------------------


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


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_members, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _reject(MALFORMED_TOKEN, f"token {what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise _reject(MALFORMED_TOKEN, f"token {what} is not a JSON object")
    return obj


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


class TokenVerifier:
    """Verify compact JWS tokens against the KeySet and the configured audience/issuer.

    Differences from LiteLLM, on purpose: `exp` is required (LiteLLM accepts tokens without
    one), only asymmetric algorithms are accepted, and keys named by the token are refused.
    """

    def __init__(self, settings: JwtSettings, keyset: KeySet | None = None, *, clock: Callable[[], float] = time.time,
                 cache_size: int = 4096):
        self.settings = settings
        self.keyset = keyset if keyset is not None else KeySet(settings)
        self._clock = clock
        # token -> (claims, alg, kid, the key that verified it). The signature check is most of a
        # verification's cost; a cached one counts only while the keyset still serves that very key
        # object (every fetch makes new ones), and the claims are re-checked on every use.
        self._verified = TtlCache(settings.public_key_ttl, maxsize=cache_size)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, as they are, once signature and time/aud/iss checks pass."""
        cached = self._verified.get(token) if isinstance(token, str) else None
        if cached is not None:
            claims, alg, kid, key = cached
            if any(candidate is key for candidate in self.keyset.get(kid, alg)):
                self._check_claims(claims)
                return claims
        parsed = parse_token(token, self.settings.max_token_bytes)
        alg, kid = _check_header(parsed.header)
        candidates = self.keyset.get(kid, alg)
        if not candidates:
            if kid is not None and self.keyset.knows(kid):
                raise _reject(UNSUPPORTED_ALGORITHM, "token algorithm does not fit its key")
            if kid is None:
                raise _reject(UNKNOWN_KEY, "no signing key fits the token's algorithm")
            raise _reject(UNKNOWN_KEY, "token key id is not in the identity provider's key set")
        key = self._check_signature(token, alg, candidates)
        self._check_claims(parsed.claims)
        self._verified.put(token, (parsed.claims, alg, kid, key))
        return parsed.claims

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

    def _check_claims(self, claims: dict[str, Any]) -> None:
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
        if self.settings.audience is not None:
            self._check_audience(claims)
        if self.settings.issuer is not None:
            if "iss" not in claims:
                raise _reject(MISSING_CLAIM, "token has no 'iss' claim")
            if not isinstance(claims["iss"], str):
                raise _reject(INVALID_CLAIM, "token claim 'iss' is not a string")
            if claims["iss"] != self.settings.issuer:
                raise _reject(BAD_ISSUER, "token issuer is not accepted")

    def _check_audience(self, claims: dict[str, Any]) -> None:
        if "aud" not in claims:
            raise _reject(MISSING_CLAIM, "token has no 'aud' claim")
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise _reject(INVALID_CLAIM, "token claim 'aud' is not a string or list of strings")
        if self.settings.audience not in audiences:
            raise _reject(BAD_AUDIENCE, "token audience is not accepted")
