"""Bundle signatures as OPA specifies them: `.signatures.json` holding one JWT whose
`files` claim lists the SHA-256 of every bundle file.

OPA hashes `.manifest` and `data.json` files in a canonical JSON form (object keys
sorted, no whitespace) and every other file as raw bytes; this module does the same
so OPA started with the matching verification key accepts the bundle, and refuses
it when any byte of any file changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from regate.common.errors import RegateError

SIGNATURES_FILE = ".signatures.json"
DEFAULT_KEY_ID = "default"  # what `opa run --verification-key` expects without --verification-key-id
ALGORITHMS = {"RS256": rsa.RSAPrivateKey, "ES256": ec.EllipticCurvePrivateKey}


class SigningError(RegateError):
    """Raised when the signing key cannot be read or does not fit the algorithm."""

    code = "signing_error"
    status = 400


def _structured(path: str) -> bool:
    name = PurePosixPath(path).name
    return name in ("data.json", ".manifest")


def canonical_json(raw: bytes) -> bytes:
    """The bytes OPA hashes for a JSON document: sorted keys, compact, Go's escaping."""
    text = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # Go's encoder escapes these two line separators; Python's leaves them raw.
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


def file_hashes(files: dict[str, bytes]) -> list[dict]:
    entries = []
    for path in sorted(files):
        if path == SIGNATURES_FILE:
            continue
        data = canonical_json(files[path]) if _structured(path) else files[path]
        entries.append({"name": path, "hash": hashlib.sha256(data).hexdigest(), "algorithm": "SHA-256"})
    return entries


def load_private_key(path: str | Path):
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise SigningError(f"{path}: cannot read signing key: {e.strerror}") from None
    try:
        return serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        raise SigningError(f"{path}: not an unencrypted PEM private key") from None


def signatures(files: dict[str, bytes], key_path: str | Path, *, algorithm: str | None = None,
               key_id: str | None = None) -> bytes:
    """The `.signatures.json` document for `files`."""
    key = load_private_key(key_path)
    if algorithm is None:
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    if algorithm not in ALGORITHMS:
        raise SigningError(f"unsupported signing algorithm {algorithm}: use RS256 or ES256")
    if not isinstance(key, ALGORITHMS[algorithm]):
        raise SigningError(f"{key_path}: {algorithm} needs a{'n RSA' if algorithm == 'RS256' else 'n EC P-256'} key")
    if algorithm == "ES256" and key.curve.name != "secp256r1":
        raise SigningError(f"{key_path}: ES256 needs a P-256 key, got {key.curve.name}")
    token = jwt.encode({"files": file_hashes(files)}, key, algorithm=algorithm,
                       headers={"kid": key_id or DEFAULT_KEY_ID})
    return (json.dumps({"signatures": [token]}, indent=2) + "\n").encode()
