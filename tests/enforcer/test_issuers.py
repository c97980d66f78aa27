"""Several identity providers (litellm_jwtauth.issuers) and public_key_stale_ttl: keys looked up
per issuer, per-issuer audiences, OpenID discovery from the issuer, the JWT_PUBLIC_KEY_URL
fallback, and how long last good keys serve through an outage. Real HTTP identity providers."""

from __future__ import annotations

import pytest

from regate.common.errors import KeySetError, TokenError
from regate.enforcer.jwks import IssuerSettings, JwtSettings, KeySet
from regate.enforcer.tokens import TokenVerifier
from tests.support.forge import generate_key
from tests.support.idp import IdentityProvider

from .test_tokens import FakeClock

SHARED_KID = "shared-kid"


@pytest.fixture
def two_idps():
    """Two providers with distinct keys published under the same kid."""
    with IdentityProvider(keys=[generate_key("RSA", kid=SHARED_KID)], audience="aud-a") as a, \
            IdentityProvider(keys=[generate_key("RSA", kid=SHARED_KID)], audience="aud-b") as b:
        yield a, b


def verifier(*entries: IssuerSettings, fallback: str | None = None, clock=None, **settings) -> TokenVerifier:
    jwt_settings = JwtSettings(jwks_urls=(fallback,) if fallback else (), issuers=entries, **settings)
    if clock is None:
        return TokenVerifier(jwt_settings)
    keysets = {e.issuer: KeySet(jwt_settings, urls=(e.jwks_url,), clock=clock,
                                expected_issuer=e.issuer if e.discovered else None) for e in entries}
    return TokenVerifier(jwt_settings, issuer_keysets=keysets)


def code_of(v: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenError) as info:
        v.verify(token)
    return info.value.code


def test_each_issuers_tokens_are_verified_with_its_own_keys(two_idps):
    a, b = two_idps
    v = verifier(IssuerSettings.of(a.issuer, audience="aud-a", jwks_url=a.jwks_url),
                 IssuerSettings.of(b.issuer, audience="aud-b", jwks_url=b.jwks_url))
    assert v.verify_issued(a.mint({"team": "ta"}))[1] == a.issuer
    claims, issuer = v.verify_issued(b.mint({"team": "tb"}))
    assert (claims["team"], issuer) == ("tb", b.issuer)
    # Signed by A, claiming to come from B: B's key under the same kid does not verify it.
    assert code_of(v, a.mint({"iss": b.issuer, "aud": "aud-b"})) == "bad_signature"
    assert code_of(v, b.mint({"iss": a.issuer, "aud": "aud-a"})) == "bad_signature"


def test_the_audience_is_checked_per_issuer(two_idps):
    a, b = two_idps
    v = verifier(IssuerSettings.of(a.issuer, audience="aud-a", jwks_url=a.jwks_url),
                 IssuerSettings.of(b.issuer, audience=None, jwks_url=b.jwks_url))
    assert code_of(v, a.mint({"aud": "aud-b"})) == "bad_audience"
    assert code_of(v, a.mint({"aud": None} | {})) == "invalid_claim"
    assert v.verify(b.mint({"aud": "anything"}))  # disable_audience_validation
    assert v.verify(b.mint({"aud": "aud-a"}))


def test_an_unlisted_issuer_falls_back_to_jwt_public_key_url_or_is_refused(two_idps):
    a, b = two_idps
    listed = IssuerSettings.of(a.issuer, audience="aud-a", jwks_url=a.jwks_url)
    assert code_of(verifier(listed), b.mint()) == "unknown_issuer"
    assert code_of(verifier(listed), b.mint({"iss": None})) == "unknown_issuer"
    with_fallback = verifier(listed, fallback=b.jwks_url)
    claims, issuer = with_fallback.verify_issued(b.mint())
    assert issuer is None and claims["iss"] == b.issuer  # the policy sees no listed issuer
    # The fallback keys verify only what they signed: A's token under an unlisted iss does not pass.
    assert code_of(with_fallback, a.mint({"iss": "https://elsewhere.example"})) == "bad_signature"


def test_keys_come_from_the_issuers_discovery_document(two_idps):
    a, _ = two_idps
    v = verifier(IssuerSettings.of(a.issuer, audience="aud-a"))
    assert v.verify(a.mint())
    assert a.discovery_count == 1 and a.fetch_count == 1


def test_a_discovery_document_of_another_issuer_is_refused(two_idps):
    a, b = two_idps
    # a's discovery document, configured for an issuer name it does not carry.
    entry = IssuerSettings("https://impostor.example", a.discovery_url, "aud-a", discovered=True)
    v = verifier(entry)
    with pytest.raises(KeySetError) as info:
        v.verify(a.mint({"iss": "https://impostor.example"}))
    assert (info.value.code, info.value.status) == ("idp_unavailable", 503)


@pytest.mark.parametrize("stale_ttl, serves_until", [(0, 600), (3600, 4200)])
def test_last_good_keys_serve_for_public_key_stale_ttl(two_idps, stale_ttl, serves_until):
    a, _ = two_idps
    clock = FakeClock()
    entry = IssuerSettings.of(a.issuer, audience="aud-a", jwks_url=a.jwks_url)
    v = verifier(entry, clock=clock, public_key_ttl=600, public_key_stale_ttl=stale_ttl, retry_interval=0)
    token = a.mint(ttl=10**7)
    assert v.verify(token)
    with a.outage("error"):
        clock.advance(serves_until - 1)
        if stale_ttl:
            assert v.verify(token)  # served stale, with the IdP down
        clock.advance(1)
        with pytest.raises(KeySetError) as info:
            v.verify(token)
        assert (info.value.code, info.value.status) == ("idp_unavailable", 503)
    assert v.verify(token)  # the IdP is back
