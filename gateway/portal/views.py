"""The portal's pages. Every route checks on the server who may use it: a practitioner (an account
with a role) searches and views; a user administrator administers their own organisation's
accounts, and another organisation's are, to them, not there (404). Refusals of a route are
audited."""

from __future__ import annotations

import datetime as dt
import re
from functools import wraps

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, session, url_for

from contactgate_wire.faults import RateLimited, SchemaInvalid
from gateway import audit
from gateway.index.model import FindQuery
from gateway.mediation import is_mediator
from gateway.portal import access, accounts, mediated
from gateway.portal.accounts import PortalError
from gateway.trust import registry

auth = Blueprint("auth", __name__)
pages = Blueprint("pages", __name__)

GENDERS = ("female", "male", "other", "unknown")
# FindChild's own patterns (schemas/contactgate.xsd: NhsNumberType, PupilNumberType)
NHS_NUMBER = re.compile(r"[0-9]{10}")
PUPIL_NUMBER = re.compile(r"[A-Z][0-9]{11}[0-9A-Z]")
LAPSING_DAYS = 30


def _app():
    return current_app.extensions["contactgate"]


def _now() -> dt.datetime:
    return _app()["clock"]()


def _org_refusal(conn, org_code: str) -> str | None:
    """Why an organisation's people may not sign in, or None."""
    org = registry.get_org(conn, org_code, with_pending=False)
    if org is None or org.effective_status(_now().date()) != "accredited":
        return "your organisation's accreditation is not in force"
    return None


# ---- signing in and enrolling ---------------------------------------------------------------------

UNCHECKED = {
    429: "Refused: too many attempts from this address. Wait a minute and try again.",
    503: "Refused: the portal is busy checking other sign-ins. Try again in a moment.",
}


def _gated(template: str, check):
    """``check()`` (a password or an invitation check) run through the per-address gate in front of
    every such check (gateway.console.throttle): (its result, None), or (None, the refusal page)."""
    form = request.form
    with _app()["signin_gate"].attempt(request.remote_addr) as refusal:
        if refusal is None:
            return check(), None
    if refusal.status == 429 and refusal.first:
        accounts.refuse_unchecked(_app()["engine"], _app()["trail"], form.get("org", ""), form.get("user", ""),
                                  f"more than {_app()['settings'].signin_per_minute} attempts a minute from "
                                  f"{refusal.source} (throttled)")
    return None, (render_template(template, error=UNCHECKED[refusal.status]), refusal.status,
                  {"Retry-After": str(refusal.retry_after)})


def _refusal_of(fn, *args, **kwargs):
    """(fn's result, None), or (None, the PortalError's message)."""
    try:
        return fn(*args, **kwargs), None
    except PortalError as exc:
        return None, str(exc)


@auth.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html")
    form = request.form
    who = _who(form.get("org", ""), form.get("user", ""))
    result, refused = _gated("login.html", lambda: accounts.sign_in(
        _app()["engine"], _app()["trail"], form.get("org", ""), form.get("user", ""), form.get("password", ""),
        form.get("code", "").strip(), settings=_app()["settings"], source=request.remote_addr,
        orgs_in_force=_org_refusal, now=_now(), known_browser=who is not None and who in _known_browser()))
    if refused is not None:
        return refused
    # The key step's pages (gateway.portal.key_views, which builds on this module) are handed in by
    # create_portal: this module does not import them.
    key_steps = _app()["key_steps"]
    if result.next_step is not None:  # the password was right: a security key next
        return key_steps.next_step_page(result)
    if result.practitioner is None and result.said == accounts.REFUSED and not form.get("code", "").strip():
        # No code, and refused (a wrong password, no such account, a lock...): a key step all the
        # same, as the right password gets, so that it tells a guesser nothing (key_views.decoy_page).
        return key_steps.decoy_page(form.get("org", ""), form.get("user", ""))
    if result.practitioner is None:
        # Until both factors are right: one answer for everything (the audit records which).
        status = 401 if result.said == accounts.REFUSED else 403
        return render_template("login.html", error=result.said), status
    return signed_in_answer(result)


def signed_in_answer(result: accounts.SignIn):
    """Both factors were right: the new session in the cookie, this browser known to the account."""
    session.clear()
    session["token"] = result.token
    session.permanent = True
    answer = redirect(url_for("pages.home"))
    known = sorted({*_known_browser(), result.practitioner.who})[-KNOWN_ACCOUNTS:]
    answer.set_cookie(KNOWN_COOKIE, _known_signer().dumps(known), max_age=KNOWN_DAYS * 86400, secure=True,
                      httponly=True, samesite="Strict")
    return answer


