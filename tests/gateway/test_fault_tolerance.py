"""Faults lose nothing (issue 5, part 6), with real processes: a redis-server of the test's own that
is restarted, flushed or paused (stopped under load: tests/gateway/store/test_redis_outage.py); a PostgreSQL reached through a relay the test cuts; gateway
workers killed with SIGKILL in the middle of a SubmitUpdates.

Each test sends the exact signed bytes (`build_request` + `post_raw`), so a retry is the same
message, and ends by checking the audit chain and that every answered exchange has its entry.
Workers are found as child processes of the server, whatever worker model serves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sqlite3
import threading
import time
from collections import Counter

import pytest
from lxml import etree
from sqlalchemy import create_engine, make_url, select, text

from gateway import audit
from gateway.db import audit_log
from contactgate_wire.soap import CG, digest_b64, q
from tests.support import (
    REDIS_URL, TcpRelay, child_pids, child_update, postgres_database, private_gateway, redis_server,
    unique, unique_name, wait_for_lock_waiters,
)

BACKENDS = ["sqlite", "postgresql"]
LA = {"LA": ("local_authority", ["push", "query"])}
READER = {"Requester": {"UserId": "u1", "Role": "social_worker"},
          "Reason": {"_value_1": "checking contacts", "code": "safeguarding"}}


# ---- helpers -------------------------------------------------------------------------------------

class Exchanges:
    """Sends exact bytes and remembers the digest of every request the gateway answered 200, so the
    test can check each has its audit entry."""

    def __init__(self, client):
        self.client = client
        self.answered: list[str] = []

    def send(self, operation: str, data: bytes) -> tuple[int, etree._Element, float]:
        started = time.monotonic()
        status, envelope = self.client.post_raw(operation, data)
        elapsed = time.monotonic() - started
        if status == 200:
            self.answered.append(digest_b64(data))
        return status, envelope, elapsed


def results(envelope: etree._Element) -> list[tuple[str, str | None]]:
    return [(r.findtext(q(CG, "Outcome")), r.findtext(q(CG, "ChildId"))) for r in envelope.iter(q(CG, "Result"))]


def same_answer(a: etree._Element, b: etree._Element) -> bool:
    return etree.tostring(a) == etree.tostring(b)


def letters(n: int) -> str:
    """A name part for ``n`` (family names are matched on their letters only)."""
    word = ""
    while True:
        n, digit = divmod(n, 26)
        word = chr(ord("a") + digit) + word
        if n == 0:
            return word


def batch(n: int) -> list[dict]:
    """``n`` updates, each creating a new child."""
    tag = letters(int(unique(), 16))
    born = dt.date.today() - dt.timedelta(days=17 * 365)  # children: the index holds no one of 18 or over
    # Different names (random letters, not one letter apart) and birth dates: different children.
    return [child_update(f"{tag}-{i}", unique_name().title(), unique_name().title(),
                         (born + dt.timedelta(days=i)).isoformat(), involvements_=[]) for i in range(n)]


def assert_audit_sound(gw, answered: list[str]) -> None:
    """The chain verifies, and no exchange answered 200 lacks its audit entry."""
    trail = audit.AuditTrail.from_file(gw.home / "keys" / "audit-chain.key")
    result = trail.verify(gw.engine)
    assert result.ok, result
    with gw.engine.connect() as conn:
        audited = Counter(conn.execute(select(audit_log.c.request_digest).where(
            audit_log.c.outcome.in_(("accepted", "repeat")))).scalars())
    missing = Counter(answered) - audited  # each 200 has its own entry ("accepted" or "repeat")
    assert not missing, f"answered without an audit entry: {dict(missing)}"


def batch_in_progress(gw) -> bool:
    """Whether the gateway is inside the index transaction of a SubmitUpdates (uncommitted)."""
    if gw.backend == "postgresql":
        with gw.engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
                "AND (query ILIKE '%children%' OR query ILIKE '%source_records%')")).scalar_one())
    # SQLite: the write lock held continuously for a while (a rate counter or an audit entry takes
    # it for a moment; the batch holds it for its whole transaction)
    path = gw.database_url.split("///", 1)[1]
    for _ in range(4):
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            pass
        finally:
            probe.close()
        time.sleep(0.03)
    return True


def wait_until_batch_in_progress(gw, timeout_s: float = 30, *, unless=lambda: False) -> bool:
    """Until a SubmitUpdates is under way (True), or ``unless()`` holds or time is up (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not unless():
        if batch_in_progress(gw):
            return True
        time.sleep(0.02)
    return False


def wait_until_healthy(gw, timeout_s: float = 30) -> None:
    import requests

    client_dir = gw.certs["la"]
    session = requests.Session()
    session.cert = (str(client_dir / "cert.pem"), str(client_dir / "key.pem"))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if session.get(f"{gw.url}/healthz", verify=str(client_dir / "ca.pem"), timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not come back:\n" + gw.server_log())


def send_in_background(exchanges: Exchanges, operation: str, data: bytes) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run():
        try:
            outcome.append(exchanges.send(operation, data))
        except Exception as exc:  # the connection dies with the worker
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- Redis losing its data -----------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_redis_losing_its_data_lets_no_replay_through_and_applies_nothing_twice(backend, tmp_path):
    with redis_server(tmp_path / "redis") as redis, \
            private_gateway(backend, tmp_path / "home", orgs=LA, redis_url=redis.url) as gw:
        client = gw.client("la")
        exchanges = Exchanges(client)
        for lose_data in (redis.restart, lambda: redis.client().flushall()):
            push = client.build_request("SubmitUpdates", ChildUpdate=batch(2))
            status, first, _ = exchanges.send("SubmitUpdates", push)
            assert status == 200 and [o for o, _ in results(first)] == ["created", "created"]
            read = client.build_request("GetContacts", ChildId=results(first)[0][1], **READER)
            assert exchanges.send("GetContacts", read)[0] == 200
            before = gw.index_snapshot()

            lose_data()

            status, again, _ = exchanges.send("SubmitUpdates", push)
            assert status == 200 and same_answer(again, first)  # the first answer, not "updated"
            assert gw.index_snapshot() == before
            status, refused, _ = exchanges.send("GetContacts", read)
            assert status == 500 and client.fault_code(refused) == "Replay"
        assert_audit_sound(gw, exchanges.answered)


# ---- a worker killed in the middle of a SubmitUpdates --------------------------------------------

@pytest.mark.parametrize("whole_server", [False, True], ids=["worker", "whole-server"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_mid_submit_then_the_retry_is_applied_exactly_once(backend, whole_server, tmp_path):
    with private_gateway(backend, tmp_path / "home", orgs=LA, workers=1,
                         redis_url=REDIS_URL if backend == "postgresql" else None) as gw:
        client = gw.client("la")
        exchanges = Exchanges(client)
        push = client.build_request("SubmitUpdates", ChildUpdate=batch(500))
        thread, outcome = send_in_background(exchanges, "SubmitUpdates", push)
        assert wait_until_batch_in_progress(gw), "the SubmitUpdates never got under way"
        server = gw.process.pid
        workers = child_pids(server)
        if not workers:  # a server that handles requests in its own process
            whole_server = True
        kill(workers + ([server] if whole_server else []))
        thread.join(30)
        assert outcome and isinstance(outcome[0], Exception), "the request was answered before the kill"
        applied_before_retry = gw.child_count()
        assert applied_before_retry in (0, 500)  # all or nothing
        if whole_server:
            gw.process.wait()
            gw.start(workers=1)  # on a new port: the same signed bytes, sent by a new connection
            exchanges.client = client = gw.client("la")
        wait_until_healthy(gw)

        # The client retries the same bytes (on Unavailable, shortly again): the dead attempt must
        # not hold the retry back for more than a few seconds before it is applied.
        retried_at = time.monotonic()
        while True:
            thread, outcome = send_in_background(exchanges, "SubmitUpdates", push)
            under_way = wait_until_batch_in_progress(gw, 10, unless=lambda: not thread.is_alive())
            waited = time.monotonic() - retried_at
            thread.join(120)
            status, first, _ = outcome[0]
            if status == 200:
                break
            assert status == 503 and client.fault_code(first) == "Unavailable"
            assert waited < 5, "the retry was refused for too long"
            time.sleep(0.2)
        if applied_before_retry == 0:  # (else the dead attempt had committed: its answer came back)
            assert under_way and waited < 5, f"the retry waited {waited:.1f} s before it was applied"
        assert len(results(first)) == 500 and gw.child_count() == 500
        snapshot = gw.index_snapshot()
        status, again, _ = exchanges.send("SubmitUpdates", push)
        assert status == 200 and same_answer(again, first)
        assert gw.index_snapshot() == snapshot
        assert_audit_sound(gw, exchanges.answered)


# ---- two copies of one SubmitUpdates in flight at once -------------------------------------------

@contextlib.contextmanager
def holding_the_index_locks(gw):
    """On PostgreSQL, hold every lock bucket a SubmitUpdates takes (gateway.index.batches) in a session
    of the test's own, so a batch sent meanwhile stays in flight — its transaction open, its copy's
    lock held — until the block ends, however fast the machine. (SQLite: nothing; a batch holds the
    write lock for its whole transaction.)"""
    if gw.backend != "postgresql":
        yield
        return
    from gateway.index.batches import LOCK_BUCKETS, _LOCK_NAMESPACE

    with gw.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:ns, b) FROM generate_series(0, :last) AS b"),
                     {"ns": _LOCK_NAMESPACE, "last": LOCK_BUCKETS - 1})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.commit()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_copy_sent_while_the_first_is_in_flight_is_never_applied_twice(backend, tmp_path):
    with private_gateway(backend, tmp_path / "home", orgs=LA, workers=2,
                         redis_url=REDIS_URL if backend == "postgresql" else None) as gw:
        client = gw.client("la")
        exchanges = Exchanges(client)
        push = client.build_request("SubmitUpdates", ChildUpdate=batch(500))
        with holding_the_index_locks(gw):  # PostgreSQL: the first copy waits, in flight, until released
            thread, outcome = send_in_background(exchanges, "SubmitUpdates", push)
            if gw.backend == "postgresql":
                wait_for_lock_waiters(gw.engine, 1)  # the first copy, waiting for the index's locks
            else:
                assert wait_until_batch_in_progress(gw), "the SubmitUpdates never got under way"
            status, second, elapsed = exchanges.send("SubmitUpdates", push)
        thread.join(120)
        status_first, first, _ = outcome[0]
        assert status_first == 200 and len(results(first)) == 500
        if backend == "postgresql":
            # answered at once (no thread parked on the first copy's lock): retry shortly
            assert status == 503 and client.fault_code(second) == "Unavailable", status
            assert elapsed < 3, f"the copy in flight was held {elapsed:.1f} s"
        else:
            # SQLite: the copy queued on the write lock, then got the first answer (or, had the
            # first taken longer than the database timeout, Unavailable)
            assert (status == 200 and same_answer(second, first)) or (
                status == 503 and client.fault_code(second) == "Unavailable")
        status, again, _ = exchanges.send("SubmitUpdates", push)
        assert status == 200 and same_answer(again, first)
        assert gw.child_count() == 500
        assert_audit_sound(gw, exchanges.answered)


# ---- Redis hung: degraded mode, not a wait on every exchange -------------------------------------
# (Redis stopped under load: tests/gateway/store/test_redis_outage.py)

def find_child(client, family: str | None = None) -> bytes:
    """A fresh read (a new Timestamp, so never a replay)."""
    return client.build_request("FindChild", FamilyName=family or f"Nobody{letters(int(unique(), 16))}",
                                DateOfBirth="2010-01-01", **READER)


def test_hung_redis_costs_one_timeout_then_exchanges_go_on_without_waiting(tmp_path):
    """SIGSTOP: connections are accepted, nothing answers. The exchange that meets it waits one
    CONTACTGATE_REDIS_TIMEOUT (1.5 s here, far above an exchange's own time) and is answered; the
    next ones do not ask Redis (degraded mode; a background probe with back-off does), so none waits
    a timeout. Storage plays no part: one backend."""
    timeout_s = 1.5
    with redis_server(tmp_path / "redis") as redis, \
            private_gateway("sqlite", tmp_path / "home", orgs=LA, redis_url=redis.url,
                            extra_env={"CONTACTGATE_REDIS_TIMEOUT": str(timeout_s)}) as gw:
        exchanges = Exchanges(gw.client("la"))
        baseline = max(exchanges.send("FindChild", find_child(exchanges.client))[2] for _ in range(3))
        redis.pause()
        try:
            status, _, first = exchanges.send("FindChild", find_child(exchanges.client))
            assert status == 200 and first < timeout_s + baseline + 2.0, f"{first:.2f} s"
            for _ in range(5):
                status, _, elapsed = exchanges.send("FindChild", find_child(exchanges.client))
                assert status == 200 and elapsed < timeout_s, f"{elapsed:.2f} s: waited for Redis again"
        finally:
            redis.resume()
        redis.client().flushall()  # what was counted before the pause
        deadline = time.monotonic() + 15
        while not list(redis.client().scan_iter(f"{gw.redis_prefix}:rate:*")):  # counted in Redis again
            assert time.monotonic() < deadline, "the counts did not go back to Redis"
            assert exchanges.send("FindChild", find_child(exchanges.client))[0] == 200
            time.sleep(0.2)
        assert_audit_sound(gw, exchanges.answered)


# ---- the database unreachable and back -----------------------------------------------------------

def test_database_unreachable_gives_unavailable_and_the_gateway_recovers_by_itself(tmp_path):
    """PostgreSQL reached through a relay the test cuts: every relayed connection closed and new
    ones refused, as when the database host is lost — here in the middle of a SubmitUpdates."""
    with postgres_database() as direct_url:
        target = make_url(direct_url)
        relay = TcpRelay(target.host, target.port)
        relay.start()
        relayed_url = target.set(port=relay.port).render_as_string(hide_password=False)
        direct = create_engine(direct_url)
        try:
            with private_gateway("postgresql", tmp_path / "home", orgs=LA, redis_url=REDIS_URL,
                                 database_url=relayed_url) as gw:
                gw._engine = direct  # the test looks inside without the relay
                client = gw.client("la")
                exchanges = Exchanges(client)
                assert exchanges.send("FindChild", find_child(client))[0] == 200

                push = client.build_request("SubmitUpdates", ChildUpdate=batch(500))  # long enough to cut mid-way
                thread, outcome = send_in_background(exchanges, "SubmitUpdates", push)
                assert wait_until_batch_in_progress(gw), "the SubmitUpdates never got under way"
                relay.cut()
                thread.join(60)
                status, envelope, _ = outcome[0]
                assert status == 503 and client.fault_code(envelope) == "Unavailable"
                assert gw.child_count() == 0  # nothing of it applied
                assert_unavailable_unaudited_quickly(exchanges, within_s=2)

                relay.restore()
                status, first, _ = exchanges.send("SubmitUpdates", push)  # the client's retry
                assert status == 200, "the gateway did not recover by itself"
                assert gw.child_count() == 500
                status, again, _ = exchanges.send("SubmitUpdates", push)
                assert status == 200 and same_answer(again, first)
                assert exchanges.send("FindChild", find_child(client))[0] == 200
                assert_audit_sound(gw, exchanges.answered)
                verify = gw.cli("audit", "verify", expect_ok=False)
                assert verify.exit_code == 0, verify.output
        finally:
            relay.cut()
            direct.dispose()


def assert_unavailable_unaudited_quickly(exchanges: Exchanges, within_s: float, attempts: int = 3) -> None:
    """With the database gone nothing can be audited: a signed Unavailable, quickly, and nothing else."""
    for _ in range(attempts):
        status, envelope, elapsed = exchanges.send("FindChild", find_child(exchanges.client))
        assert status == 503 and exchanges.client.fault_code(envelope) == "Unavailable"
        assert elapsed < within_s, f"Unavailable took {elapsed:.2f} s"


# ---- the settings ---------------------------------------------------------------------------------

def test_the_timeouts_come_from_the_environment_and_must_be_positive(tmp_path):
    from gateway.config import Settings

    settings = Settings.from_env({"CONTACTGATE_HOME": str(tmp_path), "CONTACTGATE_REDIS_TIMEOUT": "0.25",
                                  "CONTACTGATE_DATABASE_TIMEOUT": "3"})
    assert (settings.redis_timeout_s, settings.database_timeout_s) == (0.25, 3.0)
    defaults = Settings.from_env({"CONTACTGATE_HOME": str(tmp_path)})
    assert (defaults.redis_timeout_s, defaults.database_timeout_s) == (0.5, 10.0)
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ValueError, match="CONTACTGATE_DATABASE_TIMEOUT"):
            Settings.from_env({"CONTACTGATE_HOME": str(tmp_path), "CONTACTGATE_DATABASE_TIMEOUT": bad})
