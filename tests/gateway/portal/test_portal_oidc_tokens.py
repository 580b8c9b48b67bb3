"""The portal's ID token checks (gateway.portal.oidc.verified_claims) against a real provider's
discovery document and published keys (oidc-provider on 127.0.0.1), with tokens forged here with a
real JWT library (joserfc): wrong audience, expired, unknown key id, ``alg`` none, HS256 signed with
the provider's public key, wrong nonce, issuer or azp, a token from the future; key rotation
(an unknown kid makes the portal fetch the keys again, at most once in REFETCH_S); https only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from gateway.config import Settings
from gateway.portal import oidc
from tests.gateway.portal.idp_harness import rsa_key, skip_without_node, start_provider

pytestmark = skip_without_node()
CLIENT = "token-tests"
NONCE = "the-nonce-of-this-sign-in"


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    from contactgate_local import free_port

    port = free_port()
    client = {"client_id": CLIENT, "client_secret": "x" * 32, "redirect_uris": ["https://portal.invalid/oidc/callback"],
              "grant_types": ["authorization_code"], "response_types": ["code"]}
    running = start_provider(tmp_path_factory.mktemp("idp-tokens"), port, [client], {}, rsa_key("signing-1"))
    yield running
    running.stop()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def providers():
    return oidc.Providers(Settings.from_env({"CONTACTGATE_OIDC_INSECURE_HTTP_LOOPBACK": "1"}, home="/nonexistent"),
                          clock=Clock())


def _claims(provider, **changes) -> dict:
    now = int(time.time())
    claims = {"iss": provider.issuer, "sub": "nurse1", "aud": CLIENT, "iat": now, "exp": now + 300, "nonce": NONCE}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(provider, claims: dict, *, key: dict | None = None, alg: str = "RS256") -> str:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = key or provider.signing_key
    return jwt.encode({"alg": alg, "kid": key["kid"]}, claims, RSAKey.import_key(key), algorithms=[alg])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _check(providers, provider, token: str, nonce: str = NONCE) -> dict:
    found = providers.provider(provider.issuer)
    return oidc.verified_claims(token, providers, found, client_id=CLIENT, now=time.time(), nonce=nonce)


def test_a_token_signed_with_the_providers_key_for_this_client_is_accepted(providers, provider):
    assert _check(providers, provider, _signed(provider, _claims(provider)))["sub"] == "nurse1"


@pytest.mark.parametrize("changes, said", [
    ({"aud": "another-client"}, "audience"),
    ({"aud": [CLIENT, "another-client"]}, "azp"),
    ({"aud": [CLIENT, "another-client"], "azp": "another-client"}, "azp"),
    ({"iss": "https://impostor.example"}, "issuer"),
    ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 3700}, "expired"),
    # (times taken when the tests are collected: far enough off that a long run still sees them so)
    ({"iat": int(time.time()) + 6 * 3600, "exp": int(time.time()) + 7 * 3600}, "future"),
    ({"iat": int(time.time()) - 7200, "exp": int(time.time()) + 6 * 3600}, "issued"),
    ({"nbf": int(time.time()) + 6 * 3600}, "nbf"),
    ({"nonce": "another-sign-in"}, "nonce"),
    ({"nonce": None}, "nonce"),
    ({"sub": None}, "subject"),
])
def test_a_token_with_a_wrong_claim_is_refused_saying_which(providers, provider, changes, said):
    with pytest.raises(oidc.ProviderMisbehaved, match=said):
        _check(providers, provider, _signed(provider, _claims(provider, **changes)))


def test_alg_none_and_hs256_signed_with_the_public_key_are_refused(providers, provider):
    header = {"alg": "none", "kid": provider.signing_key["kid"], "typ": "JWT"}
    unsigned = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(provider)).encode())}."
    with pytest.raises(oidc.ProviderMisbehaved, match="alg"):
        _check(providers, provider, unsigned)
    from joserfc.jwk import RSAKey

    public = RSAKey.import_key(provider.signing_key).as_pem(private=False)
    header = {"alg": "HS256", "kid": provider.signing_key["kid"], "typ": "JWT"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(provider)).encode())}"
    forged = signing_input + "." + _b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(oidc.ProviderMisbehaved, match="alg"):
        _check(providers, provider, forged)
    # the alg claimed RS256 but signed with HMAC over the public key: the signature does not verify
    header = {"alg": "RS256", "kid": provider.signing_key["kid"]}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(provider)).encode())}"
    forged = signing_input + "." + _b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(oidc.ProviderMisbehaved, match="signature"):
        _check(providers, provider, forged)


def test_an_unknown_key_id_is_refused_after_one_rate_limited_fetch_of_the_keys(providers, provider, monkeypatch):
    fetched = []
    real = oidc.fetch_json
    monkeypatch.setattr(oidc, "fetch_json", lambda url, *a: fetched.append(url) or real(url, *a))
    stranger = rsa_key("not-the-providers")
    _check(providers, provider, _signed(provider, _claims(provider)))  # discovery + keys
    assert len(fetched) == 2
    with pytest.raises(oidc.ProviderMisbehaved, match="key id"):
        _check(providers, provider, _signed(provider, _claims(provider), key=stranger))
    assert len(fetched) == 3 and fetched[-1].endswith("/jwks")  # fetched again once: a rotation?
    with pytest.raises(oidc.ProviderMisbehaved, match="key id"):
        _check(providers, provider, _signed(provider, _claims(provider), key=stranger))
    assert len(fetched) == 3  # not again within REFETCH_S
    providers.clock.now += oidc.REFETCH_S
    with pytest.raises(oidc.ProviderMisbehaved, match="key id"):
        _check(providers, provider, _signed(provider, _claims(provider), key=stranger))
    assert len(fetched) == 4
    # a stranger's key under the provider's own kid: the signature does not verify
    impostor = dict(stranger, kid=provider.signing_key["kid"])
    with pytest.raises(oidc.ProviderMisbehaved, match="signature"):
        _check(providers, provider, _signed(provider, _claims(provider), key=impostor))


def test_a_rotated_key_is_fetched_when_a_token_names_it(providers, provider):
    from joserfc.jwk import KeySet, RSAKey

    found = providers.provider(provider.issuer)
    old = rsa_key("the-old-key")
    found.keys = KeySet([RSAKey.import_key({k: v for k, v in old.items() if k not in ("d", "p", "q", "dp", "dq", "qi")})])
    found.keys_at = providers.clock()
    assert _check(providers, provider, _signed(provider, _claims(provider)))["sub"] == "nurse1"


def test_a_provider_on_plain_http_is_refused_unless_the_loopback_setting_allows_it(provider):
    strict = oidc.Providers(Settings.from_env({}, home="/nonexistent"))
    with pytest.raises(oidc.ProviderMisbehaved, match="https"):
        strict.provider(provider.issuer)
    with pytest.raises(oidc.ProviderMisbehaved, match="https"):
        oidc.check_url("http://10.0.0.1/", Settings.from_env({"CONTACTGATE_OIDC_INSECURE_HTTP_LOOPBACK": "1"},
                                                            home="/nonexistent"), "issuer")


def test_a_token_response_too_large_or_nested_too_deeply_is_refused_before_it_is_parsed():
    import io

    import requests

    class Raw(io.BytesIO):
        def read(self, size=-1, decode_content=True):  # urllib3's signature
            return super().read(size)

    def answer(body: bytes) -> requests.Response:
        response = requests.Response()
        response.raw, response.status_code = Raw(body), 200
        return response

    with pytest.raises(oidc.ProviderUnreachable, match="larger"):
        oidc._bounded_json(answer(b'{"id_token": "' + b"a" * oidc.MAX_DOCUMENT_BYTES + b'"}'))
    with pytest.raises(oidc.ProviderUnreachable, match="JSON"):
        oidc._bounded_json(answer(b"[" * 5000 + b"]" * 5000))
    assert oidc._bounded_json(answer(b'{"id_token": "x"}')).json() == {"id_token": "x"}


@pytest.mark.parametrize("times", [b'"exp": NaN, "iat": NaN', b'"exp": Infinity, "iat": NaN'])
def test_a_token_whose_times_are_not_finite_numbers_is_refused(providers, provider, times):
    from joserfc import jws
    from joserfc.jwk import RSAKey

    payload = (b'{"iss": "%s", "sub": "nurse1", "aud": "%s", "nonce": "%s", %s}'
               % (provider.issuer.encode(), CLIENT.encode(), NONCE.encode(), times))
    token = jws.serialize_compact({"alg": "RS256", "kid": provider.signing_key["kid"]}, payload,
                                  RSAKey.import_key(provider.signing_key))
    with pytest.raises(oidc.ProviderMisbehaved, match="number"):
        _check(providers, provider, token)


def test_a_logout_token_without_an_expiry_is_refused(providers, provider):
    claims = _claims(provider, nonce=None, exp=None, jti="logout-1",
                     events={oidc.BACKCHANNEL_EVENT: {}})
    found = providers.provider(provider.issuer)
    with pytest.raises(oidc.ProviderMisbehaved, match="exp"):
        oidc.verified_claims(_signed(provider, claims), providers, found, client_id=CLIENT, now=time.time(),
                             nonce=None, logout=True)


@pytest.mark.parametrize("url", ["https://127.0.0.2:1/jwks", "https://localhost:1/jwks",
                                 "https://169.254.169.254:1/latest/meta-data"])
def test_a_providers_document_on_an_internal_address_is_not_fetched(url):
    settings = Settings.from_env({"CONTACTGATE_OIDC_INSECURE_HTTP_LOOPBACK": "1"}, home="/nonexistent")
    with pytest.raises(oidc.ProviderMisbehaved, match="not a public address"):
        oidc.fetch_json(url, settings, "keys (jwks_uri)")


def test_an_at_hash_against_an_access_token_that_is_not_ascii_text_is_a_mismatch():
    assert oidc.at_hash_matches({"at_hash": "x"}, "acc\u00e8s", "RS256") is False
    assert oidc.at_hash_matches({"at_hash": "x"}, 12345, "RS256") is False


def _logout_claims(provider, **changes) -> dict:
    return _claims(provider, **({"nonce": None, "jti": "logout-" + str(time.time()),
                                  "events": {oidc.BACKCHANNEL_EVENT: {}}} | changes))


@pytest.mark.parametrize("changes, said", [
    ({"events": None}, "event"),
    ({"events": {"http://schemas.openid.net/event/something-else": {}}}, "event"),
    ({"nonce": NONCE}, "nonce"),
    ({"sub": None}, "neither a subject nor a session"),
    ({"jti": None}, "jti"),
    ({"aud": "another-client"}, "audience"),
    ({"iat": int(time.time()) - 7200}, "issued"),
])
def test_a_logout_token_with_a_wrong_claim_is_refused_saying_which(providers, provider, changes, said):
    found = providers.provider(provider.issuer)
    with pytest.raises(oidc.ProviderMisbehaved, match=said):
        oidc.verified_claims(_signed(provider, _logout_claims(provider, **changes)), providers, found,
                             client_id=CLIENT, now=time.time(), nonce=None, logout=True)


def test_an_id_token_is_not_a_logout_token_and_a_logout_token_is_not_an_id_token(providers, provider):
    found = providers.provider(provider.issuer)
    with pytest.raises(oidc.ProviderMisbehaved, match="event"):
        oidc.verified_claims(_signed(provider, _claims(provider)), providers, found, client_id=CLIENT,
                             now=time.time(), nonce=None, logout=True)
    with pytest.raises(oidc.ProviderMisbehaved, match="nonce"):
        _check(providers, provider, _signed(provider, _logout_claims(provider)))


def test_the_at_hash_is_the_left_half_of_the_access_tokens_digest():
    digest = hashlib.sha256(b"an-access-token").digest()
    at_hash = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    assert oidc.at_hash_matches({"at_hash": at_hash}, "an-access-token", "RS256")
    assert not oidc.at_hash_matches({"at_hash": at_hash}, "another-access-token", "RS256")
    assert not oidc.at_hash_matches({"at_hash": at_hash}, "an-access-token", "RS512")
