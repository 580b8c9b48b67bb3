"""The practitioners' portal end to end (issue 26, first slice), on each backend, against one
`contactgate portal` per module (conftest.py):

- in a real browser (the distribution's Chromium driven by Playwright): a user administrator
  appointed by two officers enrols, signs in and adds a practitioner; the practitioner enrols a
  security key (Chromium's virtual authenticator, through the DevTools protocol's WebAuthn domain)
  with the invitation code, signs in with password and key, signs out and in again, searches with a typo in the family name, states a reason, sees the
  contacts limited by their role and a shielded child's location withheld; nothing about a child is
  in any URL; an account whose clearance has lapsed is refused, saying why;
- over HTTPS with requests: the cookie's flags, CSRF, role per route, an administrator of one
  organisation against another's accounts, the per-source lock that leaves the real user in;
- the audit: every search and view is an entry shaped like a SOAP read (ORG:user, role, reason,
  children, fields), found by `audit report --user` and `--child`.
"""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest

from tests.gateway.portal.conftest import INVITATION, Account, appoint_admin, enrol_in_process, screenshots
from tests.support import child_update, unique, unique_name

TODAY = dt.date.today()


@pytest.fixture(scope="module")
def children(gateway, clients):
    """Two children LA holds: one plain, one shielded (by SHIELDER); (child id, update) each."""
    la, shielder = clients("la"), clients("shielder")
    made = []
    for prefix in ("Portalplain", "Portalshield"):
        update = child_update(unique("portal-"), unique_name(prefix), unique_name("Kid"), "2016-03-14")
        [result] = la.submit_updates([update])
        made.append((result["ChildId"], update))
    shielder.set_shielding(made[1][0], True, user_id="sh.officer", role="social worker",
                           reason_code="risk_of_harm", reason_text="refuge: location withheld")
    return made


@pytest.fixture(scope="module")
def la_admin(portal, gateway):
    """LA's user administrator, appointed by two officers and enrolled."""
    account = Account("LA", unique("la.admin.").lower())
    return enrol_in_process(gateway, account, appoint_admin(gateway, "LA", account.user))


def _approve_role(portal, approver, user: str) -> None:
    """A second administrator approves the role proposed for LA:``user`` (their Practitioners page)."""
    import re

    listed = approver.get(f"{portal.url}/admin/practitioners", timeout=15).text
    proposal = re.search(rf"LA:{re.escape(user)}\b.*?/admin/roles/(\d+)/approve", listed, re.S).group(1)
    answer = portal.post(approver, f"/admin/roles/{proposal}/approve", {}, csrf_from="/admin/practitioners")
    assert answer.status_code == 200 and f"LA:{user} now has the role" in answer.text, answer.text


def _add_practitioner(portal, admins, user: str, *, role="health visitor", clearance=TODAY,
                      training=TODAY, end="") -> str:
    """An administrator's form adding a practitioner, and a second administrator's approval of its
    role; the invitation code the form shows."""
    admin_session, approver = admins
    answer = portal.post(admin_session, "/admin/practitioners/new", {
        "user": user, "name": f"Practitioner {user}", "role": role, "job_title": "Health visitor",
        "clearance_number": "001234567890", "clearance_date": clearance.isoformat(),
        "training_date": training.isoformat(), "end_date": end}, csrf_from="/admin/practitioners/new")
    assert answer.status_code == 200, answer.text
    _approve_role(portal, approver, user)
    return INVITATION.search(answer.text).group(1)


@pytest.fixture(scope="module")
def admin_session(portal, la_admin):
    return portal.sign_in(la_admin)[0]


@pytest.fixture(scope="module")
def admins(admin_session, second_admin):
    """(LA's first administrator's session, the second's: who approves the roles the first gives)."""
    return admin_session, second_admin[1]


@pytest.fixture(scope="module")
def visitor_account(portal, gateway, admins):
    """An enrolled LA health visitor."""
    account = Account("LA", unique("hv.").lower())
    return enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user))


@pytest.fixture(scope="module")
def visitor(portal, visitor_account):
    """The health visitor, signed in: (their session, the answer to their sign-in)."""
    return portal.sign_in(visitor_account)


# ---- in the browser ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Where the browser test saves its screenshots (CONTACTGATE_SCREENSHOTS=DIR keeps them: docs/portal/)."""
    return screenshots(tmp_path_factory, "screenshots")


