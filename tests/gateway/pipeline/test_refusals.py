"""Attacks and refusals, through mutual TLS and real gunicorn, on SQLite and PostgreSQL.

Every refusal must (DESIGN.md "Security baseline", CONTRACT.md "Faults"): come back as a signed SOAP
fault bound to the request (``post_raw`` verifies both) with the contract's code, be audited by
exactly one "refused" row naming the caller's organisation, leave the index untouched, and reveal
nothing internal. `assert_refused` (in attacks.py, shared with `test_xml_attacks.py`) checks all of
that for one attack.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
import requests
from lxml import etree

from connectors.client import GatewayClient, ScopeDeniedFault
from gateway.index import ids
from contactgate_wire import wsse
from contactgate_wire.soap import CG, SOAP_ACTION_PREFIX, SOAP_ENV, q
from tests.gateway.pipeline.attacks import (
    REQUESTER, TLS_HANDSHAKE, assert_no_leak, assert_post_refused, assert_refused, baseline, fault_message,
    find_kwargs, get_contacts_kwargs, resign, sent_once, submit_kwargs,
)
from tests.support import unique_name, foreign_ca_client_material


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def soap_url(gateway) -> str:
    return f"{gateway.url}/soap/v1"


def soap_headers(operation: str) -> dict:
    return {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}{operation}"'}


# ---- 1, 2: the TLS layer -------------------------------------------------------------------------

def _handshake_control(gateway, ca: str) -> None:
    """The same server, CA and requests call with an accepted certificate gets through."""
    la = gateway.certs["la"]
    assert requests.get(f"{gateway.url}/healthz", cert=(str(la / "cert.pem"), str(la / "key.pem")),
                        verify=ca, timeout=10).ok


def _assert_refused_at_the_handshake(gateway, clients, **tls) -> None:
    """A signed SubmitUpdates posted with plain requests and ``tls`` (the client certificate, if
    any) never gets past the handshake, where an accepted certificate does."""
    data = clients("la").build_request("SubmitUpdates", **submit_kwargs())
    ca = str(gateway.certs["la"] / "ca.pem")
    _handshake_control(gateway, ca)
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq,
                   lambda: requests.post(soap_url(gateway), data=data, headers=soap_headers("SubmitUpdates"),
                                         verify=ca, timeout=10, **tls),
                   TLS_HANDSHAKE, org_code=None)


def test_no_client_certificate_is_refused_at_the_handshake(gateway, clients):
    _assert_refused_at_the_handshake(gateway, clients)


def test_client_certificate_from_an_unknown_ca_is_refused_at_the_handshake(gateway, clients, tmp_path):
    rogue = foreign_ca_client_material(tmp_path / "rogue")
    _assert_refused_at_the_handshake(gateway, clients, cert=(str(rogue / "cert.pem"), str(rogue / "key.pem")))


# ---- 3-8: certificates and accreditation ---------------------------------------------------------

def _assert_submit_refused(gateway, client: GatewayClient, code: str, *, org_code: str) -> None:
    """An ordinary signed SubmitUpdates from ``client`` is refused with ``code``."""
    data = client.build_request("SubmitUpdates", **submit_kwargs())
    assert_post_refused(gateway, client, "SubmitUpdates", data, code, org_code=org_code)


def test_signing_certificate_from_an_unknown_ca_is_rejected(gateway, clients, tmp_path):
    rogue = foreign_ca_client_material(tmp_path / "rogue-signer", org_code="LA")
    signer = wsse.EnvelopeSigner((rogue / "key.pem").read_bytes(), (rogue / "cert.pem").read_bytes())
    la = clients("la")
    data = resign(signer, la.build_request("SubmitUpdates", sign=False, **submit_kwargs()))
    fault = assert_post_refused(gateway, la, "SubmitUpdates", data, "CertificateRejected", org_code="LA")
    assert "The signing certificate is not accepted: it must be issued by a CA the gateway trusts" in (
        fault_message(fault))


@pytest.mark.parametrize("name, org_code", [
    ("unacc", "UNACC"),        # registered, never accredited
    ("pending", "PENDING"),    # accreditation proposed, not approved
    ("susp", "SUSP"),          # suspended
    ("expired", "EXPIRED"),    # accreditation lapsed
])
def test_organisation_without_a_current_accreditation_is_refused(gateway, clients, name, org_code):
    _assert_submit_refused(gateway, clients(name), "NotAccredited", org_code=org_code)


def test_revoked_certificate_is_refused_at_the_tls_handshake(gateway, clients):
    """The CRL is in the server's TLS context: a revoked client certificate gets no HTTP at all (the
    application's own refusal, CertificateRejected, below and in tests/gateway/test_tls_revocation.py)."""
    data = clients("la").build_request("SubmitUpdates", **submit_kwargs())
    revoked = gateway.certs["la_revoked"]
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq,
                   lambda: requests.post(soap_url(gateway), data=data, headers=soap_headers("SubmitUpdates"),
                                         verify=str(revoked / "ca.pem"), timeout=10,
                                         cert=(str(revoked / "cert.pem"), str(revoked / "key.pem"))),
                   TLS_HANDSHAKE, org_code=None)


