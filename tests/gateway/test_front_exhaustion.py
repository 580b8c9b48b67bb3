"""Attacks on the front's limits (gateway/front.py), in-process over real TLS: filling the total
connection cap from many addresses, holding buffered bodies by stalling after sending them, and
request framing a proxy could read differently (request smuggling)."""

from __future__ import annotations

import socket
import time
from dataclasses import replace

import pytest

from tests.gateway.test_front import LIMIT, LIMITS, RunningFront, material, read_all  # noqa: F401


def _silent(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def test_silent_connections_filling_the_total_cap_do_not_lock_out_a_client(material):
    # Silent connections may hold on for 30 s: the client is served by the eviction, not a timeout.
    limits = replace(LIMITS, max_connections=40, max_connections_per_address=5, handshake_timeout_s=30)
    running = RunningFront(material, limits)
    held = []
    try:
        for a in range(10):  # 50 silent connections from 10 addresses: more than the total cap
            held += [_silent(running.port, f"127.0.60.{a + 1}") for _ in range(5)]
        time.sleep(0.3)
        for _ in range(3):
            started = time.monotonic()
            with running.tls_socket("127.0.0.1") as tls:
                tls.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                assert tls.recv(100).startswith(b"HTTP/1.1 200")
            assert time.monotonic() - started < 10  # well within the 30 s a silent connection may hold on
    finally:
        for sock in held:
            sock.close()
        running.stop()


def test_a_body_that_stalls_after_a_fast_start_is_closed_within_the_body_timeout(material):
    limits = replace(LIMITS, body_timeout_s=1, max_body_bytes=4 * 1024 * 1024)
    running = RunningFront(material, limits)
    try:
        with running.tls_socket() as tls:
            part = 3 * 1024 * 1024  # earns 48 s under the pace rule alone
            tls.sendall(b"POST /soap/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (part + 10))
            tls.sendall(b"x" * part)
            tls.settimeout(10)
            started = time.monotonic()
            read_all(tls)
            assert time.monotonic() - started < 1 + 10  # the body timeout, not the 48 s the pace rule earns
    finally:
        running.stop()


def test_buffered_bodies_have_a_worker_wide_bound(material):
    """Many connections each sending a large body and then waiting are refused once the bound is
    reached, instead of each holding its body; a small request is still served."""
    limits = replace(LIMITS, body_timeout_s=5, max_body_bytes=1024 * 1024, max_connections_per_address=50)
    running = RunningFront(material, limits)
    held = []
    try:
        refused = 0
        for _ in range(40):  # 40 x 900 KiB = 35 MiB if every one were kept
            tls = running.tls_socket()
            try:
                tls.sendall(b"POST /soap/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (1024 * 1024))
                tls.sendall(b"x" * (900 * 1024))
            except OSError:  # answered 503 and closed while the body was still being sent: refused
                refused += 1
                tls.close()
                continue
            held.append(tls)
        time.sleep(0.5)
        for tls in held:
            tls.settimeout(0.2)
            try:
                if tls.recv(100).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except (TimeoutError, OSError):
                pass
        assert running.front.body_budget.used <= running.front.body_budget.total
        assert refused >= 40 - running.front.body_budget.total // (900 * 1024) - 1
        with running.tls_socket("127.0.0.2") as small:
            small.sendall(b"POST /soap/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            assert small.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
        running.stop()


@pytest.mark.parametrize("head", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
], ids=["length-then-chunked", "chunked-then-length"])
def test_ambiguous_framing_is_refused_and_the_connection_closed(material, head):
    running = RunningFront(material, LIMITS)
    try:
        with running.tls_socket() as tls:
            tls.sendall(b"POST /soap/v1 HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n5\r\nhello\r\n0\r\n\r\n"
                        b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_all(tls)
        assert data.startswith(b"HTTP/1.1 400 ") and data.count(b"HTTP/1.1 ") == 1, data[:200]
    finally:
        running.stop()


def test_the_per_address_cap_counts_an_ipv6_slash_64_as_one_address():
    from gateway.front import address_key

    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7" == address_key("192.0.2.7")
