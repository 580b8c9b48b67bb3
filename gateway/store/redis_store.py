"""The Redis store, shared by any number of gateway processes and hosts: rate counters only.

Redis is optional at run time. Nothing correctness needs is in it (replay refusal and idempotent
retries live in the database: gateway.pipeline.replay), so when it cannot be reached the worker
counts in its own memory instead (`LocalCounters`) and the exchange goes on: *degraded mode*. Each
worker then judges its own count as if every worker of every node saw as many — its count times
``shares`` (CONTACTGATE_NODES x `serve --workers`) — so an organisation gets at most its limit
divided by ``shares`` from each worker, and the total across the deployment stays bounded by the
limit (twice it, at most, in the minute the outage begins or ends, when Redis's count and the
workers' own are not added up). The worker counts in memory all the time (a dictionary of the
current minute), so its count already holds what it saw before Redis went away.

Fail fast: every socket operation and connection attempt is bounded by ``timeout_s``
(CONTACTGATE_REDIS_TIMEOUT), a timeout is never retried, and a refused or broken connection is
retried once at once (the first use of a pooled connection Redis closed fails; a new one is made).
After a failure the worker does not ask Redis again on an exchange's time: a background thread
counts a key of its own in it after a back-off that doubles from BACKOFF_FIRST_S to BACKOFF_MAX_S,
and the first count that succeeds sends the counts to Redis again. So a dead or hung Redis costs the exchanges a worker
has in flight when it fails one timeout each, and nothing after.

The client, for plain Redis or Sentinel: gateway.store.redis_client.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from gateway import metrics
from gateway.store.redis_client import DEFAULT_TIMEOUT_S, PROBE_KEY, client_from_url, count

log = logging.getLogger("contactgate.store")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0


class LocalCounters:
    """One worker's own rate counts: fixed windows as in Redis, only the current one kept (the
    dictionary holds the keys seen this minute, then starts again)."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[int, tuple[int, dict[str, int]]] = {}  # window_s: (window, counts)

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        window = int(self._clock()) // window_s
        with self._lock:
            current, counts = self._windows.get(window_s, (None, None))
            if current != window:
                counts = {}
                self._windows[window_s] = (window, counts)
            for key in dict.fromkeys(keys):
                counts[key] = counts.get(key, 0) + 1
            return [counts[key] for key in keys]


class RedisStore:
    counts_in_transaction = False  # one round trip of its own, before any work (gateway.store.RateStore)

    def __init__(self, client: redis.Redis, prefix: str = "contactgate", *, shares: int = 1,
                 clock=time.time, backoff_first_s: float = BACKOFF_FIRST_S, backoff_max_s: float = BACKOFF_MAX_S):
        """``shares``: the worker processes of all nodes that share the limits (each allows its
        share while Redis is away)."""
        self._redis = client
        self._prefix = prefix
        self._shares = max(1, shares)
        self._local = LocalCounters(clock)
        self._state = threading.Lock()
        self._up = True
        self._backoff_first_s, self._backoff_max_s = backoff_first_s, backoff_max_s
        metrics.redis_up(True)

    @classmethod
    def from_url(cls, url: str, prefix: str = "contactgate", timeout_s: float = DEFAULT_TIMEOUT_S,
                 shares: int = 1) -> "RedisStore":
        return cls(client_from_url(url, timeout_s), prefix, shares=shares)

    @property
    def degraded(self) -> bool:
        return not self._up

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        own = self._local.hit(keys, window_s)
        if self._up:
            try:
                return self._redis_hit(keys, window_s)
            except redis.RedisError as exc:
                self._went_down(exc)
        metrics.rate_degraded()
        return [count * self._shares for count in own]

    def _redis_hit(self, keys: list[str], window_s: int) -> list[int]:
        return count(self._redis, self._prefix, keys, window_s)

    # ---- degraded mode: going down, probing, coming back ----------------------------------------

    def _went_down(self, exc: Exception) -> None:
        metrics.backend_error("redis")
        with self._state:
            if not self._up:
                return
            self._up = False
        metrics.redis_up(False)
        log.warning("Redis unavailable (%s): rate limits counted in this worker's memory, each limit divided "
                    "by %d, until it answers again", type(exc).__name__, self._shares)
        threading.Thread(target=self._probe_until_up, name="contactgate-redis-probe", daemon=True).start()

    def _probe_until_up(self) -> None:
        """One thread per worker while Redis is away (whether exchanges come or not): a count of its
        own (PROBE_KEY: a write, as an exchange's count is, so a Redis that answers PING but refuses
        writes — full, or a read-only replica — stays away) after each back-off, doubling up to the
        maximum; the first that succeeds ends degraded mode."""
        backoff_s = self._backoff_first_s
        while True:
            time.sleep(backoff_s)
            try:
                self._redis_hit([PROBE_KEY], 60)
                break
            except Exception as exc:
                backoff_s = min(backoff_s * 2, self._backoff_max_s)
                log.debug("Redis still unavailable (%s): next try in %.1f s", type(exc).__name__, backoff_s)
        with self._state:
            self._up = True
        metrics.redis_up(True)
        log.warning("Redis answers again: rate limits counted in Redis")
