"""A bounded soak: does a worker's memory stay flat under steady load?

    python bench/soak.py                                   # 30 min, SQLite + embedded store
    python bench/soak.py --minutes 10 --rate 13 --workers 2 \\
        --database-url postgresql+psycopg://u@host/scratch --redis-url redis://127.0.0.1:6379/0

A temporary home is set up with the real CLI (as bench/throughput.py does: `contactgate init`, an
LA organisation with push + query, a HEALTH organisation with query, certificates from `cert
issue`), `python -m gateway serve` (gunicorn, ``--workers`` workers) is started on a free loopback
port, and ``--clients`` client processes drive signed exchanges over mutual TLS at ``--rate``
exchanges a second in all, in rounds of four: LA pushes one new child (SubmitUpdates), HEALTH
finds it (FindChild) and reads its contacts (GetContacts), LA pings. Every answer's signature is
verified by the SDK; an error is counted, not fatal.

Every ``--interval`` seconds (a minute) it prints the resident memory (VmRSS) of each worker and of
the master, and the exchanges answered. At the end: each worker's growth from the end of the
warm-up (``--warmup`` intervals) to the end, in MiB a minute. A flat line is what it should show
(docs/operations.md, section 4a).

With --database-url the run's organisations and children stay in that database: use a scratch one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/soak.py`
    sys.path.insert(0, str(ROOT))

from bench.throughput import GatewayUnderTest, child_update  # noqa: E402

ROUND = ("SubmitUpdates", "FindChild", "GetContacts", "Ping")
USERS = 200  # practitioners per client process: far below the per-user rate limit at any --rate here
REASON = dict(reason_code="care_coordination", reason_text="soak")


# ---- the server's processes ------------------------------------------------------------------------

def _parent(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


def workers_of(master: int) -> list[int]:
    """The gunicorn master's children (its workers), from /proc."""
    return sorted(int(e) for e in os.listdir("/proc") if e.isdigit() and _parent(int(e)) == master)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ---- load ------------------------------------------------------------------------------------------

