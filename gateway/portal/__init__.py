"""The practitioners' portal: the secure web link (issue 26). Practitioners whose organisation has no
integrated system find a child and see who else is involved, in a browser.

Served by `contactgate portal` as its own process (gateway.portal.server), HTTPS with the gateway's
server certificate, behind the same front as `serve` and `console`. Pages are rendered on the
server (Flask, Jinja); nothing fetched from elsewhere, and no script except the one small file the
security-key pages load from the portal itself (static/webauthn.js, gateway.portal.key_views).

- **Accounts** (gateway.portal.accounts): practitioners of accredited organisations, made by their
  own organisation's user administrators (the first appointed by two officers:
  gateway.portal.appointments); vetting dates enforced at sign-in and on every page.
- **Sign-in**: password (argon2id) and a security key (WebAuthn: gateway.portal.security_keys, which
  documents the relying party, challenges, user verification, attestation and clone policies) or,
  where the organisation still accepts them, a TOTP code; enrolment by a one-time invitation code; failures
  lock a source out of an account, and wrong codes after the right password, from any source, lock
  the account's code step until a reset; the console's per-address throttle
  (gateway.console.throttle) in front of every password check.
- **Reads** (gateway.portal.access): a search is FindChild (the same code, criteria, floor), a
  child's page is GetContacts (the same role limits and shielding), each after a stated reason, each
  an audit entry shaped like a SOAP read in the read's own transaction, counted against the SOAP
  reads' rate limits; a refused one is audited with its fault. A child is never in a URL:
  pages carry opaque handles, good only in the session they were shown in, in POST bodies.
- **Web hardening** as the console's (gateway.web): ``Secure; HttpOnly; SameSite=Strict`` cookie holding only the
  session token; CSRF tokens (flask-wtf); a CSP without script (``script-src 'self'`` on the
  security-key pages only); ``no-store``; role checked on the
  server for every route.
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
from gateway import web
from gateway.web import hardened_app

SESSION_COOKIE = "contactgate_portal"  # not the console's: the two may share a host name
CSP = web.CSP  # the portal's own policy (a parameter of gateway.web.hardened_app): no script yet
MAX_FORM_BYTES = 64 * 1024  # forms; the CSV import page alone takes more (gateway.portal.bulk)
# One stylesheet for both web applications: the console's (plain, readable, keyboard-first).
STATIC = Path(__file__).parent.parent / "console" / "static"


def secret_key_path(settings: Settings) -> Path:
    return settings.layout.root / "keys" / "portal-secret"


def create_portal(settings: Settings, *, engine=None, clock=None) -> Flask:
    from gateway.index import disclosure, linkage_home

    app = hardened_app(__name__, settings, secret_path=secret_key_path(settings), cookie=SESSION_COOKIE,
                       max_content_length=MAX_FORM_BYTES, static_folder=str(STATIC), csp=CSP)
    from gateway.portal import bulk

    app.request_class = bulk.PortalRequest  # the import page's larger limit, for that page only
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    linkage_home.configure(settings.layout.root)  # searches score with the model in use
    engine = engine or make_engine(settings.database_url, keys=settings.layout.data_keys)
    from gateway.store import make_store

    app.extensions["contactgate"] = {
        "settings": settings,
        "engine": engine,
        "store": make_store(settings, engine),  # reads count against the SOAP pipeline's rate limits
        "trail": audit.AuditTrail.of_home(settings.layout),
        "clock": clock,
        "signin_gate": SignInGate.from_settings(settings, clock),
        "roles": disclosure.load(settings.roles_path),  # a bad roles file: the portal does not start
    }
    from gateway.backup import Gate
    from gateway.db import reader

    # After `contactgate restore`, nothing is served until two officers acknowledge it (as `serve`).
    app.extensions["contactgate"]["restore_gate"] = Gate(settings.layout, reader(app.extensions["contactgate"]["engine"]))
    from gateway.portal import bulk_views, key_views, views  # noqa: F401 (bulk_views adds the import page to views.pages)
    from gateway.portal.security_keys import RelyingParty

    # Security keys are bound to the portal's public URL (`contactgate portal` checks it against its
    # --bind and certificate before it starts: security_keys.check_portal_url).
    app.extensions["contactgate"]["relying_party"] = RelyingParty.of(settings)
    app.extensions["contactgate"]["key_steps"] = key_views  # views' sign-in hands over to its key step
    app.register_blueprint(views.auth)
    app.register_blueprint(views.pages)
    app.register_blueprint(key_views.keys)
    app.register_blueprint(key_views.my)
    from gateway.portal import oidc_views

    oidc_views.register(app)  # signing in through the organisation's own OpenID provider

    def _error(status: int, title: str, message: str):
        return render_template("error.html", title=title, message=message), status

    app.register_error_handler(CSRFError, lambda exc: _error(
        400, "Form expired", "The form was not accepted (its security token is missing or expired). "
                             "Reload the page and try again."))
    app.register_error_handler(403, lambda exc: _error(403, "Not permitted", getattr(exc, "description", "")))
    app.register_error_handler(404, lambda exc: _error(404, "Not found", "There is no such page or record."))
    app.register_error_handler(413, lambda exc: _error(413, "Too large", "The form is too large."))
    app.register_error_handler(503, lambda exc: _error(503, "Not available", getattr(exc, "description", "")))
    app.register_error_handler(500, lambda exc: _error(
        500, "Something went wrong", "The portal could not do that; nothing was changed. "
                                     "The operator can find the cause in the portal's log."))

    @app.context_processor
    def _practitioner():
        return {"me": g.get("practitioner")}

    return app