def virtual_authenticator(context, page) -> tuple:
    """Chromium's virtual authenticator (DevTools protocol, WebAuthn domain) for ``page``: a USB
    FIDO2 key that verifies its user and is touched at once. (the CDP session, the authenticator id)."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    made = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    return cdp, made["authenticatorId"]


def sign_in_with_key(page, portal, account: Account) -> None:
    """The sign-in form with the password and no code, then the key (the virtual authenticator)."""
    page.goto(f"{portal.public_url}/login")
    page.get_by_label("Organisation").fill(account.org)
    page.get_by_label("User id").fill(account.user)
    page.get_by_label("Password").fill(account.password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Use security key").click()
    # The key's answer is posted by the page's script, then the portal redirects to the home page:
    # wait for that (a loaded machine took longer than the next assertion's read of the header).
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)


def _typo(name: str) -> str:
    """The family name with two letters swapped (what a hurried practitioner types)."""
    return name[0] + name[2] + name[1] + name[3:]



def test_an_administrator_adds_a_practitioner_who_enrols_searches_and_sees_contacts_limited_by_role(
        portal, gateway, admin_session, admins, children, chromium, shots):
    (plain_id, plain), (shielded_id, shielded) = children
    urls = []

    # The administrator signed in over HTTPS (admin_session); their session cookie goes to the browser.
    admin = chromium.new_context(ignore_https_errors=True)
    admin.add_cookies([{"name": c.name, "value": c.value, "url": portal.url, "secure": True, "httpOnly": True,
                        "sameSite": "Strict"} for c in admin_session.cookies])
    page = admin.new_page()
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{portal.url}/")
    page.get_by_role("link", name="Add a practitioner").click()
    user = unique("hv.web.").lower()
    page.get_by_label("User id").fill(user)
    page.get_by_label("Name").fill("Hana Visitor")
    page.get_by_label("Role").select_option("health visitor")
    page.get_by_label("Job title").fill("Health visitor")
    page.get_by_label("Clearance certificate number").fill("001234567890")
    page.get_by_label("Clearance date").fill(TODAY.isoformat())
    page.get_by_label("Training completed").fill(TODAY.isoformat())
    page.get_by_role("button", name="Add").click()
    invitation = page.locator("#invitation-code").inner_text().strip()
    admin.close()
    _approve_role(portal, admins[1], user)  # a second administrator approves the role

    # The practitioner enrols a security key (Chromium's virtual authenticator) with the invitation
    # code, at the portal's public URL (https://localhost:PORT: keys are bound to it).
    practitioner = Account("LA", user)
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.on("request", lambda r: urls.append(r.url))
    cdp, authenticator = virtual_authenticator(context, page)
    page.goto(f"{portal.public_url}/enrol")
    page.get_by_label("Organisation").fill("LA")
    page.get_by_label("User id").fill(user)
    page.get_by_label("Invitation code").fill(invitation)
    page.get_by_role("button", name="Enrol with a security key").click()
    page.get_by_label("New password", exact=True).fill(practitioner.password)
    page.get_by_label("Repeat the new password").fill(practitioner.password)
    page.get_by_role("button", name="Next: register your key").click()
    page.get_by_label("A name for this key").fill("Blue key")
    page.screenshot(path=str(shots / "enrol-key.png"), full_page=True)
    page.get_by_role("button", name="Register security key").click()
    page.wait_for_url("**/login")
    assert "enrolled" in page.locator("main").inner_text().lower()
    [credential] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert credential["rpId"] == "localhost"

    sign_in_with_key(page, portal, practitioner)
    assert "Sign out" in page.locator("header").inner_text()
    page.get_by_role("button", name="Sign out").click()
    sign_in_with_key(page, portal, practitioner)  # signed out, and in again: password and key
    [used] = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert used["signCount"] == credential["signCount"] + 2  # counted up at each sign-in (clone detection)

    seq = gateway.audit_seq()
    family = plain["Identity"]["FamilyName"]
    page.get_by_label("Family name").fill(_typo(family))
    page.get_by_label("Given name").fill(plain["Identity"]["GivenName"][0])
    page.get_by_label("Date of birth").fill("2016-03-14")
    page.get_by_label("Reason").select_option("safeguarding")
    page.get_by_label("Why you need it").fill("health visit follow-up")
    page.get_by_role("button", name="Search").click()
    results = page.locator("main")
    assert family in results.inner_text()
    page.screenshot(path=str(shots / "results.png"), full_page=True)
    page.get_by_role("button", name=f"Open {family}").first.click()
    page.get_by_label("Reason").select_option("safeguarding")
    page.get_by_label("Why you need it").fill("contact the school nurse")
    page.get_by_role("button", name="Show contacts").click()
    shown = page.locator("main").inner_text()
    assert "Children's social care" in shown and "Sam Worker" in shown  # who is involved, by role
    assert "0113 496 0002" not in shown and "sam.worker@la.example" not in shown  # not their contact details
    assert plain["Address"]["Postcode"] in shown

    page.goto(f"{portal.public_url}/")
    sfamily = shielded["Identity"]["FamilyName"]
    page.get_by_label("Family name").fill(sfamily)
    page.get_by_label("Date of birth").fill("2016-03-14")
    page.get_by_label("Reason").select_option("safeguarding")
    page.get_by_label("Why you need it").fill("health visit follow-up")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Open {sfamily}").first.click()
    page.get_by_label("Reason").select_option("safeguarding")
    page.get_by_label("Why you need it").fill("check before a home visit")
    page.get_by_role("button", name="Show contacts").click()
    shown = page.locator("main").inner_text()
    assert "withheld" in shown.lower() and shielded["Address"]["Postcode"] not in shown
    page.screenshot(path=str(shots / "contacts-shielded.png"), full_page=True)
    assert "Hillside Primary" not in shown
    context.close()

    assert not [u for u in urls if plain_id in u or shielded_id in u or family in u or sfamily in u]
    entries = [e for e in gateway.audit_entries_after(seq)
               if e["user_id"] == user and e["operation"] in ("FindChild", "GetContacts")]
    assert [e["operation"] for e in entries] == ["FindChild", "GetContacts", "FindChild", "GetContacts"]
    found, read, _, shielded_read = entries
    assert found["org_code"] == "LA" and found["role"] == "health visitor" and found["reason_code"] == "safeguarding"
    assert "channel=web" in found["detail"] and plain_id in found["child_ids"]
    assert read["child_ids"] == plain_id and read["reason_text"] == "contact the school nurse"
    assert "channel=web" in read["detail"] and "fields=address,carers,settings,practitioners,lead_professional" in read["detail"]
    assert "shielded=yes location=withheld" in shielded_read["detail"]
    assert shielded_read["source_address"] == "127.0.0.1" and shielded_read["cert_fingerprint"] is None

    by_user = gateway.cli("audit", "report", "--user", f"LA:{user}", officer="auditor-1").output
    assert by_user.count("GetContacts") == 2 and "contact the school nurse" in by_user
    by_child = gateway.cli("audit", "report", "--child", plain_id, officer="auditor-1").output
    assert f"LA:{user}" in by_child



def _key_page_answer(page) -> str:
    """Press the key page's button and hold back the form it would post: the answer (credential JSON)
    the browser's key gave, unsent (what someone who copied it would hold)."""
    from urllib.parse import parse_qs

    held = []

    def hold(route):
        held.append(parse_qs(route.request.post_data)["credential"][0])
        route.abort()

    page.route("**/login/key", hold)
    page.get_by_role("button", name="Use security key").click()
    page.wait_for_timeout(100)
    deadline = 200
    while not held and deadline:
        page.wait_for_timeout(100)
        deadline -= 1
    page.unroute("**/login/key")
    return held[0]


