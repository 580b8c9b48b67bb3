"""Cost of matching one incoming record as the index grows (10 k, 100 k, 1 M children).

    python bench/linkage_scale.py                               # 10k, 100k, 1M on SQLite
    python bench/linkage_scale.py --sizes 10000,100000 --sample 1000
    python bench/linkage_scale.py --database-url postgresql+psycopg://u@host/scratch

This is the STORE path, not the network path: pushing a million children through signed
SubmitUpdates would take hours, so the index is filled in this process with
gateway.index.batches.apply_updates (the function SubmitUpdates calls, matching, blocking keys and
all), one transaction per --chunk records (5000) from one organisation (LA). At each size a sample of
incoming records from another organisation (HEALTH) is applied with the same function and timed:

- "new": children not in the index (nothing should match; the blocking lookups still run);
- "dup": records of children already in the index, corrupted by --mix (typos, nicknames, swapped
  dates, moves, ... as bench/population.py makes them): the candidates are found and scored.

Each timed batch (--batch records) runs in its own transaction and is rolled back, so the index
stays at the size being measured. It prints, per size, how long populating took and ms per incoming
record (mean and p95 over batches, per record), with the outcomes, and per incoming record the
children filed under its blocking keys (key rows read) and the candidates compared (at most
deciding.COMPARED_PER_RECORD). Flat ms/record and flat candidate counts from 10 k to 1 M are what
blocking (never a scan, every key bounded by a date or a place) should give.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import math
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable (bench.*)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import population  # noqa: E402
from bench.linkage import _stop_on_sigterm  # noqa: E402

DEFAULT_SEED = 20260602
NEW_PEOPLE_FIRST_ID = 90_000_000  # ids (and NHS / pupil numbers) no loaded child can have
LOADER = "LA"
INCOMING = population.ORGS[1]  # HEALTH


def _chunk_records(people: list[population.Person], seed: int, chunk_no: int, mix, today: dt.date):
    """One organisation's records of every child in ``people``, with source record ids unique over
    the whole run (views() draws random ids per call; a million of them would collide)."""
    recs = population.views(people, 1, seed * 7919 + chunk_no, overlap=1.0, mix=mix, today=today)[LOADER]
    return [dataclasses.replace(r.update, source_record_id=f"load-{r.person_id}") for r in recs]


class _Reservoir:
    """A uniform sample of the children loaded so far (Algorithm R), for the duplicate records."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.seen, self.items = size, rng, 0, []

    def add(self, person: population.Person) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(person)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = person


class _CandidateCount:
    """Per incoming record: the (key, child) rows under its keys and the candidates compared, counted
    around batches._Batch.hits (the one place a record's candidates are chosen)."""

    def __init__(self, batches):
        self.batches, self.rows, self.compared, self.records = batches, 0, 0, 0
        self.original = batches._Batch.hits

    def __enter__(self):
        counter, original = self, self.original

        def hits(batch, keys):
            found = original(batch, keys)
            counter.records += 1
            counter.rows += sum(len(batch.under.get(key, ())) for key in keys)
            counter.compared += len(found.ranked)
            return found
        self.batches._Batch.hits = hits
        return self

    def __exit__(self, *exc):
        self.batches._Batch.hits = self.original

    def figures(self) -> dict:
        return {"key_rows_per_record": self.rows / max(1, self.records),
                "candidates_per_record": self.compared / max(1, self.records)}


def _timed_batches(engine, store, org: str, updates, batch: int) -> tuple[list[float], collections.Counter]:
    """Apply each batch in its own transaction, time it, roll it back."""
    per_record, outcomes = [], collections.Counter()
    for start in range(0, len(updates), batch):
        part = updates[start:start + batch]
        with engine.connect() as conn:
            trans = conn.begin()
            t0 = time.perf_counter()
            results = store.apply_updates(conn, org, part, dt.datetime.now(dt.timezone.utc))
            elapsed = time.perf_counter() - t0
            trans.rollback()
        per_record.append(elapsed / len(part))
        outcomes.update(r.recorded_outcome for r in results)
    return per_record, outcomes


