"""The portal's security-key pages (gateway.portal.security_keys): enrolling with a key, the key
step of signing in, registering a key when the organisation no longer accepts codes, a signed-in
practitioner's own keys, and an organisation's policy on authenticator-app codes.

Each ceremony is two requests: the first issues a challenge bound to this browser (a nonce in its
signed session cookie) and renders the options in a form; the portal's one script
(static/webauthn.js) asks the browser for the key and posts its answer back in that form, with the
form's CSRF token. Only those pages load the script, so only their Content-Security-Policy allows
``script-src 'self'``; every other page keeps the policy without script. Every outcome, accepted or
refused, is in the audit chain in the transaction that acts on it.

The key step of signing in is shown whatever the password (decoy_page): a wrong one is told only
after the key, as a wrong key is. Adding or removing a key needs a fresh confirmation with one of the
account's keys (/keys/confirm), not the session alone.

Who changes the code policy: codes off (stronger sign-in) is one user administrator's decision;
codes back on (weaker: a stolen password and a phone's codes suffice again) is proposed by one
administrator and approved by another of the same organisation (four-eyes, as a role is)."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select, update

from gateway import audit, officers, web
from gateway.db import portal_practitioners
from gateway.index import sealed
from gateway.portal import accounts, security_keys, views
from gateway.portal.accounts import ADMIN_ROLE, PortalError
from gateway.portal.security_keys import KeyRefused

keys = Blueprint("keys", __name__, static_folder="static", static_url_path="/keys/static")
my = Blueprint("my_keys", __name__)
my.before_request(views._signed_in)

BINDING = "webauthn"  # the session cookie's nonce binding this browser's challenges
SCRIPT_CSP = web.CSP.replace("default-src 'none';", "default-src 'none'; script-src 'self';")


def _app():
    return current_app.extensions["contactgate"]


def _rp() -> security_keys.RelyingParty:
    return _app()["relying_party"]


def _binding() -> str:
    if not session.get(BINDING):
        session[BINDING] = security_keys.new_binding()
    return session[BINDING]


def _ceremony_page(*, heading: str, intro: str, action: str, ceremony: str, options: str, button: str,
                   error: str | None = None, status: int = 200, intent: str | None = None):
    g.content_security_policy = SCRIPT_CSP
    return render_template("key_ceremony.html", heading=heading, intro=intro, action=action, ceremony=ceremony,
                           options=options, button=button, error=error, intent=intent), status


def _audit(conn, operation: str, org_code, user_id, role, detail: str, outcome: str = "done") -> None:
    _app()["trail"].append(conn, audit.Entry(operation=operation, outcome=outcome, org_code=org_code,
                                             user_id=user_id, role=role, detail=detail[:1000]))


def _account_row(conn, org_code: str, user_id: str):
    return conn.execute(select(portal_practitioners).where(portal_practitioners.c.org_code == org_code,
                                                           portal_practitioners.c.user_id == user_id)
                        .with_for_update()).first()


# ---- enrolling with a security key ----------------------------------------------------------------

def enrol_with_key_page(account: accounts.Practitioner, password: str):
    """After the invitation code and the chosen password: the key's registration. The password is
    hashed now and kept with the challenge (argon2id), set on the account once the key is registered."""
    try:
        officers.check_password(password)
    except officers.OfficerError as exc:
        return render_template("enrol.html", error=f"Enrolment not accepted: {exc}; start again with your invitation."), 400
    encoded = officers._HASHER.hash(password)
    with _app()["engine"].begin() as conn:
        challenge = security_keys.issue(conn, _binding(), "enrol", account.org_code, account.user_id, views._now(),
                                        password_hash=encoded)
    options = security_keys.registration_options(_rp(), account.org_code, account.user_id, account.name, challenge, [])
    return _ceremony_page(heading="Register your security key", action=url_for("keys.enrol_key_finish"),
                          intro=f"{account.name} ({account.who}): insert your security key (or use this device's "
                                f"passkey), press the button and touch the key when it flashes.",
                          ceremony="create", options=options, button="Register security key")


@keys.route("/enrol/key/start", methods=["POST"])
def enrol_key_start():
    """The invitation code (through the per-address gate); then the password, then the key. The
    authenticator-app secret is never shown on this path."""
    form = request.form
    checked, refused = views._gated("enrol.html", lambda: views._refusal_of(views._enrolment_secret, form))
    if refused is not None:
        return refused
    found, problem = checked
    if problem is not None:
        return render_template("enrol.html", error=f"Enrolment {problem}."), 401
    return render_template("enrol_key.html", account=found[0], invitation=form.get("invitation", ""))


@keys.route("/enrol/key", methods=["POST"])
def enrol_key():
    """From the enrolment page: the invitation (checked again, through the per-address gate) and the
    password chosen; then the key."""
    form = request.form
    if form.get("password", "") != form.get("password2", ""):
        return render_template("enrol.html", error="The two passwords differ: start again with your invitation."), 400
    checked, refused = views._gated("enrol.html", lambda: views._refusal_of(views._enrolment_secret, form))
    if refused is not None:
        return refused
    found, problem = checked
    if problem is not None:
        return render_template("enrol.html", error=f"Enrolment {problem}."), 401
    return enrol_with_key_page(found[0], form.get("password", ""))


@keys.route("/enrol/key/finish", methods=["POST"])
def enrol_key_finish():
    now, refused, done, ceremony = views._now(), None, None, None
    with _app()["engine"].begin() as conn:
        try:
            response, challenge = security_keys.parsed_response(request.form.get("credential", ""))
            ceremony = security_keys.take(conn, session.get(BINDING), "enrol", challenge, now)
            row = _account_row(conn, ceremony.org_code, ceremony.user_id)
            if (row is None or row.invitation_hash is None or row.disabled_at is not None
                    or accounts._aware(row.invitation_expires) < now
                    or views._org_refusal(conn, row.org_code) is not None):
                raise KeyRefused("Enrolment not accepted: start again with your invitation",
                                 "the invitation was spent, expired or withdrawn during the enrolment")
            verified = security_keys.verify_registration(_rp(), response, challenge)
            key = security_keys.store_key(conn, row.org_code, row.user_id, verified, request.form.get("label", ""), now)
            # Enrolled with a key: the authenticator secret shown with the invitation is replaced by one
            # never shown, so this account has no working code (codes are for those who enrol with them).
            secret = officers.new_totp_secret()
            conn.execute(update(portal_practitioners).where(
                portal_practitioners.c.org_code == row.org_code, portal_practitioners.c.user_id == row.user_id).values(
                password_hash=ceremony.password_hash, invitation_hash=None, invitation_expires=None,
                totp_last_step=None, updated_at=now,
                totp_secret=sealed.vault_of(conn).seal(secret, accounts.totp_context(row.org_code, row.user_id))))
            _audit(conn, "portal.enrol", row.org_code, row.user_id, row.role,
                   f"enrolled: password and security key {key.label!r} (key {key.id}, "
                   f"user verification {'yes' if key.user_verified else 'no'})")
            done = row
        except KeyRefused as exc:
            refused = exc
            # Against the account its ceremony names, when it got that far (`audit report --user` finds it).
            _audit(conn, "portal.enrol", ceremony and ceremony.org_code, ceremony and ceremony.user_id, None,
                   f"enrolment refused: {exc.why}", "refused")
    if refused is not None:
        return render_template("enrol.html", error=f"{refused}."), 400
    flash("You are enrolled: sign in with your password and your security key.", "ok")
    return redirect(url_for("auth.login"))


# ---- the key step of signing in --------------------------------------------------------------------

def next_step_page(result: accounts.SignIn):
    """The password was right: the key's sign-in, or (codes off, no key yet) its registration."""
    org_code, user_id = result.account
    with _app()["engine"].begin() as conn:
        challenge = security_keys.issue(conn, _binding(), "signin" if result.next_step == "key" else "upgrade",
                                        org_code, user_id, views._now())
        existing = [k.credential_id for k in security_keys.keys_of(conn, org_code, user_id)]
        account = accounts.get(conn, org_code, user_id)
    if result.next_step == "key":
        return _key_step_page(challenge, existing)
    return _ceremony_page(
        heading="Register a security key to continue", action=url_for("keys.login_register"), ceremony="create",
        intro=f"{org_code} no longer accepts codes from an authenticator app. Register a security key now: from "
              f"then on you sign in with your password and the key. Without a key you cannot sign in.",
        options=security_keys.registration_options(_rp(), org_code, user_id, account.name, challenge, existing),
        button="Register security key")


