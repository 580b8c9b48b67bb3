"""The misuse review (issue 10, item 2): each rule fires on constructed traffic naming its evidence,
and stays quiet on normal traffic; thresholds come from the home's review.json; a finding is marked
reviewed with a note, in the chain. Entries are appended through the real chain, on both backends;
one case runs through the running gateway."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import insert, select

from gateway.audit import AuditTrail, Entry, new_key
from gateway.audit import review
from gateway.db import audit_log, children, involvements
from contactgate_local import LocalGateway
from tests.support import child_update, nhs_number, unique, unique_name

MONDAY = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)  # London is on UTC in November
SINCE, UNTIL = MONDAY, MONDAY + dt.timedelta(days=7)
WORKERS = ("sw.ash", "sw.birch", "sw.cedar", "sw.damson", "sw.elm")


def child(n: int) -> str:
    return f"C{n:03d}-0000-0000-0000"


class Traffic:
    """A week of an organisation's ordinary work, and whatever a test adds to it."""

    def __init__(self, engine):
        self.engine, self.trail = engine, AuditTrail(new_key())

    def add(self, at: dt.datetime, **fields) -> int:
        with self.engine.begin() as conn:
            return self.trail.append(conn, Entry(**{"outcome": "accepted", **fields}), now=at)

    def children(self, numbers, org="LA", shielded=()):
        with self.engine.begin() as conn:
            for n in numbers:
                conn.execute(insert(children).values(
                    child_id=child(n), shielded=n in shielded, record="{}", family_name_norm="",
                    date_of_birth=dt.date(2015, 1, 1), created_at=MONDAY, updated_at=MONDAY))
                conn.execute(insert(involvements).values(child_id=child(n), org_code=org, service="Social care",
                                                         start=dt.date(2025, 1, 1), caf_assessment=False,
                                                         lead_professional=False))

    def search_then_read(self, at, user, n, *, org="LA", role="social worker", reason=None):
        who = dict(org_code=org, user_id=user, role=role, reason_code="referral",
                   reason_text=reason or f"case {user} {n}")
        self.add(at, operation="FindChild", child_ids=[child(n)], detail="candidates=1", **who)
        return self.add(at + dt.timedelta(minutes=3), operation="GetContacts", child_ids=[child(n)],
                        detail="contacts=2 fields=identifiers", **who)

    def ordinary_week(self):
        """Five social workers, each finding and reading five children of their own caseload in office
        hours, with a reason each time; one officer proposes and another approves once."""
        self.children(range(100))
        for day in range(5):
            for i, user in enumerate(WORKERS):
                self.search_then_read(MONDAY + dt.timedelta(days=day, hours=9 + i), user, 20 * i + day)
        self.add(MONDAY + dt.timedelta(hours=11), operation="org.approve", outcome="done", user_id="bob",
                 role="officer", org_code="LA", detail="approved proposal 3 (accreditation) by alice: push")


def findings(engine, **thresholds):
    with engine.connect() as conn:
        return review.run(conn, SINCE, review.Thresholds(**thresholds), until=UNTIL)


def only(found, rule):
    return [f for f in found if f.rule == rule]


@pytest.fixture
def traffic(engine):
    t = Traffic(engine)
    t.ordinary_week()
    return t


def test_ordinary_work_gives_no_finding(traffic):
    assert findings(traffic.engine) == []


def test_volume_against_the_users_peers(traffic):
    evidence = [traffic.search_then_read(MONDAY + dt.timedelta(days=2, hours=10, minutes=m), "sw.ash", 5 + m % 15)
                for m in range(40)]
    [finding] = findings(traffic.engine)
    assert finding.rule == "volume" and finding.subject == "LA:sw.ash" and "peers" in finding.summary
    assert set(evidence) <= set(finding.evidence) and finding.count == 45


def test_volume_against_the_users_own_baseline(traffic):
    before = SINCE - dt.timedelta(days=7)
    for day in range(5):  # the week before: five reads a day... then sixty in one day
        traffic.add(before + dt.timedelta(days=day, hours=10), operation="GetContacts", org_code="LA",
                    user_id="sw.fir", role="night duty", child_ids=[child(day)], reason_text=f"duty {day}")
    for m in range(60):
        traffic.search_then_read(MONDAY + dt.timedelta(days=3, hours=10, minutes=m), "sw.fir", m % 90,
                                 role="night duty")
    [finding] = findings(traffic.engine)
    assert finding.subject == "LA:sw.fir" and "their own 5" in finding.summary


