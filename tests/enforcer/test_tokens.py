"""enforcer.tokens against a real HTTP identity provider (tests.support.idp) and real signatures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from regate.common.errors import KeySetError, RegateError, TokenError
from regate.enforcer.jwks import JwtSettings, KeySet
from regate.enforcer.tokens import ERROR_CODES, TokenVerifier
from tests.support.forge import OMIT, compact, decode_part, forgeries, generate_key, parts, sign
from tests.support.idp import IdentityProvider
from tests.support.net import free_port

TTL = 600.0
COOLDOWN = 30.0
RETRY = 5.0


class FakeClock:
    """An injectable monotonic clock that only moves when told to."""

    def __init__(self, start: float = 10_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settings_for(*urls: str, idp: IdentityProvider | None = None, **overrides) -> JwtSettings:
    fields = dict(jwks_urls=tuple(urls), public_key_ttl=TTL, unknown_kid_cooldown=COOLDOWN, retry_interval=RETRY)
    if idp is not None:
        fields.update(audience=idp.audience, issuer=idp.issuer)
    fields.update(overrides)
    return JwtSettings(**fields)


def verifier_for(idp: IdentityProvider, clock: FakeClock | None = None, **overrides) -> TokenVerifier:
    settings = settings_for(idp.jwks_url, idp=idp, **overrides)
    keyset = KeySet(settings, clock=clock) if clock is not None else KeySet(settings)
    return TokenVerifier(settings, keyset)


def rejection(verifier: TokenVerifier, token) -> TokenError:
    with pytest.raises(TokenError) as info:
        verifier.verify(token)
    return info.value


def random_kid_token(idp: IdentityProvider) -> str:
    return idp.mint(headers={"kid": uuid.uuid4().hex})


@pytest.fixture(scope="module")
def idp():
    """One IdP with a key of every supported kind; the RSA key publishes its alg, one RSA key does not."""
    keys = [
        generate_key("RSA"),
        generate_key("EC-P256"),
        generate_key("Ed25519"),
        generate_key("RSA", kid="rsa-no-alg", publish_alg=False),
        generate_key("EC-P384"),
        generate_key("EC-P521"),
        generate_key("Ed448"),
    ]
    with IdentityProvider(keys=keys) as provider:
        yield provider


@pytest.fixture(scope="module")
def verifier(idp):
    return verifier_for(idp)


@pytest.fixture
def fresh_idp():
    """An IdP the test may rotate, break or count fetches on."""
    with IdentityProvider(kinds=("RSA",)) as provider:
        yield provider


# --- bad tokens ---------------------------------------------------------------------------

EXPECTED_CODES = {
    "empty": "malformed_token",
    "two_parts": "malformed_token",
    "four_parts": "malformed_token",
    "five_parts_jwe_shape": "malformed_token",
    "empty_header_part": "malformed_token",
    "garbage_base64_header": "malformed_token",
    "garbage_base64_signature": "malformed_token",
    "padded_signature": "malformed_token",
    "non_canonical_signature": "malformed_token",
    "whitespace_inside": "malformed_token",
    "non_ascii": "malformed_token",
    "header_not_json": "malformed_token",
    "header_json_array": "malformed_token",
    "header_utf16": "malformed_token",
    "payload_not_json_signed": "malformed_token",
    "payload_json_array_signed": "malformed_token",
    "payload_duplicate_claim_signed": "malformed_token",
    "payload_nan_signed": "malformed_token",
    "payload_overflowing_number_signed": "malformed_token",
    "payload_lone_surrogate_signed": "malformed_token",
    "payload_lone_surrogate_name_signed": "malformed_token",
    "kid_not_string": "malformed_token",
    "one_megabyte": "token_too_large",
    "just_over_limit": "token_too_large",
    "alg_none": "unsupported_algorithm",
    "alg_None_case": "unsupported_algorithm",
    "alg_none_with_signature": "unsupported_algorithm",
    "alg_missing": "unsupported_algorithm",
    "alg_not_string": "unsupported_algorithm",
    "hs256_keyed_with_rsa_public_pem": "unsupported_algorithm",
    "hs512_keyed_with_rsa_public_pem": "unsupported_algorithm",
    "es256k_not_allowed": "unsupported_algorithm",
    "rs256_token_against_ec_key": "unsupported_algorithm",
    "es384_token_against_p256_key": "unsupported_algorithm",
    "ps256_against_jwk_declaring_rs256": "unsupported_algorithm",
    "jku_header": "forbidden_header",
    "x5u_header": "forbidden_header",
    "jwk_header_embeds_attacker_key": "forbidden_header",
    "x5c_header": "forbidden_header",
    "jku_header_with_real_kid": "forbidden_header",
    "crit_header": "forbidden_header",
    "b64_false_header": "forbidden_header",
    "unknown_kid": "unknown_key",
    "kid_path_traversal": "unknown_key",
    "kid_sql_injection": "unknown_key",
    "kid_empty_string": "unknown_key",
    "tampered_payload": "bad_signature",
    "tampered_exp": "bad_signature",
    "signature_from_other_key_same_kid": "bad_signature",
    "header_swapped": "bad_signature",
    "signature_truncated": "bad_signature",
    "signature_bit_flipped": "bad_signature",
    "signature_empty": "bad_signature",
    "no_kid_signed_by_attacker": "bad_signature",
    "expired": "token_expired",
    "expired_beyond_leeway": "token_expired",
    "not_yet_valid_nbf": "token_not_yet_valid",
    "issued_in_future_iat": "token_not_yet_valid",
    "exp_missing": "missing_claim",
    "exp_string": "invalid_claim",
    "exp_bool": "invalid_claim",
    "exp_overflows_to_infinity": "malformed_token",
    "nbf_string": "invalid_claim",
    "wrong_audience": "bad_audience",
    "audience_list_without_ours": "bad_audience",
    "audience_prefix": "bad_audience",
    "audience_missing": "missing_claim",
    "audience_not_string": "invalid_claim",
    "wrong_issuer": "bad_issuer",
    "issuer_trailing_slash": "bad_issuer",
    "issuer_missing": "missing_claim",
    "issuer_list": "invalid_claim",
}


@pytest.fixture(scope="module")
def forged(idp):
    return {f.name: f for f in forgeries(idp)}


def test_catalogue_matches_the_expected_table(forged):
    assert {name: f.code for name, f in forged.items()} == EXPECTED_CODES
    assert set(EXPECTED_CODES.values()) == ERROR_CODES - {"unknown_issuer"}  # test_issuers.py: no JWT_PUBLIC_KEY_URL


@pytest.mark.parametrize("name", sorted(EXPECTED_CODES))
def test_forged_token_is_rejected_with_its_code(name, forged, verifier):
    token = forged[name].token
    error = rejection(verifier, token)
    assert error.code == EXPECTED_CODES[name], error.message
    assert error.status == 401
    # The message never echoes the token: no segment, no kid.
    for segment in token.split("."):
        if len(segment) >= 6:
            assert segment not in error.message
    try:
        kid = json.loads(decode_part(token.split(".")[0])).get("kid")
    except Exception:
        kid = None
    if isinstance(kid, str) and kid:
        assert kid not in error.message


@pytest.mark.parametrize(("name", "message"), [
    ("payload_lone_surrogate_signed", "token payload is not valid Unicode text (a lone surrogate escape)"),
    ("payload_lone_surrogate_name_signed", "token payload is not valid Unicode text (a lone surrogate escape)"),
    ("payload_overflowing_number_signed", "token payload is not valid JSON"),
])
def test_a_payload_no_text_can_carry_is_told_why(name, message, forged, verifier):
    assert rejection(verifier, forged[name].token).message == message


def test_oversized_token_is_rejected_before_any_key_lookup(fresh_idp):
    verifier = verifier_for(fresh_idp)
    good = fresh_idp.mint()
    header, payload, signature = parts(good)
    error = rejection(verifier, f"{header}.{payload}{'A' * (1 << 20)}.{signature}")
    assert error.code == "token_too_large"
    assert fresh_idp.fetch_count == 0


@pytest.mark.parametrize("value", [None, b"a.b.c", 42, ["a", "b", "c"]])
def test_non_string_token_is_malformed(verifier, value):
    assert rejection(verifier, value).code == "malformed_token"


def test_header_urls_are_never_fetched(fresh_idp):
    """jku/x5u naming a live key server with the attacker's key: refused, and nobody asks that server."""
    verifier = verifier_for(fresh_idp)
    with IdentityProvider(kinds=("RSA",), audience=fresh_idp.audience) as attacker:
        claims = {"iss": fresh_idp.issuer}
        for header in ({"jku": attacker.jwks_url}, {"x5u": attacker.jwks_url}, {"jku": attacker.discovery_url}):
            assert rejection(verifier, attacker.mint(claims, headers=header)).code == "forbidden_header"
        assert rejection(verifier, attacker.mint(claims)).code == "unknown_key"
        assert (attacker.fetch_count, attacker.discovery_count) == (0, 0)