def _key_step_page(challenge: bytes, allowed: list[str]):
    return _ceremony_page(heading="Use your security key", action=url_for("keys.login_key"), ceremony="get",
                          intro="Insert your security key (or use this device's passkey), press the button and "
                                "touch the key when it flashes. If you sign in with a code from an authenticator "
                                "app instead, go back and enter it with your password.",
                          options=security_keys.authentication_options(_rp(), challenge, allowed),
                          button="Use security key")


def decoy_page(org_text: str, user_text: str):
    """The key step after a refused password step with no code (a wrong password, no such account, a
    lock): the same page as after the right password, so it tells a guesser nothing. It lists the
    account's own keys if it has any (as the real step does, whatever the password), else one
    made-up key id that is the same every time for that name; its challenge ("decoy") is refused at
    /login/key as a wrong key is, and audited."""
    org_code = (org_text or "").strip().upper()[:32]
    try:
        user_id = accounts.canonical_user(user_text)
    except PortalError:
        user_id = None
    with _app()["engine"].begin() as conn:
        allowed = [k.credential_id for k in security_keys.keys_of(conn, org_code, user_id)] if user_id else []
        challenge = security_keys.issue(conn, _binding(), "decoy", org_code or "-",
                                        user_id or (user_text or "").strip().lower()[:64] or "-", views._now())
    if not allowed:
        allowed = [security_keys.made_up_credential_id(current_app.secret_key, org_code,
                                                       user_id or (user_text or "").strip().lower())]
    return _key_step_page(challenge, allowed)


