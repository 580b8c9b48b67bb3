"""RateLimited: per practitioner, counted in the shared store, refused and audited like any fault."""

import pytest

from connectors.client import RateLimitedFault
from tests.support import private_gateway

READ = dict(user_id="busy.user", role="gp", reason_code="referral", reason_text="checking",
            family_name="Nobody", date_of_birth="2010-01-01")


@pytest.fixture(scope="module")
def limited_gateway(tmp_path_factory):
    with private_gateway("sqlite", tmp_path_factory.mktemp("home-limited"), workers=2,
                         orgs={"HEALTH": ("health", ["query"])},
                         extra_env={"CONTACTGATE_RATE_LIMIT_PER_USER": "3"}) as gw:
        yield gw


def test_a_practitioner_over_the_limit_is_refused_and_audited(limited_gateway):
    client = limited_gateway.client("health")
    # Fixed one-minute windows: a boundary may fall inside the test, so allow a second window's 3.
    answered = 0
    for _ in range(7):
        seq = limited_gateway.audit_seq()
        try:
            client.find_child(**READ)
            answered += 1
        except RateLimitedFault:
            break
    else:
        pytest.fail("never refused")
    assert 3 <= answered <= 6
    [entry] = limited_gateway.audit_entries_after(seq)
    assert entry["fault_code"] == "RateLimited" and entry["user_id"] == "busy.user"
    # another practitioner of the same organisation is not affected
    assert client.find_child(**dict(READ, user_id="other.user")) == []


# ---- how messages are counted: in-process, against a real database of each backend -----------------

from sqlalchemy import event, func, select  # noqa: E402

from gateway.db import rate_counters  # noqa: E402
from gateway.index import ids  # noqa: E402
from tests.support import in_process_gateway  # noqa: E402

GET = {"Requester": {"UserId": "scraper", "Role": "gp"}, "Reason": {"_value_1": "why", "code": "referral"}}
FIND = dict(GET, FamilyName="Nobody", DateOfBirth="2010-01-01")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def in_process_home(request, tmp_path_factory):
    """HEALTH on a home of its own, the pipeline in this process: the embedded rate store with its
    clock fixed inside one window, 3 messages a minute per practitioner and 1,000 per organisation."""
    with in_process_gateway(request.param, tmp_path_factory.mktemp("home-rate"), orgs={"HEALTH": ("health", ["query"])},
                            store_clock=lambda: 6_000_000.0, rate_limit_per_user=3, rate_limit_per_org=1000) as gw:
        yield gw


@pytest.fixture
def in_process(in_process_home):
    """(services, send) with the counters empty: each test starts a window of its own."""
    from sqlalchemy import delete

    with in_process_home.services.engine.begin() as conn:
        conn.execute(delete(rate_counters))
    yield in_process_home.services, lambda operation, **call: in_process_home.send("health", operation, **call)


def _counted(services, key: str) -> int:
    with services.engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.sum(rate_counters.c.count), 0))
                            .where(rate_counters.c.key == key)).scalar_one()


def test_every_message_is_counted_once_whatever_its_answer(in_process):
    """Answered, refused inside the exchange (no such child) or refused for the limit itself: each
    message a practitioner sends counts once, so asking for children that do not exist is limited
    like any other read."""
    services, send = in_process
    answers = [send("FindChild", **FIND), send("GetContacts", ChildId=ids.new_child_id(), **GET)]
    assert [a.fault_code for a in answers] == [None, "NotFound"]
    assert _counted(services, "user:HEALTH:scraper") == 2
    answers += [send("GetContacts", ChildId=ids.new_child_id(), **GET) for _ in range(3)]
    assert [a.fault_code for a in answers[2:]] == ["NotFound", "RateLimited", "RateLimited"]
    assert _counted(services, "user:HEALTH:scraper") == 5
    assert _counted(services, "org:HEALTH") == 5
    # another practitioner of the same organisation is not affected
    assert send("FindChild", **dict(FIND, Requester={"UserId": "other", "Role": "gp"})).status == 200


def test_a_message_refused_before_it_is_authorised_is_not_counted(in_process):
    services, send = in_process
    answer = send("FindChild", **dict(FIND, Reason={"_value_1": "", "code": "referral"}))
    assert answer.fault_code == "ReasonRequired"
    assert _counted(services, "user:HEALTH:scraper") == 0


def test_an_answered_read_takes_the_sqlite_write_lock_once(in_process):
    """On SQLite every write transaction queues for the database's one write lock: an answered read
    takes it once (its effect, audit entry, answer record and rate count together), not once more
    for the rate counters; and its lookups before that (certificate, organisation, replay) share
    one read transaction."""
    services, send = in_process
    if services.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    send("FindChild", **FIND)  # warm
    begins = []
    listener = lambda conn: begins.append(conn.get_execution_options().get("contactgate_read_only", False))  # noqa: E731
    event.listen(services.engine, "begin", listener)
    try:
        assert send("FindChild", **FIND).status == 200
    finally:
        event.remove(services.engine, "begin", listener)
    assert begins.count(False) == 1
    assert begins.count(True) == 1