# --- good tokens ------------------------------------------------------------------------------

GOOD = [
    ("rsa-first", "RS256"),
    ("rsa-no-alg", "RS256"),
    ("rsa-no-alg", "RS384"),
    ("rsa-no-alg", "RS512"),
    ("rsa-no-alg", "PS256"),
    ("rsa-no-alg", "PS384"),
    ("rsa-no-alg", "PS512"),
    ("EC-P256", "ES256"),
    ("EC-P384", "ES384"),
    ("EC-P521", "ES512"),
    ("Ed25519", "EdDSA"),
    ("Ed448", "EdDSA"),
]


def _key(idp: IdentityProvider, which: str):
    if which == "rsa-first":
        return idp.key_of("RSA")
    if which == "rsa-no-alg":
        return next(k for k in idp.keys if k.kid == "rsa-no-alg")
    return idp.key_of(which)


@pytest.mark.parametrize("which,alg", GOOD, ids=[f"{w}-{a}" for w, a in GOOD])
def test_good_token_for_each_key_type(idp, verifier, which, alg):
    key = _key(idp, which)
    token = idp.mint({"scope": "read"}, key=key, alg=alg)
    claims = verifier.verify(token)
    assert claims["scope"] == "read" and claims["sub"] == idp.subject


@pytest.mark.parametrize("which,alg", [("EC-P384", "ES384"), ("rsa-no-alg", "PS512"), ("Ed448", "EdDSA")])
def test_token_without_kid_tries_keys_of_its_type(idp, verifier, which, alg):
    token = idp.mint(key=_key(idp, which), alg=alg, headers={"kid": OMIT})
    assert "kid" not in json.loads(decode_part(token.split(".")[0]))
    assert verifier.verify(token)["iss"] == idp.issuer


