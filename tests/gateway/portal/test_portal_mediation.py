"""Access through another authorised user in the portal (issue 26, item 5), on each backend, against
the module's `contactgate portal` (conftest.py), over HTTPS:

- a mediator (role ``mediator``, of an organisation accredited for ``query`` and ``mediate``) gives
  the requester's name, organisation, role, phone and how their identity was checked, searches and
  opens a child's page on their behalf: what is shown is what the requester's role may see; each read
  is one audit entry naming both people, found by `audit report --user` for the requester;
- refusals, each a page saying why, audited, reading nothing: a mediator's search without the
  requester (or a blank, over-long or impossible detail); a practitioner who is not a mediator
  posting requester details; a mediator of an organisation not accredited for mediation.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets

import pytest
from sqlalchemy import select

from gateway.db import audit_log
from tests.gateway.portal.conftest import INVITATION, Account, appoint_admin, enrol_in_process
from tests.support import child_update, unique, unique_name

TODAY = dt.date.today()
REQUESTER = {"behalf_name": "Jane Smith", "behalf_organisation": "Leeds Community Healthcare",
             "behalf_role": "health visitor", "behalf_phone": "0113 496 0100", "behalf_check": "callback_switchboard",
             "behalf_note": "called back on the trust's published switchboard number"}
REASON = {"reason_code": "safeguarding", "reason_text": "the health visitor's home visit tomorrow"}
HANDLE = re.compile(r'name="handle" value="([^"]+)"')


@pytest.fixture(scope="module")
def org(gateway):
    """An organisation accredited (by two officers) to query and to mediate."""
    code = f"MEDP{secrets.token_hex(3).upper()}"
    gateway.add_org(code, "local_authority", ["query", "mediate"])
    return code


@pytest.fixture(scope="module")
def admins(portal, gateway, org):
    """Two user administrators of the organisation, signed in: (the one who adds, the one who approves)."""
    sessions = []
    for n in (1, 2):
        account = Account(org, unique(f"admin{n}.").lower())
        enrol_in_process(gateway, account, appoint_admin(gateway, org, account.user))
        sessions.append(portal.sign_in(account)[0])
    return sessions


def _practitioner(portal, gateway, org, admins, role: str) -> Account:
    """An enrolled practitioner of ``org`` with ``role``, added by one administrator, approved by the other."""
    adder, approver = admins
    user = unique(role.replace(" ", "")[:6] + ".").lower()
    added = portal.post(adder, "/admin/practitioners/new", {
        "user": user, "name": f"Practitioner {user}", "role": role, "job_title": "Contact team",
        "clearance_number": "001234567890", "clearance_date": TODAY.isoformat(),
        "training_date": TODAY.isoformat(), "end_date": ""}, csrf_from="/admin/practitioners/new")
    assert added.status_code == 200, added.text
    listed = approver.get(f"{portal.url}/admin/practitioners", timeout=15).text
    proposal = re.search(rf"{org}:{re.escape(user)}\b.*?/admin/roles/(\d+)/approve", listed, re.S).group(1)
    approved = portal.post(approver, f"/admin/roles/{proposal}/approve", {}, csrf_from="/admin/practitioners")
    assert f"now has the role {role}" in approved.text, approved.text
    return enrol_in_process(gateway, Account(org, user), INVITATION.search(added.text).group(1))


@pytest.fixture(scope="module")
def mediator(portal, gateway, org, admins):
    account = _practitioner(portal, gateway, org, admins, "mediator")
    return account, portal.sign_in(account)[0]


@pytest.fixture(scope="module")
def visitor(portal, gateway, org, admins):
    """A practitioner of the same organisation who is not a mediator."""
    account = _practitioner(portal, gateway, org, admins, "health visitor")
    return account, portal.sign_in(account)[0]


@pytest.fixture(scope="module")
def child(clients):
    update = child_update(unique("med-"), unique_name("Mediated"), "Ola", "2016-04-15")
    [result] = clients("la").submit_updates([update])
    return result["ChildId"], update


def _criteria(update) -> dict:
    return {"family_name": update["Identity"]["FamilyName"], "date_of_birth": "2016-04-15"}


def _entries(gateway, request_id: str) -> list[dict]:
    with gateway.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(audit_log).where(audit_log.c.request_id == request_id)
                                              .order_by(audit_log.c.seq)).mappings()]


def test_a_mediator_searches_and_opens_a_child_on_behalf_of_a_requester_who_sees_what_their_role_may(
        portal, gateway, mediator, child):
    account, session = mediator
    child_id, update = child
    home = session.get(f"{portal.url}/", timeout=15).text
    assert 'id="behalf_name"' in home and "published switchboard" in home  # the requester's questions first
    found = portal.post(session, "/search", {**_criteria(update), **REQUESTER, **REASON}, csrf_from="/")
    assert found.status_code == 200 and "On behalf of Jane Smith (health visitor" in found.text, found.text
    handle = HANDLE.search(found.text).group(1)
    [searched] = _entries(gateway, found.headers["X-Request-Id"])
    assert searched["operation"] == "FindChild" and searched["outcome"] == "accepted"
    assert searched["user_id"] == account.user and child_id in searched["child_ids"]
    assert json.loads(searched["on_behalf_of"])["name"] == "Jane Smith"

    asked = portal.post(session, "/child/reason", {"handle": handle, **REQUESTER}, csrf_from="/")
    assert 'name="behalf_phone" value="0113 496 0100"' in asked.text  # carried to the child's page
    shown = portal.post(session, "/child", {"handle": handle, **REQUESTER, **REASON}, csrf_from="/")
    assert shown.status_code == 200, shown.text
    assert "Opened on behalf of Jane Smith (health visitor" in shown.text
    assert "Sam Worker" in shown.text  # who is involved: a health visitor may see it
    assert "0113 496 0002" not in shown.text and "sam.worker@la.example" not in shown.text  # their contact: not
    [viewed] = _entries(gateway, shown.headers["X-Request-Id"])
    assert viewed["operation"] == "GetContacts" and viewed["role"] == "mediator"
    assert "fields=address,carers,settings,practitioners,lead_professional" in viewed["detail"]
    behalf = json.loads(viewed["on_behalf_of"])
    assert behalf == {"name": "Jane Smith", "organisation": "Leeds Community Healthcare", "role": "health visitor",
                      "phone": "0113 496 0100", "identity_check": "callback_switchboard",
                      "identity_note": "called back on the trust's published switchboard number"}

    report = gateway.cli("audit", "report", "--user", "Leeds Community Healthcare:Jane Smith", "--format", "json",
                         officer="auditor-1").output
    assert {searched["seq"], viewed["seq"]} <= {json.loads(line)["seq"] for line in report.splitlines()}


@pytest.mark.parametrize("changes, said", [
    ({"behalf_name": ""}, "give the requester&#39;s name"),
    ({"behalf_note": "n" * 501}, "at most 500 characters"),
    ({"behalf_role": "mediator"}, "cannot be mediator"),
    ({"behalf_phone": "ring the office"}, "phone number must be digits"),
    ({"behalf_check": "they sounded fine"}, "must be one of"),
])
def test_a_mediators_search_without_a_complete_requester_is_refused_and_audited(
        portal, gateway, mediator, child, changes, said):
    _, session = mediator
    answer = portal.post(session, "/search", {**_criteria(child[1]), **REQUESTER, **changes, **REASON},
                         csrf_from="/")
    assert answer.status_code == 400 and said in answer.text, answer.text
    [entry] = _entries(gateway, answer.headers["X-Request-Id"])
    assert (entry["operation"], entry["outcome"], entry["fault_code"]) == ("FindChild", "refused", "SchemaInvalid")
    assert entry["child_ids"] == ""


def test_a_practitioner_who_is_not_a_mediator_cannot_search_on_behalf_of_another(portal, gateway, visitor, child):
    _, session = visitor
    assert 'id="behalf_name"' not in session.get(f"{portal.url}/", timeout=15).text
    answer = portal.post(session, "/search", {**_criteria(child[1]), **REQUESTER, **REASON}, csrf_from="/")
    assert answer.status_code == 403 and "needs the mediator role" in answer.text
    [entry] = _entries(gateway, answer.headers["X-Request-Id"])
    assert entry["operation"] == "portal.refused" and entry["on_behalf_of"] is None
    # without the requester's fields the same search is theirs, as any practitioner's
    own = portal.post(session, "/search", {**_criteria(child[1]), **REASON}, csrf_from="/")
    assert own.status_code == 200 and child[1]["Identity"]["FamilyName"] in own.text


def test_a_mediator_of_an_organisation_not_accredited_for_mediation_is_refused():
    from types import SimpleNamespace

    from gateway.portal import mediated

    mediator = SimpleNamespace(role="mediator", org_code="LA")
    assert "not accredited for mediation" in mediated.refusal(mediator, SimpleNamespace(scopes={"query"}), {})
    assert mediated.refusal(mediator, SimpleNamespace(scopes={"query", "mediate"}), {}) is None
    visitor = SimpleNamespace(role="health visitor", org_code="LA")
    assert mediated.refusal(visitor, SimpleNamespace(scopes={"query", "mediate"}), {}) is None
    assert "mediator role" in mediated.refusal(visitor, SimpleNamespace(scopes={"query"}), {"behalf_name": ""})


# ---- in the browser (one test: the module's chromium, conftest.py's) ----------------------------------


def test_in_the_browser_a_mediator_searches_on_behalf_of_a_caller_and_the_audit_shows_both(
        portal, gateway, mediator, child, chromium):
    account, session = mediator
    child_id, update = child
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 390, "height": 844})
    context.add_cookies([{"name": c.name, "value": c.value, "url": portal.url, "secure": True, "httpOnly": True,
                          "sameSite": "Strict"} for c in session.cookies if c.name == "contactgate_portal"])
    page = context.new_page()
    urls = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{portal.url}/")
    page.get_by_label("Their name").fill("Omar Caller")
    page.get_by_label("Their organisation").fill("Hillside Primary School")
    page.get_by_label("Their role").select_option("health visitor")
    page.get_by_label("Their phone number").fill("0113 496 0200")
    page.get_by_label("How you checked who they are").select_option("callback_switchboard")
    page.get_by_label("What you did to check").fill("called the school office's published number back")
    page.get_by_label("Family name").fill(update["Identity"]["FamilyName"])
    page.get_by_label("Date of birth").fill("2016-04-15")
    page.get_by_label("Reason").select_option("coordination")
    page.get_by_label("Why you need it").fill("the school's welfare meeting")
    page.get_by_role("button", name="Search").click()
    assert "On behalf of Omar Caller" in page.locator("main").inner_text()
    page.get_by_role("button", name=f"Open {update['Identity']['FamilyName']}").first.click()
    page.get_by_label("Reason").select_option("coordination")
    page.get_by_label("Why you need it").fill("who to invite to the welfare meeting")
    page.get_by_role("button", name="Show contacts").click()
    shown = page.locator("main").inner_text()
    context.close()
    assert "Opened on behalf of Omar Caller" in shown and "Sam Worker" in shown and "0113 496 0002" not in shown
    assert not any(child_id in u or "Omar" in u for u in urls)  # nothing about the child or caller in a URL
    report = gateway.cli("audit", "report", "--user", "hillside primary school:omar caller", "--format", "json",
                         officer="auditor-1").output
    read = [json.loads(line) for line in report.splitlines()]
    assert [(r["operation"], r["user_id"]) for r in read] == [("FindChild", account.user), ("GetContacts", account.user)]
    assert all(json.loads(r["on_behalf_of"])["phone"] == "0113 496 0200" for r in read)
