"""Throughput of signed GetContacts over real mutual TLS, next to the bare cost of the signatures.

    python bench/throughput.py                      # SQLite + embedded store, 10 s, 4 clients
    python bench/throughput.py --seconds 30 --clients 8 --workers 4
    python bench/throughput.py --requests 2000
    python bench/throughput.py --database-url postgresql+psycopg://u@host/scratch \\
                               --redis-url redis://127.0.0.1:6379/0
    python bench/throughput.py --presigned 6000     # the server alone (below)

One run does two things (DESIGN.md "Scale and speed": the per-message cost should be dominated by
the XML signature work):

1. Gateway, end to end. A temporary home is set up with the real CLI (`contactgate init`, an LA
   organisation with push + query, a HEALTH organisation with query, certificates from `cert
   issue`), `python -m gateway serve` is started on a free loopback port, LA pushes some children
   with SubmitUpdates, and then several client *processes* each build one `GatewayClient` (keys
   loaded once) and call `get_contacts` in a loop: a freshly signed request each time, sent over
   the client's one keep-alive TLS connection, with the signed response verified. Latency is per
   call, client-side signing and response verification included.
2. Bare cost, in this process, no gateway: the same kind of message signed by the client, parsed
   and verified as the gateway does, and the gateway's response signed; from that, how many
   exchanges one core could do if signatures were the only work.

With ``--presigned N`` the end-to-end load is replaced by one that measures the server, not the
clients: before the clock starts, worker processes sign N unique GetContacts requests (each with a
fresh Timestamp and its own replay key, valid for the run) and 20 SubmitUpdates of 100 new records;
then a thin load generator (http.client over keep-alive mutual TLS, a few connections per process)
replays the GetContacts, checking each answer's status and fault code and verifying the signature of
one answer in 25; then the SubmitUpdates are sent one after another. Reported: server exchanges/s,
latency, server CPU per exchange and its ratio to the server's own signature work (verify + sign,
measured in the same run), and SubmitUpdates latency.

The ratio of the two (gateway exchanges/s per core / bare exchanges/s per core) is the share of
each exchange's CPU that is signature work. Server and client CPU are also measured (from /proc and
`time.process_time`), so the server's own share can be read without the clients in the way.

With --database-url the run's organisations and children stay in that database: use a scratch one.
Redis keys are written under a per-run prefix and deleted afterwards.
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime as dt
import math
import multiprocessing as mp
import os
import platform
import queue as queue_module
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from contactgate_local import LocalGateway

ROLE = "gp"
REASON = dict(reason_code="care_coordination", reason_text="throughput benchmark")
# The gateway limits each user to 600 messages a minute: spread the load over enough practitioners
# that no user comes near it (each client process has its own).
USERS_PER_CLIENT = 1000
WARMUP_REQUESTS = 3  # per client, before the clock starts: TLS handshake, zeep caches
SEED_BATCH = 50


# ---- set-up through the CLI, and the server ---------------------------------------------------------


@dataclass
class GatewayUnderTest(LocalGateway):
    """A temporary gateway home made with the CLI and `python -m gateway serve` running on it
    (contactgate_local.LocalGateway, as `contactgate demo` and the tests use), with what the benchmark
    adds: organisation codes suffixed with a run id, the server in its own session, the organisation
    rate limit lifted, and its Redis keys under a per-run prefix, deleted afterwards."""

    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    # Its own session: a Ctrl-C in the terminal reaches only the benchmark, which then stops the
    # clients first and the server last (see `main`).
    start_new_session: bool = True

    def __post_init__(self) -> None:
        if self.redis_url and self.redis_prefix is None:
            self.redis_prefix = f"cgbench-{self.run_id}"
        # The organisation limit (60 000 a minute) is within reach of a big machine: lift it. The
        # counter is still incremented on every message, so the work is the same.
        self.extra_env.setdefault("CONTACTGATE_RATE_LIMIT_PER_ORG", str(10**9))

    def add_org(self, name: str, kind: str, scopes: list[str]) -> Path:
        """Register, accredit and approve NAME-<run id> (suffixed, so a shared --database-url can take
        several runs), with its certificate in ``certs[name]``."""
        code = f"{name.upper()}-{self.run_id}"
        super().add_org(code, kind, scopes)  # proposed and approved by two of the local officers
        out = self.certs[name] = self.certs.pop(code.lower())
        return out

    cluster: object = None  # contactgate_local.nginx.Cluster with --nodes

    def server_masters(self) -> list[int]:
        if self.cluster is not None:
            return [node.pid for node in self.cluster.nodes if node is not None]
        return [self.process.pid]

    def proxy_masters(self) -> list[int]:
        return [self.cluster.nginx.pid] if self.cluster is not None else []

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        super().stop()

    def signing_key_kind(self) -> str:
        """What signs the gateway's answers: "RSA-2048", "EC P-256"."""
        from cryptography.hazmat.primitives.asymmetric import ec

        from contactgate_wire.certificates import load_cert_pem
        from gateway.config import Settings

        key = load_cert_pem(Settings(home=self.home, database_url=self.database_url)
                            .layout.signing_cert.read_bytes()).public_key()
        return f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else f"RSA-{key.key_size}"

    def drop_redis_keys(self) -> None:
        if not self.redis_url:
            return
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(f"{self.redis_prefix}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
        finally:
            client.close()


def _distinct_name(n: int, multiplier: int) -> str:
    """A name of letters for each n, unlike every other n's (the gateway compares names by their
    letters, typos allowed: "Benchmark1" and "Benchmark2" would be one child)."""
    letters, value, name = "bcdfghjklmnprstvwz", (n + 1) * multiplier, ""
    for _ in range(8):
        value, digit = divmod(value * 2654435761 % 2**32 + n, len(letters))
        name += letters[digit] + "aeiou"[digit % 5]
    return name.title()


def household_postcode(n: int) -> str:
    """A Leeds-like postcode, shared by children 2k and 2k+1 (as in life, a postcode holds a handful of
    households, so a new record meets few held children of its postcode)."""
    letters, m = "ABDEFGHJLNPQRSTUWXYZ", n // 2
    return f"LS{1 + m % 28} {m // 28 % 10}{letters[m // 280 % 20]}{letters[m // 5600 % 20]}"


ONE_POSTCODE = "LS1 1AA"


def child_update(n: int, run_id: str, postcode: str | None = None) -> dict:
    """One child record as a local authority would push it: identity, address, carer, settings and
    two current involvements (so GetContacts has contacts to return). ``postcode``: the same one
    for every child (the worst case for matching: see --one-postcode) instead of the child's own."""
    return {
        "SourceRecordId": f"bench-{run_id}-{n}",
        "Identity": {"FamilyName": _distinct_name(n, 7919), "GivenName": [_distinct_name(n, 104729)],
                     "DateOfBirth": (dt.date(2012, 1, 1) + dt.timedelta(days=n * 7 % 3000)).isoformat(),
                     "Gender": "female" if n % 2 else "male"},
        "Address": {"Line1": f"{n} High Street", "Town": "Leeds",
                    "Postcode": postcode or household_postcode(n)},
        "Carer": [{"Name": "Pat Parent", "Relationship": "mother", "Phone": "0113 496 0000"}],
        "EducationalSetting": {"Name": "Hillside Primary", "Code": "URN100001"},
        "GpPractice": {"Name": "Park Surgery", "Code": "B86001", "Phone": "0113 496 0001"},
        "Involvement": [
            {"Service": "Children's social care", "PractitionerName": "Sam Worker", "Role": "social worker",
             "Phone": "0113 496 0002", "Email": "sam.worker@la.example", "Start": "2024-01-10",
             "CafAssessment": True, "LeadProfessional": True},
            {"Service": "Early help", "PractitionerName": "Jo Helper", "Role": "family support worker",
             "Phone": "0113 496 0003", "Start": "2024-03-01", "CafAssessment": False,
             "LeadProfessional": False},
        ],
    }


# ---- CPU accounting of the server (master + workers) --------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used since boot (every CPU, idle excluded)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS  # user..steal; guest time is already in user


def server_cpu(master_pid: int) -> dict[int, float]:
    """CPU seconds used so far by the gunicorn master and each of its workers, by pid."""
    usage = {}
    master = _proc_stat(master_pid)
    if master is not None:
        usage[master_pid] = master[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] == master_pid:
                usage[int(entry.name)] = stat[1]
    return usage


def connections_per_worker(master_pid: int, port: int) -> dict[int, int]:
    """Established TLS connections each gunicorn worker holds on ``port`` (from /proc/net/tcp and
    the workers' file descriptors). With keep-alive a connection stays on the worker that accepted
    it, so this is how the load is split between workers."""
    local = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":  # ESTABLISHED, server side
            inodes.add(fields[9])
    held = {}
    for pid in server_cpu(master_pid):
        if pid == master_pid:
            continue
        count = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    count += 1
        except OSError:
            continue
        held[pid] = count
    return held


# ---- the client processes ---------------------------------------------------------------------------

@dataclass
class ClientResult:
    index: int
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls only
    errors: collections.Counter = field(default_factory=collections.Counter)
    started: float = 0.0    # time.monotonic(): comparable across processes on Linux
    finished: float = 0.0
    cpu_s: float = 0.0      # this process's CPU during the measured window
    connections: int = 0    # TLS connections the session's pool opened (warm-up included)
    pool_requests: int = 0
    failure: str | None = None  # set-up failed: nothing was measured


def client_process(index: int, url: str, cert_dir: str, child_ids: list[str], quota: int | None,
                   seconds: float | None, barrier, results) -> None:
    """One client: one GatewayClient (keys and WSDL loaded once), one requests session, a loop of
    signed GetContacts. Runs in its own process (spawned), so client-side crypto runs in parallel."""
    result = ClientResult(index)
    try:
        import requests

        from connectors.client import GatewayClient, GatewayFault, ResponseNotTrusted

        client = GatewayClient.from_directory(url, cert_dir)

        def call(i: int) -> None:
            # A different child (and a fresh Timestamp and signature) each time: never a Replay.
            client.get_contacts(child_ids[(index * 7919 + i) % len(child_ids)],
                                user_id=f"bench.c{index}.u{i % USERS_PER_CLIENT}", role=ROLE, **REASON)

        for i in range(WARMUP_REQUESTS):
            call(i)
    except KeyboardInterrupt:
        return
    except BaseException as exc:  # report, and release everyone waiting at the barrier
        result.failure = f"client {index} could not start: {type(exc).__name__}: {exc}"
        barrier.abort()
        results.put(result)
        return

    try:
        barrier.wait()
        deadline = time.monotonic() + seconds if seconds else math.inf
        cpu0 = time.process_time()
        result.started = time.monotonic()
        i = WARMUP_REQUESTS
        while (quota is None or i - WARMUP_REQUESTS < quota) and time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                call(i)
            except GatewayFault as fault:
                result.errors[f"fault {fault.code}"] += 1
            except ResponseNotTrusted:
                result.errors["response not trusted"] += 1
            except requests.RequestException as exc:
                result.errors[f"transport {type(exc).__name__}"] += 1
            except Exception as exc:  # count it and go on: the run reports errors, never hides them
                result.errors[f"client {type(exc).__name__}"] += 1
            else:
                result.latencies.append(time.perf_counter() - t0)
            i += 1
        result.finished = time.monotonic()
        result.cpu_s = time.process_time() - cpu0
        # Keep-alive check: how many connections the session's pool actually opened.
        pools = client.session.get_adapter(client.endpoint).poolmanager.pools
        for key in pools.keys():
            pool = pools[key]
            result.connections += pool.num_connections
            result.pool_requests += pool.num_requests
    except KeyboardInterrupt:
        return
    except BaseException as exc:
        result.failure = f"client {index} failed: {type(exc).__name__}: {exc}"
    results.put(result)


@dataclass
class LoadResult:
    clients: list[ClientResult]
    wall_s: float
    server_cpu_s: float
    worker_cpu_s: list[float]
    worker_connections: list[int]  # client connections each worker held, same order
    machine_cpu_s: float  # everything on the machine: server, clients, database, Redis, ...

    @property
    def latencies(self) -> list[float]:
        return sorted(x for c in self.clients for x in c.latencies)

    @property
    def ok(self) -> int:
        return sum(len(c.latencies) for c in self.clients)

    @property
    def errors(self) -> collections.Counter:
        total = collections.Counter()
        for c in self.clients:
            total.update(c.errors)
        return total

    @property
    def client_cpu_s(self) -> float:
        return sum(c.cpu_s for c in self.clients)


def run_load(gateway: GatewayUnderTest, child_ids: list[str], *, clients: int, seconds: float | None,
             requests: int | None) -> LoadResult:
    ctx = mp.get_context("spawn")  # fresh interpreters: nothing of this process's state is shared
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    quotas = [None] * clients
    if requests:
        quotas = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    processes = [
        ctx.Process(target=client_process, name=f"bench-client-{i}",
                    args=(i, gateway.url, str(gateway.certs["health"]), child_ids, quotas[i],
                          None if requests else seconds, barrier, results))
        for i in range(clients)
    ]
    return run_measured(gateway, processes, barrier, results, "client process", (seconds or 0) + 3600)[0]


def run_measured(gateway: GatewayUnderTest, processes: list, barrier, results, what: str,
                 timeout_s: float) -> tuple[LoadResult, float]:
    """Start the load ``processes``, wait until each is ready (``barrier``), then measure the server's
    and the machine's CPU while they run; their results come from ``results``. Returns the load and
    the proxy's CPU seconds (nginx, with --nodes)."""
    try:
        for p in processes:
            p.start()
        try:
            barrier.wait(timeout=300)  # every load process warmed up and connected
        except threading.BrokenBarrierError:
            failures = _drain(results, processes, timeout=10)
            raise RuntimeError("\n".join(r.failure for r in failures if r.failure)
                               or f"a {what} died during set-up") from None
        masters = gateway.server_masters()
        cpu_before, machine_before = _cpu_of(masters), machine_busy_s()
        proxy_before = _cpu_of(gateway.proxy_masters())
        held = connections_per_worker(masters[0], gateway.port) if len(masters) == 1 else {}
        collected = _drain(results, processes, timeout=timeout_s)
        cpu_after, machine_after = _cpu_of(masters), machine_busy_s()
        proxy_after = _cpu_of(gateway.proxy_masters())
    finally:
        for p in processes:
            if p.pid is None:  # never started
                continue
            if p.is_alive():
                p.terminate()
            p.join(10)
    failed = [r.failure for r in collected if r.failure]
    if failed or len(collected) != len(processes):
        raise RuntimeError("\n".join(failed) or f"a {what} died without reporting")
    common = cpu_before.keys() & cpu_after.keys()  # a worker restarted mid-run would drop out
    worker_pids = [pid for pid in sorted(common) if pid not in masters]
    load = LoadResult(
        clients=sorted(collected, key=lambda r: r.index),
        wall_s=max(r.finished for r in collected) - min(r.started for r in collected),
        server_cpu_s=sum(cpu_after[pid] - cpu_before[pid] for pid in common),
        worker_cpu_s=[cpu_after[pid] - cpu_before[pid] for pid in worker_pids],
        worker_connections=[held.get(pid, 0) for pid in worker_pids],
        machine_cpu_s=machine_after - machine_before,
    )
    return load, sum(proxy_after.get(pid, 0) - cpu for pid, cpu in proxy_before.items())


def _cpu_of(masters: list[int]) -> dict[int, float]:
    """CPU seconds of each process of these servers (masters and their children), by pid."""
    usage: dict[int, float] = {}
    for master in masters:
        usage.update(server_cpu(master))
    return usage


def _drain(results, processes, timeout: float) -> list[ClientResult]:
    """Collect one result per client (before joining them: a full queue would block the child)."""
    collected = []
    deadline = time.monotonic() + timeout
    while len(collected) < len(processes) and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=1))
        except queue_module.Empty:
            if not any(p.is_alive() for p in processes) and results.empty():
                break
    return collected


