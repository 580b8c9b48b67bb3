"""A user administrator imports their organisation's practitioners from a CSV file (issue 26, item 2):
the parser's bounds and line-numbered problems (in this process), and the upload page end to end on
each backend, against the module's `contactgate portal` (conftest.py): all or nothing, each account
audited, the invitations shown once (or exported once as CSV), only the administrator's own
organisation, a re-upload reporting the accounts that exist instead of duplicating them, and the
larger form limit for that page only."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest

from tests.gateway.portal.conftest import ROLES, Account, appoint_admin, enrol_in_process
from tests.support import unique



TODAY = dt.date.today().isoformat()
HEADER = "user_id,name,role,job_title,clearance_number,clearance_date,training_date,end_date"


def _rules_file():
    import json
    import tempfile
    from pathlib import Path

    from gateway.index import disclosure

    path = Path(tempfile.mkdtemp()) / "roles.json"
    path.write_text(json.dumps(ROLES))
    return disclosure.load(path)


def _line(user: str, *, name: str = "Pat Practitioner", role: str = "health visitor", job: str = "Health visitor",
          number: str = "001234567890", cleared: str = TODAY, trained: str = TODAY, end: str = "") -> str:
    return ",".join([user, name, role, job, number, cleared, trained, end])


def _parse(text: str | bytes, org: str = "LA"):
    from gateway.portal import bulk

    data = text.encode() if isinstance(text, str) else text
    return bulk.parse(data, org, _rules_file())


# ---- the parser (no portal) ---------------------------------------------------------------------------


def test_a_good_file_parses_with_a_byte_order_mark_and_its_rows_keep_their_line_numbers():
    rows = _parse(b"\xef\xbb\xbf" + f"{HEADER}\r\n{_line('hv.one')}\r\n\r\n{_line('HV.Two', end='2030-01-31')}\r\n".encode())
    assert [(r.line, r.user_id, r.details.role) for r in rows] == [(2, "hv.one", "health visitor"),
                                                                   (4, "hv.two", "health visitor")]
    assert rows[1].details.end_date == dt.date(2030, 1, 31)


def test_every_bad_row_is_reported_with_its_line_number_not_only_the_first():
    from gateway.portal import bulk

    text = "\n".join([HEADER, _line("hv.ok"), _line("hv.role", role="wizard"), _line("bad id!"),
                      _line("hv.date", cleared="14/03/2016"), _line("hv.ok"), _line("hv.short")[:-20],
                      _line("hv.novet", number=""), "=cmd|' /C calc'!A0,x,,Job,,,,"])
    with pytest.raises(bulk.ImportRefused) as refused:
        _parse(text)
    problems = refused.value.problems
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8",
                                                   "line 9"]
    assert "role" in problems[0] and "health visitor" in problems[0]
    assert "user id" in problems[1]
    assert "date" in problems[2] and "YYYY-MM-DD" in problems[2]
    assert "more than once" in problems[3] and "line 2" in problems[3]
    assert "8 fields" in problems[4]
    assert "clearance" in problems[5]


def test_the_file_the_rows_and_each_field_are_bounded_and_text_must_be_utf8():
    from gateway.portal import bulk

    for data, said in [
        (b"x" * (bulk.MAX_IMPORT_BYTES + 1), "larger than"),
        (f"{HEADER}\n".encode() + "\n".join(_line(f"hv.{i}") for i in range(bulk.MAX_ROWS + 1)).encode(),
         f"more than {bulk.MAX_ROWS}"),
        (f"{HEADER}\n{_line('hv.long', name='N' * (bulk.MAX_FIELD + 1))}".encode(), "line 2"),
        (f"{HEADER}\n{_line('hv.latin', name='Zoë')}".encode("latin-1"), "UTF-8"),
        (b"", "no header"),
        (b"user_id,name,colour\n", "columns"),
        (f"{HEADER}\n".encode(), "no practitioners"),
        (f"{HEADER}\n{_line('hv.nul', name='a' + chr(0) + 'b')}".encode(), "line 2"),
    ]:
        with pytest.raises(bulk.ImportRefused) as refused:
            _parse(data)
        assert said in " ".join(refused.value.problems), (said, refused.value.problems)
    with pytest.raises(bulk.ImportRefused) as refused:
        _parse(f"{HEADER}\n{_line('hv.long', name='N' * (bulk.MAX_FIELD + 1))}")
    assert f"at most {bulk.MAX_FIELD}" in refused.value.problems[0]


def test_a_row_naming_another_organisation_is_refused():
    from gateway.portal import bulk

    with pytest.raises(bulk.ImportRefused) as refused:
        _parse(f"organisation,{HEADER}\nLA,{_line('hv.mine')}\nHEALTH,{_line('hv.theirs')}\n")
    [problem] = refused.value.problems
    assert problem.startswith("line 3:") and "HEALTH" in problem and "LA" in problem
    assert [r.user_id for r in _parse(f"organisation,{HEADER}\nla,{_line('hv.mine')}\n")] == ["hv.mine"]


def test_the_exported_invitations_cannot_run_as_spreadsheet_formulas():
    from gateway.portal import bulk

    assert [bulk.cell(v) for v in ("=1+1", "+44 113", "-2", "@SUM(A1)", "\tx", "Plain", "")] == [
        "'=1+1", "'+44 113", "'-2", "'@SUM(A1)", "'\tx", "Plain", ""]


# ---- the upload page, end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(portal, gateway):
    """An enrolled user administrator of LA, signed in (their session)."""
    account = Account("LA", unique("la.bulk.").lower())
    enrol_in_process(gateway, account, appoint_admin(gateway, "LA", account.user))
    return portal.sign_in(account)[0]


def _upload(portal, session, text: str | bytes, *, export: bool = False, path: str = "/admin/practitioners/import"):
    token = portal.form(session, "/admin/practitioners/import")
    data = text.encode() if isinstance(text, str) else text
    fields = {"csrf_token": token, **({"export": "csv"} if export else {})}
    return session.post(f"{portal.url}{path}", data=fields, files={"file": ("staff.csv", data, "text/csv")},
                        headers={"Referer": f"{portal.url}/"}, timeout=30)


def _accounts(gateway, org: str, users) -> dict:
    from sqlalchemy import select

    from gateway.db import portal_practitioners as table

    with gateway.engine.connect() as conn:
        return {r.user_id: r for r in conn.execute(select(table).where(table.c.org_code == org,
                                                                       table.c.user_id.in_(list(users))))}


def test_an_import_creates_every_account_or_none_and_shows_each_invitation_once(portal, gateway, admin):
    users = [unique("hv.bulk.").lower() for _ in range(3)]
    bad = "\n".join([HEADER, _line(users[0]), _line(users[1], role="wizard"), _line(users[2], trained="soon")])
    seq = gateway.audit_seq()
    refused = _upload(portal, admin, bad)
    assert refused.status_code == 400 and "Nothing was imported" in refused.text
    assert "line 3" in refused.text and "line 4" in refused.text
    assert _accounts(gateway, "LA", users) == {}
    [entry] = [e for e in gateway.audit_entries_after(seq) if e["operation"] == "portal.practitioner.import"]
    assert entry["outcome"] == "refused" and "2 problems" in entry["detail"]

    good = "\n".join([HEADER, *(_line(u, name=f"Bulk {u}") for u in users)])
    seq = gateway.audit_seq()
    done = _upload(portal, admin, good)
    assert done.status_code == 200, done.text
    codes = dict(re.findall(r'<td>(hv\.bulk\.[0-9a-f]+)</td>.*?<code>([A-Za-z0-9_-]{16,})</code>', done.text, re.S))
    assert sorted(codes) == sorted(users)
    made = _accounts(gateway, "LA", users)
    assert sorted(made) == sorted(users) and all(r.role is None and r.invitation_hash for r in made.values())
    entries = gateway.audit_entries_after(seq)
    added = [e for e in entries if e["operation"] == "portal.practitioner.add"]
    assert sorted(u for e in added for u in users if u in e["detail"]) == sorted(users)
    assert len([e for e in entries if e["operation"] == "portal.practitioner.role" and e["outcome"] == "proposed"]) == 3
    assert not [c for c in codes.values() if c in str(entries)]  # the codes are never in the audit
    # The code works: the practitioner enrols with it.
    enrol_in_process(gateway, Account("LA", users[0]), codes[users[0]])

    again = _upload(portal, admin, good)  # the same file again: nothing duplicated, no new invitation
    assert again.status_code == 200 and "already" in again.text
    assert all(u in again.text for u in users) and not re.search(r"<code>[A-Za-z0-9_-]{16,}</code>", again.text)
    assert _accounts(gateway, "LA", users)[users[1]].invitation_hash == made[users[1]].invitation_hash


def test_another_organisations_rows_are_refused_and_an_export_is_a_formula_safe_csv(portal, gateway, admin):
    mine, theirs = unique("hv.bulk.").lower(), unique("hv.bulk.").lower()
    text = f"organisation,{HEADER}\nLA,{_line(mine)}\nHEALTH,{_line(theirs)}\n"
    refused = _upload(portal, admin, text)
    assert refused.status_code == 400 and "line 3" in refused.text and "HEALTH" in refused.text
    assert _accounts(gateway, "LA", [mine, theirs]) == {} and _accounts(gateway, "HEALTH", [mine, theirs]) == {}

    exported = _upload(portal, admin, f"{HEADER}\n{_line(mine, name='=HYPERLINK(1)')}\n", export=True)
    assert exported.status_code == 200 and exported.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in exported.headers["Content-Disposition"] and exported.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert [(r["user_id"], r["name"], r["status"]) for r in rows] == [(mine, "'=HYPERLINK(1)", "invited")]
    assert len(rows[0]["invitation_code"]) >= 16


def test_only_the_import_page_takes_a_file_larger_than_a_form_and_only_administrators_use_it(portal, gateway, admin):
    from gateway.portal import MAX_FORM_BYTES, bulk

    filler = "\n" * (MAX_FORM_BYTES + 1000)  # blank lines: a file past the forms' limit, still a good one
    user = unique("hv.bulk.").lower()
    big = _upload(portal, admin, f"{HEADER}\n{_line(user)}{filler}")
    assert big.status_code == 200 and user in big.text
    elsewhere = portal.post(admin, "/admin/practitioners/new", {"name": "x" * (MAX_FORM_BYTES + 1000)},
                            csrf_from="/admin/practitioners/new")
    assert elsewhere.status_code == 413
    too_big = _upload(portal, admin, f"{HEADER}\n" + "\n" * bulk.MAX_IMPORT_BYTES)
    assert too_big.status_code == 413

    practitioner = Account("LA", user)
    invitation = re.search(r"<code>([A-Za-z0-9_-]{16,})</code>", big.text).group(1)
    enrol_in_process(gateway, practitioner, invitation)
    # Its role is not in force (a second administrator approves it), and it is no administrator anyway.
    session, _ = portal.sign_in(practitioner, expect_ok=False)
    assert session.get(f"{portal.url}/admin/practitioners/import", timeout=15).status_code == 403
