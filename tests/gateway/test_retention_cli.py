"""Retention through the real gateway (gunicorn, mutual TLS, zeep clients) and the `contactgate
retention` commands, on both backends, while the gateway serves: an archived child answers GetContacts
exactly as an unknown id and is never found; a recorded death archives the child without telling the
pusher whether it was held; `retention show` and `retention run` (idempotent, counts, audited);
a purge leaves nothing of the child in the tables or the SQLite files, and the chain verifies.
The boundaries themselves: tests/gateway/index/test_retention.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from sqlalchemy import select, text, update

from gateway import audit
from gateway.config import HomeLayout
from gateway.db import audit_log, children, metadata
from gateway.index import ids, retention
from tests.gateway.pipeline.attacks import assert_post_refused, get_contacts_kwargs
from tests.gateway.pipeline.test_refusals import _fault_text
from tests.support import child_update, in_clear, nhs_number, unique, unique_name

READ = dict(user_id="hv-1", role="health_visitor", reason_code="safeguarding", reason_text="retention check")


def _trail(gateway) -> audit.AuditTrail:
    return audit.AuditTrail.from_file(HomeLayout(gateway.home).audit_key)


def _turning_18_tomorrow() -> tuple[dt.date, dt.date]:
    today = dt.datetime.now(dt.timezone.utc).date()
    dob = retention.add_years(today, -18) + dt.timedelta(days=1)
    birthday = retention.eighteenth_birthday(dob)
    assert birthday > today
    return dob, birthday


def _noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc)


def test_an_archived_child_is_answered_as_an_unknown_id_and_never_found(gateway, clients):
    la, health = clients("la"), clients("health")
    dob, birthday = _turning_18_tomorrow()
    family, given = unique_name("Archie"), unique_name("Giv")
    [created] = la.submit_updates([child_update(unique("ret-"), family, given, dob.isoformat())])
    child_id = created["ChildId"]
    assert health.get_contacts(child_id, **READ)["ChildId"] == child_id
    assert [c["ChildId"] for c in health.find_child(family_name=family, date_of_birth=dob, **READ)] == [child_id]

    counts = retention.run(gateway.engine, _trail(gateway), clock=lambda: _noon(birthday))
    assert child_id in counts.archived_ids

    answers = []
    for asked in (child_id, ids.new_child_id()):
        data = health.build_request("GetContacts", **get_contacts_kwargs(asked))
        answers.append(assert_post_refused(gateway, health, "GetContacts", data, "NotFound", org_code="HEALTH"))
    assert _fault_text(answers[0]) == _fault_text(answers[1])
    assert health.find_child(family_name=family, date_of_birth=dob, **READ) == []
    assert health.find_child(family_name=family, given_name=given, date_of_birth=dob, **READ) == []


def test_a_recorded_death_archives_the_child_and_the_answer_is_the_same_for_an_unknown_child(gateway, clients):
    la = clients("la")
    family, given, nhs = unique_name("Mort"), unique_name("Giv"), nhs_number(int(unique()[:7], 16))
    [created] = la.submit_updates([child_update(unique("ret-"), family, given, "2014-03-03", nhs=nhs)])
    seq = gateway.audit_seq()
    death = child_update(unique("ret-"), family, given, "2014-03-03", nhs=nhs)
    death["Identity"]["DateOfDeath"] = "2026-01-05"
    stranger = child_update(unique("ret-"), unique_name("Nobody"), unique_name("Giv"), "2014-03-03")
    stranger["Identity"]["DateOfDeath"] = "2026-01-05"
    known, unknown = la.submit_updates([death, stranger])
    for result in (known, unknown):
        assert (result["Outcome"], result["ChildId"], result["Detail"]) == ("rejected", None, retention.NOT_HELD)
    with gateway.engine.connect() as conn:
        row = conn.execute(select(children).where(children.c.child_id == created["ChildId"])).one()
    assert (row.archive_reason, row.archived_at is not None) == ("death", True)
    [entry] = gateway.audit_entries_after(seq)  # one exchange, one entry: it names the archived child
    assert entry["operation"] == "SubmitUpdates" and created["ChildId"] in entry["child_ids"].split()
    assert entry["detail"] == "archived=2 rejected=2"  # the stranger is held, archived, as a child of its own
    assert family.lower() not in json.dumps(entry, default=str).lower()


DISTINCT = {"family": "Vrindlebrook", "given": "Ysolde", "phone": "0113 496 7731",
            "email": "ysolde.carer@vrindle.example", "line": "9 Quillfeather Row", "postcode": "QZ7 3XW"}


def _distinct_update(dob: dt.date, nhs: str) -> dict:
    record = child_update(unique("ret-"), DISTINCT["family"], DISTINCT["given"], dob.isoformat(), nhs=nhs,
                          postcode=DISTINCT["postcode"])
    record["Address"]["Line1"] = DISTINCT["line"]
    record["Carer"] = [{"Name": "Pat Vrindlebrook", "Relationship": "mother", "Phone": DISTINCT["phone"],
                        "Email": DISTINCT["email"]}]
    return record


def _traces(blob: str, nhs: str) -> list[str]:
    """The child's values found in clear in ``blob``, in any case (`in_clear`: a short one spelled by
    chance inside sealed or blinded text, which is random base64url, does not count — across a whole
    test session's tables "Ysolde" once was)."""
    needles = [*DISTINCT.values(), DISTINCT["postcode"].replace(" ", ""), DISTINCT["phone"].replace(" ", ""), nhs]
    data = blob.encode("utf-8", "surrogateescape")
    return [n for n in needles if any(in_clear(form, data) for form in {n, n.lower(), n.upper(), n.title()})]