# A browser an account has signed in from: a signed cookie naming the accounts (ORG:user) that did,
# which exempts it from its address's lock on those accounts (gateway.portal.accounts.sign_in).
KNOWN_COOKIE = "contactgate_portal_known"
KNOWN_DAYS = 180
KNOWN_ACCOUNTS = 5


def _known_signer():
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer(current_app.secret_key, salt="contactgate-portal-known-browser")


def _known_browser() -> set[str]:
    from itsdangerous import BadData

    try:
        names = _known_signer().loads(request.cookies.get(KNOWN_COOKIE, ""), max_age=KNOWN_DAYS * 86400)
    except BadData:
        return set()
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _who(org_code: str, user_id: str) -> str | None:
    try:
        return f"{(org_code or '').strip().upper()[:32]}:{accounts.canonical_user(user_id)}"
    except PortalError:
        return None


@auth.route("/logout", methods=["POST"])
def logout():
    token = session.pop("token", None)
    onward = None
    if token:
        from gateway.portal import oidc_views

        onward = oidc_views.end_session_url(accounts._token_hash(token))  # signed in through a provider
        with _app()["engine"].begin() as conn:
            accounts.end_session(conn, _app()["trail"], token)
    session.clear()
    flash("You are signed out.", "ok")
    if onward:  # the provider's own sign-out next (RP-initiated logout), then back to the sign-in page
        return render_template("oidc_onward.html", url=onward, title="Signed out",
                               message="You are signed out of the portal; now signing you out of your organisation.")
    return redirect(url_for("auth.login"))


def _enrolment_secret(form):
    with _app()["engine"].connect() as conn:
        return accounts.enrolment_secret(conn, form.get("org", ""), form.get("user", ""), form.get("invitation", ""),
                                         now=_now(), orgs_in_force=_org_refusal)


@auth.route("/enrol", methods=["GET", "POST"])
def enrol():
    """Step 1: the invitation code shows the authenticator's secret (once enrolled, never again)."""
    if request.method == "GET":
        return render_template("enrol.html")
    form = request.form
    checked, refused = _gated("enrol.html", lambda: _refusal_of(_enrolment_secret, form))
    if refused is not None:
        return refused
    found, problem = checked
    if problem is not None:
        return render_template("enrol.html", error=f"Enrolment {problem}."), 401
    account, secret = found
    from gateway.portal import security_keys

    with _app()["engine"].begin() as conn:
        codes_off = not security_keys.code_policy(conn, account.org_code).totp_allowed
        if codes_off:
            accounts._audit(conn, _app()["trail"], "portal.enrol", account.org_code, account.user_id, None,
                            "enrolment with an authenticator app refused: the organisation accepts security keys "
                            "only", "refused")
    if codes_off:  # the secret is not shown: it could not be used
        return render_template("enrol.html", error=f"{account.org_code} accepts security keys only: press "
                                                   f"“Enrol with a security key”."), 400
    from gateway.officers import provisioning_uri

    return render_template("enrol_secret.html", account=account, secret=secret, invitation=form.get("invitation", ""),
                           uri=provisioning_uri(account.who, secret, issuer="ContactGate portal"))


@auth.route("/enrol/finish", methods=["POST"])
def enrol_finish():
    form = request.form
    if form.get("password", "") != form.get("password2", ""):
        return render_template("enrol.html", error="The two passwords differ: start again with your invitation."), 400
    checked, refused = _gated("enrol.html", lambda: _refusal_of(
        accounts.enrol, _app()["engine"], _app()["trail"], form.get("org", ""), form.get("user", ""),
        form.get("invitation", ""), form.get("password", ""), form.get("code", "").strip(), now=_now(),
        orgs_in_force=_org_refusal))
    if refused is not None:
        return refused
    if checked[1] is not None:
        return render_template("enrol.html", error=f"Enrolment {checked[1]}; start again with your invitation."), 400
    flash("You are enrolled: sign in with your password and a code from your authenticator app.", "ok")
    return redirect(url_for("auth.login"))


# ---- every page after sign-in ----------------------------------------------------------------------