def test_claims_are_returned_as_they_are(idp, verifier):
    odd = {"scope": 42, "scp": ["a", {"b": 1}], "client_id": None, "realm": {"team": ["t1"]}, "email_verified": "no"}
    token = idp.mint(odd, now=1_900_000_000 - 100)
    claims = TokenVerifier(verifier.settings, verifier.keyset, clock=lambda: 1_900_000_000 - 50).verify(token)
    assert claims == {**idp.default_claims(now=1_900_000_000 - 100), **odd}


def test_escaped_surrogate_pairs_are_the_characters_they_encode(idp, verifier):
    # json.dumps escapes "😀" as the pair \ud83d\ude00: only a lone half is malformed.
    token = idp.mint({"name": "\U0001F600 \u00e9"}, now=1_900_000_000 - 100)
    assert "\\ud83d\\ude00" in decode_part(parts(token)[1]).decode()
    claims = TokenVerifier(verifier.settings, verifier.keyset, clock=lambda: 1_900_000_000 - 50).verify(token)
    assert claims["name"] == "\U0001F600 \u00e9"


def test_thumbprint_headers_are_accepted(idp, verifier):
    """Azure AD puts x5t next to kid; a thumbprint names no key location and is harmless."""
    token = idp.mint(headers={"x5t": "abc", "x5t#S256": "def", "typ": "at+jwt", "cty": "JWT"})
    assert verifier.verify(token)["sub"] == idp.subject


def test_audience_list_containing_ours(idp, verifier):
    assert verifier.verify(idp.mint({"aud": ["other", idp.audience]}))["aud"] == ["other", idp.audience]


def test_audience_and_issuer_unchecked_when_unset(idp, verifier):
    lax = TokenVerifier(settings_for(idp.jwks_url), verifier.keyset)
    token = idp.mint({"aud": "someone-else", "iss": "https://elsewhere.example"})
    assert lax.verify(token)["aud"] == "someone-else"
    assert lax.verify(idp.mint({"aud": OMIT, "iss": OMIT}))["sub"] == idp.subject
    assert rejection(lax, idp.mint({"exp": OMIT})).code == "missing_claim"  # exp stays required


