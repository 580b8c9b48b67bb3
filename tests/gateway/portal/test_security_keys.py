"""The security keys' verification (gateway.portal.security_keys) with py_webauthn's own structures,
answered by a key in software (soft_key.py): what a browser would never send, but an attacker may —
a response for another origin or relying party, a bad signature, a count that goes back (a clone) —
and the public URL the relying party comes from."""

from __future__ import annotations

import json
import secrets

import pytest

from gateway.config import SettingError, Settings
from gateway.portal import security_keys
from gateway.portal.security_keys import KeyRefused, RelyingParty
from tests.gateway.portal.soft_key import SoftKey

RP = RelyingParty("localhost", "https://localhost:8445")


def _registered(key: SoftKey):
    challenge = secrets.token_bytes(32)
    options = json.loads(security_keys.registration_options(RP, "LA", "hv.one", "Hana Visitor", challenge, []))
    verified = security_keys.verify_registration(RP, json.loads(key.register(options)), challenge)
    return verified


def _sign_in_options() -> tuple[bytes, dict]:
    challenge = secrets.token_bytes(32)
    return challenge, json.loads(security_keys.authentication_options(RP, challenge, []))


def test_a_registration_for_another_origin_or_relying_party_is_refused():
    key = SoftKey(RP.origin)
    challenge = secrets.token_bytes(32)
    options = json.loads(security_keys.registration_options(RP, "LA", "hv.one", "Hana Visitor", challenge, []))
    assert options["attestation"] == "none" and options["authenticatorSelection"]["userVerification"] == "preferred"
    for wrong in ({"origin": "https://evil.example"}, {"rp_id": "evil.example"}, {"origin": "https://localhost:9999"}):
        with pytest.raises(KeyRefused) as refused:
            security_keys.verify_registration(RP, json.loads(key.register(options, **wrong)), challenge)
        assert "registration refused" in refused.value.why
    with pytest.raises(KeyRefused):  # another ceremony's challenge
        security_keys.verify_registration(RP, json.loads(key.register(options)), secrets.token_bytes(32))
    assert _registered(key).credential_id == key.credential_id


def test_an_assertion_with_a_wrong_origin_relying_party_or_signature_or_an_old_count_is_refused():
    key = SoftKey(RP.origin)
    public_key = _registered(key).credential_public_key
    cases = {"wrong origin": {"origin": "https://evil.example"}, "wrong RP id": {"rp_id": "evil.example"},
             "bad signature": {"bad_signature": True}}
    for name, wrong in cases.items():
        challenge, options = _sign_in_options()
        with pytest.raises(KeyRefused) as refused:
            security_keys.verify_assertion(RP, json.loads(key.assertion(options, **wrong)), challenge, public_key, 0)
        assert str(refused.value) == "Sign-in refused: the security key was not accepted.", name
    challenge, options = _sign_in_options()
    verified = security_keys.verify_assertion(RP, json.loads(key.assertion(options, count=7)), challenge, public_key, 6)
    assert verified.new_sign_count == 7
    challenge, options = _sign_in_options()  # a copy of the key, behind the original: its count is not above 7
    with pytest.raises(KeyRefused) as refused:
        security_keys.verify_assertion(RP, json.loads(key.assertion(options, count=5)), challenge, public_key, 7)
    assert "possible cloned key" in refused.value.why
    challenge, options = _sign_in_options()  # a key that never counts (0 always) is accepted
    security_keys.verify_assertion(RP, json.loads(key.assertion(options, count=0)), challenge, public_key, 0)


def test_the_relying_party_comes_from_the_public_url_and_a_mismatch_stops_the_portal(gateway):
    def settings(url=None):
        return Settings.from_env({}, home=str(gateway.home), database_url=gateway.database_url, portal_url=url)

    assert RelyingParty.of(settings(), "127.0.0.1:9443") == RelyingParty("localhost", "https://localhost:9443")
    assert RelyingParty.of(settings("https://Portal.Example.org")) == RelyingParty("portal.example.org",
                                                                                 "https://portal.example.org")
    for url, said in (("http://localhost:8445", "https://"), ("https://127.0.0.1:8445", "IP address"),
                      ("https://localhost:8445/portal", "root")):
        with pytest.raises(SettingError, match=said):
            RelyingParty.of(settings(url))
    with pytest.raises(SettingError, match="CONTACTGATE_PORTAL_URL is not set"):
        RelyingParty.of(settings(), "0.0.0.0:8445")
    assert security_keys.check_portal_url(settings("https://localhost:8445"), "127.0.0.1:8445").rp_id == "localhost"
    with pytest.raises(SettingError, match="port 8446"):
        security_keys.check_portal_url(settings("https://localhost:8446"), "127.0.0.1:8445")
    with pytest.raises(SettingError, match="does not name portal.example.org"):
        security_keys.check_portal_url(settings("https://portal.example.org:8445"), "0.0.0.0:8445")


def test_a_challenge_is_good_once_in_its_own_browser_for_its_own_step_and_not_after_it_expires(gateway):
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    mine, theirs = security_keys.new_binding(), security_keys.new_binding()
    with gateway.engine.begin() as conn:
        issued = [security_keys.issue(conn, b, "signin", "LA", "hv.one", now) for b in (mine, theirs)]
        assert security_keys.take(conn, mine, "signin", issued[0], now).user_id == "hv.one"
        for binding, purpose, challenge, said in ((mine, "signin", issued[0], "already used"),
                                                  (mine, "signin", issued[1], "another browser")):
            with pytest.raises(KeyRefused, match="start again") as refused:
                security_keys.take(conn, binding, purpose, challenge, now)
            assert said in refused.value.why
        late = security_keys.issue(conn, mine, "signin", "LA", "hv.one", now)
        with pytest.raises(KeyRefused) as refused:
            security_keys.take(conn, mine, "signin", late, now + dt.timedelta(seconds=security_keys.CHALLENGE_SECONDS))
        assert "expired" in refused.value.why
        wrong_step = security_keys.issue(conn, mine, "add", "LA", "hv.one", now)
        with pytest.raises(KeyRefused) as refused:
            security_keys.take(conn, mine, "signin", wrong_step, now)
        assert "issued for add" in refused.value.why


def test_contactgate_portal_refuses_to_start_with_a_public_url_it_can_tell_is_wrong(gateway):
    import subprocess
    import sys

    from contactgate_local import free_port

    port = free_port()  # one case as a user meets it (each refusal is unit-tested above): another port
    ran = subprocess.run([sys.executable, "-m", "gateway", "portal", "--bind", f"127.0.0.1:{port}"],
                         env={**gateway.env(), "CONTACTGATE_PORTAL_URL": f"https://localhost:{port + 1}"},
                         capture_output=True, text=True, timeout=120)
    said = ran.stdout + ran.stderr
    assert ran.returncode != 0 and "portal not started" in said and f"names port {port + 1}" in said, said
