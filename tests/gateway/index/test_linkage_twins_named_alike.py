"""Twins named as variants of one name (Ben and Benjamin, Ella and Ellie) are never merged, however
their records are corrupted: the two twins the store path still merged on a twin-heavy training set
of the generator (bench/linkage.py --direct --people 3000 --seed 3331 --mix harsh --twin-rate 0.15),
as constructed pairs, each beside the duplicate it must not cost (both backends).

A pair is "found" when both records end on one child or the two children are an open pair in the
review queue (what a data-quality officer then sees).
"""

from __future__ import annotations

import pytest

from gateway.index.model import Address
from tests.gateway.index.test_linkage_miss_classes import linked, paired
from tests.gateway.index.test_matching_rules import at, orgs, push, update

HOME = Address(("7 Mill Race",), "EH41 9FL", "Haddington")
ELSEWHERE = Address(("22 Argyle Street",), "G3 5FN", "Glasgow")


@pytest.mark.xfail(strict=True, reason="a nickname with a second slip in one household still links. Holding it for review (tried: 9f58312) cost 0.7 points of recall on training seed 3331 and the twins it was for merged by another path (the other twin's record, exact name, family typo, year one off): withdrawn")
def test_a_twin_named_as_a_nickname_with_the_birth_year_and_family_name_slipped_is_not_linked(engine):
    """Benjamin is held (LA); the GP sends his twin Ben at the same address, the family name
    misspelt and the birth year one off: a nickname and a second slip in the household are twins
    named alike as often as one child twice corrupted. Not linked; a question for a person."""
    orgs(engine)
    boy = dict(family="Blackham", dob="2014-04-29", gender="male", address=HOME)
    [benjamin] = push(engine, "LA", update("la-1", **{**boy, "given": ("Benjamin",)}))
    [ben] = push(engine, "GP", update("gp-1", **{**boy, "given": ("Ben",), "family": "Blaskham",
                                                 "dob": "2015-04-29"}), now=at(1))
    assert not linked(engine, benjamin.child_id, ben.child_id)
    assert paired(engine, benjamin.child_id, ben.child_id)


@pytest.mark.xfail(strict=True, reason="a nickname with a second slip in one household still links. Holding it for review (tried: 9f58312) cost 0.7 points of recall on training seed 3331 and the twins it was for merged by another path (the other twin's record, exact name, family typo, year one off): withdrawn")
def test_a_nickname_in_the_household_with_only_the_birth_date_slipped_is_a_question(engine):
    """The same household, a nickname and a birth date one digit off (family name as held): the
    same question, not a link."""
    orgs(engine)
    girl = dict(family="Hartley", dob="2016-03-12", gender="female", address=HOME)
    [ellie] = push(engine, "LA", update("la-1", **{**girl, "given": ("Eleanor",)}))
    [ella] = push(engine, "GP", update("gp-1", **{**girl, "given": ("Ellie",), "dob": "2016-03-13"}), now=at(1))
    assert not linked(engine, ellie.child_id, ella.child_id)
    assert paired(engine, ellie.child_id, ella.child_id)


def test_a_nickname_with_the_same_birth_date_still_links(engine):
    """The control: a nickname alone (Benjamin / Ben, the rest as held) links as before."""
    orgs(engine)
    boy = dict(family="Blackham", dob="2014-04-29", gender="male", address=HOME)
    [benjamin] = push(engine, "LA", update("la-1", **{**boy, "given": ("Benjamin",)}))
    [ben] = push(engine, "GP", update("gp-1", **{**boy, "given": ("Ben",)}), now=at(1))
    assert linked(engine, benjamin.child_id, ben.child_id)


def test_a_nickname_and_a_slipped_birth_date_with_the_same_nhs_number_links(engine):
    """A shared NHS number is evidence of one child: the doubly corrupted record links."""
    from tests.support import nhs_number

    number = nhs_number(7)
    orgs(engine)
    boy = dict(family="Blackham", dob="2014-04-29", gender="male", address=HOME, nhs=number)
    [benjamin] = push(engine, "LA", update("la-1", **{**boy, "given": ("Benjamin",)}))
    [ben] = push(engine, "GP", update("gp-1", **{**boy, "given": ("Ben",), "dob": "2015-04-29"}), now=at(1))
    assert linked(engine, benjamin.child_id, ben.child_id)


def test_an_organisations_twin_sent_with_names_swapped_and_a_nickname_is_not_linked(engine):
    """The GP holds Ellie Fairwood; it sends her twin Ella Darcy Fairwood with given and family
    names swapped ('Fairwood Darcy' Ella) and another address: crosswise, Ella is a nickname of
    Ellie, but one organisation holding a record under another first name says two children
    (as it does without the swap: test_an_organisations_second_record_with_a_nickname_...)."""
    orgs(engine)
    girl = dict(dob="2023-11-05", gender="female")
    [ellie] = push(engine, "GP", update("gp-1", **{**girl, "family": "Fairwood", "given": ("Ellie",),
                                                   "address": HOME}))
    [ella] = push(engine, "GP", update("gp-2", **{**girl, "family": "Ella", "given": ("Fairwood", "Darcy"),
                                                  "address": ELSEWHERE}), now=at(1))
    assert not linked(engine, ellie.child_id, ella.child_id)


def test_an_organisations_own_duplicate_with_names_swapped_still_links(engine):
    """The control: the same organisation's second record of Ellie with given and family names
    swapped (the first name the same) is its own duplicate and links."""
    orgs(engine)
    girl = dict(dob="2023-11-05", gender="female", address=HOME)
    [ellie] = push(engine, "GP", update("gp-1", **{**girl, "family": "Fairwood", "given": ("Ellie",)}))
    [again] = push(engine, "GP", update("gp-2", **{**girl, "family": "Ellie", "given": ("Fairwood",)}), now=at(1))
    assert linked(engine, ellie.child_id, again.child_id)
