"""The server's front (gateway/front.py) in-process: real TLS on loopback, a small WSGI app that
reports what it was given. The gateway itself runs it under gunicorn (tests/gateway/test_slow_clients.py
and every test against the `gateway` fixture)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import io
import json
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from gateway.app import PEER_CERT_DER_KEY, RECEIVED_BODY_KEY, read_body
from gateway.config import Settings
from gateway.front import (
    BodyReader, ConnectionCaps, Front, FrontLimits, RateLimitedLog, RecentAllowance, server_ssl_context,
    server_ssl_context_without_client_certificates,
)
from gateway.pipeline import HANDSHAKE_AUDITS_PER_MINUTE
from gateway.trust import pki

LIMIT = 1000
LIMITS = FrontLimits(handshake_timeout_s=2, header_timeout_s=2, body_timeout_s=2, keepalive_timeout_s=2,
                     max_connections=50, max_connections_per_address=5, max_body_bytes=LIMIT)


# ---- pieces without I/O -----------------------------------------------------------------------------

def test_connection_caps_count_per_address_and_in_all():
    caps = ConnectionCaps(total=3, per_address=2)
    assert caps.admit("a") is None and caps.admit("a") is None
    assert caps.admit("a") == "per-address"
    assert caps.admit("a", per_address=False) is None  # a trusted proxy: only the total cap applies
    caps.release("a")
    assert caps.admit("b") is None
    assert caps.admit("c") == "total"
    caps.release("a")
    assert caps.admit("c") is None
    for address in ("a", "b", "c"):
        caps.release(address)
    assert caps.total == 0 and not caps.by_address


def test_recent_allowance_is_per_key_over_any_sixty_seconds():
    now = [100.0]
    allowance = RecentAllowance(3, clock=lambda: now[0])
    assert [allowance.allow("x") for _ in range(4)] == [True, True, True, False]
    assert allowance.allow("y")
    now[0] = 130.0  # a new minute has begun, but the first three are less than 60 s old
    assert not allowance.allow("x")
    now[0] = 160.5
    assert [allowance.allow("x") for _ in range(4)] == [True, True, True, False]


def test_rate_limited_log_folds_repeats(caplog):
    now = [0.0]
    quiet = RateLimitedLog(logging.getLogger("test.front"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.front"):
        for _ in range(5):
            quiet.warning("k", "stalled %s", "x")
        now[0] = 11.0
        quiet.warning("k", "stalled %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "stalled x", "stalled y (and 4 more like it in the last 10s)"]


@pytest.mark.parametrize("size", [0, 10, LIMIT, LIMIT + 1, 3 * LIMIT, 8 * LIMIT, 8 * LIMIT + 1, 9 * LIMIT])
def test_body_reader_gives_what_read_body_gives(size):
    data = bytes(i % 251 for i in range(size))
    reader = BodyReader(LIMIT)
    for start in range(0, size, 300):
        reader.add(data[start:start + 300])
        if reader.overflowed:
            break
    expected = read_body(io.BytesIO(data), LIMIT, chunk_size=300)
    assert reader.received() == expected


def test_front_settings_come_from_the_environment():
    settings = Settings.from_env({
        "CONTACTGATE_HOME": "/tmp/x", "CONTACTGATE_HANDSHAKE_TIMEOUT": "1.5", "CONTACTGATE_HEADER_TIMEOUT": "2",
        "CONTACTGATE_BODY_TIMEOUT": "3", "CONTACTGATE_KEEPALIVE_TIMEOUT": "4", "CONTACTGATE_MAX_CONNECTIONS": "77",
        "CONTACTGATE_MAX_CONNECTIONS_PER_ADDRESS": "7", "CONTACTGATE_THREADS": "9"})
    limits = FrontLimits.from_settings(settings)
    assert (limits.handshake_timeout_s, limits.header_timeout_s, limits.body_timeout_s,
            limits.keepalive_timeout_s, limits.max_connections, limits.max_connections_per_address) == (
        1.5, 2.0, 3.0, 4.0, 77, 7)
    assert settings.threads == 9 and limits.max_body_bytes == settings.max_message_bytes


# ---- the front over real TLS ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def material(tmp_path_factory):
    directory = tmp_path_factory.mktemp("front-tls")
    ca_key, ca_cert = pki.make_ca("Front test CA")
    server_key, server_cert = pki.issue_server_cert(ca_key, ca_cert, [])
    client_key = pki.new_rsa_key()
    client_cert = pki.issue_org_cert(ca_key, ca_cert, "LA", "LA", client_key.public_key())
    for name, data in {"ca.pem": pki.cert_pem(ca_cert), "server.pem": pki.cert_pem(server_cert),
                       "server-key.pem": pki.key_pem(server_key), "client.pem": pki.cert_pem(client_cert),
                       "client-key.pem": pki.key_pem(client_key)}.items():
        (directory / name).write_bytes(data)
    return directory, client_cert


def reporting_app(environ, start_response):
    """Says what the front gave it."""
    body = environ[RECEIVED_BODY_KEY]
    answer = json.dumps({
        "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
        "remote": [environ["REMOTE_ADDR"], environ["REMOTE_PORT"]], "soap_action": environ.get("HTTP_SOAPACTION"),
        "peer": base64.b64encode(environ[PEER_CERT_DER_KEY] or b"").decode(),
        "kept": len(body.data), "size": body.size, "digest": body.digest,
        "input": len(environ["wsgi.input"].read()), "content_length": int(environ["CONTENT_LENGTH"]),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [answer]


class RunningFront:
    """``client_certificates`` False: the console's TLS (no client certificate asked for)."""

    def __init__(self, material, limits: FrontLimits, *, client_certificates: bool = True, **front_options):
        directory, self.client_cert = material
        self.directory = directory
        self.audits: list[tuple[str, str]] = []
        if client_certificates:
            context = server_ssl_context(str(directory / "server.pem"), str(directory / "server-key.pem"),
                                         str(directory / "ca.pem"))
            front_options.setdefault("audit_refused_handshake", lambda ip, reason: self.audits.append((ip, reason)))
        else:
            context = server_ssl_context_without_client_certificates(str(directory / "server.pem"),
                                                                     str(directory / "server-key.pem"))
        self.pool = ThreadPoolExecutor(2)
        self.front = Front(reporting_app, limits, context, self.pool, **front_options)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def serve():
            self.server = await asyncio.start_server(self.front.handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        assert started.wait(10)

    def stop(self):
        async def stop():
            self.server.close()
            await self.front.drain(1.0)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.pool.shutdown()

    def context(self, with_cert: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.directory / "ca.pem"))
        if with_cert:
            context.load_cert_chain(str(self.directory / "client.pem"), str(self.directory / "client-key.pem"))
        return context

    def https(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(), timeout=5)

    def tls_socket(self, source: str = "127.0.0.1") -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(source, 0))
        return self.context().wrap_socket(raw, server_hostname="127.0.0.1")


