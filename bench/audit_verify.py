"""How long `audit verify` takes: incremental (the default) against --full, at a settable size.

    python bench/audit_verify.py --entries 1000000 --new 10000                 # SQLite
    python bench/audit_verify.py --entries 200000 --database-url postgresql+psycopg://postgres@127.0.0.1/test

A trail of --entries entries (one child named each, as a GetContacts writes) is written straight
into a temporary database (the links computed exactly as gateway.audit.chain appends them, in bulk:
appending one by one would take longer than the verification measured), then:

1. a full verification (every entry re-hashed; it writes the signed checkpoint the next run trusts);
2. --new more entries, and an incremental verification: it should re-hash only those;
3. a full verification of the whole trail again, for the per-entry figure.

Printed: the time of each, entries re-hashed, µs an entry, and the full verification of 10 million
entries extrapolated from the measured per-entry rate (labelled as such) when --entries is smaller.
The signing key is a throwaway made here. A temporary database is made on PostgreSQL (and dropped);
the SQLite file is temporary.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from sqlalchemy import select, update  # noqa: E402

from audit_cost import scratch_database  # noqa: E402

from gateway.audit import AuditTrail, new_key  # noqa: E402
from gateway.audit.checkpoints import CheckpointSigner  # noqa: E402
from gateway.audit.links import entry_hash, material, public_hash, timestamp  # noqa: E402
from gateway.db import audit_children, audit_head, audit_log, make_engine, migrate  # noqa: E402
from gateway.trust import pki  # noqa: E402

BATCH = 20_000


def fill(engine, key: bytes, count: int) -> None:
    """Append ``count`` entries after the head, in bulk, linked as the chain links them."""
    with engine.connect() as conn:
        head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one()
    seq, prev, prev_public = head.seq, head.entry_hash, head.public_hash
    at = timestamp()
    end = seq + count
    while seq < end:
        rows, kids = [], []
        for seq in range(seq + 1, min(seq + BATCH, end) + 1):
            child = f"C{seq:08d}-0000-000"[:19]
            row = {"seq": seq, "at": at, "org_code": "LA", "cert_fingerprint": "f" * 64, "user_id": f"user{seq % 50}",
                   "role": "social worker", "operation": "GetContacts", "reason_code": "referral",
                   "reason_text": "benchmark", "child_ids": child, "outcome": "accepted", "fault_code": None,
                   "request_digest": "d" * 44, "detail": "contacts=3 fields=identifiers,address",
                   "source_address": "127.0.0.1", "request_id": uuid.uuid4().hex, "response_digest": "r" * 44,
                   "prev_hash": prev}
            fields = material(row)
            row["entry_hash"] = entry_hash(key, prev, row, fields)
            row["public_hash"] = public_hash(prev_public, row, fields)
            prev, prev_public = row["entry_hash"], row["public_hash"]
            rows.append(row)
            kids.append({"child_id": child, "seq": seq})
        with engine.begin() as conn:
            conn.execute(audit_log.insert(), rows)
            conn.execute(audit_children.insert(), kids)
            conn.execute(update(audit_head).where(audit_head.c.id == 1)
                         .values(seq=seq, entry_hash=prev, public_hash=prev_public))


def timed(trail: AuditTrail, engine, incremental: bool):
    start = time.perf_counter()
    result = trail.verify(engine, incremental=incremental)
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"the chain did not verify: {result.problem} at {result.first_bad_seq}")
    return result, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument("--entries", type=int, default=100_000, help="the trail's size before (default: 100000)")
    parser.add_argument("--new", type=int, default=10_000,
                        help="entries appended after the checkpoint (default: 10000)")
    args = parser.parse_args()
    key = new_key()
    signing, cert = pki.make_ca("Bench signing", key=ec.generate_private_key(ec.SECP256R1()))
    signer = CheckpointSigner(pki.key_pem(signing), pki.cert_pem(cert))
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
          f"{backend}")
    with tempfile.TemporaryDirectory(prefix="cg-verify-bench-") as directory, \
            scratch_database(args.database_url, "cg_verify_bench") as url:
        migrate(url)
        engine = make_engine(url)
        trail = AuditTrail(key, checkpoints=Path(directory) / "checkpoints", signer=lambda: signer,
                           certificates=lambda: [signer.certificate])
        start = time.perf_counter()
        fill(engine, key, args.entries)
        print(f"written: {args.entries} entries in {time.perf_counter() - start:.0f} s")
        first, first_s = timed(trail, engine, incremental=False)
        fill(engine, key, args.new)
        inc, inc_s = timed(trail, engine, incremental=True)
        full, full_s = timed(trail, engine, incremental=False)
        per_entry = full_s / full.entries * 1e6
        print(f"full verification of {first.entries} entries: {first_s:.1f} s")
        print(f"incremental after {args.new} new entries: {inc_s:.2f} s, {inc.entries} entries re-hashed "
              f"(from the signed checkpoint of entry {inc.anchor_seq}; {inc_s / max(inc.entries, 1) * 1e6:.0f} µs "
              f"an entry, start-up included)")
        print(f"full verification of {full.entries} entries: {full_s:.1f} s ({per_entry:.0f} µs an entry)")
        if full.entries < 10_000_000:
            print(f"EXTRAPOLATED from the measured {per_entry:.0f} µs an entry, not measured: full verification "
                  f"of 10 M entries ≈ {per_entry * 10 / 60:.0f} min; incremental stays ≈ {inc_s:.2f} s for "
                  f"{args.new} new entries (it reads nothing before its anchor but the checkpointed entries "
                  f"and the restore entries, by index)")
        engine.dispose()

if __name__ == "__main__":
    main()
