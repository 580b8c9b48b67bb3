"""Role-limited fields (gateway.index.disclosure): the rules, one by one, and the roles file."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from gateway.index import disclosure
from gateway.index.model import Address, Carer, ChildView, Contact, Identity, Involvement, Setting

CHILD = ChildView(
    child_id="X", shielded=False,
    identity=Identity("Smith", ("Amy",), dt.date(2015, 1, 1), "female", nhs_number="9434765919"),
    address=Address(("1 Lane",), "LS1 1AA", "Leeds"),
    carers=(Carer("Pat", "mother", "0113", "p@example", Address(("1 Lane",), "LS1 1AA")),),
    educational_setting=Setting("Hillside Primary"), gp_practice=Setting("Park Surgery"),
    contacts=(Contact("LA", Involvement("Social care", dt.date(2024, 1, 1), True, True, "Sam", "sw", "0113 1", "s@la")),
              Contact("NHS", Involvement("Health visiting", dt.date(2024, 1, 1), False, False, "Jo", "hv", "0113 2", "j@nhs"))),
)


def test_the_minimum_is_who_the_child_is_and_which_services_are_involved():
    seen = disclosure.limit(CHILD, frozenset())
    assert (seen.identity.family_name, seen.identity.given_names, seen.identity.date_of_birth) == (
        "Smith", ("Amy",), dt.date(2015, 1, 1))
    assert seen.identity.nhs_number is None and seen.address is None and seen.carers == ()
    assert seen.educational_setting is None and seen.gp_practice is None
    assert [(c.org_code, c.involvement.service, c.involvement.caf_assessment, c.involvement.lead_professional)
            for c in seen.contacts] == [("LA", "Social care", True, True), ("NHS", "Health visiting", False, False)]
    assert all(c.involvement.practitioner_name is None and c.involvement.phone is None and c.involvement.email is None
               for c in seen.contacts)


@pytest.mark.parametrize("group, visible, hidden", [
    ("identifiers", lambda c: c.identity.nhs_number, lambda c: c.address),
    ("address", lambda c: c.address, lambda c: c.identity.nhs_number),
    ("settings", lambda c: c.educational_setting and c.gp_practice, lambda c: c.address),
    ("carers", lambda c: c.carers and c.carers[0].name, lambda c: c.carers[0].phone or c.carers[0].address),
])
def test_each_group_shows_its_fields_and_no_other(group, visible, hidden):
    seen = disclosure.limit(CHILD, frozenset({group}))
    assert visible(seen) and not hidden(seen)


def test_carer_contact_needs_carers_too():
    assert disclosure.limit(CHILD, frozenset({"carer_contact"})).carers == ()
    carers = disclosure.limit(CHILD, frozenset({"carers", "carer_contact"})).carers
    assert carers[0].phone == "0113" and carers[0].address is not None


def test_a_role_may_see_a_caf_exists_but_not_who_the_lead_professional_is():
    seen = disclosure.limit(CHILD, frozenset({"practitioners", "practitioner_contact"}))
    lead, other = (c.involvement for c in seen.contacts)
    assert lead.caf_assessment and lead.lead_professional  # the flags stay
    assert lead.practitioner_name is None and lead.phone is None and lead.email is None  # who does not
    assert (other.practitioner_name, other.phone) == ("Jo", "0113 2")
    full = disclosure.limit(CHILD, frozenset({"practitioners", "practitioner_contact", "lead_professional"}))
    assert full.contacts[0].involvement.practitioner_name == "Sam"


def test_every_group_is_the_whole_record():
    assert disclosure.limit(CHILD, frozenset(disclosure.GROUPS)) == CHILD


def test_roles_file_rules(tmp_path):
    path = tmp_path / "roles.json"
    assert not disclosure.load(path).configured
    assert disclosure.load(path).groups_for("anyone") == frozenset(disclosure.GROUPS)
    path.write_text(json.dumps({"roles": {"Social Worker ": ["address", "carers"]}}))
    rules = disclosure.load(path)
    assert rules.groups_for("social worker") == {"address", "carers"}
    assert rules.groups_for("unknown role") == frozenset() and rules.groups_for(None) == frozenset()
    shown = "\n".join(disclosure.table(rules))
    assert "social worker" in shown and "address, carers" in shown and "minimum" in shown


@pytest.mark.parametrize("text, message", [
    ("not json", "not readable JSON"),
    ('{"roles": []}', "expected"),
    ('{"roles": {"gp": ["everything"]}}', "unknown field groups"),
    ('{"roles": {"gp": "address"}}', "list of field groups"),
    ('{"roles": {"GP": [], "gp ": []}}', "listed twice"),
])
def test_a_bad_roles_file_is_refused_with_a_clear_message(tmp_path, text, message):
    path = tmp_path / "roles.json"
    path.write_text(text)
    with pytest.raises(disclosure.RolesFileError, match=message):
        disclosure.load(path)
