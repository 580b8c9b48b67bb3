"""Retention (gateway.index.retention) on the store path, both backends: archive on the 18th birthday
(not the day before) or on a recorded death, purge on the purge day (not the day before), idempotent
runs, archived children invisible to every read and to linkage, pushes that cannot test whether a
child was held, purges that leave nothing readable in the tables or the database files, and an
audit chain that still verifies. The network path and the command line:
tests/gateway/test_retention_cli.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from gateway.db import (
    audit_log, blocking_keys, children, distinct_pairs, involvements, merges, metadata, review_queue,
    source_records,
)
from gateway.index import retention, review, store
from gateway.index.model import Address, Carer, FindQuery, Involvement
from tests.gateway.index import test_matching_rules
from tests.gateway.index.test_matching_rules import TRAIL, T0, push
from tests.support import nhs_number, unique_name

BIRTHDAY = dt.date(2026, 6, 15)  # the 18th birthday of the child born on DOB
DOB = "2008-06-15"


def update(*args, died: str | None = None, **kwargs):
    """test_matching_rules' ChildUpdate, with a date of death if ``died``."""
    made = test_matching_rules.update(*args, **kwargs)
    if died is None:
        return made
    return dataclasses.replace(made, identity=dataclasses.replace(made.identity,
                                                                  date_of_death=dt.date.fromisoformat(died)))


def noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12, 0), tzinfo=dt.timezone.utc)


def run(engine, day: dt.date, policy: retention.Policy = retention.Policy(), **kwargs) -> retention.RunCounts:
    return retention.run(engine, TRAIL, policy, clock=lambda: noon(day), **kwargs)


def child(engine, dob: str = DOB, srid: str | None = None, **kwargs) -> str:
    family = kwargs.pop("family", None) or unique_name("Fam")
    given = kwargs.pop("given", None) or (unique_name("Giv"),)
    [result] = push(engine, "LA", update(srid or unique_name("la-"), family=family, given=given, dob=dob,
                                         address=kwargs.pop("address", None), **kwargs))
    assert result.outcome == "created", result
    return result.child_id


def row(engine, child_id: str):
    with engine.connect() as conn:
        return conn.execute(select(children).where(children.c.child_id == child_id)).first()


def view(engine, child_id: str, day: dt.date):
    with engine.connect() as conn:
        return store.get_child(conn, child_id, day)


def show(engine, child_id: str, day: dt.date, policy: retention.Policy = retention.Policy()):
    with engine.begin() as conn:
        return retention.show(conn, TRAIL, child_id, "dm-1", policy, now=noon(day))


def audit_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


# ---- dates ---------------------------------------------------------------------------------------

def test_the_18th_birthday_of_someone_born_on_29_february_is_1_march_in_a_common_year():
    assert retention.eighteenth_birthday(dt.date(2012, 2, 29)) == dt.date(2030, 3, 1)
    assert retention.eighteenth_birthday(dt.date(2010, 2, 28)) == dt.date(2028, 2, 28)
    assert retention.eighteenth_birthday(dt.date(2014, 2, 29 - 1)) == dt.date(2032, 2, 28)


def test_archive_due_is_the_first_day_of_the_month_of_the_18th_birthday(engine):
    child_id = child(engine)
    assert row(engine, child_id).archive_due == dt.date(2026, 6, 1)


# ---- archiving ----------------------------------------------------------------------------------

def test_the_day_before_the_18th_birthday_the_child_is_live_and_on_the_day_archived(engine):
    child_id = child(engine)
    eve = BIRTHDAY - dt.timedelta(days=1)
    assert run(engine, eve).archived == 0
    assert view(engine, child_id, eve) is not None
    assert row(engine, child_id).archived_at is None
    # On the birthday the read paths withhold the child even before the run archives it.
    assert view(engine, child_id, BIRTHDAY) is None
    counts = run(engine, BIRTHDAY)
    assert (counts.archived, counts.archived_ids) == (1, [child_id])
    archived = row(engine, child_id)
    assert (archived.archive_reason, archived.purge_after) == ("age", dt.date(2032, 6, 15))
    assert view(engine, child_id, eve) is None, "archived: returned to no one, whatever the date asked"
    with engine.connect() as conn:
        keys = conn.execute(select(func.count()).select_from(blocking_keys)
                            .where(blocking_keys.c.child_id == child_id)).scalar_one()
    assert keys == 0, "an archived child is filed under no key"