def test_message_signed_with_a_revoked_certificate_says_so_without_the_reason(gateway, clients):
    la = clients("la")
    data = resign(clients("la_revoked").signer, la.build_request("SubmitUpdates", sign=False, **submit_kwargs()))
    fault = assert_post_refused(gateway, la, "SubmitUpdates", data, "CertificateRejected", org_code="LA")
    assert fault_message(fault) == "The signing certificate has been revoked."  # not the officer's note


def test_signer_from_another_organisation_than_the_tls_client_is_refused(gateway, clients):
    health = clients("health")
    data = health.build_request("SubmitUpdates", **submit_kwargs())  # signed with HEALTH's key
    fault = assert_post_refused(gateway, clients("la"), "SubmitUpdates", data, "SignerMismatch", org_code="LA")
    message = fault_message(fault)
    assert "sign with your own organisation's certificate" in message
    assert "HEALTH" not in message  # whose certificate it is stays in the audit trail


# ---- 10, 11: integrity and freshness -------------------------------------------------------------

def test_body_altered_after_signing_is_refused(gateway, clients):
    la = clients("la")
    family = unique_name("Signed")
    data = la.build_request("SubmitUpdates", **submit_kwargs(family))
    tampered = data.replace(family.encode(), unique_name("Forged").encode())
    assert tampered != data
    fault = assert_post_refused(gateway, la, "SubmitUpdates", tampered, "SignatureInvalid", org_code="LA")
    assert "The digest of soap:Body does not match its ds:DigestValue" in fault_message(fault)


def _expired(client):
    return client.build_request("SubmitUpdates", created=now() - dt.timedelta(minutes=10), **submit_kwargs())


def _future(client):
    return client.build_request("SubmitUpdates", created=now() + dt.timedelta(minutes=10), **submit_kwargs())


def _long_lived_but_old(client):
    """node-soap's 10-minute Timestamp, sent 6 minutes after it was made."""
    return resign(client.signer, client.build_request("SubmitUpdates", sign=False, **submit_kwargs()),
                  created=now() - dt.timedelta(minutes=6), lifetime_s=600)


@pytest.mark.parametrize("build, message", [
    (_expired, "wsu:Timestamp has expired (Expires has passed; check the clock)"),
    (_future, "wsu:Timestamp Created is in the future (check the clock)"),
    (_long_lived_but_old, "wsu:Timestamp is older than 5 minutes"),
], ids=["expired", "future", "lifetime-600s-sent-after-6-minutes"])
def test_stale_or_future_timestamp_is_refused_saying_what_to_fix(gateway, clients, build, message):
    la = clients("la")
    data = build(la)
    fault = assert_post_refused(gateway, la, "SubmitUpdates", data, "MessageExpired", org_code="LA")
    assert message in fault_message(fault)


