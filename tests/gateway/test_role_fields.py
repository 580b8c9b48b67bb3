"""Role-limited fields through the real gateway, on both backends: a gateway whose home holds a
roles file answers GetContacts per the caller's stated role, marks it in the audit, `roles show`
prints the table, and a bad roles file stops the gateway from starting."""

from __future__ import annotations

import json

import pytest

from gateway import files
from contactgate_local import LocalGateway
from tests.conftest import BACKENDS, _database
from tests.support import REDIS_URL, Gateway, child_update, unique, unique_name

ROLES = {"roles": {"social worker": ["identifiers", "address", "carers", "carer_contact", "settings",
                                     "practitioners", "practitioner_contact", "lead_professional"],
                   "school nurse": ["settings", "practitioners", "practitioner_contact"]}}


def _read(role: str) -> dict:
    return dict(user_id="rf.tester", role=role, reason_code="referral", reason_text="role fields test")


@pytest.fixture(scope="module", params=BACKENDS)
def roles_gateway(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"roles-{request.param}")
    with _database(request.param) as url:
        gw = Gateway(backend=request.param, home=home, database_url=url,
                     redis_url=REDIS_URL if request.param == "postgresql" else None)
        gw.cli("init")
        files.write_private(home / "roles.json", json.dumps(ROLES).encode())
        gw.add_org("LA", "local_authority", ["push", "query"])
        gw.start()
        try:
            yield gw
        finally:
            gw.stop()


def _child_with_a_lead_professional(la):
    update = child_update(unique("rf-"), unique_name("Role"), unique_name("Kid"), "2014-09-09", nhs="9434765919")
    update["Involvement"] = [
        {"Service": "Children's social care", "PractitionerName": "Sam Lead", "Role": "social worker",
         "Phone": "0113 496 0002", "Email": "sam@la.example", "Start": "2024-01-10",
         "CafAssessment": True, "LeadProfessional": True},
        {"Service": "School nursing", "PractitionerName": "Jo Nurse", "Role": "school nurse",
         "Phone": "0113 496 0009", "Start": "2024-02-01", "CafAssessment": False, "LeadProfessional": False}]
    [result] = la.submit_updates([update])
    return result["ChildId"]


def test_each_role_sees_its_fields_and_an_unknown_role_the_minimum(roles_gateway):
    la = roles_gateway.client("la")
    child_id = _child_with_a_lead_professional(la)

    full = la.get_contacts(child_id, **_read("Social Worker"))  # case and spacing do not matter
    assert full["Identity"]["NhsNumber"] == "9434765919" and full["Address"]["Postcode"]
    assert full["Carer"][0]["Phone"] and full["Contact"][0]["Involvement"]["PractitionerName"] == "Sam Lead"

    nurse = la.get_contacts(child_id, **_read("school nurse"))
    assert nurse["Identity"].get("NhsNumber") is None and nurse.get("Address") is None and not nurse.get("Carer")
    assert nurse["EducationalSetting"]["Name"]
    lead, other = (c["Involvement"] for c in nurse["Contact"])
    assert lead["CafAssessment"] is True and lead["LeadProfessional"] is True  # that a CAF exists and who leads: no
    assert lead.get("PractitionerName") is None and lead.get("Phone") is None and lead.get("Email") is None
    assert other["PractitionerName"] == "Jo Nurse" and other["Phone"] == "0113 496 0009"

    seq = roles_gateway.audit_seq()
    minimum = la.get_contacts(child_id, **_read("volunteer"))
    assert minimum["Identity"]["FamilyName"] and minimum["Identity"]["DateOfBirth"]
    assert minimum.get("Address") is None and not minimum.get("Carer") and minimum.get("EducationalSetting") is None
    assert [c["Involvement"]["Service"] for c in minimum["Contact"]] == ["Children's social care", "School nursing"]
    assert all(c["Involvement"].get("PractitionerName") is None for c in minimum["Contact"])
    [entry] = roles_gateway.audit_entries_after(seq)
    assert entry["role"] == "volunteer" and "fields=minimum" in entry["detail"]


def test_roles_show_prints_the_table_in_force(roles_gateway):
    shown = roles_gateway.cli("roles", "show").output
    assert str(roles_gateway.home / "roles.json") in shown
    assert "school nurse" in shown and "settings, practitioners, practitioner_contact" in shown
    assert "a role not listed sees only that minimum" in shown


def test_a_bad_roles_file_stops_the_gateway_from_starting(tmp_path):
    gw = LocalGateway(home=tmp_path / "home")
    gw.cli("init")
    files.write_private(tmp_path / "home" / "roles.json", b'{"roles": {"gp": ["everything"]}}')
    refused = gw.cli("roles", "show", expect_ok=False)
    assert refused.exit_code != 0 and "unknown field groups" in refused.output
    with pytest.raises(Exception):
        gw.start()
    gw.stop()


def test_a_role_without_the_address_is_not_told_who_supplied_it(roles_gateway):
    """IncludeProvenance: AddressSource goes with the address, to a role that may see it, never alone."""
    from contactgate_wire.soap import CG

    la = roles_gateway.client("la")
    child_id = _child_with_a_lead_professional(la)
    found = {}
    for role in ("social worker", "school nurse", "volunteer"):
        data = la.build_request("GetContacts", Requester={"UserId": "rf.tester", "Role": role},
                                Reason={"_value_1": "provenance", "code": "referral"},
                                ChildId=child_id, IncludeProvenance=True)
        status, envelope = la.post_raw("GetContacts", data)
        assert status == 200
        child = envelope.find(f".//{{{CG}}}GetContactsResponse/{{{CG}}}Child")
        found[role] = (child.find(f"{{{CG}}}Address") is not None, child.find(f"{{{CG}}}AddressSource") is not None)
    assert found == {"social worker": (True, True), "school nurse": (False, False), "volunteer": (False, False)}