def test_reads_of_children_the_organisation_is_not_involved_with(traffic):
    traffic.children([500, 501, 502], org="HEALTH")
    for n in (500, 501, 502):
        traffic.search_then_read(MONDAY + dt.timedelta(hours=10, minutes=n - 490), "sw.elm", n)
    [finding] = findings(traffic.engine)
    assert finding.rule == "uninvolved" and finding.subject == "LA:sw.elm" and finding.count == 3


def test_fishing_searches_without_a_follow_up(traffic):
    for m in range(12):
        traffic.add(MONDAY + dt.timedelta(hours=14, minutes=m), operation="FindChild", org_code="LA",
                    user_id="sw.birch", role="social worker", child_ids=[child(60 + m)], detail="candidates=1")
    [finding] = findings(traffic.engine)
    assert finding.rule == "fishing" and finding.subject == "LA:sw.birch" and finding.count == 12


def test_reads_outside_working_hours_and_days(traffic):
    night = traffic.search_then_read(MONDAY + dt.timedelta(days=1, hours=23), "sw.cedar", 41)
    sunday = traffic.search_then_read(MONDAY + dt.timedelta(days=6, hours=12), "sw.cedar", 42)
    [finding] = findings(traffic.engine)
    assert finding.rule == "out_of_hours" and finding.evidence == [night, sunday]
    assert findings(traffic.engine, working_days="mon-sun", working_hours="00:00-23:59") == []


def test_every_access_to_a_shielded_child(traffic):
    traffic.children([700], shielded={700})
    seq = traffic.search_then_read(MONDAY + dt.timedelta(hours=12), "sw.damson", 700)
    [finding] = findings(traffic.engine)
    assert finding.rule == "shielded" and child(700) in finding.summary and seq in finding.evidence


def test_a_data_quality_officer_opening_a_review_entry_with_a_shielded_child(traffic):
    traffic.children([710, 711], shielded={711})
    seq = traffic.add(MONDAY + dt.timedelta(hours=12), operation="review.show", outcome="done", user_id="dora",
                      role="data_quality_officer", child_ids=[child(710), child(711)],
                      detail="review 4 shown shielded=yes location=withheld")
    [finding] = findings(traffic.engine)
    assert (finding.rule, finding.subject, finding.evidence) == ("shielded", "officer dora", [seq])
    assert child(711) in finding.summary


def test_a_data_manager_reading_an_archived_shielded_childs_record(traffic):
    """`retention show` of an archived shielded child is found, whether the child is still held
    (shielded now) or purged since (the entry's own mark)."""
    traffic.children([720], shielded={720})
    held = traffic.add(MONDAY + dt.timedelta(hours=12), operation="retention.show", outcome="done", user_id="dm-1",
                       role="data_manager", child_ids=[child(720)],
                       detail="state=archived shielded=yes location=withheld")
    purged = traffic.add(MONDAY + dt.timedelta(hours=13), operation="retention.show", outcome="done",
                         user_id="dm-1", role="data_manager", child_ids=[child(721)],
                         detail="state=archived shielded=yes location=shown-to-role")
    found = {f.summary: f for f in findings(traffic.engine)}
    assert {(f.rule, f.subject) for f in found.values()} == {("shielded", "officer dm-1")}
    assert [f.evidence for s, f in found.items() if child(720) in s] == [[held]]
    assert [f.evidence for s, f in found.items() if child(721) in s] == [[purged]]


def test_repeated_refusals_from_one_organisation_or_address(traffic):
    for m in range(10):
        traffic.add(MONDAY + dt.timedelta(hours=15, minutes=m), operation="GetContacts", outcome="refused",
                    org_code="SCHOOL", fault_code="NotAuthorised", user_id="probe")
        traffic.add(MONDAY + dt.timedelta(hours=15, minutes=m), operation="tls_handshake", outcome="refused",
                    fault_code="CertificateRejected", detail="TLS handshake from 203.0.113.9 refused: no certificate")
    subjects = {f.subject: f for f in only(findings(traffic.engine), "refusals")}
    assert set(subjects) == {"organisation SCHOOL", "address 203.0.113.9"}
    assert "NotAuthorised 10" in subjects["organisation SCHOOL"].summary


