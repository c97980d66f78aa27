"""An identity-provider stand-in that speaks the real protocols over HTTP on 127.0.0.1.

    with IdentityProvider() as idp:                 # RSA (default signer), EC P-256, Ed25519 keys
        settings = JwtSettings(jwks_urls=(idp.jwks_url,), audience=idp.audience, issuer=idp.issuer)
        token = idp.mint({"scope": "litellm_proxy_admin"})
        idp.rotate()                                # new signing key, old one still published
        with idp.outage("error"):                   # every request answers 500 meanwhile
            ...
        idp.fetch_count                             # GET /jwks.json requests received

Endpoints: `GET /jwks.json` (RFC 7517 key set) and `GET /.well-known/openid-configuration`
(OpenID discovery; `jwks_uri` points at /jwks.json). The issuer is the base URL.
Key material and signing come from `tests.support.forge`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tests.support.forge import OMIT, KeyPair, generate_key, sign
from tests.support.net import QuietHandler, ServerThread

JWKS_PATH = "/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
OUTAGE_MODES = ("error", "close", "garbage", "empty", "hang")
_UNSET: Any = object()


class IdentityProvider:
    """JWKS + discovery server with runtime key rotation, outages, fetch counters and a minter.

    kinds: key kinds to generate (see forge.KEY_KINDS); the first key signs by default.
    keys: ready-made KeyPairs instead of `kinds`.
    audience: the `aud` that `mint` puts into tokens (None: no aud claim).
    """

    def __init__(
        self,
        kinds: Sequence[str] = ("RSA", "EC-P256", "Ed25519"),
        *,
        keys: Sequence[KeyPair] | None = None,
        audience: str | None = "regate-tests",
        subject: str = "user-1",
    ):
        self._lock = threading.Lock()
        self._keys: list[KeyPair] = list(keys) if keys else [generate_key(kind) for kind in kinds]
        if not self._keys:
            raise ValueError("an IdentityProvider needs at least one key")
        self.signing_key: KeyPair = self._keys[0]
        self.audience = audience
        self.subject = subject
        self.extra_jwks_entries: list[Any] = []  # raw entries appended to the published JWKS
        self.jwks_override: Any = _UNSET  # any JSON value to serve at /jwks.json instead
        self.delay = 0.0  # seconds every answer waits (to make concurrent fetches overlap)
        self._outage: str | None = None
        self._release = threading.Event()
        self._counts = {JWKS_PATH: 0, DISCOVERY_PATH: 0}
        self._server = ServerThread(_IdpHandler, idp=self)
        self.url = self._server.url
        self.issuer = self.url
        self.jwks_url = self.url + JWKS_PATH
        self.discovery_url = self.url + DISCOVERY_PATH
        self._started = False

    # -- lifecycle --

    def __enter__(self) -> IdentityProvider:
        self._server.__enter__()
        self._started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._release.set()  # free handlers stuck in a "hang" outage
        if not self._started:
            return
        self._started = False
        # serve_forever() notices a shutdown request only every 0.5 s (its poll interval) or
        # when a connection arrives: knock until it has stopped, instead of waiting.
        closer = threading.Thread(target=self._server.close, daemon=True)
        closer.start()
        while closer.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self._server.port), timeout=0.2).close()
            closer.join(0.01)

    # -- keys --

    @property
    def keys(self) -> list[KeyPair]:
        """The published keys (a copy)."""
        with self._lock:
            return list(self._keys)

    def key_of(self, kind: str) -> KeyPair:
        """The first published key of `kind`."""
        for key in self.keys:
            if key.kind == kind:
                return key
        raise LookupError(f"the IdP publishes no {kind} key")

    def add_key(self, key: KeyPair | str = "RSA", *, make_signer: bool = False, **generate: Any) -> KeyPair:
        """Publish a key (a KeyPair, or a kind to generate with `generate` options)."""
        pair = key if isinstance(key, KeyPair) else generate_key(key, **generate)
        with self._lock:
            self._keys.append(pair)
            if make_signer:
                self.signing_key = pair
        return pair

    def remove_key(self, key: KeyPair | str) -> None:
        """Stop publishing a key (by KeyPair or kid)."""
        kid = key.kid if isinstance(key, KeyPair) else key
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def rotate(self, kind: str | None = None, *, retire_old: bool = False) -> KeyPair:
        """Publish a new key and sign with it from now on; `retire_old` unpublishes the old signer."""
        old = self.signing_key
        new = self.add_key(kind or old.kind, make_signer=True)
        if retire_old:
            self.remove_key(old)
        return new

    def jwks(self) -> dict[str, Any]:
        """The key set as served (public halves only)."""
        with self._lock:
            return {"keys": [k.public_jwk() for k in self._keys] + list(self.extra_jwks_entries)}

    def discovery_document(self) -> dict[str, Any]:
        algs = sorted({k.alg for k in self.keys})
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
            "authorization_endpoint": self.url + "/authorize",
            "token_endpoint": self.url + "/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
        }

    # -- tokens --

    def default_claims(self, *, now: float | None = None, ttl: float = 300) -> dict[str, Any]:
        """iss, sub, iat, exp (+ aud when the IdP has an audience)."""
        now = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"iss": self.issuer, "sub": self.subject, "iat": now, "exp": int(now + ttl)}
        if self.audience is not None:
            claims["aud"] = self.audience
        return claims

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        key: KeyPair | None = None,
        alg: str | None = None,
        headers: Mapping[str, Any] | None = None,
        now: float | None = None,
        ttl: float = 300,
    ) -> str:
        """A signed token: default claims updated with `claims`, header {alg, typ, kid} updated
        with `headers` (OMIT drops an entry). `alg` defaults to the key's alg."""
        key = key or self.signing_key
        payload = {**self.default_claims(now=now, ttl=ttl), **(claims or {})}
        header = {"alg": alg or key.alg, "typ": "JWT", "kid": key.kid, **(headers or {})}
        return sign(header, payload, key.private_key)

    # -- failures and counters --

    def set_outage(self, mode: str | None) -> None:
        """Start ("error" 500, "close" drop the connection, "garbage" non-JSON 200, "empty" a JWKS
        with no keys, "hang" no answer until the outage ends) or end (None) an outage."""
        if mode is not None and mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {mode!r}; one of {OUTAGE_MODES}")
        if mode is None:
            self._release.set()
        else:
            self._release.clear()
        self._outage = mode

    @contextlib.contextmanager
    def outage(self, mode: str = "error") -> Iterator[IdentityProvider]:
        self.set_outage(mode)
        try:
            yield self
        finally:
            self.set_outage(None)

    @property
    def fetch_count(self) -> int:
        """GET /jwks.json requests received (outages included)."""
        with self._lock:
            return self._counts[JWKS_PATH]

    @property
    def discovery_count(self) -> int:
        with self._lock:
            return self._counts[DISCOVERY_PATH]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(self._counts, 0)

    def _count(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1


class _IdpHandler(QuietHandler):
    server: Any

    def do_GET(self) -> None:  # noqa: N802 - name from BaseHTTPRequestHandler
        idp: IdentityProvider = self.server.idp
        path = self.path.split("?", 1)[0]
        if path not in (JWKS_PATH, DISCOVERY_PATH):
            self.send_bytes(404, b'{"error": "not found"}')
            return
        idp._count(path)
        if idp.delay:
            time.sleep(idp.delay)
        mode = idp._outage
        if mode == "hang":
            idp._release.wait(timeout=30)
            mode = "close"
        if mode == "close":
            self.close_connection = True  # answer nothing; the client sees the connection drop
            return
        if mode == "error":
            self.send_bytes(500, b'{"error": "identity provider unavailable"}')
            return
        if mode == "garbage":
            self.send_bytes(200, b"<html>maintenance</html>", content_type="text/html")
            return
        if path == DISCOVERY_PATH:
            document: Any = idp.discovery_document()
        elif mode == "empty":
            document = {"keys": []}
        elif idp.jwks_override is not _UNSET:
            document = idp.jwks_override
        else:
            document = idp.jwks()
        self.send_bytes(200, json.dumps(document).encode("utf-8"))


__all__ = ["IdentityProvider", "OMIT", "KeyPair", "generate_key", "JWKS_PATH", "DISCOVERY_PATH", "OUTAGE_MODES"]