def _finish_sign_in(purpose: str):
    settings, now, refused, result = _app()["settings"], views._now(), None, None
    with _app()["engine"].begin() as conn:
        org_code = user_id = None
        try:
            response, challenge = security_keys.parsed_response(request.form.get("credential", ""))
            ceremony = security_keys.take(conn, session.get(BINDING), purpose, challenge, now,
                                          also=("decoy",) if purpose == "signin" else ())
            if ceremony.purpose == "decoy":  # counted at the password step already
                user_id = ceremony.user_id
                raise KeyRefused(_REFUSED, f"the key step after a refused password step ({ceremony.org_code}:"
                                           f"{ceremony.user_id}: a decoy, refused whatever the answer)")
            org_code, user_id = ceremony.org_code, ceremony.user_id
            row = _account_row(conn, org_code, user_id)
            if row is None or row.password_hash is None:
                raise KeyRefused(_REFUSED, "the account was reset during the sign-in")
            if row.code_locked_at is not None:
                raise KeyRefused(_REFUSED, "second step locked (until the user administrator resets the account)")
            if purpose == "signin":
                key = security_keys.check_assertion(conn, _rp(), org_code, user_id, response, challenge, now)
                said = f"signed in with password and security key {key.label!r} (key {key.id})"
            else:
                verified = security_keys.verify_registration(_rp(), response, challenge)
                key = security_keys.store_key(conn, org_code, user_id, verified, request.form.get("label", ""), now)
                _audit(conn, "portal.key.add", org_code, user_id, row.role or ADMIN_ROLE,
                       f"registered security key {key.label!r} (key {key.id}) at sign-in: {org_code} no longer "
                       f"accepts codes")
                said = f"signed in with password and code, and registered security key {key.label!r} (key {key.id})"
            practitioner = accounts._from_row(row)
            why = practitioner.lapsed(settings, now.date()) or views._org_refusal(conn, org_code)
            if why is not None:
                _audit(conn, "portal.login", org_code, user_id, None, f"sign-in refused: {why}", "refused")
                refused = f"Sign-in refused: {why}."
            else:
                conn.execute(update(portal_practitioners).where(
                    portal_practitioners.c.org_code == org_code, portal_practitioners.c.user_id == user_id)
                    .values(code_failures=0))
                result = accounts.open_session(conn, _app()["trail"], practitioner, settings, now, said)
        except KeyRefused as exc:
            note = accounts.count_code_failure(conn, org_code, user_id, now) if org_code else ""
            _audit(conn, "portal.login", org_code, user_id or "(unknown)", None,
                   f"sign-in refused at the security key: {exc.why}{note}", "refused")
            refused = str(exc)
    if result is None:
        return render_template("login.html", error=refused), 401
    return views.signed_in_answer(result)


