"""The practitioners' portal: the secure web link (issue 26). Practitioners whose organisation has no
integrated system find a child and see who else is involved, in a browser.

Served by `contactgate portal` as its own process (gateway.portal.server), HTTPS with the gateway's
server certificate, behind the same front as `serve` and `console`. Pages are rendered on the
server (Flask, Jinja); no script at all, nothing fetched from elsewhere.

- **Accounts** (gateway.portal.accounts): practitioners of accredited organisations, made by their
  own organisation's user administrators (the first appointed by two officers:
  gateway.portal.appointments); vetting dates enforced at sign-in and on every page.
- **Sign-in**: password (argon2id) and TOTP, enrolment by a one-time invitation code; failures
  lock a source out of an account, never the account; the console's per-address throttle
  (gateway.console.throttle) in front of every password check.
- **Reads** (gateway.portal.access): a search is FindChild (the same code, criteria, floor), a
  child's page is GetContacts (the same role limits and shielding), each after a stated reason, each
  an audit entry shaped like a SOAP read in the read's own transaction. A child is never in a URL:
  pages carry opaque handles, good only in the session they were shown in, in POST bodies.
- **Web hardening** as the console's: ``Secure; HttpOnly; SameSite=Strict`` cookie holding only the
  session token; CSRF tokens (flask-wtf); a CSP without script; ``no-store``; role checked on the
  server for every route.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

from flask import Flask, g, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from gateway import audit, files
from gateway.config import Settings
from gateway.console.throttle import SignInGate
from gateway.db import make_engine

SESSION_COOKIE = "contactgate_portal"
MAX_FORM_BYTES = 64 * 1024  # forms only: no uploads
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def secret_key_path(settings: Settings) -> Path:
    return settings.layout.root / "keys" / "portal-secret"


def _secret_key(settings: Settings) -> bytes:
    """The key that signs the portal's cookies: made once (0600), shared by its workers."""
    path = secret_key_path(settings)
    if not path.exists():
        files.write_private(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def create_portal(settings: Settings, *, engine=None, clock=None) -> Flask:
    from gateway.index import disclosure, linkage_home

    # One stylesheet for both web applications: the console's (plain, readable, keyboard-first).
    app = Flask(__name__, static_folder=str(Path(__file__).parent.parent / "console" / "static"))
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=settings.session_max_hours),
        WTF_CSRF_TIME_LIMIT=settings.session_max_hours * 3600,
        WTF_CSRF_SSL_STRICT=True,
        MAX_CONTENT_LENGTH=MAX_FORM_BYTES,
        TEMPLATES_AUTO_RELOAD=False,
    )
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    linkage_home.configure(settings.layout.root)  # searches score with the model in use
    app.extensions["contactgate"] = {
        "settings": settings,
        "engine": engine or make_engine(settings.database_url, keys=settings.layout.data_keys),
        "trail": audit.AuditTrail.of_home(settings.layout),
        "clock": clock,
        "signin_gate": SignInGate.from_settings(settings, clock),
        "roles": disclosure.load(settings.roles_path),  # a bad roles file: the portal does not start
    }
    CSRFProtect(app)

    from gateway.portal import views

    app.register_blueprint(views.auth)
    app.register_blueprint(views.pages)

    @app.before_request
    def _origin():
        g.request_id = audit.new_request_id()
        g.audit_origin = audit.set_origin(request.remote_addr, g.request_id)

    @app.teardown_request
    def _origin_done(exc):
        token = g.pop("audit_origin", None)
        if token is not None:
            audit.reset_origin(token)

    @app.after_request
    def _headers(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    def _error(status: int, title: str, message: str):
        return render_template("error.html", title=title, message=message), status

    app.register_error_handler(CSRFError, lambda exc: _error(
        400, "Form expired", "The form was not accepted (its security token is missing or expired). "
                             "Reload the page and try again."))
    app.register_error_handler(403, lambda exc: _error(403, "Not permitted", getattr(exc, "description", "")))
    app.register_error_handler(404, lambda exc: _error(404, "Not found", "There is no such page or record."))
    app.register_error_handler(413, lambda exc: _error(413, "Too large", "The form is too large."))
    app.register_error_handler(500, lambda exc: _error(
        500, "Something went wrong", "The portal could not do that; nothing was changed. "
                                     "The operator can find the cause in the portal's log."))

    from gateway.audit.report import safe_text

    app.jinja_env.filters["plain"] = safe_text

    @app.context_processor
    def _practitioner():
        return {"me": g.get("practitioner")}

    return app
