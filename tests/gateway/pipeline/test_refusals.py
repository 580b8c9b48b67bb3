"""Attacks and refusals, through mutual TLS and real gunicorn, on SQLite and PostgreSQL.

Every refusal must (DESIGN.md "Security baseline", CONTRACT.md "Faults"): come back as a signed SOAP
fault bound to the request (``post_raw`` verifies both) with the contract's code, be audited by
exactly one "refused" row naming the caller's organisation, leave the index untouched, and reveal
nothing internal. `assert_refused` checks all of that for one attack; `test_xml_attacks.py` uses it
too.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Callable

import pytest
import requests
from lxml import etree

from connectors.client import GatewayClient, ScopeDeniedFault, request_digest
from gateway.index import ids
from gateway.security import wsse
from gateway.soap import CG, SOAP_ACTION_PREFIX, SOAP_ENV, q
from tests.support import child_update, foreign_ca_client_material, unique

# The attack never got past the TLS handshake: no fault, no audit row (nobody to attribute it to).
TLS_HANDSHAKE = "tls-handshake"

REASON = {"_value_1": "checking who is involved before a visit", "code": "safeguarding"}
REQUESTER = {"UserId": "sw.attacker", "Role": "social worker"}

Attack = Callable[[], "tuple[int, etree._Element] | None"]


# ---- the one assertion helper --------------------------------------------------------------------

def baseline(gateway) -> tuple[tuple, int]:
    """What a refused message must leave as it was: the index, and the audit chain's head."""
    return gateway.index_snapshot(), gateway.audit_seq()


def assert_refused(gateway, before: tuple, seq: int, attack: Attack, code: str | tuple[str, ...], *,
                   org_code: str | None, sent: bytes | None = None) -> etree._Element | None:
    """Run ``attack`` and assert: refused with ``code`` (or one of the codes), exactly one audit row
    (outcome "refused", that fault code, ``org_code``), and the index unchanged.

    ``attack`` returns ``post_raw``'s (status, envelope) -- the response signature and RequestDigest
    already verified -- or None when it checked the fault itself (the SDK raising its typed
    exception). With ``code=TLS_HANDSHAKE`` the attack must fail in the TLS layer and nothing at all
    may be audited.
    """
    if code == TLS_HANDSHAKE:
        with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
            attack()
        assert gateway.audit_seq() == seq, "a refused handshake must not reach the application"
        assert gateway.index_snapshot() == before
        return None

    codes = (code,) if isinstance(code, str) else tuple(code)
    result = attack()
    envelope = None
    if result is None:
        [got] = codes  # the attack checked the (single) code itself
    else:
        status, envelope = result
        got = GatewayClient.fault_code(envelope)
        assert got in codes, f"expected {codes}, got {got}: {etree.tostring(envelope)[:600]!r}"
        assert status == 500
        fault = envelope.find(f"{q(SOAP_ENV, 'Body')}/{q(SOAP_ENV, 'Fault')}")
        assert fault.findtext("faultcode") == "soap:Client"
        assert_no_leak(etree.tostring(envelope))

    entries = gateway.audit_entries_after(seq)
    assert len(entries) == 1, f"expected exactly one audit row, got {entries}"
    [entry] = entries
    assert entry["outcome"] == "refused"
    assert entry["fault_code"] == got
    assert entry["org_code"] == org_code
    if sent is not None:
        assert entry["request_digest"] == request_digest(sent)
    assert gateway.index_snapshot() == before, "a refused message changed the index"
    return envelope


def assert_no_leak(fault_bytes: bytes) -> None:
    assert b"Traceback" not in fault_bytes
    assert b"/work/" not in fault_bytes
    assert b'File "' not in fault_bytes


# ---- building and posting messages ---------------------------------------------------------------

@pytest.fixture(scope="module")
def clients(gateway):
    """One SDK client per certificate directory and backend (building zeep clients is not free)."""
    made: dict[str, GatewayClient] = {}

    def get(name: str) -> GatewayClient:
        if name not in made:
            made[name] = gateway.client(name)
        return made[name]

    return get


def post(client: GatewayClient, operation: str, data: bytes) -> Attack:
    return lambda: client.post_raw(operation, data)


def submit_kwargs(family: str | None = None) -> dict:
    return {"ChildUpdate": [child_update(unique("atk-"), family or unique("Attack"), "Zed", "2016-02-03")]}


def find_kwargs(**overrides) -> dict:
    call = {"Requester": REQUESTER, "Reason": REASON, "FamilyName": unique("Nobody"),
            "DateOfBirth": "2012-01-01"}
    call.update(overrides)
    return {k: v for k, v in call.items() if v is not None}


def get_contacts_kwargs(child_id: str) -> dict:
    return {"Requester": REQUESTER, "Reason": REASON, "ChildId": child_id}


def resign(signer: wsse.EnvelopeSigner, unsigned: bytes,
           mutate: Callable[[etree._Element], None] | None = None, **sign_options) -> bytes:
    """Parse zeep's unsigned request, optionally change it, then sign it (Body + Timestamp)."""
    envelope = etree.fromstring(unsigned)
    if mutate is not None:
        mutate(envelope)
    signer.sign(envelope, **sign_options)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


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


def test_no_client_certificate_is_refused_at_the_handshake(gateway, clients):
    data = clients("la").build_request("SubmitUpdates", **submit_kwargs())
    ca = str(gateway.certs["la"] / "ca.pem")
    _handshake_control(gateway, ca)
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq,
                   lambda: requests.post(soap_url(gateway), data=data, headers=soap_headers("SubmitUpdates"),
                                         verify=ca, timeout=10),
                   TLS_HANDSHAKE, org_code=None)


