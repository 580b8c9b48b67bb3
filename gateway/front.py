"""The front of `contactgate serve` and `contactgate console`: TLS and HTTP/1.1 on an asyncio event
loop, the WSGI app in a thread only once a whole request has arrived.

Why: anyone who can reach the port can open connections and send nothing, a few bytes of a TLS
handshake, or a request head promising a body that never comes (DESIGN.md "Slow and idle clients").
A thread-per-connection server gives each of them a thread. Here such a connection costs a socket
and a few objects on the event loop, and is closed after a bounded time:

- the TLS handshake must finish within ``handshake_timeout_s`` of the connection being accepted;
- the request head within ``header_timeout_s``; an idle keep-alive connection is closed after
  ``keepalive_timeout_s``;
- the body within ``body_timeout_s`` plus one second per BODY_MIN_BYTES_PER_S received (a minimum
  pace, so a large honest upload is not cut but a trickle is), with no pause longer than
  ``body_timeout_s``; the answer is written under the same rule;
- at most ``max_connections_per_address`` connections from one address (an IPv6 /64 counts as one)
  per worker process: over it a connection is closed at once, before any TLS work;
- at most ``max_connections`` in all per worker: at that cap the oldest connection still in its
  handshake (else the oldest idle one) is closed to admit the newcomer, so silent connections from
  many addresses push each other out and never lock accredited clients out;
- bodies kept in memory: FREE_BODY_BYTES per connection, and beyond that a per-worker budget
  (BODY_BUDGET_MESSAGES x the message limit); a large body past the budget is answered 503;
- a request framed by both Content-Length and Transfer-Encoding is refused 400 (no smuggling).

Only a complete request reaches a thread of the pool (``threads``), with its body already read and
hashed (the same `ReceivedBody` as `gateway.app.read_body` makes). The verified client certificate
goes into the WSGI environ under PEER_CERT_DER_KEY. What differs between the two servers is given to
`Front` (gateway/server.py `FrontSetup`): `serve` asks for a client certificate and audits refused
ones, with the message limit as body limit; the console asks for none (officers sign in with
password and TOTP), has its upload limit as body limit, and logs paths without query strings.

Refused handshakes (no client certificate, untrusted CA) are counted in memory, per address: at
most HANDSHAKE_AUDITS_PER_MINUTE in any minute become audit entries (written in a thread), the rest
are logged. Timeouts and caps are logged, rate-limited, never audited: they name nobody.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http
import io
import ipaddress
import logging
import os
import socket
import ssl
import sys
import time
import urllib.parse
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import h11

from gateway import forwarded
from gateway.app import OVERSIZE_FACTOR, PEER_CERT_DER_KEY, RECEIVED_BODY_KEY
from gateway.config import Settings
from gateway.files import ChangeWatch
from gateway.pipeline import HANDSHAKE_AUDITS_PER_MINUTE, REFUSED_CERTIFICATE_REASONS, ReceivedBody

log = logging.getLogger("contactgate.front")

BODY_MIN_BYTES_PER_S = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
TLS_SHUTDOWN_GRACE_S = 2.0
TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte of every TLS connection (a handshake record)
# Every connection may keep this much of a body without asking the budget (so small requests are
# never refused for want of it); larger bodies share BODY_BUDGET_MESSAGES x the message limit per
# worker. Memory for bodies is then at most that budget + max_connections x FREE_BODY_BYTES.
FREE_BODY_BYTES = 64 * 1024
BODY_BUDGET_MESSAGES = 16
AUDIT_BACKLOG = 64  # refused-handshake audits waiting for the audit thread; beyond, only logged


@dataclass(frozen=True)
class FrontLimits:
    handshake_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int
    max_connections_per_address: int
    max_body_bytes: int  # the message limit; bodies are read (hashed) up to OVERSIZE_FACTOR times it
    # Bytes of request bodies one worker keeps in memory at once, beyond FREE_BODY_BYTES each: a
    # large body that would go past it is refused 503 (Retry-After) instead of being buffered.
    body_budget_bytes: int = 0  # 0: BODY_BUDGET_MESSAGES x max_body_bytes
    # (path, limit) of the few paths that take a larger body than max_body_bytes (the portal's CSV
    # import page); every other path has max_body_bytes.
    path_body_limits: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> "FrontLimits":
        return cls(handshake_timeout_s=settings.handshake_timeout_s,
                   header_timeout_s=settings.header_timeout_s,
                   body_timeout_s=settings.body_timeout_s,
                   keepalive_timeout_s=settings.keepalive_timeout_s,
                   max_connections=settings.max_connections,
                   max_connections_per_address=settings.max_connections_per_address,
                   max_body_bytes=settings.max_message_bytes,
                   body_budget_bytes=settings.max_message_bytes * BODY_BUDGET_MESSAGES)


def server_ssl_context(cert_file: str, key_file: str, client_cas) -> ssl.SSLContext:
    """Mutual TLS: TLS 1.2 at least, a client certificate chaining to one of the configured CAs and,
    when the files carry CRLs, not revoked (checked at the handshake; a CA without a CRL among them
    then refuses its clients: fail closed). ``client_cas``: one PEM file (a bundle) or several (the
    CAs and CRLs themselves: gateway.trust.crl.client_ca_sources), each holding certificates, CRLs
    or both."""
    files = [str(client_cas)] if isinstance(client_cas, (str, os.PathLike)) else [str(f) for f in client_cas]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=files[0])
    for path in files[1:]:
        context.load_verify_locations(cafile=path)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    for path in files:
        with open(path, "rb") as pem:
            if b"-----BEGIN X509 CRL-----" in pem.read():
                context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.load_cert_chain(cert_file, key_file)
    return context


def server_ssl_context_without_client_certificates(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS 1.2 at least with the server's certificate, and no client certificate asked for: only for
    a server whose users prove who they are otherwise (the console: password and TOTP)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(cert_file, key_file)
    return context


class ReloadingContext:
    """The TLS context for new connections, rebuilt when a watched file (the client CAs and their
    CRLs) changes, appears or goes: checked at most once a second; open connections keep the context
    they had. Files that cannot be loaded leave the previous context in use (and say so).
    ``watched``: the files, or a function giving them at each look (so a new CRL file is seen)."""

    def __init__(self, build: Callable[[], ssl.SSLContext], watched, interval_s: float = 1.0):
        self._build = build
        self._watch = ChangeWatch(watched if callable(watched) else lambda: watched, interval_s)
        self._context = build()

    def current(self) -> ssl.SSLContext:
        if self._watch.changed():
            try:
                self._context = self._build()
                logging.getLogger("contactgate.tls").info("TLS context reloaded (trust list or CRL changed)")
            except (OSError, ssl.SSLError) as error:
                logging.getLogger("contactgate.tls").error("TLS context not reloaded, the previous one stays: %s", error)
        return self._context


# ---- small in-memory book-keeping (one event loop, so no locks) ----------------------------------

class ConnectionCaps:
    """Open connections, in all and per source address."""

    def __init__(self, total: int, per_address: int):
        self.total_cap, self.per_address_cap = total, per_address
        self.total = 0
        self.by_address: dict[str, int] = defaultdict(int)

    def admit(self, address: str, *, room_made: bool = False, per_address: bool = True) -> str | None:
        """Count a new connection, or say which cap refuses it. ``room_made``: the caller has just
        evicted a connection to make room (its release follows), so the total cap is not checked.
        ``per_address`` False: an address the per-address cap does not apply to (a trusted proxy,
        through which every client comes)."""
        if self.total >= self.total_cap and not room_made:
            return "total"
        if per_address and self.by_address[address] >= self.per_address_cap:
            return "per-address"
        self.total += 1
        self.by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


class RecentAllowance:
    """At most ``per_minute`` events per key in any 60 seconds (a sliding window: a burst across a
    minute boundary does not get twice the allowance)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._allowed: dict[str, list[float]] = {}
        self._next_sweep = 0.0

    def allow(self, key: str) -> bool:
        now = self._clock()
        if now >= self._next_sweep:  # forget addresses not seen for a minute
            self._allowed = {k: times for k, times in self._allowed.items() if times[-1] > now - 60}
            self._next_sweep = now + 60
        times = [t for t in self._allowed.get(key, ()) if t > now - 60]
        if len(times) >= self.per_minute:
            self._allowed[key] = times
            return False
        times.append(now)
        self._allowed[key] = times
        return True


