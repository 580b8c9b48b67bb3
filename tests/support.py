"""Test support: a real gateway (gunicorn, mutual TLS) over a real database, set up with the CLI.

Nothing here is a stand-in: organisations and certificates are made with `contactgate` commands,
the server is `contactgate serve`, and clients are the zeep-based SDK.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis as redis_lib
from sqlalchemy import create_engine, func, select, text

from gateway import audit
from contactgate_local import LocalGateway, free_port
from gateway.db import audit_head, audit_log, children, involvements, make_engine, review_queue, source_records
from gateway.trust import pki

POSTGRES_ADMIN_URL = os.environ.get("CONTACTGATE_TEST_POSTGRES_URL",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONTACTGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def postgres_database():
    """A fresh, uniquely named PostgreSQL database, dropped afterwards."""
    name = f"cg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def sqlite_database():
    with tempfile.TemporaryDirectory(prefix="cg-sqlite-") as directory:
        yield f"sqlite:///{directory}/contactgate.db"


STREETS = ("High Street", "Mill Lane", "Church Road", "Station Road", "Park Avenue", "Victoria Road",
           "Green Lane", "Manor Road", "Kings Road", "Queens Drive", "Orchard Way", "Brook Close")
STREET_NAMES = ("Acorn", "Beech", "Cedar", "Dale", "Elm", "Fern", "Glebe", "Hazel", "Ivy", "Juniper", "Kestrel",
                "Larch", "Maple", "Nutwood", "Oak", "Poplar", "Quarry", "Rowan", "Sycamore", "Thorn", "Upland",
                "Vale", "Willow", "Yew", "Ash", "Birch", "Clover", "Dene", "Ember", "Foxglove", "Garth", "Heath",
                "Inkerman", "Jubilee", "Kiln", "Linden", "Moor", "Nettle", "Orchid", "Pine", "Quay", "Rush",
                "Sorrel", "Tansy", "Usher", "Violet", "Wren", "Yarrow", "Alder", "Bramble")
POSTCODE_AREAS = ("LS", "BD", "HX", "HD", "WF", "YO", "HG", "S", "M", "B", "L", "NE", "SR", "DH", "TS", "DL",
                  "CA", "LA", "PR", "BB", "OL", "SK", "WA", "CH", "ST", "DE", "NG", "LE", "CV", "WS", "WV", "DY")


def home_of(family: str, given: str, dob: str) -> tuple[str, str]:
    """A first address line and postcode that are the same for one child (the same name and birth
    date) and differ between children: records the tests mean as different children do not share a
    household, which the gateway's linkage would rightly count as evidence of one child."""
    digest = hashlib.sha256(f"{family.casefold()}|{given.casefold()}|{dob}".encode()).digest()
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    # Thousands of postcode sectors, as in the country: linkage rightly counts a shared sector as
    # evidence, so a toy geography of a few hundred sectors would make unrelated children alike.
    area = POSTCODE_AREAS[digest[6] % len(POSTCODE_AREAS)]
    # and thousands of street names: a shared first line is evidence too.
    return (f"{1 + digest[0] % 200} {STREET_NAMES[digest[7] % len(STREET_NAMES)]} {STREETS[digest[1] % len(STREETS)]}",
            f"{area}{1 + digest[2] % 99} {digest[3] % 10}{letters[digest[4] % 20]}{letters[digest[5] % 20]}")


def child_update(srid: str, family: str, given: str, dob: str, *, nhs: str | None = None,
                 gender: str = "female", postcode: str | None = None, town: str = "Leeds",
                 involvements_: list[dict] | None = None, **extra) -> dict:
    """A ChildUpdate (zeep dict). Unless given, the address is the child's own (``home_of``)."""
    identity = {"FamilyName": family, "GivenName": [given], "DateOfBirth": dob, "Gender": gender}
    if nhs:
        identity["NhsNumber"] = nhs
    line1, home_postcode = home_of(family, given, dob)
    update = {
        "SourceRecordId": srid,
        "Identity": identity,
        "Address": {"Line1": line1, "Town": town, "Postcode": postcode or home_postcode},
        "Carer": [{"Name": "Pat Parent", "Relationship": "mother", "Phone": "0113 496 0000"}],
        "EducationalSetting": {"Name": "Hillside Primary", "Code": "URN100001"},
        "GpPractice": {"Name": "Park Surgery", "Code": "B86001", "Phone": "0113 496 0001"},
        "Involvement": involvements_ if involvements_ is not None else [{
            "Service": "Children's social care", "PractitionerName": "Sam Worker", "Role": "social worker",
            "Phone": "0113 496 0002", "Email": "sam.worker@la.example", "Start": "2024-01-10",
            "CafAssessment": True, "LeadProfessional": True}],
    }
    update.update(extra)
    return update


def nhs_number(seed: int) -> str:
    """A valid (mod 11) NHS number derived from ``seed``."""
    while True:
        digits = f"{seed:09d}"[-9:]
        total = sum(int(d) * w for d, w in zip(digits, range(10, 1, -1)))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return digits + str(check)
        seed += 1


