"""The review queue and a shielded child (issue 22, item 3), through the running gateway (SOAP over
mutual TLS) and the CLI, on both backends.

A push-only organisation that knows a shielded child's NHS number puts the child in the review
queue by sending the number with other demographics. `contactgate review show` (the table and
--json) then withholds the location of BOTH children of the pair (the record held for review may be
the same child, at the same address) unless the officer holds a role listed in
CONTACTGATE_REVIEW_SHIELD_ROLES (none by default), and the audit marks the read as shielded, as
GetContacts does. The console's page: tests/gateway/console/test_console_review_shielded.py.
"""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from gateway.db import review_queue
from tests.support import child_update, nhs_number, unique, unique_name

WHY = dict(user_id="sh.officer", role="social worker", reason_code="risk_of_harm",
           reason_text="child at risk of significant harm: location to be withheld")


@pytest.fixture(scope="module")
def pusher(gateway):
    """A push-only organisation of this module's own (the kind the finding names)."""
    code = unique_name("PSH").upper()
    gateway.add_org(code, "education", ["push"])
    return gateway.client(code.lower())


def located_child(srid: str, nhs: str | None = None) -> tuple[dict, list[str]]:
    """A ChildUpdate whose every location value is this child's own, and those values: an address,
    a school, a GP practice and a carer's contact details no other record holds."""
    family, given = unique_name("Shield"), unique_name("Kid")
    update = child_update(srid, family, given, "2015-05-15", nhs=nhs)
    tag = unique_name()
    update["Address"] = {"Line1": f"7 {tag.title()} Close", "Town": f"{tag.title()}ford", "Postcode": "LS6 2QX"}
    update["EducationalSetting"] = {"Name": f"{tag.title()} Primary", "Code": f"URN{int(unique(), 16) % 10**6:06d}"}
    update["GpPractice"] = {"Name": f"{tag.title()} Surgery", "Code": "B86999", "Phone": "0113 496 7781"}
    update["Carer"] = [{"Name": "Pat Parent", "Relationship": "mother", "Phone": "0113 496 7782",
                        "Email": f"{tag}@home.example",
                        "Address": {"Line1": f"9 {tag.title()} Mews", "Postcode": "LS6 2QY"}}]
    needles = [update["Address"]["Line1"], update["Address"]["Town"], update["EducationalSetting"]["Name"],
               update["EducationalSetting"]["Code"], update["GpPractice"]["Name"], "0113 496 7781",
               "0113 496 7782", f"{tag}@home.example", f"9 {tag.title()} Mews", "LS6 2QX", "LS62QX", "LS6 2QY"]
    return update, needles


def queued_by_a_probe(gateway, clients, pusher, *, shield: str) -> tuple[int, list[str]]:
    """LA holds a child with an NHS number; the push-only organisation sends that number with other
    demographics (and an address of its own); ``shield``: "held" shields the child LA holds (the
    candidate), "probe" the record the probe stored (the record held for review). Returns the
    review entry and every location value of both records."""
    nhs = nhs_number(int(unique()[:7], 16))
    held, held_needles = located_child(unique("held-"), nhs)
    [known] = clients("la").submit_updates([held])
    probe, probe_needles = located_child(unique("probe-"), nhs)
    probe["Identity"]["DateOfBirth"] = "2012-01-21"
    probe["Identity"]["Gender"] = "male"
    [answer] = pusher.submit_updates([probe])
    assert answer["ChildId"] != known["ChildId"]
    shielded = known["ChildId"] if shield == "held" else answer["ChildId"]
    clients("shielder").set_shielding(shielded, True, **WHY)
    with gateway.engine.connect() as conn:
        entry = conn.execute(select(review_queue.c.id).where(
            review_queue.c.child_id == answer["ChildId"], review_queue.c.candidate_child_id == known["ChildId"],
            review_queue.c.status == "open")).scalar_one()
    return entry, held_needles + probe_needles


def review_show_entries(gateway, seq: int) -> list[dict]:
    return [e for e in gateway.audit_entries_after(seq) if e["operation"] == "review.show"]


@pytest.mark.parametrize("shield", ["held", "probe"])
def test_review_show_withholds_the_location_of_a_pair_with_a_shielded_child(gateway, clients, pusher, shield):
    entry, needles = queued_by_a_probe(gateway, clients, pusher, shield=shield)
    seq = gateway.audit_seq()
    as_json = gateway.cli("review", "show", str(entry), "--json", officer="dora").output
    table = gateway.cli("review", "show", str(entry), officer="dora").output
    shown = json.loads(as_json)
    assert [n for n in needles if n in as_json or n in table] == []
    assert shown["location_withheld"] is True and "withheld" in table
    for side in ("stored_as", "candidate"):  # absent, not emptied: nothing of the location is sent
        assert "address" not in shown[side]["record"] and "gp_practice" not in shown[side]["record"]
        assert all("address" not in s["record"] for s in shown[side]["provenance"]["sources"])
    # Both reads are marked, as GetContacts marks a read of a shielded child.
    reads = review_show_entries(gateway, seq)
    assert len(reads) == 2 and all("shielded=yes location=withheld" in e["detail"] for e in reads), reads