def test_a_child_born_on_29_february_is_archived_on_1_march_in_a_common_year(engine):
    child_id = child(engine, dob="2012-02-29")
    assert run(engine, dt.date(2030, 2, 28)).archived == 0
    assert run(engine, dt.date(2030, 3, 1)).archived_ids == [child_id]


def test_a_run_twice_on_one_day_changes_nothing_more(engine):
    first, second = child(engine), child(engine, dob="2008-06-02")
    assert sorted(run(engine, BIRTHDAY).archived_ids) == sorted([first, second])
    entries = audit_count(engine)
    with engine.connect() as conn:
        before = conn.execute(select(children).order_by(children.c.child_id)).all()
    again = run(engine, BIRTHDAY)
    assert (again.archived, again.purged) == (0, 0)
    assert audit_count(engine) == entries
    with engine.connect() as conn:
        assert conn.execute(select(children).order_by(children.c.child_id)).all() == before


def test_children_due_later_in_the_month_do_not_stop_the_batches(engine):
    """archive_due is a month: children due later in it are selected and left, batch after batch."""
    later = [child(engine, dob="2008-06-28") for _ in range(3)]
    due = [child(engine, dob="2008-06-01") for _ in range(3)]
    counts = run(engine, BIRTHDAY, batch=2)
    assert sorted(counts.archived_ids) == sorted(due)
    assert all(row(engine, c).archived_at is None for c in later)


def test_each_archive_is_audited_with_the_child_id_only_and_the_chain_verifies(engine):
    family = unique_name("Audited")
    child_id = child(engine, family=family)
    run(engine, BIRTHDAY)
    with engine.connect() as conn:
        [entry] = conn.execute(select(audit_log).where(audit_log.c.operation == "retention.archive")).all()
    assert entry.child_ids == child_id
    assert family.lower() not in " ".join(str(v) for v in entry).lower()
    assert TRAIL.verify(engine).ok


# ---- what archived children are to reads and pushes ---------------------------------------------

def test_find_child_never_lists_an_archived_child(engine):
    family, given = unique_name("Found"), unique_name("Giv")
    child_id = child(engine, family=family, given=(given,))
    query = FindQuery(family_name=family, given_name=given, date_of_birth=dt.date(2008, 6, 15))
    with engine.connect() as conn:
        assert [c.child_id for c in store.find_children(conn, query, today=BIRTHDAY - dt.timedelta(days=1))] == [child_id]
        assert store.find_children(conn, query, today=BIRTHDAY) == [], "18 today: withheld before the run"
    run(engine, BIRTHDAY)
    with engine.connect() as conn:
        assert store.find_children(conn, query, today=BIRTHDAY - dt.timedelta(days=1)) == []


def test_a_record_of_a_child_18_or_over_is_rejected_whether_or_not_the_index_held_them(engine):
    """The answer depends on the record alone: pushing cannot test whether a child was held."""
    family, given = unique_name("Adult"), unique_name("Giv")
    nhs = nhs_number(4445556)
    child(engine, family=family, given=(given,), nhs=nhs)
    run(engine, BIRTHDAY)
    later = noon(BIRTHDAY + dt.timedelta(days=3))
    [known] = push(engine, "GP", update("gp-1", family=family, given=(given,), dob=DOB, nhs=nhs, address=None),
                   now=later)
    [unknown] = push(engine, "GP", update("gp-2", family=unique_name("Never"), given=(unique_name("Giv"),),
                                          dob=DOB, address=None), now=later)
    assert dataclasses.replace(known, source_record_id="x") == dataclasses.replace(unknown, source_record_id="x")
    assert (known.outcome, known.child_id, known.detail) == ("rejected", None, retention.NOT_HELD)


def test_a_record_meeting_an_archived_childs_nhs_number_is_treated_as_a_new_child(engine):
    nhs = nhs_number(5556667)
    family, given = unique_name("Dead"), unique_name("Giv")
    archived = child(engine, dob="2015-04-09", family=family, given=(given,), nhs=nhs)
    [death] = push(engine, "GP", update("gp-d", family=family, given=(given,), dob="2015-04-09", nhs=nhs,
                                        address=None, died="2026-02-20"), now=T0)
    assert death.withheld_child_id == archived
    [again] = push(engine, "SCH", update("sch-1", family=family, given=(given,), dob="2015-04-09", nhs=nhs,
                                         address=None), now=T0)
    assert again.outcome == "created" and again.child_id != archived
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(review_queue)).scalar_one() == 0


