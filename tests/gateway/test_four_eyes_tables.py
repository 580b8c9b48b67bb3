"""The four-eyes proposals kept in tables of their own: an organisation's identity provider
(gateway.trust.identity_providers) and a portal user administrator's appointment or account action
(gateway.portal.appointments). To the letter: every refusal's message, every audit entry (operation,
outcome, organisation, officer, role, detail) and the proposal rows they leave, on both backends. Users'
scripts read these, so a change of how the proposals are made must leave them exactly as they are."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from gateway import audit
from gateway.db import audit_log, identity_providers, organisations, portal_admin_proposals
from gateway.index import disclosure
from gateway.officers import Officer
from gateway.portal import appointments
from gateway.portal.accounts import PortalError
from gateway.trust import identity_providers as idps

NOW = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone.utc)
A = Officer("officer-a", "Officer A", frozenset({"officer"}))
B = Officer("officer-b", "Officer B", frozenset({"senior_officer"}))
AUDITOR = Officer("auditor-x", "Auditor X", frozenset({"auditor"}))
LONG = "x" * 1200  # a decline's reason over 1000 characters


@pytest.fixture
def setting(engine):
    trail = audit.AuditTrail(audit.new_key())
    with engine.begin() as conn:
        conn.execute(organisations.insert().values(
            code="LA", code_key="LA", name="LA", kind="local_authority", status="accredited", scopes="query",
            expires=dt.date.today() + dt.timedelta(days=300), created_at=NOW, updated_at=NOW))
    return engine, trail


def _refused(engine, trail, error, operation, actor, fn, *args, org_code="LA") -> str:
    with pytest.raises(error) as raised:
        (idps.run if error is idps.IdentityProviderError else appointments.run)(
            engine, trail, operation, actor, fn, *args, org_code=org_code)
    return str(raised.value)


def _entries(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(
            audit_log.c.operation, audit_log.c.outcome, audit_log.c.org_code, audit_log.c.user_id, audit_log.c.role,
            audit_log.c.detail).order_by(audit_log.c.seq))]


def _naive(at: dt.datetime | None) -> dt.datetime | None:
    """A time as UTC without its zone (SQLite hands back naive UTC, PostgreSQL the session's zone)."""
    return at.astimezone(dt.timezone.utc).replace(tzinfo=None) if at and at.tzinfo else at


def _rows(engine, table, *columns) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(*(table.c[c] for c in columns)).order_by(table.c.id))]


REGISTRATION = idps.Registration("LA", "https://login.la.example", "portal", "https://portal.example/oidc/callback",
                                 role_map={"hv": "health visitor"}, amr_values=("otp",))
SUMMARY = ("LA's provider https://login.la.example client portal (private_key_jwt); person preferred_username; "
           "role groups hv->health visitor; two factors: amr=otp, else refuse")


def test_an_identity_providers_proposal_its_refusals_audit_and_rows_to_the_letter(setting):
    engine, trail = setting
    run = idps.run
    first = run(engine, trail, "idp.propose", A, idps.propose, REGISTRATION, NOW, None, org_code="LA")
    error = idps.IdentityProviderError
    said = [
        _refused(engine, trail, error, "idp.approve", AUDITOR, idps.approve, first.id, NOW),
        _refused(engine, trail, error, "idp.approve", B, idps.approve, 999, NOW),
        _refused(engine, trail, error, "idp.approve", A, idps.approve, first.id, NOW),
        _refused(engine, trail, error, "idp.decline", B, idps.decline, first.id, "  ", NOW),
    ]
    run(engine, trail, "idp.approve", B, idps.approve, first.id, NOW, org_code="LA")
    said += [_refused(engine, trail, error, "idp.approve", B, idps.approve, first.id, NOW),
             _refused(engine, trail, error, "idp.decline", B, idps.decline, first.id, "late", NOW)]
    second = run(engine, trail, "idp.propose", B, idps.propose, REGISTRATION, NOW, None, org_code="LA")
    said.append(_refused(engine, trail, error, "idp.decline", B, idps.decline, second.id, "mine", NOW))
    run(engine, trail, "idp.decline", A, idps.decline, second.id, LONG, NOW, org_code="LA")

    assert said == [
        "registering an identity provider needs the role officer",
        "no identity provider proposal 999",
        f"proposal {first.id} was made by officer-a: a second officer decides it",
        "a reason is required",
        f"proposal {first.id} is approved already",
        f"proposal {first.id} is approved already",
        f"proposal {second.id} was made by officer-b: a second officer decides it",
    ]
    assert _entries(engine) == [
        ("idp.propose", "done", "LA", "officer-a", "officer", f"proposal {first.id}: {SUMMARY}"),
        ("idp.approve", "refused", "LA", "auditor-x", "auditor", f"refused: {said[0]}"),
        ("idp.approve", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[1]}"),
        ("idp.approve", "refused", "LA", "officer-a", "officer", f"refused: {said[2]}"),
        ("idp.decline", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[3]}"),
        ("idp.approve", "done", "LA", "officer-b", "senior_officer",
         f"approved proposal {first.id} by officer-a: {SUMMARY}"),
        ("idp.approve", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[4]}"),
        ("idp.decline", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[5]}"),
        ("idp.propose", "done", "LA", "officer-b", "senior_officer", f"proposal {second.id}: {SUMMARY}"),
        ("idp.decline", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[6]}"),
        ("idp.decline", "done", "LA", "officer-a", "officer", f"declined proposal {second.id} by officer-b: {LONG}"),
    ]
    assert [(*r[:4], _naive(r[4]), r[5]) for r in _rows(
        engine, identity_providers, "id", "status", "proposed_by", "decided_by", "decided_at", "reason")] == [
        (first.id, "approved", "officer-a", "officer-b", NOW.replace(tzinfo=None), None),
        (second.id, "declined", "officer-b", "officer-a", NOW.replace(tzinfo=None), LONG[:1000]),
    ]