_REFUSED = "Sign-in refused: the security key was not accepted."


@keys.route("/login/key", methods=["POST"])
def login_key():
    return _finish_sign_in("signin")


@keys.route("/login/register", methods=["POST"])
def login_register():
    return _finish_sign_in("upgrade")


# ---- a practitioner's own keys ---------------------------------------------------------------------------

@my.route("/keys")
def my_keys():
    me = g.practitioner
    with _app()["engine"].connect() as conn:
        listed = security_keys.keys_of(conn, me.org_code, me.user_id)
    return render_template("keys.html", keys=listed)


# Adding or removing a key needs a fresh second factor in this session, not the session alone: a
# stolen session cookie (an unlocked desk, a copied cookie) must not register its thief's key (a
# takeover lasting past the session) nor remove the owner's. One of the account's keys confirms it (or,
# for an account with no key yet, a code where the organisation still accepts codes); the
# confirmation is good for FRESH_SECONDS in this session only (the signed session cookie holds it,
# bound to the session's token).
FRESH = "key_confirmed"
FRESH_SECONDS = 300


def _is_fresh() -> bool:
    mark = session.get(FRESH)
    if not isinstance(mark, dict) or mark.get("session") != g.session_hash:
        return False
    return 0 <= views._now().timestamp() - float(mark.get("at", 0)) < FRESH_SECONDS


def _mark_fresh() -> None:
    session[FRESH] = {"session": g.session_hash, "at": views._now().timestamp()}


def _confirm_page(intent: str):
    """Confirm with one of the account's keys (or a code, for an account without one) before ``intent``."""
    me = g.practitioner
    with _app()["engine"].begin() as conn:
        existing = [k.credential_id for k in security_keys.keys_of(conn, me.org_code, me.user_id)]
        codes = security_keys.code_policy(conn, me.org_code).totp_allowed
        challenge = security_keys.issue(conn, _binding(), "confirm", me.org_code, me.user_id,
                                        views._now()) if existing else None
    if not existing:
        return render_template("confirm_code.html", intent=intent, codes=codes)
    return _ceremony_page(heading="Confirm with your security key", action=url_for("my_keys.confirm"), ceremony="get",
                          intro="Changing your security keys needs one of your keys now, not only this signed-in "
                                "session: insert it (or use this device's passkey), press the button and touch it.",
                          options=security_keys.authentication_options(_rp(), challenge, existing),
                          button="Confirm with security key", intent=intent)


def _then(intent: str):
    """After a confirmation: what it was for."""
    if intent.startswith("remove:") and intent[7:].isdigit():
        return _remove(int(intent[7:]))
    if intent == "add":
        return _add_page()
    return redirect(url_for("my_keys.my_keys"))


def _confirmed(me, detail: str) -> None:
    _mark_fresh()
    with _app()["engine"].begin() as conn:
        conn.execute(update(portal_practitioners).where(
            portal_practitioners.c.org_code == me.org_code, portal_practitioners.c.user_id == me.user_id)
            .values(code_failures=0))
        _audit(conn, "portal.key.confirm", me.org_code, me.user_id, me.role or ADMIN_ROLE, detail)


