"""The identity provider's signing keys: JWKS URLs fetched, parsed and cached (network side).

- `JwtSettings`: the environment (`JWT_PUBLIC_KEY_URL`, `JWT_AUDIENCE`, `JWT_ISSUER`), the
  identity providers of `litellm_jwtauth.issuers` (`IssuerSettings`), plus
  `litellm_jwtauth.public_key_ttl` / `public_key_stale_ttl` and a few bounded knobs.
- `KeySet`: fetches and caches the signing keys of some JWKS URLs (an OpenID discovery URL is
  resolved to its `jwks_uri`): one for JWT_PUBLIC_KEY_URL and one per issuer, so keys are
  looked up per issuer and two providers' equal `kid`s never meet. Safe under threads and gevent.
- `parse_jwk(s)`: which published keys are usable for signatures (asymmetric, public, allowed).

A JWKS that was never obtainable is a `KeySetError` (503). Token checks live in `tokens`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from regate.common.errors import KeySetError, RegateError

log = logging.getLogger("regate.enforcer.jwks")

# --- algorithm allowlist --------------------------------------------------------------------

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})
ALLOWED_ALGORITHMS = RSA_ALGORITHMS | frozenset(EC_ALGORITHM_BY_CURVE.values()) | {"EdDSA"}

MIN_RSA_BITS = 2048
MAX_KIDLESS_CANDIDATES = 10  # keys tried for a token without `kid` (bounds the work per token)
MAX_KEYS_PER_SOURCE = 100
MAX_JWKS_BYTES = 1 << 20
DISCOVERY_SUFFIX = "/.well-known/openid-configuration"

# Private-key members of RSA/EC/OKP/oct JWKs: a JWKS publishing them is a leak, never trusted.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")



# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuerSettings:
    """One `litellm_jwtauth.issuers` entry: tokens whose `iss` is `issuer` are verified against
    these keys and this audience only."""

    issuer: str
    jwks_url: str  # the entry's jwks_url, else the issuer's OpenID discovery document
    audience: str | None  # None: disable_audience_validation
    discovered: bool = False  # jwks_url is the issuer's discovery document, whose `issuer` must match

    @classmethod
    def of(cls, issuer: str, *, audience: str | None, jwks_url: str | None = None) -> IssuerSettings:
        if jwks_url:
            return cls(issuer, jwks_url, audience)
        return cls(issuer, issuer.rstrip("/") + DISCOVERY_SUFFIX, audience, discovered=True)


@dataclass(frozen=True)
class JwtSettings:
    """How tokens are verified; built from the environment and the config by `from_env`."""

    jwks_urls: tuple[str, ...]  # JWT_PUBLIC_KEY_URL, comma-separated; for tokens of no listed issuer
    audience: str | None = None  # JWT_AUDIENCE; None = not checked
    issuer: str | None = None  # JWT_ISSUER; None = not checked
    public_key_ttl: float = 600.0  # litellm_jwtauth.public_key_ttl
    public_key_stale_ttl: float = 3600.0  # litellm_jwtauth.public_key_stale_ttl; 0 = fail closed at once
    issuers: tuple[IssuerSettings, ...] = ()  # litellm_jwtauth.issuers
    leeway: float = 30.0  # clock skew allowed for exp/nbf/iat
    unknown_kid_cooldown: float = 30.0  # at most one refetch per cooldown for an unknown kid
    retry_interval: float = 5.0  # minimum gap between fetch attempts while keys are missing/expired
    fetch_timeout: float = 3.0  # per JWKS (or discovery) HTTP request, connect + read
    max_token_bytes: int = 8192

    def __post_init__(self) -> None:
        if not self.jwks_urls and not self.issuers:
            raise _settings_error("JWT_PUBLIC_KEY_URL names no URL")
        for url in self.jwks_urls:
            if not _is_http_url(url):
                raise _settings_error(f"JWT_PUBLIC_KEY_URL entry is not an http(s) URL: {url!r}")
        for entry in self.issuers:
            if not _is_http_url(entry.jwks_url):
                raise _settings_error(f"the keys of issuer {entry.issuer!r} are not at an http(s) URL: {entry.jwks_url!r}")
        if not self.public_key_stale_ttl >= 0:
            raise _settings_error("public_key_stale_ttl must be >= 0")
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
        """Seconds a source's last good keys keep serving while refreshes fail (as in LiteLLM)."""
        return self.public_key_ttl + self.public_key_stale_ttl

    @classmethod
    def from_env(cls, environ: Mapping[str, str], public_key_ttl: float = 600.0, public_key_stale_ttl: float = 3600.0,
                 issuers: tuple[IssuerSettings, ...] = ()) -> JwtSettings | None:
        """Settings from LiteLLM's variables and the config's issuers; None when there are neither
        (JWT_PUBLIC_KEY_URL unset or blank, no issuers)."""
        urls = tuple(u.strip() for u in (environ.get("JWT_PUBLIC_KEY_URL") or "").split(",") if u.strip())
        if not urls and not issuers:
            return None
        return cls(
            jwks_urls=urls,
            audience=(environ.get("JWT_AUDIENCE") or "").strip() or None,
            issuer=(environ.get("JWT_ISSUER") or "").strip() or None,
            public_key_ttl=float(public_key_ttl),
            public_key_stale_ttl=float(public_key_stale_ttl),
            issuers=issuers,
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
    """The signing keys of some JWKS URLs (default: JWT_PUBLIC_KEY_URL's), cached `public_key_ttl` seconds.

    - Refetch on TTL expiry, and on an unknown `kid` at most once per `unknown_kid_cooldown`.
    - While keys are missing or expired, fetch attempts are at least `retry_interval` apart.
    - A failed fetch keeps serving that URL's last good keys until `stale_limit` seconds after they
      were fetched (public_key_ttl + public_key_stale_ttl); then KeySetError (503 idp_unavailable).
    - `expected_issuer`: the URL is that issuer's OpenID discovery document, whose `issuer` must be it.
    - One fetch at a time: concurrent misses wait for it instead of fetching again.
    - `get` raises KeySetError only when no key at all is available.

    `http` is a urllib3.PoolManager dedicated to this KeySet (e.g. to set a CA bundle or proxy);
    it is cleared after every fetch, so do not share it. Default: a private PoolManager.
    """

    def __init__(
        self,
        settings: JwtSettings,
        *,
        urls: Sequence[str] | None = None,
        expected_issuer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        http: urllib3.PoolManager | None = None,
    ):
        self.settings = settings
        self.urls = tuple(settings.jwks_urls if urls is None else urls)
        self._expected_issuer = expected_issuer
        self._clock = clock
        self._http = http if http is not None else urllib3.PoolManager(num_pools=4)
        # threading.Lock is gevent-aware once gevent has monkey-patched the process.
        self._fetch_lock = threading.Lock()
        self._sources: dict[str, _SourceKeys] = {}  # replaced wholesale, read without the lock
        self._errors: dict[str, str] = {}
        self._last_attempt: float | None = None
        for url in self.urls:
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
            lambda now: list(self.urls) if self._may_attempt(now, settings.unknown_kid_cooldown) else [],
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
        return [src for src in self._sources.values() if now - src.fetched_at < limit]

    def _expired(self, now: float) -> list[str]:
        """The URLs whose keys are missing or older than the TTL."""
        sources = self._sources
        ttl = self.settings.public_key_ttl
        return [url for url in self.urls if url not in sources or now - sources[url].fetched_at >= ttl]

    def _may_attempt(self, now: float, interval: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= interval

    # -- fetching --

    def refresh(self) -> None:
        """Fetch every URL now (e.g. at start-up). Raises KeySetError when every URL failed;
        keys already held stay in use either way."""
        with self._fetch_lock:
            if not self._fetch_all(self.urls):
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
            if self._expected_issuer is not None and document.get("issuer") != self._expected_issuer:
                raise _FetchError("discovery document names another issuer")  # OpenID Connect Discovery §4.3
            document = self._fetch_json(jwks_uri)
        elif self._expected_issuer is not None:
            raise _FetchError("not an OpenID discovery document")
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
        for url in self.urls:
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