def test_a_portal_administrators_proposals_their_refusals_audit_and_rows_to_the_letter(setting):
    engine, trail = setting
    run, error, rules = appointments.run, PortalError, disclosure.UNCONFIGURED
    first = run(engine, trail, "portal.admin.propose", A, appointments.propose, "LA", "ann", "Ann Admin", "IT lead",
                NOW, org_code="LA")
    what = "ann (Ann Admin, IT lead) as LA's user administrator"
    said = [
        _refused(engine, trail, error, "portal.admin.approve", AUDITOR, appointments.approve, first.id, NOW, rules),
        _refused(engine, trail, error, "portal.admin.approve", B, appointments.approve, 999, NOW, rules),
        _refused(engine, trail, error, "portal.admin.approve", A, appointments.approve, first.id, NOW, rules),
        _refused(engine, trail, error, "portal.admin.decline", B, appointments.decline, first.id, "", NOW),
    ]
    approved, code = run(engine, trail, "portal.admin.approve", B, appointments.approve, first.id, NOW, rules,
                         org_code="LA")
    assert approved.status == "approved" and code
    said += [_refused(engine, trail, error, "portal.admin.approve", B, appointments.approve, first.id, NOW, rules),
             _refused(engine, trail, error, "portal.admin.decline", A, appointments.decline, first.id, "late", NOW)]
    second = run(engine, trail, "portal.admin.propose", B, appointments.propose_action, "disable", "LA", "ann",
                 "left", NOW, org_code="LA")
    run(engine, trail, "portal.admin.approve", A, appointments.approve, second.id, NOW, rules, org_code="LA")
    third = run(engine, trail, "portal.admin.propose", A, appointments.propose, "LA", "bob", "Bob Admin", "IT",
                NOW, org_code="LA")
    run(engine, trail, "portal.admin.decline", B, appointments.decline, third.id, LONG, NOW, org_code="LA")

    assert said == [
        "appointing a user administrator needs the role officer",
        "no portal-admin proposal 999",
        f"proposal {first.id} ({what}) was made by officer-a: a second officer decides it",
        "a reason is required",
        f"proposal {first.id} ({what}) is approved already",
        f"proposal {first.id} ({what}) is approved already",
    ]
    entries = [e for e in _entries(engine) if e[0].startswith("portal.admin")]
    assert entries == [
        ("portal.admin.propose", "done", "LA", "officer-a", "officer", f"proposal {first.id}: {what}"),
        ("portal.admin.approve", "refused", "LA", "auditor-x", "auditor", f"refused: {said[0]}"),
        ("portal.admin.approve", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[1]}"),
        ("portal.admin.approve", "refused", "LA", "officer-a", "officer", f"refused: {said[2]}"),
        ("portal.admin.decline", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[3]}"),
        ("portal.admin.approve", "done", "LA", "officer-b", "senior_officer",
         f"approved proposal {first.id} by officer-a: {what}; account made, invitation issued"),
        ("portal.admin.approve", "refused", "LA", "officer-b", "senior_officer", f"refused: {said[4]}"),
        ("portal.admin.decline", "refused", "LA", "officer-a", "officer", f"refused: {said[5]}"),
        ("portal.admin.propose", "done", "LA", "officer-b", "senior_officer",
         f"proposal {second.id}: disable LA:ann (Ann Admin, IT lead): left"),
        ("portal.admin.approve", "done", "LA", "officer-a", "officer",
         f"approved proposal {second.id} by officer-b: disable LA:ann (Ann Admin, IT lead): left"),
        ("portal.admin.propose", "done", "LA", "officer-a", "officer",
         f"proposal {third.id}: bob (Bob Admin, IT) as LA's user administrator"),
        ("portal.admin.decline", "done", "LA", "officer-b", "senior_officer",
         f"declined proposal {third.id} by officer-a: bob (Bob Admin, IT) as LA's user administrator: {LONG}"),
    ]
    assert [(*r[:5], _naive(r[5]), r[6]) for r in _rows(
        engine, portal_admin_proposals, "id", "action", "status", "proposed_by", "decided_by", "decided_at",
        "reason")] == [
        (first.id, "appoint", "approved", "officer-a", "officer-b", NOW.replace(tzinfo=None), None),
        (second.id, "disable", "approved", "officer-b", "officer-a", NOW.replace(tzinfo=None), None),
        (third.id, "appoint", "declined", "officer-a", "officer-b", NOW.replace(tzinfo=None), LONG),  # in full
    ]
