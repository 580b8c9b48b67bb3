"""The console's review queue (data-quality officers) and audit pages (auditors): each decision goes
through the index's own review functions, every look at a child is audited, child ids never travel
in a URL, and the CSV report cannot smuggle a formula into a spreadsheet."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from sqlalchemy import select

from gateway.db import audit_children, audit_log, organisations, review_queue, value_conflicts
from gateway.index import store
from gateway.index.model import Address
from tests.gateway.index.test_matching_rules import at, update


PAIRS = {  # a child per test: (family name, the same misspelt, given name, birth date)
    "roles": ("Okafor", "Okafer", "Chidi", "2015-04-09"),
    "link": ("Lindqvist", "Lindqvest", "Astrid", "2014-02-11"),
    "distinct": ("Barraclough", "Barraclogh", "Wilf", "2013-07-23"),
    "merge": ("Nakamura", "Nakamure", "Hana", "2012-10-05"),
    "report": ("Fitzgerald", "Fitzgerold", "Orla", "2011-12-30"),
}


def queue_a_pair(gateway, srid: str) -> tuple[int, str, str]:
    """Two records of (perhaps) one child from LA: the second, a letter and a year off at another
    address, held for review."""
    family, typo, given, dob = PAIRS[srid]
    later = str(int(dob[:4]) + 1) + dob[4:]
    with gateway.engine.begin() as conn:
        [first] = store.apply_updates(conn, "LA", [update(f"{srid}-a", family, (given,), dob)], at(0))
        [held] = store.apply_updates(conn, "LA", [update(f"{srid}-b", typo, (given,), later,
                                                         address=Address(("7 Rowan Court",), "BS3 1QQ"))], at(1))
        entry = conn.execute(select(review_queue.c.id).where(review_queue.c.child_id == held.child_id)).scalar_one()
    assert held.held_for_review
    return entry, held.child_id, first.child_id


def audited_children(gateway, operation: str) -> set[str]:
    with gateway.engine.connect() as conn:
        return set(conn.execute(select(audit_children.c.child_id).join(
            audit_log, audit_log.c.seq == audit_children.c.seq).where(audit_log.c.operation == operation)).scalars())


def test_only_data_quality_officers_reach_the_queue(browser, registry_home):
    entry, _, _ = queue_a_pair(registry_home, "roles")
    for officer_id in ("alice", "auditor-1", "senior-s"):
        b = browser(officer_id)
        assert b.get("/review").status_code == 403
        assert b.get(f"/review/{entry}").status_code == 403
        assert b.post(f"/review/{entry}/link").status_code == 403
    assert "Review queue" not in browser("alice").get("/").get_data(as_text=True)


def test_a_pair_is_shown_side_by_side_audited_and_linked(browser, registry_home):
    entry, held, candidate = queue_a_pair(registry_home, "link")
    b = browser("dora")
    assert f"Review {entry}" in b.get("/review").get_data(as_text=True)
    page = b.get(f"/review/{entry}").get_data(as_text=True)
    assert "Lindqvest" in page and "Lindqvist" in page and "year_off_by_one" in page
    assert {held, candidate} <= audited_children(registry_home, "review.show")
    response = b.post(f"/review/{entry}/link")
    assert response.status_code == 302
    with registry_home.engine.connect() as conn:
        assert conn.execute(select(review_queue.c.status).where(review_queue.c.id == entry)).scalar_one() == "linked"
    assert "linked as one child" in b.get("/review").get_data(as_text=True)


def test_a_pair_recorded_as_distinct_and_a_merge_undone(browser, registry_home):
    entry, held, candidate = queue_a_pair(registry_home, "distinct")
    b = browser("dm-1")
    b.post(f"/review/{entry}/distinct")
    with registry_home.engine.connect() as conn:
        assert conn.execute(select(review_queue.c.status).where(review_queue.c.id == entry)).scalar_one() == "distinct"
    # A merge by child ids in the form body (never the URL), then undone.
    other, held2, candidate2 = queue_a_pair(registry_home, "merge")
    b.post("/review/merge", {"survivor": candidate2, "merged": held2})
    flashed = b.get("/review").get_data(as_text=True)
    merge_id = int(flashed.split("Merge ", 1)[1].split(" ", 1)[0])
    b.post("/review/unmerge", {"merge_id": str(merge_id)})
    assert f"Merge {merge_id} undone" in b.get("/review").get_data(as_text=True)
    b.post("/review/merge", {"survivor": candidate2, "merged": "C-NOT-A-CHILD"})
    assert "Not done" in b.get("/review").get_data(as_text=True)


def test_a_value_conflict_is_in_the_queue_shown_audited_and_settled(browser, registry_home):
    """Issue 23, item 8: a school's address against the local authority's, settled on the console."""
    with registry_home.engine.connect() as conn:
        known = conn.execute(select(organisations.c.code).where(organisations.c.code == "SCHOOL")).first()
    if known is None:
        registry_home.cli("org", "add", "SCHOOL", "--name", "A school", "--kind", "education")
    with registry_home.engine.begin() as conn:
        [first] = store.apply_updates(conn, "LA", [update("vc-la", "Oyelaran", ("Tobi",), "2014-08-19")], at(0))
        [again] = store.apply_updates(conn, "SCHOOL", [update("vc-sch", "Oyelaran", ("Tobi",), "2014-08-19",
                                                              address=Address(("3 Quarry Hill",), "LS2 7EW"))], at(1))
        conflict = conn.execute(select(value_conflicts.c.id).where(value_conflicts.c.org_code == "SCHOOL")).scalar_one()
    assert again.child_id == first.child_id and again.value_conflict
    b = browser("dora")
    assert f"Conflict {conflict}" in b.get("/review").get_data(as_text=True)
    page = b.get(f"/review/conflict/{conflict}").get_data(as_text=True)
    assert "3 Quarry Hill" in page and "12 Mill Lane" in page and "vc-sch" in page
    assert first.child_id in audited_children(registry_home, "review.conflict.show")
    assert b.post(f"/review/conflict/{conflict}/settle", {"keep": "submitted"}).status_code == 302
    with registry_home.engine.connect() as conn:
        assert conn.execute(select(value_conflicts.c.status).where(value_conflicts.c.id == conflict)).scalar_one() == "applied"
        view = store.get_child(conn, first.child_id, at(2).date())
    assert view.address.lines == ("3 Quarry Hill",)
    assert first.child_id in audited_children(registry_home, "review.settle")
    b.post(f"/review/conflict/{conflict}/settle", {"keep": "shown"})
    assert "is already applied" in b.get("/review").get_data(as_text=True)


def test_only_auditors_reach_the_audit_pages(browser):
    for officer_id in ("alice", "dora", "senior-t"):
        b = browser(officer_id)
        assert b.get("/audit").status_code == 403
        assert b.post("/audit/report", {"kind": "user", "subject": "LA:x"}).status_code == 403
        assert b.post("/audit/verify").status_code == 403


def test_a_childs_access_report_is_shown_downloaded_and_itself_audited(browser, registry_home):
    entry, held, _ = queue_a_pair(registry_home, "report")
    browser("dora").get(f"/review/{entry}")  # an access to report on
    b = browser("auditor-1")
    page = b.post("/audit/report", {"kind": "child", "subject": held.lower().replace("-", "")})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "review.show" in text and "dora" in text
    download = b.post("/audit/report.csv", {"kind": "child", "subject": held})
    assert download.mimetype == "text/csv" and "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert any(r["operation"] == "review.show" and r["user_id"] == "dora" for r in rows)
    assert held in audited_children(registry_home, "audit.report")
    assert held not in download.request.url and held not in page.request.url


def test_a_user_report_and_a_bad_subject(browser):
    b = browser("auditor-1")
    assert b.post("/audit/report", {"kind": "user", "subject": "no-colon"}).status_code == 400
    assert "ORG:USER" in b.post("/audit/report", {"kind": "user", "subject": "no-colon"}).get_data(as_text=True)
    assert b.post("/audit/report", {"kind": "user", "subject": "LA:nobody"}).status_code == 200


def test_a_formula_in_the_trail_is_not_a_formula_in_the_csv(browser, console, registry_home):
    from gateway import audit

    with registry_home.engine.begin() as conn:
        console.extensions["contactgate"]["trail"].append(
            conn, audit.Entry(operation="GetContacts", outcome="done", org_code="LA", user_id="evil",
                              reason_code="other", reason_text="=HYPERLINK(\"http://x\")"))
    rows = list(csv.reader(io.StringIO(browser("auditor-1").post(
        "/audit/report.csv", {"kind": "user", "subject": "LA:evil"}).get_data(as_text=True))))
    assert rows[1][9] == "'=HYPERLINK(\"http://x\")"


def test_the_chain_is_verified_on_request(browser):
    page = browser("auditor-1").post("/audit/verify").get_data(as_text=True)
    assert "Audit chain intact" in page


def test_the_audit_page_runs_the_misuse_review_and_shows_its_findings(browser, console, registry_home, clock):
    """`audit review` exists: the Audit page runs the same rules (from a day the auditor gives) and
    shows the findings with their review marks; the run is in the audit chain as the command's is."""
    from gateway import audit

    org = "LA"
    with registry_home.engine.begin() as conn:
        for _ in range(10):  # ten refusals of one organisation: the refusals rule's default threshold
            console.extensions["contactgate"]["trail"].append(conn, audit.Entry(
                operation="GetContacts", outcome="refused", org_code=org, user_id="probe", fault_code="ScopeDenied"),
                now=clock() - dt.timedelta(minutes=5))
    b = browser("auditor-1")
    page = b.get("/audit").get_data(as_text=True)
    assert "not built yet" not in page and "Run the misuse review" in page
    since = (clock() - dt.timedelta(days=1)).date().isoformat()
    shown = b.post("/audit/review", {"since": since})
    text = shown.get_data(as_text=True)
    assert shown.status_code == 200 and "refusals" in text and f"organisation {org}" in text and "NOT REVIEWED" in text
    with registry_home.engine.connect() as conn:
        assert conn.execute(select(audit_log.c.seq).where(audit_log.c.operation == "audit.review",
                                                          audit_log.c.user_id == "auditor-1")).first()
    assert b.post("/audit/review", {"since": "yesterday"}).status_code == 400
    assert browser("alice").post("/audit/review", {"since": since}).status_code == 403
