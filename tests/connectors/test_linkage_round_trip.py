"""Linkage on the network path (zeep SDK, mutual TLS, real gunicorn; SQLite and PostgreSQL): fuzzy
FindChild with a Score, a record held for review is visible, a merged id still answers, and a
client built on the schema before Score existed still reads FindChild answers."""

from __future__ import annotations

import copy

import zeep
from lxml import etree
from sqlalchemy import select

from contactgate_wire.soap import CG
from gateway.db import review_queue
from tests.support import child_update, nhs_number, unique, unique_name

READ = dict(user_id="dr.jones", role="gp", reason_code="care_coordination", reason_text="linkage tests")
XS = "http://www.w3.org/2001/XMLSchema"


def test_find_child_tolerates_typos_nicknames_and_a_swapped_day_and_month(gateway, clients):
    family = unique_name("Smith")
    [created] = clients("la").submit_updates([child_update(unique("l-"), family, "John", "2016-03-04",
                                                           gender="male")])
    typo = family[:-2] + family[-1] + family[-2]  # the last two letters transposed
    for criteria in (dict(family_name=family, given_name="Jon", date_of_birth="2016-03-04"),
                     dict(family_name=typo, given_name="John", date_of_birth="2016-03-04"),
                     dict(family_name=family, given_name="Jack", date_of_birth="2016-03-04"),
                     dict(family_name=family, given_name="John", date_of_birth="2016-04-03")):
        # (a nickname AND a swapped date at once is below FindChild's floor on the match probability
        # at national scale: README "FindChild")
        found = clients("health").find_child(**criteria, **READ)
        assert [c["ChildId"] for c in found][:1] == [created["ChildId"]], criteria
        assert 0 < found[0]["Score"] <= 100


def test_find_child_ranks_the_closest_first_and_keeps_to_the_floor(gateway, clients):
    family = unique_name("Patel")
    la = clients("la")
    [ava] = la.submit_updates([child_update(unique("p-"), family, "Ava", "2015-06-01")])
    [isla] = la.submit_updates([child_update(unique("p-"), family, "Isla", "2015-06-01")])  # her twin
    found = clients("health").find_child(family_name=family, given_name="Ava", date_of_birth="2015-06-01", **READ)
    ids = [c["ChildId"] for c in found]
    assert ids[0] == ava["ChildId"]
    scores = [c["Score"] for c in found]
    assert scores == sorted(scores, reverse=True)
    assert all(score >= 40 for score in scores)
    assert isla["ChildId"] != ava["ChildId"]
    # Family name and birth date that match no one: nothing above the floor.
    assert clients("health").find_child(family_name=unique_name("Nobody"), date_of_birth="2001-01-01", **READ) == []


def test_a_record_held_for_review_is_visible_while_it_waits(gateway, clients):
    nhs = nhs_number(int(unique()[:7], 16))
    [first] = clients("la").submit_updates([child_update(unique("r-"), unique_name("Ng"), "Mai", "2014-02-02",
                                                         nhs=nhs)])
    held_update = child_update(unique("r-"), unique_name("Osei"), "Kofi", "2010-10-10", gender="male", nhs=nhs,
                               postcode="M1 1AA", town="Manchester")
    [held] = clients("la").submit_updates([held_update])
    # answered as a new child (issue 22, item 4), and held for review
    assert held["Outcome"] == "created" and held["ChildId"] not in (None, first["ChildId"])
    with gateway.engine.connect() as conn:
        assert conn.execute(select(review_queue.c.candidate_child_id).where(
            review_queue.c.child_id == held["ChildId"])).scalar_one() == first["ChildId"]
    child = clients("health").get_contacts(held["ChildId"], **READ)
    assert child["Identity"]["GivenName"] == ["Kofi"]
    assert [c["Involvement"]["Service"] for c in child["Contact"]] == ["Children's social care"]


def test_after_a_merge_the_old_id_answers_with_the_surviving_id(gateway, clients):
    la = clients("la")
    [a] = la.submit_updates([child_update(unique("m-"), unique_name("Reid"), "Amy", "2013-03-03")])
    [b] = la.submit_updates([child_update(unique("m-"), unique_name("Kerr"), "Bea", "2012-02-02")])
    result = gateway.cli("review", "merge", a["ChildId"], b["ChildId"], "--officer", "dora")
    assert "merged into" in result.output
    child = clients("health").get_contacts(b["ChildId"], **READ)
    assert child["ChildId"] == a["ChildId"]
    assert len(child["Contact"]) == 2
    merge_id = result.output.split()[1].rstrip(":")
    gateway.cli("review", "unmerge", merge_id, "--officer", "dora")
    assert clients("health").get_contacts(b["ChildId"], **READ)["ChildId"] == b["ChildId"]


def _schema_before_score(path) -> None:
    """The XSD as it was before Score (and IncludeScore) were added."""
    tree = etree.parse(str(path))
    for name in ("Score", "IncludeScore"):
        for element in tree.iter(f"{{{XS}}}element"):
            if element.get("name") == name:
                element.getparent().remove(element)
    tree.write(str(path))


def test_a_strict_client_built_on_the_schema_before_score_still_reads_find_child(gateway, clients, tmp_path):
    import shutil
    from contactgate_schemas import __path__ as schema_dir

    for name in ("contactgate.wsdl", "contactgate.xsd"):
        shutil.copy(f"{schema_dir[0]}/{name}", tmp_path / name)
    _schema_before_score(tmp_path / "contactgate.xsd")
    old = zeep.Client(str(tmp_path / "contactgate.wsdl"), settings=zeep.Settings(strict=True))
    family = unique_name("Hughes")
    clients("la").submit_updates([child_update(unique("c-"), family, "Zoe", "2017-07-07")])
    health = clients("health")
    data = health.build_request("FindChild", Requester={"UserId": "u", "Role": "gp"},
                                Reason={"_value_1": "compat", "code": "care_coordination"},
                                FamilyName=family, DateOfBirth="2017-07-07")
    status, envelope = health.post_raw("FindChild", data)
    assert status == 200
    response = envelope.find(f".//{{{CG}}}FindChildResponse")
    assert response.find(f".//{{{CG}}}Score") is None, "Score sent to a caller that did not ask for it"
    parsed = old.get_element(f"{{{CG}}}FindChildResponse").parse(copy.deepcopy(response), old.wsdl.types)
    assert parsed.Candidate[0].FamilyName == family
    # A caller that asks gets the score; the new schema reads it.
    asked = health.find_child(family_name=family, date_of_birth="2017-07-07", **READ)
    assert asked[0]["Score"] >= 40
