"""The portal is plain and accessible (issue 26, item 6), in the distribution's Chromium driven by
Playwright at a phone's width (390 px), against one `contactgate portal` and one browser: every page
a practitioner, a user administrator or a stranger reaches (sign-in, enrolment, search, results,
reason, a child's contacts, the administrator's pages, error pages) has

- no axe-core violation of serious or critical impact (axe-core from the npm registry, pinned in
  tests/a11y/package-lock.json, read from node_modules and evaluated in the page: the test's
  browser context alone bypasses the portal's CSP to run it, the portal's CSP is unchanged);
- a skip link first in the tab order, and every control reached by the keyboard (Tab), each with a
  visible focus outline;
- a label for every field;
- no horizontal scrolling at 390 px.

The pages do not depend on the backend: SQLite only. CONTACTGATE_SCREENSHOTS=DIR saves the pages'
screenshots (made-up children only) for the README (docs/portal/)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest

from tests.gateway.portal.conftest import INVITATION, Account, appoint_admin, enrol_in_process, screenshots
from tests.support import child_update, unique, unique_name

AXE = Path(__file__).parents[2] / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
TODAY = dt.date.today().isoformat()
WIDTH = 390

pytestmark = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)


@pytest.fixture(scope="module")
def axe_source():
    if not AXE.exists():
        if os.environ.get("CONTACTGATE_REQUIRE_BROWSER"):
            raise RuntimeError(f"the accessibility checks need axe-core in {AXE.parents[1]} (`make test` installs it)")
        pytest.skip("axe-core is not installed (tests/a11y: `make test` runs npm ci there)")
    return AXE.read_text()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return screenshots(tmp_path_factory, "a11y-screenshots")


def _detail_form(user: str) -> dict:
    return {"user": user, "name": f"Alex {user.split('.')[-1]}", "role": "health visitor",
            "job_title": "Health visitor", "clearance_number": "001234567890", "clearance_date": TODAY,
            "training_date": TODAY, "end_date": ""}


@pytest.fixture(scope="module")
def people(portal, gateway):
    """LA's two administrators (signed in), a health visitor whose role the second approved
    (enrolled, signed in), and an invitation not yet used: (admin session, visitor session, (user,
    invitation))."""
    first, second = (Account("LA", unique(f"la.a11y{n}.").lower()) for n in (1, 2))
    for account in (first, second):
        enrol_in_process(gateway, account, appoint_admin(gateway, "LA", account.user))
    admin, approver = portal.sign_in(first)[0], portal.sign_in(second)[0]
    made = {}
    for prefix in ("hv.a11y.", "hv.invited."):
        user = unique(prefix).lower()
        answer = portal.post(admin, "/admin/practitioners/new", _detail_form(user), csrf_from="/admin/practitioners/new")
        made[prefix] = (user, INVITATION.search(answer.text).group(1))
        listed = approver.get(f"{portal.url}/admin/practitioners", timeout=15).text
        proposal = re.search(rf"LA:{re.escape(user)}\b.*?/admin/roles/(\d+)/approve", listed, re.S).group(1)
        portal.post(approver, f"/admin/roles/{proposal}/approve", {}, csrf_from="/admin/practitioners")
    user, invitation = made["hv.a11y."]
    visitor = enrol_in_process(gateway, Account("LA", user), invitation)
    return admin, portal.sign_in(visitor)[0], made["hv.invited."]


@pytest.fixture(scope="module")
def child(clients):
    """A made-up child LA holds (its update)."""
    update = child_update(unique("a11y-"), unique_name("Brightwater"), unique_name("Robin"), "2017-05-09")
    clients("la").submit_updates([update])
    return update


_CONTROLS = """() => {
  const all = Array.from(document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])'));
  const shown = all.filter(e => !e.disabled && (e.classList.contains('skip') || e.getClientRects().length > 0));
  shown.forEach((e, i) => e.dataset.kb = String(i));
  const unlabelled = shown.filter(e => ['INPUT', 'SELECT', 'TEXTAREA'].includes(e.tagName)
      && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name || e.id);
  return {count: shown.length, unlabelled: unlabelled,
          first: shown.length ? shown[0].className + ' ' + shown[0].getAttribute('href') : null};
}"""

_FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const style = getComputedStyle(e);
  const box = e.getBoundingClientRect();
  const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
  return {kb: e.dataset.kb ?? null, tag: e.tagName, name: e.name || e.textContent.trim().slice(0, 30),
          visible: outline || style.boxShadow !== 'none', onScreen: box.right > 0 && box.left < window.innerWidth};
}"""

_AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
      .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
}"""


def _check(page, axe_source: str, what: str, shots: Path | None = None) -> None:
    """axe-core, the keyboard, the labels and the width, on the page shown now."""
    page.add_script_tag(content=axe_source)
    serious = page.evaluate(_AXE_RUN)
    assert serious == [], f"{what}: {serious}"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= WIDTH, f"{what}: scrolls sideways"
    controls = page.evaluate(_CONTROLS)
    assert controls["unlabelled"] == [], f"{what}: fields without a label: {controls['unlabelled']}"
    assert controls["first"] == "skip #main", f"{what}: the first control is not the skip link"
    # Start from the top of the page: a focus point before everything, out of the tab order.
    page.evaluate("""() => { const start = document.createElement('span'); start.tabIndex = -1;
                             document.body.prepend(start); start.focus(); }""")
    reached, unseen = [], []
    for _ in range(controls["count"] * 4 + 10):  # a date field is several stops (day, month, year)
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None:
            continue
        if focused["kb"] == "0" and reached:
            break  # round again
        if not reached:
            assert focused["kb"] == "0" and focused["onScreen"], f"{what}: Tab first reaches {focused}, not the skip link"
        if focused["kb"] is not None and focused["kb"] not in reached:
            reached.append(focused["kb"])
        if not (focused["visible"] and focused["onScreen"]):
            unseen.append(focused)
    assert unseen == [], f"{what}: focus not visible on {unseen}"
    assert len(reached) == controls["count"], f"{what}: Tab reaches {len(reached)} of {controls['count']} controls"
    if shots is not None:
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.screenshot(path=str(shots), full_page=True)


def _context(chromium, portal, session=None):
    context = chromium.new_context(ignore_https_errors=True, bypass_csp=True,
                                  viewport={"width": WIDTH, "height": 844})
    if session is not None:
        context.add_cookies([{"name": c.name, "value": c.value, "url": portal.url, "secure": True,
                              "httpOnly": True, "sameSite": "Strict"} for c in session.cookies])
    return context


def test_every_page_is_usable_by_keyboard_labelled_fits_390px_and_has_no_serious_axe_violation(
        portal, gateway, people, child, chromium, axe_source, shots):
    admin, visitor, (invited, invitation) = people
    checked = []

    def check(page, what, shot=None):
        _check(page, axe_source, what, shots / shot if shot else None)
        checked.append(what)

    stranger = _context(chromium, portal)
    page = stranger.new_page()
    page.goto(f"{portal.url}/login")
    check(page, "sign-in", "login.png")
    page.get_by_label("Organisation").fill("LA")
    page.get_by_label("User id").fill("nobody.here")
    page.get_by_label("Password").fill("not the password")
    page.get_by_label("Code from your authenticator app").fill("000000")
    page.get_by_role("button", name="Sign in").click()
    assert "refused" in page.locator("main").inner_text().lower()
    check(page, "sign-in refused")
    page.goto(f"{portal.url}/enrol")
    check(page, "enrol")
    page.get_by_label("Organisation").fill("LA")
    page.get_by_label("User id").fill(invited)
    page.get_by_label("Invitation code").fill(invitation)
    page.get_by_role("button", name="Continue").click()
    assert page.locator("#totp-secret").count() == 1
    check(page, "enrol: the authenticator's secret")
    page.goto(f"{portal.url}/no/such/page")
    check(page, "error page (404)")
    stranger.close()

    practitioner = _context(chromium, portal, visitor)
    page = practitioner.new_page()
    page.goto(f"{portal.url}/")
    check(page, "search", "search.png")
    family = child["Identity"]["FamilyName"]
    page.get_by_label("Family name").fill(family)
    page.get_by_label("Date of birth").fill("2017-05-09")
    page.get_by_label("Reason").select_option("safeguarding")
    page.get_by_label("Why you need it").fill("health visit follow-up")
    page.get_by_role("button", name="Search").click()
    assert family in page.locator("main").inner_text()
    check(page, "results")
    page.get_by_role("button", name=f"Open {family}").first.click()
    check(page, "reason", "reason.png")
    page.get_by_label("Reason").select_option("safeguarding")
    page.get_by_label("Why you need it").fill("contact the school nurse")
    page.get_by_role("button", name="Show contacts").click()
    assert "Children's social care" in page.locator("main").inner_text()
    check(page, "child", "child.png")
    page.goto(f"{portal.url}/")
    page.get_by_label("Family name").fill(family)
    page.get_by_label("NHS number").fill("123")
    page.get_by_label("Reason").select_option("safeguarding")
    page.get_by_label("Why you need it").fill("an NHS number cut short")
    page.get_by_role("button", name="Search").click()
    assert "10 digits" in page.locator("main").inner_text()
    check(page, "search refused")
    page.goto(f"{portal.url}/admin/practitioners")
    check(page, "error page (403)")
    practitioner.close()

    administrator = _context(chromium, portal, admin)
    page = administrator.new_page()
    page.goto(f"{portal.url}/admin/practitioners")
    check(page, "practitioners", "practitioners.png")
    page.get_by_role("link", name="Add a practitioner").click()
    check(page, "add a practitioner")
    user = unique("hv.a11yform.").lower()
    for label, value in [("User id", user), ("Name", "Sol Visitor"), ("Job title", "Health visitor"),
                         ("Clearance certificate number", "001234567890"), ("Clearance date", TODAY),
                         ("Training completed", TODAY)]:
        page.get_by_label(label).fill(value)
    page.get_by_label("Role").select_option("health visitor")
    page.get_by_role("button", name="Add").click()
    assert page.locator("#invitation-code").count() == 1
    check(page, "invitation")
    page.goto(f"{portal.url}/admin/practitioners/{user}")
    check(page, "a practitioner's account")
    page.goto(f"{portal.url}/admin/practitioners/import")
    check(page, "import")
    header = "user_id,name,role,job_title,clearance_number,clearance_date,training_date,end_date"
    page.get_by_label("CSV file of practitioners").set_input_files(files=[{
        "name": "staff.csv", "mimeType": "text/csv",
        "buffer": f"{header}\nhv.one,Ann One,wizard,Nurse,1,{TODAY},{TODAY},\n".encode()}])
    page.get_by_role("button", name="Import").click()
    assert "Nothing was imported" in page.locator("main").inner_text()
    check(page, "import refused")
    page.get_by_label("CSV file of practitioners").set_input_files(files=[{
        "name": "staff.csv", "mimeType": "text/csv",
        "buffer": f"{header}\n{unique('hv.csv.').lower()},Ann One,health visitor,Nurse,1,{TODAY},{TODAY},\n".encode()}])
    page.get_by_role("button", name="Import").click()
    assert "Imported" in page.locator("main").inner_text()
    check(page, "imported", "import.png")
    page.goto(f"{portal.url}/admin/practitioners/nobody.anywhere")
    check(page, "error page (404, signed in)")
    administrator.close()
    assert len(checked) == 19
