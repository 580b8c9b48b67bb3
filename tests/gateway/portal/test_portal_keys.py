"""Security keys at the portal over HTTPS (issue 26 item 3), on each backend, against the module's
`contactgate portal` (conftest.py), answered by a key in software (soft_key.py) speaking WebAuthn as
a browser would; the browser itself, with Chromium's virtual authenticator, is in
test_portal_keys_browser.py. Each test's organisation is its own (KEYS…), accredited for queries,
so that turning its codes off touches no other test."""

from __future__ import annotations

import datetime as dt
import html
import re
import secrets

import pyotp
import pytest
import requests
from sqlalchemy import select

from gateway.db import portal_webauthn_credentials
from tests.gateway.portal.conftest import CSRF, INVITATION, Account, appoint_admin, enrol_in_process
from tests.gateway.portal.soft_key import SoftKey, page_options
from tests.support import unique

TODAY = dt.date.today()


class KeyOrg:
    """An organisation of these tests: its two user administrators' sessions."""

    def __init__(self, portal, gateway):
        self.portal, self.gateway = portal, gateway
        self.code = f"KEYS{secrets.token_hex(3).upper()}"
        gateway.add_org(self.code, "health", ["query"])
        self.admins = []
        for n in (1, 2):
            admin = Account(self.code, unique(f"keys.admin{n}.").lower())
            enrol_in_process(gateway, admin, appoint_admin(gateway, self.code, admin.user))
            self.admins.append(portal.sign_in(admin)[0])

    def invite(self, user: str) -> str:
        """A health visitor added by the first administrator, the role approved by the second; the
        invitation code."""
        first, second = self.admins
        made = self.portal.post(first, "/admin/practitioners/new", {
            "user": user, "name": f"Practitioner {user}", "role": "health visitor", "job_title": "Health visitor",
            "clearance_number": "001234567890", "clearance_date": TODAY.isoformat(),
            "training_date": TODAY.isoformat(), "end_date": ""}, csrf_from="/admin/practitioners/new")
        assert made.status_code == 200, made.text
        listed = second.get(f"{self.portal.url}/admin/practitioners", timeout=15).text
        proposal = re.search(rf"{self.code}:{re.escape(user)}\b.*?/admin/roles/(\d+)/approve", listed, re.S).group(1)
        approved = self.portal.post(second, f"/admin/roles/{proposal}/approve", {}, csrf_from="/admin/practitioners")
        assert "now has the role" in approved.text, approved.text
        return INVITATION.search(made.text).group(1)


@pytest.fixture(scope="module")
def org(portal, gateway):
    return KeyOrg(portal, gateway)


def _key(portal) -> SoftKey:
    """A key answering for the portal's origin: https://localhost:PORT (its default public URL)."""
    return SoftKey(f"https://localhost:{portal.url.rsplit(':', 1)[1]}")


def _token(page: str) -> str:
    return CSRF.search(page).group(1)


def enrol_with_key(portal, account: Account, invitation: str, key: SoftKey) -> requests.Response:
    s = portal.session()
    start = portal.post(s, "/enrol/key/start", {"org": account.org, "user": account.user, "invitation": invitation},
                        csrf_from="/enrol")
    assert start.status_code == 200 and "Choose your password" in start.text, start.text
    ceremony = portal.post(s, "/enrol/key", {"org": account.org, "user": account.user, "invitation": invitation,
                                             "password": account.password, "password2": account.password},
                           token=_token(start.text))
    assert ceremony.status_code == 200 and "Register your security key" in ceremony.text, ceremony.text
    return portal.post(s, "/enrol/key/finish", {"credential": key.register(page_options(ceremony.text)),
                                                "label": "Blue key"}, token=_token(ceremony.text))


def confirmed(portal, session: requests.Session, key: SoftKey, page: requests.Response) -> requests.Response:
    """Past the confirmation with one of the account's keys that adding or removing a key asks for."""
    assert "Confirm with your security key" in page.text, page.text
    return portal.post(session, "/keys/confirm", {"credential": key.assertion(page_options(page.text)),
                                                  "intent": _intent(page.text)}, token=_token(page.text))


def _intent(page: str) -> str:
    """What a confirmation page's form says it is for (its hidden field, sent back as a browser does)."""
    return INTENT.search(page).group(1)


INTENT = re.compile(r'name="intent" value="([^"]*)"')