@my.route("/keys/confirm", methods=["POST"])
def confirm():
    me, now, refused = g.practitioner, views._now(), None
    with _app()["engine"].begin() as conn:
        try:
            response, challenge = security_keys.parsed_response(request.form.get("credential", ""))
            ceremony = security_keys.take(conn, session.get(BINDING), "confirm", challenge, now)
            if (ceremony.org_code, ceremony.user_id) != (me.org_code, me.user_id):
                raise KeyRefused(_AGAIN, f"challenge issued to {ceremony.org_code}:{ceremony.user_id}")
            row = _account_row(conn, me.org_code, me.user_id)
            if row is None or row.code_locked_at is not None:
                raise KeyRefused(_AGAIN, "second step locked (until the user administrator resets the account)")
            key = security_keys.check_assertion(conn, _rp(), me.org_code, me.user_id, response, challenge, now)
        except KeyRefused as exc:
            note = accounts.count_code_failure(conn, me.org_code, me.user_id, now)
            _audit(conn, "portal.key.confirm", me.org_code, me.user_id, me.role or ADMIN_ROLE,
                   f"refused: {exc.why}{note}", "refused")
            refused = exc
    if refused is not None:
        flash(f"Not confirmed: {refused}.", "error")
        return redirect(url_for("my_keys.my_keys"))
    _confirmed(me, f"confirmed with security key {key.label!r} (key {key.id}) to change the account's keys")
    return _then(request.form.get("intent", ""))


@my.route("/keys/confirm-code", methods=["POST"])
def confirm_code():
    """An account without a key confirms with a code, where its organisation still accepts codes."""
    me, now, why = g.practitioner, views._now(), None
    with _app()["engine"].begin() as conn:
        row = _account_row(conn, me.org_code, me.user_id)
        if not security_keys.code_policy(conn, me.org_code).totp_allowed:
            why = "codes are not accepted by the organisation"
        elif row is None or row.code_locked_at is not None:
            why = "second step locked (until the user administrator resets the account)"
        else:
            secret = sealed.vault_of(conn).open(row.totp_secret, accounts.totp_context(me.org_code, me.user_id))
            step = officers._matching_step(secret, request.form.get("code", "").strip(), now)
            if step is None or (row.totp_last_step is not None and step <= row.totp_last_step):
                why = ("code already used" if step is not None else "wrong code") + accounts.count_code_failure(
                    conn, me.org_code, me.user_id, now)
            else:
                conn.execute(update(portal_practitioners).where(
                    portal_practitioners.c.org_code == me.org_code, portal_practitioners.c.user_id == me.user_id)
                    .values(totp_last_step=step))
        if why is not None:
            _audit(conn, "portal.key.confirm", me.org_code, me.user_id, me.role or ADMIN_ROLE, f"refused: {why}",
                   "refused")
    if why is not None:
        flash("Not confirmed: the code was not accepted.", "error")
        return redirect(url_for("my_keys.my_keys"))
    _confirmed(me, "confirmed with a code from the authenticator app to change the account's keys")
    return _then(request.form.get("intent", ""))


_AGAIN = "the security key's answer was not accepted: start again"


def _add_page():
    me = g.practitioner
    with _app()["engine"].begin() as conn:
        challenge = security_keys.issue(conn, _binding(), "add", me.org_code, me.user_id, views._now())
        existing = [k.credential_id for k in security_keys.keys_of(conn, me.org_code, me.user_id)]
    return _ceremony_page(heading="Add a security key", action=url_for("my_keys.add_key_finish"), ceremony="create",
                          intro="Insert the new key (or use this device's passkey), name it, press the button and "
                                "touch the key when it flashes.",
                          options=security_keys.registration_options(_rp(), me.org_code, me.user_id, me.name,
                                                                     challenge, existing),
                          button="Register security key")


@my.route("/keys/add", methods=["POST"])
def add_key():
    return _add_page() if _is_fresh() else _confirm_page("add")