def test_timestamp_living_longer_than_five_minutes_is_accepted_while_fresh(gateway, clients):
    """node-soap hard-codes 10 minutes and WSS4J sets no cap: a longer Expires is not an error."""
    la = clients("la")
    data = resign(la.signer, la.build_request("SubmitUpdates", sign=False, **submit_kwargs()),
                  created=now(), lifetime_s=600)
    status, answer = la.post_raw("SubmitUpdates", data)
    assert status == 200 and GatewayClient.fault_code(answer) is None


# ---- 12, 13: replay and purpose ------------------------------------------------------------------

def test_read_sent_twice_is_refused_as_a_replay(gateway, clients):
    health = clients("health")
    data, first = sent_once(health, "FindChild", **find_kwargs())
    assert GatewayClient.fault_code(first) is None
    assert_post_refused(gateway, health, "FindChild", data, "Replay", org_code="HEALTH")


def _reencoded_signature_value(data: bytes) -> bytes:
    """The same signature bytes, spelled differently: flip one of the unused low bits of the last
    base64 character before the padding (a 256-byte RSA signature leaves 4 of them)."""
    start = data.index(b"SignatureValue>") + len(b"SignatureValue>")
    end = data.index(b"<", start)
    value = b"".join(data[start:end].split())
    stripped = value.rstrip(b"=")
    assert len(stripped) < len(value), "needs a padded SignatureValue"
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = alphabet.index(stripped[-1:]) ^ 1
    respelled = stripped[:-1] + alphabet[index:index + 1] + value[len(stripped):]
    assert respelled != value and base64.b64decode(respelled) == base64.b64decode(value)
    return data[:start] + respelled + data[end:]


def test_read_replayed_with_a_respelled_signature_value_is_refused(gateway, clients):
    health = clients("health")
    data, _ = sent_once(health, "FindChild", **find_kwargs())
    replayed = _reencoded_signature_value(data)
    assert_post_refused(gateway, health, "FindChild", replayed, "Replay", org_code="HEALTH")


def test_submit_replayed_with_a_respelled_signature_value_is_not_applied_twice(gateway, clients):
    la = clients("la")
    data, first = sent_once(la, "SubmitUpdates", **submit_kwargs())
    replayed = _reencoded_signature_value(data)
    before, seq = baseline(gateway)
    status, second = la.post_raw("SubmitUpdates", replayed, verify_response=False)
    outcome = f"{{{CG}}}Outcome"
    assert [e.text for e in second.iter(outcome)] == [e.text for e in first.iter(outcome)] == ["created"]
    assert [e["outcome"] for e in gateway.audit_entries_after(seq)] == ["repeat"]
    assert gateway.index_snapshot() == before


@pytest.mark.parametrize("reason", [None, {"_value_1": "", "code": "referral"},
                                    {"_value_1": "   ", "code": "referral"}],
                         ids=["no-reason", "empty-text", "blank-text"])
@pytest.mark.parametrize("operation", ["FindChild", "GetContacts"])
def test_read_without_a_reason_is_refused(gateway, clients, reason, operation):
    health = clients("health")
    if operation == "FindChild":
        kwargs = find_kwargs(Reason=reason)
    else:
        kwargs = {"Requester": REQUESTER, "ChildId": ids.new_child_id()}
        if reason is not None:
            kwargs["Reason"] = reason
    data = health.build_request(operation, **kwargs)
    assert_post_refused(gateway, health, operation, data, "ReasonRequired", org_code="HEALTH")


# ---- 14-16: scope, schema, well-formedness -------------------------------------------------------

def test_health_organisation_cannot_submit_updates(gateway, clients):
    _assert_submit_refused(gateway, clients("health"), "ScopeDenied", org_code="HEALTH")