def drive(index: int, url: str, certs: dict, run_id: str, per_second: float, stop_at: float,
          answered, failed) -> None:
    """One client process: rounds of four exchanges at ``per_second`` exchanges a second."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    from connectors.client import GatewayClient

    la = GatewayClient.from_directory(url, certs["la"])
    health = GatewayClient.from_directory(url, certs["health"])
    n, next_at = 0, time.monotonic()
    while time.monotonic() < stop_at:
        record = child_update(index * 10_000_000 + n, run_id)
        user = f"soak-{index}-{n % USERS}"
        identity = record["Identity"]
        steps = (
            lambda: la.submit_updates([record]),
            lambda: health.find_child(user_id=user, role="gp", family_name=identity["FamilyName"],
                                      date_of_birth=identity["DateOfBirth"], **REASON),
            None,  # GetContacts of what FindChild found
            lambda: la.ping(user_id=user, role="onboarding"),
        )
        found = None
        for operation, step in zip(ROUND, steps):
            try:
                if operation == "GetContacts":
                    if found:
                        health.get_contacts(found[0].child_id, user_id=user, role="gp", **REASON)
                else:
                    result = step()
                    if operation == "FindChild":
                        found = result
                with answered.get_lock():
                    answered.value += 1
            except Exception:  # counted: a soak measures memory, and says how many failed
                with failed.get_lock():
                    failed.value += 1
            next_at += 1 / per_second
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -5:  # far behind (a slow machine): do not try to catch up in a burst
                next_at = time.monotonic()
        n += 1


# ---- the run ---------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to soak (default: 30)")
    parser.add_argument("--rate", type=float, default=13.0, help="exchanges a second in all (default: 13)")
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes (default: 2)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default: 2)")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds between two memory readings (default: 60)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="readings before the growth is measured (default: 5: the bounded caches fill "
                             "in about that at 13 exchanges/s)")
    parser.add_argument("--database-url", default=None, help="a scratch database (default: SQLite in the home)")
    parser.add_argument("--redis-url", default=None, help="Redis for the rate counters (default: embedded)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python bench/soak.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.system()} {platform.machine()}, "
          f"{os.cpu_count()} CPUs ({cpu}); Python {platform.python_version()}")
    print(f"command: {command}")
    backend = ("PostgreSQL" if args.database_url else "SQLite") + (" + Redis" if args.redis_url else "")
    print(f"{args.workers} workers, {args.clients} clients, {args.rate:g} exchanges/s, {backend}, "
          f"{args.minutes:g} min")
    with tempfile.TemporaryDirectory(prefix="contactgate-soak-") as directory:
        gateway = GatewayUnderTest(home=Path(directory) / "home", database_url=args.database_url,
                                   redis_url=args.redis_url)
        try:
            gateway.cli("init")
            gateway.add_org("la", "local_authority", ["push", "query"])
            gateway.add_org("health", "health", ["query"])
            gateway.start(workers=args.workers)
            return soak(args, gateway)
        finally:
            gateway.stop()
            gateway.drop_redis_keys()


def soak(args, gateway) -> int:
    master = gateway.process.pid
    answered, failed = mp.Value("q", 0), mp.Value("q", 0)
    started = time.monotonic()
    stop_at = started + args.minutes * 60
    clients = [mp.Process(target=drive, args=(i, gateway.url, gateway.certs, gateway.run_id,
                                              args.rate / args.clients, stop_at, answered, failed))
               for i in range(args.clients)]
    for client in clients:
        client.start()
    readings: dict[int, list[tuple[float, float]]] = {}  # worker -> (minutes, MiB)
    pids = workers_of(master)
    print("minute  exchanges  per s  errors  " + "  ".join(f"worker {pid:>7}" for pid in pids) + "  master")
    last_count, last_at, reading = 0, started, 0
    try:
        while True:
            now = time.monotonic()
            minutes = (now - started) / 60
            count = answered.value
            for pid in workers_of(master):
                mib = rss_mib(pid)
                if mib is not None:
                    readings.setdefault(pid, []).append((minutes, mib))
            if set(workers_of(master)) != set(pids):
                pids = workers_of(master)
                print("        (workers replaced: " + ", ".join(map(str, pids)) + ")")
            columns = "  ".join(f"{readings[p][-1][1]:10.1f} MiB" if p in readings else " " * 14 for p in pids)
            rate = (count - last_count) / max(now - last_at, 1e-9)
            print(f"{minutes:6.1f}  {count:9d}  {rate:5.1f}  {failed.value:6d}  {columns}  "
                  f"{rss_mib(master) or 0:6.1f} MiB", flush=True)
            last_count, last_at = count, now
            if now >= stop_at or not any(c.is_alive() for c in clients):
                break
            reading += 1
            time.sleep(max(0.0, min(started + reading * args.interval, stop_at) - time.monotonic()))
    finally:
        for client in clients:
            client.join(timeout=30)
            if client.is_alive():
                client.terminate()
    print(f"answered {answered.value}, failed {failed.value}")
    print(f"growth after {args.warmup} readings of warm-up (MiB a minute, least squares):")
    for pid, points in sorted(readings.items()):
        kept = points[args.warmup:]
        if len(kept) < 2:
            print(f"  worker {pid}: too few readings")
            continue
        mean_t = sum(t for t, _ in kept) / len(kept)
        mean_m = sum(m for _, m in kept) / len(kept)
        slope = (sum((t - mean_t) * (m - mean_m) for t, m in kept)
                 / max(sum((t - mean_t) ** 2 for t, _ in kept), 1e-12))
        print(f"  worker {pid}: {kept[0][1]:.1f} -> {kept[-1][1]:.1f} MiB over {kept[-1][0] - kept[0][0]:.1f} min, "
              f"{slope:+.2f} MiB/min")
    return 0 if failed.value == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
