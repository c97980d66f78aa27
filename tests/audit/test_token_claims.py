"""`regate explain --token` reads a JWT's claims without verifying it. Property-based tests
against PyJWT's own unverified decoding as the reference."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regate.audit.explain import InputError, claims_of_token

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SEGMENT = st.text(alphabet=B64URL + "=+/!é ", max_size=40)


def reference(token: str) -> dict | None:
    """PyJWT's claims without verification, or None where PyJWT refuses the token."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError:
        return None


def ours(token: str) -> dict | None:
    try:
        return claims_of_token(token)
    except InputError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), JSON, max_size=6))
def test_claims_of_any_signed_token_are_pyjwts(claims):
    # Signed by hand: jwt.encode refuses registered claims of the wrong type ({"iss": None}),
    # which an IdP's token may still carry and `regate explain --token` must read as PyJWT does.
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    token = f"{signing_input}.{_b64(hmac.new(b'k' * 32, signing_input.encode(), hashlib.sha256).digest())}"
    assert claims_of_token(token) == reference(token) == claims


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@settings(max_examples=500, deadline=None)
@given(st.one_of(SEGMENT, JSON.map(lambda v: _b64(json.dumps(v).encode()))),
       st.one_of(SEGMENT, JSON.map(lambda v: _b64(json.dumps(v).encode()))),
       st.binary(max_size=16))
def test_any_three_segments_are_accepted_or_refused_as_pyjwt_does(header, payload, signature):
    token = f"{header}.{payload}.{_b64(signature)}"
    assert ours(token) == reference(token)


@given(st.text(max_size=60).filter(lambda t: t.count(".") != 2))
def test_anything_but_three_segments_is_refused(text):
    with pytest.raises(InputError, match=r"^--token: not a JWT \(expected three dot-separated parts\)$"):
        claims_of_token(text)
