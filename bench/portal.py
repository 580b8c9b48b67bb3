"""The practitioners' portal under load: many signed-in practitioners searching and opening children.

    python bench/portal.py                           # 50 practitioners, 20 s each phase, SQLite
    python bench/portal.py --users 50 --seconds 30 --workers 2 --soap-clients 2
    python bench/portal.py --database-url postgresql+psycopg://u@host/scratch --redis-url redis://127.0.0.1:6379/0

A temporary home is set up with the real CLI (bench/throughput.py's GatewayUnderTest: `contactgate
init`, an LA organisation with push + query, a HEALTH one with query), `contactgate serve` and
`contactgate portal` are started on free loopback ports (the portal behind its own front, real
HTTPS), LA pushes the children, and USERS practitioners of LA (health visitors: clearance and
training current, each with its own password and authenticator) are made and enrolled with the
portal's own account code (gateway.portal.accounts: argon2id at the product's cost). Then each
practitioner, in its own thread (spread over several client processes), signs in at the portal as a
person does (the sign-in form: password and a TOTP code computed by pyotp) and loops:

    search form (GET /) -> results (POST /search: family name with a letter swapped, date of birth,
    a reason) -> reason page (POST /child/reason) -> child's contacts (POST /child, with a reason)

Two phases of SECONDS each: the portal alone, then the portal with a SOAP GetContacts load running
alongside on the same gateway (bench/throughput.py's client processes: signed requests over mutual
TLS). Printed for each phase: pages a second, and the median and 95th percentile per kind of page;
with the machine, its load average and the command.

With --database-url the run's organisations, children and accounts stay in that database: use a
scratch one. Redis keys are written under a per-run prefix and deleted afterwards.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import queue as queue_module
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import throughput  # noqa: E402  (bench/throughput.py: the gateway under test, children, the SOAP load)

ROLE = "health visitor"
ROLES = {"roles": {ROLE: ["address", "carers", "settings", "practitioners", "lead_professional"],
                   throughput.ROLE: ["identifiers", "address", "carers", "carer_contact", "settings",
                                     "practitioners", "practitioner_contact", "lead_professional"]}}
PASSWORD = "bench portal practitioner passphrase"
SIGN_IN_PATIENCE_S = 600  # a loaded machine checks argon2id slowly: the throttle answers busy meanwhile
KINDS = ("sign-in", "search form", "results", "reason", "contacts")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
HANDLE = re.compile(r'name="handle" value="([^"]+)"')
LABEL = re.compile(r'name="label" value="([^"]*)"')


# ---- set-up -----------------------------------------------------------------------------------------


def _settings(gateway):
    from gateway.config import Settings

    return Settings.from_env(gateway.env(), home=str(gateway.home), database_url=gateway.database_url)


def make_practitioners(gateway, org_code: str, count: int) -> list[tuple[str, str]]:
    """``count`` enrolled health visitors of ``org_code``: [(user id, TOTP secret)]. Made with the
    portal's own account code (the roles set directly: a benchmark's set-up, not four-eyes)."""
    import datetime as dt

    import pyotp

    from gateway import audit
    from gateway.db import make_engine
    from gateway.index import disclosure
    from gateway.portal import accounts

    settings = _settings(gateway)
    engine = make_engine(settings.database_url, keys=settings.layout.data_keys)
    trail = audit.AuditTrail.of_home(settings.layout)
    rules = disclosure.load(settings.roles_path)
    today = dt.date.today()
    made = []
    try:
        for n in range(count):
            user = f"hv.bench.{n:03d}"
            details = accounts.Details(f"Bench Visitor {n}", ROLE, "Health visitor", f"00123456{n:04d}", today, today,
                                       None)
            with engine.begin() as conn:
                _, invitation = accounts.create(conn, trail, org_code, user, details, user_admin=False,
                                                created_by="bench", rules=rules,
                                                audited_as=("portal.practitioner.add", "bench", None))
                _, secret = accounts.enrolment_secret(conn, org_code, user, invitation)
            # The code of the previous step: the sign-in later uses a later one (each is good once).
            code = pyotp.TOTP(secret).at(time.time() - 30)
            accounts.enrol(engine, trail, org_code, user, invitation, PASSWORD, code,
                           now=dt.datetime.now(dt.timezone.utc))
            made.append((user, secret))
    finally:
        engine.dispose()
    return made


@dataclass
class RunningPortal:
    process: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_portal(gateway, workers: int, timeout_s: float = 90) -> RunningPortal:
    import requests

    from contactgate_local import free_port
    from gateway.files import write_private

    port = free_port()
    log = gateway.home / "portal.log"
    write_private(log, b"")
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "portal", "--bind", f"127.0.0.1:{port}",
                                    "--workers", str(workers)], env=gateway.env(), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    running = RunningPortal(process, f"https://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            requests.get(f"{running.url}/login", verify=str(gateway.home / "ca" / "ca.pem"), timeout=2)
            return running
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                running.stop()
                raise RuntimeError("the portal did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.3)


# ---- the practitioners ------------------------------------------------------------------------------


@dataclass
class UserResult:
    timings: dict = field(default_factory=lambda: collections.defaultdict(list))  # phase -> [(kind, seconds)]
    errors: collections.Counter = field(default_factory=collections.Counter)


def _typo(name: str) -> str:
    return name[0] + name[2] + name[1] + name[3:]


def practitioner(url: str, ca: str, org_code: str, user: str, secret: str, children: list[dict], index: int,
                 offsets, barrier, start_at, result: UserResult) -> None:
    """One practitioner: sign in, wait for everyone to have (``barrier``), then search and open
    children until the last phase ends. ``offsets``: [(phase, from, to)] in seconds after
    ``start_at.value`` (time.monotonic(), set by the conductor before the barrier opens)."""
    signed_in = False
    try:
        signed_in = _sign_in(url, ca, org_code, user, secret, index, result)
    finally:
        barrier.wait()
    if signed_in:
        while start_at.value == 0.0:  # the conductor sets it as the barrier opens
            time.sleep(0.01)
        phases = [(name, start_at.value + a, start_at.value + b) for name, a, b in offsets]
        _browse(children, index, phases, result)


def _sign_in(url: str, ca: str, org_code: str, user: str, secret: str, index: int, result: UserResult) -> bool:
    import pyotp
    import requests

    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    headers = {"Referer": f"{url}/"}

    result.url = url
    try:
        form = session.get(f"{url}/login", timeout=60).text
    except requests.RequestException as exc:
        result.errors[f"sign-in: {type(exc).__name__}"] += 1
        return False
    deadline = time.monotonic() + SIGN_IN_PATIENCE_S
    while time.monotonic() < deadline:
        # The portal checks a few sign-ins at once (gateway.console.throttle): a busy answer (503,
        # nothing checked, the code not spent) is tried again after its Retry-After.
        t0 = time.monotonic()
        try:
            answer = session.post(f"{url}/login", data={"csrf_token": CSRF.search(form).group(1), "org": org_code,
                                                        "user": user, "password": PASSWORD,
                                                        "code": pyotp.TOTP(secret).now()}, headers=headers, timeout=60)
        except requests.RequestException as exc:
            result.errors[f"sign-in: {type(exc).__name__}"] += 1
            return False
        if answer.status_code == 503:
            time.sleep(float(answer.headers.get("Retry-After", "1")) * (0.5 + (index % 10) / 10))
            continue
        if answer.status_code != 200 or "Sign out" not in answer.text:
            result.errors[f"sign-in: HTTP {answer.status_code}"] += 1
            return False
        result.timings["sign-in"].append(("sign-in", time.monotonic() - t0))
        break
    else:
        result.errors[f"sign-in: still busy after {SIGN_IN_PATIENCE_S} s"] += 1
        return False
    result.session = session
    return True


def _browse(children: list[dict], index: int, phases, result: UserResult) -> None:
    import requests

    session = result.session
    url = result.url

    def page(kind: str, method: str, path: str, data: dict | None = None, expect: str | None = None,
             phase: str | None = None) -> str | None:
        t0 = time.monotonic()
        try:
            answer = session.request(method, f"{url}{path}", data=data, headers={"Referer": f"{url}/"}, timeout=60)
        except requests.RequestException as exc:
            result.errors[f"{kind}: {type(exc).__name__}"] += 1
            return None
        took = time.monotonic() - t0
        if answer.status_code != 200 or (expect is not None and expect not in answer.text):
            result.errors[f"{kind}: HTTP {answer.status_code}"] += 1
            return None
        current = phase or next((name for name, start, end in phases if start <= t0 < end), None)
        if current is not None:
            result.timings[current].append((kind, took))
        return answer.text


    reason = {"reason_code": "safeguarding", "reason_text": "portal benchmark"}
    n = index
    last_end = phases[-1][2]
    while time.monotonic() < last_end:
        child = children[n % len(children)]
        n += 7
        home = page("search form", "GET", "/", expect="Find a child")
        if home is None:
            continue
        identity = child["Identity"]
        found = page("results", "POST", "/search", {
            "csrf_token": CSRF.search(home).group(1), "family_name": _typo(identity["FamilyName"]),
            "given_name": identity["GivenName"][0], "date_of_birth": identity["DateOfBirth"], **reason}, expect=identity["FamilyName"])
        if found is None:
            continue
        token, handle = CSRF.search(found).group(1), HANDLE.search(found).group(1)
        label = LABEL.search(found).group(1)
        asked = page("reason", "POST", "/child/reason", {"csrf_token": token, "handle": handle, "label": label},
                     expect="Show contacts")
        if asked is None:
            continue
        page("contacts", "POST", "/child", {"csrf_token": CSRF.search(asked).group(1), "handle": handle,
                                            "label": label, **reason}, expect="Services involved")


def client_process(url: str, ca: str, org_code: str, users: list[tuple[str, str]], offset: int,
                   children: list[dict], offsets, barrier, start_at, out) -> None:
    """Several practitioners, a thread each, in one process (spawned): their timings to ``out``."""
    results = [UserResult() for _ in users]
    threads = [threading.Thread(target=practitioner, args=(url, ca, org_code, user, secret, children, offset + i,
                                                          offsets, barrier, start_at, results[i]), daemon=True)
               for i, (user, secret) in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    timings, errors = collections.defaultdict(list), collections.Counter()
    for r in results:
        for phase, items in r.timings.items():
            timings[phase] += items
        errors.update(r.errors)
    out.put((dict(timings), dict(errors)))


# ---- the report -------------------------------------------------------------------------------------


def summary(items: list[tuple[str, float]], seconds: float) -> list[str]:
    lines = [f"  pages/s {len(items) / seconds:8.1f}   ({len(items)} pages in {seconds:.0f} s)"]
    for kind in KINDS:
        times = sorted(t for k, t in items if k == kind)
        if times:
            lines.append(f"  {kind:<12} {len(times):6d} pages  {len(times) / seconds:6.1f}/s   "
                         f"p50 {throughput.percentile(times, 50) * 1000:7.0f} ms   "
                         f"p95 {throughput.percentile(times, 95) * 1000:7.0f} ms")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="concurrent signed-in practitioners")
    parser.add_argument("--seconds", type=float, default=20, help="length of each phase")
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="portal worker processes (and serve's)")
    parser.add_argument("--client-processes", type=int, default=0, help="0: one for every 10 practitioners")
    parser.add_argument("--soap-clients", type=int, default=2, help="SOAP GetContacts client processes alongside")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--keep-home", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, throughput._stop_on_sigterm)
    home = Path(tempfile.mkdtemp(prefix="cg-bench-portal-"))
    gateway = throughput.GatewayUnderTest(home=home, database_url=args.database_url or f"sqlite:///{home}/contactgate.db",
                                          redis_url=args.redis_url)
    portal = None
    roles = Path(tempfile.mkdtemp(prefix="cg-bench-roles-")) / "roles.json"
    roles.write_text(json.dumps(ROLES))
    roles.chmod(0o600)
    gateway.extra_env.update({"CONTACTGATE_ROLES_FILE": str(roles), "CONTACTGATE_SIGNIN_PER_MINUTE": str(10**6),
                              "CONTACTGATE_RATE_LIMIT_PER_USER": str(10**6)})
    try:
        print(f"setting up a gateway home in {home} ...", file=sys.stderr)
        gateway.cli("init")
        # The portal takes organisation codes in capitals (GatewayUnderTest.add_org's suffix is not).
        la_code = f"LA-{gateway.run_id.upper()}"
        throughput.LocalGateway.add_org(gateway, la_code, "local_authority", ["push", "query"])
        gateway.certs["la"] = gateway.certs.pop(la_code.lower())
        gateway.add_org("health", "health", ["query"])
        gateway.start(args.workers, timeout_s=90)

        from connectors.client import GatewayClient

        print(f"seeding {args.children} children ...", file=sys.stderr)
        la = GatewayClient.from_directory(gateway.url, gateway.certs["la"])
        children, child_ids = [], []
        for start in range(0, args.children, throughput.SEED_BATCH):
            batch = [throughput.child_update(n, gateway.run_id)
                     for n in range(start, min(start + throughput.SEED_BATCH, args.children))]
            results = la.submit_updates(batch)
            children += batch
            child_ids += [r.child_id for r in results if r.outcome == "created" and r.child_id]
        la.session.close()
        if len(child_ids) != args.children:
            raise RuntimeError(f"seeding created {len(child_ids)} of {args.children} children")

        print(f"making and enrolling {args.users} practitioners of {la_code} ...", file=sys.stderr)
        users = make_practitioners(gateway, la_code, args.users)
        portal = start_portal(gateway, args.workers)

        processes_n = args.client_processes or max(1, (args.users + 9) // 10)
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        # Every practitioner signs in; once all have, the phases start (a barrier across the processes).
        offsets = [("portal alone", 0.5, 0.5 + args.seconds), ("with SOAP load", 0.5 + args.seconds, 0.5 + 2 * args.seconds)]
        barrier = ctx.Barrier(args.users + 1)
        start_at = ctx.Value("d", 0.0)
        ca = str(gateway.home / "ca" / "ca.pem")
        processes = [ctx.Process(target=client_process, name=f"bench-portal-{i}",
                                 args=(portal.url, ca, la_code, users[i::processes_n], i * 1000, children, offsets,
                                       barrier, start_at, out))
                     for i in range(processes_n)]
        for p in processes:
            p.start()
        print(f"{args.users} practitioners in {processes_n} processes: portal alone for {args.seconds:g} s, "
              f"then with {args.soap_clients} SOAP client processes alongside ...", file=sys.stderr)
        signing_in = time.monotonic()
        barrier.wait(timeout=args.users * 30 + 120)  # all signed in (or failed to)
        signed_in_s = time.monotonic() - signing_in
        start_at.value = time.monotonic()
        phases = [(name, start_at.value + a, start_at.value + b) for name, a, b in offsets]
        soap: dict = {}

        def soap_load():
            while time.monotonic() < phases[1][1]:
                time.sleep(0.05)
            soap["load"] = throughput.run_load(gateway, child_ids, clients=args.soap_clients,
                                               seconds=max(1.0, args.seconds - min(3.0, args.seconds / 2)), requests=None)  # never 0: 0 is unlimited

        soap_thread = threading.Thread(target=soap_load, daemon=True)
        if args.soap_clients:
            soap_thread.start()
        collected = []
        deadline = phases[-1][2] + 120
        while len(collected) < len(processes):
            try:
                collected.append(out.get(timeout=max(1, deadline - time.monotonic())))
            except queue_module.Empty:
                raise RuntimeError("the practitioners' processes did not finish") from None
        for p in processes:
            p.join(10)
        if args.soap_clients:
            soap_thread.join(args.seconds + 600)
        load_average = os.getloadavg()

        timings, errors = collections.defaultdict(list), collections.Counter()
        for got, errs in collected:
            for phase, items in got.items():
                timings[phase] += items
            errors.update(errs)
        print(f"machine: {throughput.machine()}")
        print(f"load average at the end: {load_average[0]:.1f} {load_average[1]:.1f} {load_average[2]:.1f}")
        print(f"command: python bench/portal.py {' '.join(argv if argv is not None else sys.argv[1:])}")
        print(f"backend: {'PostgreSQL + Redis' if args.database_url else 'SQLite + embedded store'}; "
              f"portal workers {args.workers}; {args.users} practitioners; {args.children} children")
        signins = sorted(t for k, t in timings.get("sign-in", []))
        if signins:
            print(f"sign-in (password + TOTP, argon2id at the product's cost): {len(signins)} in {signed_in_s:.0f} s, "
                  f"p50 {throughput.percentile(signins, 50) * 1000:.0f} ms, "
                  f"p95 {throughput.percentile(signins, 95) * 1000:.0f} ms")
        for name, _, _ in phases:
            print(f"{name}:")
            print("\n".join(summary(timings.get(name, []), args.seconds)))
        if "load" in soap:
            load = soap["load"]
            lat = load.latencies
            print(f"SOAP GetContacts alongside: {load.ok / max(load.wall_s, 1e-9):.1f} exchanges/s, "
                  f"p95 {throughput.percentile(lat, 95) * 1000:.0f} ms, errors {sum(load.errors.values())}"
                  if lat else "SOAP GetContacts alongside: no exchange completed")
        print(f"errors {sum(errors.values())}" + (f" {dict(errors)}" if errors else ""))
        ok = not errors and all(timings.get(name) for name, _, _ in phases)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping", file=sys.stderr)
        return 130
    except Exception:
        for what, path in (("server", gateway.home / "server.log"), ("portal", gateway.home / "portal.log")):
            if path.exists():
                print(f"--- {what} log (tail) ---\n{path.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if portal is not None:
            portal.stop()
        gateway.stop()
        try:
            gateway.drop_redis_keys()
        except Exception as exc:
            print(f"could not delete Redis keys {gateway.redis_prefix}:*: {exc}", file=sys.stderr)
        shutil.rmtree(roles.parent, ignore_errors=True)
        if args.keep_home:
            print(f"home kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
