"""`contactgate console`: the web console in its own gunicorn, behind the same front as `serve`
(gateway/front.py on `FrontWorker`: handshake, head and body deadlines, connection caps per address
and per worker, a bounded memory for bodies), HTTPS with the gateway's server certificate and no
client certificate asked for: officers sign in with password and TOTP.

What differs from `serve`'s front: no client certificate (so no refused-handshake audit), bodies up
to the console's upload limit (a CSR, evidence documents: MAX_UPLOAD_BYTES), and an access log of
paths without query strings (the audit page's search terms are never logged). The same settings
bound it (CONTACTGATE_HANDSHAKE_TIMEOUT, _HEADER_TIMEOUT, _BODY_TIMEOUT, _KEEPALIVE_TIMEOUT,
_MAX_CONNECTIONS, _MAX_CONNECTIONS_PER_ADDRESS, _THREADS). The console is not meant to sit behind a
proxy: each connection's own address is the one capped and audited.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.config import Settings
from gateway.console import MAX_UPLOAD_BYTES, create_console
from gateway.front import (
    BODY_BUDGET_MESSAGES, FrontLimits, server_ssl_context_without_client_certificates,
)
from gateway.server import FrontApplication, FrontSetup


def console_limits(settings: Settings) -> FrontLimits:
    """`serve`'s limits, with the console's upload limit as the body limit (a larger body reaches
    the console only as its first MAX_UPLOAD_BYTES + 1 bytes, and the console answers 413)."""
    return replace(FrontLimits.from_settings(settings), max_body_bytes=MAX_UPLOAD_BYTES,
                   body_budget_bytes=MAX_UPLOAD_BYTES * BODY_BUDGET_MESSAGES)


class ConsoleServer(FrontApplication):
    def __init__(self, settings: Settings, bind: str, workers: int = 2, log_level: str = "info"):
        self.settings = settings
        self.options = {
            "bind": bind,
            "workers": workers,
            "timeout": 60,
            "graceful_timeout": 10,
            "backlog": 2048,
            "accesslog": "-",
            "errorlog": "-",
            "loglevel": log_level,
            "proc_name": "contactgate-console",
        }
        super().__init__()

    def load(self):
        return create_console(self.settings)

    def front_setup(self, wsgi) -> FrontSetup:
        layout = self.settings.layout
        tls = server_ssl_context_without_client_certificates(str(layout.server_cert), str(layout.server_key))
        return FrontSetup(console_limits(self.settings), self.settings.threads, tls,
                          audit_refused_handshake=None, log_query_strings=False)


def serve_console(settings: Settings, bind: str = "127.0.0.1:8444", workers: int = 2) -> None:
    ConsoleServer(settings, bind, workers).run()
