"""A local development identity provider: a signing key, its JWKS over HTTP, and a token minter.

    regate dev idp --port 8900                 # serves /jwks.json and OpenID discovery
    regate dev token --scope litellm_proxy_admin --claim sub=alice
    regate dev token --claim team_id=team-a --claim email=alice@example.com

The key lives in a local folder (default .regate/dev-idp, private key mode 0600) so
tokens minted by `regate dev token` verify against the JWKS `regate dev idp` serves.
For local use only: it signs whatever it is asked to.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from regate.common.errors import RegateError
from regate.devtools.stub_server import QuietHandler

DEFAULT_KEY_DIR = Path(".regate") / "dev-idp"
DEFAULT_AUDIENCE = "regate-dev"
JWKS_PATH = "/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class DevKeys:
    """The dev IdP's RSA key, created on first use."""

    def __init__(self, key_dir: str | Path = DEFAULT_KEY_DIR):
        self.key_dir = Path(key_dir)
        path = self.key_dir / "signing-key.pem"
        if not path.exists():
            self.key_dir.mkdir(parents=True, exist_ok=True)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        self.private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        numbers = self.private_key.public_key().public_numbers()
        self.public_jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "n": _b64(numbers.n), "e": _b64(numbers.e)}
        # RFC 7638 thumbprint as the kid: stable for the key, different for every key.
        canonical = json.dumps({k: self.public_jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
        self.public_jwk["kid"] = self.kid

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk]}

    def mint(self, claims: dict, *, issuer: str | None = None, audience: str | None = DEFAULT_AUDIENCE,
             ttl: int = 3600) -> str:
        now = int(time.time())
        payload = {"iat": now, "nbf": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
        if issuer:
            payload["iss"] = issuer
        if audience:
            payload["aud"] = audience
        payload.update(claims)
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})


class _Handler(QuietHandler):
    server: "DevIdentityProvider"

    def do_GET(self):  # noqa: N802 - name from the base class
        path = self.path.split("?", 1)[0]
        status = 200
        if path == JWKS_PATH:
            doc = self.server.keys.jwks()
        elif path == DISCOVERY_PATH:
            doc = {"issuer": self.server.issuer, "jwks_uri": self.server.issuer + JWKS_PATH,
                   "id_token_signing_alg_values_supported": ["RS256"]}
        else:
            doc, status = {"error": "not found"}, 404
        self.send_bytes(status, json.dumps(doc).encode())


class DevIdentityProvider(ThreadingHTTPServer):
    """JWKS + OpenID discovery for the dev key, on a local port."""

    daemon_threads = True

    def __init__(self, keys: DevKeys, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.keys = keys
        self.issuer = f"http://{host}:{self.server_address[1]}"
        self.discovery_url = self.issuer + DISCOVERY_PATH

    def start(self) -> "DevIdentityProvider":
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def parse_claims(pairs: list[str]) -> dict:
    """`name=value` pairs; a value that parses as JSON (true, 42, ["a"]) keeps its type."""
    claims = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise RegateError(f"--claim takes name=value, got {pair!r}", code="bad_claim", status=400)
        try:
            claims[name] = json.loads(value)
        except ValueError:
            claims[name] = value
    return claims


def token_command(args) -> int:
    keys = DevKeys(args.key_dir)
    claims = parse_claims(args.claim or [])
    if args.scope:
        claims["scope"] = " ".join(args.scope)
    print(keys.mint(claims, issuer=args.issuer, audience=args.audience or None, ttl=args.ttl))
    return 0


def idp_command(args) -> int:
    idp = DevIdentityProvider(DevKeys(args.key_dir), args.host, args.port)
    print(f"dev identity provider on {idp.issuer}")
    print(f"  JWT_PUBLIC_KEY_URL={idp.discovery_url}")
    print(f"  JWT_ISSUER={idp.issuer}  JWT_AUDIENCE={DEFAULT_AUDIENCE}")
    try:
        idp.serve_forever()
    finally:
        idp.server_close()
    return 0
