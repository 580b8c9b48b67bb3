"""Slow, idle and stalled clients against the officers' console, `contactgate console` started as a
user starts it, on SQLite and PostgreSQL (issue 22, item 2: 16 sockets that each sent 9 bytes of a
ClientHello took the console offline). The console is served by `serve`'s front, so these mirror
tests/gateway/test_slow_clients.py and tests/gateway/test_front_exhaustion.py through it.

DESIGN.md "Slow and idle clients" holds for the console as for `serve`: anyone who can reach the
port can open connections and send nothing, part of a handshake, or a head promising a body that
never comes. None of them may keep an officer from the console, and each is closed after a bounded
time. Stallers connect from other loopback addresses (Linux routes all of 127/8 to lo); officers
from 127.0.0.1 unless said otherwise. Every socket is closed in ``finally``; every wait has a
deadline.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import statistics
import time

import pytest
import requests

from tests.gateway.console.conftest import RunningConsole, running_console

# A console whose time limits are far longer than any test: whatever it answers while connections
# stall, it answers beside them, not because they were closed. Its caps are small, to be reached.
PATIENT = {
    "CONTACTGATE_HANDSHAKE_TIMEOUT": "120",
    "CONTACTGATE_HEADER_TIMEOUT": "120",
    "CONTACTGATE_BODY_TIMEOUT": "120",
    "CONTACTGATE_KEEPALIVE_TIMEOUT": "120",
    "CONTACTGATE_MAX_CONNECTIONS": "200",
    "CONTACTGATE_MAX_CONNECTIONS_PER_ADDRESS": "10",
}
PER_ADDRESS_CAP = int(PATIENT["CONTACTGATE_MAX_CONNECTIONS_PER_ADDRESS"])
TOTAL_CAP = int(PATIENT["CONTACTGATE_MAX_CONNECTIONS"])
# A console with short limits, to see each one enforced (as tests/gateway/test_slow_clients.py's TIGHT).
TIGHT = {
    "CONTACTGATE_HANDSHAKE_TIMEOUT": "1",
    "CONTACTGATE_HEADER_TIMEOUT": "1",
    "CONTACTGATE_BODY_TIMEOUT": "1",
    "CONTACTGATE_KEEPALIVE_TIMEOUT": "1",
    "CONTACTGATE_MAX_CONNECTIONS": "150",
    "CONTACTGATE_MAX_CONNECTIONS_PER_ADDRESS": "20",
}
TIGHT_TIMEOUT_S = 1.0
CLOSE_SLACK_S = 3.0  # a stalled connection is closed within TIGHT_TIMEOUT_S + this

OFFICER = "senior-s"
ANSWER_FLOOR_S = 3.0  # an officer's page within max(this, BASELINE_FACTOR x the unstalled time)
BASELINE_FACTOR = 10
OPENING_BUDGET_S = 20.0  # opening the stallers must not itself hang (it does against a starved server)


def spread(k: int) -> list[str]:
    """8 addresses of their own for the ``k``th case (the console may not yet have let go of the
    connections from the case before, and they would count against the per-address cap)."""
    return [f"127.0.{11 + k}.{j}" for j in range(1, 9)]


@functools.cache
def client_hello_prefix(n: int = 9) -> bytes:
    """The first ``n`` bytes of a real TLS ClientHello."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()[:n]


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        return sock
    except BaseException:
        sock.close()
        raise


@functools.cache
def _server_only_context(ca: str) -> ssl.SSLContext:  # the console asks for no client certificate
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    return context


def _tls(console: RunningConsole, sock: socket.socket) -> ssl.SSLSocket:
    return _server_only_context(console.ca).wrap_socket(sock)


def _silent(console, sock):
    return sock


def _partial_client_hello(console, sock):
    sock.sendall(client_hello_prefix())
    return sock


def _partial_head(console, sock):
    tls = _tls(console, sock)
    tls.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: te")
    return tls


