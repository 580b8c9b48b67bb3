"""The Redis store, shared by any number of gateway processes and hosts."""

from __future__ import annotations

import time

import redis

_PENDING = b""


class RedisStore:
    def __init__(self, client: redis.Redis, prefix: str = "contactgate"):
        self._redis = client
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "contactgate") -> "RedisStore":
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), prefix)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}:{kind}:{key}"

    def claim(self, key: str, ttl_s: int) -> bool:
        return bool(self._redis.set(self._key("replay", key), _PENDING, nx=True, ex=ttl_s))

    def save_response(self, key: str, response: bytes, ttl_s: int) -> None:
        self._redis.set(self._key("replay", key), response, ex=ttl_s)

    def get_response(self, key: str) -> bytes | None:
        value = self._redis.get(self._key("replay", key))
        return value or None

    def release(self, key: str) -> None:
        self._redis.delete(self._key("replay", key))

    def hit(self, keys: list[str], window_s: int) -> list[int]:
        window = int(time.time()) // window_s
        pipe = self._redis.pipeline()
        for key in keys:
            name = self._key("rate", f"{key}:{window}")
            pipe.incr(name)
            pipe.expire(name, window_s * 2)
        return [int(count) for count in pipe.execute()[::2]]