def test_one_reason_pasted_for_many_children(traffic):
    for n in range(10):
        traffic.search_then_read(MONDAY + dt.timedelta(days=4, hours=10, minutes=n), WORKERS[n % 2], 80 + n,
                                 reason="checking")
    [finding] = only(findings(traffic.engine), "reason_reuse")
    assert "'checking'" in finding.summary and finding.subject == "LA:sw.ash,sw.birch" and finding.count == 10


def test_an_officer_approving_many_proposals_of_one_proposer(traffic):
    for n in range(5):
        traffic.add(MONDAY + dt.timedelta(hours=12, minutes=n), operation="org.approve", outcome="done",
                    user_id="carol", role="officer", org_code=f"ORG{n}",
                    detail=f"approved proposal {10 + n} (accreditation) by dave: push until 2027-01-01")
    [finding] = findings(traffic.engine)
    assert finding.rule == "approvals" and finding.summary == "approved 5 proposals of dave"


def test_approvals_of_linkage_models_and_proxies_count_with_the_others(traffic):
    """Every approval of another officer's proposal counts: a linkage model decides whose records are
    one child, a proxy certificate speaks for every organisation."""
    for n in range(5):
        operation, kind = (("linkage.approve", "linkage_model"), ("proxy.approve", "proxy_issue"))[n % 2]
        traffic.add(MONDAY + dt.timedelta(hours=12, minutes=n), operation=operation, outcome="done",
                    user_id="carol", role="senior_officer",
                    detail=f"approved proposal {10 + n} ({kind}) by dave: use linkage model m{n} sha256=ab")
    [finding] = findings(traffic.engine)
    assert finding.rule == "approvals" and finding.summary == "approved 5 proposals of dave"


def test_pushes_of_identifiers_held_with_other_demographics_per_organisation(traffic):
    """SubmitUpdates entries record how many records met an NHS or pupil number the index holds for
    a child whose demographics disagree (identifier_conflict=N): 12 from one organisation in a week
    is a finding about it (with the counts and the period, no child); one keying error is not."""
    first = MONDAY + dt.timedelta(days=1, hours=10)
    evidence = [traffic.add(first + dt.timedelta(hours=h), operation="SubmitUpdates", org_code="PROBER",
                            child_ids=[child(900 + h)], detail="identifier_conflict=4 review=4")
                for h in range(3)]
    traffic.add(first, operation="SubmitUpdates", org_code="LA", child_ids=[child(1)],
                detail="created=20 identifier_conflict=1 review=1 updated=3")
    [finding] = findings(traffic.engine)
    assert (finding.rule, finding.subject, finding.evidence) == ("identifier_probing", "organisation PROBER", evidence)
    assert "12 pushed records" in finding.summary and "3 SubmitUpdates" in finding.summary
    assert "2026-11-03T10:00" in finding.summary and "2026-11-03T12:00" in finding.summary  # the period
    assert "C9" not in finding.summary  # never a child
    assert findings(traffic.engine, identifier_probing=13) == []
    assert {f.subject for f in only(findings(traffic.engine, identifier_probing=1), "identifier_probing")} == \
        {"organisation PROBER", "organisation LA"}


def test_a_finding_id_names_its_evidence(traffic):
    traffic.search_then_read(MONDAY + dt.timedelta(hours=22), "sw.ash", 1)
    [first] = findings(traffic.engine)
    assert [f.id for f in findings(traffic.engine)] == [first.id]  # the same evidence: the same finding
    traffic.search_then_read(MONDAY + dt.timedelta(hours=23), "sw.ash", 2)
    assert [f.id for f in findings(traffic.engine)] != [first.id]  # more evidence: to be reviewed again


@pytest.mark.parametrize("content, problem", [
    ('{"volume_factor": 0}', "volume_factor must be a positive"),
    ('{"no_such_rule": 3}', "unknown setting 'no_such_rule'"),
    ('{"working_hours": "9-5"}', "HH:MM-HH:MM"),
    ('{"timezone": "Mars/Olympus"}', "not a known time zone"),
    ('[1]', "JSON object"),
])
def test_a_bad_review_file_is_refused_naming_the_setting(tmp_path, content, problem):
    path = tmp_path / "review.json"
    path.write_text(content)
    with pytest.raises(review.ReviewConfigError, match=problem):
        review.Thresholds.load(path)


# ---- through the CLI and the running gateway ---------------------------------------------------

