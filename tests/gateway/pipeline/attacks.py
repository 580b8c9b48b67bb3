"""Helpers for the attack tests (test_refusals.py, test_xml_attacks.py, ../test_review_findings.py).

Every refusal must (DESIGN.md "Security baseline", CONTRACT.md "Faults"): come back as a signed SOAP
fault bound to the request (``post_raw`` verifies both) with the contract's code, be audited by
exactly one "refused" row naming the caller's organisation, leave the index untouched, and reveal
nothing internal. `assert_refused` checks all of that for one attack; `assert_post_refused` is the
usual case of it (a message posted by an SDK client). The `clients` fixture is in tests/conftest.py.
"""

from __future__ import annotations

import time
from typing import Callable

import pytest
import requests
from lxml import etree

from connectors.client import GatewayClient, request_digest
from contactgate_wire import wsse
from contactgate_wire.soap import CG, SOAP_ENV, q
from tests.support import unique_name, child_update, unique

# The attack never got past the TLS handshake: no fault; one audit row, CertificateRejected, naming
# nobody (no certificate was accepted) but the address.
TLS_HANDSHAKE = "tls-handshake"

REASON = {"_value_1": "checking who is involved before a visit", "code": "safeguarding"}
REQUESTER = {"UserId": "sw.attacker", "Role": "social worker"}

Attack = Callable[[], "tuple[int, etree._Element] | None"]


# ---- the assertion helpers -----------------------------------------------------------------------

def _entries_soon(gateway, seq: int, timeout_s: float = 5.0) -> list[dict]:
    """The handshake is audited by the worker after the client has seen the refusal: wait a little."""
    deadline = time.monotonic() + timeout_s
    while not gateway.audit_entries_after(seq) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # and make sure no second entry follows
    return gateway.audit_entries_after(seq)


def baseline(gateway) -> tuple[tuple, int]:
    """What a refused message must leave as it was: the index, and the audit chain's head."""
    return gateway.index_snapshot(), gateway.audit_seq()


def assert_refused(gateway, before: tuple, seq: int, attack: Attack, code: str | tuple[str, ...], *,
                   org_code: str | None, sent: bytes | None = None) -> etree._Element | None:
    """Run ``attack`` and assert: refused with ``code`` (or one of the codes), exactly one audit row
    (outcome "refused", that fault code, ``org_code``), and the index unchanged.

    ``attack`` returns ``post_raw``'s (status, envelope) -- the response signature and RequestDigest
    already verified -- or None when it checked the fault itself (the SDK raising its typed
    exception). With ``code=TLS_HANDSHAKE`` the attack must fail in the TLS layer, and the worker
    audits the refused handshake.
    """
    if code == TLS_HANDSHAKE:
        with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
            attack()
        entries = _entries_soon(gateway, seq)
        assert len(entries) == 1, entries
        [entry] = entries
        assert (entry["operation"], entry["outcome"], entry["fault_code"]) == (
            "tls_handshake", "refused", "CertificateRejected")
        assert entry["org_code"] is None and "127.0.0.1" in entry["detail"]
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


def assert_post_refused(gateway, client: GatewayClient, operation: str, data: bytes,
                        code: str | tuple[str, ...], *, org_code: str | None) -> etree._Element | None:
    """`assert_refused` for ``data`` posted by ``client`` as ``operation`` (the baseline taken just
    before it is sent, the audit row's digest checked against ``data``)."""
    before, seq = baseline(gateway)
    return assert_refused(gateway, before, seq, post(client, operation, data), code,
                          org_code=org_code, sent=data)


def fault_message(envelope: etree._Element) -> str:
    """The fault's message (``detail/cg:Error/cg:Message``, the same text as ``faultstring``)."""
    fault = envelope.find(f"{q(SOAP_ENV, 'Body')}/{q(SOAP_ENV, 'Fault')}")
    message = fault.findtext(f"detail/{q(CG, 'Error')}/{q(CG, 'Message')}")
    assert message == fault.findtext("faultstring")
    return message


def assert_no_leak(fault_bytes: bytes) -> None:
    assert b"Traceback" not in fault_bytes
    assert b"/work/" not in fault_bytes
    assert b'File "' not in fault_bytes


# ---- building and posting messages ---------------------------------------------------------------

def post(client: GatewayClient, operation: str, data: bytes) -> Attack:
    return lambda: client.post_raw(operation, data)


def sent_once(client: GatewayClient, operation: str, **kwargs) -> tuple[bytes, etree._Element]:
    """Build a signed ``operation`` request, post it and assert it was answered (status 200): the
    original that a replay copies. Returns the request bytes and the answer."""
    data = client.build_request(operation, **kwargs)
    status, answer = client.post_raw(operation, data)
    assert status == 200
    return data, answer


def submit_kwargs(family: str | None = None) -> dict:
    return {"ChildUpdate": [child_update(unique("atk-"), family or unique_name("Attack"), "Zed", "2016-02-03")]}


def find_kwargs(**overrides) -> dict:
    call = {"Requester": REQUESTER, "Reason": REASON, "FamilyName": unique_name("Nobody"),
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
