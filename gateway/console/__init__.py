"""The officers' web console: the registry's lifecycle, the review queue and the audit in a browser.

Served by `contactgate console` as its own process (gateway.console.server), HTTPS with the
gateway's server certificate, for the officers' network only. Pages are rendered on the server
(Flask blueprints, Jinja templates); no script at all, and nothing fetched from elsewhere.

- **Sign-in** uses the registry's officer accounts (gateway.officers): password + TOTP, the same
  locks (failures counted per client address, ``request.remote_addr``, which is also the audit's
  origin), and the same server-side sessions as `contactgate login` (15 minutes idle, 8 hours at
  most). The cookie holds the session token only, signed; the database holds its SHA-256. Before
  any password is checked, an address over CONTACTGATE_SIGNIN_PER_MINUTE, or a process already
  running CONTACTGATE_SIGNIN_CONCURRENCY checks, is refused unchecked (gateway.console.throttle).
- **Step-up**: an approval, a decline, a revocation, a suspension or a trust change asks for the
  password and a fresh code again in the form that does it (audited as ``officer.step_up``).
- **Authorisation on the server**, for every page and action, by role (``_needs``); four-eyes is the
  registry's own rule, so a forged approval by the proposer is refused there too.
- **Web hardening** (gateway.web, shared with the practitioners' portal): the cookie is ``Secure;
  HttpOnly; SameSite=Strict``; every form carries a CSRF token (flask-wtf); a Content-Security-Policy
  without inline script or style and with ``frame-ancestors 'none'``; ``no-store`` on every answer;
  no child data in any URL.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flask import Flask, g, render_template
from flask_wtf.csrf import CSRFError

from gateway import audit
from gateway.config import Settings
from gateway.console.throttle import SignInGate
from gateway.db import make_engine
from gateway.web import hardened_app

SESSION_COOKIE = "contactgate_console"
# The largest request the console takes (a CSR, evidence documents); also its front's body limit.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024


def secret_key_path(settings: Settings) -> Path:
    return settings.layout.root / "keys" / "console-secret"


def create_console(settings: Settings, *, engine=None, clock=None) -> Flask:
    app = hardened_app(__name__, settings, secret_path=secret_key_path(settings), cookie=SESSION_COOKIE,
                       max_content_length=MAX_UPLOAD_BYTES)
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    from gateway.index import linkage_home, precedence

    linkage_home.configure(settings.layout.root)  # the review pages score with the model in use
    app.extensions["contactgate"] = {
        "settings": settings,
        "engine": engine or precedence.attach(make_engine(settings.database_url, keys=settings.layout.data_keys),
                                              precedence.load(settings.precedence_path)),
        "trail": audit.AuditTrail.of_home(settings.layout),
        "clock": clock,
        "signin_gate": SignInGate.from_settings(settings, clock),
    }
    from gateway.console import views

    app.register_blueprint(views.auth)
    app.register_blueprint(views.pages)
    from gateway.console import identity_providers

    app.register_blueprint(identity_providers.blueprint)  # organisations' identity providers (issue 27)

    @app.errorhandler(CSRFError)
    def _csrf(exc):
        return render_template("error.html", title="Form expired",
                               message="The form was not accepted (its security token is missing or "
                                       "expired). Reload the page and try again."), 400

    @app.errorhandler(403)
    def _forbidden(exc):
        return render_template("error.html", title="Not permitted", message=getattr(exc, "description", "")), 403

    @app.errorhandler(404)
    def _missing(exc):
        return render_template("error.html", title="Not found", message="There is no such page."), 404

    @app.errorhandler(413)
    def _too_large(exc):
        return render_template("error.html", title="Too large", message="The upload is larger than 2 MB."), 413

    @app.errorhandler(500)
    def _broken(exc):
        return render_template("error.html", title="Something went wrong",
                               message="The console could not do that; nothing was changed. "
                                       "The operator can find the cause in the console's log."), 500

    @app.context_processor
    def _officer():
        return {"officer": g.get("officer")}

    return app
