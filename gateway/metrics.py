"""What `contactgate serve` tells Prometheus (prometheus-client), on its own port when one is given
(``serve --metrics-bind`` / CONTACTGATE_METRICS_BIND; none by default; no client certificate): exchanges
by operation, organisation and outcome; refusals by fault code; how long answers take; database and
Redis failures; whether Redis is reached and how many rate counts were made without it (degraded mode,
gateway.store.redis_store). Beside ``/metrics`` the same port answers ``/readyz`` (the database
answers; "degraded" while Redis does not) and ``/healthz``.

gunicorn runs several worker processes, so the counters use prometheus-client's multiprocess mode:
`serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before anything imports
prometheus_client, each worker writes its values there, and the master serves their sum. That is why
prometheus_client is imported lazily here: importing it first fixes how values are stored for the
life of the process. Outside `serve` (tests, the CLI) the metrics live in the process's own registry.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from functools import cache

log = logging.getLogger("contactgate.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: a GetContacts takes a few milliseconds, a SubmitUpdates of 1,000 records a few seconds.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@cache
def _metrics():
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "exchanges": Counter("contactgate_exchanges", "Messages answered, by operation, organisation and outcome "
                             "(accepted, refused, repeat)", ["operation", "organisation", "outcome"]),
        "refusals": Counter("contactgate_refusals", "Refused messages by the contract's fault code", ["fault_code"]),
        "latency": Histogram("contactgate_exchange_seconds", "From a whole request to its signed, audited answer",
                             ["operation"], buckets=LATENCY_BUCKETS),
        "backend_errors": Counter("contactgate_backend_errors", "Failures of the database (the gateway answers "
                                  "Unavailable) or of Redis (rate counting goes to degraded mode)", ["backend"]),
        "rate_degraded": Counter("contactgate_rate_degraded", "Messages rate-counted in a worker's own memory "
                                 "(each limit divided by nodes x workers) because Redis was unavailable"),
        # The lowest over the live workers: 0 if any of them counts without Redis.
        "redis_up": Gauge("contactgate_redis_up", "1 while every worker counts rates in Redis, 0 while one "
                          "is in degraded mode", multiprocess_mode="livemin"),
    }


def exchange(operation: str | None, organisation: str | None, outcome: str, fault_code: str | None,
             seconds: float) -> None:
    """Count one answered message. Never fails the exchange: a metrics fault is only logged."""
    try:
        m = _metrics()
        operation = operation or "unknown"
        m["exchanges"].labels(operation, organisation or "unknown", outcome).inc()
        if fault_code:
            m["refusals"].labels(fault_code).inc()
        m["latency"].labels(operation).observe(seconds)
    except Exception:  # pragma: no cover - metrics must never cost an answer
        log.exception("could not count an exchange")


def rate_degraded() -> None:
    try:
        _metrics()["rate_degraded"].inc()
    except Exception:  # pragma: no cover
        log.exception("could not count a degraded rate count")


def redis_up(up: bool) -> None:
    try:
        _metrics()["redis_up"].set(1 if up else 0)
    except Exception:  # pragma: no cover
        log.exception("could not set the Redis state")


def backend_error(backend: str) -> None:
    try:
        _metrics()["backend_errors"].labels(backend).inc()
    except Exception:  # pragma: no cover
        log.exception("could not count a %s error", backend)


# ---- serving them (the gunicorn master of `contactgate serve`) ---------------------------------------

def prepare_multiprocess() -> str:
    """A fresh, private directory for the workers' values, named in the environment before any
    worker starts (and before prometheus_client is imported in this process)."""
    directory = tempfile.mkdtemp(prefix="contactgate-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    return directory


def cleanup_multiprocess(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """A worker is gone: its live gauges go with it (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


class Readiness:
    """Can this node answer? The database must answer within a short timeout, else not ready (503).
    Redis (when configured) too, else ready but degraded (200, "ready, degraded: redis: ..."): the
    rate limits are counted in each worker's memory meanwhile (gateway.store.redis_store). The
    connections are made once and reused."""

    def __init__(self, settings, engine=None):
        """``engine``: the process's own (a worker's), else one is made on first use (the master)."""
        self.settings = settings
        self._engine, self._redis = engine, None

    def check(self) -> tuple[bool, str]:
        problems, degraded = [], []
        try:
            from sqlalchemy import text

            if self._engine is None:
                from gateway.db import make_engine

                self._engine = make_engine(self.settings.database_url,
                                           timeout_s=min(self.settings.database_timeout_s, 2.0))
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                restored = _restore_pending(self.settings, conn)
            if restored:
                problems.append(f"restored: {restored}")
        except Exception as exc:
            problems.append(f"database: {type(exc).__name__}")
        token_problem = _token_problem()
        if token_problem:
            problems.append(f"hsm: {token_problem}")
        if self.settings.redis_url:
            try:
                if self._redis is None:
                    from gateway.store.redis_client import client_from_url

                    self._redis = client_from_url(self.settings.redis_url, self.settings.redis_timeout_s)
                # A count, as the workers make (a full or read-only Redis answers PING, not that).
                from gateway.store.redis_client import PROBE_KEY, count

                count(self._redis, self.settings.redis_prefix, [PROBE_KEY], 60)
            except Exception as exc:
                degraded.append(f"redis: {type(exc).__name__} (rate limits counted in each worker's memory)")
        if problems:
            return False, "not ready: " + "; ".join(problems + degraded) + "\n"
        return True, ("ready, degraded: " + "; ".join(degraded) + "\n") if degraded else "ready\n"


def _token_problem() -> str | None:
    """With keys in a PKCS#11 token (gateway.security.hsm): what is wrong with it, or None. A node
    whose token is gone cannot sign its answers (nor open a rotated keyring): not ready."""
    from gateway.security import hsm

    try:
        cfg = hsm.config()
    except hsm.HsmError as exc:
        return str(exc)
    return None if cfg is None else hsm.probe(cfg)


def _restore_pending(settings, conn) -> str | None:
    """A restore not yet acknowledged (gateway.backup): the node answers every exchange Unavailable."""
    from gateway.backup import gate_reason

    return gate_reason(settings.layout, conn)


def application(settings):
    """The metrics port's WSGI app: /metrics (the workers' sum), /readyz, /healthz."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    readiness = Readiness(settings)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            body, status, kind = generate_latest(registry), "200 OK", CONTENT_TYPE_LATEST
        elif path == "/readyz":
            ready, text = readiness.check()
            body, status, kind = text.encode(), "200 OK" if ready else "503 Service Unavailable", "text/plain"
        elif path == "/healthz":
            body, status, kind = b"ok\n", "200 OK", "text/plain"
        else:
            body, status, kind = b"not found\n", "404 Not Found", "text/plain"
        start_response(status, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return app


def bind(settings, host: str, port: int):
    """The metrics port, bound now (a port in use stops `serve` at once, saying so); the master
    serves it from a thread once it is ready (gateway.server)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # scrapes every few seconds: not worth a log line each
            pass

    try:
        return make_server(host, port, application(settings), handler_class=Quiet)
    except OSError as exc:
        raise MetricsPortUnavailable(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
                                     "(choose another with --metrics-bind, or --metrics-bind none)") from None


class MetricsPortUnavailable(Exception):
    pass
