"""`contactgate serve`: gunicorn as the process manager, our asyncio front in each worker.

gunicorn's master binds the port, forks the workers, respawns a dead or hung one (heartbeat,
``timeout``) and stops them gracefully. Each worker is a `FrontWorker`: an event loop that accepts
plain TCP on the inherited listeners and does TLS and HTTP itself (gateway/front.py), bounding the
handshake, the request's head and body, idle keep-alive connections and the connections per
address, and runs the WSGI app in a small thread pool only for complete requests. gunicorn does no
TLS here (no certfile/keyfile in its config): the front's `ssl.SSLContext` requires a client
certificate chaining to a configured CA (the gateway CA plus any in $CONTACTGATE_HOME/trust), TLS
1.2 at least. Each worker builds the application (keys, trust anchors, schemas) once.

`contactgate console` (gateway/console/server.py) runs on the same worker: each gunicorn
application here is a `FrontApplication`, which says what its front is (`FrontSetup`).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import logging
import os
import resource
import signal
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.workers.base import Worker

from gateway import forwarded, logs, metadata, metrics
from gateway.app import create_app
from gateway.config import Settings
from gateway.front import (Front, FrontLimits, ReloadingContext, server_ssl_context,
                           server_ssl_context_without_client_certificates)
from gateway.pipeline import refuse_handshake
from gateway.trust import crl

TLS_READ_BUFFER = 32 * 1024
FD_RESERVE = 64  # files a worker needs besides client connections (listeners, logs, database, Redis)


def _no_address(address: str) -> bool:
    return False


@dataclass(frozen=True)
class FrontSetup:
    """What a worker's front is for one server (`serve`, `console`): built in each worker once its
    application is loaded, so a broken key or certificate stops the worker at boot."""

    limits: FrontLimits
    threads: int  # the pool that runs complete requests
    tls_context: ReloadingContext | ssl.SSLContext
    # (address, reason) of a handshake refused for its client certificate; None: only logged.
    audit_refused_handshake: Callable[[str, str], None] | None = None
    uncapped_address: Callable[[str], bool] = _no_address  # addresses the per-address cap spares
    log_query_strings: bool = True
    proxy_hop: bool = False  # `serve --behind-proxy`: nginx connects with its proxy certificate (gateway.forwarded)
    metadata: "MetadataSetup | None" = None  # `serve --metadata-bind`: a second listener, its own front


@dataclass(frozen=True)
class MetadataSetup:
    """The metadata listener's front (gateway.metadata): its listener (the one gunicorn bound at
    ``address``), its app, a TLS context asking for no client certificate, and its own limits."""

    address: tuple
    app: Callable
    tls_context: ReloadingContext | ssl.SSLContext
    limits: FrontLimits


class FrontWorker(Worker):
    """A gunicorn worker whose connections live on an asyncio loop (see gateway/front.py), for a
    `FrontApplication`."""

    def init_process(self):
        # asyncio's TLS layer preallocates a read buffer of SSLProtocol.max_size (256 KiB) for every
        # connection, stalled ones included: 500 of them cost ~150 MiB. One TLS record is at most
        # 16 KiB, so 32 KiB loses nothing but a few loop turns on large bodies.
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self._quick_exit = False
        self._stopped = asyncio.Event()
        super().init_process()  # loads the app, then calls run()

    def load_wsgi(self):
        """Build the app, then its front (the TLS context): a broken key or certificate stops the
        worker at boot (and gunicorn with it), not at the first connection."""
        super().load_wsgi()
        # The gateway's own log lines (contactgate.*) go where gunicorn's error log goes, formatted alike.
        gateway_log = logging.getLogger("contactgate")
        if not gateway_log.handlers:
            gateway_log.handlers = list(self.log.error_log.handlers)
            gateway_log.propagate = False
        self.setup: FrontSetup = self.app.front_setup(self.wsgi)

    def init_signals(self):
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.loop.add_signal_handler(signal.SIGTERM, self._graceful_stop)
        self.loop.add_signal_handler(signal.SIGQUIT, self._quick_stop)
        self.loop.add_signal_handler(signal.SIGINT, self._quick_stop)
        self.loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        self.loop.add_signal_handler(signal.SIGWINCH, lambda: None)
        self.loop.add_signal_handler(signal.SIGABRT, self._abort)

    def _graceful_stop(self):
        self.alive = False
        self._stopped.set()

    def _quick_stop(self):
        self.alive = False
        self._quick_exit = True
        self._stopped.set()
        self.cfg.worker_int(self)

    def _abort(self):
        self.alive = False
        self.cfg.worker_abort(self)
        sys.exit(1)

    def run(self):
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()
            for listener in self.sockets:
                listener.close()

    def _limits(self, limits: FrontLimits) -> FrontLimits:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and limits.max_connections > soft - FD_RESERVE:
            self.log.warning("CONTACTGATE_MAX_CONNECTIONS=%d is above what the open-files limit (%d) "
                             "allows: using %d", limits.max_connections, soft, max(soft - FD_RESERVE, 1))
            limits = replace(limits, max_connections=max(soft - FD_RESERVE, 1))
        return limits

    async def _serve(self):
        setup = self.setup
        app_pool = ThreadPoolExecutor(max_workers=setup.threads, thread_name_prefix="contactgate-app")
        access_log = self.log.access_log if self.cfg.accesslog else None
        front = Front(self.wsgi, self._limits(setup.limits), setup.tls_context, app_pool,
                      audit_refused_handshake=setup.audit_refused_handshake, access_log=access_log,
                      log_query_strings=setup.log_query_strings,
                      uncapped_address=setup.uncapped_address, proxy_hop=setup.proxy_hop)
        fronts = {id(listener): front for listener in self.sockets}
        metadata_pool = None
        if setup.metadata is not None:  # its listener (bound last) gets a front of its own
            extra = setup.metadata
            [*_, listener] = [s for s in self.sockets if getattr(s, "cfg_addr", None) == extra.address]
            # its own thread (the two files are built once: an answer takes no time), so that
            # however many ask, the service's threads are never theirs
            metadata_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contactgate-metadata")
            fronts[id(listener)] = Front(extra.app, self._limits(extra.limits), extra.tls_context, metadata_pool,
                                         access_log=access_log)
        servers = [await asyncio.start_server(fronts[id(listener)].handle, sock=listener.sock, backlog=self.cfg.backlog)
                   for listener in self.sockets]
        try:
            while self.alive:
                self.notify()
                if self.ppid != os.getppid():
                    self.log.info("parent changed, shutting down: %s", self)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), 1.0)
        finally:
            for server in servers:
                server.close()
            # within gunicorn's graceful_timeout, after which the master kills the worker
            grace_s = 0.0 if self._quick_exit else max(self.cfg.graceful_timeout - 1, 0)
            await asyncio.gather(*(each.drain(grace_s) for each in {id(f): f for f in fronts.values()}.values()))
            for pool in (app_pool, metadata_pool):
                if pool is not None:
                    pool.shutdown(wait=not self._quick_exit, cancel_futures=True)


def _renew_crl(settings: Settings) -> None:
    """A fresh CRL at start, where the CA key is (an officers' host); a serving host without it uses
    the CRL it was given, and says how long that lasts."""
    from gateway.db import make_engine

    engine = make_engine(settings.database_url, timeout_s=settings.database_timeout_s)
    try:
        renewed = crl.renew(settings, engine)
    finally:
        engine.dispose()
    log = logging.getLogger("contactgate.crl")
    if renewed is None and settings.layout.crl.exists():
        log.warning("no CA key on this host: the CRL in %s is valid until %s; a renewed one (contactgate-crl.timer "
                    "where the CA key is) copied here is followed within a second",
                    settings.layout.crl, crl.next_update(settings.layout.crl.read_bytes()))
    elif renewed is None:
        log.warning("no CRL: revoked certificates are refused by the application only, not at the TLS handshake")


class GatewayLogger(Logger):
    """gunicorn's logger, writing JSON lines when CONTACTGATE_LOG_FORMAT is json (also after a
    reload or a log-file reopen, which set the handlers up anew)."""

    json_lines = False

    def setup(self, cfg):
        super().setup(cfg)
        if self.json_lines:
            logs.use_json(self.error_log, self.access_log)


class FrontApplication(BaseApplication):
    """A gunicorn application served by `FrontWorker`, configured from ``self.options`` (set before
    ``__init__`` runs)."""

    options: dict

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("worker_class", f"{__name__}.FrontWorker")

    def front_setup(self, wsgi) -> FrontSetup:
        """The front for ``wsgi`` (the application `load` built), in a worker."""
        raise NotImplementedError


class GatewayServer(FrontApplication):
    def __init__(self, settings: Settings, bind: str, workers: int, log_level: str = "info", *,
                 behind_proxy: bool = False, metrics_server=None, metadata_bind: str | None = None,
                 service_url: str | None = None):
        self.settings = settings
        self.behind_proxy = behind_proxy
        self.metadata_bind = metadata_bind
        self.service_url = service_url
        _renew_crl(settings)
        crl.write_client_bundle(settings)
        GatewayLogger.json_lines = settings.log_format == "json"

        def when_ready(arbiter):  # the master: serve the workers' metrics from a thread, and say where
            if metadata_bind is not None:
                host, port = arbiter.LISTENERS[-1].sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                arbiter.log.info("metadata without a client certificate on https://%s:%d/soap/v1?wsdl "
                                 "(and /soap/contactgate.xsd)", shown, port)
            if metrics_server is None:
                arbiter.log.info("no metrics port (serve --metrics-bind HOST:PORT, or CONTACTGATE_METRICS_BIND, "
                                 "serves /metrics, /readyz and /healthz)")
                return
            threading.Thread(target=metrics_server.serve_forever, name="contactgate-metrics", daemon=True).start()
            host, port = metrics_server.server_address[:2]
            shown = f"[{host}]" if ":" in host else host
            arbiter.log.info("metrics on http://%s:%d/metrics (and /readyz, /healthz)", shown, port)

        self.options = {
            "logger_class": GatewayLogger,
            "when_ready": when_ready,
            "child_exit": lambda arbiter, worker: metrics.worker_exited(worker.pid),
            "bind": [bind] if metadata_bind is None else [bind, metadata_bind],  # the metadata listener last
            "workers": workers,
            "timeout": 60,
            "graceful_timeout": 10,
            "backlog": 2048,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": log_level,
            "proc_name": "contactgate",
        }
        super().__init__()

    def load(self):
        return create_app(self.settings)

    def front_setup(self, wsgi) -> FrontSetup:
        """Mutual TLS (the context follows the client CAs and their CRLs), refused handshakes
        audited. Behind nginx the same, with nginx's proxy certificate as the client certificate
        (gateway.forwarded), and the proxy's address spared the per-address cap: every client
        comes through it."""
        services = wsgi.config["SERVICES"]
        settings = services.settings
        layout = settings.layout

        def audit_refused_handshake(address: str, reason: str) -> None:
            refuse_handshake(services, address, reason)

        # Built from the CAs and CRLs themselves, not the bundle written at start: a node without the
        # CA key follows a CRL copied to it (ca/crl.pem) within a second, bundle or not.
        sources = lambda: [*crl.client_ca_sources(settings), layout.crl]  # noqa: E731 -- ca/crl.pem even before it exists
        tls = ReloadingContext(
            lambda: server_ssl_context(str(layout.server_cert), str(layout.server_key), crl.client_ca_sources(settings)),
            sources)
        metadata_setup = None if self.metadata_bind is None else self._metadata_setup()
        if self.behind_proxy:
            return FrontSetup(FrontLimits.from_settings(settings), settings.threads, tls, audit_refused_handshake,
                              uncapped_address=lambda ip: forwarded.is_trusted(ip, settings.trusted_proxies),
                              proxy_hop=True, metadata=metadata_setup)
        return FrontSetup(FrontLimits.from_settings(settings), settings.threads, tls, audit_refused_handshake,
                          metadata=metadata_setup)

    def _metadata_setup(self) -> MetadataSetup:
        """The metadata listener: the server certificate (followed when it is renewed), no client
        certificate asked for, the service's deadlines and caps (counted apart), bodies of a few bytes."""
        from gunicorn.util import parse_address

        layout = self.settings.layout
        tls = ReloadingContext(
            lambda: server_ssl_context_without_client_certificates(str(layout.server_cert), str(layout.server_key)),
            [layout.server_cert, layout.server_key])
        limits = replace(FrontLimits.from_settings(self.settings), max_body_bytes=metadata.MAX_REQUEST_BYTES,
                         body_budget_bytes=metadata.MAX_REQUEST_BYTES)
        return MetadataSetup(parse_address(self.metadata_bind), metadata.application(self.service_url),
                             tls, limits)