# ---- pre-signed load: the server, not the clients ------------------------------------------------------

SUBMIT_BATCHES = 20
SUBMIT_RECORDS = 100
VERIFY_EVERY = 25  # the load generator verifies the signature of one answer in this many


def presign_process(index: int, url: str, cert_dir: str, operation: str, calls: list[dict], out) -> None:
    """Sign ``calls`` (keyword arguments of ``operation``) with the organisation's key, each with a
    fresh Timestamp: distinct signatures, so distinct replay keys."""
    from connectors.client import GatewayClient

    client = GatewayClient.from_directory(url, cert_dir)
    out.put((index, [client.build_request(operation, **call) for call in calls]))


def presign(url: str, cert_dir: str, operation: str, calls: list[dict], processes: int) -> list[bytes]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    shares = [calls[i::processes] for i in range(processes)]
    workers = [ctx.Process(target=presign_process, args=(i, url, cert_dir, operation, share, out))
               for i, share in enumerate(shares) if share]
    for w in workers:
        w.start()
    signed = dict(out.get(timeout=600) for _ in workers)
    for w in workers:
        w.join(10)
    return [m for i in sorted(signed) for m in signed[i]]


@dataclass
class ReplayResult:
    index: int
    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter = field(default_factory=collections.Counter)
    verified: int = 0
    started: float = 0.0
    finished: float = 0.0
    cpu_s: float = 0.0
    failure: str | None = None


