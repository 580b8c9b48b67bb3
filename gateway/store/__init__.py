"""The rate-limit store: counters in the gateway's own database (embedded) or in Redis.

Only rate counting lives here. What was answered — replay refusal and idempotent retries — lives in
the database, in each exchange's own transaction (gateway.pipeline.replay), so nothing correctness
needs is in Redis: losing its data (a restart without persistence, a failover to a lagging replica,
an eviction) only resets rate limits. A Redis that cannot be reached, or does not answer within
CONTACTGATE_REDIS_TIMEOUT, puts the worker in degraded mode: it counts in its own memory against
each limit divided by nodes x workers until Redis answers again (gateway.store.redis_store).

Both implement `RateStore`; `tests/gateway/store/test_stores.py` runs one contract suite against
each.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.engine import Engine

from gateway.config import Settings


class RateStore(Protocol):
    # True where the pipeline counts with ``hit_in(conn, keys, window_s)`` inside the transaction
    # that writes the message's audit entry instead (the embedded store on SQLite).
    counts_in_transaction: bool

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        """Count one event against each key in the current fixed window (one round trip); return
        each window's count (the embedded store raises what the database raises: the pipeline
        answers Unavailable; the Redis store falls back to the worker's own counts)."""


def make_store(settings: Settings, engine: Engine) -> RateStore:
    if settings.redis_url:
        from gateway.store.redis_store import RedisStore

        return RedisStore.from_url(settings.redis_url, prefix=settings.redis_prefix,
                                   timeout_s=settings.redis_timeout_s, shares=settings.rate_shares)
    from gateway.store.embedded import EmbeddedStore

    return EmbeddedStore(engine)