def _post_answer(page, answer: str) -> str:
    """Post ``answer`` in the key page's own form (its CSRF token, its session), bypassing the
    script; the page's main text after."""
    page.evaluate("""answer => { const form = document.getElementById('key-form');
        form.elements.credential.value = answer; HTMLFormElement.prototype.submit.call(form); }""", answer)
    page.wait_for_load_state()
    return page.locator("main").inner_text()


def test_in_the_browser_a_replayed_answer_another_browsers_challenge_or_an_unregistered_key_gets_no_session(
        portal, gateway, admins, chromium):
    account = Account("LA", unique("hv.browser.").lower())
    invitation = _add_practitioner(portal, admins, account.user)
    owner = chromium.new_context(ignore_https_errors=True)
    page = owner.new_page()
    virtual_authenticator(owner, page)
    page.goto(f"{portal.public_url}/enrol")
    page.get_by_label("Organisation").fill("LA")
    page.get_by_label("User id").fill(account.user)
    page.get_by_label("Invitation code").fill(invitation)
    page.get_by_role("button", name="Enrol with a security key").click()
    page.get_by_label("New password", exact=True).fill(account.password)
    page.get_by_label("Repeat the new password").fill(account.password)
    page.get_by_role("button", name="Next: register your key").click()
    page.get_by_role("button", name="Register security key").click()
    page.wait_for_url("**/login")
    seq = gateway.audit_seq()

    # The owner's key answers a challenge in the owner's browser; the answer is held back, and
    # posted by another browser at its own key step: another browser's challenge.
    sign_in_page = page
    sign_in_page.goto(f"{portal.public_url}/login")
    for label, value in (("Organisation", "LA"), ("User id", account.user), ("Password", account.password)):
        sign_in_page.get_by_label(label).fill(value)
    sign_in_page.get_by_role("button", name="Sign in").click()
    held = _key_page_answer(sign_in_page)
    other = chromium.new_context(ignore_https_errors=True)
    thief = other.new_page()
    virtual_authenticator(other, thief)  # a key of its own, not registered to the account
    thief.goto(f"{portal.public_url}/login")
    for label, value in (("Organisation", "LA"), ("User id", account.user), ("Password", account.password)):
        thief.get_by_label(label).fill(value)
    thief.get_by_role("button", name="Sign in").click()
    assert "not accepted" in _post_answer(thief, held) and "Sign out" not in thief.content()

    # The owner's own answer, once spent, is refused in the owner's browser too (a replay).
    sign_in_page.goto(f"{portal.public_url}/login")
    for label, value in (("Organisation", "LA"), ("User id", account.user), ("Password", account.password)):
        sign_in_page.get_by_label(label).fill(value)
    sign_in_page.get_by_role("button", name="Sign in").click()
    assert "not accepted" in _post_answer(sign_in_page, held)

    # An unregistered key: the browser finds no key of the account's, and nothing is signed in.
    thief.goto(f"{portal.public_url}/login")
    for label, value in (("Organisation", "LA"), ("User id", account.user), ("Password", account.password)):
        thief.get_by_label(label).fill(value)
    thief.get_by_role("button", name="Sign in").click()
    thief.get_by_role("button", name="Use security key").click()
    thief.get_by_text("did not answer").wait_for()
    assert thief.context.cookies() and "Sign out" not in thief.content()
    other.close()

    sign_in_with_key(sign_in_page, portal, account)  # the owner, with the key: in
    assert "Sign out" in sign_in_page.locator("header").inner_text()
    owner.close()
    refusals = [e["detail"] for e in gateway.audit_entries_after(seq)
                if e["operation"] == "portal.login" and e["outcome"] == "refused"]
    assert [r for r in refusals if "challenge issued to another browser session" in r]
    assert [r for r in refusals if "challenge unknown or already used" in r]