def test_a_recorded_death_archives_the_child_and_the_answer_does_not_say_whether_one_was_held(engine):
    nhs = nhs_number(6667778)
    family, given = unique_name("Died"), unique_name("Giv")
    child_id = child(engine, dob="2016-01-01", family=family, given=(given,), nhs=nhs)
    [found] = push(engine, "GP", update("gp-1", family=family, given=(given,), dob="2016-01-01", nhs=nhs,
                                        address=None, died="2026-02-27"), now=T0)
    [not_found] = push(engine, "GP", update("gp-2", family=unique_name("Nobody"), given=(unique_name("Giv"),),
                                            dob="2016-01-01", address=None, died="2026-02-27"), now=T0)
    assert (found.outcome, found.child_id, found.detail) == ("rejected", None, retention.NOT_HELD)
    assert (not_found.outcome, not_found.child_id, not_found.detail) == ("rejected", None, retention.NOT_HELD)
    assert found.withheld_child_id == child_id
    archived = row(engine, child_id)
    assert (archived.archive_reason, archived.archived_at is not None) == ("death", True)
    assert archived.purge_after == dt.date(2032, 3, 1)
    assert view(engine, child_id, T0.date()) is None
    shown = show(engine, child_id, T0.date())
    assert shown["record"]["identity"]["date_of_death"] == "2026-02-27"


def test_a_date_of_death_in_the_future_or_before_birth_is_rejected(engine):
    [future, before] = push(engine, "GP",
                            update("gp-1", given=(unique_name("A"),), died="2026-03-02"),
                            update("gp-2", given=(unique_name("B"),), dob="2015-04-09", died="2015-04-08"))
    assert (future.outcome, future.detail) == ("rejected", "date of death is in the future")
    assert (before.outcome, before.detail) == ("rejected", "date of death is before the date of birth")


def test_an_organisation_restating_its_record_of_an_archived_child_is_told_it_is_not_held(engine):
    child_id = child(engine, srid="la-own")
    run(engine, BIRTHDAY)
    [result] = push(engine, "LA", update("la-own", dob=DOB), now=noon(BIRTHDAY - dt.timedelta(days=300)))
    assert (result.outcome, result.child_id, result.detail) == ("rejected", None, retention.NOT_HELD)
    assert row(engine, child_id).archived_at is not None


# ---- retention show: live, archived (readable, then sealed), purged --------------------------------

def test_show_gives_the_state_the_dates_and_the_record_only_in_the_viewing_period(engine):
    child_id = child(engine)
    assert show(engine, child_id, BIRTHDAY)["state"] == "live"
    run(engine, BIRTHDAY)
    shown = show(engine, child_id, BIRTHDAY + dt.timedelta(days=364))
    assert (shown["state"], shown["reason"], shown["purge_after"]) == ("archived", "age", "2032-06-15")
    assert shown["sealed_from"] == "2027-06-15" and "record" in shown
    sealed = show(engine, child_id, dt.date(2027, 6, 15))
    assert sealed["sealed"] and "record" not in sealed and "involvements" not in sealed
    with engine.connect() as conn:
        shows = conn.execute(select(audit_log.c.child_ids, audit_log.c.user_id)
                             .where(audit_log.c.operation == "retention.show")).all()
    assert len(shows) == 3 and all(s == (child_id, "dm-1") for s in shows)


def test_show_of_an_id_never_held_is_none(engine):
    from gateway.index import ids

    assert show(engine, ids.new_child_id(), BIRTHDAY) is None
    assert show(engine, "not an id", BIRTHDAY) is None


# ---- purging ------------------------------------------------------------------------------------

def test_the_last_day_before_the_purge_day_nothing_is_purged_and_on_the_day_everything(engine):
    child_id = child(engine, involvements_=(Involvement("Early help", dt.date(2025, 1, 1), False, False),))
    run(engine, BIRTHDAY)
    purge_day = dt.date(2032, 6, 15)
    assert run(engine, purge_day - dt.timedelta(days=1)).purged == 0
    assert row(engine, child_id) is not None
    counts = run(engine, purge_day)
    assert (counts.purged, counts.purged_ids) == (1, [child_id])
    assert row(engine, child_id) is None
    for table in (source_records, involvements, blocking_keys):
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(table)
                                .where(table.c.child_id == child_id)).scalar_one() == 0, table.name
    shown = show(engine, child_id, purge_day)
    assert shown["state"] == "purged" and shown["purged_at"].startswith("2032-06-15")
    assert shown["archived_at"].startswith("2026-06-15")
    assert run(engine, purge_day) == retention.RunCounts(), "a second run finds nothing to do"
    assert TRAIL.verify(engine).ok