def test_retention_show_and_run_purge_the_child_everywhere_while_the_gateway_serves(gateway, clients):
    la, health = clients("la"), clients("health")
    dob, birthday = _turning_18_tomorrow()
    nhs = nhs_number(int(unique()[:7], 16))
    [created] = la.submit_updates([_distinct_update(dob, nhs)])
    child_id = created["ChildId"]
    assert health.get_contacts(child_id, **READ)["Identity"]["FamilyName"] == DISTINCT["family"]

    live = gateway.cli("retention", "show", child_id, "--officer", "dm-1")
    assert f"{child_id}: live" in live.output and DISTINCT["family"] not in live.output
    retention.run(gateway.engine, _trail(gateway), clock=lambda: _noon(birthday))
    shown = gateway.cli("retention", "show", child_id, "--officer", "dm-1")
    assert f"{child_id}: archived" in shown.output and DISTINCT["family"] in shown.output, shown.output
    as_json = json.loads(gateway.cli("retention", "show", child_id, "--officer", "dm-1", "--json").output)
    assert as_json["record"]["identity"]["nhs_number"] == nhs

    # Six years on: the purge day has come (the data's clock moved, not the gateway's).
    with gateway.engine.begin() as conn:
        conn.execute(update(children).where(children.c.child_id == child_id)
                     .values(purge_after=dt.datetime.now(dt.timezone.utc).date()))
    first = gateway.cli("retention", "run", "--json")
    assert json.loads(first.output)["purged"] == 1, first.output
    again = gateway.cli("retention", "run")
    assert again.output.strip() == "archived 0, purged 0"
    purged = gateway.cli("retention", "show", child_id, "--officer", "dm-1")
    assert f"{child_id}: purged" in purged.output and DISTINCT["family"] not in purged.output

    data = health.build_request("GetContacts", **get_contacts_kwargs(child_id))
    assert_post_refused(gateway, health, "GetContacts", data, "NotFound", org_code="HEALTH")
    verified = gateway.cli("audit", "verify")
    assert "audit chain intact" in verified.output

    with gateway.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = " ".join(" ".join(str(v) for v in r) for r in conn.execute(select(table)))
            assert not _traces(rows, nhs), table.name
        operations = conn.execute(select(audit_log.c.operation).where(audit_log.c.child_ids == child_id)).scalars()
        assert {"retention.archive", "retention.purge", "retention.show"} <= set(operations)
    assert as_json["archived_at"].startswith(birthday.isoformat())
    purged_json = json.loads(gateway.cli("retention", "show", child_id, "--officer", "dm-1", "--json").output)
    assert (purged_json["state"], purged_json["archived_at"]) == ("purged", birthday.isoformat())
    if gateway.backend == "sqlite":
        path = Path(gateway.engine.url.database)
        files = [p for p in (path, Path(f"{path}-wal")) if p.exists()]
        assert not _traces(b"".join(p.read_bytes() for p in files).decode("latin-1"), nhs)
    else:
        with gateway.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM children WHERE record LIKE :v"),
                                {"v": f"%{DISTINCT['family']}%"}).scalar_one() == 0


