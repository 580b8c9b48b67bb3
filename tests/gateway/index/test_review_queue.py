"""The review queue and merges (gateway.index.review), on both backends: link, distinct, merge,
unmerge; a merged id still answers; no sequence of actions loses an involvement."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select

from gateway.db import audit_log, blocking_keys, children, involvements, review_queue, source_records
from gateway.index import review, sealed, store
from gateway.index.model import Address
from tests.gateway.index.test_matching_rules import TRAIL, at, involvement, open_reviews, push, update
from tests.support import nhs_number

INDEX_TABLES = (children, source_records, involvements, blocking_keys, review_queue)


def dump(engine) -> dict:
    """Every row of the index's tables, as the database holds them."""
    with engine.connect() as conn:
        return {table.name: sorted((tuple(str(v) for v in row) for row in conn.execute(select(table))))
                for table in INDEX_TABLES}


def other(**kwargs):
    """Another child (a keying error gave it the first child's NHS number)."""
    return update("gp-1", family="Lindqvist", given=("Astrid",), dob="2011-11-30", gender="female",
                  nhs=nhs_number(9012345), address=Address(("4 Elm Close",), "M1 1AA"), **kwargs)


def held_pair(engine) -> tuple[str, str, int]:
    """A child, and a record meeting its NHS number with other demographics: stored and queued."""
    nhs = nhs_number(9012345)
    [first] = push(engine, "LA", update("la-1", nhs=nhs, involvements_=(involvement("Social care"),)))
    [held] = push(engine, "GP", other(involvements_=(involvement("Health visiting"),)), now=at(1))
    assert held.held_for_review
    [entry] = open_reviews(engine)
    return first.child_id, held.child_id, entry.id


def act(engine, fn, *args):
    with engine.begin() as conn:
        return fn(conn, TRAIL, *args, "dora", at(30))


def test_show_puts_the_pair_side_by_side_with_agreements_and_score(engine):
    first, held, entry = held_pair(engine)
    with engine.begin() as conn:
        shown = review.show(conn, TRAIL, entry, "dora")
    assert shown["stored_as"]["child_id"] == held and shown["candidate"]["child_id"] == first
    assert shown["stored_as"]["record"]["identity"]["family_name"] == "Lindqvist"
    assert shown["candidate"]["record"]["identity"]["family_name"] == "Okafor"
    assert {"family", "given", "dob"} <= set(shown["comparison"]["levels"])
    assert shown["comparison"]["levels"]["family"] == "disagree"
    assert 0 <= shown["score"] <= 1
    assert shown["candidate"]["provenance"]["shown"]["identity.family_name"]["org"] == "LA"


def test_link_merges_the_held_record_into_the_candidate_and_the_old_id_answers(engine):
    first, held, entry = held_pair(engine)
    act(engine, lambda conn, trail, officer, now: review.link(conn, trail, entry, officer, now))
    with engine.connect() as conn:
        view = store.get_child(conn, held, dt.date(2026, 3, 1))
        status = conn.execute(select(review_queue.c.status).where(review_queue.c.id == entry)).scalar_one()
    assert view.child_id == first, "a caller holding the old id gets the child, with the surviving id"
    assert sorted(c.involvement.service for c in view.contacts) == ["Health visiting", "Social care"]
    assert status == "linked"


def test_merge_then_unmerge_leaves_the_index_byte_for_byte_as_before(engine):
    first, held, _ = held_pair(engine)
    before = dump(engine)
    merge_id = act(engine, lambda conn, trail, officer, now: review.merge(conn, trail, first, held, officer, now))
    assert dump(engine) != before
    act(engine, lambda conn, trail, officer, now: review.unmerge(conn, trail, merge_id, officer, now))
    assert dump(engine) == before


def test_link_then_unmerge_reopens_the_entry_exactly(engine):
    first, held, entry = held_pair(engine)
    before = dump(engine)
    merge_id = act(engine, lambda conn, trail, officer, now: review.link(conn, trail, entry, officer, now))
    act(engine, lambda conn, trail, officer, now: review.unmerge(conn, trail, merge_id, officer, now))
    assert dump(engine) == before


def test_what_a_source_sends_after_a_merge_follows_it_back_on_unmerge(engine):
    first, held, _ = held_pair(engine)
    merge_id = act(engine, lambda conn, trail, officer, now: review.merge(conn, trail, first, held, officer, now))
    push(engine, "GP", other(involvements_=(involvement("School nursing"),)), now=at(40))
    act(engine, lambda conn, trail, officer, now: review.unmerge(conn, trail, merge_id, officer, now))
    with engine.connect() as conn:
        separated = store.get_child(conn, held, dt.date(2026, 3, 1))
        kept = store.get_child(conn, first, dt.date(2026, 3, 1))
    assert separated.child_id == held and [c.involvement.service for c in separated.contacts] == ["School nursing"]
    assert [c.involvement.service for c in kept.contacts] == ["Social care"]