def password_step(portal, account: Account, session: requests.Session | None = None):
    """(the session, the key step's page) after the right password and no code."""
    s = session or portal.session()
    step = portal.post(s, "/login", {"org": account.org, "user": account.user, "password": account.password,
                                     "code": ""}, csrf_from="/login")
    assert step.status_code == 200 and "Use your security key" in step.text, step.text
    return s, step


def sign_in_with_key(portal, account: Account, key: SoftKey, **answer):
    s, step = password_step(portal, account)
    credential = key.assertion(page_options(step.text), **answer)
    return s, portal.post(s, "/login/key", {"credential": credential}, token=_token(step.text)), credential


def _refusals(gateway, seq: int, user: str) -> list[str]:
    return [e["detail"] for e in gateway.audit_entries_after(seq)
            if e["operation"] == "portal.login" and e["outcome"] == "refused" and e["user_id"] == user]


def test_a_practitioner_enrols_a_security_key_with_the_invitation_and_signs_in_with_password_and_key(
        portal, gateway, org):
    from gateway.portal import CSP

    account, key = Account(org.code, unique("hv.key.").lower()), _key(portal)
    seq = gateway.audit_seq()
    enrolled = enrol_with_key(portal, account, org.invite(account.user), key)
    assert enrolled.status_code == 200 and "You are enrolled" in enrolled.text, enrolled.text
    again = portal.post(portal.session(), "/enrol/key/start", {"org": account.org, "user": account.user,
                                                                "invitation": "x" * 22}, csrf_from="/enrol")
    assert again.status_code == 401  # the invitation is spent (and that one was never it)

    session, step = password_step(portal, account)
    # Only the key pages may run script, and only the portal's own file.
    assert step.headers["Content-Security-Policy"] == CSP.replace("default-src 'none';",
                                                                  "default-src 'none'; script-src 'self';")
    assert "unsafe-inline" not in step.headers["Content-Security-Policy"]
    assert not re.search(r"<script(?![^>]*\bsrc=\"/keys/static/webauthn\.js\")", step.text)
    script = session.get(f"{portal.url}/keys/static/webauthn.js", timeout=15)
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    signed_in = portal.post(session, "/login/key", {"credential": key.assertion(page_options(step.text))},
                            token=_token(step.text))
    assert signed_in.status_code == 200 and "Sign out" in signed_in.text, signed_in.text
    assert signed_in.headers["Content-Security-Policy"] == CSP  # the search page: no script
    keys = session.get(f"{portal.url}/keys", timeout=15)
    assert "Blue key" in keys.text and "script-src" not in keys.headers["Content-Security-Policy"]

    entries = [(e["operation"], e["outcome"], e["detail"]) for e in gateway.audit_entries_after(seq)
               if e["user_id"] == account.user]
    assert ("portal.enrol", "done") == entries[0][:2] and "security key 'Blue key'" in entries[0][2]
    assert [e[:2] for e in entries[-1:]] == [("portal.login", "done")]
    assert "signed in with password and security key 'Blue key'" in entries[-1][2]
    with gateway.engine.connect() as conn:  # sealed, and to this account only
        row = conn.execute(select(portal_webauthn_credentials).where(
            portal_webauthn_credentials.c.user_id == account.user)).one()
    assert row.org_code == org.code and row.credential_id == key.id and row.sign_count == 1


