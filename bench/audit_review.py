"""How long `audit review` takes over a month of national traffic, and how much memory it holds.

    python bench/audit_review.py --entries 20000000 --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/audit_review.py --entries 2000000                      # SQLite

A month of synthetic traffic is written straight into a temporary database (the review reads the
entries; it does not verify the chain, so the links are placeholders):

- --users practitioners in --orgs organisations, each organisation involved with its own share of
  --children children (children and involvements rows, as the index holds them);
- FindChild then GetContacts of a candidate a few minutes later, in working hours on weekdays;
  3 % of searches never followed up, 5 % of reads of another organisation's child, 1 % of users
  (emergency duty) working at night, 0.1 % reading five times as much as their peers, a few pasted
  reasons, organisations' SubmitUpdates and refusals.

Then every rule of `audit review` runs over the month, in a separate process: printed are the
time, entries a second, the findings per rule and that process's peak memory (maximum RSS). The
temporary database is dropped (PostgreSQL) or deleted (SQLite).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import multiprocessing
import os
import platform
import random
import resource
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit_cost import scratch_database  # noqa: E402

from gateway.db import make_engine, migrate  # noqa: E402

MONTH = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)  # a Monday; London is on UTC in November
DAYS = 28
COLUMNS = ("seq", "at", "org_code", "user_id", "role", "operation", "reason_code", "reason_text", "child_ids",
           "outcome", "fault_code", "detail", "source_address", "prev_hash", "entry_hash", "public_hash")
FILLER = "0" * 64


def _at(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def traffic(entries: int, users: int, orgs: int, children: int, seed: int):
    """The month's entries in seq order (times rising with seq)."""
    rng = random.Random(seed)
    per_org = max(children // orgs, 1)
    night = set(rng.sample(range(users), max(users // 100, 1)))
    heavy = set(rng.sample(range(users), max(users // 1000, 1)))
    weekdays = [MONTH + dt.timedelta(days=d) for d in range(DAYS) if (MONTH + dt.timedelta(days=d)).weekday() < 5]
    span = len(weekdays) * 10 * 3600  # 08:00-18:00 on weekdays
    seq = 0
    while seq < entries:
        offset = span * seq / entries
        day, second = divmod(offset, 10 * 3600)
        moment = weekdays[int(day)] + dt.timedelta(hours=8, seconds=second)
        user = rng.choice(tuple(heavy)) if rng.random() < 0.005 else rng.randrange(users)
        org = user % orgs
        if user in night:
            moment = moment.replace(hour=(moment.hour + 14) % 24)  # 22:00-07:59
        who = (f"ORG{org:04d}", f"u{user:07d}", "social worker")
        roll = rng.random()
        if roll < 0.08:  # the organisation's system pushes
            seq += 1
            yield (seq, _at(moment), who[0], "system", "system", "SubmitUpdates", None, None, "", "accepted", None,
                   "records=20 created=3 matched=17", "10.0.0.1")
            continue
        if roll < 0.085:
            seq += 1
            yield (seq, _at(moment), who[0], None, None, "GetContacts", None, None, "", "refused", "NotAuthorised",
                   "not allowed", f"10.0.{org % 250}.{user % 250}")
            continue
        owner = rng.randrange(orgs) if rng.random() < 0.05 else org
        child = f"C{owner + orgs * rng.randrange(per_org):09d}-0000-0000"[:19]
        reason = "checking records" if user % 997 == 0 else f"case {user} {seq}"
        seq += 1
        yield (seq, _at(moment), *who, "FindChild", "referral", reason, child, "accepted", None, "candidates=1",
               "10.0.0.2")
        if rng.random() < 0.97 and seq < entries:
            seq += 1
            yield (seq, _at(moment + dt.timedelta(minutes=3)), *who, "GetContacts", "referral", reason, child,
                   "accepted", None, "contacts=2 fields=identifiers,address", "10.0.0.2")


def the_index(children: int, orgs: int):
    per_org = max(children // orgs, 1)
    for n in range(per_org * orgs):
        yield f"C{n:09d}-0000-0000"[:19], f"ORG{n % orgs:04d}"


def fill(url: str, args) -> None:
    rows = traffic(args.entries, args.users, args.orgs, args.children, args.seed)
    full = lambda row: (*row, FILLER, FILLER, FILLER)  # noqa: E731
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.split("///", 1)[1])
        db.executemany("INSERT INTO children (child_id, shielded, record, family_name_norm, date_of_birth, created_at,"
                       " updated_at) VALUES (?, 0, '{}', '', '2015-01-01', '2026-01-01', '2026-01-01')",
                       ((c,) for c, _ in the_index(args.children, args.orgs)))
        db.executemany("INSERT INTO involvements (child_id, org_code, service, start, caf_assessment, lead_professional)"
                       " VALUES (?, ?, 'Social care', '2025-01-01', 0, 0)", the_index(args.children, args.orgs))
        db.executemany(f"INSERT INTO audit_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                       map(full, rows))
        db.commit()
        db.close()
        return
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as db, db.cursor() as cur:
        with cur.copy("COPY children (child_id, shielded, record, family_name_norm, date_of_birth, created_at, "
                      "updated_at) FROM STDIN") as copy:
            for child, _ in the_index(args.children, args.orgs):
                copy.write_row((child, False, "{}", "", "2015-01-01", "2026-01-01", "2026-01-01"))
        with cur.copy("COPY involvements (child_id, org_code, service, start, caf_assessment, lead_professional) "
                      "FROM STDIN") as copy:
            for child, org in the_index(args.children, args.orgs):
                copy.write_row((child, org, "Social care", "2025-01-01", False, False))
        with cur.copy(f"COPY audit_log ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(full(row))
        cur.execute("ANALYZE")


def review_month(url: str, queue) -> None:
    from gateway.audit import review

    engine = make_engine(url)
    start = time.perf_counter()
    with engine.connect() as conn:
        found = review.run(conn, MONTH, review.Thresholds(), until=MONTH + dt.timedelta(days=DAYS))
    elapsed = time.perf_counter() - start
    queue.put((elapsed, dict(Counter(f.rule for f in found)), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument("--entries", type=int, default=2_000_000, help="entries in the month (default: 2,000,000)")
    parser.add_argument("--users", type=int, default=100_000, help="practitioners (default: 100,000)")
    parser.add_argument("--orgs", type=int, default=300, help="organisations (default: 300)")
    parser.add_argument("--children", type=int, default=1_000_000, help="children in the index (default: 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}")
    with scratch_database(args.database_url, "cg_review_bench") as url:
        migrate(url)
        start = time.perf_counter()
        fill(url, args)
        print(f"wrote {args.entries:,} entries ({args.users:,} users, {args.orgs} organisations, "
              f"{args.children:,} children) in {time.perf_counter() - start:.0f} s")
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        worker = context.Process(target=review_month, args=(url, queue))
        worker.start()
        elapsed, by_rule, peak_kib = queue.get()
        worker.join()
        print(f"audit review of the month: {elapsed:.1f} s ({args.entries / elapsed:,.0f} entries/s), "
              f"peak memory {peak_kib / 1024:.0f} MiB; findings: "
              + (", ".join(f"{rule} {n}" for rule, n in sorted(by_rule.items())) or "none"))


if __name__ == "__main__":
    main()