def test_distinct_is_remembered_and_the_pair_is_not_queued_again(engine):
    first, held, entry = held_pair(engine)
    act(engine, lambda conn, trail, officer, now: review.distinct(conn, trail, entry, officer, now))
    [again] = push(engine, "GP", other(), now=at(50))
    assert (again.outcome, again.child_id) == ("updated", held)
    assert open_reviews(engine) == []
    with pytest.raises(review.ReviewError, match="different children"):
        act(engine, lambda conn, trail, officer, now: review.merge(conn, trail, first, held, officer, now))


def test_refusals_name_the_problem(engine):
    first, held, entry = held_pair(engine)
    with pytest.raises(review.ReviewError, match="no review entry"):
        act(engine, lambda conn, trail, officer, now: review.link(conn, trail, 999, officer, now))
    with pytest.raises(review.ReviewError, match="itself"):
        act(engine, lambda conn, trail, officer, now: review.merge(conn, trail, first, first, officer, now))
    merge_id = act(engine, lambda conn, trail, officer, now: review.link(conn, trail, entry, officer, now))
    with pytest.raises(review.ReviewError, match="already linked"):
        act(engine, lambda conn, trail, officer, now: review.distinct(conn, trail, entry, officer, now))
    with pytest.raises(review.ReviewError, match="merged into"):
        act(engine, lambda conn, trail, officer, now: review.merge(conn, trail, held, first, officer, now))
    act(engine, lambda conn, trail, officer, now: review.unmerge(conn, trail, merge_id, officer, now))
    with pytest.raises(review.ReviewError, match="already undone"):
        act(engine, lambda conn, trail, officer, now: review.unmerge(conn, trail, merge_id, officer, now))


def test_every_action_is_in_the_audit_chain(engine):
    first, held, entry = held_pair(engine)
    merge_id = act(engine, lambda conn, trail, officer, now: review.link(conn, trail, entry, officer, now))
    act(engine, lambda conn, trail, officer, now: review.unmerge(conn, trail, merge_id, officer, now))
    with engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.operation, audit_log.c.user_id, audit_log.c.child_ids)
                            .where(audit_log.c.operation.like("review.%")).order_by(audit_log.c.seq)).all()
    assert [(r.operation, r.user_id) for r in rows] == [("review.link", "dora"), ("review.unmerge", "dora")]
    assert all(first in r.child_ids and held in r.child_ids for r in rows)
    assert TRAIL.verify(engine).ok


def test_merging_a_shielded_child_keeps_it_shielded(engine):
    first, held, _ = held_pair(engine)
    with engine.begin() as conn:
        conn.execute(children.update().where(children.c.child_id == held).values(shielded=True))
    merge_id = act(engine, lambda conn, trail, officer, now: review.merge(conn, trail, first, held, officer, now))
    with engine.connect() as conn:
        assert store.get_child(conn, first, dt.date(2026, 3, 1)).shielded
    act(engine, lambda conn, trail, officer, now: review.unmerge(conn, trail, merge_id, officer, now))
    with engine.connect() as conn:
        assert not store.get_child(conn, first, dt.date(2026, 3, 1)).shielded
        assert store.get_child(conn, held, dt.date(2026, 3, 1)).shielded


# ---- no sequence of actions loses an involvement ----------------------------------------------------

ACTIONS = st.lists(st.tuples(st.sampled_from(["merge", "unmerge", "push"]), st.integers(0, 3), st.integers(0, 3)),
                   min_size=1, max_size=12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_no_sequence_of_merges_and_unmerges_loses_an_involvement(engine, actions):
    with engine.begin() as conn:  # each example starts from an empty index
        for table in (review_queue, blocking_keys, involvements, source_records):
            conn.execute(table.delete())
        conn.execute(children.update().values(merged_into=None))
        conn.execute(children.delete())
    ids = []
    for n in range(4):
        [created] = push(engine, "LA", update(f"la-{n}", family=f"Fam{'abcd'[n]}", nhs=nhs_number(5000 + n),
                                              involvements_=(involvement(f"Service {n}"),)))
        ids.append(created.child_id)
    merges = []
    for step, (kind, a, b) in enumerate(actions):
        try:
            if kind == "merge":
                merges.append(act(engine, lambda conn, trail, officer, now:
                                  review.merge(conn, trail, ids[a], ids[b], officer, now)))
            elif kind == "unmerge" and merges:
                act(engine, lambda conn, trail, officer, now:
                    review.unmerge(conn, trail, merges[a % len(merges)], officer, now))
            elif kind == "push":
                push(engine, "LA", update(f"la-{a}", family=f"Fam{'abcd'[a]}", nhs=nhs_number(5000 + a),
                                          involvements_=(involvement(f"Service {a}", start=f"2025-0{b + 1}-01"),)),
                     now=at(step + 1))
        except review.ReviewError:
            pass  # refused, and changed nothing
        with engine.connect() as conn:
            rows = conn.execute(select(involvements.c.source_record_id, involvements.c.child_id)).all()
            v = sealed.vault_of(conn)
            services = sorted(r.source_record_id for r in rows)
            assert services == sorted(sealed.blind_source_id(v, "LA", f"la-{n}") for n in range(4)), \
                "an involvement was lost or duplicated"
            for row in rows:  # each is on a live child, and every old id still answers
                assert store.resolve(conn, row.child_id) == row.child_id
            for child_id in ids:
                assert store.get_child(conn, child_id, dt.date(2026, 3, 1)) is not None