def test_a_replayed_answer_another_browsers_challenge_another_accounts_key_and_a_bad_signature_are_refused(
        portal, gateway, org):
    account, key = Account(org.code, unique("hv.replay.").lower()), _key(portal)
    other, other_key = Account(org.code, unique("hv.other.").lower()), _key(portal)
    for who, its_key in ((account, key), (other, other_key)):
        assert "You are enrolled" in enrol_with_key(portal, who, org.invite(who.user), its_key).text
    seq = gateway.audit_seq()
    _, answer, used = sign_in_with_key(portal, account, key)
    assert "Sign out" in answer.text

    s, step = password_step(portal, account)  # the same answer again, in a new sign-in
    replayed = portal.post(s, "/login/key", {"credential": used}, token=_token(step.text))
    assert replayed.status_code == 401 and "not accepted" in replayed.text

    first, first_step = password_step(portal, account)  # a challenge shown to another browser
    second, second_step = password_step(portal, account)
    crossed = portal.post(second, "/login/key", {"credential": key.assertion(page_options(first_step.text))},
                          token=_token(second_step.text))
    assert crossed.status_code == 401 and "Sign out" not in crossed.text
    late = portal.post(first, "/login/key", {"credential": key.assertion(page_options(first_step.text))},
                       token=_token(first_step.text))
    assert late.status_code == 401  # spent by the attempt in the other browser

    s, step = password_step(portal, account)  # another account's key, over this account's challenge
    wrong = portal.post(s, "/login/key", {"credential": other_key.assertion(page_options(step.text))},
                        token=_token(step.text))
    assert wrong.status_code == 401 and "not accepted" in wrong.text
    _, forged, _ = sign_in_with_key(portal, account, key, bad_signature=True)
    assert forged.status_code == 401
    _, fine, _ = sign_in_with_key(portal, account, key)
    assert "Sign out" in fine.text
    refusals = _refusals(gateway, seq, account.user) + _refusals(gateway, seq, "(unknown)")
    for said in ("challenge unknown or already used", "challenge issued to another browser session",
                 "a key not registered to this account", "Could not verify authentication signature"):
        assert [r for r in refusals if said in r], (said, refusals)


def test_a_practitioner_adds_a_second_key_and_removes_one_but_never_the_last(portal, gateway, org):
    account, key, spare = Account(org.code, unique("hv.two.").lower()), _key(portal), _key(portal)
    enrol_with_key(portal, account, org.invite(account.user), key)
    session, _, _ = sign_in_with_key(portal, account, key)
    ceremony = confirmed(portal, session, key, portal.post(session, "/keys/add", {}, csrf_from="/keys"))
    assert "<h1>Add a security key</h1>" in ceremony.text and "script-src 'self'" in ceremony.headers["Content-Security-Policy"]
    added = portal.post(session, "/keys/add/finish", {"credential": spare.register(page_options(ceremony.text)),
                                                      "label": "Spare key"}, token=_token(ceremony.text))
    assert "Added the security key" in added.text and "Spare key" in added.text and "Blue key" in added.text
    twice = portal.post(session, "/keys/add", {}, csrf_from="/keys")
    refused = portal.post(session, "/keys/add/finish", {"credential": spare.register(page_options(twice.text))},
                          token=_token(twice.text))
    assert "Not added" in refused.text  # the same key twice: excluded, and refused if sent anyway
    with gateway.engine.connect() as conn:
        ids = dict(conn.execute(select(portal_webauthn_credentials.c.label, portal_webauthn_credentials.c.id).where(
            portal_webauthn_credentials.c.user_id == account.user)).all())
    removed = portal.post(session, f"/keys/{ids['Blue key']}/remove", {}, csrf_from="/keys")
    assert "Removed the security key 'Blue key'" in html.unescape(removed.text)
    last = portal.post(session, f"/keys/{ids['Spare key']}/remove", {}, csrf_from="/keys")
    assert "Not removed" in last.text and "only security key" in last.text
    _, gone, _ = sign_in_with_key(portal, account, key)
    assert gone.status_code == 401
    _, fine, _ = sign_in_with_key(portal, account, spare)
    assert "Sign out" in fine.text
    operations = [(e["operation"], e["outcome"]) for e in gateway.audit_entries_after(0)
                  if e["user_id"] == account.user and e["operation"].startswith("portal.key.")]
    assert operations == [("portal.key.confirm", "done"), ("portal.key.add", "done"), ("portal.key.add", "refused"), ("portal.key.remove", "done"),
                          ("portal.key.remove", "refused")]