def test_client_certificate_from_an_unknown_ca_is_refused_at_the_handshake(gateway, clients, tmp_path):
    rogue = foreign_ca_client_material(tmp_path / "rogue")
    data = clients("la").build_request("SubmitUpdates", **submit_kwargs())
    ca = str(gateway.certs["la"] / "ca.pem")
    _handshake_control(gateway, ca)
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq,
                   lambda: requests.post(soap_url(gateway), data=data, headers=soap_headers("SubmitUpdates"),
                                         cert=(str(rogue / "cert.pem"), str(rogue / "key.pem")),
                                         verify=ca, timeout=10),
                   TLS_HANDSHAKE, org_code=None)


# ---- 3-8: certificates and accreditation ---------------------------------------------------------

def test_signing_certificate_from_an_unknown_ca_is_rejected(gateway, clients, tmp_path):
    rogue = foreign_ca_client_material(tmp_path / "rogue-signer", org_code="LA")
    signer = wsse.EnvelopeSigner((rogue / "key.pem").read_bytes(), (rogue / "cert.pem").read_bytes())
    la = clients("la")
    data = resign(signer, la.build_request("SubmitUpdates", sign=False, **submit_kwargs()))
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(la, "SubmitUpdates", data), "CertificateRejected",
                   org_code="LA", sent=data)


@pytest.mark.parametrize("name, org_code", [
    ("unacc", "UNACC"),        # registered, never accredited
    ("pending", "PENDING"),    # accreditation proposed, not approved
    ("susp", "SUSP"),          # suspended
    ("expired", "EXPIRED"),    # accreditation lapsed
])
def test_organisation_without_a_current_accreditation_is_refused(gateway, clients, name, org_code):
    client = clients(name)
    data = client.build_request("SubmitUpdates", **submit_kwargs())
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(client, "SubmitUpdates", data), "NotAccredited",
                   org_code=org_code, sent=data)


def test_revoked_certificate_is_rejected(gateway, clients):
    revoked = clients("la_revoked")
    data = revoked.build_request("SubmitUpdates", **submit_kwargs())
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(revoked, "SubmitUpdates", data), "CertificateRejected",
                   org_code="LA", sent=data)


def test_signer_from_another_organisation_than_the_tls_client_is_refused(gateway, clients):
    health = clients("health")
    data = health.build_request("SubmitUpdates", **submit_kwargs())  # signed with HEALTH's key
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(clients("la"), "SubmitUpdates", data), "SignerMismatch",
                   org_code="LA", sent=data)


# ---- 10, 11: integrity and freshness -------------------------------------------------------------

def test_body_altered_after_signing_is_refused(gateway, clients):
    la = clients("la")
    family = unique("Signed")
    data = la.build_request("SubmitUpdates", **submit_kwargs(family))
    tampered = data.replace(family.encode(), unique("Forged").encode())
    assert tampered != data
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(la, "SubmitUpdates", tampered), "SignatureInvalid",
                   org_code="LA", sent=tampered)


def _expired(client):
    return client.build_request("SubmitUpdates", created=now() - dt.timedelta(minutes=10), **submit_kwargs())


def _future(client):
    return client.build_request("SubmitUpdates", created=now() + dt.timedelta(minutes=10), **submit_kwargs())


def _long_lived(client):
    return resign(client.signer, client.build_request("SubmitUpdates", sign=False, **submit_kwargs()),
                  created=now(), lifetime_s=600)


@pytest.mark.parametrize("build", [_expired, _future, _long_lived], ids=["expired", "future", "lifetime-600s"])
def test_stale_future_or_long_lived_timestamp_is_refused(gateway, clients, build):
    la = clients("la")
    data = build(la)
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(la, "SubmitUpdates", data), "MessageExpired",
                   org_code="LA", sent=data)


# ---- 12, 13: replay and purpose ------------------------------------------------------------------

def test_read_sent_twice_is_refused_as_a_replay(gateway, clients):
    health = clients("health")
    data = health.build_request("FindChild", **find_kwargs())
    status, first = health.post_raw("FindChild", data)
    assert status == 200 and GatewayClient.fault_code(first) is None
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(health, "FindChild", data), "Replay",
                   org_code="HEALTH", sent=data)


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
    data = health.build_request("FindChild", **find_kwargs())
    status, _ = health.post_raw("FindChild", data)
    assert status == 200
    replayed = _reencoded_signature_value(data)
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(health, "FindChild", replayed), "Replay",
                   org_code="HEALTH", sent=replayed)


def test_submit_replayed_with_a_respelled_signature_value_is_not_applied_twice(gateway, clients):
    la = clients("la")
    data = la.build_request("SubmitUpdates", **submit_kwargs())
    status, first = la.post_raw("SubmitUpdates", data)
    assert status == 200
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
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(health, operation, data), "ReasonRequired",
                   org_code="HEALTH", sent=data)


# ---- 14-16: scope, schema, well-formedness -------------------------------------------------------

def test_health_organisation_cannot_submit_updates(gateway, clients):
    health = clients("health")
    data = health.build_request("SubmitUpdates", **submit_kwargs())
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(health, "SubmitUpdates", data), "ScopeDenied",
                   org_code="HEALTH", sent=data)


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
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(la, "SubmitUpdates", data), "SchemaInvalid",
                   org_code="LA", sent=data)


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
    before, seq = baseline(gateway)
    assert_refused(gateway, before, seq, post(la, "SubmitUpdates", data), "MalformedMessage",
                   org_code="LA", sent=data)


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
        before, seq = baseline(gateway)
        answers.append(assert_refused(gateway, before, seq, post(health, "GetContacts", data), "NotFound",
                                      org_code="HEALTH", sent=data))
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
