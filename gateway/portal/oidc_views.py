"""The portal's pages for signing in through the organisation's own OpenID provider (issue 27;
gateway.portal.federated does the work).

- ``GET /oidc/start?org=CODE``: a new sign-in; a page that sends the browser on to the provider (a
  refresh and a link: the portal's CSP ``form-action 'self'`` would stop a form's redirect to
  another site). The state is also in a short-lived ``SameSite=Lax`` cookie (the session cookie is
  ``Strict``, so a provider's redirect back does not carry it): the answer must come back to the
  browser that started it.
- ``GET /oidc/callback``: the provider's answer; signed in, or refused (audited).
- ``GET/POST /oidc/step-up``: the portal's own TOTP code when the provider gave no evidence of two
  factors and the organisation's registration says to ask for it.
- ``POST /oidc/backchannel-logout/CODE``: the provider's logout token (no session, no CSRF token:
  the token's signature is the proof).
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for

from gateway.portal import federated, oidc

blueprint = Blueprint("oidc", __name__, url_prefix="/oidc")
STATE_COOKIE = "contactgate_portal_oidc"


def _app():
    return current_app.extensions["contactgate"]


def _now():
    return _app()["clock"]()


def providers() -> oidc.Providers:
    found = _app().get("oidc_providers")
    if found is None:
        found = _app()["oidc_providers"] = oidc.Providers(_app()["settings"])
    return found


def _orgs_in_force(conn, org_code):
    """Why an organisation's people may not sign in, or None (as gateway.portal.views' password sign-in)."""
    from gateway.trust import registry

    org = registry.get_org(conn, org_code, with_pending=False)
    if org is None or org.effective_status(_now().date()) != "accredited":
        return "your organisation's accreditation is not in force"
    return None


def _refused(message: str, status: int = 403):
    return render_template("error.html", title="Sign-in refused", message=message), status


@blueprint.route("/start")
def start():
    org = (request.args.get("org") or "").strip()
    if not org:
        return redirect(url_for("auth.login"))
    with _app()["signin_gate"].attempt(request.remote_addr) as refusal:
        if refusal is None:
            try:
                url, state = federated.begin(_app()["engine"], providers(), _app()["settings"], org, _now(),
                                             _orgs_in_force)
            except federated.FederatedRefused as exc:
                federated.refused_before_provider(_app()["engine"], _app()["trail"], org, str(exc),
                                                  request.remote_addr)
                return _refused(exc.said, 404 if "no identity provider" in str(exc) else 403)
            except (oidc.ProviderMisbehaved, oidc.ProviderUnreachable) as exc:
                current_app.logger.warning("identity provider of %s not usable", org[:32], exc_info=True)
                federated.refused_before_provider(_app()["engine"], _app()["trail"], org,
                                                  f"the provider could not be used: {exc}", request.remote_addr)
                return _refused("Your organisation's sign-in service could not be reached. Try again later, or sign "
                                "in with your password and code.", 502)
    if refusal is not None:
        return _refused("Too many sign-ins from this address: wait a minute and try again.", refusal.status)
    answer = current_app.make_response(render_template("oidc_onward.html", url=url, title="Signing in",
                                                       message="Taking you to your organisation's sign-in."))
    answer.set_cookie(STATE_COOKIE, hashlib.sha256(state.encode()).hexdigest(), max_age=oidc.REQUEST_MINUTES * 60,
                      secure=True, httponly=True, samesite="Lax", path="/oidc/")
    return answer


@blueprint.route("/callback")
def callback():
    state = request.args.get("state") or ""
    bound = request.cookies.get(STATE_COOKIE, "")
    expected = hashlib.sha256(state.encode()).hexdigest()
    try:
        if not hmac.compare_digest(bound, expected):
            raise federated.FederatedRefused("state of another browser")
        done = federated.complete(_app()["engine"], _app()["trail"], providers(), _app()["settings"], _app()["roles"],
                                  state=state, code=request.args.get("code"), error=request.args.get("error"),
                                  now=_now(), source=request.remote_addr, orgs_in_force=_orgs_in_force)
    except federated.FederatedRefused as exc:
        if str(exc) == "state of another browser":
            from gateway import audit

            with _app()["engine"].begin() as conn:
                _app()["trail"].append(conn, audit.Entry(
                    operation="portal.login", outcome="refused", user_id="(federated)",
                    detail="federated sign-in refused: the answer's state is not this browser's sign-in",
                    source_address=(request.remote_addr or "")[:64] or None))
        answer = current_app.make_response(_refused(exc.said))
        answer.delete_cookie(STATE_COOKIE, path="/oidc/")
        return answer
    session.clear()
    if done.step_up is not None:
        session["oidc_step_up"] = done.step_up
        target = url_for("oidc.step_up")
    else:
        session["token"] = done.token
        session.permanent = True
        target = url_for("pages.home")
    # A page of this site sends the browser on: the Strict session cookie is sent from here on.
    answer = current_app.make_response(render_template("oidc_onward.html", url=target, title="Signed in",
                                                       message="Signed in through your organisation."))
    answer.delete_cookie(STATE_COOKIE, path="/oidc/")
    return answer


@blueprint.route("/step-up", methods=["GET", "POST"])
def step_up():
    pending = session.get("oidc_step_up")
    if not pending:
        return redirect(url_for("auth.login"))
    if request.method == "GET":
        return render_template("oidc_step_up.html")
    session.pop("oidc_step_up", None)
    done = federated.step_up(_app()["engine"], _app()["trail"], _app()["settings"], pending,
                             request.form.get("code", "").strip(), _now(), request.remote_addr, _orgs_in_force)
    if done.token is None:
        return _refused("Sign-in refused: the code was not accepted. Start again from the sign-in page.", 401)
    session.clear()
    session["token"] = done.token
    session.permanent = True
    return redirect(url_for("pages.home"))


@blueprint.route("/backchannel-logout/<org_code>", methods=["POST"])
def backchannel_logout(org_code: str):
    try:
        ended = federated.backchannel_logout(_app()["engine"], _app()["trail"], providers(), _app()["settings"],
                                             org_code, request.form.get("logout_token", ""), _now(),
                                             request.remote_addr)
    except (federated.FederatedRefused, oidc.ProviderMisbehaved, oidc.ProviderUnreachable):
        return {"error": "invalid_request"}, 400, {"Cache-Control": "no-store"}
    return "", 200, {"Cache-Control": "no-store", "X-Sessions-Ended": str(ended)}


def end_session_url(token_hash: str) -> str | None:
    """For the sign-out page: the provider's end-session URL, if the session was a provider's."""
    with _app()["engine"].connect() as conn:
        return federated.end_session_url(conn, providers(), _app()["settings"], token_hash)


def register(app) -> None:
    app.register_blueprint(blueprint)
    from flask_wtf.csrf import CSRFProtect

    csrf = app.extensions.get("csrf") or CSRFProtect(app)
    csrf.exempt(backchannel_logout)