def test_an_organisation_that_stops_accepting_codes_refuses_them_and_a_code_only_account_registers_a_key(
        portal, gateway, org):
    first, second = org.admins
    code_only = Account(org.code, unique("hv.codes.").lower())
    # Enrolled a minute ago (its clock set back): the three codes below (accepted, then the step that
    # asks for a key, then refused) are the previous, this and the next step's, with no wait for a fourth.
    enrol_in_process(gateway, code_only, org.invite(code_only.user), ago=60)
    portal.sign_in(code_only, code=code_only.code(earliest=True))  # codes accepted
    seq = gateway.audit_seq()
    off = portal.post(first, "/admin/sign-in/codes-off", {}, csrf_from="/admin/sign-in")
    assert "no longer accepted" in off.text and "not accepted" in off.text
    try:
        s, step = portal.sign_in(code_only, expect_ok=False)
        assert step.status_code == 200 and "Register a security key to continue" in step.text
        assert s.get(f"{portal.url}/", timeout=15).url.endswith("/login")  # no session until it is registered
        key = _key(portal)
        registered = portal.post(s, "/login/register", {"credential": key.register(page_options(step.text)),
                                                         "label": "New key"}, token=_token(step.text))
        assert "Sign out" in registered.text, registered.text
        _, refused = portal.sign_in(code_only, expect_ok=False)
        assert refused.status_code == 403 and "no longer accepts codes" in refused.text
        _, fine, _ = sign_in_with_key(portal, code_only, key)
        assert "Sign out" in fine.text
        newcomer = Account(org.code, unique("hv.late.").lower())
        codes_page = portal.post(portal.session(), "/enrol", {"org": org.code, "user": newcomer.user,
                                                              "invitation": org.invite(newcomer.user)}, csrf_from="/enrol")
        assert codes_page.status_code == 400 and "accepts security keys only" in codes_page.text
        assert "totp-secret" not in codes_page.text  # enrolling with codes is not offered, its secret not shown

        # Codes back on weakens sign-in: one administrator proposes, another approves.
        proposed = portal.post(first, "/admin/sign-in/codes-on", {}, csrf_from="/admin/sign-in")
        assert "second administrator approves" in proposed.text
        own = portal.post(first, "/admin/sign-in/codes-on/approve", {}, csrf_from="/admin/sign-in")
        assert "Not done" in own.text and "not accepted" in own.text
    finally:
        approved = portal.post(second, "/admin/sign-in/codes-on/approve", {}, csrf_from="/admin/sign-in")
    assert "accepted again" in approved.text and "Codes from an authenticator app are <strong>accepted" in approved.text
    policy = [(e["outcome"], e["detail"]) for e in gateway.audit_entries_after(seq)
              if e["operation"] == "portal.signin_policy"]
    assert [p[0] for p in policy] == ["done", "proposed", "refused", "done"]
    registered_entry = [e for e in gateway.audit_entries_after(seq)
                        if e["operation"] == "portal.key.add" and e["user_id"] == code_only.user]
    assert registered_entry and "no longer accepts codes" in registered_entry[0]["detail"]


def test_a_reset_by_the_user_administrator_removes_the_keys_and_issues_a_new_invitation(portal, gateway, org):
    account, key, new_key = Account(org.code, unique("hv.reset.").lower()), _key(portal), _key(portal)
    enrol_with_key(portal, account, org.invite(account.user), key)
    session, _, _ = sign_in_with_key(portal, account, key)
    page = f"/admin/practitioners/{account.user}"
    reset = portal.post(org.admins[0], f"{page}/reset", {}, csrf_from=page)
    invitation = INVITATION.search(reset.text).group(1)
    assert session.get(f"{portal.url}/", timeout=15).url.endswith("/login")  # the open session ended
    with gateway.engine.connect() as conn:
        assert not conn.execute(select(portal_webauthn_credentials).where(
            portal_webauthn_credentials.c.user_id == account.user)).all()
    s, step = _key_step(portal, account.org, account.user, account.password)  # a key step, but a decoy
    refused = portal.post(s, "/login/key", {"credential": key.assertion(page_options(step.text))},
                          token=_token(step.text))
    assert refused.status_code == 401 and "Sign out" not in refused.text
    assert "You are enrolled" in enrol_with_key(portal, account, invitation, new_key).text
    _, fine, _ = sign_in_with_key(portal, account, new_key)
    assert "Sign out" in fine.text
    [entry] = [e for e in gateway.audit_entries_after(0) if e["operation"] == "portal.practitioner.reset"
               and account.user in e["detail"]]
    assert "security keys cleared" in entry["detail"]


def _stored(gateway, key: SoftKey):
    with gateway.engine.connect() as conn:
        return conn.execute(select(portal_webauthn_credentials.c.id).where(
            portal_webauthn_credentials.c.credential_id == key.id)).first()


