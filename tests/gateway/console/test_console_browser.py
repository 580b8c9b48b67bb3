"""End to end in a real browser: Chromium from the distribution, driven by Playwright, against a
console started as a user starts it (`contactgate console`). Two officers sign in with password and
TOTP, onboard an organisation from scratch (one proposes, the other approves), a certificate is
proposed from the organisation's CSR, approved by a second officer and revoked, an auditor downloads a report. Screenshots of the main pages are saved
(CONTACTGATE_SCREENSHOTS=DIR keeps them; the README shows them)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from gateway.files import write_private
from contactgate_local import free_port
from gateway.trust import pki

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CONTACTGATE_REQUIRE_BROWSER"):
        raise RuntimeError("the browser tests need the distribution's chromium (`make browser` installs it)")
    pytest.skip("no chromium on this machine: `make browser` installs it", allow_module_level=True)
from playwright import sync_api as playwright_api  # noqa: E402  (pinned in the test extra)


@pytest.fixture(scope="module")
def traffic(registry_home):
    """Real exchanges for the dashboard: LA pings the running gateway, and is refused a shielding
    (LA holds no shield scope)."""
    from connectors.client import GatewayError

    registry_home.start(workers=1)
    client = registry_home.client("la")
    for user in ("sw.jones", "sw.patel", "sw.jones"):
        client.ping(user_id=user, role="social worker")
    with pytest.raises(GatewayError):
        client.set_shielding("7K2M-9XD4-T1BZ-R8Q3", True, user_id="sw.jones", role="social worker",
                             reason_code="other", reason_text="dashboard test")
    registry_home.stop()


@pytest.fixture(scope="module")
def console_url(registry_home, traffic):
    port = free_port()
    log = registry_home.home / "console.log"
    write_private(log, b"")
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "console", "--bind", f"127.0.0.1:{port}",
                                    "--workers", "1"], env=registry_home.env(), stdout=out, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{url}/login", verify=str(registry_home.home / "ca" / "ca.pem"), timeout=2)
            break
        except requests.RequestException:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("console did not start:\n" + log.read_text())
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(15)


@pytest.fixture(scope="module")
def chromium():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    directory = Path(os.environ.get("CONTACTGATE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def credentials_public_numbers(key_path: Path):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(key_path.read_bytes(), None).public_key().public_numbers()


class Officer:
    def __init__(self, chromium, url, gateway, officer_id, *, width=1280, height=800):
        self.context = chromium.new_context(ignore_https_errors=True, accept_downloads=True,
                                            viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.url, self.gateway, self.officer_id = url, gateway, officer_id

    def code(self) -> str:
        """A code this officer has not used. The first (no code of this officer's used yet) is the
        previous step's when 10 s or more of this step are left (it is good until the step ends: the
        browser types and sends it well within that on a busy machine), so that an officer's three
        codes (a sign-in and two step-ups) need no new step; else, and after it, the harness's next
        unused one (registry_home.totp_code), as before: never a wait of its own."""
        used = getattr(self.gateway, "_totp_steps", {})
        if self.officer_id in used or 30 - time.time() % 30 < 10:
            return self.gateway.totp_code(self.officer_id)
        import pyotp

        step = int(time.time()) // 30 - 1
        self.gateway._totp_steps = {**used, self.officer_id: step}
        return pyotp.TOTP(self.gateway.officer_secrets(self.officer_id)[1]).at(step * 30)

    def sign_in(self, by_keyboard: bool = False):
        page = self.page
        page.goto(f"{self.url}/")
        assert page.url.endswith("/login")
        password, _ = self.gateway.officer_secrets(self.officer_id)
        if by_keyboard:  # the officer field has the focus; Tab moves through the form; Enter submits
            page.wait_for_function("document.activeElement && document.activeElement.id === 'officer'")
            page.keyboard.type(self.officer_id)
            page.keyboard.press("Tab")
            page.keyboard.type(password)
            page.keyboard.press("Tab")
            page.keyboard.type(self.code())
            page.keyboard.press("Enter")
        else:
            page.get_by_label("Officer id").fill(self.officer_id)
            page.get_by_label("Password").fill(password)
            page.get_by_label("Code from your authenticator app").fill(self.code())
            page.get_by_role("button", name="Sign in").click()
        try:
            page.wait_for_url(f"{self.url}/", timeout=15_000)
        except playwright_api.TimeoutError:
            raise AssertionError(f"{self.officer_id} was not signed in: {page.url}\n"
                                 f"{page.locator('main').inner_text()}") from None
        assert page.get_by_role("heading", name="Dashboard").is_visible()
        return self

    def step_up(self, form):
        password, _ = self.gateway.officer_secrets(self.officer_id)
        form.get_by_label("Password").fill(password)
        form.get_by_label("Current code").fill(self.code())

    def close(self):
        self.context.close()


def test_two_officers_onboard_an_organisation_and_an_auditor_downloads_a_report(
        chromium, console_url, registry_home, shots, tmp_path):
    alice = Officer(chromium, console_url, registry_home, "alice").sign_in(by_keyboard=True)
    page = alice.page
    refusals = page.locator("section", has_text="Refusals in the last 24 hours").inner_text()
    assert "LA" in refusals and "ScopeDenied" in refusals  # the refused shielding, by organisation and code
    assert page.locator("svg.chart rect").count() == 1  # LA's exchanges, drawn on the server

    # Register, then propose accreditation with an evidence document.
    page.get_by_role("link", name="Organisations").click()
    page.get_by_label("Code (letters").fill("e2e_school")
    page.get_by_label("Name").fill("E2E Primary School")
    page.get_by_label("Kind").select_option("education")
    page.get_by_role("button", name="Register").click()
    assert page.get_by_role("heading", name="E2E_SCHOOL · E2E Primary School").is_visible()
    page.get_by_label("query").check()
    page.get_by_label("Evidence reference").fill("ISA-2026-E2E")
    evidence = tmp_path / "agreement.txt"
    evidence.write_text("information sharing agreement, signed")
    page.get_by_label("Evidence documents").set_input_files(str(evidence))
    page.get_by_role("button", name="Propose").click()
    assert "a second officer approves it" in page.get_by_role("status").first.inner_text()
    assert page.get_by_text("You made this proposal").is_visible()
    assert page.get_by_role("button", name="Approve proposal").count() == 0  # four-eyes, visibly
    page.screenshot(path=str(shots / "organisation-proposed.png"), full_page=True)

    # A second officer approves, confirming with password and a fresh code.
    bob = Officer(chromium, console_url, registry_home, "bob").sign_in()
    bob.page.get_by_role("link", name="Approvals").click()
    proposal = bob.page.locator("article.proposal", has_text="E2E_SCHOOL")
    assert "alice" in proposal.inner_text() and "ISA-2026-E2E" in proposal.inner_text()
    assert "agreement.txt" in proposal.inner_text()  # its SHA-256 is recorded beside the name
    bob.page.screenshot(path=str(shots / "approvals.png"), full_page=True)
    approve = proposal.locator("form").first
    bob.step_up(approve)
    approve.get_by_role("button", name="Approve proposal").click()
    assert "Approved proposal" in bob.page.get_by_role("status").first.inner_text()
    assert bob.page.locator(".facts .status").inner_text() == "accredited"

    # The organisation's CSR (its key stays with it): alice proposes the certificate; the console
    # offers no key pair. Bob approves it with the step-up, and downloads the certificate.
    from connectors import credentials

    made = credentials.make_request("E2E_SCHOOL", tmp_path / "e2e-school")
    page.reload()
    page.get_by_label("The organisation's certificate signing request").set_input_files(str(made.request_path))
    page.get_by_role("button", name="Ask a second officer to approve the certificate").click()
    assert "the certificate is signed then" in page.get_by_role("status").first.inner_text()
    assert page.locator("#certificates tr", has_text="No certificates").is_visible()
    bob.page.reload()
    proposal = bob.page.locator("article.proposal", has_text="cert_issue")
    assert made.public_key_sha256 in proposal.inner_text()  # what bob compares with the organisation
    approve = proposal.locator("form").first
    bob.step_up(approve)
    approve.get_by_role("button", name="Approve proposal").click()
    assert "download it below" in bob.page.get_by_role("status").first.inner_text()
    with bob.page.expect_download() as download:
        bob.page.locator("#certificates a", has_text="Download").first.click()
    issued = pki.load_cert_pem(Path(download.value.path()).read_bytes())
    assert issued.public_key().public_numbers() == credentials_public_numbers(made.key_path)
    fp = pki.fingerprint(issued)
    page.reload()
    assert page.locator("#certificates tr", has_text=fp).is_visible()
    page.screenshot(path=str(shots / "organisation-accredited.png"), full_page=True)

    # ... and revokes it with a reason, after the step-up.
    row = page.locator("#certificates tr", has_text=fp)
    row.get_by_label("Reason").fill("test of revocation")
    alice.step_up(row)
    row.get_by_role("button", name="Revoke").click()
    assert "revoked" in page.get_by_role("status").first.inner_text()
    assert "revoked" in page.locator("#certificates tr", has_text=fp).inner_text()

    page.get_by_role("link", name="Dashboard").click()
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    # An auditor downloads what alice did to the organisation.
    auditor = Officer(chromium, console_url, registry_home, "auditor-1").sign_in()
    auditor.page.get_by_role("link", name="Audit").click()
    auditor.page.get_by_label("a user (what they accessed)").check()
    auditor.page.get_by_label("Child id, or ORG:USER").fill("E2E_School:alice")
    auditor.page.get_by_role("button", name="Show the report").click()
    assert auditor.page.get_by_role("cell", name="cert.revoke").is_visible()
    auditor.page.screenshot(path=str(shots / "audit.png"), full_page=True)
    with auditor.page.expect_download() as download:
        auditor.page.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {"org.add", "org.accredit", "cert.propose", "cert.revoke"} <= {r["operation"] for r in rows}
    assert "E2E_SCHOOL" not in auditor.page.url and "alice" not in auditor.page.url
    for officer in (alice, bob, auditor):
        officer.close()


def test_no_script_runs_and_the_page_fits_a_narrow_window(chromium, console_url, registry_home, shots):
    narrow = Officer(chromium, console_url, registry_home, "carol", width=390, height=844)
    errors = []
    narrow.page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    narrow.sign_in()
    narrow.page.get_by_role("link", name="Organisations").click()
    narrow.page.wait_for_url(f"{console_url}/organisations")
    narrow.page.wait_for_load_state("load")  # the stylesheet applied before the width is measured
    assert narrow.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    narrow.page.screenshot(path=str(shots / "organisations-narrow.png"), full_page=True)
    assert narrow.page.evaluate("document.scripts.length") == 0
    assert errors == [], errors  # no CSP violation, no missing file
    # The skip link is the first stop of the keyboard, and leads to the content.
    narrow.page.keyboard.press("Tab")
    assert narrow.page.evaluate("document.activeElement.textContent") == "Skip to content"
    narrow.close()
