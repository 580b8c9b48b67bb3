"""Clients for Redis from CONTACTGATE_REDIS_URL, bounded by a timeout: plain Redis (``redis://``,
``rediss://`` for TLS, ``unix://``) and Redis Sentinel
(``redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``, redis-py's
`redis.sentinel.Sentinel`: the master of SERVICE, found through the sentinels, found again after a
failover), and the rate count itself. Used by the rate store, /readyz and the CLI's start-up
check; imports nothing of the gateway."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

DEFAULT_TIMEOUT_S = 0.5
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_URL_FORM = "redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
PROBE_KEY = "probe"  # what a worker's probe and /readyz count, beside the exchanges' org:/user: keys


class SentinelUrlError(ValueError):
    pass


def parse_sentinel_url(url: str) -> dict:
    """``redis+sentinel://`` into sentinels [(host, port)], service, db, username, password and
    sentinel_password (``?sentinel_password=``, for sentinels that require one)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise SentinelUrlError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SentinelUrlError(f"each sentinel must be HOST:PORT: {SENTINEL_URL_FORM}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise SentinelUrlError(f"name the service (and optionally the database number): {SENTINEL_URL_FORM}")
    query = parse_qs(parts.query)
    return {"sentinels": sentinels, "service": unquote(path[0]), "db": int(path[1]) if len(path) == 2 else 0,
            "username": unquote(username) or None, "password": unquote(password) or None,
            "sentinel_password": query.get("sentinel_password", [None])[0]}


def client_from_url(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> redis.Redis:
    """A client whose every connect and socket operation is bounded by ``timeout_s``, retrying a
    refused or broken connection once at once and never a timeout: for ``redis://``, ``rediss://``,
    ``unix://`` (redis-py's `from_url`) and ``redis+sentinel://`` (redis-py's Sentinel)."""
    bounded = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s,
               "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))}
    if not url.startswith(SENTINEL_SCHEME + ":"):
        return redis.Redis.from_url(url, **bounded)
    from redis.sentinel import Sentinel

    parsed = parse_sentinel_url(url)
    sentinel_kwargs = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if parsed["sentinel_password"]:
        sentinel_kwargs["password"] = parsed["sentinel_password"]
    sentinel = Sentinel(parsed["sentinels"], sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(parsed["service"], db=parsed["db"], username=parsed["username"],
                               password=parsed["password"], **bounded)


def count(client: redis.Redis, prefix: str, keys: list[str], window_s: int) -> list[int]:
    """One count against each key in Redis's current fixed window (one round trip): raises what
    redis-py raises. Also the probe of a worker in degraded mode and /readyz's (with PROBE_KEY): a
    full or read-only Redis answers PING, not this."""
    window = int(time.time()) // window_s
    pipe = client.pipeline()
    for key in keys:
        name = f"{prefix}:rate:{key}:{window}"
        pipe.incr(name)
        pipe.expire(name, window_s * 2)
    return [int(value) for value in pipe.execute()[::2]]