def test_a_lapsed_clearance_training_or_end_date_is_refused_saying_why(portal, gateway, admins, chromium):
    long_ago = TODAY - dt.timedelta(days=3 * 365 + 10)
    lapsed = Account("LA", unique("hv.lapsed.").lower())
    enrol_in_process(gateway, lapsed, _add_practitioner(portal, admins, lapsed.user, clearance=long_ago))
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(f"{portal.url}/login")
    page.get_by_label("Organisation").fill("LA")
    page.get_by_label("User id").fill(lapsed.user)
    page.get_by_label("Password").fill(lapsed.password)
    page.get_by_label("Code from your authenticator app").fill(lapsed.code())
    page.get_by_role("button", name="Sign in").click()
    said = page.locator("main").inner_text()
    assert "clearance" in said.lower() and "re-check" in said.lower()
    context.close()

    untrained = Account("LA", unique("hv.untrained.").lower())
    enrol_in_process(gateway, untrained, _add_practitioner(portal, admins, untrained.user,
                                                           training=TODAY - dt.timedelta(days=400)))
    _, answer = portal.sign_in(untrained, expect_ok=False)
    assert answer.status_code == 403 and "training" in answer.text.lower()

    ended = Account("LA", unique("hv.ended.").lower())
    enrol_in_process(gateway, ended, _add_practitioner(portal, admins, ended.user,
                                                       end=(TODAY - dt.timedelta(days=1)).isoformat()))
    _, answer = portal.sign_in(ended, expect_ok=False)
    assert answer.status_code == 403 and "ended" in answer.text.lower()


# ---- web security --------------------------------------------------------------------------------


