"""Review of the list of given names (gateway/index/linkage/names.py, ``Comparison.given_misspelt``):
ways a slip "that makes no name" could merge two different children, each first a strict expected
failure, kept since the fix. Store-path tests run on both backends (the ``engine`` fixture).
"""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.index import linkage
from gateway.index.linkage import names
from gateway.index.linkage.person import make_person
from gateway.index.model import normalise_name
from tests.gateway.index.test_linkage_miss_classes import HELD, linked, paired
from gateway.index import review
from tests.gateway.index.test_matching_rules import TRAIL, at, orgs, push, update


def _officer_links(engine, first, second):
    """The misspelt record was held for review as a question, and an officer links it."""
    assert paired(engine, first.child_id, second.child_id) and not linked(engine, first.child_id, second.child_id)
    with engine.begin() as conn:
        [entry] = review.list_entries(conn)
        review.link(conn, TRAIL, entry["id"], "dora", at(1))
    assert linked(engine, first.child_id, second.child_id)


def _child(given: str):
    return make_person(family_names=["Hartley"], given_names=[given], date_of_birth=dt.date(2014, 6, 17),
                       gender="female", postcode="LS62AB", address_line="14 larch grove")


# ---- HIGH: a misspelt record of one twin swallows the co-twin --------------------------------------

def test_a_twin_is_not_linked_through_a_misspelt_record_of_the_co_twin(engine):
    orgs(engine)
    [mila] = push(engine, "LA", update("la-1", **{**HELD, "given": ("Mila",)}))
    [misspelt] = push(engine, "GP", update("gp-1", **{**HELD, "given": ("Mla",)}), now=at(1))
    _officer_links(engine, mila, misspelt)  # Mla is a slip of Mia too: a question, and an officer says one child
    [mia] = push(engine, "SCH", update("sch-1", **{**HELD, "given": ("Mia",)}), now=at(2))
    assert not linked(engine, mila.child_id, mia.child_id)
    assert paired(engine, mila.child_id, mia.child_id)


def test_a_twin_with_another_name_is_not_linked_through_the_co_twins_misspelt_record(engine):
    orgs(engine)
    [millie] = push(engine, "LA", update("la-1", **{**HELD, "given": ("Millie",)}))
    [misspelt] = push(engine, "GP", update("gp-1", **{**HELD, "given": ("Mllie",)}), now=at(1))
    _officer_links(engine, millie, misspelt)  # Mllie is a slip of Ellie and Ollie too: a question
    [ellie] = push(engine, "SCH", update("sch-1", **{**HELD, "given": ("Ellie",)}), now=at(2))
    assert not linked(engine, millie.child_id, ellie.child_id)
    assert paired(engine, millie.child_id, ellie.child_id)


def test_a_misspelling_one_slip_from_two_names_is_not_taken_for_a_misspelling_of_either(engine):
    orgs(engine)
    [held] = push(engine, "LA", update("la-1", **{**HELD, "given": ("Mla",)}))
    [twin] = push(engine, "GP", update("gp-1", **{**HELD, "given": ("Mia",)}), now=at(1))
    assert not linked(engine, held.child_id, twin.child_id)
    assert paired(engine, held.child_id, twin.child_id)


def test_twins_are_not_merged_by_a_misspelt_record_of_one_arriving_between_them(engine):
    """(One organisation sending all three is sound: its own Ellie says "another name".)"""
    orgs(engine)
    [ellie] = push(engine, "LA", update("la-1", **{**HELD, "given": ("Ellie",)}))
    push(engine, "GP", update("gp-1", **{**HELD, "given": ("Mllie",)}), now=at(1))
    [millie] = push(engine, "SCH", update("sch-1", **{**HELD, "given": ("Millie",)}), now=at(2))
    assert not linked(engine, ellie.child_id, millie.child_id)


# ---- MEDIUM: UK names the lists miss -----------------------------------------------------------

def test_polish_twins_iga_and_ida_are_a_question(engine):
    orgs(engine)
    [ida] = push(engine, "LA", update("la-1", **{**HELD, "given": ("Ida",)}))
    [iga] = push(engine, "GP", update("gp-1", **{**HELD, "given": ("Iga",)}), now=at(1))
    assert not linked(engine, ida.child_id, iga.child_id)
    assert paired(engine, ida.child_id, iga.child_id)


def test_kurdish_twins_dilan_and_zilan_are_a_question(engine):
    orgs(engine)
    [dilan] = push(engine, "LA", update("la-1", **{**HELD, "given": ("Dilan",)}))
    [zilan] = push(engine, "LA", update("la-2", **{**HELD, "given": ("Zilan",)}), now=at(1))
    assert not linked(engine, dilan.child_id, zilan.child_id)
    assert paired(engine, dilan.child_id, zilan.child_id)


@pytest.mark.parametrize("name", ["Iga", "Jagoda", "Tymoteusz", "Ksawery", "Zilan", "Berfin", "Rojin", "Innes",
                                  "Gwenno", "Ecem"])
def test_given_names_in_use_in_the_uk_are_on_the_list(name):
    assert names.is_a_name(normalise_name(name))


# ---- LOW-MEDIUM: a sender's characters make a listed name look unlisted ------------------------

def test_a_twins_name_typed_with_a_lookalike_letter_is_not_a_misspelling(engine):
    orgs(engine)
    [tomas] = push(engine, "LA", update("la-1", **{**HELD, "given": ("Tomas",), "gender": "male"}))
    [tomos] = push(engine, "GP", update("gp-1", **{**HELD, "given": ("Tom\u043es",), "gender": "male"}), now=at(1))
    assert not linked(engine, tomas.child_id, tomos.child_id)
    assert paired(engine, tomas.child_id, tomos.child_id)


def test_a_comparison_with_a_mixed_script_name_is_not_a_misspelling():
    comparison = linkage.compare(_child("Tom\u043es"), _child("Tomas"))
    assert comparison.levels["given"] == "typo"
    assert comparison.given_misspelt is False
