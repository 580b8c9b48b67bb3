"""Second security review (code changed since 9f4ff6e): each test once demonstrated a defect, now
fixed, and keeps it fixed.

The PostgreSQL races are made deterministic the same way: one transaction does its work and holds
its row lock without committing; the other is started in a thread and the test waits until
pg_stat_activity shows it blocked on that lock; then the first commits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import delete, select, text, update

from gateway import audit
from gateway.db import audit_children, audit_head, audit_log, children, review_queue
from gateway.index import batches, store
from gateway.index.model import Address, ChildUpdate, Identity
from gateway import officers
from gateway.trust import registry
from tests.support import unique_name, child_update, fill_audit, nhs_number, pupil_number, shown_record, unique, wait_for_lock_waiters

READ = dict(user_id="reviewer", role="gp", reason_code="referral", reason_text="second security review")
NOW = dt.datetime.now(dt.timezone.utc)
TRAIL = audit.AuditTrail(audit.new_key())


# ---- helpers -------------------------------------------------------------------------------------

def _postgresql_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises whole transactions: no interleaving")


def _update(srid: str, family: str, given: str, dob: str, *, nhs: str | None = None,
            pupil: str | None = None, address: Address | None = None, gender: str = "female") -> ChildUpdate:
    return ChildUpdate(
        source_record_id=srid,
        identity=Identity(family_name=family, given_names=(given,), date_of_birth=dt.date.fromisoformat(dob),
                          gender=gender, nhs_number=nhs, pupil_number=pupil),
        address=address)


def _apply(engine, org: str, updates: list[ChildUpdate], now: dt.datetime = NOW):
    with engine.begin() as conn:
        return store.apply_updates(conn, org, updates, now)


def _record(engine, child_id: str) -> dict:
    with engine.connect() as conn:
        return shown_record(conn, child_id)


@contextlib.contextmanager
def _held(engine):
    """A transaction the test commits itself (after it has made another wait on it)."""
    conn = engine.connect()
    transaction = conn.begin()
    try:
        yield conn, transaction
    finally:
        if transaction.is_active:
            transaction.rollback()
        conn.close()


def _letters(n: int) -> str:
    """A distinct family name for each ``n`` (names are matched on their letters only)."""
    return "Fam" + "".join("abcdefghij"[int(d)] for d in str(n))


def _pupil(seed: str) -> str:
    return pupil_number(int(seed, 16))


# ==== 1. Lost update: two batches about one child under different advisory-lock keys ============

def test_concurrent_updates_of_one_child_from_two_organisations_lose_nothing(database_url, engine):
    _postgresql_only(database_url)
    nhs, pupil = nhs_number(1234567), _pupil("abc123")
    [created] = _apply(engine, "LA", [_update("la-1", "Smith", "Ann", "2014-02-02", nhs=nhs,
                                              address=Address(("1 Old Road",), "LS1 1AA", "Leeds"))])
    [matched] = _apply(engine, "SCH", [_update("sch-1", "Smith", "Ann", "2014-02-02", nhs=nhs, pupil=pupil)])
    assert (created.outcome, matched.outcome) == ("created", "matched")
    child = created.child_id

    # The school reports a new address (it sends its pupil number); the local authority, at the same
    # moment, records a change of family name (it sends its NHS number). No lock key in common.
    school = _update("sch-1", "Smith", "Ann", "2014-02-02", pupil=pupil,
                     address=Address(("2 New Road",), "LS2 2BB", "Leeds"))
    la = _update("la-1", "Jones", "Ann", "2014-02-02", nhs=nhs)
    with _held(engine) as (conn, transaction):
        assert [r.outcome for r in store.apply_updates(conn, "SCH", [school], NOW)] == ["updated"]
        with ThreadPoolExecutor(1) as pool:
            # Sent a moment later: the most recent family name is shown (gateway.index.precedence).
            other = pool.submit(_apply, engine, "LA", [la], NOW + dt.timedelta(seconds=1))
            wait_for_lock_waiters(engine)  # the LA batch has read the record and waits to write it
            transaction.commit()
            assert [r.outcome for r in other.result(timeout=30)] == ["updated"]

    record = _record(engine, child)
    assert record["identity"]["family_name"] == "Jones"
    assert record["address"]["lines"] == ["2 New Road"], "the school's new address was lost"


# ==== 2. "All keys are taken up front in one order: no deadlocks" does not hold =================

def test_batches_updating_the_same_children_in_opposite_order_do_not_deadlock(database_url, engine, monkeypatch):
    _postgresql_only(database_url)
    nhs1, nhs2 = nhs_number(2345678), nhs_number(3456789)
    _apply(engine, "LA", [_update("la-1", "Alpha", "Ann", "2013-01-01", nhs=nhs1),
                          _update("la-2", "Beta", "Bob", "2013-02-02", nhs=nhs2)])
    assert [r.outcome for r in _apply(engine, "SCH", [_update("s-1", "Alpha", "Ann", "2013-01-01", nhs=nhs1),
                                                      _update("s-2", "Beta", "Bob", "2013-02-02", nhs=nhs2)])] \
        == ["matched", "matched"]

    # Each batch pauses after its first update (so both would hold one child's row), then does its
    # second. If the batches are serialised, the second never gets there while the first waits: the
    # pause then gives up after a moment, which is the behaviour wanted.
    barrier = threading.Barrier(2, timeout=3)
    original = batches._apply_update
    done = threading.local()

    def paced(conn, org_code, update_, *rest):
        result = original(conn, org_code, update_, *rest)
        if not getattr(done, "first", False):
            done.first = True
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
        return result

    monkeypatch.setattr(batches, "_apply_update", paced)
    la = [_update("la-1", "Alpha", "Ann", "2013-01-01"), _update("la-2", "Beta", "Bob", "2013-02-02")]
    school = [_update("s-2", "Betta", "Bob", "2013-02-02"), _update("s-1", "Alfa", "Ann", "2013-01-01")]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_apply, engine, "LA", la), pool.submit(_apply, engine, "SCH", school)]
        errors = []
        for future in futures:
            try:
                future.result(timeout=60)
            except Exception as exc:  # noqa: BLE001 - what the pipeline would turn into Unavailable
                errors.append(type(exc).__name__ + ": " + str(exc).splitlines()[0])
    assert errors == []


# ==== 3. One advisory lock per key per update: concurrent full batches exhaust the lock table ====

def test_concurrent_full_size_batches_do_not_exhaust_the_lock_table(database_url, engine):
    _postgresql_only(database_url)

    def full_batch(batch: int) -> list:
        return [_update(f"b{batch}-{i}", _letters(batch * 1000 + i), "Kim", "2012-03-03",
                        nhs=f"{batch}{i:09d}", pupil=f"A{batch}{i:010d}Z") for i in range(1000)]

    # One SubmitUpdates of 1000 records holds a bounded number of advisory locks ...
    with engine.connect() as conn, conn.begin():
        batches._lock_identities(conn, "ORG0", full_batch(0))  # the first thing apply_updates does
        held = conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND pid = pg_backend_pid()")).scalar_one()
    assert held <= batches.LOCK_BUCKETS

    # ... and six in flight at once all get through (in turn where they meet), none failing.
    def take_and_hold(batch: int) -> None:
        with engine.connect() as conn, conn.begin():
            batches._lock_identities(conn, f"ORG{batch}", full_batch(batch))
            time.sleep(0.1)

    with ThreadPoolExecutor(6) as pool:
        for future in [pool.submit(take_and_hold, batch) for batch in range(6)]:
            future.result(timeout=60)


# ==== 4. An identifier match overwrites another child's identity =================================

def test_identifier_match_with_different_demographics_does_not_overwrite_the_child(gateway, clients):
    la = clients("la")
    pupil = _pupil(unique())
    family = unique_name("Alpha")
    first = child_update(unique("pa-"), family, "Ann", "2014-01-01")
    first["Identity"]["PupilNumber"] = pupil
    [created] = la.submit_updates([first])
    # Another record -- another child, same pupil number (a keying error; the check letter is not
    # validated) -- from a second source record.
    other = child_update(unique("pb-"), unique_name("Beta"), "Bob", "2016-06-06", gender="male")
    other["Identity"]["PupilNumber"] = pupil
    [second] = la.submit_updates([other])
    found = clients("health").find_child(family_name=family, date_of_birth="2014-01-01", **READ)
    assert [c["ChildId"] for c in found] == [created["ChildId"]], \
        f"outcome {second['Outcome']}: the first child can no longer be found by its own name and birth date"


def test_identifier_match_with_a_conflicting_nhs_number_is_held_for_review(gateway, clients):
    la = clients("la")
    pupil = _pupil(unique())
    nhs1, nhs2 = nhs_number(int(unique()[:7], 16)), nhs_number(int(unique()[:7], 16) + 7)
    family = unique_name("Gamma")
    first = child_update(unique("g1-"), family, "Cal", "2015-05-05", nhs=nhs1)
    first["Identity"]["PupilNumber"] = pupil
    [created] = la.submit_updates([first])
    conflicting = child_update(unique("g2-"), family, "Cal", "2015-05-05", nhs=nhs2)
    conflicting["Identity"]["PupilNumber"] = pupil
    [second] = la.submit_updates([conflicting])
    by_nhs = clients("health").find_child(nhs_number=nhs1, **READ)
    assert second["Outcome"] == "created", second  # answered as a new child (issue 22, item 4)...
    with gateway.engine.connect() as conn:  # ...and held for review
        assert conn.execute(select(review_queue.c.candidate_child_id).where(
            review_queue.c.child_id == second["ChildId"])).scalar_one() == created["ChildId"]
    assert [c["ChildId"] for c in by_nhs] == [created["ChildId"]], "the child's NHS number was replaced"


# ==== 5. "unknown" gender (mandatory in the schema) erases a known gender ========================

def test_unknown_gender_from_another_source_does_not_erase_a_known_gender(gateway, clients):
    la = clients("la")
    nhs = nhs_number(int(unique()[:7], 16))
    family = unique_name("Delta")
    [created] = la.submit_updates([child_update(unique("d1-"), family, "Dee", "2013-07-07", nhs=nhs)])
    [second] = la.submit_updates([child_update(unique("d2-"), family, "Dee", "2013-07-07", nhs=nhs,
                                               gender="unknown")])
    assert second["Outcome"] == "matched"
    found = clients("health").find_child(family_name=family, date_of_birth="2013-07-07", gender="female", **READ)
    assert [c["ChildId"] for c in found] == [created["ChildId"]]


# ==== 6. Approval acts on the row as it is when it writes, not as it was checked =================

def _officer(engine, officer_id: str) -> officers.Officer:
    """An officer account in this database (made once)."""
    with engine.begin() as conn:
        made = officers.get(conn, officer_id)
        if made is None:
            made = officers.create(conn, TRAIL, None, officer_id, officer_id.title(), ["officer"],
                                   "a long enough password", officers.new_totp_secret(), must_change_password=False)
    return made


def _accredited(engine, conn, code: str, scopes: list[str]) -> None:
    today = dt.date.today()
    alice, bob = _officer(engine, "alice"), _officer(engine, "bob")
    registry.add_org(conn, TRAIL, code, "Org", "education", alice)
    proposal = registry.propose_accreditation(conn, TRAIL, code, scopes, today + dt.timedelta(days=100), alice,
                                              None, today)
    registry.approve(conn, TRAIL, code, proposal.id, bob)


def _approval_refused_after(engine, held_change, approve) -> None:
    """``held_change`` runs in a transaction that holds its row lock; ``approve`` starts meanwhile
    and must wait for it, then be judged on what it left: refused."""
    with _held(engine) as (conn, transaction):
        held_change(conn)

        def approval():
            with engine.begin() as other:
                return approve(other)

        with ThreadPoolExecutor(1) as pool:
            racing = pool.submit(approval)
            wait_for_lock_waiters(engine)
            transaction.commit()
            with pytest.raises(registry.RegistryError):
                racing.result(timeout=30)


def test_an_officer_cannot_approve_their_own_proposal_by_racing_it(database_url, engine):
    _postgresql_only(database_url)
    today = dt.date.today()
    alice, bob = _officer(engine, "alice"), _officer(engine, "bob")
    with engine.begin() as conn:
        registry.add_org(conn, TRAIL, "EDU1", "School", "education", alice)
        first = registry.propose_accreditation(conn, TRAIL, "EDU1", ["query"], today + dt.timedelta(days=30),
                                               alice, None, today)
    _approval_refused_after(
        engine,
        # bob proposes every scope for a year (superseding alice's proposal)...
        lambda conn: registry.propose_accreditation(conn, TRAIL, "EDU1", ["push", "query", "shield"],
                                                    today + dt.timedelta(days=365), bob, None, today),
        lambda conn: registry.approve(conn, TRAIL, "EDU1", first.id, bob))  # ...and "approves alice's" proposal
    with engine.connect() as conn:
        org = registry.get_org(conn, "EDU1")
    # bob's own proposal stands, unapproved: nobody accredited anything alone
    assert (org.status, org.approved_by, [p.proposed_by for p in org.pending]) == ("pending_approval", None, ["bob"])


def test_an_approval_racing_a_suspension_does_not_lift_it(database_url, engine):
    _postgresql_only(database_url)
    today = dt.date.today()
    alice, bob, carol = _officer(engine, "alice"), _officer(engine, "bob"), _officer(engine, "carol")
    with engine.begin() as conn:
        _accredited(engine, conn, "EDU2", ["query"])
        renewal = registry.propose_accreditation(conn, TRAIL, "EDU2", ["query"], today + dt.timedelta(days=365),
                                                 alice, None, today)  # a renewal awaiting approval
    _approval_refused_after(
        engine,
        lambda conn: registry.suspend(conn, TRAIL, "EDU2", carol, "data breach under investigation"),
        lambda conn: registry.approve(conn, TRAIL, "EDU2", renewal.id, bob))
    with engine.connect() as conn:
        org = registry.get_org(conn, "EDU2")
    assert org.status == "suspended", org.status


def test_an_organisation_suspended_during_onboarding_is_not_stuck_forever(engine):
    today = dt.date.today()
    alice, bob, carol = _officer(engine, "alice"), _officer(engine, "bob"), _officer(engine, "carol")
    with engine.begin() as conn:
        registry.add_org(conn, TRAIL, "EDU3", "School", "education", alice)
        registry.propose_accreditation(conn, TRAIL, "EDU3", ["query"], today + dt.timedelta(days=30),
                                       alice, None, today)
        registry.suspend(conn, TRAIL, "EDU3", carol, "evidence under review")
    refusals = []
    steps = (lambda c: registry.approve(c, TRAIL, "EDU3", registry.reinstate(c, TRAIL, "EDU3", carol, "reviewed").id,
                                        bob),
             lambda c: registry.approve(c, TRAIL, "EDU3", registry.propose_accreditation(
                 c, TRAIL, "EDU3", ["query"], today + dt.timedelta(days=60), alice, None, today).id, bob))
    for step in steps:
        try:
            with engine.begin() as conn:
                step(conn)
        except registry.RegistryError as exc:
            refusals.append(str(exc))
    with engine.connect() as conn:
        org = registry.get_org(conn, "EDU3")
    assert org.status == "accredited", (org.status, refusals)


# ==== 7. The audit chain's tail can be cut by anyone who can write to the database ==============

def test_cut_tail_with_the_head_moved_back_is_detected(engine, tmp_path):
    trail = audit.AuditTrail(audit.new_key(), checkpoints=tmp_path / "audit" / "checkpoints")
    fill_audit(engine, trail, 5)  # entries 4 and 5: accesses someone wants forgotten
    assert trail.verify(engine).ok  # the routine check records its checkpoint outside the database
    with engine.begin() as conn:
        third = conn.execute(select(audit_log.c.entry_hash).where(audit_log.c.seq == 3)).scalar_one()
        conn.execute(delete(audit_children).where(audit_children.c.seq > 3))
        conn.execute(delete(audit_log).where(audit_log.c.seq > 3))
        conn.execute(update(audit_head).values(seq=3, entry_hash=third))
    result = trail.verify(engine)
    assert not result.ok and result.first_bad_seq == 4, result


# ==== 8. Refused handshakes: unauthenticated, unthrottled writes to the audit chain ==============

def test_a_burst_of_refused_handshakes_from_one_address_is_not_one_audit_write_each(gateway):
    host, port = "127.0.0.1", gateway.port
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no client certificate to offer
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    seq = gateway.audit_seq()
    burst = 60
    for _ in range(burst):
        with socket.create_connection((host, port), timeout=5) as raw:
            try:
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    tls.recv(100)
            except (ssl.SSLError, OSError):
                pass
    # The worker audits after the client has seen the refusal: wait until the count settles, so no
    # late entry lands in a later test's baseline.
    deadline, written, settled_at = time.monotonic() + 15, -1, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - settled_at < 1.0:
        now_written = gateway.audit_seq() - seq
        if now_written != written:
            written, settled_at = now_written, time.monotonic()
        time.sleep(0.1)
    assert written <= 10, f"{written} audit entries for {burst} refused handshakes from one address"