def test_the_session_cookie_is_secure_httponly_strict_and_forms_need_their_csrf_token(portal, gateway, visitor):
    session, answer = visitor
    cookies = [c for r in [*answer.history, answer] for c in r.raw.headers.getlist("Set-Cookie")]
    assert {c.split("=")[0] for c in cookies} == {"contactgate_portal", "contactgate_portal_known"}
    assert all("Secure" in c and "HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
    cookie = next(c for c in cookies if c.startswith("contactgate_portal="))
    # Its own name, host-only: a console on the same host name (another port) has its own cookie.
    from gateway.console import SESSION_COOKIE as CONSOLE_COOKIE
    from gateway.portal import CSP, SESSION_COOKIE

    assert cookie.startswith(f"{SESSION_COOKIE}=") and SESSION_COOKIE != CONSOLE_COOKIE
    assert not [c for c in cookies if "domain=" in c.lower()]
    assert answer.headers["Content-Security-Policy"] == CSP
    assert "script-src" not in answer.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    seq = gateway.audit_seq()
    search = {"family_name": "Smith", "date_of_birth": "2016-03-14", "reason_code": "safeguarding",
              "reason_text": "a valid search but for its token"}
    forged = portal.post(session, "/search", search)
    assert forged.status_code == 400 and "Form expired" in forged.text
    token = portal.form(session, "/")
    elsewhere = session.post(f"{portal.url}/search", data={**search, "csrf_token": token},
                             headers={"Referer": "https://elsewhere.example/"}, timeout=15)
    assert elsewhere.status_code == 400 and "Form expired" in elsewhere.text
    assert not [e for e in gateway.audit_entries_after(seq) if e["operation"] == "FindChild"]



def test_an_answer_that_changes_nothing_in_the_session_sets_no_cookie_so_a_late_one_cannot_undo_a_form_token(
        portal, visitor):
    """A browser fetches the favicon after a page has loaded, while it already follows that page on
    (a refresh, a link): the page it goes to puts the form's CSRF token in the session cookie; had
    the favicon's answer, sent with the cookie from before, re-sent that older cookie and come last,
    the browser would hold a session without the token, and its next form would be refused as
    expired (the browser sign-out test met this now and then: "Form expired" instead of the
    provider). An answer that does not change the session sends no cookie."""
    session, _ = visitor
    for path in ("/static/console.css", "/static/favicon.svg", "/"):  # the session holds its token already
        answer = session.get(f"{portal.url}{path}", timeout=15)
        assert answer.status_code == 200 and "Set-Cookie" not in answer.headers, (path, answer.headers)


def test_each_route_is_for_its_role_and_an_administrator_only_for_their_own_organisation(
        portal, gateway, admin_session, visitor):
    hv_session, _ = visitor
    assert hv_session.get(f"{portal.url}/admin/practitioners", timeout=15).status_code == 403
    # The administrator administers; they hold no practitioner role, so they do not search.
    token = portal.form(admin_session, "/admin/practitioners")
    assert portal.post(admin_session, "/search", {"family_name": "Smith", "date_of_birth": "2016-03-14",
                                                  "reason_code": "safeguarding", "reason_text": "x"},
                       token=token).status_code == 403

    # HEALTH's account, with an id LA does not use: LA's administrator can neither see nor change it.
    other = unique("health.admin.").lower()
    appoint_admin(gateway, "HEALTH", other)
    assert admin_session.get(f"{portal.url}/admin/practitioners/{other}", timeout=15).status_code == 404
    refused = portal.post(admin_session, f"/admin/practitioners/{other}/disable", {"reason": "takeover"},
                          token=token)
    assert refused.status_code == 404
    assert portal.post(admin_session, f"/admin/practitioners/{other}/reset", {}, token=token).status_code == 404
    assert portal.post(admin_session, f"/admin/practitioners/{other}/enable", {"reason": "x"},
                       token=token).status_code == 404
    changed = portal.post(admin_session, f"/admin/practitioners/{other}", _details_form(other), token=token)
    assert changed.status_code == 404 and not INVITATION.search(changed.text)
    from sqlalchemy import select

    from gateway.db import portal_practitioners as table
    with gateway.engine.connect() as conn:
        row = conn.execute(select(table.c.disabled_at).where(table.c.org_code == "HEALTH",
                                                             table.c.user_id == other)).one()
    assert row.disabled_at is None



def test_wrong_passwords_lock_out_their_source_not_the_practitioner(portal, gateway, admins):
    """Five wrong passwords from one address (CONTACTGATE_LOCKOUT_FAILURES' default) lock that
    address out of the account, and no count locks the account as a whole: the practitioner, at
    another address, still signs in (the officers' console's global back-off has no equivalent
    here, so strangers cannot lock a practitioner out)."""
    from tests.gateway.console.flood import FromAddress

    account = Account("LA", unique("hv.lock.").lower())
    enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user))
    guesser = Account("LA", account.user, password="not the password at all")
    for _ in range(5):
        _, refused = portal.sign_in(guesser, expect_ok=False, code="000000")
        assert refused.status_code == 401
    # From the guesser's address even the right password and a fresh code are refused now (not counted).
    seq = gateway.audit_seq()
    code = account.code()
    _, locked = portal.sign_in(account, expect_ok=False, code=code)
    assert locked.status_code == 401
    [entry] = [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.login"]
    assert entry["user_id"] == account.user and "locked out" in entry["detail"]

    session = portal.session()
    session.mount("https://", FromAddress("127.0.0.2"))  # another machine
    token = portal.form(session, "/login")
    ok = portal.post(session, "/login", {"org": "LA", "user": account.user, "password": account.password,
                                         "code": code}, token=token)  # the locked attempt did not spend it
    assert ok.status_code == 200 and "Sign out" in ok.text


def test_an_administrator_renews_disables_and_resets_their_practitioners_account(portal, gateway, admin_session,
                                                                                 admins):
    """A lapsed training date recorded anew lets the practitioner in; disabling ends their open
    session at its next page; a reset makes a new invitation (and authenticator key) to enrol again,
    once the account is enabled again."""
    account = Account("LA", unique("hv.admin.").lower())
    enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user,
                                                         training=TODAY - dt.timedelta(days=400)))
    page = f"/admin/practitioners/{account.user}"
    renewed = portal.post(admin_session, page, {
        "name": "Renewed Visitor", "role": "health visitor", "job_title": "Health visitor",
        "clearance_number": "001234567890", "clearance_date": TODAY.isoformat(),
        "training_date": TODAY.isoformat(), "end_date": ""}, csrf_from=page)
    assert renewed.status_code == 200 and f"Changed LA:{account.user}" in renewed.text
    session, _ = portal.sign_in(account)

    token = portal.form(admin_session, page)
    disabled = portal.post(admin_session, f"{page}/disable", {"reason": "left the service"}, token=token)
    assert "Disabled" in disabled.text
    ended = session.get(f"{portal.url}/", timeout=15)
    assert ended.url.endswith("/login") and "disabled" in ended.text

    reset = portal.post(admin_session, f"{page}/reset", {}, token=token)
    invitation = INVITATION.search(reset.text).group(1)
    # A reset leaves a disabled account disabled: enabling it again is its own step, with a reason.
    enabled = portal.post(admin_session, f"{page}/enable", {"reason": "back in post"}, token=token)
    assert f"Enabled LA:{account.user}" in enabled.text
    account.last_step = -1  # a new authenticator key
    enrol_in_process(gateway, account, invitation)
    reused = portal.post(portal.session(), "/enrol", {"org": "LA", "user": account.user, "invitation": invitation},
                         csrf_from="/enrol")
    assert reused.status_code == 401 and "not accepted" in reused.text  # an invitation is good once
    portal.sign_in(account)
    operations = [e["operation"] for e in gateway.audit_entries_after(0)
                  if e["org_code"] == "LA" and account.user in (e["detail"] or "") and e["outcome"] == "done"]
    assert operations == ["portal.practitioner.add", "portal.practitioner.role", "portal.practitioner.change",

                          "portal.practitioner.disable", "portal.practitioner.reset", "portal.practitioner.enable"]


def test_nothing_is_served_while_a_restore_awaits_acknowledgement(portal, gateway, visitor):
    """As `serve`: while a restore is being put in place (its marker in the home) or awaits two
    officers' acknowledgement, a signed-in practitioner's pages answer 503 and read nothing."""
    import time

    from gateway.config import Settings

    session, _ = visitor
    marker = Settings.from_env({}, home=str(gateway.home), database_url=gateway.database_url).layout.restore_marker
    marker.write_text("{}")
    try:
        time.sleep(1.1)  # the portal looks at most once a second
        refused = session.get(f"{portal.url}/", timeout=15)
        assert refused.status_code == 503 and "restore" in refused.text
    finally:
        marker.unlink()
    time.sleep(1.1)
    assert session.get(f"{portal.url}/", timeout=15).status_code == 200


