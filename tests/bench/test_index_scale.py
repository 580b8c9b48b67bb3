"""bench/index_scale.py: the national-scale benchmark runs end to end at a tiny size, and what it
loads (gateway.index.writing.bulk_rows) is what the store itself stores."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import index_scale, population
from gateway.db import blocking_keys, children, involvements, make_engine
from gateway.index import store
from tests.support import POSTGRES_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]
TODAY = dt.date(2026, 11, 22)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "index_scale.py"), "--children", "300", "--lookups", "60",
         "--chunk", "100", "--admin-url", POSTGRES_ADMIN_URL, "--today", TODAY.isoformat(), "--quiet", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_index_scale_prints_every_figure_and_no_sequential_scan():
    done = _run("--review-rate", "0.5")  # ~150 open pairs: enough for a scan of them to show
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "children 300;" in out
    assert "children/s" in out and "VACUUM ANALYZE" in out
    for operation in ("GetContacts", "FindChild"):
        line = next(l for l in out.splitlines() if l.startswith(f"{operation}: n "))
        for figure in ("p50", "p95", "p99"):
            assert f" {figure} " in line and " ms" in line
    for table in index_scale.INDEX_TABLES:
        assert f"  {table} " in out
    assert "index blocking_keys_pkey" in out and "index children_pkey" in out
    for operation in ("GetContacts", "FindChild", "FindChild (the slowest of the run)", "SubmitUpdates",
                      "SubmitUpdates (a record in the review band)"):
        assert f"--- {operation}: SELECT" in out
    assert "Index Scan" in out or "Index Only Scan" in out or "Bitmap Index Scan" in out
    assert not [line for line in out.splitlines() if line.startswith("FAIL")]
    assert "no sequential scan on any hot query" in out


def test_index_scale_json_has_the_figures_and_drops_its_database():
    from sqlalchemy import create_engine, text

    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.connect() as conn:
        before = set(conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE 'cg_scale_%'")).scalars())
    done = _run("--json", "--workers", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["children"] == 300 and result["load"]["rows"]["children"] == 300
    assert result["load"]["children_per_s"] > 0
    for key in ("get_contacts_ms", "find_child_ms"):
        assert {"p50", "p95", "p99"} <= set(result[key]) and result[key]["n"] == 60
    assert result["get_contacts_not_found"] == 0
    assert result["load"]["rows"]["review_queue"] > 0
    assert result["find_quality"]["present"] > 0 and result["find_quality"]["top10"] > 0
    assert set(result["sizes"]["tables"]) == set(index_scale.INDEX_TABLES)
    assert all(t["total_bytes"] > 0 for t in result["sizes"]["tables"].values())
    assert result["plans"]["GetContacts"] and result["plans"]["FindChild"]
    assert result["seq_scan_failures"] == []
    with admin.connect() as conn:
        after = set(conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE 'cg_scale_%'")).scalars())
    admin.dispose()
    assert after <= before  # the fresh database is dropped


def test_an_index_scan_that_throws_most_rows_away_is_a_failure():
    plans = [{"sql": "SELECT review_queue.id ...", "plan": [
        "Index Scan using ix_review_queue_status on review_queue", "  Rows Removed by Filter: 1005"]}]
    assert index_scale.seq_scan_failures("SubmitUpdates", plans, {"review_queue": 1005}) == [
        "FAIL filtered scan: SubmitUpdates: 1005 rows read and thrown away in: SELECT review_queue.id ..."]
    plans[0]["plan"][1] = "  Rows Removed by Filter: 3"
    assert index_scale.seq_scan_failures("SubmitUpdates", plans, {"review_queue": 1005}) == []


def test_a_seq_scan_of_an_index_table_is_a_failure_but_of_the_small_registry_is_not():
    plans = [{"sql": "SELECT ...", "plan": ["Hash Join", "  ->  Seq Scan on organisations  (cost=...)",
                                            "  ->  Seq Scan on source_records  (cost=...)"]}]
    failures = index_scale.seq_scan_failures("FindChild", plans, {"organisations": 3, "source_records": 10})
    assert failures == ["FAIL seq scan: FindChild: Seq Scan on source_records in: SELECT ..."]
    assert index_scale.seq_scan_failures("FindChild", plans[:1], {"organisations": 50_000, "source_records": 10}) \
        == ["FAIL seq scan: FindChild: Seq Scan on organisations in: SELECT ...",
            "FAIL seq scan: FindChild: Seq Scan on source_records in: SELECT ..."]


def _children_held_by_several(n: int):
    """``n`` distinct children and every organisation's (clean) record of each."""
    people = population.generate(40, 7, "clean", today=TODAY)
    records = population.views(people, 3, 7, overlap=1.0, mix="clean", today=TODAY)
    held: dict[str, list] = {}
    for org in population.ORGS:
        for r in records[org.code]:
            held.setdefault(r.person_id, []).append((org, r.update))
    several = [p for p in people if len(held[p.person_id]) >= 2 and not p.twin_id][:n]
    return [[(org, dataclasses.replace(u, source_record_id=f"{org.code.lower()}-{p.person_id}"))
             for org, u in sorted(held[p.person_id], key=lambda pair: pair[0].code)] for p in several]


