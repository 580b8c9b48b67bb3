"""`contactgate portal`: the portal in its own gunicorn, behind the same front as `serve` and
`console` (gateway/front.py: handshake, head and body deadlines, connection caps per address and
per worker), HTTPS with the gateway's server certificate and no client certificate asked for.
Like the console: bodies up to the portal's form limit, an access log of paths without query
strings, not meant to sit behind a proxy (each connection's own address is capped and audited)."""

from __future__ import annotations

from dataclasses import replace

from gateway.config import Settings
from gateway.front import BODY_BUDGET_MESSAGES, FrontLimits, server_ssl_context_without_client_certificates
from gateway.portal import MAX_FORM_BYTES, bulk, create_portal
from gateway.server import FrontApplication, FrontSetup


class PortalServer(FrontApplication):
    def __init__(self, settings: Settings, bind: str, workers: int = 2, log_level: str = "info"):
        self.settings = settings
        self.options = {
            "bind": bind, "workers": workers, "timeout": 60, "graceful_timeout": 10, "backlog": 2048,
            "accesslog": "-", "errorlog": "-", "loglevel": log_level, "proc_name": "contactgate-portal",
        }
        super().__init__()

    def load(self):
        return create_portal(self.settings)

    def front_setup(self, wsgi) -> FrontSetup:
        layout = self.settings.layout
        tls = server_ssl_context_without_client_certificates(str(layout.server_cert), str(layout.server_key))
        # The CSV import page alone takes a file larger than a form (gateway.portal.bulk).
        limits = replace(FrontLimits.from_settings(self.settings), max_body_bytes=MAX_FORM_BYTES,
                         body_budget_bytes=max(MAX_FORM_BYTES * BODY_BUDGET_MESSAGES, 2 * bulk.IMPORT_BODY_LIMIT),
                         path_body_limits=((bulk.IMPORT_PATH, bulk.IMPORT_BODY_LIMIT),))
        return FrontSetup(limits, self.settings.threads, tls, audit_refused_handshake=None, log_query_strings=False)


def serve_portal(settings: Settings, bind: str = "127.0.0.1:8445", workers: int = 2) -> None:
    PortalServer(settings, bind, workers).run()
