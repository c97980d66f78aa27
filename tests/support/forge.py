"""Token minting for tests: real keys, real signatures, and a catalogue of forged tokens.

Signing is implemented here directly on `cryptography` (not through PyJWT), so the tests do not
share code with the verifier they check, and tokens PyJWT refuses to build (HS256 keyed with an
RSA public key PEM, `alg: none`, duplicate JSON members) can be built all the same.

Main API:

- `generate_key(kind, *, kid=None, publish_alg=True)` -> `KeyPair` (kinds in `KEY_KINDS`)
- `KeyPair.public_jwk()`, `.public_pem()`
- `sign(header, payload, key)` -> compact token; `compact(header, payload, signature)` for raw parts
- `tamper_payload`, `replace_header`, `replace_signature`, `parts`, `decode_part`
- `forgeries(idp)` -> list of `Forgery(name, token, code)`: bad tokens and the TokenError code
  `enforcer.tokens` answers for each, given a verifier configured with `idp.audience`/`idp.issuer`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

if TYPE_CHECKING:
    from tests.support.idp import IdentityProvider


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Any = _Omit()
"""Use as a claim or header value to drop a default (e.g. `{"exp": OMIT}`)."""

# kind -> (default alg, key factory)
KEY_KINDS: dict[str, tuple[str, Callable[[], Any]]] = {
    "RSA": ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "RSA-PSS": ("PS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "RSA-1024": ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024)),
    "EC-P256": ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    "EC-P384": ("ES384", lambda: ec.generate_private_key(ec.SECP384R1())),
    "EC-P521": ("ES512", lambda: ec.generate_private_key(ec.SECP521R1())),
    "EC-secp256k1": ("ES256K", lambda: ec.generate_private_key(ec.SECP256K1())),
    "Ed25519": ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    "Ed448": ("EdDSA", ed448.Ed448PrivateKey.generate),
}

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_EC_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521", "secp256k1": "secp256k1"}


# --- encoding -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, length: int | None = None) -> str:
    length = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(length, "big"))


def encode_part(value: Any) -> str:
    """bytes -> base64url as is; str -> its UTF-8; anything else -> compact JSON first."""
    if isinstance(value, bytes):
        return b64url(value)
    if isinstance(value, str):
        return b64url(value.encode("utf-8"))
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def compact(header: Any, payload: Any, signature: bytes = b"") -> str:
    """A compact token from raw parts (no signing)."""
    return f"{encode_part(header)}.{encode_part(payload)}.{b64url(signature)}"


def parts(token: str) -> list[str]:
    return token.split(".")


def decode_part(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _drop_omitted(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not OMIT}


# --- keys and signatures --------------------------------------------------------------------


@dataclass
class KeyPair:
    """A private signing key and how the IdP publishes its public half."""

    kid: str
    kind: str
    private_key: Any = field(repr=False)
    alg: str
    publish_alg: bool = True  # put `alg` into the JWK
    use: str | None = "sig"  # the JWK's `use` (None: left out)

    @property
    def public_key(self) -> Any:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, Any]:
        """The public JWK (RFC 7517/7518/8037), built from the key numbers."""
        pub = self.public_key
        if isinstance(pub, rsa.RSAPublicKey):
            numbers = pub.public_numbers()
            jwk: dict[str, Any] = {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            numbers = pub.public_numbers()
            size = (pub.curve.key_size + 7) // 8
            jwk = {
                "kty": "EC",
                "crv": _EC_CURVE_NAMES[pub.curve.name],
                "x": _uint(numbers.x, size),
                "y": _uint(numbers.y, size),
            }
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            crv = "Ed25519" if isinstance(pub, ed25519.Ed25519PublicKey) else "Ed448"
            jwk = {"kty": "OKP", "crv": crv, "x": b64url(raw)}
        jwk["kid"] = self.kid
        if self.use is not None:
            jwk["use"] = self.use
        if self.publish_alg:
            jwk["alg"] = self.alg
        return jwk


def generate_key(kind: str = "RSA", *, kid: str | None = None, alg: str | None = None,
                 publish_alg: bool = True, use: str | None = "sig") -> KeyPair:
    """A fresh key of `kind` (see KEY_KINDS); kid defaults to `<kind>-<random>`."""
    default_alg, factory = KEY_KINDS[kind]
    return KeyPair(
        kid=kid or f"{kind.lower()}-{uuid.uuid4().hex[:12]}",
        kind=kind,
        private_key=factory(),
        alg=alg or default_alg,
        publish_alg=publish_alg,
        use=use,
    )


def signature_for(signing_input: bytes, key: Any, alg: str) -> bytes:
    """The JWS signature of `signing_input` (RFC 7518 §3); `key` is bytes for HS*."""
    if alg.lower() == "none":
        return b""
    if alg in _HMAC_HASHES:
        return hmac.new(key, signing_input, _HMAC_HASHES[alg]).digest()
    if alg.startswith("RS"):
        return key.sign(signing_input, padding.PKCS1v15(), _HASHES[alg[2:]]())
    if alg.startswith("PS"):
        digest = _HASHES[alg[2:]]()
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return key.sign(signing_input, pss, digest)
    if alg.startswith("ES"):
        der = key.sign(signing_input, ec.ECDSA(_HASHES[alg[2:5]]()))
        r, s = decode_dss_signature(der)
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        return key.sign(signing_input)
    raise ValueError(f"forge cannot sign with alg {alg!r}")


def sign(header: Mapping[str, Any], payload: Any, key: Any, *, alg: str | None = None) -> str:
    """Sign `payload` (dict, or raw bytes/str) under `header`; `alg` overrides the header's alg
    for the signature only (to forge header/signature mismatches)."""
    header = _drop_omitted(header)
    if isinstance(payload, Mapping):
        payload = _drop_omitted(payload)
    signing_input = f"{encode_part(header)}.{encode_part(payload)}".encode("ascii")
    signature = signature_for(signing_input, key, alg or header.get("alg", "none"))
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


def tamper_payload(token: str, **changes: Any) -> str:
    """Same header and signature, payload claims changed (OMIT removes a claim)."""
    header, payload, signature = parts(token)
    claims = json.loads(decode_part(payload))
    claims.update(changes)
    return f"{header}.{encode_part(_drop_omitted(claims))}.{signature}"


def replace_header(token: str, header: Any) -> str:
    """Same payload and signature under another header."""
    _, payload, signature = parts(token)
    return f"{encode_part(header)}.{payload}.{signature}"


def replace_signature(token: str, signature: bytes) -> str:
    header, payload, _ = parts(token)
    return f"{header}.{payload}.{b64url(signature)}"


# --- the catalogue of bad tokens ------------------------------------------------------------


@dataclass(frozen=True)
class Forgery:
    name: str
    token: str
    code: str  # expected TokenError.code

    def __repr__(self) -> str:  # keep pytest ids and failure output short
        return f"Forgery({self.name!r}, code={self.code!r})"


def forgeries(idp: IdentityProvider, *, now: float | None = None) -> list[Forgery]:
    """Bad tokens against `idp` with the TokenError code expected for each.

    Needs an IdP publishing an RSA key with its `alg` (the default signer) and an EC P-256 key
    (the default IdentityProvider does). Assumes the verifier checks `idp.audience` and
    `idp.issuer` with the default leeway (30 s) and max token size (8192 bytes).
    """
    now = time.time() if now is None else now
    rsa_key = idp.key_of("RSA")
    ec_key = idp.key_of("EC-P256")
    if not rsa_key.publish_alg:
        raise ValueError("forgeries() needs the IdP's RSA key to publish its alg")
    attacker = generate_key("RSA", kid="attacker")
    impostor = generate_key("RSA", kid=rsa_key.kid)  # same kid as the real key, other key
    good = idp.mint(now=now, key=rsa_key)
    claims = idp.default_claims(now=now)
    head = {"alg": "RS256", "typ": "JWT", "kid": rsa_key.kid}
    h, p, s = parts(good)
    if len(s) != 342:
        raise ValueError("forgeries() expects an RSA-2048 signing key")
    no_exp = json.dumps({k: v for k, v in claims.items() if k != "exp"}).encode()

    def rsa_signed(payload: Any, **header: Any) -> str:
        return sign({**head, **header}, payload, rsa_key.private_key)

    def attacker_signed(**header: Any) -> str:
        return sign({"alg": "RS256", "typ": "JWT", "kid": attacker.kid, **header}, claims, attacker.private_key)

    cases: list[tuple[str, str, str]] = [
        # structure
        ("empty", "", "malformed_token"),
        ("two_parts", f"{h}.{p}", "malformed_token"),
        ("four_parts", f"{good}.{s}", "malformed_token"),
        ("five_parts_jwe_shape", f"{h}.{p}.{s}.{s}.{s}", "malformed_token"),
        ("empty_header_part", f".{p}.{s}", "malformed_token"),
        ("garbage_base64_header", f"!!!.{p}.{s}", "malformed_token"),
        ("garbage_base64_signature", f"{h}.{p}.%%%", "malformed_token"),
        # An RSA-2048 signature is 256 bytes = 342 base64url chars: proper padding is "==", and the
        # last char carries 4 unused bits, so flipping one gives the same bytes (malleability).
        ("padded_signature", f"{h}.{p}.{s}==", "malformed_token"),
        ("non_canonical_signature", f"{h}.{p}.{s[:-1]}{_flip_unused_bit(s)}", "malformed_token"),
        ("whitespace_inside", f"{h}.{p[:10]} {p[10:]}.{s}", "malformed_token"),
        ("non_ascii", f"{h}.{p}.{s[:-1]}\u00e9", "malformed_token"),
        ("header_not_json", f"{encode_part(b'not json')}.{p}.{s}", "malformed_token"),
        ("header_json_array", f"{encode_part(['RS256'])}.{p}.{s}", "malformed_token"),
        ("header_utf16", f"{b64url(json.dumps(head).encode('utf-16'))}.{p}.{s}", "malformed_token"),
        ("payload_not_json_signed", rsa_signed(b"{not json"), "malformed_token"),
        ("payload_json_array_signed", rsa_signed(b'["sub", "admin"]'), "malformed_token"),
        ("payload_duplicate_claim_signed",
         rsa_signed(json.dumps(claims)[:-1].encode() + b', "exp": 99999999999}'), "malformed_token"),
        ("payload_nan_signed", rsa_signed(json.dumps(claims)[:-1].encode() + b', "x": NaN}'), "malformed_token"),
        ("payload_overflowing_number_signed", rsa_signed(json.dumps(claims)[:-1].encode() + b', "x": 1e400}'),
         "malformed_token"),
        # \ud800 alone decodes to a lone surrogate: no UTF-8 text (the store, OPA, a log line) holds it.
        ("payload_lone_surrogate_signed", rsa_signed(json.dumps(claims)[:-1].encode() + b', "name": "a\\ud800"}'),
         "malformed_token"),
        ("payload_lone_surrogate_name_signed", rsa_signed(json.dumps(claims)[:-1].encode() + b', "\\udfff": 1}'),
         "malformed_token"),
        ("kid_not_string", rsa_signed(claims, kid=7), "malformed_token"),
        # size
        ("one_megabyte", f"{h}.{'A' * (1 << 20)}.{s}", "token_too_large"),
        ("just_over_limit", f"{h}.{p}{'A' * max(0, 8193 - len(good))}.{s}", "token_too_large"),
        # algorithms
        ("alg_none", compact({"alg": "none", "typ": "JWT"}, claims), "unsupported_algorithm"),
        ("alg_None_case", compact({"alg": "None", "typ": "JWT", "kid": rsa_key.kid}, claims), "unsupported_algorithm"),
        ("alg_none_with_signature", compact({"alg": "none", "kid": rsa_key.kid}, claims, b"x" * 32),
         "unsupported_algorithm"),
        ("alg_missing", rsa_signed(claims, alg=OMIT), "unsupported_algorithm"),
        ("alg_not_string", compact({"alg": ["RS256"], "kid": rsa_key.kid}, claims, b"x"), "unsupported_algorithm"),
        ("hs256_keyed_with_rsa_public_pem",
         sign({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}, claims, rsa_key.public_pem()),
         "unsupported_algorithm"),
        ("hs512_keyed_with_rsa_public_pem",
         sign({"alg": "HS512", "typ": "JWT", "kid": rsa_key.kid}, claims, rsa_key.public_pem()),
         "unsupported_algorithm"),
        ("es256k_not_allowed", compact({"alg": "ES256K", "kid": ec_key.kid}, claims, b"x" * 64),
         "unsupported_algorithm"),
        ("rs256_token_against_ec_key",
         sign({"alg": "RS256", "typ": "JWT", "kid": ec_key.kid}, claims, rsa_key.private_key),
         "unsupported_algorithm"),
        ("es384_token_against_p256_key",
         sign({"alg": "ES384", "typ": "JWT", "kid": ec_key.kid}, claims, ec_key.private_key, alg="ES256"),
         "unsupported_algorithm"),
        ("ps256_against_jwk_declaring_rs256", rsa_signed(claims, alg="PS256"), "unsupported_algorithm"),
        # keys named by the token
        ("jku_header", attacker_signed(jku="http://127.0.0.1:9/jwks.json"), "forbidden_header"),
        ("x5u_header", attacker_signed(x5u="http://127.0.0.1:9/cert.pem"), "forbidden_header"),
        ("jwk_header_embeds_attacker_key", attacker_signed(jwk=attacker.public_jwk()), "forbidden_header"),
        ("x5c_header", attacker_signed(x5c=[b64url(b"not really a certificate")]), "forbidden_header"),
        ("jku_header_with_real_kid", rsa_signed(claims, jku="http://127.0.0.1:9/jwks.json"), "forbidden_header"),
        ("crit_header", rsa_signed(claims, crit=["exp"]), "forbidden_header"),
        ("b64_false_header", rsa_signed(claims, b64=False, crit=["b64"]), "forbidden_header"),
        # key ids
        ("unknown_kid", attacker_signed(), "unknown_key"),
        ("kid_path_traversal", attacker_signed(kid="../../../../../../dev/null"), "unknown_key"),
        ("kid_sql_injection", attacker_signed(kid="x' UNION SELECT 'secret' --"), "unknown_key"),
        ("kid_empty_string", attacker_signed(kid=""), "unknown_key"),
        # signatures
        ("tampered_payload", tamper_payload(good, sub="admin", scope="litellm_proxy_admin"), "bad_signature"),
        ("tampered_exp", tamper_payload(good, exp=int(now) + 10 * 365 * 86400), "bad_signature"),
        ("signature_from_other_key_same_kid",
         sign({**head}, claims, impostor.private_key), "bad_signature"),
        ("header_swapped", replace_header(good, {**head, "typ": "at+jwt"}), "bad_signature"),
        ("signature_truncated", replace_signature(good, decode_part(s)[:-6]), "bad_signature"),
        ("signature_bit_flipped", replace_signature(good, bytes([decode_part(s)[0] ^ 1]) + decode_part(s)[1:]),
         "bad_signature"),
        ("signature_empty", f"{h}.{p}.", "bad_signature"),
        ("no_kid_signed_by_attacker", sign({"alg": "RS256", "typ": "JWT"}, claims, attacker.private_key),
         "bad_signature"),
        # time
        ("expired", idp.mint({"exp": int(now) - 3600}, key=rsa_key, now=now), "token_expired"),
        ("expired_beyond_leeway", idp.mint({"exp": int(now) - 31}, key=rsa_key, now=now), "token_expired"),
        ("not_yet_valid_nbf", idp.mint({"nbf": int(now) + 600}, key=rsa_key, now=now), "token_not_yet_valid"),
        ("issued_in_future_iat", idp.mint({"iat": int(now) + 600}, key=rsa_key, now=now), "token_not_yet_valid"),
        ("exp_missing", idp.mint({"exp": OMIT}, key=rsa_key, now=now), "missing_claim"),
        ("exp_string", idp.mint({"exp": str(int(now) + 300)}, key=rsa_key, now=now), "invalid_claim"),
        ("exp_bool", idp.mint({"exp": True}, key=rsa_key, now=now), "invalid_claim"),
        ("exp_overflows_to_infinity", rsa_signed(no_exp[:-1] + b', "exp": 1e400}'), "malformed_token"),
        ("nbf_string", idp.mint({"nbf": "yesterday"}, key=rsa_key, now=now), "invalid_claim"),
        # audience and issuer
        ("wrong_audience", idp.mint({"aud": "someone-else"}, key=rsa_key, now=now), "bad_audience"),
        ("audience_list_without_ours", idp.mint({"aud": ["a", "b"]}, key=rsa_key, now=now), "bad_audience"),
        ("audience_prefix", idp.mint({"aud": idp.audience + "-x"}, key=rsa_key, now=now), "bad_audience"),
        ("audience_missing", idp.mint({"aud": OMIT}, key=rsa_key, now=now), "missing_claim"),
        ("audience_not_string", idp.mint({"aud": {"x": idp.audience}}, key=rsa_key, now=now), "invalid_claim"),
        ("wrong_issuer", idp.mint({"iss": "https://evil.example"}, key=rsa_key, now=now), "bad_issuer"),
        ("issuer_trailing_slash", idp.mint({"iss": idp.issuer + "/"}, key=rsa_key, now=now), "bad_issuer"),
        ("issuer_missing", idp.mint({"iss": OMIT}, key=rsa_key, now=now), "missing_claim"),
        ("issuer_list", idp.mint({"iss": [idp.issuer]}, key=rsa_key, now=now), "invalid_claim"),
    ]
    return [Forgery(name, token, code) for name, token, code in cases]


def _flip_unused_bit(segment: str) -> str:
    """The last char of `segment` with its lowest (unused) bit flipped: same decoded bytes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if len(segment) % 4 not in (2, 3):
        raise ValueError("segment has no unused bits")
    return alphabet[alphabet.index(segment[-1]) ^ 1]
