"""The console's sign-in, sessions and authorisation: every page and action against every role,
forged requests without a CSRF token, the proposer approving their own proposal, the step-up."""

from __future__ import annotations

import io
import re
import secrets

import pytest
from sqlalchemy import select

from gateway.db import audit_log, certificates, officer_signin_failures
from gateway.trust import pki

PAGES = ["/", "/organisations", "/organisations/LA", "/proposals"]
# Actions that change the registry: what each needs (officer; a senior officer can do what an officer can).
ACTIONS = [
    ("/organisations/new", {"code": "X_FORGED", "name": "Forged", "kind": "other"}),
    ("/organisations/LA/accredit", {"scope": "query", "expires": "2030-01-01", "evidence": "x"}),
    ("/organisations/LA/suspend", {"reason": "forged"}),
    ("/organisations/LA/revoke", {"reason": "forged"}),
    ("/organisations/LA/reinstate", {"reason": "forged"}),
    ("/organisations/LA/certificates", {}),
    ("/proposals/1/approve", {}),
    ("/proposals/1/decline", {"reason": "forged"}),
]


def last_audit(gateway, operation: str):
    with gateway.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.operation == operation)
                            .order_by(audit_log.c.seq.desc()).limit(1)).first()


def test_every_answer_is_hardened(browser):
    response = browser().get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert "<script" not in html and " style=" not in html
    for field in ("officer", "password", "code"):
        assert f'<label for="{field}">' in html and f'id="{field}"' in html


def test_the_session_cookie_is_secure_httponly_strict(browser):
    b = browser()
    b.get("/login")
    response = b.post("/login", {"officer": "alice", "password": b.password("alice"), "code": b.code("alice")})
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert b.password("alice") not in cookie


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_a_session(browser, path):
    response = browser().get(path)
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def test_a_wrong_code_is_refused_and_audited(browser, registry_home):
    b = browser()
    b.get("/login")
    response = b.post("/login", {"officer": "bob", "password": b.password("bob"), "code": "000000"})
    assert response.status_code == 401
    assert "Sign-in refused" in response.get_data(as_text=True)
    row = last_audit(registry_home, "officer.login")
    assert row.outcome == "refused" and row.user_id == "bob" and "wrong code" in row.detail
    assert browser().get("/").status_code == 302


def test_a_wrong_password_and_an_unknown_officer_get_the_same_answer(browser):
    b = browser()
    b.get("/login")
    wrong = b.post("/login", {"officer": "carol", "password": "not-her-password", "code": b.code("carol")})
    b.get("/login")
    unknown = b.post("/login", {"officer": "nobody-here", "password": "whatever-password", "code": "123456"})
    assert wrong.status_code == unknown.status_code == 401
    def message(response):
        return response.get_data(as_text=True).split('role="alert">', 1)[1].split("<", 1)[0]
    assert message(wrong) == message(unknown) and "Sign-in refused" in message(wrong)


def test_repeated_failures_lock_the_account(browser, registry_home):
    b = browser()
    for _ in range(5):
        b.get("/login")
        b.post("/login", {"officer": "dm-1", "password": "wrong-password-x", "code": "000000"})
    b.get("/login")
    response = b.post("/login", {"officer": "dm-1", "password": b.password("dm-1"), "code": b.code("dm-1")})
    assert response.status_code == 401  # right password and code, but locked
    assert "locked" in last_audit(registry_home, "officer.login").detail
    with registry_home.engine.begin() as conn:  # unlock for the other tests
        conn.execute(officer_signin_failures.delete().where(officer_signin_failures.c.officer_id == "dm-1"))


def test_a_form_without_its_csrf_token_is_refused(browser, registry_home):
    b = browser("officer-a")
    response = b.post("/organisations/new", {"code": "NO_CSRF", "name": "No token", "kind": "other"}, csrf=False)
    assert response.status_code == 400
    response = b.post("/organisations/new", {"code": "NO_CSRF", "name": "No token", "kind": "other",
                                             "csrf_token": "forged" + b.csrf[6:]}, csrf=False)
    assert response.status_code == 400
    assert "NO_CSRF" not in b.get("/organisations").get_data(as_text=True)