@pytest.mark.parametrize(
    "claims,offset,code",
    [
        ({"exp": 1000}, 1029.9 - 1000, None),
        ({"exp": 1000}, 1030 - 1000, "token_expired"),
        ({"exp": 1000, "nbf": 1030}, 0, None),
        ({"exp": 2000, "nbf": 1030.5}, 0, "token_not_yet_valid"),
        ({"exp": 2000, "iat": 1030}, 0, None),
        ({"exp": 2000, "iat": 1031}, 0, "token_not_yet_valid"),
        ({"exp": 1000.5}, 1030.4 - 1000, None),
        ({"exp": 10**400}, 0, None),  # absurd but a valid NumericDate: no overflow on the way
        ({"exp": 2000, "nbf": -(10**400)}, 0, None),
    ],
)
def test_time_claims_with_leeway(idp, verifier, claims, offset, code):
    token = idp.mint({"iat": OMIT, **claims})
    checker = TokenVerifier(verifier.settings, verifier.keyset, clock=lambda: 1000 + offset)
    if code is None:
        assert checker.verify(token)["exp"] == claims["exp"]
    else:
        assert rejection(checker, token).code == code


def test_a_verified_token_is_not_reverified_while_its_key_is_served(fresh_idp, monkeypatch):
    checks = []
    original = TokenVerifier._check_signature
    monkeypatch.setattr(TokenVerifier, "_check_signature",
                        staticmethod(lambda *args: checks.append(1) or original(*args)))
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    token = fresh_idp.mint()
    assert verifier.verify(token) == verifier.verify(token)
    assert len(checks) == 1
    clock.advance(TTL)  # the keyset refetches: new key objects, so the token is verified again
    verifier.verify(token)
    assert len(checks) == 2 and fresh_idp.fetch_count == 2


def test_the_verified_token_cache_is_bounded_in_bytes(fresh_idp, monkeypatch):
    """Tokens run up to 8 KiB: the cache holds as many as its byte budget allows, dropping the oldest."""
    checks = []
    original = TokenVerifier._check_signature
    monkeypatch.setattr(TokenVerifier, "_check_signature",
                        staticmethod(lambda *args: checks.append(1) or original(*args)))
    verifier = TokenVerifier(verifier_for(fresh_idp, FakeClock()).settings, cache_bytes=40_000)
    tokens = [fresh_idp.mint({"pad": f"{i}" * 4000}) for i in range(8)]  # ~5.5 KiB each: ~12 KB cached
    for token in tokens:
        verifier.verify(token)
    verifier.verify(tokens[-1])  # still cached
    assert len(checks) == 8
    verifier.verify(tokens[0])  # dropped to stay within 40 KB
    assert len(checks) == 9


def test_a_cached_token_still_expires(idp, verifier):
    now = [1000.0]
    checker = TokenVerifier(verifier.settings, verifier.keyset, clock=lambda: now[0])
    token = idp.mint({"iat": OMIT, "exp": 1100})
    assert checker.verify(token)["exp"] == 1100
    now[0] = 1100 + checker.settings.leeway
    assert rejection(checker, token).code == "token_expired"


# --- where keys come from ---------------------------------------------------------------------


def test_discovery_document_url_is_resolved_to_jwks_uri(fresh_idp):
    settings = settings_for(fresh_idp.discovery_url, idp=fresh_idp)
    verifier = TokenVerifier(settings, KeySet(settings))
    assert verifier.verify(fresh_idp.mint())["sub"] == fresh_idp.subject
    assert (fresh_idp.discovery_count, fresh_idp.fetch_count) == (1, 1)


def test_comma_separated_urls_merge_keys():
    with IdentityProvider(kinds=("RSA",)) as first, IdentityProvider(kinds=("EC-P256",)) as second:
        env = {"JWT_PUBLIC_KEY_URL": f" {first.jwks_url} ,{second.discovery_url},", "JWT_AUDIENCE": first.audience}
        settings = JwtSettings.from_env(env, public_key_ttl=TTL)
        assert settings.jwks_urls == (first.jwks_url, second.discovery_url)
        verifier = TokenVerifier(settings)
        assert verifier.verify(first.mint())["iss"] == first.issuer
        assert verifier.verify(second.mint())["iss"] == second.issuer
        assert (first.fetch_count, second.fetch_count) == (1, 1)