def test_sdk_raises_the_typed_fault(gateway, clients):
    health = clients("health")

    def attack():
        with pytest.raises(ScopeDeniedFault) as raised:  # the response signature is checked by zeep's hook
            health.submit_updates(submit_kwargs()["ChildUpdate"])
        assert raised.value.code == "ScopeDenied"
        assert_no_leak(str(raised.value).encode())
        return None

    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, attack, "ScopeDenied", org_code="HEALTH")


def test_element_outside_the_schema_is_refused_even_when_signed(gateway, clients):
    la = clients("la")

    def add_case_notes(envelope):
        update = next(envelope.iter(f"{{{CG}}}ChildUpdate"))
        etree.SubElement(update, f"{{{CG}}}CaseNotes").text = "disclosed at school on Monday"

    data = resign(la.signer, la.build_request("SubmitUpdates", sign=False, **submit_kwargs()), add_case_notes)
    assert b"CaseNotes" in data
    assert_post_refused(gateway, la, "SubmitUpdates", data, "SchemaInvalid", org_code="LA")


@pytest.mark.parametrize("data", [
    b"<?xml version='1.0'?><soap:Envelope xmlns:soap='http://schemas.xmlsoap.org/soap/envelope/'><soap:Body>",
    b"this is not XML at all",
    b"",
    b"<cg:SubmitUpdates xmlns:cg='urn:contactgate:v1'><cg:ChildUpdate/></cg:SubmitUpdates>",
    b"<soap12:Envelope xmlns:soap12='http://www.w3.org/2003/05/soap-envelope'>"
    b"<soap12:Header/><soap12:Body/></soap12:Envelope>",
], ids=["truncated", "not-xml", "empty", "non-soap-root", "soap-1.2"])
def test_malformed_document_is_refused(gateway, clients, data):
    la = clients("la")
    assert_post_refused(gateway, la, "SubmitUpdates", data, "MalformedMessage", org_code="LA")


# ---- NotFound without an existence oracle --------------------------------------------------------

def _wrong_check_character(child_id: str) -> str:
    last = child_id[-1]
    other = next(c for c in ids.ALPHABET if c != last)
    assert ids.normalise(child_id[:-1] + other) is None
    return child_id[:-1] + other


def _fault_text(envelope: etree._Element) -> tuple:
    fault = envelope.find(f"{q(SOAP_ENV, 'Body')}/{q(SOAP_ENV, 'Fault')}")
    error = fault.find(f"detail/{q(CG, 'Error')}")
    return (fault.findtext("faultcode"), fault.findtext("faultstring"), error.findtext(q(CG, "Code")),
            error.findtext(q(CG, "Message")))


def test_unknown_child_and_bad_check_character_get_the_same_not_found(gateway, clients):
    health = clients("health")
    unknown = ids.new_child_id()
    assert ids.is_valid(unknown)
    answers = []
    for child_id in (unknown, _wrong_check_character(ids.new_child_id())):
        data = health.build_request("GetContacts", **get_contacts_kwargs(child_id))
        answers.append(assert_post_refused(gateway, health, "GetContacts", data, "NotFound", org_code="HEALTH"))
    assert _fault_text(answers[0]) == _fault_text(answers[1])
    assert unknown not in etree.tostring(answers[0]).decode()


def test_existing_child_read_is_answered(gateway, clients):
    """The control for the NotFound test: the same request shape for a real child is answered."""
    [result] = clients("la").submit_updates(submit_kwargs()["ChildUpdate"])
    child = clients("health").get_contacts(result["ChildId"], user_id="u", role="gp",
                                           reason_code="referral", reason_text="new referral")
    assert child["ChildId"] == result["ChildId"]


def test_server_log_has_no_unexpected_failures(gateway):
    """Runs last in this module: none of the attacks above should have hit the catch-all."""
    assert "unexpected failure while handling a message" not in Path(gateway.home / "server.log").read_text(
        errors="replace")
