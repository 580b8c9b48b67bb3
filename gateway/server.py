"""`contactgate serve`: gunicorn with mutual TLS.

The TLS layer refuses, at the handshake, any client without a certificate chaining to a configured
CA (the gateway CA plus any in $CONTACTGATE_HOME/trust). TLS 1.2 is the minimum. Each worker builds
the application (and so loads keys, trust anchors and schemas) once.
"""

from __future__ import annotations

import ssl

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

from gateway.app import create_app, trust_anchor_files
from gateway.config import Settings
from gateway.files import write_private
from gateway.pipeline import REFUSED_CERTIFICATE_REASONS, refuse_handshake


def write_client_ca_bundle(settings: Settings) -> str:
    bundle = settings.layout.client_ca_bundle
    write_private(bundle, b"".join(path.read_bytes().rstrip() + b"\n" for path in trust_anchor_files(settings)))
    return str(bundle)


def _ssl_context(config, default_ssl_context_factory):
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class AuditingThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, which also writes a handshake it refused for want of a trusted
    client certificate to the audit trail (the application never sees such a connection)."""

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in REFUSED_CERTIFICATE_REASONS:
            services = getattr(self.wsgi, "config", {}).get("SERVICES")
            if services is not None:
                refuse_handshake(services, (addr or ("?",))[0], exc.reason)
        super().handle_error(req, client, addr, exc)


class GatewayServer(BaseApplication):
    def __init__(self, settings: Settings, bind: str, workers: int, threads: int = 4,
                 log_level: str = "info"):
        self.settings = settings
        layout = settings.layout
        self.options = {
            "bind": bind,
            "workers": workers,
            # gthread: keep-alive, and getpeercert() on the socket; audits refused handshakes
            "worker_class": f"{__name__}.AuditingThreadWorker",
            "threads": threads,
            "keepalive": 30,
            "timeout": 60,
            "graceful_timeout": 10,
            "certfile": str(layout.server_cert),
            "keyfile": str(layout.server_key),
            "ca_certs": write_client_ca_bundle(settings),
            "cert_reqs": ssl.CERT_REQUIRED,
            "ssl_context": _ssl_context,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": log_level,
            "proc_name": "contactgate",
        }
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return create_app(self.settings)


def serve(settings: Settings, bind: str = "127.0.0.1:8443", workers: int = 2) -> None:
    GatewayServer(settings, bind, workers).run()