@pytest.fixture
def front(material):
    running = RunningFront(material, LIMITS)
    yield running
    running.stop()


# "At once" is told from "at a timeout" by timeouts far longer than any wait a busy machine adds: what
# is closed well within PATIENT_S was closed by the rule under test, not by a timer.
PATIENT_S = 30


@pytest.fixture
def patient_front(material):
    running = RunningFront(material, replace(LIMITS, handshake_timeout_s=PATIENT_S, header_timeout_s=PATIENT_S,
                                             body_timeout_s=PATIENT_S, keepalive_timeout_s=PATIENT_S))
    yield running
    running.stop()


def read_all(sock) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ssl.SSLError, ConnectionError):
        pass
    return data


def test_keep_alive_serves_several_requests_on_one_connection_with_the_environ_filled(front):
    conn = front.https()
    try:
        answers = []
        for i in range(3):
            body = b"<x>%d</x>" % i
            conn.request("POST", f"/soap/v1?n={i}", body=body, headers={"SOAPAction": '"urn:op"'})
            response = conn.getresponse()
            assert response.status == 200 and response.getheader("Connection") is None
            answers.append(json.loads(response.read()))
            local_port = conn.sock.getsockname()[1]
        assert [a["query"] for a in answers] == ["n=0", "n=1", "n=2"]
        first = answers[0]
        assert first["path"] == "/soap/v1" and first["method"] == "POST" and first["soap_action"] == '"urn:op"'
        assert first["remote"] == ["127.0.0.1", str(local_port)]  # one connection throughout
        assert base64.b64decode(first["peer"]) == front.client_cert.public_bytes(pki.serialization.Encoding.DER)
        assert first["kept"] == first["size"] == first["input"] == first["content_length"] == len(b"<x>0</x>")
        assert first["digest"] == base64.b64encode(hashlib.sha256(b"<x>0</x>").digest()).decode()
    finally:
        conn.close()


