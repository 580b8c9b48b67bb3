"""Signing in at the console cannot be used to confirm an officer id or to lock an officer out
(issue 22, item 5): every refusal costs the same argon2 verification, whatever failed; failures
lock the pair (account, source address), not the account; a much higher count of failures from
every address together slows a distributed guesser down (the global back-off), and one stranger,
however patient, never reaches it. Through the console's Flask app (over https, from the address
each request comes from), on SQLite and PostgreSQL."""

from __future__ import annotations

import statistics
import time

import pytest
from sqlalchemy import select

from gateway.config import Settings
from gateway.console import create_console
from gateway.db import audit_log, officers
from tests.gateway.console.conftest import UNTHROTTLED, Browser

# The module's homes hold production-cost hashes, for the test of what a refusal costs; the tests
# about which attempts are refused sign in at the test cost (cheap_argon2).
pytestmark = pytest.mark.usefixtures("production_argon2_module")

STRANGER = "203.0.113.66"
OFFICE = "198.51.100.10"


def attempt(console, registry_home, clock, officer_id: str, *, address: str, right: bool = False,
            password: str | None = None, code: str | None = None):
    """One sign-in from ``address``: the officer's own password and a fresh code (``right``), or
    the password and code given (a wrong password by default)."""
    b = Browser(console, registry_home, clock)
    b.client.environ_base["REMOTE_ADDR"] = address
    b.get("/login")
    if right:
        password, code = b.password(officer_id), b.code(officer_id)
    return b.post("/login", {"officer": officer_id, "password": password or "not-the-password-at-all",
                             "code": code or "000000"})


def last_login(registry_home):
    with registry_home.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.operation == "officer.login")
                            .order_by(audit_log.c.seq.desc()).limit(1)).first()


def test_a_refused_sign_in_costs_the_same_whatever_was_wrong(console, registry_home, clock):
    """Unknown id, disabled account, locked pair, wrong password, wrong code: one argon2id
    verification each, so the time of a refusal says nothing about the account. Compared by the
    quickest of several tries of each, interleaved (a busy machine only adds time)."""
    registry_home.cli("officer", "add", "gone-1", "--name", "Gone", "--role", "officer", officer="senior-s")
    registry_home.cli("officer", "disable", "gone-1", "--reason", "left", officer="senior-s")
    for _ in range(5):
        attempt(console, registry_home, clock, "bob", address=STRANGER)
    assert "locked" in last_login(registry_home).detail

    paths = {
        "unknown officer": lambda n: attempt(console, registry_home, clock, "nobody-here", address=STRANGER),
        "disabled account": lambda n: attempt(console, registry_home, clock, "gone-1", address=STRANGER),
        "locked for this address": lambda n: attempt(console, registry_home, clock, "bob", address=STRANGER,
                                                     right=True),
        "wrong password": lambda n: attempt(console, registry_home, clock, "carol", address=f"192.0.2.{n}"),
        "wrong code": lambda n: attempt(console, registry_home, clock, "alice", address=f"192.0.2.{n}",
                                        password=Browser(console, registry_home, clock).password("alice")),
    }
    took: dict[str, list[float]] = {name: [] for name in paths}
    for n in range(5):
        for name, run in paths.items():
            started = time.perf_counter()
            response = run(n)
            took[name].append(time.perf_counter() - started)
            assert response.status_code == 401, name
    with registry_home.engine.connect() as conn:  # compared at the product's argon2id cost
        assert {h.split("$")[3] for h in conn.execute(select(officers.c.password_hash)).scalars()} == {
            "m=65536,t=3,p=4"}
    quickest = {name: min(times) for name, times in took.items()}
    slowest = max(quickest.values())
    for name, seconds in quickest.items():
        assert seconds > 0.5 * slowest, (name, {k: round(v * 1000) for k, v in quickest.items()},
                                         {k: round(statistics.median(v) * 1000) for k, v in took.items()})


@pytest.mark.usefixtures("cheap_argon2")
def test_a_stranger_locks_only_their_own_address_out(console, registry_home, clock):
    for _ in range(5):
        assert attempt(console, registry_home, clock, "dm-1", address=STRANGER).status_code == 401
    refused = attempt(console, registry_home, clock, "dm-1", address=STRANGER, right=True)
    assert refused.status_code == 401  # the right password and code, from the stranger's address
    assert "locked" in last_login(registry_home).detail and last_login(registry_home).source_address == STRANGER
    signed_in = attempt(console, registry_home, clock, "dm-1", address=OFFICE, right=True)
    assert signed_in.status_code == 302  # from the officer's own address: in
    assert last_login(registry_home).outcome == "done" and last_login(registry_home).source_address == OFFICE