def _stalled_body(console, sock):
    tls = _tls(console, sock)
    tls.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 100000\r\n\r\ncsrf_tok")
    return tls


def _idle_after_one_request(console, sock):
    tls = _tls(console, sock)
    tls.sendall(b"GET /static/console.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        assert chunk, "closed before answering"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    body = head.partition(b"\r\n\r\n")[2]
    while len(body) < length:
        body += tls.recv(65536)
    return tls


VARIANTS = {
    "silent-tcp": _silent,
    "partial-client-hello": _partial_client_hello,
    "partial-request-head": _partial_head,
    "stalled-body": _stalled_body,
}


@contextlib.contextmanager
def stallers(console: RunningConsole, variant, sources: list[str], n: int):
    """``n`` connections in the state ``variant`` leaves them, round-robin over ``sources``. Opening
    stops at OPENING_BUDGET_S; what failed to open is counted, not raised. Yields the open sockets;
    closes every one afterwards."""
    opened: list[socket.socket] = []
    deadline = time.monotonic() + OPENING_BUDGET_S
    try:
        for i in range(n):
            if time.monotonic() > deadline:
                break
            sock = None
            try:
                sock = connect_from(sources[i % len(sources)], console.port)
                opened.append(variant(console, sock))
            except (OSError, ssl.SSLError):
                if sock is not None:
                    sock.close()
        yield opened
    finally:
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.close()


def _still_waiting(sock: socket.socket) -> bool:
    """True while the server has neither closed, reset nor answered ``sock`` (a staller is sent
    nothing), checked without blocking (a TLS socket reads what the handshake left, e.g. session
    tickets, and finds no data)."""
    try:
        sock.setblocking(False)
        if isinstance(sock, ssl.SSLSocket):
            sock.recv(1)
        else:
            sock.recv(1, socket.MSG_PEEK)
        return False  # an answer, or the end of the stream
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        return False


def _held_open_settles_at_most(opened: list[socket.socket], cap: int, within_s: float = 15.0) -> int:
    """How many of ``opened`` the server still holds once it has caught up with them (it accepts
    them from its backlog in its own time, and a busy machine may keep it from doing so for a
    while): polled until at most ``cap``, or ``within_s`` has passed."""
    deadline = time.monotonic() + within_s
    while True:
        still = sum(1 for sock in opened if _still_waiting(sock))
        if still <= cap or time.monotonic() > deadline:
            return still
        time.sleep(0.2)


def _seconds_until_closed(sock, limit_s: float = 10.0) -> float:
    """How long the server takes to close ``sock`` (reading and discarding anything it sends)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except (ssl.SSLError, ConnectionError):
        pass
    except (TimeoutError, socket.timeout):
        return float("inf")
    return time.monotonic() - started


class Officer:
    """A signed-in officer on the console, and how long its pages take with nobody stalling."""

    def __init__(self, console: RunningConsole, officer_id: str):
        self.console = console
        self.session = console.sign_in(officer_id)
        self.officer_id = officer_id
        self.baseline_s = statistics.median(self._timed_dashboard() for _ in range(3))

    def _timed_dashboard(self, timeout_s: float = 15) -> float:
        started = time.monotonic()
        page = self.session.get(f"{self.console.url}/", timeout=timeout_s)
        assert page.status_code == 200 and "Dashboard" in page.text and self.officer_id in page.text
        return time.monotonic() - started

    def assert_answered(self) -> None:
        """The dashboard (on the officer's session) and the sign-in page (on a new connection, as
        a newcomer) both answer within the deadline."""
        deadline_s = max(ANSWER_FLOOR_S, BASELINE_FACTOR * self.baseline_s)
        took = {}
        try:
            took["dashboard"] = self._timed_dashboard(timeout_s=deadline_s + 5)
            started = time.monotonic()
            page = self.console.session().get(f"{self.console.url}/login", timeout=deadline_s + 5)
            took["login"] = time.monotonic() - started
        except requests.Timeout:
            pytest.fail(f"the console did not answer within {deadline_s + 5:.1f}s (answered so far: {took})")
        assert page.status_code == 200 and 'name="csrf_token"' in page.text
        print("answer times:", {name: round(t, 3) for name, t in took.items()})
        slow = {name: round(t, 3) for name, t in took.items() if t > deadline_s}
        assert not slow, f"answers slower than {deadline_s:.1f}s while connections stall: {slow}"


@pytest.fixture(scope="module")
def patient_console(registry_home):
    with running_console(registry_home, PATIENT) as console:
        yield console


@pytest.fixture(scope="module")
def officer(patient_console):
    return Officer(patient_console, OFFICER)


@pytest.fixture(scope="module")
def tight_console(registry_home, patient_console):  # after the patient one: one console makes the cookie key
    with running_console(registry_home, TIGHT) as console:
        yield console


# ---- stalled connections do not keep an officer out -----------------------------------------------

def test_16_partial_client_hellos_do_not_take_the_console_offline(patient_console, officer):
    """The finding as reported: 16 sockets, each having sent 9 bytes of a ClientHello."""
    sources = [f"127.0.7.{i}" for i in range(1, 17)]
    with stallers(patient_console, _partial_client_hello, sources, n=16) as opened:
        assert len(opened) == 16
        officer.assert_answered()
        assert all(_still_waiting(sock) for sock in opened)  # answered beside them, not after them


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_officer_is_answered_while_connections_stall_up_to_the_per_address_cap(patient_console, officer,
                                                                                   variant):
    sources = spread(list(VARIANTS).index(variant))
    n = PER_ADDRESS_CAP * len(sources)
    with stallers(patient_console, VARIANTS[variant], sources, n=n) as opened:
        assert len(opened) == n, f"only {len(opened)} of {n} stalled connections opened"
        officer.assert_answered()
        still = sum(1 for sock in opened if _still_waiting(sock))
        assert still == n, f"{n - still} of the stalled connections were closed within the test"


def test_connections_over_the_per_address_cap_are_closed_at_once_and_others_answered(patient_console, officer):
    with stallers(patient_console, _partial_client_hello, ["127.0.9.9"], n=200) as opened:
        # (The patient console's timeouts close none of them within the test: only the cap can.)
        still = _held_open_settles_at_most(opened, PER_ADDRESS_CAP)
        assert still <= PER_ADDRESS_CAP, f"{still} connections from one address held open (cap {PER_ADDRESS_CAP})"
        officer.assert_answered()


def test_silent_connections_filling_the_total_cap_do_not_lock_an_officer_out(patient_console, officer):
    """More connections in their handshake than the total cap, from many addresses: the oldest are
    closed to admit newcomers, so the officer's newcomers are admitted too."""
    sources = [f"127.0.20.{i}" for i in range(1, 31)]  # 30 addresses x the per-address cap: 1.5 x the total cap
    with stallers(patient_console, _partial_client_hello, sources, n=len(sources) * PER_ADDRESS_CAP) as opened:
        still = _held_open_settles_at_most(opened, TOTAL_CAP)
        assert still <= TOTAL_CAP, f"{still} connections held open (total cap {TOTAL_CAP})"
        for _ in range(3):
            officer.assert_answered()


# ---- each stall is closed within its time ---------------------------------------------------------

@pytest.mark.parametrize("variant", [*VARIANTS, "idle-keep-alive"])
def test_a_stalled_connection_is_closed_within_the_configured_timeout(tight_console, variant):
    state = _idle_after_one_request if variant == "idle-keep-alive" else VARIANTS[variant]
    with stallers(tight_console, state, ["127.0.6.1"], n=1) as [sock]:
        took = _seconds_until_closed(sock)
    assert took <= TIGHT_TIMEOUT_S + CLOSE_SLACK_S, f"{variant}: closed after {took:.2f}s"


def test_a_trickled_body_is_closed_within_the_configured_timeout(tight_console):
    with stallers(tight_console, _stalled_body, ["127.0.6.2"], n=1) as [sock]:
        started = time.monotonic()
        sock.settimeout(0.2)
        closed_after = None
        while time.monotonic() - started < 10:
            try:
                sock.sendall(b"x")
                if sock.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except (TimeoutError, socket.timeout):
                continue
            except (ssl.SSLError, OSError):
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None and closed_after <= TIGHT_TIMEOUT_S + CLOSE_SLACK_S, closed_after


def test_an_officer_signs_in_on_a_console_with_short_limits(tight_console):
    """The short limits cut stallers, not officers: a whole sign-in, and pages on the session after
    its keep-alive connection was closed for idling."""
    session = tight_console.sign_in("senior-t")
    time.sleep(TIGHT_TIMEOUT_S + 0.5)
    page = session.get(f"{tight_console.url}/", timeout=15)
    assert page.status_code == 200 and "senior-t" in page.text


# ---- the console through the front: what it did before -------------------------------------------

def test_the_audit_names_the_officers_address_and_the_request_and_the_log_no_query(patient_console, registry_home):
    seq = registry_home.audit_seq()
    session, dashboard = patient_console.signed_in("carol", source="127.0.8.8")
    signed_in = dashboard.history[0]  # the sign-in's own answer: a redirect to the dashboard
    assert signed_in.status_code == 302
    request_id = signed_in.headers["X-Request-Id"]
    mine = [e for e in registry_home.audit_entries_after(seq) if e["request_id"] == request_id]
    assert mine and all(e["source_address"] == "127.0.8.8" for e in mine), mine
    page = session.get(f"{patient_console.url}/organisations?status=secret-search-term", timeout=15)
    assert page.status_code == 200
    for name, value in (("Content-Security-Policy", "frame-ancestors 'none'"), ("Cache-Control", "no-store"),
                        ("X-Frame-Options", "DENY")):
        assert value in page.headers[name]
    cookie = next(c for c in session.cookies if c.name == "contactgate_console")
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    deadline = time.monotonic() + 10
    while "GET /organisations " not in patient_console.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = patient_console.log.read_text()
    assert "GET /organisations " in log and "secret-search-term" not in log
    assert "127.0.8.8" in log


def test_uploads_up_to_the_console_limit_reach_it_and_larger_ones_are_refused_413(patient_console):
    from gateway.console import MAX_UPLOAD_BYTES

    session = patient_console.session()
    token = session.get(f"{patient_console.url}/login", timeout=15).text.split('name="csrf_token" value="')[1]
    token = token.split('"')[0]
    form = {"csrf_token": token, "officer": "nobody-at-all", "password": "wrong", "code": "000000"}
    headers = {"Referer": f"{patient_console.url}/login"}
    # A multipart body of 1.5 MB (past what the front keeps without its body budget) reaches the
    # console whole: the sign-in is refused for its credentials, not for its size.
    under = session.post(f"{patient_console.url}/login", data=form, headers=headers, timeout=30,
                         files={"evidence": ("evidence.bin", b"e" * (MAX_UPLOAD_BYTES * 3 // 4))})
    assert under.status_code == 401 and "Sign-in refused" in under.text
    over = session.post(f"{patient_console.url}/login", data=form, headers=headers, timeout=30,
                        files={"evidence": ("evidence.bin", b"e" * (MAX_UPLOAD_BYTES + 1024))})
    assert over.status_code == 413 and "larger than 2 MB" in over.text
    # Declared far larger than anyone sends: answered without the body being read.
    with stallers(patient_console, _tls, ["127.0.8.9"], n=1) as [tls]:
        tls.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: %d\r\n\r\n" % (100 * MAX_UPLOAD_BYTES))
        tls.settimeout(15)
        answer = b""
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            while chunk := tls.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ") and b"larger than 2 MB" in answer