def test_a_chunked_body_is_read_whole(front):
    conn = front.https()
    try:
        conn.request("POST", "/soap/v1", body=iter([b"abc", b"defg"]), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert answer["size"] == 7 and answer["digest"] == base64.b64encode(hashlib.sha256(b"abcdefg").digest()).decode()


def test_a_body_declared_far_over_the_limit_is_not_read_and_the_connection_closed(patient_front):
    with patient_front.tls_socket() as tls:
        tls.sendall(b"POST /soap/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (8 * LIMIT + 1))
        started = time.monotonic()
        data = read_all(tls)
    assert time.monotonic() - started < PATIENT_S / 3  # answered at once, not when the body timed out
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    answer = json.loads(body)
    assert (answer["kept"], answer["size"], answer["digest"]) == (0, 8 * LIMIT + 1, None)
    assert answer["content_length"] == 8 * LIMIT + 1  # an app with its own size limit refuses it


def test_a_body_over_the_limit_reaches_the_app_cut_with_its_whole_length_declared(front):
    """(The console checks CONTENT_LENGTH against its own limit and answers 413.)"""
    conn = front.https()
    try:
        conn.request("POST", "/upload", body=b"y" * (3 * LIMIT))
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert (answer["kept"], answer["input"], answer["size"], answer["content_length"]) == (
        LIMIT + 1, LIMIT + 1, 3 * LIMIT, 3 * LIMIT)


def test_without_client_certificates_a_client_without_one_is_served(material):
    running = RunningFront(material, LIMITS, client_certificates=False)
    try:
        raw = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        with running.context(with_cert=False).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /login?next=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head, _, body = read_all(tls).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        answer = json.loads(body)
        assert (answer["path"], answer["query"], answer["peer"]) == ("/login", "next=x", "")
    finally:
        running.stop()


@pytest.mark.parametrize("with_query", [True, False])
def test_the_access_log_has_query_strings_unless_told_not_to(material, caplog, with_query):
    access = logging.getLogger("test.front.access")
    running = RunningFront(material, LIMITS, access_log=access, log_query_strings=with_query)
    try:
        with caplog.at_level(logging.INFO, logger="test.front.access"):
            conn = running.https()
            try:
                conn.request("GET", "/audit?child=SEARCH-TERM")
                assert conn.getresponse().read()
            finally:
                conn.close()
    finally:
        running.stop()
    [line] = [r.getMessage() for r in caplog.records if r.name == "test.front.access"]
    assert ('"GET /audit?child=SEARCH-TERM HTTP/1.1" 200' in line) is with_query
    assert ('"GET /audit HTTP/1.1" 200' in line) is not with_query


def test_malformed_http_gets_a_plain_400_and_is_closed(front):
    with front.tls_socket() as tls:
        tls.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = read_all(tls)
    assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(b"bad request\n")


def test_an_oversize_head_is_refused_and_closed(front):
    with front.tls_socket() as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 * 1024) + b"\r\n\r\n")
        data = read_all(tls)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_a_refused_handshake_is_audited_a_few_times_a_minute_per_address(front):
    for _ in range(HANDSHAKE_AUDITS_PER_MINUTE + 5):
        raw = socket.create_connection(("127.0.0.1", front.port), timeout=5, source_address=("127.0.7.7", 0))
        try:
            with front.context(with_cert=False).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                tls.recv(10)
        except (ssl.SSLError, OSError):
            pass
        finally:
            raw.close()
    deadline = time.monotonic() + 5
    while len(front.audits) < HANDSHAKE_AUDITS_PER_MINUTE and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert front.audits == [("127.0.7.7", "PEER_DID_NOT_RETURN_A_CERTIFICATE")] * HANDSHAKE_AUDITS_PER_MINUTE


def test_connections_over_the_per_address_cap_are_closed_at_once(patient_front):
    front = patient_front
    held = [socket.create_connection(("127.0.0.1", front.port), timeout=5, source_address=("127.0.8.8", 0))
            for _ in range(LIMITS.max_connections_per_address)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", front.port), timeout=PATIENT_S,
                                         source_address=("127.0.8.8", 0))
        with extra:
            started = time.monotonic()
            assert read_all(extra) == b""
            assert time.monotonic() - started < PATIENT_S / 3  # closed by the cap, not a timeout
        with front.tls_socket("127.0.8.9") as other:  # another address is still served
            other.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert other.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()


def test_stopping_closes_idle_connections_and_lets_a_running_request_finish(material):
    slow_started = threading.Event()

    def slow_app(environ, start_response):
        slow_started.set()
        time.sleep(0.5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    running = RunningFront(material, replace(LIMITS, keepalive_timeout_s=30))
    running.front.app = slow_app
    idle = running.tls_socket()
    busy = running.tls_socket()
    try:
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert slow_started.wait(5)
        running.stop()
        answer = read_all(busy)
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower()
        assert answer.endswith(b"done")
        assert read_all(idle) == b""
    finally:
        idle.close()
        busy.close()