def test_the_purge_period_is_a_setting(engine):
    child_id = child(engine)
    run(engine, BIRTHDAY, retention.Policy(view_days=30, purge_years=1))
    assert row(engine, child_id).purge_after == dt.date(2027, 6, 15)
    assert run(engine, dt.date(2027, 6, 15)).purged_ids == [child_id]


def test_a_purge_takes_merged_ids_review_entries_distinct_pairs_and_merge_snapshots(engine):
    nhs = nhs_number(7778889)
    first = child(engine, nhs=nhs)
    [held] = push(engine, "GP", update("gp-9", family=unique_name("Other"), given=(unique_name("Giv"),),
                                       dob="2008-06-10", nhs=nhs, address=None))
    assert held.held_for_review
    other = child(engine, dob="2008-06-03")
    now = noon(dt.date(2026, 4, 1))
    with engine.begin() as conn:
        review.merge(conn, TRAIL, first, held.child_id, "dora", now)
        conn.execute(distinct_pairs.insert().values(child_a=min(first, other), child_b=max(first, other),
                                                    decided_by="dora", decided_at=now))
    run(engine, BIRTHDAY)
    run(engine, dt.date(2032, 6, 15))
    with engine.connect() as conn:
        for table, columns in ((children, ("child_id",)), (review_queue, ("child_id", "candidate_child_id")),
                               (distinct_pairs, ("child_a", "child_b")), (merges, ("survivor", "merged"))):
            for column in columns:
                left = conn.execute(select(func.count()).select_from(table).where(
                    table.c[column].in_([first, held.child_id]))).scalar_one()
                assert left == 0, f"{table.name}.{column}"


# ---- no trace in the database files -------------------------------------------------------------

DISTINCT = {
    "family": "Quoxlewhistvane", "given": "Brumbleton", "line": "77 Zephyrquill Mews",
    "postcode": "ZE9 9QX", "phone": "07700 900 417", "email": "carer.quoxlewhistvane@mail.example",
    "practitioner": "Ottoline Vexworth",
}


def _traces(blob: str) -> list[str]:
    haystack = blob.lower()
    needles = [*DISTINCT.values(), DISTINCT["postcode"].replace(" ", ""), DISTINCT["phone"].replace(" ", "")]
    return [n for n in needles if n.lower() in haystack]


def _distinctive_child(engine, nhs: str) -> str:
    record = update(
        "la-purge", family=DISTINCT["family"], given=(DISTINCT["given"],), dob=DOB, nhs=nhs,
        address=Address((DISTINCT["line"],), DISTINCT["postcode"], "Leeds"),
        involvements_=(Involvement("Youth work", dt.date(2025, 1, 1), False, False,
                                   practitioner_name=DISTINCT["practitioner"], phone=DISTINCT["phone"]),))
    record = dataclasses.replace(record, carers=(Carer("Pat", "mother", phone=DISTINCT["phone"],
                                                       email=DISTINCT["email"]),))
    [result] = push(engine, "LA", record)
    return result.child_id


def _database_files(engine) -> list[Path]:
    path = Path(engine.url.database)
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()]


def _sealed_traces(engine, child_id: str) -> list[str]:
    """What the child's rows hold at rest (values are sealed, lookups blinded): its sealed record,
    its source's and involvements' ciphertexts, and its blind keys — each must go with a purge."""
    from gateway.db import blocking_keys, children as children_table, involvements, source_records

    with engine.connect() as conn:
        found = [conn.execute(select(children_table.c.record).where(children_table.c.child_id == child_id)).scalar()]
        found += conn.execute(select(source_records.c.record).where(source_records.c.child_id == child_id)).scalars().all()
        found += conn.execute(select(involvements.c.sealed).where(involvements.c.child_id == child_id)).scalars().all()
        found += conn.execute(select(blocking_keys.c.key).where(blocking_keys.c.child_id == child_id)).scalars().all()
    return [t[-40:] for t in found if t]  # a tail of each: enough to recognise it in the file