@pages.before_request
def _signed_in():
    token = session.get("token")
    if not token:
        return redirect(url_for("auth.login"))
    restored = _app()["restore_gate"].reason()
    if restored is not None:  # as `serve`: no record is read until two officers acknowledge the restore
        abort(503, f"The portal does not serve now: {restored}. Try again later.")
    ended = None
    with _app()["engine"].begin() as conn:
        try:
            g.practitioner, g.session_hash = accounts.resume(conn, token, settings=_app()["settings"], now=_now(),
                                                             orgs_in_force=_org_refusal)
        except PortalError as exc:
            ended = str(exc)
    if ended is not None:
        session.clear()
        flash(f"Signed out: {ended}.", "error")
        return redirect(url_for("auth.login"))
    return None


def _refuse_route(why: str):
    me = g.practitioner
    with _app()["engine"].begin() as conn:
        _app()["trail"].append(conn, audit.Entry(
            operation="portal.refused", outcome="refused", org_code=me.org_code, user_id=me.user_id,
            role=me.role or accounts.ADMIN_ROLE, detail=f"{request.method} {request.path}: {why}"))
    abort(403, why)


def _practitioner_only(view):
    @wraps(view)
    def checked(*args, **kwargs):
        if g.practitioner.role is None:
            _refuse_route("searching and viewing needs a practitioner role; this account administers accounts only")
        return view(*args, **kwargs)
    return checked


def _admin_only(view):
    @wraps(view)
    def checked(*args, **kwargs):
        if not g.practitioner.user_admin:
            _refuse_route("this page is for your organisation's user administrators")
        return view(*args, **kwargs)
    return checked


@pages.route("/")
def home():
    if g.practitioner.role is None:
        if not g.practitioner.user_admin:
            return render_template("error.html", title="Waiting for approval",
                                   message="Your account has no role yet: a second user administrator of your "
                                           "organisation approves the role it was given. Try again later.")
        return redirect(url_for("pages.practitioners"))
    return render_template("search.html", form={}, reasons=access.REASON_CODES, genders=GENDERS)


# ---- search and view ------------------------------------------------------------------------------

def _query(form) -> FindQuery:
    def text(name: str, limit: int = 100) -> str | None:
        value = (form.get(name) or "").strip()
        if len(value) > limit:
            raise PortalError(f"{name.replace('_', ' ')} is too long")
        return value or None

    born = text("date_of_birth", 10)
    try:
        date_of_birth = dt.date.fromisoformat(born) if born else None
    except ValueError:
        raise PortalError("the date of birth must be a date (YYYY-MM-DD)") from None
    gender = text("gender", 10)
    if gender is not None and gender not in GENDERS:
        raise PortalError("choose a gender from the list, or leave it blank")
    nhs = text("nhs_number", 14)
    nhs = nhs.replace(" ", "") if nhs else None
    if nhs is not None and not NHS_NUMBER.fullmatch(nhs):
        raise PortalError("an NHS number is 10 digits")
    pupil = text("pupil_number", 13)
    pupil = pupil.upper() if pupil else None
    if pupil is not None and not PUPIL_NUMBER.fullmatch(pupil):
        raise PortalError("a pupil number is a letter, 11 digits and a digit or letter (13 characters)")
    return FindQuery(family_name=text("family_name"), given_name=text("given_name"), date_of_birth=date_of_birth,
                     gender=gender, postcode=text("postcode", 10), nhs_number=nhs, pupil_number=pupil,
                     include_score=True)


def _may_query(practitioner) -> None:
    """The organisation's accreditation, now (a suspension takes effect at the next search or view,
    as at the next SOAP message), covers querying the index."""
    with _app()["engine"].connect() as conn:
        org = registry.get_org(conn, practitioner.org_code, with_pending=False)
    if org is None or org.effective_status(_now().date()) != "accredited" or "query" not in org.scopes:
        _refuse_route(f"{practitioner.org_code} is not accredited to query the index now")
    refused = mediated.refusal(practitioner, org, request.form)  # on behalf of another: mediators only
    if refused is not None:
        _refuse_route(refused)


def _on_behalf(practitioner):
    """A mediator's requester, from the form (ReadRefused if incomplete); None for anyone else."""
    return mediated.checked(request.form, _rules()) if is_mediator(practitioner.role) else None


@pages.app_context_processor
def _mediation():
    me = g.get("practitioner")
    if me is None or not is_mediator(me.role):
        return {"mediator": False}
    return {"mediator": True, "behalf_fields": mediated.FIELDS, **mediated.template_context(_rules())}


