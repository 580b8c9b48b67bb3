"""One contract suite for every rate store implementation (replay and idempotency are not here:
they live in the database, see tests/gateway/test_fault_tolerance.py)."""

import secrets
import socket
import time

import pytest
import redis as redis_lib

from contactgate_wire.faults import Unavailable
from gateway.store.embedded import EmbeddedStore
from gateway.store.redis_store import RedisStore
from tests.support import REDIS_URL


@pytest.fixture(params=["embedded", "redis"])
def store(request, engine):
    if request.param == "embedded":
        yield EmbeddedStore(engine)
        return
    prefix = f"cgtest-store-{secrets.token_hex(4)}"
    yield RedisStore.from_url(REDIS_URL, prefix=prefix)
    client = redis_lib.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_rate_counter_counts_within_a_window(store):
    counts = [store.hit(["org:LA", "user:LA:u1"], 60) for _ in range(5)]
    assert counts == [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]
    assert store.hit(["org:OTHER", "org:LA"], 60) == [1, 6]


def test_rate_counter_starts_again_in_a_new_window(engine):
    now = [1_000_000.0]
    store = EmbeddedStore(engine, clock=lambda: now[0])
    assert store.hit(["k"], 60) == [1]
    assert store.hit(["k"], 60) == [2]
    now[0] += 60
    assert store.hit(["k"], 60) == [1]


def test_unreachable_redis_fails_closed_at_once():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(Unavailable):
        store.hit(["org:LA"], 60)
    assert time.monotonic() - started < 0.5


def test_silent_redis_fails_closed_within_the_timeout():
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never answers
        port = listener.getsockname()[1]
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            store.hit(["org:LA"], 60)
        assert time.monotonic() - started < 0.9  # one timeout, not one per retry