def serve(settings: Settings, bind: str = "127.0.0.1:8443", workers: int = 2, threads: int | None = None, *,
          behind_proxy: bool = False, metrics_bind: tuple[str, int] | None = None,
          metadata_bind: str | None = None, service_url: str | None = None) -> None:
    """``behind_proxy``: for nginx in front doing the clients' mutual TLS and forwarding the client
    certificate (Client-Cert, RFC 9440) over mutual TLS with its registered proxy certificate, from
    a trusted address (gateway.forwarded).
    ``metrics_bind``: where /metrics, /readyz and /healthz are served (gateway.metrics; port 0: a
    free one, logged), or None (no metrics port).
    ``metadata_bind``: HOST:PORT of the metadata listener (gateway.metadata: the WSDL and XSD without a
    client certificate), or None (none, the default); ``service_url``: the service's address written
    in the WSDL it serves (required with ``metadata_bind``)."""
    settings = replace(settings, workers=workers)  # each worker's share of the rate limits without Redis
    if threads is not None:
        settings = replace(settings, threads=threads)
    directory = metrics.prepare_multiprocess()  # before any worker, and before prometheus_client loads
    master = os.getpid()
    try:
        metrics_server = metrics.bind(settings, *metrics_bind) if metrics_bind else None
        GatewayServer(settings, bind, workers, behind_proxy=behind_proxy, metrics_server=metrics_server,
                      metadata_bind=metadata_bind, service_url=service_url).run()
    finally:
        # A worker is forked inside run() and leaves by SystemExit, through here: only the master's
        # end is the end of serving. (Removed by a worker, the directory was gone for every worker
        # after a reload, which replaces them all: issue 24.)
        if os.getpid() == master:
            metrics.cleanup_multiprocess(directory)
