"""`contactgate push` of a large extract, end to end: rows/s and the push client's peak memory.

    python bench/push.py                     # 100,000 rows, SQLite gateway
    python bench/push.py --rows 20000 --database-url postgresql+psycopg://postgres@127.0.0.1/scratch

A temporary gateway is set up with the real CLI (an LA organisation with push scope) and started;
an extract in the local authority sample's shape (connectors/samples/la_case_management.csv: the
same columns, case notes included) is generated with distinct children; then `contactgate push` runs
as its own process with the sample's mapping, and its wall time and peak resident memory (from
getrusage of the child) are printed. Then the same extract is pushed again (nothing changed: nothing
is sent), which measures reading, mapping and checking alone.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contactgate_local import LocalGateway  # noqa: E402

SAMPLES = ROOT / "connectors" / "samples"
LETTERS = "bcdfghjklmnpqrstvwxz"
VOWELS = "aeiou"


def _name(rng: random.Random, syllables: int = 3) -> str:
    return "".join(rng.choice(LETTERS) + rng.choice(VOWELS) for _ in range(syllables)).title()


def make_extract(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    with open(SAMPLES / "la_case_management.csv", newline="") as stream:
        header = csv.DictReader(stream).fieldnames
    born = dt.date.today() - dt.timedelta(days=17 * 365)  # children: under 18 whatever the day
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, header)
        writer.writeheader()
        for i in range(rows):
            writer.writerow({
                "CaseRef": f"LA-{i:07d}", "ChildName": f"{_name(rng, 4).upper()}, {_name(rng)} {_name(rng, 2)}",
                "DOB": (born + dt.timedelta(days=rng.randrange(0, 16 * 365))).strftime("%d/%m/%Y"),
                "Sex": rng.choice("MF"), "AddressLine1": f"{rng.randrange(1, 400)} {_name(rng)} Road",
                "Town": "Leeds", "Postcode": f"LS{rng.randrange(1, 29)} {rng.randrange(10)}{rng.choice('ABDEFGHJ')}"
                                            f"{rng.choice('LNPQRSTU')}",
                "MainCarer": f"{_name(rng)} {_name(rng, 4)}", "MainCarerRelationship": rng.choice(["MO", "FA", "GM"]),
                "MainCarerPhone": f"0113 496 {rng.randrange(10000):04d}", "SchoolName": f"{_name(rng)} Primary",
                "SchoolURN": f"1{rng.randrange(100000):05d}", "AllocatedWorker": f"{_name(rng)} {_name(rng)}",
                "WorkerRole": rng.choice(["SW", "SSW", "FSW"]), "WorkerPhone": "0113 496 0201",
                "CaseOpened": "01/09/2024", "EarlyHelpAssessment": rng.choice("YN"), "IsLeadProfessional": "Y",
                "CaseNotes": "free text that must never leave the authority", "RiskFlag": "AMBER", "TeamCode": "CIN"})


def run_push(gw: LocalGateway, extract: Path, state: Path) -> tuple[float, float, str]:
    client = gw.certs["la"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from connectors.cli import main; main()", "push", str(extract),
                           "--mapping", str(SAMPLES / "la_case_management.yaml"), "--url", gw.url,
                           "--cert", str(client / "cert.pem"), "--key", str(client / "key.pem"),
                           "--state", str(state), "--rejects", str(extract) + ".rejects"],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
    if done.returncode not in (0, 1):
        raise SystemExit(f"push failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed, max(peak, before) / 1024, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the extract (default: 100,000)")
    parser.add_argument("--database-url", default=None, help="the gateway's database (default: SQLite)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="gateway workers")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="cg-push-bench-") as directory:
        work = Path(directory)
        gw = LocalGateway(home=work / "home", database_url=args.database_url)
        gw.cli("init")
        gw.add_org("LA", "local_authority", ["push", "query"])
        extract = work / "extract.csv"
        make_extract(extract, args.rows)
        size = extract.stat().st_size / 1e6
        gw.start(workers=args.workers)
        try:
            elapsed, peak, output = run_push(gw, extract, work / "push.state")
            print(f"extract: {args.rows} rows, {size:.1f} MB; gateway: {'PostgreSQL' if args.database_url else 'SQLite'}, "
                  f"{args.workers} workers")
            print(f"first push:  {elapsed:.1f} s, {args.rows / elapsed:.0f} rows/s end to end; push client peak "
                  f"memory {peak:.0f} MiB")
            print("  " + "\n  ".join(line for line in output.splitlines() if not line.startswith("progress")))
            elapsed, peak, output = run_push(gw, extract, work / "push.state")
            print(f"second push (nothing changed): {elapsed:.1f} s, {args.rows / elapsed:.0f} rows/s read, mapped "
                  f"and checked; peak memory {peak:.0f} MiB")
        finally:
            gw.stop()


if __name__ == "__main__":
    main()