@pytest.mark.usefixtures("cheap_argon2")
def test_an_ipv6_stranger_cannot_escape_their_lock_by_changing_address_within_their_network(console, registry_home,
                                                                                            clock):
    for n in range(5):
        attempt(console, registry_home, clock, "officer-b", address=f"2001:db8:1:2::{n + 1}")
    refused = attempt(console, registry_home, clock, "officer-b", address="2001:db8:1:2::ff", right=True)
    assert refused.status_code == 401 and "locked" in last_login(registry_home).detail
    assert attempt(console, registry_home, clock, "officer-b", address="2001:db8:9:9::1", right=True).status_code == 302


@pytest.fixture(scope="module")
def strict_console(registry_home, clock):
    """A console locking a pair after 2 failures and the account, from everywhere, after 12 in an hour."""
    settings = Settings.from_env({"CONTACTGATE_LOCKOUT_FAILURES": "2", "CONTACTGATE_LOCKOUT_MINUTES": "15",
                                  "CONTACTGATE_LOCKOUT_GLOBAL_FAILURES": "12",
                                  "CONTACTGATE_LOCKOUT_GLOBAL_MINUTES": "60", **UNTHROTTLED},
                                 home=str(registry_home.home), database_url=registry_home.database_url)
    app = create_console(settings, clock=clock)
    yield app
    app.extensions["contactgate"]["engine"].dispose()


@pytest.mark.usefixtures("cheap_argon2")
def test_one_patient_stranger_never_reaches_the_global_back_off(strict_console, registry_home, clock):
    """As fast as the lock of their address lets them, for two hours: the officer signs in every time."""
    assert strict_console.extensions["contactgate"]["settings"].lockout_global_failures == 12
    for _ in range(9):  # every 15 minutes: two failures, then locked for this address
        for _ in range(2):
            attempt(strict_console, registry_home, clock, "senior-t", address=STRANGER)
        assert "locked" in last_login(registry_home).detail
        signed_in = attempt(strict_console, registry_home, clock, "senior-t", address=OFFICE, right=True)
        assert signed_in.status_code == 302, last_login(registry_home).detail
        clock.advance(minutes=15, seconds=1)


@pytest.mark.usefixtures("cheap_argon2")
def test_failures_from_many_addresses_lock_the_account_everywhere_for_a_while(strict_console, registry_home, clock):
    assert strict_console.extensions["contactgate"]["settings"].lockout_global_failures == 12
    for n in range(6):  # a distributed guesser: 2 tries from each of 6 addresses
        for _ in range(2):
            attempt(strict_console, registry_home, clock, "senior-s", address=f"192.0.2.{100 + n}")
    refused = attempt(strict_console, registry_home, clock, "senior-s", address=OFFICE, right=True)
    assert refused.status_code == 401
    assert "every address" in last_login(registry_home).detail
    clock.advance(minutes=61)
    assert attempt(strict_console, registry_home, clock, "senior-s", address=OFFICE, right=True).status_code == 302


# ---- the global back-off and the addresses an officer uses (review of issue 22, B) ---------------

@pytest.mark.usefixtures("cheap_argon2")
def test_strangers_with_ten_addresses_cannot_lock_an_officer_out_of_an_address_they_use(console, registry_home,
                                                                                        clock):
    settings = console.extensions["contactgate"]["settings"]
    assert (settings.lockout_failures, settings.lockout_global_failures) == (5, 50)  # the defaults
    assert attempt(console, registry_home, clock, "dq-officer", address=OFFICE, right=True).status_code == 302
    for hour in range(2):  # and again an hour later, when the back-off has run out
        for n in range(10):  # ten /64s of one /48, five failures from each
            for _ in range(5):
                attempt(console, registry_home, clock, "dq-officer", address=f"2001:db8:{10 * hour + n}::1")
        # From an address the officer has not used, the back-off holds: a guesser is still slowed.
        refused = attempt(console, registry_home, clock, "dq-officer", address="192.0.2.77", right=True)
        assert refused.status_code == 401 and "every address" in last_login(registry_home).detail
        # From the office, where they signed in before, the officer signs in.
        signed_in = attempt(console, registry_home, clock, "dq-officer", address=OFFICE, right=True)
        assert signed_in.status_code == 302, last_login(registry_home).detail
        clock.advance(minutes=61)


@pytest.mark.usefixtures("cheap_argon2")
def test_an_address_not_used_for_the_remembered_period_is_held_back_like_any_other(console, registry_home, clock):
    """CONTACTGATE_SIGNIN_KNOWN_SOURCE_DAYS (30 by default) after the last sign-in from an address,
    the officer's own address is no longer told from a stranger's."""
    assert attempt(console, registry_home, clock, "dora", address=OFFICE, right=True).status_code == 302
    clock.advance(days=31)
    for n in range(10):
        for _ in range(5):
            attempt(console, registry_home, clock, "dora", address=f"2001:db8:7{n}::1")
    refused = attempt(console, registry_home, clock, "dora", address=OFFICE, right=True)
    assert refused.status_code == 401 and "every address" in last_login(registry_home).detail
    clock.advance(minutes=61)
    assert attempt(console, registry_home, clock, "dora", address=OFFICE, right=True).status_code == 302
