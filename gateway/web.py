"""What the officers' console and the practitioners' portal share: a Flask application hardened the
same way, so that a fix to one is a fix to both.

- The cookie holds a signed session token only: ``Secure; HttpOnly; SameSite=Strict``, signed with
  a key made once in the home (0600) and shared by the application's workers (`secret_key`: the
  first worker's, even when several start at once); sent only by an answer that changed it.
- Every form carries a CSRF token (flask-wtf), checked strictly on HTTPS (the Referer too).
- Every answer: a Content-Security-Policy without any script or inline style and with
  ``frame-ancestors 'none'``, ``no-store``, HSTS, ``nosniff``, ``X-Frame-Options: DENY``, and the
  request's id (``X-Request-Id``), which is also the id of whatever it audits.
- Audit entries written while a request is served name its client's address and the request
  (gateway.audit.set_origin), and nothing after it.
- Text from callers is shown through the ``plain`` filter: one visible line, no direction or control
  characters (gateway.audit.report.safe_text).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from flask import Flask, g, request
from flask_wtf.csrf import CSRFProtect

from gateway import audit, files
from gateway.config import Settings

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def secret_key(path: Path) -> bytes:
    """The key that signs an application's cookies: made once (0600), then read. Workers starting
    at once may each make one: each is written whole beside the file and linked into place, which
    only the first does (a link never replaces a file); every worker then reads that one."""
    if not path.exists():
        staged = files.stage_private(path, secrets.token_hex(32).encode())
        try:
            os.link(staged, path)
        except FileExistsError:
            pass  # another worker's key is in place: it is the key
        finally:
            staged.unlink()
    return path.read_bytes().strip()


def hardened_app(import_name: str, settings: Settings, *, secret_path: Path, cookie: str, max_content_length: int,
                 static_folder: str | None = "static", csp: str = CSP) -> Flask:
    """``cookie``: the session cookie's name, its own for each application (browsers send a host's
    cookies to every port of it); ``csp``: the Content-Security-Policy of every answer."""
    app = Flask(import_name, static_folder=static_folder)
    app.config.update(
        SECRET_KEY=secret_key(secret_path),
        SESSION_COOKIE_NAME=cookie,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=settings.session_max_hours),
        # Only an answer that changed the session sends the cookie. Re-sent by every answer, a late one
        # (the favicon a browser fetches after a page has loaded, while it follows the page on) put
        # back the cookie its request came with, and with it a session without the form token the
        # next page had put in: that form was then refused as expired. The server ends sessions
        # (idle, and at most session_max_hours after sign-in), not the cookie's date.
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=settings.session_max_hours * 3600,
        WTF_CSRF_SSL_STRICT=True,
        MAX_CONTENT_LENGTH=max_content_length,
        TEMPLATES_AUTO_RELOAD=False,
    )
    CSRFProtect(app)

    @app.before_request
    def _origin():  # what this request audits says where it came from, and which request it was
        g.request_id = audit.new_request_id()
        g.audit_origin = audit.set_origin(request.remote_addr, g.request_id)

    @app.teardown_request
    def _origin_done(exc):  # the serving thread names nobody again once the request is over
        token = g.pop("audit_origin", None)
        if token is not None:
            audit.reset_origin(token)

    @app.after_request
    def _headers(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        # A page that needs one of the application's own script files widens its policy itself
        # (g.content_security_policy: the portal's security-key pages); every other answer has ``csp``.
        response.headers["Content-Security-Policy"] = g.get("content_security_policy") or csp
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"  # flask-wtf checks the Referer on HTTPS
        response.headers["Cache-Control"] = "no-store"
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    from gateway.audit.report import safe_text

    app.jinja_env.filters["plain"] = safe_text
    return app