def _stats(per_record: list[float]) -> dict:
    ordered = sorted(per_record)
    return {"ms_per_record_mean": 1000 * sum(ordered) / len(ordered),
            "ms_per_record_p95_batch": 1000 * ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)],
            "batches": len(ordered)}


def _bulk_fill(conn, updates, now: dt.datetime) -> int:
    """Each update stored as a new child with the store's own row-building (gateway.index.writing.bulk_rows:
    the shown record and provenance by precedence, keys by gateway.index.linkage), in one multi-row
    insert per table: what matching would store for children that match no one, without matching
    (which is what is measured afterwards). NOT the SubmitUpdates path: --fill bulk says so."""
    from bench.index_scale import write_rows
    from gateway.index import store

    rows = store.bulk_rows([[(LOADER, None, update)] for update in updates], now)
    write_rows(conn, rows)
    return len(rows["children"])


def run(args) -> list[dict]:
    from gateway.db import make_engine, migrate
    from gateway.index import batches, store

    sizes = sorted(args.sizes)
    mix = population.mix_named(args.mix)
    today = args.today or dt.date.today()
    home = Path(tempfile.mkdtemp(prefix="cg-linkage-scale-"))
    url = args.database_url or f"sqlite:///{home}/index.db"
    rows = []
    try:
        migrate(url)
        engine = make_engine(url)
        reservoir = _Reservoir(args.sample, random.Random(f"reservoir/{args.seed}"))
        loaded, chunk_no, populate_s = 0, 0, 0.0
        for size in sizes:
            step0 = time.perf_counter()
            outcomes_loading = collections.Counter()
            while loaded < size:
                n = min(args.chunk, size - loaded)
                people = population.generate(n, args.seed, mix, today=today, first_id=loaded)
                updates = _chunk_records(people, args.seed, chunk_no, mix, today)
                with engine.begin() as conn:
                    if args.fill == "bulk":
                        outcomes_loading["created"] += _bulk_fill(conn, updates, dt.datetime.now(dt.timezone.utc))
                    else:
                        results = store.apply_updates(conn, LOADER, updates, dt.datetime.now(dt.timezone.utc))
                        outcomes_loading.update(r.recorded_outcome for r in results)
                for person in people:
                    reservoir.add(person)
                loaded += n
                chunk_no += 1
                if not args.quiet and chunk_no % 20 == 0:
                    rate = loaded / (populate_s + time.perf_counter() - step0)
                    print(f"  loaded {loaded} children ({rate:.0f}/s)", file=sys.stderr)
            step_s = time.perf_counter() - step0
            populate_s += step_s

            half = args.sample // 2
            new_people = population.generate(half, args.seed, mix, today=today,  # same seed: identifiers stay unique
                                              first_id=NEW_PEOPLE_FIRST_ID + size)
            new = [r.update for r in population.views(new_people, 2, args.seed + size, overlap=1.0, mix=mix,
                                                      today=today)[INCOMING.code]]
            dup_people = reservoir.items[:args.sample - half]
            dup = [r.update for r in population.views(dup_people, 2, args.seed + 2 * size, overlap=1.0, mix=mix,
                                                      today=today)[INCOMING.code]]
            with _CandidateCount(batches) as new_count:
                new_times, new_out = _timed_batches(engine, store, INCOMING.code, new, args.batch)
            with _CandidateCount(batches) as dup_count:
                dup_times, dup_out = _timed_batches(engine, store, INCOMING.code, dup, args.batch)
            row = {
                "children": size, "populate_step_s": step_s, "populate_total_s": populate_s,
                "populate_per_s": (size - (rows[-1]["children"] if rows else 0)) / step_s if step_s else None,
                "loading_outcomes": dict(outcomes_loading),
                "new": {**_stats(new_times), **new_count.figures(), "records": len(new), "outcomes": dict(new_out)},
                "dup": {**_stats(dup_times), **dup_count.figures(), "records": len(dup), "outcomes": dict(dup_out)},
                "all_ms_per_record_mean": 1000 * sum(new_times + dup_times) / len(new_times + dup_times),
            }
            if url.startswith("sqlite"):
                row["database_mb"] = sum(f.stat().st_size for f in home.glob("index.db*")) / 1e6
            rows.append(row)
            if not args.json:
                _print_row(row, args)
        engine.dispose()
        return rows
    finally:
        if args.keep:
            print(f"database kept: {url}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def _print_row(row: dict, args) -> None:
    if row["children"] == sorted(args.sizes)[0]:
        print("ContactGate linkage at scale — STORE path (gateway.index.batches.apply_updates in-process), "
              "not the network path")
        print(f"mix {args.mix}, seed {args.seed}, incoming sample {args.sample} (half new, half duplicates), "
              f"batches of {args.batch} rolled back; index filled {args.chunk} per transaction")
        print(f"{'children':>10} {'populate':>18} {'new ms/rec':>11} {'p95':>7} {'dup ms/rec':>11} {'p95':>7}"
              f" {'all ms/rec':>11} {'key rows/rec':>13} {'compared/rec':>13}  outcomes (new | dup)")
    populate = f"{row['populate_step_s']:.0f} s ({row['populate_per_s']:.0f}/s)"
    print(f"{row['children']:>10} {populate:>18} {row['new']['ms_per_record_mean']:>11.2f} "
          f"{row['new']['ms_per_record_p95_batch']:>7.2f} {row['dup']['ms_per_record_mean']:>11.2f} "
          f"{row['dup']['ms_per_record_p95_batch']:>7.2f} {row['all_ms_per_record_mean']:>11.2f} "
          f"{(row['new']['key_rows_per_record'] + row['dup']['key_rows_per_record']) / 2:>13.1f} "
          f"{(row['new']['candidates_per_record'] + row['dup']['candidates_per_record']) / 2:>13.2f}  "
          f"{_outcomes(row['new']['outcomes'])} | {_outcomes(row['dup']['outcomes'])}"
          + (f"   db {row['database_mb']:.0f} MB" if "database_mb" in row else ""), flush=True)


def _outcomes(counts: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000, 1_000_000],
                        help="index sizes to measure at, comma-separated (default 10000,100000,1000000)")
    parser.add_argument("--sample", type=int, default=1000, help="incoming records timed at each size (default 1000)")
    parser.add_argument("--batch", type=int, default=100, help="incoming records per timed transaction (default 100)")
    parser.add_argument("--chunk", type=int, default=5000, help="children per populating transaction (default 5000)")
    parser.add_argument("--mix", default="default", choices=sorted(population.MIXES))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None)
    parser.add_argument("--database-url", default=None, help="a scratch database (default SQLite in a temp dir)")
    parser.add_argument("--fill", choices=["store", "bulk"], default="store",
                        help="how the index is filled: 'store' through apply_updates (matching each "
                             "record: hours for 1M), 'bulk' with the store's row-building but no matching "
                             "(the timed records always go through apply_updates)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or args.sample < 2 or args.batch < 1 or args.chunk < 1 \
            or max(args.sizes) >= NEW_PEOPLE_FIRST_ID:
        parser.error("sizes >= 1 and < 90 000 000, --sample >= 2, --batch and --chunk >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    from gateway.security import vault

    try:
        with vault.using(vault.throwaway()):  # the in-process store's keys, held in memory only
            rows = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"path": "store (in-process apply_updates), not the network path",
                          "settings": {k: (v.isoformat() if isinstance(v, dt.date) else v)
                                       for k, v in vars(args).items()},
                          "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