@my.route("/keys/add/finish", methods=["POST"])
def add_key_finish():
    me, now = g.practitioner, views._now()
    with _app()["engine"].begin() as conn:
        try:
            response, challenge = security_keys.parsed_response(request.form.get("credential", ""))
            ceremony = security_keys.take(conn, session.get(BINDING), "add", challenge, now)
            if (ceremony.org_code, ceremony.user_id) != (me.org_code, me.user_id):
                raise KeyRefused(_AGAIN, f"challenge issued to {ceremony.org_code}:{ceremony.user_id}")
            if not _is_fresh():
                raise KeyRefused("confirm with one of your keys first", "no fresh second factor in this session")
            verified = security_keys.verify_registration(_rp(), response, challenge)
            key = security_keys.store_key(conn, me.org_code, me.user_id, verified, request.form.get("label", ""), now)
            _audit(conn, "portal.key.add", me.org_code, me.user_id, me.role or ADMIN_ROLE,
                   f"added security key {key.label!r} (key {key.id}, user verification "
                   f"{'yes' if key.user_verified else 'no'})")
            flash(f"Added the security key {key.label!r}.", "ok")
        except KeyRefused as exc:
            _audit(conn, "portal.key.add", me.org_code, me.user_id, me.role or ADMIN_ROLE,
                   f"refused: {exc.why}", "refused")
            flash(f"Not added: {exc}.", "error")
    return redirect(url_for("my_keys.my_keys"))


@my.route("/keys/<int:key_id>/remove", methods=["POST"])
def remove_key(key_id: int):
    return _remove(key_id) if _is_fresh() else _confirm_page(f"remove:{key_id}")


def _remove(key_id: int):
    me = g.practitioner
    with _app()["engine"].begin() as conn:
        try:
            key = security_keys.remove_key(conn, me.org_code, me.user_id, key_id)
            _audit(conn, "portal.key.remove", me.org_code, me.user_id, me.role or ADMIN_ROLE,
                   f"removed security key {key.label!r} (key {key.id})")
            flash(f"Removed the security key {key.label!r}.", "ok")
        except (KeyRefused, LookupError) as exc:
            _audit(conn, "portal.key.remove", me.org_code, me.user_id, me.role or ADMIN_ROLE,
                   f"refused: {getattr(exc, 'why', exc)}", "refused")
            flash(f"Not removed: {exc if isinstance(exc, KeyRefused) else 'no such key of yours'}.", "error")
    return redirect(url_for("my_keys.my_keys"))


# ---- the organisation's policy on codes (its user administrators) --------------------------------------

@my.route("/admin/sign-in")
@views._admin_only
def sign_in_policy():
    with _app()["engine"].connect() as conn:
        policy = security_keys.code_policy(conn, g.practitioner.org_code)
    return render_template("sign_in_policy.html", policy=policy)


def _policy_change(fn, done: str):
    me = g.practitioner
    with _app()["engine"].begin() as conn:
        try:
            fn(conn, me.org_code, me.who, views._now())
            _audit(conn, "portal.signin_policy", me.org_code, me.user_id, ADMIN_ROLE, done,
                   "proposed" if fn is security_keys.propose_codes_on else "done")
            flash(done[0].upper() + done[1:] + ".", "ok")
        except PortalError as exc:
            _audit(conn, "portal.signin_policy", me.org_code, me.user_id, ADMIN_ROLE, f"refused: {exc}", "refused")
            flash(f"Not done: {exc}.", "error")
    return redirect(url_for("my_keys.sign_in_policy"))


@my.route("/admin/sign-in/codes-off", methods=["POST"])
@views._admin_only
def codes_off():
    return _policy_change(security_keys.turn_codes_off,
                          f"codes from authenticator apps no longer accepted for {g.practitioner.org_code}")


@my.route("/admin/sign-in/codes-on", methods=["POST"])
@views._admin_only
def codes_on_propose():
    return _policy_change(security_keys.propose_codes_on,
                          "proposed accepting codes from authenticator apps again: a second administrator approves")


@my.route("/admin/sign-in/codes-on/approve", methods=["POST"])
@views._admin_only
def codes_on_approve():
    return _policy_change(security_keys.approve_codes_on,
                          f"codes from authenticator apps accepted again for {g.practitioner.org_code}")
