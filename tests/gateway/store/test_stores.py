"""One contract suite for every rate store implementation (replay and idempotency are not here:
they live in the database, see tests/gateway/test_fault_tolerance.py), and the Redis store's
degraded mode and Sentinel URLs, with redis-servers of the tests' own (a whole gateway with Redis
stopped under load: test_redis_outage.py)."""

import secrets
import socket
import time

import subprocess

import pytest
import redis as redis_lib

from gateway.config import check_redis_url
from gateway.store.embedded import EmbeddedStore
from gateway.store.redis_client import PROBE_KEY, client_from_url
from gateway.store.redis_store import LocalCounters, RedisStore
from tests.support import REDIS_URL, free_port, redis_server


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


def test_unreachable_redis_is_degraded_mode_at_once_counting_each_workers_share():
    """Nothing listens: the count falls back to the worker's own, at once, judged as the worker's
    share of the limit (its count times the shares: 4 workers, 2 hits -> 8)."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.5, shares=4)
    started = time.monotonic()
    assert store.hit(["org:LA", "user:LA:u1"], 60) == [4, 4]
    assert store.hit(["org:LA", "user:LA:u2"], 60) == [8, 4]
    assert time.monotonic() - started < 0.5
    assert store.degraded


def test_silent_redis_costs_one_timeout_then_none():
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never answers
        port = listener.getsockname()[1]
        # A fixed clock for the worker's own count: a minute starting mid-test would start it again.
        store = RedisStore(client_from_url(f"redis://127.0.0.1:{port}/0", 0.3), clock=lambda: 1_000_020.0)
        started = time.monotonic()
        assert store.hit(["org:LA"], 60) == [1]
        assert time.monotonic() - started < 0.9  # one timeout, not one per retry
        asked = []  # exchanges' counts that went to Redis (the probe thread's own count aside)
        to_redis = store._redis_hit
        store._redis_hit = lambda keys, window_s: (asked.append(keys) if keys != [PROBE_KEY] else None,
                                                   to_redis(keys, window_s))[1]
        assert [store.hit(["org:LA"], 60) for _ in range(20)] == [[n] for n in range(2, 22)]
        assert asked == []  # Redis is not asked on an exchange's time


def test_the_workers_own_count_starts_again_in_a_new_window():
    now = [1_000_020.0]
    counters = LocalCounters(clock=lambda: now[0])
    assert [counters.hit(["k", "j"], 60) for _ in range(2)] == [[1, 1], [2, 2]]
    now[0] += 60
    assert counters.hit(["k"], 60) == [1]


def test_the_store_counts_in_redis_again_by_itself_when_redis_returns(tmp_path):
    with redis_server(tmp_path / "redis") as server:
        store = RedisStore(client_from_url(server.url, 0.3), prefix="cgtest-back", shares=2,
                           backoff_first_s=0.1, backoff_max_s=0.4)
        assert store.hit(["org:LA"], 60) == [1]
        server.stop()
        assert store.hit(["org:LA"], 60) == [4]  # its own 2, times 2 workers
        server.start()  # empty, on the same port
        deadline = time.monotonic() + 10
        while store.degraded:
            assert time.monotonic() < deadline, "the store did not go back to Redis"
            time.sleep(0.05)
        assert store.hit(["org:LA"], 60) == [1]  # Redis's count (the new server's first)


def test_redis_sentinel_url_reaches_the_master_the_sentinel_names(tmp_path):
    with redis_server(tmp_path / "redis") as master:
        sentinel_port = free_port()
        config = tmp_path / "sentinel.conf"
        config.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                          f"sentinel monitor cgmaster 127.0.0.1 {master.port} 1\n")
        sentinel = subprocess.Popen(["redis-server", str(config), "--sentinel"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis+sentinel://127.0.0.1:{sentinel_port},127.0.0.1:{free_port()}/cgmaster/0"
            check_redis_url(url)
            asked = redis_lib.Redis(port=sentinel_port, socket_timeout=1)
            deadline = time.monotonic() + 10
            while True:  # until the sentinel is up and sees the master
                try:
                    if asked.sentinel_masters().get("cgmaster", {}).get("is_master"):
                        break
                except redis_lib.RedisError:
                    pass
                assert time.monotonic() < deadline, "the sentinel did not start"
                time.sleep(0.1)
            store = RedisStore.from_url(url, prefix="cgtest-sentinel", timeout_s=0.5)
            assert [store.hit(["org:LA"], 60) for _ in range(2)] == [[1], [2]] and not store.degraded
            assert list(master.client().scan_iter("cgtest-sentinel:rate:org:LA:*"))
        finally:
            sentinel.kill()
            sentinel.wait()


def test_a_redis_that_answers_but_refuses_counts_keeps_the_worker_in_degraded_mode(tmp_path):
    """A Redis at its maxmemory (noeviction), or a read-only replica after a failover, answers PING but
    refuses INCR: the worker stays in degraded mode, instead of going back to Redis at each probe,
    failing the next count and going down again (a warning and a failed round trip each time)."""
    with redis_server(tmp_path / "redis") as server:
        store = RedisStore(client_from_url(server.url, 0.3), prefix="cgtest-full", shares=1,
                           backoff_first_s=0.02, backoff_max_s=0.05)
        server.client().config_set("maxmemory-policy", "noeviction")
        server.client().config_set("maxmemory", 1)
        assert store.hit(["org:LA"], 60) == [1]  # refused by Redis (OOM): the worker's own count
        assert store.degraded
        time.sleep(0.5)  # many probes' time
        assert store.degraded
        server.client().config_set("maxmemory", 0)  # room again: back to Redis by itself
        deadline = time.monotonic() + 10
        while store.degraded:
            assert time.monotonic() < deadline, "the store did not go back to Redis"
            time.sleep(0.02)