@pages.route("/search", methods=["POST"])
@_practitioner_only
def search():
    me = g.practitioner
    _may_query(me)
    form = request.form
    try:
        try:
            query = _query(form)
        except access.ReadRefused:
            raise
        except PortalError as exc:
            raise access.ReadRefused(str(exc), SchemaInvalid.code) from None
        on_behalf = _on_behalf(me)
        reason = access.Reason.checked(form.get("reason_code"), form.get("reason_text"))
        found = access.search(_app()["engine"], _app()["trail"], _app()["settings"], me, query, reason,
                              session_hash=g.session_hash, source=request.remote_addr, request_id=g.request_id,
                              now=_now(), store=_app()["store"], on_behalf=on_behalf)
    except access.ReadRefused as exc:
        _audit_refused_read("FindChild", exc)
        return render_template("search.html", form=form, reasons=access.REASON_CODES, genders=GENDERS,
                               error=str(exc)), _status(exc)
    return render_template("results.html", found=found, form=form, reasons=access.REASON_CODES, genders=GENDERS)


def _status(refused: access.ReadRefused) -> int:
    return 429 if refused.fault_code == RateLimited.code else 400


def _audit_refused_read(operation: str, refused: access.ReadRefused) -> None:
    access.audit_refusal(_app()["engine"], _app()["trail"], g.practitioner, operation, refused,
                         request.form.get("reason_code"), request.form.get("reason_text"),
                         source=request.remote_addr, request_id=g.request_id)


@pages.route("/child/reason", methods=["POST"])
@_practitioner_only
def child_reason():
    """Before a child's page: the reason for opening it."""
    return render_template("reason.html", handle=request.form.get("handle", ""), reasons=access.REASON_CODES,
                           label=request.form.get("label", ""))


@pages.route("/child", methods=["POST"])
@_practitioner_only
def child():
    me = g.practitioner
    _may_query(me)
    form = request.form
    try:
        on_behalf = _on_behalf(me)
        reason = access.Reason.checked(form.get("reason_code"), form.get("reason_text"))
    except access.ReadRefused as exc:
        _audit_refused_read("GetContacts", exc)
        return render_template("reason.html", handle=form.get("handle", ""), reasons=access.REASON_CODES,
                               label=form.get("label", ""), error=str(exc)), 400
    try:
        shown = access.view(_app()["engine"], _app()["trail"], _app()["settings"], _app()["roles"], me,
                            form.get("handle", ""), reason, session_hash=g.session_hash, source=request.remote_addr,
                            request_id=g.request_id, now=_now(), store=_app()["store"], on_behalf=on_behalf)
    except access.ReadRefused as exc:
        _audit_refused_read("GetContacts", exc)
        return render_template("error.html", title="Not now", message=f"Refused: {exc}."), _status(exc)
    if shown is None:
        abort(404)
    shield_roles = _app()["settings"].shield_roles
    withheld = shown.shielded and not (me.role in shield_roles and (
        on_behalf is None or on_behalf.role in {r.casefold() for r in shield_roles}))
    return render_template("child.html", child=shown, withheld=withheld, on_behalf=on_behalf)


# ---- user administration (one's own organisation only) ----------------------------------------------

def _rules():
    return _app()["roles"]


def _details(form) -> accounts.Details:
    def day(name: str) -> dt.date | None:
        value = (form.get(name) or "").strip()
        if not value:
            return None
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise PortalError(f"{name.replace('_', ' ')} must be a date (YYYY-MM-DD)") from None

    return accounts.Details(form.get("name", ""), form.get("role") or None, form.get("job_title", ""),
                            form.get("clearance_number") or None, day("clearance_date"), day("training_date"),
                            day("end_date"))


def _admin_change(operation: str, fn, *args, **kwargs):
    """An administrator's change in one transaction (audited by ``fn``); a refusal changes nothing, is
    audited, and is shown; another organisation's account is not found (404)."""
    me = g.practitioner
    try:
        with _app()["engine"].begin() as conn:
            return fn(conn, _app()["trail"], me, *args, **kwargs), None
    except (PortalError, LookupError) as exc:
        with _app()["engine"].begin() as conn:
            _app()["trail"].append(conn, audit.Entry(
                operation=operation, outcome="refused", org_code=me.org_code, user_id=me.user_id,
                role=accounts.ADMIN_ROLE, detail=f"refused: {exc}"))
        if isinstance(exc, LookupError):
            abort(404)
        return None, str(exc)