class RateLimitedLog:
    """At most one line per kind every ``interval_s``, saying how many were folded into it."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._interval, self._clock = logger, interval_s, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = defaultdict(int)

    def warning(self, kind: str, message: str, *args) -> None:
        now = self._clock()
        if now - self._last.get(kind, -self._interval) < self._interval:
            self._suppressed[kind] += 1
            return
        self._last[kind] = now
        folded = self._suppressed.pop(kind, 0)
        suffix = f" (and {folded} more like it in the last {self._interval:g}s)" if folded else ""
        self._log.warning(message + suffix, *args)


class BodyReader:
    """Keeps at most limit + 1 bytes of a body and hashes all of it, up to OVERSIZE_FACTOR x limit,
    as `gateway.app.read_body` does, so the pipeline sees the same `ReceivedBody`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.kept = bytearray()
        self.size = 0
        self.hasher = hashlib.sha256()
        self.overflowed = False

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit * OVERSIZE_FACTOR:
            self.overflowed = True
            return
        self.hasher.update(chunk)
        if len(self.kept) <= self.limit:
            self.kept += chunk[: self.limit + 1 - len(self.kept)]

    def received(self) -> ReceivedBody:
        digest = None if self.overflowed else base64.b64encode(self.hasher.digest()).decode()
        return ReceivedBody(bytes(self.kept), self.size, digest)