# ---- review findings (HIGH 1: an administrator takes over an account) ------------------------------

def _row(gateway, org: str, user: str):
    from sqlalchemy import select

    from gateway.db import portal_practitioners as table
    with gateway.engine.connect() as conn:
        return conn.execute(select(table).where(table.c.org_code == org, table.c.user_id == user)).one()


@pytest.fixture(scope="module")
def second_admin(portal, gateway):
    """A second LA user administrator, appointed by two officers, enrolled and signed in."""
    account = Account("LA", unique("la.admin2.").lower())
    enrol_in_process(gateway, account, appoint_admin(gateway, "LA", account.user))
    return account, portal.sign_in(account)[0]


def _details_form(user: str, role: str = "health visitor") -> dict:
    return {"user": user, "name": f"Practitioner {user}", "role": role, "job_title": "Health visitor",
            "clearance_number": "001234567890", "clearance_date": TODAY.isoformat(),
            "training_date": TODAY.isoformat(), "end_date": ""}



def test_an_administrator_cannot_change_disable_or_reset_another_administrator(
        portal, gateway, la_admin, admin_session, second_admin):
    other, _ = second_admin
    page = f"/admin/practitioners/{other.user}"
    token = portal.form(admin_session, page)
    before = _row(gateway, "LA", other.user)
    seq = gateway.audit_seq()
    portal.post(admin_session, page, _details_form(other.user, "social worker"), token=token)
    portal.post(admin_session, f"{page}/disable", {"reason": "takeover"}, token=token)
    reset = portal.post(admin_session, f"{page}/reset", {}, token=token)
    assert not INVITATION.search(reset.text)
    after = _row(gateway, "LA", other.user)
    assert (after.role, after.disabled_at, after.password_hash, after.totp_secret) == (
        before.role, before.disabled_at, before.password_hash, before.totp_secret)
    refused = [e["operation"] for e in gateway.audit_entries_after(seq)
               if e["user_id"] == la_admin.user and e["outcome"] == "refused"]
    assert refused == ["portal.practitioner.change", "portal.practitioner.disable", "portal.practitioner.reset"]



def test_a_reset_keeps_a_disabled_account_disabled_until_it_is_enabled_with_a_reason(portal, gateway, admin_session,
                                                                                      admins):
    from gateway.portal import accounts

    user = unique("hv.reset.").lower()
    _add_practitioner(portal, admins, user)
    page = f"/admin/practitioners/{user}"
    token = portal.form(admin_session, page)
    portal.post(admin_session, f"{page}/disable", {"reason": "suspended pending an inquiry"}, token=token)
    invitation = INVITATION.search(portal.post(admin_session, f"{page}/reset", {}, token=token).text).group(1)
    assert _row(gateway, "LA", user).disabled_at is not None
    with gateway.engine.connect() as conn, pytest.raises(accounts.PortalError):
        accounts.enrolment_secret(conn, "LA", user, invitation)  # a disabled account does not enrol

    seq = gateway.audit_seq()
    portal.post(admin_session, f"{page}/enable", {"reason": ""}, token=token)
    assert _row(gateway, "LA", user).disabled_at is not None
    portal.post(admin_session, f"{page}/enable", {"reason": "inquiry closed"}, token=token)
    assert _row(gateway, "LA", user).disabled_at is None
    done = [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.practitioner.enable"]
    assert [e["outcome"] for e in done] == ["refused", "done"] and "inquiry closed" in done[1]["detail"]



def test_a_role_on_a_new_account_or_a_change_of_role_takes_a_second_administrators_approval(
        portal, gateway, admin_session, second_admin):
    import re

    _, other_session = second_admin
    user = unique("hv.role.").lower()
    made = portal.post(admin_session, "/admin/practitioners/new", _details_form(user, "social worker"),
                       csrf_from="/admin/practitioners/new")
    assert made.status_code == 200 and INVITATION.search(made.text)
    assert _row(gateway, "LA", user).role is None  # not until a second administrator approves

    def pending() -> str:
        listed = other_session.get(f"{portal.url}/admin/practitioners", timeout=15).text
        return re.search(rf"LA:{re.escape(user)}\b.*?/admin/roles/(\d+)/approve", listed, re.S).group(1)

    proposal = pending()
    token = portal.form(admin_session, "/admin/practitioners")
    portal.post(admin_session, f"/admin/roles/{proposal}/approve", {}, token=token)  # their own: refused
    assert _row(gateway, "LA", user).role is None
    portal.post(other_session, f"/admin/roles/{proposal}/approve", {},
                token=portal.form(other_session, "/admin/practitioners"))
    assert _row(gateway, "LA", user).role == "social worker"

    page = f"/admin/practitioners/{user}"
    portal.post(admin_session, page, _details_form(user, "health visitor"), csrf_from=page)
    assert _row(gateway, "LA", user).role == "social worker"  # the change of role awaits approval too
    proposal = pending()
    portal.post(other_session, f"/admin/roles/{proposal}/approve", {},
                token=portal.form(other_session, "/admin/practitioners"))
    assert _row(gateway, "LA", user).role == "health visitor"


def test_a_code_is_good_once_and_a_lapse_ends_an_open_session_at_its_next_page(portal, gateway, admin_session,
                                                                               admins):
    account = Account("LA", unique("hv.lapse.").lower())
    enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user))
    code = account.code()
    session, _ = portal.sign_in(account, code=code)
    seq = gateway.audit_seq()
    _, again = portal.sign_in(account, expect_ok=False, code=code)
    assert again.status_code == 401
    [entry] = [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.login"]
    assert "code already used" in entry["detail"]

    page = f"/admin/practitioners/{account.user}"
    portal.post(admin_session, page, {**_details_form(account.user), "training_date": "2020-01-01"}, csrf_from=page)
    ended = session.get(f"{portal.url}/", timeout=15)
    assert ended.url.endswith("/login") and "training" in ended.text


def test_an_invitation_expires_after_14_days(portal, gateway, admins):
    from gateway.portal import accounts

    user = unique("hv.late.").lower()
    invitation = _add_practitioner(portal, admins, user)
    late = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=accounts.INVITATION_DAYS, minutes=1)
    with gateway.engine.connect() as conn:
        with pytest.raises(accounts.PortalError):
            accounts.enrolment_secret(conn, "LA", user, invitation, now=late)
        assert accounts.enrolment_secret(conn, "LA", user, invitation)[0].user_id == user