def test_one_url_down_does_not_hide_the_others():
    with IdentityProvider(kinds=("RSA",)) as up, IdentityProvider(kinds=("RSA",)) as down:
        down.set_outage("error")
        settings = settings_for(up.jwks_url, down.jwks_url)
        keyset = KeySet(settings, clock=FakeClock())
        verifier = TokenVerifier(settings, keyset)
        assert verifier.verify(up.mint())["iss"] == up.issuer
        assert rejection(verifier, down.mint()).code == "unknown_key"
        status = keyset.status()
        assert status["healthy"] is True
        assert [s["keys"] for s in status["sources"]] == [1, 0]
        assert "HTTP 500" in status["sources"][1]["last_error"]
        # Only the failing URL is retried (every retry_interval); the healthy one waits for its TTL.
        keyset._clock.advance(RETRY)
        assert verifier.verify(up.mint())
        assert (up.fetch_count, down.fetch_count) == (1, 2)


def test_fetch_failures_are_logged_without_url_secrets(fresh_idp, caplog):
    settings = settings_for(
        f"{fresh_idp.jwks_url}?access_token=SECRET-Q", f"http://user:SECRET-P@127.0.0.1:{free_port()}/k"
    )
    keyset = KeySet(settings, clock=FakeClock())
    with fresh_idp.outage("error"), caplog.at_level("WARNING", logger="regate.enforcer.tokens"):
        with pytest.raises(KeySetError) as info:
            keyset.get("kid", "RS256")
    assert "JWKS fetch from" in caplog.text and "HTTP 500" in caplog.text
    shown = caplog.text + str(keyset.status()) + (keyset.last_error or "") + info.value.message
    assert "SECRET" not in shown


def test_unusable_jwks_entries_are_skipped(fresh_idp):
    enc_key = generate_key("RSA", kid="for-encryption", use="enc")
    weak = generate_key("RSA-1024", kid="weak")
    k1 = generate_key("EC-secp256k1", kid="k1", publish_alg=False)
    leaked = generate_key("EC-P256", kid="leaked")
    fresh_idp.extra_jwks_entries = [
        "not an object",
        {"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"},
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kid": "no-kty"},
        enc_key.public_jwk(),
        weak.public_jwk(),
        k1.public_jwk(),
        {**leaked.public_jwk(), "d": "AAAA"},
        {**generate_key("EC-P256").public_jwk(), "alg": "RS256", "kid": "alg-misfit"},
        {**generate_key("Ed25519").public_jwk(), "kid": 5},
        {**generate_key("RSA").public_jwk(), "kid": "verify-not-allowed", "key_ops": ["encrypt"]},
    ]
    verifier = verifier_for(fresh_idp)
    assert verifier.verify(fresh_idp.mint())["sub"] == fresh_idp.subject
    assert verifier.keyset.status()["sources"][0]["keys"] == 1
    assert rejection(verifier, fresh_idp.mint(key=enc_key)).code == "unknown_key"
    assert rejection(verifier, fresh_idp.mint(key=weak)).code == "unknown_key"
    assert rejection(verifier, fresh_idp.mint(key=leaked)).code == "unknown_key"
    hmac_token = sign({"alg": "HS256", "kid": "hmac"}, fresh_idp.default_claims(), b"secret")
    assert rejection(verifier, hmac_token).code == "unsupported_algorithm"


# --- caching, rotation, floods, outages ---------------------------------------------------------


def test_algorithm_mismatch_on_a_known_kid_does_not_refetch(fresh_idp):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    verifier.verify(fresh_idp.mint())
    clock.advance(COOLDOWN)
    assert rejection(verifier, fresh_idp.mint(alg="PS256")).code == "unsupported_algorithm"
    assert fresh_idp.fetch_count == 1


def test_rotation_is_picked_up_by_one_refetch(fresh_idp):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    old_token = fresh_idp.mint()
    assert verifier.verify(old_token)
    assert fresh_idp.fetch_count == 1

    fresh_idp.rotate()
    new_token = fresh_idp.mint()
    clock.advance(COOLDOWN)
    assert verifier.verify(new_token)["sub"] == fresh_idp.subject
    assert verifier.verify(new_token) and verifier.verify(old_token)
    assert fresh_idp.fetch_count == 2


def test_new_kid_within_cooldown_waits_for_the_cooldown(fresh_idp):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    verifier.verify(fresh_idp.mint())
    fresh_idp.rotate()
    clock.advance(COOLDOWN - 1)
    assert rejection(verifier, fresh_idp.mint()).code == "unknown_key"
    assert fresh_idp.fetch_count == 1
    clock.advance(1)
    assert verifier.verify(fresh_idp.mint())
    assert fresh_idp.fetch_count == 2


