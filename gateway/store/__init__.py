"""The replay, idempotency and rate-limit store: embedded (in the gateway's database) or Redis.

Both implement `MessageStore`; `tests/store/test_stores.py` runs one contract suite against each.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.engine import Engine

from gateway.config import Settings


class MessageStore(Protocol):
    def claim(self, key: str, ttl_s: int) -> bool:
        """Record ``key`` as seen; True only for the first claim while it lives (atomic)."""

    def save_response(self, key: str, response: bytes, ttl_s: int) -> None:
        """Keep the answer to a claimed message so a retry gets the same answer."""

    def get_response(self, key: str) -> bytes | None:
        """The saved answer for ``key``, or None while it is being processed (or unknown)."""

    def release(self, key: str) -> None:
        """Forget a claim whose processing failed before any effect (the retry may proceed)."""

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        """Count one event against each key in the current fixed window (one round trip); return
        each window's count."""


def make_store(settings: Settings, engine: Engine) -> MessageStore:
    if settings.redis_url:
        from gateway.store.redis_store import RedisStore

        return RedisStore.from_url(settings.redis_url, prefix=settings.redis_prefix)
    from gateway.store.embedded import EmbeddedStore

    return EmbeddedStore(engine)