def test_sign_in_itself_needs_the_csrf_token(browser):
    b = browser()
    response = b.post("/login", {"officer": "alice", "password": b.password("alice"), "code": b.code("alice")},
                      csrf=False)
    assert response.status_code == 400 and browser().get("/").status_code == 302


@pytest.mark.parametrize("officer_id", ["dora", "auditor-1"])
def test_readers_without_the_officer_role_see_but_cannot_act(browser, registry_home, officer_id):
    b = browser(officer_id)
    for path in PAGES:
        assert b.get(path).status_code == 200, path
    for path in PAGES:  # no form but signing out
        assert b.get(path).get_data(as_text=True).count('method="post"') == 1, path
    before = registry_home.cli("org", "show", "LA", "--json").output
    for path, data in ACTIONS:
        response = b.post(path, data, step_up=path.endswith(("suspend", "revoke", "approve", "decline")))
        assert response.status_code == 403, (path, response.status_code)
        assert "needs the role officer" in response.get_data(as_text=True)
    assert registry_home.cli("org", "show", "LA", "--json").output == before
    with registry_home.engine.connect() as conn:  # each refusal is in the chain, with its officer
        rows = conn.execute(select(audit_log).where(audit_log.c.operation == "officer.refused",
                                                    audit_log.c.user_id == officer_id)).all()
    assert len(rows) == len(ACTIONS) and all(r.outcome == "refused" for r in rows)


def test_the_proposer_has_no_approve_button_and_a_forged_approval_is_refused(browser, registry_home):
    alice = browser("alice")
    alice.post("/organisations/new", {"code": "school_1", "name": "School One", "kind": "education"})
    response = alice.post("/organisations/SCHOOL_1/accredit",
                          {"scope": ["query"], "expires": "2027-06-30", "evidence": "ISA-2026-17"})
    page = alice.get("/organisations/SCHOOL_1").get_data(as_text=True)
    assert "You made this proposal" in page and "Approve proposal" not in page
    proposal = int(registry_home.pending_proposal("SCHOOL_1"))
    forged = alice.post(f"/proposals/{proposal}/approve", step_up=True)
    assert forged.status_code == 302
    assert "Not done" in alice.get("/organisations/SCHOOL_1").get_data(as_text=True)
    assert '"status": "pending_approval"' in registry_home.cli("org", "show", "SCHOOL_1", "--json").output

    bob = browser("bob")
    page = bob.get("/organisations/SCHOOL_1").get_data(as_text=True)
    assert f"Approve proposal {proposal}" in page and "alice" in page and "expires=2027-06-30" in page
    # Without the step-up (a used code), nothing is approved.
    bob.post(f"/proposals/{proposal}/approve", {"password": bob.password(), "code": "000000"})
    assert '"status": "pending_approval"' in registry_home.cli("org", "show", "SCHOOL_1", "--json").output
    assert last_audit(registry_home, "officer.step_up").outcome == "refused"
    bob.post(f"/proposals/{proposal}/approve", step_up=True)
    shown = registry_home.cli("org", "show", "SCHOOL_1", "--json").output
    assert '"status": "accredited"' in shown and '"approved_by": "bob"' in shown
    approval = last_audit(registry_home, "org.approve")
    assert approval.user_id == "bob" and f"proposal {proposal}" in approval.detail


def test_the_console_makes_no_key_pair(browser, registry_home):
    b = browser("carol")
    with registry_home.engine.connect() as conn:
        before = len(conn.execute(select(certificates)).all())
    response = b.post("/organisations/LA/certificates")
    assert response.status_code == 302 and response.mimetype != "application/zip"
    assert "the console never makes a key" in b.get("/organisations/LA").get_data(as_text=True)
    with registry_home.engine.connect() as conn:
        assert len(conn.execute(select(certificates)).all()) == before


