"""One contract suite for every replay/idempotency/rate store implementation."""

import secrets

import pytest
import redis as redis_lib

from gateway.store.embedded import EmbeddedStore
from gateway.store.redis_store import RedisStore
from tests.support import REDIS_URL


@pytest.fixture(params=["embedded", "redis"])
def store(request, engine):
    if request.param == "embedded":
        yield EmbeddedStore(engine)
        return
    prefix = f"cgtest-store-{secrets.token_hex(4)}"
    client = redis_lib.Redis.from_url(REDIS_URL)
    yield RedisStore(client, prefix)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_claim_is_true_once(store):
    assert store.claim("k1", 60) is True
    assert store.claim("k1", 60) is False
    assert store.claim("k2", 60) is True


def test_response_saved_for_retries_and_release_forgets(store):
    store.claim("k", 60)
    assert store.get_response("k") is None  # still being processed
    store.save_response("k", b"<answer/>", 60)
    assert store.get_response("k") == b"<answer/>"
    store.release("k")
    assert store.claim("k", 60) is True


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


def test_embedded_claim_expires(engine):
    now = [1_000_000.0]
    store = EmbeddedStore(engine, clock=lambda: now[0])
    assert store.claim("k", 10)
    now[0] += 11
    assert store.claim("k", 10)