@pages.route("/admin/practitioners")
@_admin_only
def practitioners():
    me, settings, today = g.practitioner, _app()["settings"], _now().date()
    with _app()["engine"].connect() as conn:
        everyone = accounts.list_of(conn, me.org_code)
        roles = accounts.pending_roles(conn, me.org_code)
    rows = [(p, p.lapses_within(settings, today, LAPSING_DAYS), p.lapsed(settings, today)) for p in everyone]
    return render_template("practitioners.html", rows=rows, settings=settings, days=LAPSING_DAYS, roles=roles)


@pages.route("/admin/roles/<int:proposal_id>/approve", methods=["POST"])
@_admin_only
def role_approve(proposal_id: int):
    """A second administrator puts in force the role another proposed."""
    done, problem = _admin_change("portal.practitioner.role", accounts.approve_role, proposal_id, _now())
    flash(f"Not done: {problem}" if problem else f"{done.who} now has the role {done.role}.",
          "error" if problem else "ok")
    return redirect(url_for("pages.practitioners"))


def _role_choices() -> list[str]:
    rules = _rules()
    return sorted(rules.roles) if rules.configured else []


@pages.route("/admin/practitioners/new", methods=["GET", "POST"])
@_admin_only
def practitioner_new():
    if request.method == "GET":
        return render_template("practitioner_form.html", account=None, form={}, roles=_role_choices())
    form = request.form
    try:
        details = _details(form)
    except PortalError as exc:
        return render_template("practitioner_form.html", account=None, form=form, roles=_role_choices(),
                               error=str(exc)), 400
    made, problem = _admin_change("portal.practitioner.add", accounts.add, form.get("user", ""), details,
                                  rules=_rules(), now=_now())
    if problem is not None:
        return render_template("practitioner_form.html", account=None, form=form, roles=_role_choices(),
                               error=problem), 400
    account, code = made
    return render_template("invitation.html", account=account, code=code)


@pages.route("/admin/practitioners/<user_id>", methods=["GET", "POST"])
@_admin_only
def practitioner(user_id: str):
    me = g.practitioner
    with _app()["engine"].connect() as conn:
        account = accounts.get(conn, me.org_code, user_id)
    if account is None:
        _admin_change("portal.practitioner.show", _missing, user_id)
    if request.method == "POST":
        try:
            details = _details(request.form)
        except PortalError as exc:
            flash(f"Not changed: {exc}", "error")
            return redirect(url_for("pages.practitioner", user_id=account.user_id))
        changed, problem = _admin_change("portal.practitioner.change", accounts.change, account.user_id, details,
                                         rules=_rules(), now=_now())
        flash(f"Not changed: {problem}" if problem else f"Changed {account.who}.", "error" if problem else "ok")
        return redirect(url_for("pages.practitioner", user_id=account.user_id))
    settings, today = _app()["settings"], _now().date()
    with _app()["engine"].connect() as conn:
        proposed = [r for r in accounts.pending_roles(conn, me.org_code) if r.user_id == account.user_id]
    return render_template("practitioner.html", account=account, roles=_role_choices(),
                           lapsed=account.lapsed(settings, today), settings=settings, proposed=proposed)


def _missing(conn, trail, me, user_id):
    raise LookupError(f"{me.org_code} has no account {user_id!r}")


@pages.route("/admin/practitioners/<user_id>/disable", methods=["POST"])
@_admin_only
def practitioner_disable(user_id: str):
    done, problem = _admin_change("portal.practitioner.disable", accounts.disable, user_id,
                                  request.form.get("reason", ""), _now())
    flash(f"Not done: {problem}" if problem else f"Disabled {done.who}; their sessions have ended.",
          "error" if problem else "ok")
    return redirect(url_for("pages.practitioner", user_id=user_id))


@pages.route("/admin/practitioners/<user_id>/enable", methods=["POST"])
@_admin_only
def practitioner_enable(user_id: str):
    done, problem = _admin_change("portal.practitioner.enable", accounts.enable, user_id,
                                  request.form.get("reason", ""), _now())
    flash(f"Not done: {problem}" if problem else f"Enabled {done.who}.", "error" if problem else "ok")
    return redirect(url_for("pages.practitioner", user_id=user_id))


@pages.route("/admin/practitioners/<user_id>/reset", methods=["POST"])
@_admin_only
def practitioner_reset(user_id: str):
    code, problem = _admin_change("portal.practitioner.reset", accounts.reinvite, user_id, _now())
    if problem is not None:
        flash(f"Not done: {problem}", "error")
        return redirect(url_for("pages.practitioner", user_id=user_id))
    with _app()["engine"].connect() as conn:
        account = accounts.get(conn, g.practitioner.org_code, user_id)
    return render_template("invitation.html", account=account, code=code, reset=True)
