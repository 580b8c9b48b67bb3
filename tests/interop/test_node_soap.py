"""node-soap (npm `soap`, version pinned in tests/interop/node/package.json), configured as its
README says -- WSSecurityCert with RSA-SHA256 and SHA-256, its own 10-minute Timestamp, its default
reference transforms (enveloped-signature + exclusive C14N) -- and mutual TLS through the request
options, calls the three operations against the real gateway and reads the gateway's faults."""

from __future__ import annotations

from tests.interop.conftest import node_job
from tests.support import unique_name, child_update, unique

READER = {"UserId": "node.user", "Role": "social worker"}


def reason(code: str = "safeguarding", text: str = "checking who is involved before a visit") -> dict:
    """xs:simpleContent with an attribute, as node-soap writes it."""
    return {"attributes": {"code": code}, "$value": text}


def test_node_soap_submits_finds_and_reads_a_child(gateway, node_soap):
    family = unique_name("Node")
    update = child_update(unique("node-"), family, "Ada", "2016-05-04")
    [submitted] = node_soap(node_job(gateway, "la", [{"operation": "SubmitUpdates", "args": {"ChildUpdate": [update]}}]))
    assert submitted["ok"], submitted.get("fault")
    request = submitted["request"]
    # what node-soap sent: its 10-minute Timestamp and enveloped-signature, both accepted now
    assert "xmldsig#enveloped-signature" in request and "<Expires>" in request
    [result] = submitted["result"]["Result"]
    assert result["Outcome"] == "created"
    child_id = result["ChildId"]

    found, contacts = node_soap(node_job(gateway, "la", [
        {"operation": "FindChild", "args": {"Requester": READER, "Reason": reason(), "FamilyName": family,
                                            "DateOfBirth": "2016-05-04"}},
        {"operation": "GetContacts", "args": {"Requester": READER, "Reason": reason(), "ChildId": child_id}},
    ]))
    assert found["ok"], found.get("fault")
    candidates = found["result"]["Candidate"]
    candidates = candidates if isinstance(candidates, list) else [candidates]
    assert [c["ChildId"] for c in candidates] == [child_id]
    assert contacts["ok"], contacts.get("fault")
    child = contacts["result"]["Child"]
    assert child["ChildId"] == child_id and child["Identity"]["FamilyName"] == family


def test_node_soap_reads_the_fault_of_get_contacts_without_a_reason(gateway, node_soap):
    [submitted] = node_soap(node_job(gateway, "la", [
        {"operation": "SubmitUpdates",
         "args": {"ChildUpdate": [child_update(unique("node-"), unique_name("Node"), "Bea", "2017-06-05")]}}]))
    child_id = submitted["result"]["Result"][0]["ChildId"]
    no_reason, blank_reason = node_soap(node_job(gateway, "health", [
        {"operation": "GetContacts", "args": {"Requester": READER, "ChildId": child_id}},
        {"operation": "GetContacts", "args": {"Requester": READER, "Reason": reason(text=" "), "ChildId": child_id}},
    ]))
    for refused in (no_reason, blank_reason):
        assert not refused["ok"]
        fault = refused["fault"]
        assert fault["status"] == 500 and fault["faultcode"] == "soap:Client"
        assert fault["code"] == "ReasonRequired"
        assert fault["message"] == fault["faultstring"] == "Every read must state a reason code and a reason text."