def test_a_stolen_session_can_neither_add_nor_remove_a_key_without_one_of_the_accounts_keys(portal, gateway, org):
    account, key, spare, thief = (Account(org.code, unique("hv.steal.").lower()), _key(portal), _key(portal),
                                  _key(portal))
    enrol_with_key(portal, account, org.invite(account.user), key)
    stolen, _, _ = sign_in_with_key(portal, account, key)  # the thief holds this session, not the key
    for answer_with in (lambda o: thief.register({**o, "rp": {"id": "localhost"}}), thief.assertion):
        ceremony = portal.post(stolen, "/keys/add", {}, csrf_from="/keys")
        assert "Confirm with your security key" in ceremony.text, ceremony.text
        options = page_options(ceremony.text)
        assert [c["id"] for c in options.get("allowCredentials", [])] == [key.id]  # an assertion, not a registration
        portal.post(stolen, "/keys/confirm", {"credential": answer_with(options), "intent": _intent(ceremony.text)},
                    token=_token(ceremony.text))
        again = portal.post(stolen, "/keys/add", {}, csrf_from="/keys")
        assert "Confirm with your security key" in again.text
        portal.post(stolen, "/keys/add/finish", {"credential": thief.register({**page_options(again.text),
                                                                               "rp": {"id": "localhost"}})},
                    token=_token(again.text))
    assert _stored(gateway, thief) is None

    # The owner confirms with the key, then adds a spare; the thief, later, cannot remove either.
    added = confirmed(portal, stolen, key, portal.post(stolen, "/keys/add", {}, csrf_from="/keys"))
    assert "<h1>Add a security key</h1>" in added.text, added.text
    portal.post(stolen, "/keys/add/finish", {"credential": spare.register(page_options(added.text))},
                token=_token(added.text))
    spare_id = _stored(gateway, spare).id
    later, _, _ = sign_in_with_key(portal, account, key)
    removing = portal.post(later, f"/keys/{spare_id}/remove", {}, csrf_from="/keys")
    assert "Confirm with your security key" in removing.text
    assert _stored(gateway, spare) is not None
    refused = [e["detail"] for e in gateway.audit_entries_after(0)
               if e["user_id"] == account.user and e["operation"] == "portal.key.confirm" and e["outcome"] == "refused"]
    assert len(refused) == 2, refused


def _key_step(portal, org_code: str, user: str, password: str, session=None):
    s = session or portal.session()
    page = portal.post(s, "/login", {"org": org_code, "user": user, "password": password, "code": ""},
                       csrf_from="/login")
    return s, page


def test_the_key_step_does_not_tell_whether_the_password_was_right(portal, gateway, org):
    account, key = Account(org.code, unique("hv.oracle.").lower()), _key(portal)
    enrol_with_key(portal, account, org.invite(account.user), key)
    code_only = Account(org.code, unique("hv.oracle.codes.").lower())
    enrol_in_process(gateway, code_only, org.invite(code_only.user))
    nobody = unique("hv.nobody.").lower()
    seq = gateway.audit_seq()
    pages = {}
    for name, (user, password) in {"right": (account.user, account.password), "wrong": (account.user, "x" * 16),
                                   "codes right": (code_only.user, code_only.password),
                                   "codes wrong": (code_only.user, "x" * 16), "nobody": (nobody, "x" * 16)}.items():
        s, page = _key_step(portal, org.code, user, password)
        pages[name] = (s, page)
        assert (page.status_code, "Use your security key" in page.text) == (200, True), (name, page.text)
    ids = {name: [c["id"] for c in page_options(page.text)["allowCredentials"]] for name, (_, page) in pages.items()}
    assert ids["right"] == ids["wrong"] == [key.id]
    assert ids["codes right"] == ids["codes wrong"] and ids["codes right"]
    assert ids["nobody"] == [c["id"] for c in page_options(_key_step(portal, org.code, nobody, "y" * 16)[1].text)[
        "allowCredentials"]]  # the same every time, as a real account's

    # Answered with the owner's own key, the step after a wrong password is refused as a wrong key is.
    s, page = pages["wrong"]
    decoy = portal.post(s, "/login/key", {"credential": key.assertion(page_options(page.text))}, token=_token(page.text))
    s, page = pages["nobody"]
    stranger = portal.post(s, "/login/key", {"credential": key.assertion(page_options(page.text))},
                           token=_token(page.text))
    s, page = pages["right"]
    wrong_key = portal.post(s, "/login/key", {"credential": _key(portal).assertion(page_options(page.text))},
                            token=_token(page.text))
    for answer in (decoy, stranger):
        assert (answer.status_code, _said(answer.text)) == (wrong_key.status_code, _said(wrong_key.text)) == (
            401, "Sign-in refused: the security key was not accepted."), answer.text
    refusals = _refusals(gateway, seq, account.user)
    assert [r for r in refusals if "wrong password" in r] and [r for r in refusals if "decoy" in r], refusals
    _, fine, _ = sign_in_with_key(portal, account, key)
    assert "Sign out" in fine.text


