"""One `contactgate portal` per backend and module, as a user starts it, on the session's running
gateway (tests/conftest.py: its home, database and organisations), with a roles file of its own;
and what a test needs to act as a practitioner over HTTPS (enrol, sign in with a fresh TOTP code)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pyotp
import pytest
import requests

from gateway.files import write_private
from tests.gateway.console.conftest import running_console

PER_USER_LIMIT = 8  # reads a minute per practitioner at the tests' portal (each test's user reads fewer)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
INVITATION = re.compile(r"invitation code:?\s*(?:<[^>]+>)?\s*([A-Za-z0-9_-]{16,})", re.I)

# What each practitioner role of these tests may see (gateway.index.disclosure): a health visitor
# sees the address, settings and who the practitioners are, but not their phone or email.
ROLES = {"roles": {"health visitor": ["address", "carers", "settings", "practitioners", "lead_professional"],
                   "social worker": ["identifiers", "address", "carers", "carer_contact", "settings",
                                     "practitioners", "practitioner_contact", "lead_professional"],
                   # a contact team's (test_portal_mediation.py): sees for a requester what both roles may
                   "mediator": ["identifiers", "address", "carers", "carer_contact", "settings",
                                "practitioners", "practitioner_contact", "lead_professional"]}}


@dataclasses.dataclass
class Account:
    org: str
    user: str
    password: str = "correct horse battery staple"
    secret: str | None = None
    last_step: int = -1

    def code(self, *, earliest: bool = False) -> str:
        """A code this account has not used (each is good once): waits for the next step if needed.
        ``earliest``: the previous step's code if unused (still accepted for the rest of this step:
        taken only with 5 s or more of it left), so that a test needing three codes waits for none."""
        if earliest and 30 - time.time() % 30 < 5:
            time.sleep(30 - time.time() % 30 + 0.1)
        step = max(int(time.time()) // 30 - (1 if earliest else 0), self.last_step + 1)
        while step > int(time.time()) // 30 + 1:
            time.sleep(0.5)
        self.last_step = step
        return pyotp.TOTP(self.secret).at(step * 30)


@dataclasses.dataclass
class RunningPortal:
    gateway: object
    process: subprocess.Popen
    url: str
    log: Path

    @property
    def public_url(self) -> str:
        """What a browser opens: security keys are bound to https://localhost:PORT, the portal's public
        URL by default when it binds a loopback address (gateway.portal.security_keys.RelyingParty)."""
        return self.url.replace("https://127.0.0.1:", "https://localhost:")

    @property
    def ca(self) -> str:
        return str(self.gateway.home / "ca" / "ca.pem")

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = self.ca
        return s

    def form(self, session: requests.Session, path: str) -> str:
        page = session.get(f"{self.url}{path}", timeout=15)
        assert page.status_code == 200, page.text
        return CSRF.search(page.text).group(1)

    def post(self, session: requests.Session, path: str, data: dict, *, token: str | None = None,
             csrf_from: str | None = None) -> requests.Response:
        data = dict(data)
        if token is None and csrf_from is not None:
            token = self.form(session, csrf_from)
        if token is not None:
            data["csrf_token"] = token
        return session.post(f"{self.url}{path}", data=data, headers={"Referer": f"{self.url}/"}, timeout=15)

    def sign_in(self, account: Account, *, expect_ok: bool = True, code: str | None = None,
                session: requests.Session | None = None) -> tuple[requests.Session, requests.Response]:
        """Sign in with a fresh code (or ``code``: one that does not count as used, e.g. a guesser's)."""
        s = session or self.session()
        answer = self.post(s, "/login", {"org": account.org, "user": account.user, "password": account.password,
                                         "code": code or account.code()}, csrf_from="/login")
        if expect_ok:
            assert answer.status_code == 200 and "Sign out" in answer.text, answer.text
        return s, answer


def enrol_in_process(gateway, account: Account, invitation: str, *, earliest: bool = True,
                     ago: int = 0) -> Account:
    """Enrol through gateway.portal.accounts in this process: the same code as the portal's enrolment
    page, but the password hashed at the tests' argon2id cost (tests/conftest.py), so that every
    later sign-in at the portal verifies it cheaply (a hash carries its cost). The page itself is
    tested once, in the browser, at the product's cost. The code is the previous step's when it is
    still good (``earliest``: used at once, here), so that an account's next two codes wait for none.
    ``ago``: seconds by which the enrolment's clock (accounts.enrol's ``now``, the clock the product
    lets a caller give) is set back, its code that moment's step: an account enrolled a minute ago,
    whose next three codes (``code(earliest=True)``, then ``code()`` twice) wait for none."""
    import datetime as dt

    from gateway import audit
    from gateway.config import Settings
    from gateway.portal import accounts

    trail = audit.AuditTrail.of_home(Settings.from_env({}, home=str(gateway.home),
                                                       database_url=gateway.database_url).layout)
    with gateway.engine.connect() as conn:
        _, account.secret = accounts.enrolment_secret(conn, account.org, account.user, invitation)
    if ago:
        now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=ago)
        account.last_step = int(now.timestamp()) // 30
        accounts.enrol(gateway.engine, trail, account.org, account.user, invitation, account.password,
                       pyotp.TOTP(account.secret).at(account.last_step * 30), now=now)
    else:
        accounts.enrol(gateway.engine, trail, account.org, account.user, invitation, account.password,
                       account.code(earliest=earliest))
    return account


def appoint_admin(gateway, org: str, user: str, name: str = "User Admin") -> str:
    """Officers appoint ``org``'s user administrator (officer-a proposes, officer-b approves); the
    invitation code the approval prints."""
    proposed = gateway.cli("portal-admin", "propose", org, user, "--name", name, "--job-title", "IT manager",
                           officer="officer-a")
    proposal = re.search(r"proposal (\d+)", proposed.output).group(1)
    approved = gateway.cli("portal-admin", "approve", proposal, officer="officer-b")
    return INVITATION.search(approved.output).group(1)


@pytest.fixture(scope="module")
def portal(gateway, tmp_path_factory):
    roles = tmp_path_factory.mktemp("portal") / "roles.json"
    write_private(roles, json.dumps(ROLES).encode())
    env = {"CONTACTGATE_ROLES_FILE": str(roles), "CONTACTGATE_SIGNIN_PER_MINUTE": "100000",
           "CONTACTGATE_RATE_LIMIT_PER_USER": str(PER_USER_LIMIT)}
    with running_console(gateway, env, command="portal") as running:
        yield RunningPortal(gateway, running.process, running.url, running.log)


# ---- in the browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium():
    """The distribution's Chromium driven by Playwright, one per module: skipped where there is none,
    an error under CONTACTGATE_REQUIRE_BROWSER."""
    if CHROMIUM is None:
        if os.environ.get("CONTACTGATE_REQUIRE_BROWSER"):
            raise RuntimeError("the browser tests need the distribution's chromium (`make browser`)")
        pytest.skip("no chromium on this machine: `make browser` installs it")
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def screenshots(tmp_path_factory, name: str) -> Path:
    """Where a browser test saves its screenshots: CONTACTGATE_SCREENSHOTS=DIR keeps them (docs/portal/),
    else a temporary folder ``name``."""
    directory = Path(os.environ.get("CONTACTGATE_SCREENSHOTS") or tmp_path_factory.mktemp(name))
    directory.mkdir(parents=True, exist_ok=True)
    return directory
