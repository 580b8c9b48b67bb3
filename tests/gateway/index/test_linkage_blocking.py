"""Blocking keys: a true match with any single corrupted field still shares a key; keys are
bounded, stable and never a bare date of birth."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

from hypothesis import assume, given, settings, strategies as st

from gateway.index import linkage
from gateway.index.linkage.person import make_person
from gateway.index.model import FindQuery

DOB = dt.date(2016, 3, 4)
VALID_NHS = "9434765919"


def child(family="Smith", given=("Oliver", "James"), dob=DOB, gender="male", postcode="LS6 2AB",
          line="12 High Street", previous=(), preferred=None, nhs=None):
    return make_person(family_names=(family, *previous), given_names=given, preferred_name=preferred,
                       date_of_birth=dob, gender=gender, postcode=postcode, address_line=line, nhs_number=nhs)


SINGLE_CORRUPTIONS = {
    "family typo": dict(family="Smtih"),
    "family changed": dict(family="Taylor"),
    "family changed, previous kept": dict(family="Taylor", previous=("Smith",)),
    "hyphenated family": dict(family="Smith-Jones"),
    "given typo": dict(given=("Olvier",)),
    "given nickname": dict(given=("Ollie",)),
    "given replaced": dict(given=("Harry",)),
    "names swapped": dict(family="Oliver", given=("Smith",)),
    "day/month swapped": dict(dob=dt.date(2016, 4, 3)),
    "year off by one": dict(dob=dt.date(2015, 3, 4)),
    "day typo": dict(dob=dt.date(2016, 3, 14)),
    "month typo": dict(dob=dt.date(2016, 8, 4)),
    "moved": dict(postcode="M1 1AA", line="3 New Road"),
    "no address": dict(postcode=None, line=None),
    "gender unknown": dict(gender="unknown"),
}


def test_a_true_match_with_any_single_corrupted_field_shares_a_key():
    held = linkage.blocking_keys(child())
    for name, corruption in SINGLE_CORRUPTIONS.items():
        assert linkage.blocking_keys(child(**corruption)) & held, name


def test_preferred_and_previous_names_produce_keys():
    held = linkage.blocking_keys(child(given=("William",), preferred="Bill", family="Jones", previous=("Smith",),
                                       postcode=None, line=None))
    # found by the preferred name with another family name, and by the previous family name
    assert linkage.blocking_keys(child(given=("Bill",), family="Brown", postcode=None, line=None)) & held
    assert linkage.blocking_keys(child(given=("Harry",), family="Smith", postcode=None, line=None)) & held


def test_identifier_keys_only_for_valid_numbers():
    assert f"nhs:{VALID_NHS}" in linkage.blocking_keys(child(nhs=VALID_NHS))
    assert not any(k.startswith("nhs:") for k in linkage.blocking_keys(child(nhs="9434765918")))


def test_no_key_is_a_bare_date_or_year():
    for key in linkage.blocking_keys(child()):
        rule, *parts = key.split(":")
        assert len(parts) >= 2, key
        assert rule in {"fd", "gd", "ny", "nm", "fgy", "fim", "gim", "di", "py", "fp", "ap", "an", "pd", "nhs", "upn"}


def test_keys_are_stable_across_processes():
    script = ("import datetime as dt; from gateway.index.linkage.person import make_person;"
              "from gateway.index.linkage import blocking_keys;"
              "p = make_person(family_names=('Smith',), given_names=('Oliver',), date_of_birth=dt.date(2016,3,4),"
              " postcode='LS6 2AB', address_line='12 High Street');"
              "print(sorted(blocking_keys(p)))")
    runs = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    assert len(runs) == 1


def test_query_keys_find_a_child_despite_typos():
    held = linkage.blocking_keys(child())
    for query in [
        FindQuery(family_name="Smith", date_of_birth=DOB),
        FindQuery(family_name="Smyth", date_of_birth=DOB),
        FindQuery(family_name="smith", date_of_birth=dt.date(2016, 4, 3)),
        FindQuery(family_name="Smith", given_name="Oliver", date_of_birth=dt.date(2015, 3, 4)),
        FindQuery(family_name="Smtih", given_name="Ollie", date_of_birth=DOB),
    ]:
        assert linkage.query_keys(query) & held, query
    assert linkage.query_keys(FindQuery(nhs_number=VALID_NHS)) == {f"nhs:{VALID_NHS}"}


def test_query_keys_need_a_family_name_and_birth_date_or_an_identifier():
    assert linkage.query_keys(FindQuery(family_name="Smith")) == set()
    assert linkage.query_keys(FindQuery(given_name="Oliver", date_of_birth=DOB)) == set()
    assert linkage.query_keys(FindQuery(postcode="LS6 2AB", date_of_birth=DOB)) == set()


def test_query_keys_are_blocking_key_rules():
    query = FindQuery(family_name="Smith", given_name="Oliver", date_of_birth=DOB, postcode="LS6 2AB")
    rules = {k.split(":")[0] for k in linkage.query_keys(query)}
    assert rules <= {"fd", "gd", "ny", "nm", "fgy", "fim", "gim", "di", "fp", "an", "pd", "nhs", "upn"}


names = st.text(alphabet=st.characters(categories=("L", "M", "Zs", "Pd", "Po")), max_size=120)


@settings(max_examples=200, deadline=None)
@given(family=names, first=names, dob=st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2030, 12, 31)),
       postcode=st.text(max_size=20))
def test_keys_are_bounded_and_deterministic_for_any_input(family, first, dob, postcode):
    p = child(family=family, given=(first,), dob=dob, postcode=postcode, line=first)
    keys = linkage.blocking_keys(p)
    assert keys == linkage.blocking_keys(p)
    assert all(len(k) <= 80 for k in keys)


@settings(max_examples=200, deadline=None)
@given(family=st.sampled_from(["Smith", "O'Brien", "Nowak", "Okafor", "Smith-Jones", "Zoë"]),
       first=st.sampled_from(["Oliver", "Amelia", "William", "Muhammad", "Isla"]),
       dob=st.dates(min_value=dt.date(2005, 1, 1), max_value=dt.date(2025, 12, 31)),
       field=st.sampled_from(sorted(SINGLE_CORRUPTIONS)))
def test_property_single_corruption_survives_blocking(family, first, dob, field):
    held = child(family=family, given=(first,), dob=dob)
    corruption = dict(SINGLE_CORRUPTIONS[field])
    corruption.setdefault("family", family)
    corruption.setdefault("given", (first,))
    corruption.setdefault("dob", dob)
    if field == "names swapped":
        corruption.update(family=first, given=(family,))
    if field == "day/month swapped":
        assume(dob.day <= 12)
        corruption["dob"] = dob.replace(day=dob.month, month=dob.day)
    elif field == "year off by one":
        assume(not (dob.month == 2 and dob.day == 29))
        corruption["dob"] = dob.replace(year=dob.year - 1)
    elif field == "day typo":
        corruption["dob"] = dob.replace(day=dob.day % 28 + 1)
    elif field == "month typo":
        assume(dob.day <= 28)
        corruption["dob"] = dob.replace(month=dob.month % 12 + 1)
    assert linkage.blocking_keys(child(**corruption)) & linkage.blocking_keys(held), field