def _said(page: str) -> str:
    found = re.search(r'role="alert">([^<]*)<', page)
    return html.unescape(found.group(1)).strip() if found else ""


def test_an_invitation_enrols_once_even_when_two_browsers_answer_it(portal, gateway, org):
    account, first_key, second_key = Account(org.code, unique("hv.twice.").lower()), _key(portal), _key(portal)
    invitation = org.invite(account.user)
    ceremonies = []
    for password in (account.password, "a second password, another browser"):
        s = portal.session()
        start = portal.post(s, "/enrol/key/start", {"org": account.org, "user": account.user, "invitation": invitation},
                            csrf_from="/enrol")
        ceremony = portal.post(s, "/enrol/key", {"org": account.org, "user": account.user, "invitation": invitation,
                                                 "password": password, "password2": password}, token=_token(start.text))
        assert "Register your security key" in ceremony.text, ceremony.text
        ceremonies.append((s, ceremony))
    seq = gateway.audit_seq()
    answers = [portal.post(s, "/enrol/key/finish", {"credential": key.register(page_options(page.text))},
                           token=_token(page.text)) for (s, page), key in zip(ceremonies, (first_key, second_key))]
    assert "You are enrolled" in answers[0].text and answers[1].status_code == 400, answers[1].text
    assert _stored(gateway, second_key) is None  # no second key, and the first password stands
    again = portal.post(portal.session(), "/enrol/key/start", {"org": account.org, "user": account.user,
                                                                "invitation": invitation}, csrf_from="/enrol")
    assert again.status_code == 401  # the invitation itself, spent
    assert [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.enrol"
            and e["outcome"] == "refused" and "spent" in e["detail"]]
    _, fine, _ = sign_in_with_key(portal, account, first_key)
    assert "Sign out" in fine.text


def test_enrolling_with_a_code_where_codes_are_off_is_refused_and_audited(portal, gateway, org):
    first, second = org.admins
    newcomer = Account(org.code, unique("hv.nocodes.").lower())
    invitation = org.invite(newcomer.user)
    portal.post(first, "/admin/sign-in/codes-off", {}, csrf_from="/admin/sign-in")
    try:
        seq = gateway.audit_seq()
        answer = portal.post(portal.session(), "/enrol/finish", {
            "org": org.code, "user": newcomer.user, "invitation": invitation, "password": newcomer.password,
            "password2": newcomer.password, "code": "123456"}, csrf_from="/enrol")
        assert answer.status_code == 400 and "security keys only" in answer.text, answer.text
        assert [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.enrol"
                and e["outcome"] == "refused" and e["user_id"] == newcomer.user and "security keys only" in e["detail"]]
    finally:
        portal.post(first, "/admin/sign-in/codes-on", {}, csrf_from="/admin/sign-in")
        portal.post(second, "/admin/sign-in/codes-on/approve", {}, csrf_from="/admin/sign-in")


def _register_directly(gateway, account: Account, key: SoftKey, label: str):
    import json

    from gateway.portal import security_keys

    rp, challenge = security_keys.RelyingParty("localhost", key.origin), secrets.token_bytes(32)
    options = json.loads(security_keys.registration_options(rp, account.org, account.user, "x", challenge, []))
    verified = security_keys.verify_registration(rp, json.loads(key.register(options)), challenge)
    with gateway.engine.begin() as conn:
        return security_keys.store_key(conn, account.org, account.user, verified, label,
                                       dt.datetime.now(dt.timezone.utc))


def test_two_removals_at_once_never_leave_an_account_without_a_key(portal, gateway, org):
    import threading

    from gateway.portal import security_keys

    account, key, spare = Account(org.code, unique("hv.race.").lower()), _key(portal), _key(portal)
    enrol_with_key(portal, account, org.invite(account.user), key)
    ids = [_stored(gateway, key).id, _register_directly(gateway, account, spare, "Spare").id]
    outcomes = []

    def remove(conn, key_id):
        try:
            security_keys.remove_key(conn, account.org, account.user, key_id)
            outcomes.append("removed")
        except security_keys.KeyRefused:
            outcomes.append("refused")

    def second():
        with gateway.engine.begin() as conn:
            remove(conn, ids[1])

    with gateway.engine.connect() as conn:
        with conn.begin():
            remove(conn, ids[0])
            other = threading.Thread(target=second)
            other.start()
            other.join(timeout=3)  # it waits for this transaction, or (without a lock) is done already
        other.join(timeout=60)
    with gateway.engine.connect() as conn:
        assert security_keys.count_keys(conn, account.org, account.user) == 1 and sorted(outcomes) == [
            "refused", "removed"], outcomes