def test_retired_key_stops_verifying_after_the_ttl(fresh_idp):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    old_token = fresh_idp.mint()
    verifier.verify(old_token)
    fresh_idp.rotate(retire_old=True)
    clock.advance(TTL - 1)
    assert verifier.verify(old_token)  # cached until the TTL runs out
    clock.advance(1)
    assert rejection(verifier, old_token).code == "unknown_key"
    assert verifier.verify(fresh_idp.mint())
    assert fresh_idp.fetch_count == 2


def test_unknown_kid_flood_fetches_at_most_once_per_cooldown(fresh_idp):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    verifier.verify(fresh_idp.mint())
    for _ in range(100):
        assert rejection(verifier, random_kid_token(fresh_idp)).code == "unknown_key"
    assert fresh_idp.fetch_count == 1  # the warm-up fetch was less than a cooldown ago
    for round_number in (2, 3):
        clock.advance(COOLDOWN)
        for _ in range(100):
            assert rejection(verifier, random_kid_token(fresh_idp)).code == "unknown_key"
            clock.advance(COOLDOWN / 200)
        assert fresh_idp.fetch_count == round_number


def _run_concurrently(count: int, work) -> list:
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work()
        except Exception as exc:  # collected and asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_cold_misses_make_one_fetch(fresh_idp):
    fresh_idp.delay = 0.3  # every fetch is slow, so all callers overlap with the first one
    verifier = verifier_for(fresh_idp)
    token = fresh_idp.mint()
    results = _run_concurrently(8, lambda: verifier.verify(token))
    assert all(isinstance(r, dict) and r["sub"] == fresh_idp.subject for r in results), results
    assert fresh_idp.fetch_count == 1


def test_concurrent_unknown_kids_make_one_fetch(fresh_idp):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    verifier.verify(fresh_idp.mint())
    clock.advance(COOLDOWN)
    fresh_idp.delay = 0.3
    tokens = [random_kid_token(fresh_idp) for _ in range(8)]
    results = _run_concurrently(8, lambda: rejection(verifier, tokens.pop()).code)
    assert results == ["unknown_key"] * 8
    assert fresh_idp.fetch_count == 2


def test_ttl_expiry_refetches(fresh_idp):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    token = fresh_idp.mint()
    verifier.verify(token)
    clock.advance(TTL - 0.5)
    verifier.verify(token)
    assert fresh_idp.fetch_count == 1
    clock.advance(0.5)
    verifier.verify(token)
    verifier.verify(token)
    assert fresh_idp.fetch_count == 2
    clock.advance(TTL)
    verifier.verify(token)
    assert fresh_idp.fetch_count == 3


@pytest.mark.parametrize("mode", ["error", "close", "garbage", "empty", "hang"])
def test_outage_keeps_serving_the_last_good_keys(fresh_idp, mode):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock, fetch_timeout=0.5)
    keyset = verifier.keyset
    token = fresh_idp.mint()
    verifier.verify(token)
    with fresh_idp.outage(mode):
        clock.advance(TTL)
        assert verifier.verify(token)["sub"] == fresh_idp.subject
        assert fresh_idp.fetch_count == 2  # it tried...
        assert keyset.last_error and keyset.healthy()  # ...failed, and kept the keys
        verifier.verify(token)
        assert fresh_idp.fetch_count == 2  # no retry before retry_interval
        clock.advance(RETRY)
        verifier.verify(token)
        assert fresh_idp.fetch_count == 3
        # Past the stale limit (public_key_ttl + public_key_stale_ttl) the old keys are dropped: 503, not 401.
        assert keyset.settings.stale_limit == TTL + 3600
        clock.advance(3600)
        with pytest.raises(KeySetError) as info:
            verifier.verify(token)
        assert info.value.status == 503 and not keyset.healthy()
    clock.advance(RETRY)
    assert verifier.verify(token)
    assert keyset.last_error is None and keyset.healthy()


