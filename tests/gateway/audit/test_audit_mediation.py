"""Access through another authorised user in the audit trail (issue 26, item 5): an entry of a
mediated read names both people, in the same chain (the requester's details are hashed into the
links); `report_for_user` finds the requester's reads as well as the user's; the table shows both;
the ``mediated`` review rule flags heavy use per mediator and per requester, not light use. Entries
are appended through the real chain, on both backends."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from gateway.audit import AuditTrail, Entry, new_key, report_for_child, report_for_user
from gateway.audit import report, review
from gateway.db import audit_log
from gateway.index.disclosure import RoleRules
from gateway.mediation import MediationRefused, OnBehalfOf

MONDAY = dt.datetime(2026, 11, 2, 10, tzinfo=dt.timezone.utc)
ROLES = RoleRules({"health visitor": frozenset({"address"}), "mediator": frozenset({"address", "carers"})}, "test")
CHILD = "C001-0000-0000-0000"


def requester(name="Jane  Smith", organisation="St Mary's Surgery") -> OnBehalfOf:
    return OnBehalfOf.checked(name, organisation, "Health Visitor", "+44 161 496 0000", "callback_switchboard",
                              "called the surgery's switchboard 0161 496 0000 and was put through", roles=ROLES)


def mediated(trail, engine, behalf: OnBehalfOf, *, user="contact.team", at=MONDAY, operation="GetContacts") -> int:
    with engine.begin() as conn:
        return trail.append(conn, Entry(operation=operation, outcome="accepted", org_code="LA", user_id=user,
                                        role="mediator", reason_code="service", reason_text="caller's visit",
                                        child_ids=[CHILD], detail="channel=web contacts=1 fields=address",
                                        on_behalf_of=behalf.as_json(), behalf_key=behalf.key), now=at)


@pytest.fixture
def trail():
    return AuditTrail(new_key())


def test_a_mediated_entry_names_both_people_and_is_found_by_either(trail, engine):
    seq = mediated(trail, engine, requester())
    with engine.connect() as conn:
        mine = report_for_user(conn, "LA", "contact.team")
        theirs = report_for_user(conn, "st mary's surgery", "jane smith")
        subject = report_for_child(conn, CHILD)
    assert [r["seq"] for r in mine] == [r["seq"] for r in theirs] == [r["seq"] for r in subject] == [seq]
    line = report.table_line(theirs[0])
    assert "LA:contact.team (mediator)" in line and "on behalf of [Jane Smith (health visitor, St Mary's Surgery" in line
    assert "callback_switchboard" in line
    assert '\\"phone\\"' in report.render(theirs, "json")


def test_the_requester_is_covered_by_the_chain(trail, engine):
    seq = mediated(trail, engine, requester())
    assert trail.verify(engine).ok
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(behalf_key="someone else"))
    result = trail.verify(engine)
    assert not result.ok and result.first_bad_seq == seq


@pytest.mark.parametrize("field, value, said", [
    ("name", "   ", "give the requester's name"),
    ("phone", "call me", "phone number must be digits"),
    ("identity_check", "they said so", "must be one of"),
    ("role", "mediator", "cannot be mediator"),
    ("role", "astronaut", "must be one of the roles file's"),
    ("organisation", "x" * 101, "at most 100 characters"),
    ("identity_note", "line\nbreak\u202e", "not text"),
])
def test_a_requester_is_refused_for_missing_blank_or_over_long_details(field, value, said):
    given = dict(name="Jane Smith", organisation="Surgery", role="health visitor", phone="0161 496 0000",
                 identity_check="known_in_person", identity_note="met at the case conference")
    given[field] = value
    with pytest.raises(MediationRefused, match=said):
        OnBehalfOf.checked(**given, roles=ROLES)


def test_mediation_needs_a_roles_file():
    from gateway.index.disclosure import UNCONFIGURED

    with pytest.raises(MediationRefused, match="roles file"):
        OnBehalfOf.checked("Jane", "Surgery", "health visitor", "0161 496 0000", "known_in_person", "met",
                           roles=UNCONFIGURED)


def _mediated_findings(engine, thresholds):
    with engine.connect() as conn:
        return [f for f in review.run(conn, MONDAY - dt.timedelta(hours=1), thresholds,
                                      until=MONDAY + dt.timedelta(days=1), rules=["mediated"])]


def test_the_review_flags_heavy_mediated_use_per_mediator_and_per_requester(trail, engine):
    for n in range(6):  # one requester calling six times
        mediated(trail, engine, requester(), at=MONDAY + dt.timedelta(minutes=n))
    for n in range(4):  # the same mediator, four other callers once each
        mediated(trail, engine, requester(name=f"Caller {n}"), at=MONDAY + dt.timedelta(minutes=10 + n))
    findings = _mediated_findings(engine, review.Thresholds(mediated_per_mediator=10, mediated_per_requester=5))
    subjects = {f.subject: f for f in findings}
    assert set(subjects) == {"LA:contact.team", "requester st mary's surgery:jane smith"}
    assert subjects["LA:contact.team"].count == 10 and "5 different requesters" in subjects["LA:contact.team"].summary
    assert subjects["requester st mary's surgery:jane smith"].count == 6


def test_the_review_is_quiet_on_light_mediated_use(trail, engine):
    for n in range(3):
        mediated(trail, engine, requester(name=f"Caller {n}"), at=MONDAY + dt.timedelta(minutes=n))
    assert _mediated_findings(engine, review.Thresholds(mediated_per_mediator=10, mediated_per_requester=5)) == []
    assert _mediated_findings(engine, review.Thresholds()) == []