def test_a_key_moved_to_another_account_in_the_database_is_refused_and_audited(portal, gateway, org):
    from sqlalchemy import update

    victim, key = Account(org.code, unique("hv.victim.").lower()), _key(portal)
    insider, insider_key = Account(org.code, unique("hv.insider.").lower()), _key(portal)
    for who, its_key in ((victim, key), (insider, insider_key)):
        enrol_with_key(portal, who, org.invite(who.user), its_key)
    with gateway.engine.begin() as conn:  # by hand: the insider's key row given to the victim
        conn.execute(update(portal_webauthn_credentials).where(
            portal_webauthn_credentials.c.credential_id == insider_key.id).values(user_id=victim.user))
    seq = gateway.audit_seq()
    s, step = password_step(portal, victim)
    moved = portal.post(s, "/login/key", {"credential": insider_key.assertion(page_options(step.text))},
                        token=_token(step.text))
    assert moved.status_code == 401 and "not accepted" in moved.text, moved.text
    assert [r for r in _refusals(gateway, seq, victim.user) if "does not open" in r]


def test_an_account_without_a_key_confirms_with_a_code_before_adding_its_first(portal, gateway, org):
    account, key = Account(org.code, unique("hv.first.").lower()), _key(portal)
    enrol_in_process(gateway, account, org.invite(account.user))  # three codes, no wait
    session, _ = portal.sign_in(account)
    asked = portal.post(session, "/keys/add", {}, csrf_from="/keys")
    assert "Confirm with a code from your authenticator app" in asked.text, asked.text
    seq = gateway.audit_seq()
    wrong = portal.post(session, "/keys/confirm-code", {"code": f"{(int(pyotp.TOTP(account.secret).now()) + 1) % 10**6:06d}",
                                                        "intent": _intent(asked.text)}, token=_token(asked.text))
    assert "Not confirmed" in wrong.text
    asked = portal.post(session, "/keys/add", {}, csrf_from="/keys")
    added = portal.post(session, "/keys/confirm-code", {"code": account.code(), "intent": _intent(asked.text)},
                        token=_token(asked.text))
    assert "<h1>Add a security key</h1>" in added.text, added.text
    portal.post(session, "/keys/add/finish", {"credential": key.register(page_options(added.text))},
                token=_token(added.text))
    assert _stored(gateway, key) is not None
    confirmations = [(e["outcome"], e["detail"]) for e in gateway.audit_entries_after(seq)
                     if e["operation"] == "portal.key.confirm" and e["user_id"] == account.user]
    assert [c[0] for c in confirmations] == ["refused", "done"] and "wrong code" in confirmations[0][1]


def test_an_enrolment_refused_at_the_key_is_audited_against_its_account(portal, gateway, org):
    account, key = Account(org.code, unique("hv.gone.").lower()), _key(portal)
    invitation = org.invite(account.user)
    s = portal.session()
    start = portal.post(s, "/enrol/key/start", {"org": account.org, "user": account.user, "invitation": invitation},
                        csrf_from="/enrol")
    ceremony = portal.post(s, "/enrol/key", {"org": account.org, "user": account.user, "invitation": invitation,
                                             "password": account.password, "password2": account.password},
                           token=_token(start.text))
    page = f"/admin/practitioners/{account.user}"  # disabled while the key is being registered
    portal.post(org.admins[0], f"{page}/disable", {"reason": "left the service"}, csrf_from=page)
    seq = gateway.audit_seq()
    refused = portal.post(s, "/enrol/key/finish", {"credential": key.register(page_options(ceremony.text))},
                          token=_token(ceremony.text))
    assert refused.status_code == 400 and _stored(gateway, key) is None
    [entry] = [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.enrol"]
    assert (entry["outcome"], entry["org_code"], entry["user_id"]) == ("refused", org.code, account.user), entry