def _search(portal, session, family: str, **more):
    return portal.post(session, "/search", {"family_name": family, "date_of_birth": "2016-03-14",
                                            "reason_code": "safeguarding", "reason_text": "visit", **more},
                       csrf_from="/")


def _open(portal, session, handle: str):
    return portal.post(session, "/child", {"handle": handle, "reason_code": "safeguarding",
                                           "reason_text": "visit"}, csrf_from="/")


def test_a_handle_is_good_only_in_its_session_and_a_health_visitor_sees_what_their_role_may(
        portal, gateway, admins, visitor, children):
    import re

    (_, plain), (_, shielded) = children
    session, _ = visitor
    handles = {}
    for update in (plain, shielded):
        found = _search(portal, session, update["Identity"]["FamilyName"])
        handles[id(update)] = re.search(r'name="handle" value="([^"]+)"', found.text).group(1)

    colleague = Account("LA", unique("hv.colleague.").lower())
    enrol_in_process(gateway, colleague, _add_practitioner(portal, admins, colleague.user))
    other, _ = portal.sign_in(colleague)  # another session (a colleague's, with the same role)
    assert _open(portal, other, handles[id(plain)]).status_code == 404

    shown = _open(portal, session, handles[id(plain)])
    assert shown.status_code == 200 and "Pat Parent" in shown.text
    assert "0113 496 0000" not in shown.text  # carers' phones: not for a health visitor
    shown = _open(portal, session, handles[id(shielded)])
    assert shown.status_code == 200 and "withheld" in shown.text.lower()
    assert "Park Surgery" not in shown.text and "Hillside Primary" not in shown.text


def test_refused_reads_are_audited_with_their_fault(portal, gateway, visitor, visitor_account):
    session, _ = visitor
    seq = gateway.audit_seq()
    assert _search(portal, session, "Smith", date_of_birth="").status_code == 400  # below the minimum
    assert _search(portal, session, "Smith", reason_text="").status_code == 400  # no reason
    assert _open(portal, session, "no-such-handle").status_code == 404
    entries = [(e["operation"], e["outcome"], e["fault_code"]) for e in gateway.audit_entries_after(seq)
               if e["user_id"] == visitor_account.user]
    assert entries == [("FindChild", "refused", "SchemaInvalid"), ("FindChild", "refused", "ReasonRequired"),
                       ("GetContacts", "refused", "NotFound")]


def test_wrong_codes_with_the_right_password_from_many_addresses_lock_the_code_step(portal, gateway, admins):
    """Only someone with the password gets this far: ten wrong codes, from ten addresses, lock the
    code step of the account until its administrator resets it, and their page says so."""
    from tests.gateway.console.flood import FromAddress

    account = Account("LA", unique("hv.codes.").lower())
    enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user))
    import time

    near = {pyotp.TOTP(account.secret).at(time.time() + d) for d in (-90, -60, -30, 0, 30, 60, 90)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555", "666666", "777777")
                 if c not in near)
    for n in range(10):
        session = portal.session()
        session.mount("https://", FromAddress(f"127.0.1.{n + 1}"))
        _, refused = portal.sign_in(account, expect_ok=False, code=wrong, session=session)
        assert refused.status_code == 401
    seq = gateway.audit_seq()
    session = portal.session()
    session.mount("https://", FromAddress("127.0.2.1"))
    _, locked = portal.sign_in(account, expect_ok=False, session=session)  # right password, right code
    assert locked.status_code == 401
    [entry] = [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.login"]
    assert "code step locked" in entry["detail"]
    listed = admins[0].get(f"{portal.url}/admin/practitioners/{account.user}", timeout=15).text
    assert "code step locked" in listed.lower()


def test_a_practitioners_reads_are_rate_limited_as_a_soap_users_are(portal, gateway, admins):
    from tests.gateway.portal.conftest import PER_USER_LIMIT

    account = Account("LA", unique("hv.busy.").lower())
    enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user))
    session, _ = portal.sign_in(account)
    seq = gateway.audit_seq()
    token = portal.form(session, "/")
    # Windows are fixed minutes: 2 x limit + 1 reads put more than the limit in one window.
    answers = [portal.post(session, "/search", {"family_name": "Nobody", "date_of_birth": "2016-03-14",
                                                "reason_code": "safeguarding", "reason_text": "busy"},
                           token=token).status_code for _ in range(2 * PER_USER_LIMIT + 1)]
    assert 429 in answers and set(answers) == {200, 429}
    entries = [e for e in gateway.audit_entries_after(seq) if e["user_id"] == account.user]
    refused = [e for e in entries if e["outcome"] == "refused"]
    assert len(entries) == len(answers) and len(refused) == answers.count(429)
    assert {(e["operation"], e["fault_code"]) for e in refused} == {("FindChild", "RateLimited")}


