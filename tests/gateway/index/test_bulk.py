"""``apply_updates(..., bulk=True)`` (`contactgate load`, gateway.index.bulk) decides and stores exactly
what ``apply_updates`` does for SubmitUpdates: the same outcomes and the same index (children, their
shown records and provenance, source records, keys, involvements, review pairs, archiving), compared
on the same index in the same database, each way in a transaction rolled back, on both backends.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from gateway.index import batches
from tests.gateway.index.test_batch_apply import NOW, PEOPLE, _involvement_ranks, record, seed, state, submitted


def bulk_and_online(engine, org_code: str, updates: list, now=NOW) -> dict:
    """Apply ``updates`` both ways on the same index (each rolled back); assert the same results and
    index; the index as the bulk way left it."""
    found = []
    for bulk in (False, True):
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                results = batches.apply_updates(conn, org_code, list(updates), now, bulk=bulk)
                found.append(_involvement_ranks(state(conn, results)))
            finally:
                transaction.rollback()
    online, bulk = found
    for part in online:
        assert bulk[part] == online[part], part
    return bulk


def _seeded(engine) -> None:
    seed(engine, [
        ("GP", [record("g-1", *PEOPLE[0][:2], PEOPLE[0][2], gender=PEOPLE[0][3], nhs=PEOPLE[0][6]),
                record("g-2", *PEOPLE[4][:2], PEOPLE[4][2], gender=PEOPLE[4][3], line=PEOPLE[4][4])]),
        ("LA", [record("held-1", *PEOPLE[3][:2], PEOPLE[3][2], gender=PEOPLE[3][3], line=PEOPLE[3][4],
                       postcode=PEOPLE[3][5]),
                record("held-2", *PEOPLE[1][:2], PEOPLE[1][2], gender=PEOPLE[1][3])]),
    ])


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=submitted())
def test_a_bulk_batch_does_what_a_push_of_it_does(engine, batch):
    """Records of one batch that match each other, twins, typos, restated records, a record refused,
    one unreadable, a death: the same outcomes and index both ways."""
    if not getattr(engine, "_seeded_for_bulk", False):  # once per backend: each example is rolled back
        _seeded(engine)
        engine._seeded_for_bulk = True
    bulk_and_online(engine, "LA", batch)


def test_a_bulk_batch_holds_back_a_disputed_value_as_a_push_does(engine):
    """The LA (owner of the address) and the school disagree on the address (a value conflict,
    open); the LA's next record states no address: a push shows no address unasked; so must a load."""
    family, given, dob, gender, line, postcode, _ = PEOPLE[1]
    seed(engine, [
        ("LA", [record("la-1", family, given, dob, gender=gender, line=line, postcode=postcode)]),
        ("SCH", [record("s-1", family, given, dob, gender=gender, line="99 School Lane", postcode=postcode)]),
    ])
    bulk_and_online(engine, "LA", [record("la-1", family, given, dob, gender=gender, line=None, postcode=postcode)])