def test_a_weak_or_foreign_csr_is_refused_and_nothing_registered(browser, registry_home):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    b = browser("carol")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HEALTH")]))
           .sign(key, hashes.SHA256()))
    with registry_home.engine.connect() as conn:
        before = len(conn.execute(select(certificates)).all())
    response = b.post("/organisations/LA/certificates",
                      {"csr": (io.BytesIO(csr.public_bytes(serialization.Encoding.PEM)), "la.csr")},
                      content_type="multipart/form-data")
    assert response.status_code == 302
    assert "Not done" in b.get("/organisations/LA").get_data(as_text=True)
    with registry_home.engine.connect() as conn:
        assert len(conn.execute(select(certificates)).all()) == before


def test_a_certificate_is_revoked_with_a_reason_after_the_step_up(browser, registry_home):
    b = browser("carol")
    directory = registry_home.issue_cert("LA", "la-to-revoke")
    fp = pki.fingerprint(pki.load_cert_pem((directory / "cert.pem").read_bytes()))
    b.post(f"/certificates/{fp}/revoke", {"reason": "laptop lost"}, step_up=True)
    with registry_home.engine.connect() as conn:
        row = conn.execute(select(certificates).where(certificates.c.fingerprint == fp)).one()
    assert row.revoked_at is not None and row.revoked_reason == "laptop lost"
    crl = (registry_home.home / "ca" / "crl.pem").read_bytes()
    from cryptography import x509
    assert x509.load_pem_x509_crl(crl).get_revoked_certificate_by_serial_number(
        int(row.serial, 16) if not row.serial.isdigit() else int(row.serial)) is not None


def test_an_idle_session_ends(browser, clock):
    b = browser("officer-b")
    assert b.get("/").status_code == 200
    clock.advance(minutes=16)
    response = b.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def test_signing_out_ends_the_session_on_the_server(browser):
    b = browser("senior-s")
    cookie = b.client.get_cookie("contactgate_console", domain="localhost")
    b.post("/logout")
    assert b.get("/").status_code == 302
    replay = browser()
    replay.client.set_cookie("contactgate_console", cookie.value, domain="localhost")
    assert replay.get("/").status_code == 302  # the old cookie no longer opens a session


def test_a_request_leaves_no_audit_origin_behind_in_its_thread(browser, console, registry_home):
    """What a console request audits names its address and request id; once the request is over,
    the thread that served it is back to naming nobody, so nothing it audits later (another server
    in the same process, a command run in-process) is put down to that request's address."""
    from gateway import audit
    from gateway.audit.chain import _ORIGIN

    b = browser()
    b.get("/login")
    response = b.post("/login", {"officer": "bob", "password": b.password("bob"), "code": "000000"})
    assert response.status_code == 401
    entry = last_audit(registry_home, "officer.login")
    assert entry.source_address == "127.0.0.1" and entry.request_id == response.headers["X-Request-Id"]
    assert _ORIGIN.get() == (None, None)
    with registry_home.engine.begin() as conn:
        console.extensions["contactgate"]["trail"].append(conn, audit.Entry(operation="unattributed",
                                                                            outcome="done"))
    entry = last_audit(registry_home, "unattributed")
    assert entry.source_address is None and entry.request_id is None


def test_the_accreditation_expiry_is_typed_as_its_label_says(browser):
    """The field is labelled YYYY-MM-DD: a browser's date picker would show it in the browser's
    locale (07/12/2027, 12/7/2027) instead. It is a text field holding YYYY-MM-DD, checked so."""
    import re

    page = browser("alice").get("/organisations/LA").get_data(as_text=True)
    [field] = re.findall(r"<input id=\"expires\"[^>]*>", page)
    assert 'type="date"' not in field and 'pattern="[0-9]{4}-[0-9]{2}-[0-9]{2}"' in field
    assert re.search(r'value="\d{4}-\d{2}-\d{2}"', field) and 'placeholder="YYYY-MM-DD"' in field