def test_audit_review_lists_marks_and_audits(gateway, clients):
    """HEALTH reads three children only LA works with, out of hours for the configured day; the
    auditor sees it, marks it reviewed with a note, and both are in the chain."""
    la, health = clients("la"), clients("health")
    user = unique("hv.")
    ids = []
    for _ in range(3):
        update = child_update(unique("rv-"), unique_name("Review"), unique_name("Kid"), "2016-06-06")
        [result] = la.submit_updates([update])
        ids.append(result["ChildId"])
        health.get_contacts(result["ChildId"], user_id=user, role="health visitor", reason_code="referral",
                            reason_text="routine check")
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    listed = [json.loads(line) for line in gateway.cli("audit", "review", "--since", today, "--rule", "uninvolved",
                                                       "--json", officer="auditor-1").output.splitlines()]
    [finding] = [f for f in listed if f["subject"] == f"HEALTH:{user}"]
    assert finding["count"] == 3 and finding["reviewed"] is None
    with gateway.engine.connect() as conn:
        reads = conn.execute(select(audit_log.c.seq).where(audit_log.c.user_id == user)).scalars().all()
    assert finding["evidence"] == sorted(reads)

    refused = gateway.cli("audit", "review", "--since", today, "--mark", finding["id"], "--note", "x",
                          officer="dora", expect_ok=False)
    assert refused.exit_code == 2 and "auditor" in refused.output
    marked = gateway.cli("audit", "review", "--since", today, "--rule", "uninvolved", "--mark", finding["id"],
                         "--note", "GP registration check: confirmed with the practice", officer="auditor-1")
    assert f"finding {finding['id']} marked reviewed" in marked.output
    table = gateway.cli("audit", "review", "--since", today, "--rule", "uninvolved", officer="auditor-1").output
    line = next(i for i, text in enumerate(table.splitlines()) if text.startswith(finding["id"]))
    assert "reviewed by auditor-1" in table.splitlines()[line + 1] and "GP registration" in table.splitlines()[line + 1]
    with gateway.engine.connect() as conn:
        ops = conn.execute(select(audit_log.c.operation, audit_log.c.user_id).where(
            audit_log.c.operation.in_(["audit.review", "audit.reviewed"]))).all()
    assert ("audit.reviewed", "auditor-1") in ops and ("audit.review", "auditor-1") in ops
    assert gateway.cli("audit", "review", "--since", today, "--mark", "0" * 16, "--note", "n",
                       officer="auditor-1", expect_ok=False).exit_code == 2


def test_audit_review_finds_a_push_only_organisation_probing_nhs_numbers(gateway, clients):
    """A push-only organisation sends ten NHS numbers LA holds, each with other demographics: every
    answer is `created`, and `audit review` names the organisation, with the count and the period."""
    code = unique_name("PRB").upper()
    gateway.add_org(code, "education", ["push"])
    prober = gateway.client(code.lower())
    numbers = []
    for _ in range(10):
        nhs = nhs_number(int(unique()[:8], 16))
        clients("la").submit_updates([child_update(unique("held-"), unique_name("Held"), unique_name("Kid"),
                                                   "2014-04-04", nhs=nhs)])
        numbers.append(nhs)
    answers = prober.submit_updates([child_update(unique("p-"), unique_name("Probe"), unique_name("Other"),
                                                  "2011-01-11", nhs=nhs, gender="male") for nhs in numbers])
    assert {a["Outcome"] for a in answers} == {"created"}
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    listed = [json.loads(line) for line in gateway.cli("audit", "review", "--since", today, "--rule",
                                                       "identifier_probing", "--json",
                                                       officer="auditor-1").output.splitlines()]
    [finding] = [f for f in listed if f["subject"] == f"organisation {code}"]
    assert finding["count"] == 1 and "10 pushed records" in finding["summary"]
    assert not any(a["ChildId"] in json.dumps(finding) for a in answers)
    assert not any(nhs in json.dumps(finding) for nhs in numbers)


def test_audit_review_takes_thresholds_from_the_home(tmp_path, database_url):
    gw = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gw.cli("init")
    (gw.home / "review.json").write_text('{"refusals": 0}')
    result = gw.cli("audit", "review", "--since", "2026-01-01", officer="auditor-1", expect_ok=False)
    assert result.exit_code == 2 and "refusals must be a positive int" in result.output