@pytest.mark.parametrize("mode", ["error", "close", "garbage", "empty"])
def test_no_keys_ever_is_a_keyset_error(fresh_idp, mode):
    clock = FakeClock()
    verifier = verifier_for(fresh_idp, clock)
    token = fresh_idp.mint()
    with fresh_idp.outage(mode):
        with pytest.raises(KeySetError) as info:
            verifier.verify(token)
        assert (info.value.code, info.value.status) == ("idp_unavailable", 503)
        assert token not in info.value.message
        with pytest.raises(KeySetError):
            verifier.verify(token)
        assert fresh_idp.fetch_count == 1  # failures are retried every retry_interval, not per request
        assert not verifier.keyset.healthy()
        with pytest.raises(KeySetError):
            verifier.keyset.refresh()
    assert fresh_idp.fetch_count == 2  # refresh() is not rate limited...
    with pytest.raises(KeySetError):
        verifier.verify(token)  # ...but it counts as the last attempt for requests
    assert fresh_idp.fetch_count == 2
    clock.advance(RETRY)
    assert verifier.verify(token)
    assert verifier.keyset.healthy() and fresh_idp.fetch_count == 3


def test_unreachable_jwks_url_is_a_keyset_error():
    settings = settings_for(f"http://127.0.0.1:{free_port()}/jwks.json", fetch_timeout=1)
    token = compact({"alg": "RS256", "kid": "k"}, {"exp": 4_000_000_000}, b"x" * 256)
    with pytest.raises(KeySetError):
        TokenVerifier(settings).verify(token)


def test_refresh_and_status(fresh_idp):
    keyset = KeySet(settings_for(fresh_idp.jwks_url), clock=FakeClock())
    assert not keyset.healthy()
    keyset.refresh()
    assert keyset.healthy() and keyset.last_error is None
    assert keyset.status() == {
        "healthy": True,
        "sources": [{"url": fresh_idp.jwks_url, "keys": 1, "age_seconds": 0.0, "last_error": None}],
    }
    kid = fresh_idp.signing_key.kid
    assert [k.kid for k in keyset.get(kid, "RS256")] == [kid]
    assert keyset.get(kid, "ES256") == [] and keyset.get(kid, "HS256") == [] and keyset.get(kid, "none") == []
    assert keyset.knows(kid) and not keyset.knows("other")


# --- settings -----------------------------------------------------------------------------------


def test_settings_from_env():
    assert JwtSettings.from_env({}, public_key_ttl=600) is None
    assert JwtSettings.from_env({"JWT_PUBLIC_KEY_URL": " , "}, public_key_ttl=600) is None
    env = {"JWT_PUBLIC_KEY_URL": "https://idp.example/jwks", "JWT_AUDIENCE": "", "JWT_ISSUER": "https://idp.example"}
    settings = JwtSettings.from_env(env, public_key_ttl=120)
    assert settings == JwtSettings(jwks_urls=("https://idp.example/jwks",), issuer="https://idp.example",
                                   public_key_ttl=120.0)
    assert settings.audience is None
    assert settings.stale_limit == 120 + 3600.0
    assert JwtSettings(jwks_urls=("https://a",), public_key_ttl=10_000, public_key_stale_ttl=0).stale_limit == 10_000.0


@pytest.mark.parametrize(
    "fields",
    [
        {"jwks_urls": ()},
        {"jwks_urls": ("file:///etc/passwd",)},
        {"jwks_urls": ("idp.example/jwks",)},
        {"jwks_urls": ("https://a",), "public_key_ttl": 0},
        {"jwks_urls": ("https://a",), "leeway": -1},
    ],
)
def test_invalid_settings_are_refused(fields):
    with pytest.raises(RegateError) as info:
        JwtSettings(**fields)
    assert info.value.code == "invalid_jwt_settings"


GEVENT_SCRIPT = r"""
from gevent import monkey
monkey.patch_all()

import gevent
from regate.enforcer.jwks import JwtSettings, KeySet
from regate.enforcer.tokens import TokenVerifier
from tests.support.idp import IdentityProvider

with IdentityProvider(kinds=("RSA",)) as idp:
    idp.delay = 0.2
    settings = JwtSettings(jwks_urls=(idp.jwks_url,), audience=idp.audience, issuer=idp.issuer)
    verifier = TokenVerifier(settings, KeySet(settings))
    token = idp.mint()
    jobs = [gevent.spawn(verifier.verify, token) for _ in range(20)]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    assert all(job.value["sub"] == idp.subject for job in jobs), [job.value for job in jobs]
    print("fetches", idp.fetch_count)
"""


def test_concurrent_greenlets_under_gevent_make_one_fetch():
    """The enforcer runs under gevent workers: the fetch lock must serialise greenlets too."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "fetches 1"