def _as_stored(conn, child_id: str) -> dict:
    """Everything the store reads back of a child, with its id taken out."""
    view = store.get_child(conn, child_id, TODAY)
    shown = store.provenance(conn, child_id)
    row = conn.execute(children.select().where(children.c.child_id == child_id)).one()._asdict()
    keys = set(conn.execute(blocking_keys.select().with_only_columns(blocking_keys.c.key)
                            .where(blocking_keys.c.child_id == child_id)).scalars())
    # Sealed values differ by their random nonce, blinded ids by what they blind: the view compares them.
    invs = sorted(tuple(sorted((k, str(v)) for k, v in r._asdict().items()
                               if k not in ("id", "child_id", "sealed", "source_record_id")))
                  for r in conn.execute(involvements.select().where(involvements.c.child_id == child_id)))
    return {"view": dataclasses.replace(view, child_id=""), "provenance": shown,
            "row": {k: v for k, v in row.items() if k not in ("child_id", "record", "provenance")},
            "keys": keys, "involvements": invs}


def test_bulk_rows_store_exactly_what_apply_updates_stores(database_url):
    """The bench loads through store.bulk_rows; a child loaded so must read back (shown record,
    provenance, every source record, keys, involvements, contacts) exactly as the same records
    pushed one organisation after another through apply_updates and linked by matching."""
    engine = make_engine(database_url)
    now = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.timezone.utc)
    kids = _children_held_by_several(3)
    try:
        with engine.begin() as conn:
            index_scale._register_organisations(conn, 3)
            pushed = []
            for sources in kids:
                child_id = None
                for org, update in sources:
                    result, = store.apply_updates(conn, org.code, [update], now)
                    assert result.outcome == ("created" if child_id is None else "matched"), result
                    child_id = result.child_id
                pushed.append(child_id)
            bulk = [[(org.code, org.kind, dataclasses.replace(u, source_record_id=f"bulk-{u.source_record_id}"))
                     for org, u in sources] for sources in kids]
            rows = store.bulk_rows(bulk, now)
            index_scale.write_rows(conn, rows)
            loaded = [row["child_id"] for row in rows["children"]]
        with engine.connect() as conn:
            for a, b in zip(pushed, loaded):
                by_push, by_bulk = _as_stored(conn, a), _as_stored(conn, b)
                for source in by_bulk["provenance"]["sources"]:
                    source["source_record_id"] = source["source_record_id"].removeprefix("bulk-")
                for shown in by_bulk["provenance"]["shown"].values():
                    shown["source_record_id"] = shown["source_record_id"].removeprefix("bulk-")
                by_bulk["involvements"] = [tuple((k, v.removeprefix("bulk-")) for k, v in inv)
                                           for inv in by_bulk["involvements"]]
                assert by_bulk == by_push
                assert len(by_push["provenance"]["sources"]) >= 2 and by_push["view"].contacts
    finally:
        engine.dispose()


def test_the_bench_refuses_a_database_that_is_not_postgresql(tmp_path):
    with pytest.raises(SystemExit, match="PostgreSQL"):
        index_scale.run(index_scale.parse_args(["--children", "10", "--database-url", f"sqlite:///{tmp_path}/x.db"]))
