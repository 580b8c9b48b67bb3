"""What the audit trail adds to an exchange, and whether gateway processes queue behind it.

    python bench/audit_cost.py                                    # SQLite
    python bench/audit_cost.py --database-url postgresql+psycopg://postgres@127.0.0.1/test

1. Per entry: the time of a transaction that appends one audit entry (one child named, as a
   GetContacts writes) minus the time of the same transaction without it, over --entries runs. Set
   beside the bare signature cost of an exchange (bench/throughput.py, about 5 ms): the audit should
   be a small part of it.
2. Queueing (PostgreSQL; the point of the second process): every append locks the chain's head row
   until its transaction commits, so appends are serialised, but only for the append and the commit,
   not the whole request. P processes each run transactions that do --work-ms of other work (as a
   request's parsing, signature checks and index read do) and then append; if the head lock
   serialised whole requests, P processes would be no faster than one. Printed: transactions/s for
   1 and P processes, and the speed-up.

A temporary database is made on PostgreSQL (and dropped); the SQLite file is temporary.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text  # noqa: E402

from gateway.audit import AuditTrail, Entry, new_key  # noqa: E402
from gateway.db import make_engine, migrate  # noqa: E402


def _entry(i: int) -> Entry:
    return Entry(operation="GetContacts", outcome="accepted", org_code="LA", cert_fingerprint="f" * 64,
                 user_id=f"user{i % 50}", role="social worker", reason_code="referral",
                 reason_text="benchmark", child_ids=[f"C{i:06d}-0000-0000-00"[:19]], request_digest="d" * 44,
                 detail="contacts=3 fields=identifiers,address", source_address="127.0.0.1",
                 request_id=uuid.uuid4().hex, response_digest="r" * 44)


def per_entry(engine, key: bytes, runs: int) -> tuple[float, float]:
    trail = AuditTrail(key)
    bare, audited = [], []
    for i in range(runs):
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
            trail.append(conn, _entry(i))
        audited.append(time.perf_counter() - start)
    return statistics.median(bare) * 1000, statistics.median(audited) * 1000


def _worker(url: str, key: bytes, seconds: float, work_ms: float, start_at: float, out) -> None:
    engine = make_engine(url)
    trail = AuditTrail(key)
    while time.time() < start_at:
        time.sleep(0.001)
    done, deadline, i = 0, start_at + seconds, os.getpid() * 1_000_000
    while time.time() < deadline:
        with engine.begin() as conn:
            busy_until = time.perf_counter() + work_ms / 1000  # the request's own work, in its transaction
            while time.perf_counter() < busy_until:
                pass
            trail.append(conn, _entry(i))
        done += 1
        i += 1
    out.put(done)
    engine.dispose()


def queueing(url: str, key: bytes, processes: int, seconds: float, work_ms: float) -> float:
    out = mp.Queue()
    start_at = time.time() + 1.0
    workers = [mp.Process(target=_worker, args=(url, key, seconds, work_ms, start_at, out)) for _ in range(processes)]
    for w in workers:
        w.start()
    total = sum(out.get() for _ in workers)
    for w in workers:
        w.join()
    return total / seconds


@contextlib.contextmanager
def scratch_database(server_url: str | None, prefix: str):
    """The URL of a new database on ``server_url`` (PostgreSQL), dropped afterwards; without one, a
    SQLite file in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as directory:
        if not server_url:
            yield f"sqlite:///{directory}/bench.db"
            return
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument("--entries", type=int, default=1000, help="appends timed (default: 1000)")
    parser.add_argument("--processes", type=int, default=2, help="PostgreSQL: processes appending (default: 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="PostgreSQL: each queueing run (default: 5)")
    parser.add_argument("--work-ms", type=float, default=4.0,
                        help="PostgreSQL: a request's own work before it appends (default: 4)")
    args = parser.parse_args()
    key = new_key()
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")
    with scratch_database(args.database_url, "cg_audit_bench") as url:
        migrate(url)
        engine = make_engine(url)
        bare, audited = per_entry(engine, key, args.entries)
        print(f"{'PostgreSQL' if args.database_url else 'SQLite'}: a transaction {bare:.3f} ms, with an audit "
              f"entry {audited:.3f} ms: the audit adds {audited - bare:.3f} ms per exchange (median of "
              f"{args.entries})")
        engine.dispose()
        if args.database_url:
            one = queueing(url, key, 1, args.seconds, args.work_ms)
            many = queueing(url, key, args.processes, args.seconds, args.work_ms)
            print(f"queueing, {args.work_ms:g} ms of work per request before its append: 1 process "
                  f"{one:.0f} tx/s, {args.processes} processes {many:.0f} tx/s (x{many / one:.2f}; "
                  f"x1.00 would mean the head lock serialises whole requests)")


if __name__ == "__main__":
    main()