def test_a_step_up_with_the_sign_ins_own_code_keeps_what_was_typed_and_says_to_wait(browser, registry_home):
    """An officer who signs in and declines within the same 30 s gives the code the sign-in used:
    refused (each code works once), but the reason typed is kept and the page says to wait for
    the next code; with the next code the decline goes through with that reason."""
    import pyotp

    alice = browser("alice")
    alice.post("/organisations/new", {"code": "school_w", "name": "School W", "kind": "education"})
    alice.post("/organisations/SCHOOL_W/accredit", {"scope": ["query"], "expires": "2027-06-30", "evidence": "ISA-9"})
    proposal = int(registry_home.pending_proposal("SCHOOL_W"))
    bob = browser("bob")  # signed in just now, with the current code
    _, secret = registry_home.officer_secrets("bob")
    same_code = pyotp.TOTP(secret).at(bob.clock.now)
    reason = "The agreement ISA-9 is unsigned; ask the school for the signed copy"
    refused = bob.post(f"/proposals/{proposal}/decline", {"reason": reason, "password": bob.password(),
                                                          "code": same_code})
    page = refused.get_data(as_text=True)  # the form shown again with what was posted
    assert "wait for the next code" in page
    assert f'value="{reason}"' in page  # what was typed is still in the form
    assert '"status": "pending_approval"' in registry_home.cli("org", "show", "SCHOOL_W", "--json").output
    bob.post(f"/proposals/{proposal}/decline", {"reason": reason}, step_up=True)
    assert last_audit(registry_home, "org.decline").detail.find("unsigned") >= 0
    assert f'value="{reason}"' not in bob.get("/organisations/SCHOOL_W").get_data(as_text=True)


def test_a_refused_step_up_says_the_same_whatever_was_wrong_and_keeps_the_reason_out_of_the_cookie(
        browser, registry_home):
    """Review LOW (console): a step-up refused with the sign-in's own code says the same with a wrong
    password as with the right one (no password oracle for whoever holds the session), and the
    decline's reason is shown again in the form re-rendered from what was posted, never put in the
    session cookie (signed, not encrypted: it holds a token only). A suspend whose reason is not kept
    does not say it is."""
    import pyotp

    alice = browser("alice")
    alice.post("/organisations/new", {"code": "school_x", "name": "School X", "kind": "education"})
    alice.post("/organisations/SCHOOL_X/accredit", {"scope": ["query"], "expires": "2027-06-30", "evidence": "ISA-9"})
    proposal = int(registry_home.pending_proposal("SCHOOL_X"))
    bob = browser("bob")
    _, secret = registry_home.officer_secrets("bob")
    same_code = pyotp.TOTP(secret).at(bob.clock.now)
    note = f"note{secrets.token_hex(8)}"  # long enough that no signed cookie holds it by chance ("7Q" once did)
    reason = f"Unsigned agreement, private {note}"
    pages = []
    for password in (bob.password(), "not-the-password"):
        refused = bob.post(f"/proposals/{proposal}/decline", {"reason": reason, "password": password,
                                                              "code": same_code})
        assert refused.status_code == 200, refused.status_code  # the form shown again, not a redirect
        page = refused.get_data(as_text=True)
        assert f'value="{reason}"' in page and "wait for the next code" in page
        pages.append(re.search(r'class="flash[^"]*"[^>]*>([^<]*)', page)[1])
        cookie = " ".join(refused.headers.getlist("Set-Cookie"))
        assert note not in cookie and "kept_reasons" not in _session_of(bob)
    assert pages[0] == pages[1]
    refused = bob.post("/organisations/SCHOOL_X/suspend", {"reason": "x", "password": "wrong", "code": same_code})
    page = bob.get(refused.headers["Location"]).get_data(as_text=True) if refused.status_code == 302 else \
        refused.get_data(as_text=True)
    assert "What you typed is kept" not in page


def _session_of(browser) -> str:
    """The console's session cookie, decoded (it is signed, not encrypted)."""
    import base64
    import zlib

    cookie = browser.client.get_cookie("session", domain="localhost")
    if cookie is None:
        return ""
    value = cookie.value
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(data) if compressed else data).decode()


def test_an_answer_that_changes_nothing_in_the_session_sets_no_cookie(browser):
    """As the portal's (tests/gateway/portal/test_portal_web.py): a late answer (a favicon's) that
    re-sent the cookie its request came with could undo a newer one holding a form's CSRF token."""
    alice = browser("alice")
    alice.get("/")
    for path in ("/static/console.css", "/static/favicon.svg", "/"):
        answer = alice.get(path)
        assert answer.status_code == 200 and not answer.headers.getlist("Set-Cookie"), (path, answer.headers)