def _tls_context(cert_dir: Path):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_dir / "ca.pem"))
    context.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    return context


def replay_process(index: int, port: int, cert_dir: str, operation: str, messages: list[bytes],
                   connections: int, barrier, results) -> None:
    """Send pre-signed ``messages`` over ``connections`` keep-alive TLS connections (one thread each),
    as fast as the answers come; check each answer's status and fault code, and verify one answer's
    signature and RequestDigest in VERIFY_EVERY."""
    import http.client
    import re

    from lxml import etree

    from contactgate_wire.answers import AnswerVerifier
    from contactgate_wire.certificates import TrustAnchors, load_certs_pem
    from contactgate_wire.soap import SOAP_ACTION_PREFIX, SOAP_PATH, digest_b64

    result = ReplayResult(index)
    directory = Path(cert_dir)
    fault_code = re.compile(rb"<(?:[A-Za-z0-9]+:)?Code>([A-Za-z]+)</")
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}{operation}"'}
    lock = threading.Lock()
    pending = iter(enumerate(messages))
    try:
        context = _tls_context(directory)
        verifier = AnswerVerifier(TrustAnchors.from_files([directory / "ca.pem"]),
                                  load_certs_pem((directory / "gateway-signing.pem").read_bytes()))
        conns = [http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
                 for _ in range(connections)]
        for conn in conns:
            conn.connect()  # the handshake before the clock
    except BaseException as exc:
        result.failure = f"load generator {index} could not start: {type(exc).__name__}: {exc}"
        barrier.abort()
        results.put(result)
        return

    def run(conn) -> None:
        while True:
            with lock:
                item = next(pending, None)
            if item is None:
                return
            n, message = item
            t0 = time.perf_counter()
            try:
                conn.request("POST", SOAP_PATH, body=message, headers=headers)
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    result.errors[f"transport {type(exc).__name__}"] += 1
                conn.close()
                continue
            elapsed = time.perf_counter() - t0
            found = fault_code.search(answer) if response.status != 200 or b"Fault>" in answer else None
            problem = f"HTTP {response.status}" + (f" {found.group(1).decode()}" if found else "") \
                if response.status != 200 or found else None
            if problem is None and n % VERIFY_EVERY == 0:
                try:
                    verifier.verify(etree.fromstring(answer), digest_b64(message))
                    result.verified += 1
                except Exception as exc:
                    problem = f"answer not trusted: {exc}"
            with lock:
                if problem:
                    result.errors[problem] += 1
                else:
                    result.latencies.append(elapsed)

    try:
        barrier.wait()
        cpu0 = time.process_time()
        result.started = time.monotonic()
        threads = [threading.Thread(target=run, args=(conn,)) for conn in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        result.finished = time.monotonic()
        result.cpu_s = time.process_time() - cpu0
    except KeyboardInterrupt:
        return
    except BaseException as exc:
        result.failure = f"load generator {index} failed: {type(exc).__name__}: {exc}"
    results.put(result)


@dataclass
class PresignedResult:
    load: LoadResult
    verified: int
    submit_latencies: list[float]
    submit_server_cpu_s: float
    proxy_cpu_s: float = 0.0  # nginx, with --nodes


def run_presigned(gateway: GatewayUnderTest, messages: list[bytes], submits: list[bytes], *,
                  processes: int, connections: int) -> PresignedResult:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    results = ctx.Queue()
    cert_dir = str(gateway.certs["health"])
    generators = [ctx.Process(target=replay_process, name=f"bench-replay-{i}",
                              args=(i, gateway.port, cert_dir, "GetContacts", messages[i::processes],
                                    connections, barrier, results))
                  for i in range(processes)]
    load, proxy_cpu = run_measured(gateway, generators, barrier, results, "load generator", 3600)
    collected = load.clients
    masters = gateway.server_masters()

    # SubmitUpdates of 100 records, one after another on one connection: latency, not throughput.
    import http.client

    from contactgate_wire.soap import SOAP_ACTION_PREFIX, SOAP_PATH

    conn = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=_tls_context(gateway.certs["la"]),
                                       timeout=120)
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}SubmitUpdates"'}
    latencies = []
    cpu0 = sum(_cpu_of(masters).values())
    for message in submits:
        t0 = time.perf_counter()
        conn.request("POST", SOAP_PATH, body=message, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        latencies.append(time.perf_counter() - t0)
        if response.status != 200 or answer.count(b"created</") < SUBMIT_RECORDS:
            raise RuntimeError(f"a pre-signed SubmitUpdates was not applied whole: HTTP {response.status} "
                               f"{answer[:300]!r}")
    submit_cpu = sum(_cpu_of(masters).values()) - cpu0
    conn.close()
    return PresignedResult(load, sum(r.verified for r in collected), sorted(latencies), submit_cpu, proxy_cpu)


def print_outcome(load: "LoadResult", rate: float, rate_note: str) -> None:
    """The lines both modes print first: requests and errors, exchanges/s, latency."""
    ok, errors, lat = load.ok, load.errors, load.latencies
    ms = lambda s: f"{s * 1e3:.2f}"  # noqa: E731
    print(f"  requests        {ok + sum(errors.values())}   ok {ok}   errors {sum(errors.values())}"
          + (f"  ({', '.join(f'{k}: {v}' for k, v in errors.most_common())})" if errors else ""))
    print(f"  exchanges/s     {rate:.1f}   ({rate_note})")
    if lat:
        print(f"  latency ms      p50 {ms(percentile(lat, 50))}   p90 {ms(percentile(lat, 90))}   "
              f"p99 {ms(percentile(lat, 99))}   max {ms(lat[-1])}")


def report_presigned(args, gateway: GatewayUnderTest, children: int, bare: BareCost,
                     result: PresignedResult) -> None:
    from gateway.config import Settings

    load = result.load
    cores = len(os.sched_getaffinity(0))
    backend = ("PostgreSQL" if gateway.database_url.startswith("postgresql") else "SQLite") + \
        (" + Redis" if gateway.redis_url else " + embedded store")
    ok = load.ok
    rate = ok / load.wall_s if load.wall_s > 0 else 0.0
    ms = lambda s: f"{s * 1e3:.2f}"  # noqa: E731
    print("ContactGate server throughput: pre-signed GetContacts replayed over mutual TLS, keep-alive")
    print(f"machine      {machine()}")
    nodes = f"{args.nodes} nodes behind nginx, each " if args.nodes else ""
    where = f"all at {ONE_POSTCODE}" if args.one_postcode else "a postcode per household"
    print(f"gateway      {backend}; {nodes}{args.workers} workers x {Settings.threads} threads; {children} children "
          f"({where}); signing key {gateway.signing_key_kind()}")
    print(f"load         {args.presigned} requests signed before the clock; {args.replayers} load generator "
          f"processes x {args.connections} connections; one answer in {VERIFY_EVERY} verified "
          f"({result.verified} verified)")
    print()
    print_outcome(load, rate, f"over {load.wall_s:.2f} s")
    if ok:
        server_ms = load.server_cpu_s / ok
        crypto = bare.gateway_verify + bare.gateway_sign
        other = max(0.0, load.machine_cpu_s - load.server_cpu_s - load.client_cpu_s)
        print(f"  CPU/exchange    server {ms(server_ms)} ms + load generator {ms(load.client_cpu_s / ok)} ms + "
              f"rest of machine {ms(other / ok)} ms   (machine {load.machine_cpu_s / (load.wall_s * cores):.0%} busy)")
        if args.nodes:
            print(f"  nginx           {ms(result.proxy_cpu_s / ok)} ms CPU per exchange (TLS, proxying)")
        print(f"  signature work  verify {ms(bare.gateway_verify)} ms + sign {ms(bare.gateway_sign)} ms = "
              f"{ms(crypto)} ms: server CPU per exchange is {server_ms / crypto:.2f} x its signature work")
    sub = result.submit_latencies
    if sub:
        print(f"  SubmitUpdates   {len(sub)} x {SUBMIT_RECORDS} new records, one after another: latency ms "
              f"p50 {ms(percentile(sub, 50))}   p90 {ms(percentile(sub, 90))}   max {ms(sub[-1])}; "
              f"server CPU {ms(result.submit_server_cpu_s / len(sub))} ms per batch")


# ---- the bare cost of the signatures, without the gateway -------------------------------------------

@dataclass
class BareCost:
    """Mean seconds per message of each step."""

    client_sign: float
    gateway_verify: float
    gateway_sign: float
    client_verify: float
    signer_chain_check: float
    request_bytes: int
    response_bytes: int

    @property
    def sign_verify_sign(self) -> float:
        return self.client_sign + self.gateway_verify + self.gateway_sign


def _timed(fn, prepare, iterations: int) -> float:
    """Mean seconds of ``fn(prepare(i))`` over ``iterations`` (``prepare`` is not timed)."""
    for i in range(min(20, iterations)):  # warm-up
        fn(prepare(i))
    total = 0.0
    for i in range(iterations):
        argument = prepare(i)
        t0 = time.perf_counter()
        fn(argument)
        total += time.perf_counter() - t0
    return total / iterations


def measure_bare_cost(gateway: GatewayUnderTest, child_ids: list[str], iterations: int) -> BareCost:
    """Time the signature steps of one exchange in this process, with the keys the run uses.

    (a) client: EnvelopeSigner.sign of a GetContacts envelope as zeep builds it, serialised;
    (b) gateway: parse_untrusted + extract_signer_certificate + wsse.verify of those bytes;
    (c) gateway: respond.signed_response of a real GetContacts answer (captured from the server);
    (d) client: ResponseVerifier.verify of the signed answer (chain, pin, signature, timestamp) —
        reported, but not in the sign+verify+sign ceiling;
    and the gateway's chain check of the signer (TrustAnchors.verify_client), likewise.
    """
    import zeep
    from lxml import etree
    from zeep.wsdl.utils import etree_to_string

    from connectors.client import BINDING, GatewayClient, request_digest
    import contactgate_schemas as schemas
    from gateway.app import trust_anchor_files
    from gateway.config import Settings
    from gateway.pipeline.respond import signed_response
    from contactgate_wire import wsse
    from contactgate_wire.soap import SOAP_ACTION_PREFIX, SOAP_ENV, parse_untrusted, q
    from gateway.trust.pki import TrustAnchors

    client = GatewayClient.from_directory(gateway.url, gateway.certs["health"])
    org_signer = client.signer  # the health organisation's key, loaded once
    settings = Settings(home=gateway.home, database_url=gateway.database_url)
    gateway_signer = wsse.EnvelopeSigner(settings.layout.signing_key.read_bytes(),
                                         settings.layout.signing_cert.read_bytes())
    anchors = TrustAnchors.from_files(trust_anchor_files(settings))

    # Unsigned GetContacts envelopes, one per child, exactly as zeep builds them for the SDK (a zeep
    # client without the wsse hook, so they come out unsigned).
    from importlib import resources

    plain = zeep.Client(str(resources.files("contactgate_schemas").joinpath(schemas.WSDL_NAME)))
    service = plain.create_service(BINDING, client.endpoint)
    templates = [
        plain.create_message(service, "GetContacts", ChildId=child_id,
                             Requester={"UserId": f"bench.bare.u{n}", "Role": ROLE},
                             Reason={"_value_1": REASON["reason_text"], "code": REASON["reason_code"]})
        for n, child_id in enumerate(child_ids[:50])
    ]

    def sign_request(envelope):
        org_signer.sign(envelope)
        return etree_to_string(envelope)

    signed = [sign_request(copy.deepcopy(t)) for t in templates]

    # One real exchange, to have the gateway's actual GetContacts answer to re-sign and verify.
    response = client.session.post(client.endpoint, data=signed[0], headers={
        "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION_PREFIX}GetContacts"'})
    if response.status_code != 200:
        raise RuntimeError(f"the sample exchange failed ({response.status_code}): {response.text[:500]}")
    answer = etree.fromstring(response.content)
    client.verifier.verify(answer, request_digest(signed[0]))
    payload = answer.find(q(SOAP_ENV, "Body"))[0]
    services = SimpleNamespace(signer=gateway_signer, clock=lambda: dt.datetime.now(dt.timezone.utc))
    responses = [signed_response(copy.deepcopy(payload), services) for _ in range(10)]

    def gateway_verify(data: bytes):
        envelope = parse_untrusted(data)
        return wsse.verify(envelope, wsse.extract_signer_certificate(envelope))

    client.session.close()
    return BareCost(
        client_sign=_timed(sign_request, lambda i: copy.deepcopy(templates[i % len(templates)]), iterations),
        gateway_verify=_timed(gateway_verify, lambda i: signed[i % len(signed)], iterations),
        gateway_sign=_timed(lambda p: signed_response(p, services), lambda i: copy.deepcopy(payload),
                            iterations),
        client_verify=_timed(lambda data: client.verifier.verify(etree.fromstring(data), None),
                             lambda i: responses[i % len(responses)], iterations),
        signer_chain_check=_timed(anchors.verify_client, lambda i: org_signer.certificate, iterations),
        request_bytes=len(signed[0]),
        response_bytes=len(responses[0]),
    )


# ---- report -----------------------------------------------------------------------------------------

def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{len(os.sched_getaffinity(0))} CPUs (nproc), {model}; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}")


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def report(args, gateway: GatewayUnderTest, children: int, bare: BareCost, load: LoadResult) -> None:
    from gateway.config import Settings

    threads = Settings.threads  # `serve` runs with the default unless --threads is given
    cores = len(os.sched_getaffinity(0))
    backend = ("PostgreSQL" if gateway.database_url.startswith("postgresql") else "SQLite") + \
        (" + Redis" if gateway.redis_url else " + embedded store")
    ok = load.ok
    rate = ok / load.wall_s if load.wall_s > 0 else 0.0
    bound = f"{args.requests} requests" if args.requests else f"{args.seconds:g} s"
    us = lambda s: f"{s * 1e6:7.0f} µs"  # noqa: E731
    ms = lambda s: f"{s * 1e3:.2f}"  # noqa: E731

    print("ContactGate throughput: signed GetContacts over mutual TLS, keep-alive")
    print(f"machine      {machine()}")
    print(f"gateway      {backend}; {args.workers} workers x {threads} threads (gunicorn, ContactGate's asyncio front); "
          f"{children} children seeded")
    print(f"load         {args.clients} client processes, {bound}, loopback")
    print()
    print("Gateway, end to end (latency includes client signing and response verification)")
    print_outcome(load, rate, f"{rate / cores:.1f} per core, over {load.wall_s:.2f} s")
    connections = sum(c.connections for c in load.clients)
    print(f"  TLS connections {connections} opened by {args.clients} clients for "
          f"{sum(c.pool_requests for c in load.clients)} requests (warm-up included)"
          + ("" if connections == args.clients else "   <-- keep-alive NOT holding"))
    if ok:
        other = max(0.0, load.machine_cpu_s - load.server_cpu_s - load.client_cpu_s)
        print(f"  CPU/exchange    server {ms(load.server_cpu_s / ok)} ms + clients "
              f"{ms(load.client_cpu_s / ok)} ms + rest of machine {ms(other / ok)} ms"
              f"   (machine {load.machine_cpu_s / (load.wall_s * cores):.0%} busy)")
        total = sum(load.worker_cpu_s) or 1.0
        split = "   ".join(f"{cpu:.2f} s ({cpu / total:.0%}, {n} conn)"
                           for cpu, n in zip(load.worker_cpu_s, load.worker_connections))
        print(f"  worker CPU      {split}")
        if len(load.worker_connections) > 1 and max(load.worker_connections) - min(load.worker_connections) > 1:
            print("                  (keep-alive connections stay on the worker that accepted them: this split"
                  " is uneven, so this run is slower than a balanced one would be)")
    print()
    print(f"Bare signature work, in-process, mean per message (request {bare.request_bytes} B, "
          f"response {bare.response_bytes} B)")
    print(f"  (a) client signs the GetContacts request        {us(bare.client_sign)}")
    print(f"  (b) gateway parses and verifies it              {us(bare.gateway_verify)}")
    print(f"  (c) gateway signs the response                  {us(bare.gateway_sign)}")
    ceiling = 1 / bare.sign_verify_sign
    print(f"  sign+verify+sign (a+b+c)                        {us(bare.sign_verify_sign)}"
          f"  = {ms(bare.sign_verify_sign)} ms -> {ceiling:.0f} exchanges/s on one core")
    print(f"  not in the ceiling: (d) client verifies response {us(bare.client_verify)};"
          f" gateway chain check of signer {us(bare.signer_chain_check)}")
    print()
    print("Ratio")
    share = (rate / cores) / ceiling
    print(f"  gateway {rate / cores:.1f} exchanges/s per core / bare {ceiling:.0f} per core = {share:.3f}"
          f"  -> sign+verify+sign is {share:.0%} of the machine time each exchange takes here")
    if ok:
        server_ms = load.server_cpu_s / ok
        server_crypto = bare.gateway_verify + bare.gateway_sign
        print(f"  server alone: (b+c) {ms(server_crypto)} ms of {ms(server_ms)} ms server CPU per exchange"
              f" = {server_crypto / server_ms:.0%}")
        client_crypto = bare.client_sign + bare.client_verify
        print(f"  clients alone: (a+d) {ms(client_crypto)} ms of {ms(load.client_cpu_s / ok)} ms client CPU "
              f"per exchange = {client_crypto / (load.client_cpu_s / ok):.0%}")


# ---- main -------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2 * len(os.sched_getaffinity(0)),
                        help="gunicorn worker processes (default: twice the CPU count, as docs/operations.md "
                             "recommends)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default: 4)")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--seconds", type=float, default=10.0, help="measure for this long (default: 10)")
    bound.add_argument("--requests", type=int, default=None, help="or: send this many requests in all")
    parser.add_argument("--children", type=int, default=200, help="children to seed (default: 200)")
    parser.add_argument("--bare-iterations", type=int, default=500,
                        help="messages per step for the bare cost (default: 500)")
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL of a scratch database (default: SQLite in the temp home)")
    parser.add_argument("--redis-url", default=None, help="Redis for replay/rate limits (default: embedded)")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary home and print where")
    parser.add_argument("--signing-key", choices=["rsa", "ec"], default="rsa",
                        help="the gateway's response-signing key (contactgate init --signing-key; default rsa)")
    parser.add_argument("--presigned", type=int, default=None, metavar="N",
                        help="measure the server alone: replay N pre-signed GetContacts (and 20 SubmitUpdates "
                             "of 100 records) from a thin load generator instead of the SDK clients")
    parser.add_argument("--submit-batches", type=int, default=SUBMIT_BATCHES,
                        help=f"with --presigned: SubmitUpdates of {SUBMIT_RECORDS} new records to time "
                             f"(default: {SUBMIT_BATCHES})")
    parser.add_argument("--nodes", type=int, default=0,
                        help="with --presigned: this many `serve --behind-proxy` nodes (each --workers) behind "
                             "the shipped nginx configuration, instead of one `serve` (needs --database-url "
                             "and --redis-url: nodes share them)")
    parser.add_argument("--one-postcode", action="store_true",
                        help=f"every child at {ONE_POSTCODE} (the worst case for matching: each new record is "
                             "compared with as many held children as the gateway compares) instead of one "
                             "postcode per household")
    parser.add_argument("--replayers", type=int, default=1, help="with --presigned: load generator processes")
    parser.add_argument("--connections", type=int, default=8,
                        help="with --presigned: keep-alive connections per load generator (default: 8)")
    args = parser.parse_args(argv)
    if args.nodes and not (args.presigned and args.database_url and args.redis_url):
        parser.error("--nodes needs --presigned, --database-url and --redis-url")
    if args.clients < 1 or args.workers < 1 or args.children < 1 or (args.requests is not None and args.requests < 1):
        parser.error("--clients, --workers, --children and --requests must be at least 1")
    return args


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt  # so the finally blocks stop the server and remove the home


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    home = Path(tempfile.mkdtemp(prefix="cg-bench-"))
    gateway = GatewayUnderTest(home=home, database_url=args.database_url or f"sqlite:///{home}/contactgate.db",
                               redis_url=args.redis_url)
    try:
        print(f"setting up a gateway home in {home} ...", file=sys.stderr)
        gateway.cli("init", "--signing-key", args.signing_key)
        gateway.add_org("la", "local_authority", ["push", "query"])
        gateway.add_org("health", "health", ["query"])
        if args.nodes:
            from contactgate_local.nginx import PROXY_ADDRESS, Cluster

            gateway.extra_env["CONTACTGATE_TRUSTED_PROXIES"] = PROXY_ADDRESS
            # nginx's own files beside the home, not in it (the home holds the gateway's files only)
            gateway.cluster = Cluster(gateway, Path(tempfile.mkdtemp(prefix="cg-bench-nginx-")), nodes=args.nodes,
                                      workers=args.workers)
            gateway.cluster.start()
            gateway.port = gateway.cluster.nginx_port  # clients reach the nodes through nginx
        else:
            gateway.start(args.workers, timeout_s=60)

        from connectors.client import GatewayClient

        postcode = ONE_POSTCODE if args.one_postcode else None
        print(f"seeding {args.children} children ...", file=sys.stderr)
        la = GatewayClient.from_directory(gateway.url, gateway.certs["la"])
        child_ids = []
        for start in range(0, args.children, SEED_BATCH):
            batch = [child_update(n, gateway.run_id, postcode)
                     for n in range(start, min(start + SEED_BATCH, args.children))]
            results = la.submit_updates(batch)
            child_ids += [r.child_id for r in results if r.outcome == "created" and r.child_id]
        la.session.close()  # only the load's connections should be open on the workers
        if len(child_ids) != args.children:
            raise RuntimeError(f"seeding created {len(child_ids)} of {args.children} children")

        # Bare cost first, while the gateway is idle, so nothing competes for the cores.
        print("measuring the bare signature cost ...", file=sys.stderr)
        bare = measure_bare_cost(gateway, child_ids, args.bare_iterations)

        if args.presigned:
            signers = len(os.sched_getaffinity(0))
            print(f"signing {args.presigned} GetContacts and {args.submit_batches} SubmitUpdates ...", file=sys.stderr)
            calls = [dict(ChildId=child_ids[n % len(child_ids)],
                          Requester={"UserId": f"bench.p.u{n % USERS_PER_CLIENT}", "Role": ROLE},
                          Reason={"_value_1": REASON["reason_text"], "code": REASON["reason_code"]})
                     for n in range(args.presigned)]
            messages = presign(gateway.url, str(gateway.certs["health"]), "GetContacts", calls, signers)
            batches = [dict(ChildUpdate=[child_update(n, gateway.run_id, postcode)
                                         for n in range(args.children + b * SUBMIT_RECORDS,
                                                        args.children + (b + 1) * SUBMIT_RECORDS)])
                       for b in range(args.submit_batches)]
            submits = presign(gateway.url, str(gateway.certs["la"]), "SubmitUpdates", batches, signers)
            print("replaying them ...", file=sys.stderr)
            result = run_presigned(gateway, messages, submits, processes=args.replayers,
                                   connections=args.connections)
            print(file=sys.stderr)
            report_presigned(args, gateway, len(child_ids), bare, result)
            return 1 if result.load.errors or not result.load.ok else 0
        print(f"driving the gateway with {args.clients} clients ...", file=sys.stderr)
        load = run_load(gateway, child_ids, clients=args.clients, seconds=args.seconds, requests=args.requests)
        print(file=sys.stderr)
        report(args, gateway, len(child_ids), bare, load)
        return 1 if load.errors or not load.ok else 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the gateway", file=sys.stderr)
        return 130
    except Exception:
        log = gateway.server_log()
        if log:
            print(f"--- server log (tail) ---\n{log}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        gateway.stop()
        try:
            gateway.drop_redis_keys()
        except Exception as exc:
            print(f"could not delete Redis keys {gateway.redis_prefix}:*: {exc}", file=sys.stderr)
        if args.keep_home:
            print(f"home kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
        if gateway.cluster is not None:
            shutil.rmtree(gateway.cluster.prefix, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