def test_a_suspension_ends_open_sessions_at_their_next_page_and_stops_enrolment(portal, gateway):
    import re

    admin = Account("HEALTH", unique("health.admin.").lower())
    enrol_in_process(gateway, admin, appoint_admin(gateway, "HEALTH", admin.user))
    session, _ = portal.sign_in(admin)
    made = portal.post(session, "/admin/practitioners/new", {**_details_form(unique("nurse.").lower()),
                                                             "role": ""}, csrf_from="/admin/practitioners/new")
    invitation = INVITATION.search(made.text).group(1)
    user = re.search(r"HEALTH:([a-z0-9._-]+)", made.text).group(1)
    gateway.cli("org", "suspend", "HEALTH", "--reason", "portal test: suspended for a moment", officer="officer-a")
    try:
        ended = session.get(f"{portal.url}/admin/practitioners", timeout=15)
        assert ended.url.endswith("/login") and "accreditation" in ended.text
        refused = portal.post(portal.session(), "/enrol", {"org": "HEALTH", "user": user, "invitation": invitation},
                              csrf_from="/enrol")
        assert refused.status_code == 401
    finally:
        proposed = gateway.cli("org", "reinstate", "HEALTH", "--reason", "portal test over", officer="officer-a")
        proposal = re.search(r"proposal\D*(\d+)", proposed.output, re.I).group(1)
        gateway.cli("org", "approve", "HEALTH", "--proposal", proposal, officer="officer-b")


def test_a_search_is_held_to_findchilds_patterns(portal, gateway, visitor, visitor_account):
    session, _ = visitor
    seq = gateway.audit_seq()
    for bad in ({"nhs_number": "x"}, {"nhs_number": "12345"}, {"pupil_number": "not-a-upn"}):
        answer = portal.post(session, "/search", {"reason_code": "safeguarding", "reason_text": "visit", **bad},
                             csrf_from="/")
        assert answer.status_code == 400
    entries = [(e["outcome"], e["fault_code"]) for e in gateway.audit_entries_after(seq)
               if e["user_id"] == visitor_account.user]
    assert entries == [("refused", "SchemaInvalid")] * 3


def test_old_handles_are_swept_at_sign_in_and_a_purged_childs_are_deleted(portal, gateway, admins):
    import hashlib

    from sqlalchemy import func, select

    from gateway.db import portal_handles
    from gateway.index import retention

    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    stale, purged = hashlib.sha256(unique("stale").encode()).hexdigest(), hashlib.sha256(unique("p").encode()).hexdigest()
    with gateway.engine.begin() as conn:
        conn.execute(portal_handles.insert().values(handle_hash=stale, session_hash="0" * 64,
                                                    child_id="TEST-STAL-EHAN-DLE0", created_at=old))
        conn.execute(portal_handles.insert().values(handle_hash=purged, session_hash="0" * 64,
                                                    child_id="TEST-PURG-EDCH-ILD0", created_at=dt.datetime.now(dt.timezone.utc)))

    def left(handle):
        with gateway.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(portal_handles)
                                .where(portal_handles.c.handle_hash == handle)).scalar()

    with gateway.engine.begin() as conn:
        retention.purge_child(conn, "TEST-PURG-EDCH-ILD0")
    account = Account("LA", unique("hv.sweep.").lower())
    enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user))
    portal.sign_in(account)
    assert (left(purged), left(stale)) == (0, 0)


def test_a_browser_that_signed_in_before_is_not_locked_out_by_a_guesser_at_its_address(portal, gateway, admins):
    from tests.gateway.console.flood import FromAddress

    account = Account("LA", unique("hv.nat.").lower())
    enrol_in_process(gateway, account, _add_practitioner(portal, admins, account.user))
    browser = portal.session()
    browser.mount("https://", FromAddress("127.0.3.1"))
    portal.sign_in(account, session=browser)  # this browser is known now
    portal.post(browser, "/logout", {}, csrf_from="/")
    guesser = portal.session()
    guesser.mount("https://", FromAddress("127.0.3.1"))  # a colleague behind the same NAT address
    for _ in range(5):
        portal.sign_in(Account("LA", account.user, password="not the password at all"), expect_ok=False,
                       code="000000", session=guesser)
    portal.sign_in(account, session=browser)
