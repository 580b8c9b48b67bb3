"""`contactgate console`: the web console in its own gunicorn, HTTPS with the gateway's server
certificate (no client certificate: officers sign in with password and TOTP)."""

from __future__ import annotations

import ssl

from gateway.config import Settings
from gateway.server import ConfiguredApplication


class ConsoleServer(ConfiguredApplication):
    def __init__(self, settings: Settings, bind: str, workers: int = 2, log_level: str = "info"):
        self.settings = settings
        layout = settings.layout
        self.options = {
            "bind": bind,
            "workers": workers,
            "worker_class": "gthread",
            "threads": 4,
            "timeout": 60,
            "graceful_timeout": 10,
            "certfile": str(layout.server_cert),
            "keyfile": str(layout.server_key),
            "ssl_version": ssl.PROTOCOL_TLS_SERVER,
            "cert_reqs": ssl.CERT_NONE,
            "limit_request_line": 4094,
            "limit_request_fields": 60,
            "accesslog": "-",
            # No query strings in the log (the audit page's search terms are never logged).
            "access_log_format": '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss',
            "errorlog": "-",
            "loglevel": log_level,
            "proc_name": "contactgate-console",
        }
        super().__init__()

    def load(self):
        from gateway.console import create_console

        return create_console(self.settings)


def serve_console(settings: Settings, bind: str = "127.0.0.1:8444", workers: int = 2) -> None:
    ConsoleServer(settings, bind, workers).run()