def test_retention_show_of_an_unknown_child_is_refused(gateway):
    result = gateway.cli("retention", "show", ids.new_child_id(), "--officer", "dm-1", expect_ok=False)
    assert result.exit_code == 2 and "no child" in result.output


# ---- a shielded child's archived record (review of issue 22, C) -----------------------------------

SHIELD_WHY = dict(user_id="sh.officer", role="social worker", reason_code="risk_of_harm",
                  reason_text="child at risk of significant harm: location to be withheld")


def _archived_shielded_child(gateway, clients) -> tuple[str, list[str]]:
    """A shielded child, archived (its record still in the viewing period): its id, and every
    location value it was pushed with, an involvement's phone and email included."""
    from tests.gateway.test_review_shielded_location import located_child

    pushed, needles = located_child(unique("ret-sh-"))
    tag = unique_name()
    pushed["Involvement"] = [{"Service": "Children's social care", "PractitionerName": "Sam Worker",
                              "Role": "social worker", "Phone": "0113 496 7783", "Email": f"{tag}@la.example",
                              "Start": "2024-01-10", "CafAssessment": True, "LeadProfessional": True}]
    needles += ["0113 496 7783", f"{tag}@la.example"]
    [made] = clients("la").submit_updates([pushed])
    clients("shielder").set_shielding(made["ChildId"], True, **SHIELD_WHY)
    with gateway.engine.begin() as conn:
        conn.execute(update(children).where(children.c.child_id == made["ChildId"]).values(
            archived_at=dt.datetime.now(dt.timezone.utc), archive_reason="age",
            purge_after=dt.date.today() + dt.timedelta(days=2000)))
    return made["ChildId"], needles



def _retention_reads(gateway, seq: int) -> list[dict]:
    return [e for e in gateway.audit_entries_after(seq) if e["operation"] == "retention.show"]


def test_retention_show_withholds_an_archived_shielded_childs_location_and_marks_the_read(gateway, clients):
    child_id, needles = _archived_shielded_child(gateway, clients)
    seq = gateway.audit_seq()
    table = gateway.cli("retention", "show", child_id, "--officer", "dm-1").output
    as_json = gateway.cli("retention", "show", child_id, "--officer", "dm-1", "--json").output
    assert [n for n in needles if n in table or n in as_json] == []
    state = json.loads(as_json)
    assert state["state"] == "archived" and state["location_withheld"] is True
    assert state["record"]["location"] == "withheld" and "address" not in state["record"]
    assert state["record"]["identity"]["family_name"] in table  # who the child is stays visible
    [involvement] = state["involvements"]
    assert "phone" not in involvement and "email" not in involvement and involvement["service"]
    assert "withheld" in table
    reads = _retention_reads(gateway, seq)
    assert len(reads) == 2 and all("shielded=yes location=withheld" in e["detail"] for e in reads), reads
    # The misuse review's `shielded` rule names the officer and the child.
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    findings = [json.loads(line) for line in gateway.cli("audit", "review", "--since", today, "--rule", "shielded",
                                                         "--json", officer="auditor-1").output.splitlines()]
    [finding] = [f for f in findings if f["subject"] == "officer dm-1" and child_id in f["summary"]]
    assert {e["seq"] for e in reads} <= set(finding["evidence"])


def test_retention_show_shows_the_location_to_an_officer_role_on_the_allow_list(gateway, clients, monkeypatch):
    child_id, needles = _archived_shielded_child(gateway, clients)
    monkeypatch.setenv("CONTACTGATE_REVIEW_SHIELD_ROLES", "data_quality")
    seq = gateway.audit_seq()
    as_json = gateway.cli("retention", "show", child_id, "--officer", "dm-1", "--json").output
    assert needles[0] in as_json and json.loads(as_json)["location_withheld"] is False
    [read] = _retention_reads(gateway, seq)
    assert "shielded=yes location=shown-to-role" in read["detail"], read