def pupil_number(seed: int) -> str:
    """A valid unique pupil number (check letter, LA 201, 9 digits) derived from ``seed``."""
    from stdnum.gb import upn

    body = "201" + f"{seed:09d}"[-9:]
    return upn.calc_check_digit(body) + body


class Gateway(LocalGateway):
    """A running gateway and the organisations the tests use, plus ways to look inside it."""

    def __init__(self, backend: str, home: Path, database_url: str, redis_url: str | None):
        super().__init__(home=home, database_url=database_url, redis_url=redis_url,
                         redis_prefix=f"cgtest-{home.name}-{secrets.token_hex(3)}")
        self.backend = backend
        self._engine = None

    def __repr__(self) -> str:
        return f"Gateway({self.backend})"

    def stop(self) -> None:
        super().stop()
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.database_url, keys=self.home / "keys" / "data-keys.json")
        return self._engine

    def index_snapshot(self) -> tuple:
        """Everything a refused message must leave untouched."""
        with self.engine.connect() as conn:
            return tuple(
                tuple(sorted(tuple(str(v) for v in row) for row in conn.execute(select(table))))
                for table in (children, involvements, source_records, review_queue))

    def audit_seq(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(audit_head.c.seq)).scalar_one()

    def settle_audit(self, seq: int, quiet_s: float = 0.5, timeout_s: float = 5) -> list[dict]:
        """The entries after ``seq`` once no new one has come for ``quiet_s``: the front audits a
        refused handshake in the background (and only a few a minute per address), and a test must
        not leave it to the next test's count."""
        deadline = time.monotonic() + timeout_s
        seen = self.audit_entries_after(seq)
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.audit_entries_after(seq)
            if len(now) == len(seen):
                break
            seen = now
        return seen

    def audit_entries_after(self, seq: int) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                select(audit_log).where(audit_log.c.seq > seq).order_by(audit_log.c.seq)).mappings()]

    def child_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(children)).scalar_one()


def shown_record(conn, child_id: str, column: str = "record") -> dict:
    """A child's shown record (or provenance) as the store holds it, opened with the connection's keys."""
    from gateway.index import sealed

    token = conn.execute(select(children.c[column]).where(children.c.child_id == child_id)).scalar_one()
    return json.loads(sealed.vault_of(conn).open(token, sealed.child_context(column, child_id)))


def source_record(conn, org_code: str, source_record_id: str) -> dict:
    """A source's own record as stored (its source record id is stored blinded)."""
    from gateway.index import sealed

    v = sealed.vault_of(conn)
    stored = sealed.blind_source_id(v, org_code, source_record_id)
    token = conn.execute(select(source_records.c.record).where(
        source_records.c.org_code == org_code, source_records.c.source_record_id == stored)).scalar_one()
    return json.loads(sealed.open_source(v, org_code, stored, token)[1])


def fill_audit(engine, trail: audit.AuditTrail, n: int = 5) -> None:
    """Append ``n`` accepted GetContacts entries (user0.., CHILD-0..) to ``trail`` in one transaction."""
    with engine.begin() as conn:
        for i in range(n):
            trail.append(conn, audit.Entry(operation="GetContacts", outcome="accepted", org_code="LA",
                                           user_id=f"user{i}", reason_code="referral", reason_text="why",
                                           child_ids=[f"CHILD-{i}"]))


def officer_account(conn, trail: audit.AuditTrail, officer_id: str = "test-officer", roles=("officer",)):
    """An officer account for tests that call the registry directly (made once per database)."""
    from gateway import officers

    found = officers.get(conn, officer_id)
    if found is None:
        found = officers.create(conn, trail, None, officer_id, officer_id.replace("-", " ").title(), roles,
                                "test officer password", officers.new_totp_secret(), must_change_password=False)
    return found


_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def in_clear(needle: str, blob: bytes, encoding: str = "utf-8") -> bool:
    """Whether ``needle`` is in ``blob`` in clear. Sealed values and blind keys are random base64url
    text, which spells a short word now and then ("LS6" once did): a needle short enough for that
    (under 8 characters, all base64url) counts only where no token character touches it."""
    raw = needle.encode(encoding)
    if len(needle) >= 8 or not set(needle.encode()) <= _TOKEN_CHARS:
        return raw in blob
    width = len(raw) // len(needle)
    start = blob.find(raw)
    while start != -1:
        before = blob[start - width] if start >= width else None
        after = blob[start + len(raw)] if start + len(raw) < len(blob) else None
        if before not in _TOKEN_CHARS and after not in _TOKEN_CHARS:
            return True
        start = blob.find(raw, start + 1)
    return False


def unique(prefix: str = "") -> str:
    return prefix + secrets.token_hex(4)


def unique_name(prefix: str = "") -> str:
    """A name no other test's is like: names are compared by their letters (digits are dropped), so
    the suffix is ten random letters, not hex."""
    return prefix + "".join(secrets.choice("bcdfghjklmnpqrstvwxz") for _ in range(10))