def test_review_show_shows_the_location_to_an_officer_role_on_the_allow_list(gateway, clients, pusher,
                                                                           monkeypatch):
    entry, needles = queued_by_a_probe(gateway, clients, pusher, shield="held")
    monkeypatch.setenv("CONTACTGATE_REVIEW_SHIELD_ROLES", "data_quality")
    seq = gateway.audit_seq()
    output = gateway.cli("review", "show", str(entry), "--json", officer="dora").output
    assert needles[0] in output  # the address of the child LA holds
    [read] = review_show_entries(gateway, seq)
    assert "shielded=yes location=shown-to-role" in read["detail"], read


def queued_without_a_shielded_child(gateway, clients, pusher) -> tuple[int, list[str]]:
    """A review entry for a pair neither of whose children is shielded (a probe with LA's child's
    number and another birth date), and the located values of LA's child."""
    nhs = nhs_number(int(unique()[:7], 16))
    held, needles = located_child(unique("held-"), nhs)
    [known] = clients("la").submit_updates([held])
    probe, _ = located_child(unique("probe-"), nhs)
    probe["Identity"]["DateOfBirth"] = "2012-01-21"
    [answer] = pusher.submit_updates([probe])
    with gateway.engine.connect() as conn:
        entry = conn.execute(select(review_queue.c.id).where(
            review_queue.c.child_id == answer["ChildId"], review_queue.c.candidate_child_id == known["ChildId"])
        ).scalar_one()
    return entry, needles


def test_review_show_of_a_pair_without_a_shielded_child_shows_the_location_unmarked(gateway, clients, pusher):
    entry, needles = queued_without_a_shielded_child(gateway, clients, pusher)
    seq = gateway.audit_seq()
    output = gateway.cli("review", "show", str(entry), "--json", officer="dora").output
    assert needles[0] in output
    [read] = review_show_entries(gateway, seq)
    assert "shielded" not in read["detail"], read


NUMBER = re.compile(r"\d\.\d")  # a score, a probability or a weight as any view writes it


@pytest.mark.parametrize("shield", ["held", "probe"])
def test_a_withheld_pair_shows_agreement_levels_only(gateway, clients, pusher, shield):
    """The total weight (or the probability, or the score when queued) less the weights shown is the
    location's weight; and with matching addresses the other fields are weighed as a household's.
    So for a withheld pair: each field's agreement level, and no number at all."""
    entry, _ = queued_by_a_probe(gateway, clients, pusher, shield=shield)
    shown = json.loads(gateway.cli("review", "show", str(entry), "--json", officer="dora").output)
    assert shown["score"] is None and shown["location_withheld"] is True
    for name in ("comparison", "comparison_now"):
        comparison = shown[name]
        assert comparison["levels"] and "location" not in comparison["levels"], comparison
        assert not {"weights", "weight", "probability"} & set(comparison), comparison
    table = gateway.cli("review", "show", str(entry), officer="dora").output
    unnumbered = table.replace(shown["created_at"], "").replace(shown["model_version"], "")
    assert "score withheld" in table and not NUMBER.search(unnumbered), table
    levels = shown["comparison_now"]["levels"]  # the levels stay, each without its weight
    assert "agreement: " + ", ".join(f"{f}={levels[f]}" for f in sorted(levels)) + "\n" in table, table
    listed = [json.loads(line) for line in gateway.cli("review", "list", "--status", "all", "--limit", "10000",
                                                       "--json", officer="dora").output.splitlines()]
    [queued] = [e for e in listed if e["id"] == entry]
    assert queued["score"] is None and queued["location_withheld"] is True
    line = next(x for x in gateway.cli("review", "list", "--status", "all", "--limit", "10000",
                                       officer="dora").output.splitlines() if x.startswith(f"#{entry} "))
    assert "score=withheld" in line and not NUMBER.search(line.replace(queued["created_at"], "")), line


def test_a_pair_without_a_shielded_child_keeps_its_weights_and_score(gateway, clients, pusher):
    entry, _ = queued_without_a_shielded_child(gateway, clients, pusher)
    shown = json.loads(gateway.cli("review", "show", str(entry), "--json", officer="dora").output)
    assert isinstance(shown["score"], float) and "location" in shown["comparison_now"]["levels"]
    assert {"weights", "weight", "probability"} <= set(shown["comparison_now"])


@pytest.mark.parametrize("shield", ["held", "probe"])
def test_a_shielded_pair_names_no_organisation_or_source_record_in_review_show_or_list(
        gateway, clients, pusher, shield):
    """Which organisation holds a shielded child (a school's, a GP's code) places the child, whatever
    the field it supplied: `review show` (table and JSON) and `review list` name none of the pair's
    organisations nor their source record ids, unless the officer's role is allowed (as conflicts)."""
    entry, _ = queued_by_a_probe(gateway, clients, pusher, shield=shield)
    outputs = [gateway.cli("review", "show", str(entry), "--json", officer="dora").output,
               gateway.cli("review", "show", str(entry), officer="dora").output,
               "\n".join(line for line in gateway.cli("review", "list", "--json", "--limit", "10000",
                                                      officer="dora").output.splitlines()
                         if f'"id": {entry},' in line)]
    assert outputs[2], "the entry is listed"
    with gateway.engine.connect() as conn:
        probe_org = conn.execute(select(review_queue.c.org_code).where(review_queue.c.id == entry)).scalar_one()
    shown = json.loads(outputs[0])
    srids = {s["source_record_id"] for side in ("stored_as", "candidate")
             for s in shown[side]["provenance"]["sources"] if s.get("source_record_id") != "withheld"}
    assert srids == set(), srids
    for output in outputs:
        assert probe_org not in output and '"LA"' not in output and "LA:" not in output, output[:400]
