"""The Redis store, shared by any number of gateway processes and hosts: rate counters only.

Fail fast and closed: every socket operation and connection attempt is bounded by ``timeout_s``
(CONTACTGATE_REDIS_TIMEOUT), a timeout is never retried (retries would multiply the wait), and a
refused or broken connection is retried once at once — which is what lets the gateway recover by
itself when Redis comes back (the first use of a pooled connection Redis closed when it went away
fails, and a new connection is made). Whatever still fails becomes `Unavailable`: no count, no
answer.
"""

from __future__ import annotations

import logging
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from contactgate_wire.faults import Unavailable
from gateway import metrics

log = logging.getLogger("contactgate.store")

DEFAULT_TIMEOUT_S = 0.5


class RedisStore:
    counts_in_transaction = False  # one round trip of its own, before any work (gateway.store.RateStore)

    def __init__(self, client: redis.Redis, prefix: str = "contactgate"):
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "contactgate", timeout_s: float = DEFAULT_TIMEOUT_S) -> "RedisStore":
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))
        return cls(client, prefix)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}:{kind}:{key}"

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        window = int(time.time()) // window_s
        pipe = self._redis.pipeline()
        for key in keys:
            name = self._key("rate", f"{key}:{window}")
            pipe.incr(name)
            pipe.expire(name, window_s * 2)
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:
            metrics.backend_error("redis")
            log.warning("Redis unavailable for rate counting: %s", exc)
            raise Unavailable(f"rate counters unavailable ({type(exc).__name__})") from None
        return [int(count) for count in replies[::2]]