def foreign_ca_client_material(directory: Path, org_code: str = "ROGUE") -> Path:
    """A key and certificate from a CA the gateway does not trust (plus the gateway's own ca.pem
    and signing certificate, so the client side can still verify the server)."""
    ca_key, ca_cert = pki.make_ca("Rogue CA")
    key = pki.new_rsa_key()
    cert = pki.issue_org_cert(ca_key, ca_cert, org_code, "Rogue", key.public_key())
    directory.mkdir(parents=True, exist_ok=True)
    pki.write_private(directory / "key.pem", pki.key_pem(key))
    pki.write_public(directory / "cert.pem", pki.cert_pem(cert))
    return directory


@contextlib.contextmanager
def private_gateway(backend: str, home: Path, *, orgs: dict[str, tuple[str, list[str]]],
                    extra_env: dict | None = None, workers: int = 1, redis_url: str | None = None,
                    database_url: str | None = None):
    """A gateway of a test's own (fresh database, own home), for tests that change its settings or
    its database under it. ``orgs`` maps code -> (kind, scopes). ``redis_url``: a Redis instead of
    the embedded rate store; ``database_url``: a database the test made (else a fresh one)."""
    if database_url is not None:
        database = contextlib.nullcontext(database_url)
    else:
        database = postgres_database() if backend == "postgresql" else sqlite_database()
    with database as url:
        home.mkdir(parents=True, exist_ok=True)
        gw = Gateway(backend, home, url, redis_url)
        gw.extra_env.update(extra_env or {})
        gw.cli("init")
        for code, (kind, scopes) in orgs.items():
            gw.add_org(code, kind, scopes)
        gw.start(workers=workers)
        try:
            yield gw
        finally:
            gw.stop()


def wait_for_lock_waiters(engine, n: int = 1, timeout_s: float = 20) -> None:
    """Wait until ``n`` PostgreSQL transactions are blocked on a lock (to stage a race exactly)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:  # a new transaction each time: pg_stat_activity is snapshotted
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar_one()
        if waiting >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} transactions reached the lock")


# ---- real processes and connections that tests break on purpose ---------------------------------

class RedisServer:
    """A redis-server of the test's own on a spare loopback port, without persistence: stopping or
    restarting it loses every key, as a production Redis without persistence would."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis_lib.Redis:
        return redis_lib.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self, timeout_s: float = 10) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.client().ping():
                    return
            except redis_lib.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # in case it was paused
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers (a hung Redis)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def redis_server(directory: Path):
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TcpRelay:
    """A loopback TCP relay to a server (e.g. PostgreSQL), which a test can cut — every relayed
    connection closed and new ones refused, as when the database host is lost — and restore."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the blocked accept() and stops listening (Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.start()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a server's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


# ---- the pipeline in this process ---------------------------------------------------------------------

@contextlib.contextmanager
def in_process_gateway(backend: str, home: Path, *, orgs: dict[str, tuple[str, list[str]]], store_clock=None,
                       **settings):
    """A home made with the CLI (``orgs``: code -> (kind, scopes)) on a fresh database of ``backend``,
    and its services built in this process (``settings``: Settings fields, e.g. rate_limit_per_user;
    ``store_clock``: the embedded rate store's clock), to drive `gateway.pipeline.handle` directly
    with real signed messages: ``gw.send(org, operation, **call)`` returns the pipeline's Answer
    (``gw.deliver(org, operation, data)`` for a message signed beforehand)."""
    from cryptography.hazmat.primitives import serialization

    from contactgate_wire.soap import digest_b64

    from gateway.app import build_services
    from gateway.config import Settings
    from gateway.pipeline import ReceivedBody, handle
    from gateway.store.embedded import EmbeddedStore

    with (postgres_database() if backend == "postgresql" else sqlite_database()) as url:
        local = LocalGateway(home=home, database_url=url)
        local.cli("init")
        peers = {}
        for code, (kind, scopes) in orgs.items():
            directory = local.add_org(code, kind, scopes)
            peers[code.lower()] = pki.load_cert_pem((directory / "cert.pem").read_bytes()).public_bytes(
                serialization.Encoding.DER)
        services = build_services(Settings(home=home, database_url=url, **settings))
        if store_clock is not None:
            services = dataclasses.replace(services, store=EmbeddedStore(services.engine, clock=store_clock))
        clients = {name: local.client(name) for name in peers}

        def deliver(org: str, operation: str, data: bytes):
            return handle(ReceivedBody(data, len(data), digest_b64(data)), f'"urn:contactgate:v1#{operation}"', peers[org],
                          services)

        def send(org: str, operation: str, **call):
            return deliver(org, operation, clients[org].build_request(operation, **call))

        try:
            yield InProcess(local, services, send, deliver, clients)
        finally:
            services.engine.dispose()


@dataclasses.dataclass
class InProcess:
    local: LocalGateway  # the home, for the CLI
    services: object     # gateway.pipeline.context.Services
    send: object         # (org, operation, **call) -> gateway.pipeline.Answer
    deliver: object      # (org, operation, signed request bytes) -> gateway.pipeline.Answer
    clients: dict        # org (lower case) -> its GatewayClient (build_request signs a message)
