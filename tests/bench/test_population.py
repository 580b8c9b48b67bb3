"""The synthetic population of bench/population.py and the scoring of bench/linkage.py."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json

import pytest
from stdnum.gb import nhs as stdnum_nhs
from stdnum.gb import upn as stdnum_upn

from bench import linkage, population
from gateway.index.model import identity_from_json, nhs_number_is_valid

TODAY = dt.date(2026, 3, 1)
SEED = 11  # bench/linkage.py defaults to another seed


@pytest.fixture(scope="module")
def people():
    return population.generate(3000, SEED, "default", today=TODAY)


@pytest.fixture(scope="module")
def records(people):
    return population.views(people, 3, SEED, overlap=0.8, mix="default", today=TODAY)


def _fingerprint(people, records):
    return (people, {org: [(r.person_id, r.update, r.corruptions) for r in recs] for org, recs in records.items()})


def test_same_seed_gives_the_same_population_and_records(people, records):
    again = population.generate(3000, SEED, "default", today=TODAY)
    assert again == people
    assert _fingerprint(again, population.views(again, 3, SEED, overlap=0.8, mix="default", today=TODAY)) \
        == _fingerprint(people, records)


def test_another_seed_gives_another_population(people):
    other = population.generate(3000, SEED + 1, "default", today=TODAY)
    assert [p.family_name for p in other] != [p.family_name for p in people]


def test_people_are_children_in_families_with_consistent_truth(people):
    assert len(people) == 3000
    assert len({p.person_id for p in people}) == 3000
    oldest = TODAY - dt.timedelta(days=18 * 366)
    assert all(oldest <= p.date_of_birth <= TODAY for p in people)
    by_id = {p.person_id: p for p in people}
    families = collections.defaultdict(list)
    for p in people:
        families[p.family_id].append(p)
    assert any(len(members) >= 3 for members in families.values())
    for members in families.values():
        assert len({m.address for m in members}) == 1  # siblings share address and postcode
        assert len({m.carer_name for m in members}) == 1
        stems = {population.strip_diacritics(m.family_name).removesuffix("a").removesuffix("i") for m in members}
        assert len(stems) == 1, members  # one family name (Polish girls take the -ska form)
    for p in people:
        if p.twin_id:
            twin = by_id[p.twin_id]
            assert twin.twin_id == p.person_id
            assert (twin.family_id, twin.date_of_birth, twin.address) == (p.family_id, p.date_of_birth, p.address)
            assert twin.given_names[0] != p.given_names[0]


def test_twins_exist_at_about_the_published_rate(people):
    pairs = sum(1 for p in people if p.twin_id) // 2
    # 1.6 % of maternities; a family of n children has about n maternities.
    assert 0.3 * population.TWIN_RATE * len(people) <= pairs <= 3 * population.TWIN_RATE * len(people)


def test_identifiers_are_valid_unique_and_where_they_belong(people):
    nhs = [p.nhs_number for p in people if p.nhs_number]
    upn = [p.pupil_number for p in people if p.pupil_number]
    assert len(nhs) > 0.9 * len(people) and len(upn) > 0.5 * len(people)
    assert len(set(nhs)) == len(nhs) and len(set(upn)) == len(upn)
    assert all(stdnum_nhs.is_valid(n) and nhs_number_is_valid(n) for n in nhs)
    assert all(stdnum_upn.is_valid(u) for u in upn)
    assert all((TODAY - p.date_of_birth).days >= 4 * 365 for p in people if p.pupil_number)


def test_identifiers_stay_unique_across_pieces_of_one_large_population():
    first = population.generate(500, SEED, today=TODAY, first_id=0)
    second = population.generate(500, SEED, today=TODAY, first_id=500)
    nhs = [p.nhs_number for p in first + second if p.nhs_number]
    upn = [p.pupil_number for p in first + second if p.pupil_number]
    assert len(set(nhs)) == len(nhs) and len(set(upn)) == len(upn)
    assert not {p.person_id for p in first} & {p.person_id for p in second}


def test_records_point_at_real_people_and_carry_only_their_true_identifiers(people, records):
    by_id = {p.person_id: p for p in people}
    assert set(records) == {"LA", "HEALTH", "SCHOOL"}
    for org, recs in records.items():
        assert len({r.update.source_record_id for r in recs}) == len(recs)
        assert len({r.person_id for r in recs}) == len(recs)  # an organisation holds a child once
        for r in recs:
            truth = by_id[r.person_id]
            identity = r.update.identity
            assert identity.nhs_number in (None, truth.nhs_number)
            assert identity.pupil_number in (None, truth.pupil_number)
            assert identity.date_of_birth <= TODAY
            assert r.update.involvements
            if org == "SCHOOL":
                assert (TODAY - truth.date_of_birth).days >= 4 * 365
    held = len(records["LA"]) / len(people)
    assert 0.75 < held < 0.85  # overlap 0.8


def test_a_clean_mix_reproduces_the_truth():
    people = population.generate(300, SEED, "clean", today=TODAY)
    for recs in population.views(people, 2, SEED, mix="clean", today=TODAY).values():
        for r in recs:
            truth = next(p for p in people if p.person_id == r.person_id)
            identity = r.update.identity
            assert r.corruptions == ()
            assert (identity.family_name, identity.given_names, identity.date_of_birth, identity.gender) == \
                (truth.family_name, truth.given_names, truth.date_of_birth, truth.gender)
            assert r.update.address == truth.address


def test_corruptions_are_applied_at_about_the_configured_rate():
    rates = {k: 0.0 for k in population.MIXES["default"].rates}
    rates.update(typo_family=0.2, gender_unknown=0.3, swap_names=0.1, dob_year=0.15)
    mix = dataclasses.replace(population.MIXES["clean"], name="test", rates=rates)
    people = population.generate(2000, SEED, mix, today=TODAY)
    recs = [r for rs in population.views(people, 2, SEED, overlap=1.0, mix=mix, today=TODAY).values() for r in rs]
    by_id = {p.person_id: p for p in people}
    seen = collections.Counter(c for r in recs for c in r.corruptions)
    for name in ("typo_family", "gender_unknown", "swap_names", "dob_year"):
        assert abs(seen[name] / len(recs) - rates[name]) < 0.03, (name, seen[name] / len(recs))
    assert set(seen) == {"typo_family", "gender_unknown", "swap_names", "dob_year"}
    for r in recs:  # what a record says it carries is what it carries
        truth, identity = by_id[r.person_id], r.update.identity
        assert (identity.gender == "unknown") == ("gender_unknown" in r.corruptions)
        assert (abs(identity.date_of_birth.year - truth.date_of_birth.year) == 1) == ("dob_year" in r.corruptions)
        if "swap_names" in r.corruptions and "typo_family" not in r.corruptions:
            assert identity.given_names[0] == truth.family_name


def test_day_and_month_are_swapped_only_when_both_could_be_a_month():
    rates = {k: 0.0 for k in population.MIXES["default"].rates}
    rates["dob_swap_day_month"] = 1.0
    mix = dataclasses.replace(population.MIXES["clean"], name="swap", rates=rates)
    people = population.generate(500, SEED, mix, today=TODAY)
    by_id = {p.person_id: p for p in people}
    swapped = 0
    for r in population.views(people, 1, SEED, mix=mix, today=TODAY)["LA"]:
        truth, dob = by_id[r.person_id].date_of_birth, r.update.identity.date_of_birth
        if "dob_swap_day_month" in r.corruptions:
            swapped += 1
            assert (dob.day, dob.month) == (truth.month, truth.day) and truth.day <= 12
        else:
            assert dob == truth
    assert swapped > 0


def test_typos_are_one_edit_and_keep_the_first_letter():
    import random

    from rapidfuzz.distance import OSA

    rng = random.Random(5)
    for word in ("Williams", "Okonkwo", "Wiśniewski", "O'Brien", "Smith-Jones"):
        for _ in range(50):
            out = population.typo(rng, word)
            assert out[0] == word[0] and OSA.distance(word, out) == 1


def test_nicknames_go_both_ways():
    assert "Bill" in population.NICKNAMES["William"] and "Jack" in population.NICKNAMES["John"]
    assert "Alfred" in population._FORMAL_OF["Alfie"]


def test_write_jsonl_writes_the_stored_record_shape(tmp_path, records):
    path = tmp_path / "la.jsonl"
    n = population.write_jsonl(records["LA"][:20], path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert n == len(lines) == 20
    first = json.loads(lines[0])
    assert first == records["LA"][0].update.record()
    assert identity_from_json(first["identity"]) == records["LA"][0].update.identity
    population.write_jsonl(records["LA"][:5], tmp_path / "truth.jsonl", with_truth=True)
    labelled = json.loads((tmp_path / "truth.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert labelled["person_id"] == records["LA"][0].person_id


def test_wire_form_carries_every_field(records):
    update = next(r.update for r in records["HEALTH"] if r.update.address and r.update.identity.nhs_number)
    wire = linkage.wire_update(update)
    assert wire["SourceRecordId"] == update.source_record_id
    assert wire["Identity"]["NhsNumber"] == update.identity.nhs_number
    assert wire["Address"]["Postcode"] == update.address.postcode
    assert wire["GpPractice"]["Name"] == update.gp_practice.name
    assert wire["Involvement"][0]["Start"] == update.involvements[0].start.isoformat()


def _answer(org, srid, person, child, outcome="created"):
    return linkage.Answer(org, srid, person, (), outcome, child)


def test_evaluate_scores_links_against_the_truth():
    people = [population.Person(f"P{i}", f"F{i // 2}", "british_irish", ("A",), "X", TODAY, "male",
                                population._address(__import__("random").Random(i)),
                                twin_id=({0: "P1", 1: "P0"}.get(i))) for i in range(4)]
    run = linkage.PushRun(path="test", answers=[
        _answer("LA", "a0", "P0", "C0"), _answer("LA", "a1", "P1", "C1"), _answer("LA", "a2", "P2", "C2"),
        _answer("LA", "a3", "P3", "C3"),
        _answer("HEALTH", "h0", "P0", "C0", "matched"),   # true link
        _answer("HEALTH", "h1", "P1", "C0", "matched"),   # twin merged: false link with a0 (and h0 same org)
        _answer("HEALTH", "h2", "P2", "C9"),              # missed: duplicate
        _answer("HEALTH", "h3", "P3", None, "review"),    # missed: held for review
    ])
    result = linkage.evaluate(people, run)
    assert (result["true_pairs"], result["true_positives"], result["false_positives"]) == (4, 1, 1)
    assert result["precision"] == 0.5 and result["recall"] == 0.25
    assert result["twins_merged"] == 1 and result["false_links_by_relation"] == {"twins": 1}
    assert result["duplicated_children"] == 2  # P1 on C1 and C0, P2 on C2 and C9
    assert result["review"]["records"] == 1


def test_every_mix_rates_exactly_the_known_corruptions():
    for mix in population.MIXES.values():
        assert set(mix.rates) == set(population.CORRUPTIONS), mix.name
    with pytest.raises(ValueError):
        population.mix_named("no-such-mix")


def test_recorded_corruption_labels_are_all_known(records):
    known = set(population.CORRUPTIONS) | set(population.LIFE_EVENTS)
    assert {c for recs in records.values() for r in recs for c in r.corruptions} <= known
