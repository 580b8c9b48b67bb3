"""Officers appoint an organisation's first user administrator of the portal (issue 26, item 2):
one officer proposes, a different one approves or declines, each step in the audit chain; the
approval prints the one-time invitation code that is handed over out of band. Both backends, on the
session's gateway, through the command line."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from tests.gateway.portal.conftest import INVITATION
from tests.support import unique


def _proposal(output: str) -> str:
    return re.search(r"proposal (\d+)", output).group(1)



def test_a_user_administrator_is_appointed_by_two_officers(gateway):
    user = unique("admin.").lower()
    seq = gateway.audit_seq()
    proposed = gateway.cli("portal-admin", "propose", "LA", user, "--name", "Una Admin", "--job-title",
                           "Information governance lead", officer="officer-a")
    proposal = _proposal(proposed.output)
    assert "a second officer approves" in proposed.output

    own = gateway.cli("portal-admin", "approve", proposal, officer="officer-a", expect_ok=False)
    assert own.exit_code == 2 and "second officer" in own.output
    assert "pending" in gateway.cli("portal-admin", "list", officer="officer-b").output

    approved = gateway.cli("portal-admin", "approve", proposal, officer="officer-b")
    code = INVITATION.search(approved.output).group(1)
    assert len(code) >= 16
    again = gateway.cli("portal-admin", "approve", proposal, officer="officer-b", expect_ok=False)
    assert again.exit_code == 2

    entries = [e for e in gateway.audit_entries_after(seq) if e["operation"].startswith("portal.admin")]
    assert [(e["operation"], e["outcome"], e["user_id"]) for e in entries] == [
        ("portal.admin.propose", "done", "officer-a"), ("portal.admin.approve", "refused", "officer-a"),
        ("portal.admin.approve", "done", "officer-b"), ("portal.admin.approve", "refused", "officer-b")]
    assert all(user in e["detail"] and e["org_code"] == "LA" for e in entries)
    assert code not in str(entries)  # the invitation code is never in the audit



def test_a_declined_appointment_makes_no_account_and_an_unaccredited_organisation_gets_none(gateway):
    user = unique("admin.").lower()
    proposal = _proposal(gateway.cli("portal-admin", "propose", "LA", user, "--name", "Ned", "--job-title", "IT",
                                     officer="officer-a").output)
    declined = gateway.cli("portal-admin", "decline", proposal, "--reason", "not the right person",
                           officer="officer-b")
    assert "declined" in declined.output
    assert gateway.cli("portal-admin", "approve", proposal, officer="officer-b", expect_ok=False).exit_code == 2
    refused = gateway.cli("portal-admin", "propose", "UNACC", user, "--name", "Ned", "--job-title", "IT",
                          officer="officer-a", expect_ok=False)
    assert refused.exit_code == 2 and "accredited" in refused.output


def test_officers_see_whose_clearance_or_training_lapses_within_30_days(gateway):
    import datetime as dt

    from gateway import audit
    from gateway.config import Settings
    from gateway.index import disclosure
    from gateway.portal import accounts

    today = dt.date.today()
    soon, later = unique("hv.soon.").lower(), unique("hv.later.").lower()
    trail = audit.AuditTrail.of_home(Settings.from_env({}, home=str(gateway.home),
                                                       database_url=gateway.database_url).layout)
    with gateway.engine.begin() as conn:
        for user, cleared in ((soon, today - dt.timedelta(days=3 * 365 - 10)), (later, today)):
            accounts.create(conn, trail, "LA", user, accounts.Details(
                "Pat Visitor", "health visitor", "Health visitor", "0012345", cleared, today, None),
                user_admin=False, created_by="LA:test", rules=disclosure.UNCONFIGURED,
                audited_as=("portal.practitioner.add", "test", accounts.ADMIN_ROLE))
    shown = gateway.cli("portal-admin", "lapsing", officer="officer-a").output
    assert f"LA:{soon}" in shown and "clearance" in shown and f"LA:{later}" not in shown


def _row(gateway, org: str, user: str):
    from sqlalchemy import select

    from gateway.db import portal_practitioners as table
    with gateway.engine.connect() as conn:
        return conn.execute(select(table).where(table.c.org_code == org, table.c.user_id == user)).one()



def test_officers_disable_reset_and_enable_a_user_administrator_four_eyes(gateway):
    from tests.gateway.portal.conftest import Account, appoint_admin, enrol_in_process

    user = unique("admin.").lower()
    enrol_in_process(gateway, Account("LA", user), appoint_admin(gateway, "LA", user))

    proposal = _proposal(gateway.cli("portal-admin", "disable", "LA", user, "--reason", "left the council",
                                     officer="officer-a").output)
    assert _row(gateway, "LA", user).disabled_at is None
    assert gateway.cli("portal-admin", "approve", proposal, officer="officer-a", expect_ok=False).exit_code == 2
    gateway.cli("portal-admin", "approve", proposal, officer="officer-b")
    assert _row(gateway, "LA", user).disabled_at is not None

    proposal = _proposal(gateway.cli("portal-admin", "reset", "LA", user, officer="officer-b").output)
    approved = gateway.cli("portal-admin", "approve", proposal, officer="officer-a")
    assert INVITATION.search(approved.output)
    row = _row(gateway, "LA", user)
    assert row.password_hash is None and row.disabled_at is not None  # a reset does not re-enable

    proposal = _proposal(gateway.cli("portal-admin", "enable", "LA", user, "--reason", "came back",
                                     officer="officer-a").output)
    gateway.cli("portal-admin", "approve", proposal, officer="officer-b")
    assert _row(gateway, "LA", user).disabled_at is None



def test_an_officer_approves_the_role_an_organisations_only_administrator_proposes(gateway):
    from gateway import audit
    from gateway.config import Settings
    from gateway.index import disclosure
    from gateway.portal import accounts

    trail = audit.AuditTrail.of_home(Settings.from_env({}, home=str(gateway.home),
                                                       database_url=gateway.database_url).layout)
    admin_id, user = unique("admin.").lower(), unique("hv.").lower()
    with gateway.engine.begin() as conn:
        admin, _ = accounts.create(conn, trail, "LA", admin_id, accounts.Details(
            "Ann Admin", None, "IT", None, None, None, None), user_admin=True, created_by="test", rules=disclosure.UNCONFIGURED)
        accounts.add(conn, trail, admin, user, accounts.Details(
            "Pat Visitor", "health visitor", "Health visitor", "0012345", dt.date.today(), dt.date.today(), None),
            rules=disclosure.UNCONFIGURED)
    assert _row(gateway, "LA", user).role is None
    listed = gateway.cli("portal-admin", "list", officer="officer-a").output
    proposal = re.search(rf"role proposal (\d+) pending: LA:{re.escape(user)}", listed).group(1)
    gateway.cli("portal-admin", "approve-role", proposal, officer="officer-a")
    assert _row(gateway, "LA", user).role == "health visitor"
