"""The mistakes integrators commonly make in their WS-Security set-up, each made with a real client
(zeep + xmlsec, node-soap) against the real gateway: each is refused with the contract's code and a
message saying what to fix in the caller's own security header, and audited with the exact reason."""

from __future__ import annotations

import datetime as dt

import pytest
import xmlsec
import zeep

from tests.interop.conftest import node_job
from tests.interop.zeep_wsse import fault_code, zeep_client
from tests.support import unique_name

READER = {"UserId": "mistake.user", "Role": "gp"}
REASON = {"_value_1": "new referral", "code": "referral"}
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


def _find_with_zeep(gateway, **options):
    client = zeep_client(gateway, "health", **options)
    with pytest.raises(zeep.exceptions.Fault) as raised:
        client.service.FindChild(Requester=READER, Reason=REASON, FamilyName=unique_name("Mistake"),
                                 DateOfBirth="2015-01-01")
    return fault_code(raised.value), raised.value.message


def _find_with_node_soap(gateway, node_soap, **security):
    [answer] = node_soap(node_job(gateway, "health", [{"operation": "FindChild", "args": {
        "Requester": READER, "Reason": {"attributes": {"code": "referral"}, "$value": "new referral"},
        "FamilyName": unique_name("Mistake"), "DateOfBirth": "2015-01-01"}}], **security))
    assert not answer["ok"], "the mistake was accepted"
    return answer["fault"]["code"], answer["fault"]["message"]


def _assert_audited_once(gateway, seq: int, code: str) -> None:
    [entry] = gateway.audit_entries_after(seq)
    assert (entry["outcome"], entry["fault_code"], entry["org_code"]) == ("refused", code, "HEALTH")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


ZEEP_MISTAKES = {
    # zeep's defaults are RSA-SHA1 / SHA-1
    "zeep-defaults-sha1": (dict(signature_method=None, digest_method=None), "SignatureInvalid",
                           "SignatureMethod must be RSA-SHA256 or ECDSA-SHA256 (SHA-1 is refused)."),
    "sha1-digest": (dict(digest_method=xmlsec.Transform.SHA1), "SignatureInvalid",
                    "DigestMethod must be SHA-256"),
    # zeep signs a Timestamp only if one is already there
    "no-timestamp": (dict(timestamp=False), "SignatureInvalid",
                     "wsse:Security must hold exactly one wsu:Timestamp, signed with soap:Body."),
    # created: minutes from now
    "expired": (dict(created=-10), "MessageExpired",
                "wsu:Timestamp has expired (Expires has passed; check the clock)"),
    "clock-ahead": (dict(created=+10), "MessageExpired",
                    "wsu:Timestamp Created is in the future (check the clock)"),
    "long-lived-and-old": (dict(created=-7, lifetime_s=3600), "MessageExpired",
                           "wsu:Timestamp is older than 5 minutes"),
}


@pytest.mark.parametrize("name", list(ZEEP_MISTAKES))
def test_zeep_mistake_is_refused_saying_what_to_fix(gateway, name):
    options, code, message = ZEEP_MISTAKES[name]
    if "created" in options:
        options = dict(options, created=_now() + dt.timedelta(minutes=options["created"]))
    seq = gateway.audit_seq()
    got_code, got_message = _find_with_zeep(gateway, **options)
    assert got_code == code
    assert message in got_message
    _assert_audited_once(gateway, seq, code)


NODE_SOAP_MISTAKES = {
    # the README's own example: signerOptions without idMode, so xml-crypto writes an unqualified Id
    "no-wsu-id": (dict(signerOptions={"prefix": "ds", "attrs": {"Id": "Signature"},
                                      "existingPrefixes": {"wsse": WSSE_NS}}),
                  "soap:Body must carry wsu:Id"),
    # (with signatureAlgorithm set, node-soap 1.13 adds a Body reference whatever is excluded)
    "body-not-signed": (dict(signatureAlgorithm=None, excludeReferencesFromSigning=["Body"]),
                        "The signature must reference soap:Body and wsu:Timestamp"),
    "no-timestamp": (dict(hasTimeStamp=False), "wsse:Security must hold exactly one wsu:Timestamp"),
    "sha1-digest": (dict(digestAlgorithm="http://www.w3.org/2000/09/xmldsig#sha1"), "DigestMethod must be SHA-256"),
}


@pytest.mark.parametrize("name", list(NODE_SOAP_MISTAKES))
def test_node_soap_mistake_is_refused_saying_what_to_fix(gateway, node_soap, name):
    security, message = NODE_SOAP_MISTAKES[name]
    seq = gateway.audit_seq()
    code, got_message = _find_with_node_soap(gateway, node_soap, **security)
    assert code == "SignatureInvalid"
    assert message in got_message
    _assert_audited_once(gateway, seq, "SignatureInvalid")