def test_a_purge_leaves_no_trace_of_the_identifying_values(engine):
    nhs = nhs_number(8889990)
    child_id = _distinctive_child(engine, nhs)
    child(engine, dob="2010-01-01")  # a child that stays
    sealed_traces = _sealed_traces(engine, child_id)
    assert len(sealed_traces) >= 4
    if engine.dialect.name == "sqlite":
        blob = b"".join(p.read_bytes() for p in _database_files(engine)).decode("latin-1")
        assert not _traces(blob) and nhs not in blob, "sealed at rest before any purge"
        assert all(t in blob for t in sealed_traces), "the test must see the sealed values before the purge"
    run(engine, BIRTHDAY)
    assert run(engine, dt.date(2032, 6, 15)).purged_ids == [child_id]
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = " ".join(" ".join(str(v) for v in r) for r in conn.execute(select(table)))
            assert not _traces(rows) and nhs not in rows, table.name
            assert not any(t in rows for t in sealed_traces), table.name
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
        raw = b"".join(p.read_bytes() for p in _database_files(engine)).decode("latin-1")
        assert not _traces(raw) and nhs not in raw
        assert not any(t in raw for t in sealed_traces), "a sealed value of the purged child is still in the file"
    else:
        # A plain VACUUM leaves the freed bytes in the pages (README "Retention"): the compacting
        # run (a maintenance window's) writes the tables afresh.
        retention.run(engine, TRAIL, clock=lambda: noon(dt.date(2032, 6, 15)), compact=True)
        raw = _postgresql_files(engine)
        assert not _traces(raw) and nhs not in raw
        assert not any(t in raw for t in sealed_traces)


def _postgresql_files(engine) -> str:
    """The files of the purged tables, their TOAST tables and indexes, where the server lets this
    process read them (else the test is skipped: the SQL checks above still ran)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
        try:
            directory = Path(conn.exec_driver_sql("SHOW data_directory").scalar())
        except Exception:
            pytest.skip("the PostgreSQL data directory is not visible to this user")
        names = [t.name for t in retention.PURGED_TABLES]
        relations = conn.execute(text(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c WHERE c.oid IN ("
            " SELECT oid FROM pg_class WHERE relname = ANY(:names)"
            " UNION SELECT reltoastrelid FROM pg_class WHERE relname = ANY(:names) AND reltoastrelid <> 0"
            " UNION SELECT indexrelid FROM pg_index WHERE indrelid IN"
            "  (SELECT oid FROM pg_class WHERE relname = ANY(:names)))"), {"names": names}).scalars().all()
    try:
        return b"".join((directory / p).read_bytes() for p in relations if p and (directory / p).exists()
                        ).decode("latin-1")
    except PermissionError:
        pytest.skip("the PostgreSQL data files are not readable by this user")


def test_an_sqlite_file_made_before_retention_is_converted_to_incremental_vacuum(tmp_path):
    from gateway.db import make_engine, migrate

    path = tmp_path / "old.db"
    legacy = sqlite3.connect(path)
    legacy.execute("PRAGMA auto_vacuum=NONE")
    legacy.execute("CREATE TABLE placeholder (x)")  # tables exist: auto_vacuum can no longer be set
    legacy.commit()
    legacy.close()
    migrate(f"sqlite:///{path}")
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 0
        retention.run(engine, TRAIL)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
    finally:
        engine.dispose()


# ---- safe while serving ------------------------------------------------------------------------

def test_two_runs_at_once_archive_each_child_once(engine):
    """As two hosts' cron jobs would: every due child archived once, one audit entry each."""
    import threading

    due = sorted(child(engine, dob="2008-06-0" + str(1 + i % 9)) for i in range(6))
    before = audit_count(engine)
    results, errors = [], []

    def one_run():
        try:
            results.append(run(engine, BIRTHDAY, batch=2))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    archived = sorted(c for r in results for c in r.archived_ids)
    assert archived == due
    assert audit_count(engine) == before + len(due)
    assert TRAIL.verify(engine).ok


def test_an_archived_child_cannot_be_merged_with_a_live_one(engine):
    archived, live = child(engine), child(engine, dob="2010-02-02")
    run(engine, BIRTHDAY)
    for survivor, merged in ((archived, live), (live, archived)):
        with engine.begin() as conn, pytest.raises(review.ReviewError, match="archived"):
            review.merge(conn, TRAIL, survivor, merged, "dora", noon(BIRTHDAY))
