"""`ChildUpdate.record()`, the stored canonical record, is exactly what it always was: the update's
dataclasses as JSON-ready data (``dataclasses.asdict``, tuples as lists, dates as ISO text) without
its source record id and involvements, and without a date of death unless one was recorded."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.index.model import Address, Carer, ChildUpdate, Identity, Involvement, Setting


def _as_before(update: ChildUpdate) -> dict:
    def jsonable(value):
        if isinstance(value, dict):
            return {k: jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [jsonable(v) for v in value]
        return value.isoformat() if isinstance(value, dt.date) else value

    data = dataclasses.asdict(update)
    data.pop("involvements")
    data.pop("source_record_id")
    if data["identity"].get("date_of_death") is None:
        data["identity"].pop("date_of_death", None)
    return jsonable(data)


text = st.text(max_size=12)
maybe = lambda s: st.none() | s  # noqa: E731
dates = st.dates(dt.date(1990, 1, 1), dt.date(2030, 1, 1))
addresses = st.builds(Address, lines=st.lists(text, max_size=3).map(tuple), postcode=text, town=maybe(text))
settings_ = st.builds(Setting, name=text, code=maybe(text), phone=maybe(text))
updates = st.builds(
    ChildUpdate, source_record_id=text,
    identity=st.builds(Identity, family_name=text, given_names=st.lists(text, min_size=1, max_size=3).map(tuple),
                       date_of_birth=dates, gender=st.sampled_from(["female", "male", "unknown"]),
                       preferred_name=maybe(text), previous_names=st.lists(text, max_size=2).map(tuple),
                       nhs_number=maybe(text), pupil_number=maybe(text), date_of_death=maybe(dates)),
    address=maybe(addresses),
    carers=st.lists(st.builds(Carer, name=text, relationship=text, phone=maybe(text), email=maybe(text),
                              address=maybe(addresses)), max_size=2).map(tuple),
    educational_setting=maybe(settings_), gp_practice=maybe(settings_),
    involvements=st.lists(st.builds(Involvement, service=text, start=dates, caf_assessment=st.booleans(),
                                    lead_professional=st.booleans()), max_size=2).map(tuple))


@settings(max_examples=150, deadline=None)
@given(updates)
def test_the_stored_record_is_what_asdict_made(update):
    record = update.record()
    assert record == _as_before(update)
    assert json.dumps(record, sort_keys=True) == json.dumps(_as_before(update), sort_keys=True)