class BodyBudget:
    """Bytes of request bodies held in memory by one worker (one event loop, so no locks)."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0

    def take(self, amount: int) -> bool:
        if self.used + amount > self.total:
            return False
        self.used += amount
        return True

    def give(self, amount: int) -> None:
        self.used -= amount


class _Busy(Exception):
    """The worker holds as many buffered bodies as it may: answer 503, then close."""


class _Stalled(Exception):
    """The peer did not send what it had to within its time."""


class _Overflow(Exception):
    """More body than any honest client sends: answer, then close."""


@dataclass
class _Exchange:
    request: h11.Request
    body: ReceivedBody
    must_close: bool
    budget_taken: int = 0  # given back to the worker's BodyBudget once the exchange is answered


# ---- the front -------------------------------------------------------------------------------------

class Front:
    """Serves connections accepted by ``asyncio.start_server`` (plain TCP) for one worker process."""

    def __init__(self, app, limits: FrontLimits, ssl_context: "ssl.SSLContext | ReloadingContext",
                 app_pool: ThreadPoolExecutor,
                 *, audit_refused_handshake: Callable[[str, str], None] | None = None,
                 access_log: logging.Logger | None = None, log_query_strings: bool = True,
                 uncapped_address: Callable[[str], bool] = lambda address: False, proxy_hop: bool = False):
        """``audit_refused_handshake(address, reason)``: called (in a thread, a few times a minute per
        address) for a handshake refused for its client certificate; None: only logged.
        ``log_query_strings`` False: the access log has the path only (the console's audit page
        takes search terms in its query). ``proxy_hop``: the front of `serve --behind-proxy`, where
        nginx connects with its proxy certificate: requests are marked forwarded.PROXY_HOP, and a
        plain-HTTP request sent to the TLS port is answered as refused (forwarded.PLAIN_HTTP) instead
        of being dropped, so that a proxy configured for plain HTTP is told, and the attempt audited."""
        self.app = app
        self.limits = limits
        # The context for the next handshake: a ReloadingContext follows its files, a plain one stays.
        self.tls_context = ssl_context.current if isinstance(ssl_context, ReloadingContext) else lambda: ssl_context
        self.proxy_hop = proxy_hop
        self.app_pool = app_pool
        self.audit_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contactgate-audit")
        self.audit_refused_handshake = audit_refused_handshake
        self.access_log = access_log
        self.log_query_strings = log_query_strings
        self.caps = ConnectionCaps(limits.max_connections, limits.max_connections_per_address)
        self.uncapped_address = uncapped_address  # behind nginx: its address carries every client
        self.body_budget = BodyBudget(limits.body_budget_bytes or BODY_BUDGET_MESSAGES * limits.max_body_bytes)
        self.handshake_audits = RecentAllowance(HANDSHAKE_AUDITS_PER_MINUTE)
        self.audits_pending = 0
        self.quiet_log = RateLimitedLog(log)
        self.stopping = False
        self.connections: dict[asyncio.Task, str] = {}  # task -> "tls", "idle", "reading" or "busy"

    # ---- lifecycle -------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop: close every connection not running a request now; let those finish (up to
        ``grace_s``), answer with Connection: close, then close them."""
        self.stopping = True
        for task, state in list(self.connections.items()):
            if state != "busy":
                task.cancel()
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=1.0)
        self.audit_pool.shutdown(wait=True)

    # ---- one connection --------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        address = address_key(str(peer[0]))
        per_address = not self.uncapped_address(str(peer[0]))
        refused_by = "stopping" if self.stopping else self.caps.admit(address, per_address=per_address)
        if refused_by == "total" and self._evict_one():
            refused_by = self.caps.admit(address, room_made=True, per_address=per_address)
        if refused_by is not None:
            if refused_by != "stopping":
                self.quiet_log.warning(f"cap-{refused_by}", "connection from %s closed at once: the %s "
                                       "connection cap is reached", address, refused_by)
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self.connections[task] = "tls"
        try:
            await self._serve(reader, writer, peer)
            if not writer.transport.is_closing():
                self._close(writer)
        except asyncio.CancelledError:
            writer.transport.abort()
        except _Stalled as stalled:
            self.quiet_log.warning("slow-client", "closed a connection from %s: %s", address, stalled)
            writer.transport.abort()
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            writer.transport.abort()
        except Exception:
            log.exception("unexpected failure on a connection from %s", address)
            writer.transport.abort()
        finally:
            self.connections.pop(task, None)
            self.caps.release(address)

    EVICTABLE = ("tls", "idle")  # in this order: not yet authenticated, then waiting for a request

    def _evict_one(self) -> bool:
        """At the total cap, close the oldest connection that has not finished its TLS handshake
        (else the oldest one idle between requests) so that a newcomer is not refused: silent
        connections from many addresses can then never lock accredited clients out, they only
        push each other out. Connections reading a request or running one are never evicted."""
        for state in self.EVICTABLE:
            for task, current in self.connections.items():  # insertion order: oldest first
                if current == state:
                    self.connections[task] = "evicted"
                    task.cancel()
                    self.quiet_log.warning("evicted", "at the total connection cap: closed the oldest "
                                           "connection %s to admit a new one",
                                           "still in its TLS handshake" if state == "tls" else "idle")
                    return True
        return False

    async def _serve(self, reader, writer, peer) -> None:
        address = str(peer[0])
        peer_der = None
        plain_http = False
        if self.proxy_hop:
            first = await self._first_byte(writer, address)
            if not first:
                return
            plain_http = first != TLS_HANDSHAKE_RECORD
        if not plain_http:
            if not await self._handshake(writer, address):
                return
            # The verified client certificate; None where the context asks for none (the console).
            ssl_object = writer.get_extra_info("ssl_object")
            peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        wait_s = self.limits.header_timeout_s  # the first request: its head within the header time
        while not self.stopping:
            self.connections[task] = "idle"
            if not conn.trailing_data[0]:
                data = await self._read(reader, loop.time() + wait_s, "no request in time")
                if not data:
                    return
                conn.receive_data(data)
            self.connections[task] = "reading"
            try:
                exchange = await self._read_request(conn, reader, writer)
            except h11.RemoteProtocolError as error:
                if not reader.at_eof():  # the peer gave up mid-request: nothing to answer
                    await self._bad_request(writer, error)
                return
            except _Busy:
                await self._busy(writer)
                return
            if exchange is None:
                return
            self.connections[task] = "busy"
            if plain_http and not self.handshake_audits.allow(address):
                self.body_budget.give(exchange.budget_taken)
                self.quiet_log.warning("plain-http", "plain HTTP from %s on the TLS port: refused, not audited "
                                       "(over %d a minute from that address)", address, HANDSHAKE_AUDITS_PER_MINUTE)
                await self._plain_answer(writer, 400, b"this port requires TLS\n")
                return
            try:
                environ = self._environ(exchange, peer, peer_der, writer, plain_http)
                status, headers, body = await loop.run_in_executor(self.app_pool, self._call_app, environ)
            finally:
                self.body_budget.give(exchange.budget_taken)
            must_close = exchange.must_close or self.stopping or plain_http
            await self._respond(conn, writer, exchange.request, status, headers, body, must_close)
            if must_close or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                break
            conn.start_next_cycle()
            wait_s = self.limits.keepalive_timeout_s

    async def _first_byte(self, writer, address: str) -> bytes | None:
        """The first byte the peer sends, looked at without taking it (MSG_PEEK, on a duplicate of the
        socket's descriptor while the transport does not read), so the TLS handshake still reads it:
        0x16 begins a TLS handshake, anything else is plain text. None (or b"" if the peer closed)
        when nothing came within the handshake time."""
        loop = asyncio.get_running_loop()
        writer.transport.pause_reading()  # start_tls resumes it; the plain path does below
        descriptor = os.dup(writer.get_extra_info("socket").fileno())
        probe = socket.socket(fileno=descriptor)
        ready = loop.create_future()
        loop.add_reader(descriptor, lambda: ready.done() or ready.set_result(None))
        try:
            async with asyncio.timeout(self.limits.handshake_timeout_s):
                await ready
            first = probe.recv(1, socket.MSG_PEEK)
        except (TimeoutError, OSError) as error:
            self.quiet_log.warning("tls-timeout", "TLS handshake from %s not begun: %s", address,
                                   str(error) or type(error).__name__)
            return None
        finally:
            loop.remove_reader(descriptor)
            probe.close()  # the duplicate only: the connection stays open
        if first and first != TLS_HANDSHAKE_RECORD:
            writer.transport.resume_reading()
        return first

    async def _handshake(self, writer, address: str) -> bool:
        """The TLS handshake, bounded: False (and the connection dropped) if it did not succeed."""
        try:
            await writer.start_tls(self.tls_context(), ssl_handshake_timeout=self.limits.handshake_timeout_s)
        except ssl.SSLError as error:
            reason = getattr(error, "reason", None)
            if reason in REFUSED_CERTIFICATE_REASONS:
                self._handshake_refused(address, reason)
            else:
                self.quiet_log.warning("tls-failed", "TLS handshake from %s failed: %s", address,
                                       reason or error)
            writer.transport.abort()
            return False
        except (ConnectionError, TimeoutError, OSError) as error:
            self.quiet_log.warning("tls-timeout", "TLS handshake from %s not completed: %s", address,
                                   str(error) or type(error).__name__)
            writer.transport.abort()
            return False
        return True

    def _handshake_refused(self, address: str, reason: str) -> None:
        if self.audit_refused_handshake is None:
            self.quiet_log.warning("tls-refused", "refused TLS handshake from %s (%s)", address, reason)
            return
        if self.audits_pending >= AUDIT_BACKLOG or not self.handshake_audits.allow(address):
            self.quiet_log.warning("tls-refused", "refused TLS handshake from %s (%s): not audited, "
                                   "over %d a minute from that address (or the audit backlog is full)",
                                   address, reason, HANDSHAKE_AUDITS_PER_MINUTE)
            return
        self.audits_pending += 1
        future = self.audit_pool.submit(self.audit_refused_handshake, address, reason)
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._audit_done))

    def _audit_done(self) -> None:
        self.audits_pending -= 1

    # ---- reading ---------------------------------------------------------------------------------

    @staticmethod
    async def _read(reader: asyncio.StreamReader, deadline: float, what: str) -> bytes:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise _Stalled(what)
        try:
            async with asyncio.timeout(remaining):
                return await reader.read(READ_CHUNK)
        except TimeoutError:
            raise _Stalled(what) from None

    async def _next_event(self, conn: h11.Connection, reader, deadline: Callable[[], float], what: str):
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await self._read(reader, deadline(), what))

    async def _read_request(self, conn: h11.Connection, reader, writer) -> _Exchange | None:
        loop = asyncio.get_running_loop()
        head_deadline = loop.time() + self.limits.header_timeout_s
        request = await self._next_event(conn, reader, lambda: head_deadline, "request head too slow")
        if isinstance(request, h11.ConnectionClosed):
            return None
        assert isinstance(request, h11.Request), request
        _refuse_ambiguous_framing(request)
        limit = self.limits.max_body_bytes
        if self.limits.path_body_limits:
            path = request.target.decode("latin-1").partition("?")[0]
            limit = next((size for where, size in self.limits.path_body_limits if where == path), limit)
        body = BodyReader(limit)
        declared = _content_length(request)
        if declared is not None and declared > limit * OVERSIZE_FACTOR:
            # No honest client sends this: answer (TooLarge, from the pipeline) without reading it.
            return _Exchange(request, ReceivedBody(b"", declared, None), must_close=True)
        if conn.they_are_waiting_for_100_continue:
            await self._write(writer, conn.send(h11.InformationalResponse(status_code=100, headers=[])), 0)
        started = loop.time()
        last_progress = started

        def body_deadline() -> float:
            # The whole body within the body time plus a minimum pace; and never a pause longer
            # than the body time (a body sent fast and then stalled must not be kept for minutes).
            return min(started + self.limits.body_timeout_s + body.size / BODY_MIN_BYTES_PER_S,
                       last_progress + self.limits.body_timeout_s)

        taken = 0
        try:
            while True:
                event = await self._next_event(conn, reader, body_deadline, "request body too slow")
                if isinstance(event, h11.Data):
                    last_progress = loop.time()
                    body.add(event.data)
                    needed = max(0, len(body.kept) - FREE_BODY_BYTES) - taken
                    if needed > 0:
                        if not self.body_budget.take(needed):
                            raise _Busy()
                        taken += needed
                    if body.overflowed:
                        return _Exchange(request, body.received(), must_close=True, budget_taken=taken)
                elif isinstance(event, h11.EndOfMessage):
                    return _Exchange(request, body.received(), must_close=False, budget_taken=taken)
                else:  # ConnectionClosed mid-body is a RemoteProtocolError in h11; anything else: stop
                    break
        except BaseException:
            self.body_budget.give(taken)
            raise
        self.body_budget.give(taken)
        return None

    async def _busy(self, writer) -> None:
        self.quiet_log.warning("body-budget", "refused a large body from %s: the worker holds as many "
                               "buffered bodies as it may", (writer.get_extra_info("peername") or ("?",))[0])
        await self._plain_answer(writer, 503, b"busy: retry later\n", b"Retry-After: 5\r\n")

    async def _bad_request(self, writer, error: h11.RemoteProtocolError) -> None:
        self.quiet_log.warning("bad-request", "malformed HTTP from %s: %s",
                               (writer.get_extra_info("peername") or ("?",))[0], error)
        await self._plain_answer(writer, error.error_status_hint or 400, b"bad request\n")

    async def _plain_answer(self, writer, status: int, text: bytes, extra_headers: bytes = b"") -> None:
        """A short text answer outside any SOAP exchange (the request never reached the pipeline),
        after which the connection is closed."""
        reason = http.HTTPStatus(status).phrase.encode("ascii")
        await self._write(writer, b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n%sContent-Length: %d\r\n"
                          b"Connection: close\r\n\r\n%s" % (status, reason, extra_headers, len(text), text),
                          len(text))

    # ---- the application -------------------------------------------------------------------------

    def _environ(self, exchange: _Exchange, peer, peer_der: bytes | None, writer, plain_http: bool = False) -> dict:
        request = exchange.request
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        sockname = writer.get_extra_info("sockname") or ("", 0)
        environ = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote(path, encoding="latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": target,
            "SERVER_NAME": str(sockname[0]),
            "SERVER_PORT": str(sockname[1]),
            "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
            "REMOTE_ADDR": str(peer[0]),
            "REMOTE_PORT": str(peer[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http" if plain_http else "https",
            "wsgi.input": io.BytesIO(exchange.body.data),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            PEER_CERT_DER_KEY: peer_der,
            RECEIVED_BODY_KEY: exchange.body,
        }
        if self.proxy_hop:
            environ[forwarded.PROXY_HOP] = True
            if plain_http:
                environ[forwarded.PLAIN_HTTP] = True
        for name, value in request.headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            value = value.decode("latin-1")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif key == "CONTENT_LENGTH":
                continue  # the length of wsgi.input, set below
            else:
                key = "HTTP_" + key
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        # The size the client sent (or declared, for a body not read): the length of wsgi.input,
        # unless the body went past the limit and only its first limit + 1 bytes were kept. An app
        # that checks the length itself (Flask's MAX_CONTENT_LENGTH: the console) then refuses it.
        environ["CONTENT_LENGTH"] = str(exchange.body.size)
        return environ

    def _call_app(self, environ: dict) -> tuple[str, list, bytes]:
        """Run the WSGI app (in a pool thread) and collect its whole answer."""
        started = time.monotonic()
        captured: dict = {}

        def start_response(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        try:
            result = self.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            status, headers = captured["status"], captured["headers"]
        except Exception:
            log.exception("the application failed on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"])
            status, headers = "500 Internal Server Error", [("Content-Type", "text/plain")]
            chunks = [b"internal error\n"]
        body = b"".join(chunks)
        if self.access_log is not None:
            seconds = time.monotonic() - started
            request_id = next((value for name, value in headers if name.lower() == "x-request-id"), None)
            target = environ["RAW_URI"] if self.log_query_strings else environ["RAW_URI"].partition("?")[0]
            self.access_log.info('%s - - "%s %s %s" %s %d %.3fs %s', environ["REMOTE_ADDR"],
                                 environ["REQUEST_METHOD"], target, environ["SERVER_PROTOCOL"],
                                 status.split(" ", 1)[0], len(body), seconds, request_id or "-",
                                 extra={"remote": environ["REMOTE_ADDR"], "method": environ["REQUEST_METHOD"],
                                        "path": environ["PATH_INFO"], "status": int(status.split(" ", 1)[0]),
                                        "bytes": len(body), "seconds": round(seconds, 6), "request_id": request_id})
        return status, headers, body

    # ---- writing ---------------------------------------------------------------------------------

    async def _respond(self, conn: h11.Connection, writer, request: h11.Request, status: str, headers: list,
                       body: bytes, must_close: bool) -> None:
        code, _, reason = status.partition(" ")
        head = [(name, value) for name, value in headers
                if name.lower() not in ("content-length", "connection", "transfer-encoding")]
        head.append(("Content-Length", str(len(body))))
        if must_close:
            head.append(("Connection", "close"))
        data = conn.send(h11.Response(status_code=int(code), headers=head, reason=reason.encode("latin-1")))
        if request.method != b"HEAD":
            data += conn.send(h11.Data(data=body)) if body else b""
        data += conn.send(h11.EndOfMessage())
        await self._write(writer, data, len(data))

    async def _write(self, writer, data: bytes, size: int) -> None:
        writer.write(data)
        try:
            async with asyncio.timeout(self.limits.body_timeout_s + size / BODY_MIN_BYTES_PER_S):
                await writer.drain()
        except TimeoutError:
            raise _Stalled("answer not taken in time") from None

    @staticmethod
    def _close(writer) -> None:
        """Close (sending TLS close_notify), and drop the socket if the peer does not take it."""
        transport = writer.transport
        writer.close()
        asyncio.get_running_loop().call_later(TLS_SHUTDOWN_GRACE_S, transport.abort)


def _refuse_ambiguous_framing(request: h11.Request) -> None:
    """A request framed two ways (Content-Length and Transfer-Encoding) could be read differently by a
    proxy in front: refuse it (RFC 9112 6.3), so nothing can be smuggled. (h11 already refuses
    differing Content-Length values, and folds identical ones, as RFC 9110 8.6 allows.)"""
    names = {name for name, _ in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        raise h11.RemoteProtocolError("a request framed by both Content-Length and Transfer-Encoding",
                                      error_status_hint=400)


def address_key(address: str) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 /64 (anyone can hold a /64, so
    single IPv6 addresses would be no cap at all); an IPv4-mapped IPv6 address as its IPv4 one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is one non-negative integer
    return None
