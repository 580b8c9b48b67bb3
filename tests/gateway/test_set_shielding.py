"""SetShielding (issue 7, point 2) through the real gateway, on both backends: set and clear,
scope, reason, unknown and merged ids, who sees a shielded child's location, the audit's marks,
and that no path tells a guessed postcode apart."""

from __future__ import annotations

import pytest

from connectors.client import GatewayFault
from tests.conftest import SHIELD_ROLE
from tests.support import child_update, unique, unique_name

READ = dict(user_id="sh.tester", role="gp", reason_code="referral", reason_text="shielding test")
LEAD = dict(READ, role=SHIELD_ROLE)
WHY = dict(user_id="sh.officer", role="social worker", reason_code="risk_of_harm",
           reason_text="child at risk of significant harm: location to be withheld")


def _child(la, **extra):
    family, given = unique_name("Shield"), unique_name("Kid")
    update = child_update(unique("sh-"), family, given, "2015-05-15", **extra)
    [result] = la.submit_updates([update])
    return result["ChildId"], update


def _entries(gateway, seq, operation):
    return [e for e in gateway.audit_entries_after(seq) if e["operation"] == operation]


def test_shielding_set_and_cleared_withholds_then_restores_the_location(gateway, clients):
    la, shielder = clients("la"), clients("shielder")
    child_id, update = _child(la)
    assert la.get_contacts(child_id, **READ)["Address"]["Postcode"] == update["Address"]["Postcode"]
    seq = gateway.audit_seq()
    answer = shielder.set_shielding(child_id, True, **WHY)
    assert answer["ChildId"] == child_id and answer["Shielded"] is True
    [entry] = _entries(gateway, seq, "SetShielding")
    assert entry["outcome"] == "accepted" and entry["detail"] == "shielding set" and entry["child_ids"] == child_id
    assert entry["reason_code"] == "risk_of_harm"

    seq = gateway.audit_seq()
    shown = la.get_contacts(child_id, **READ)
    assert shown["Shielded"] is True and shown.get("Address") is None
    assert shown.get("EducationalSetting") is None and shown.get("GpPractice") is None
    assert all(c.get("Phone") is None and c.get("Address") is None for c in shown.get("Carer") or [])
    assert all(c["Involvement"].get("Phone") is None and c["Involvement"].get("Email") is None
               for c in shown.get("Contact") or [])
    [read] = _entries(gateway, seq, "GetContacts")
    assert "shielded=yes location=withheld" in read["detail"]

    seq = gateway.audit_seq()
    lead = la.get_contacts(child_id, **LEAD)  # the allowed role sees it, and that is marked too
    assert lead["Address"]["Postcode"] == update["Address"]["Postcode"]
    [read] = _entries(gateway, seq, "GetContacts")
    assert "shielded=yes location=shown-to-role" in read["detail"]

    assert shielder.set_shielding(child_id, False, **WHY)["Shielded"] is False
    assert la.get_contacts(child_id, **READ)["Address"]["Postcode"] == update["Address"]["Postcode"]


def test_setting_shielding_needs_the_shield_scope_and_changes_nothing_without_it(gateway, clients):
    la = clients("la")
    child_id, _ = _child(la)
    before = gateway.index_snapshot()
    seq = gateway.audit_seq()
    with pytest.raises(GatewayFault) as refused:
        la.set_shielding(child_id, True, **WHY)
    assert refused.value.code == "ScopeDenied"
    assert gateway.index_snapshot() == before
    [entry] = gateway.audit_entries_after(seq)
    assert entry["outcome"] == "refused" and entry["fault_code"] == "ScopeDenied"


def test_setting_shielding_needs_a_reason(gateway, clients):
    shielder = clients("shielder")
    child_id, _ = _child(clients("la"))
    before = gateway.index_snapshot()
    with pytest.raises(GatewayFault) as refused:
        shielder.set_shielding(child_id, True, **dict(WHY, reason_code=None, reason_text=None))
    assert refused.value.code == "ReasonRequired"
    assert gateway.index_snapshot() == before


def test_an_unknown_id_is_refused_exactly_as_getcontacts_refuses_it(gateway, clients):
    shielder = clients("shielder")
    faults = []
    for call in (lambda: shielder.set_shielding("ZZZZ-ZZZZ-ZZZZ-ZZZZ", True, **WHY),
                 lambda: shielder.get_contacts("ZZZZ-ZZZZ-ZZZZ-ZZZZ", **READ)):
        with pytest.raises(GatewayFault) as refused:
            call()
        faults.append((refused.value.code, refused.value.message))  # (each has its own request id)
    assert faults[0] == faults[1] and faults[0][0] == "NotFound"


def test_a_shielded_child_is_found_and_ranked_the_same_whatever_postcode_is_guessed(gateway, clients):
    """FindChild by the real postcode, a wrong one, or none: the same candidates, order and
    (withheld) locality — the postcode is no oracle for where a shielded child lives."""
    la, shielder = clients("la"), clients("shielder")
    child_id, update = _child(la)
    shielder.set_shielding(child_id, True, **WHY)
    family, dob = update["Identity"]["FamilyName"], update["Identity"]["DateOfBirth"]
    answers = []
    for postcode in (update["Address"]["Postcode"], "ZZ9 9ZZ", None):
        found = la.find_child(family_name=family, date_of_birth=dob, postcode=postcode, **READ)
        answers.append([(c["ChildId"], c.get("Locality"), c.get("Score")) for c in found])
    assert answers[0] == answers[1] == answers[2]
    assert [a[0] for a in answers[0]] == [child_id] and answers[0][0][1] is None
    seq = gateway.audit_seq()
    la.find_child(family_name=family, date_of_birth=dob, **READ)
    [entry] = _entries(gateway, seq, "FindChild")
    assert "shielded=1 location=withheld" in entry["detail"]
