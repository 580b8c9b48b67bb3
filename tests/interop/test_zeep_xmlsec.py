"""zeep + python-xmlsec, set up by hand (tests/interop/zeep_wsse.py, not the SDK), calls the three
operations against the real gateway, verifies its signed answers with xmlsec, and reads its faults."""

from __future__ import annotations

import pytest
import zeep
from zeep.helpers import serialize_object

from tests.interop.zeep_wsse import fault_code, zeep_client
from tests.support import unique_name, child_update, unique

READER = {"UserId": "zeep.user", "Role": "health visitor"}
REASON = {"_value_1": "new referral", "code": "referral"}


@pytest.mark.parametrize("binary_token", [True, False], ids=["BinarySignature", "Signature"])
def test_zeep_with_xmlsec_submits_finds_and_reads_a_child(gateway, binary_token):
    client = zeep_client(gateway, "la", binary_token=binary_token)
    family = unique_name("Zeep")
    answer = client.service.SubmitUpdates(ChildUpdate=[child_update(unique("zeep-"), family, "Cy", "2015-03-02")])
    [result] = serialize_object(answer, dict)["Result"]
    assert result["Outcome"] == "created"
    child_id = result["ChildId"]

    found = serialize_object(client.service.FindChild(Requester=READER, Reason=REASON, FamilyName=family,
                                                      DateOfBirth="2015-03-02"), dict)
    assert [c["ChildId"] for c in found["Candidate"]] == [child_id]
    contacts = serialize_object(client.service.GetContacts(Requester=READER, Reason=REASON, ChildId=child_id), dict)
    assert contacts["Child"]["ChildId"] == child_id
    assert contacts["Child"]["Identity"]["FamilyName"] == family


def test_zeep_with_xmlsec_reads_the_fault_of_get_contacts_without_a_reason(gateway):
    child_id = serialize_object(zeep_client(gateway, "la").service.SubmitUpdates(
        ChildUpdate=[child_update(unique("zeep-"), unique_name("Zeep"), "Di", "2014-01-02")]), dict)["Result"][0]["ChildId"]
    with pytest.raises(zeep.exceptions.Fault) as raised:
        zeep_client(gateway, "health").service.GetContacts(Requester=READER, ChildId=child_id)
    assert fault_code(raised.value) == "ReasonRequired"
    assert raised.value.message == "Every read must state a reason code and a reason text."
    assert raised.value.code == "soap:Client"
