"""A user administrator's CSV import of their organisation's practitioners (issue 26, item 2).

The file: UTF-8 (a byte-order mark, as spreadsheets write, is allowed), comma-separated, a header
row naming the columns, one practitioner a row:

    user_id,name,role,job_title,clearance_number,clearance_date,training_date,end_date

``end_date`` may be left out or blank; an optional ``organisation`` column, when present, must name
the administrator's own organisation on every row (a row naming another is refused). Dates are
YYYY-MM-DD; ``role`` is one of the roles file's (or blank: an account that sees no child). Each row
is checked as the single-account form checks it (gateway.portal.accounts.Details).

- **Bounded**: at most MAX_IMPORT_BYTES, MAX_ROWS practitioners and MAX_FIELD characters a field;
  nothing past a bound is parsed. The upload page alone takes a body past the portal's form limit
  (`PortalRequest` in Flask, `IMPORT_BODY_LIMIT` at the front).
- **Every row checked first**: every problem is reported with its line number, and then nothing is
  made (`ImportRefused`); the refusal is audited.
- **All or nothing**: the accounts are made in one transaction, each as the single-account form
  makes it (`accounts.add`: audited, its role proposed for a second administrator's approval, a
  one-time invitation code). The codes are shown once (or exported once as CSV), never stored.
- **Idempotent**: a user id the organisation already has is reported and left as it is (no new
  invitation); uploading the same file again makes nothing.
- Text echoed back goes through the pages' ``plain`` filter; the exported CSV's cells cannot run as
  spreadsheet formulas (`cell`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass

from flask import Request

from gateway import audit
from gateway.portal import accounts
from gateway.portal.accounts import Details, PortalError

IMPORT_PATH = "/admin/practitioners/import"
MAX_IMPORT_BYTES = 512 * 1024
MAX_ROWS = 1000
MAX_FIELD = 200
# The multipart envelope around the file (boundaries, the CSRF token, the export choice).
ENVELOPE_BYTES = 16 * 1024
IMPORT_BODY_LIMIT = MAX_IMPORT_BYTES + ENVELOPE_BYTES

COLUMNS = ("user_id", "name", "role", "job_title", "clearance_number", "clearance_date", "training_date",
           "end_date")
OPTIONAL = ("end_date", "organisation")
SHOWN_PROBLEMS = 200  # a file of 1,000 bad rows: the first 200 problems, and how many more
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ImportRefused(PortalError):
    """The file is not imported; ``problems``: each with its line number where it has one."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem{'s' if len(problems) != 1 else ''}")
        self.problems = problems


class PortalRequest(Request):
    """The portal's requests: the forms' limit, except for the import page's upload."""

    @property
    def max_content_length(self) -> int | None:
        if self.method == "POST" and self.path == IMPORT_PATH:
            return IMPORT_BODY_LIMIT
        return super().max_content_length

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value


@dataclass(frozen=True)
class Row:
    line: int
    user_id: str
    details: Details


def _shown(value: str, limit: int = 40) -> str:
    """A caller's value, quoted and cut short, for a problem's text (the page shows it through ``plain``)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _day(value: str, what: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise PortalError(f"the {what} {_shown(value)} is not a date (YYYY-MM-DD)") from None


def _header(fields: list[str]) -> list[str]:
    names = [f.strip().lower().replace(" ", "_") for f in fields]
    unknown = [n for n in names if n not in COLUMNS and n != "organisation"]
    missing = [c for c in COLUMNS if c not in names and c not in OPTIONAL]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if unknown or missing or repeated:
        said = [f"unknown {', '.join(_shown(n, 20) for n in unknown[:5])}" if unknown else "",
                f"missing {', '.join(missing)}" if missing else "",
                f"repeated {', '.join(repeated)}" if repeated else ""]
        raise ImportRefused([f"line 1: the header's columns are wrong ({'; '.join(s for s in said if s)}): "
                             f"they are {','.join(COLUMNS)} (end_date and organisation optional)"])
    return names


def parse(data: bytes, org_code: str, rules) -> list[Row]:
    """The practitioners of the file, each checked, or ImportRefused with every problem found."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportRefused([f"the file is larger than {MAX_IMPORT_BYTES // 1024} KiB: split it"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ImportRefused([f"line {line}: the file is not UTF-8 text (save it as 'CSV UTF-8')"]) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[str] = []
    rows: list[Row] = []
    seen: dict[str, int] = {}
    names: list[str] | None = None
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue  # a blank line
            if names is None:
                names = _header(fields)
                continue
            if len(rows) + len(problems) >= MAX_ROWS:
                raise ImportRefused([f"the file has more than {MAX_ROWS} practitioners: split it"])
            try:
                row = _row(line, names, fields, org_code, rules)
            except PortalError as exc:
                problems.append(f"line {line}: {exc}")
                continue
            if row.user_id in seen:
                problems.append(f"line {line}: the user id {row.user_id!r} is in the file more than once "
                                f"(first on line {seen[row.user_id]})")
                continue
            seen[row.user_id] = line
            rows.append(row)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: not readable as CSV ({exc})")
    if names is None:
        raise ImportRefused(["the file has no header row (the column names) and no practitioners"])
    if problems:
        raise ImportRefused(problems)
    if not rows:
        raise ImportRefused(["the file has a header row but no practitioners"])
    return rows


def _row(line: int, names: list[str], fields: list[str], org_code: str, rules) -> Row:
    if len(fields) != len(names):
        raise PortalError(f"{len(fields)} fields where the header has {len(names)} fields")
    values = {}
    for name, value in zip(names, fields):
        value = value.strip()
        if len(value) > MAX_FIELD:
            raise PortalError(f"the {name.replace('_', ' ')} has at most {MAX_FIELD} characters")
        if any(ord(c) < 32 for c in value):
            raise PortalError(f"the {name.replace('_', ' ')} holds a control character")
        values[name] = value
    organisation = values.get("organisation", "")
    if organisation and organisation.upper() != org_code:
        raise PortalError(f"the organisation {_shown(organisation, 32)} is not yours ({org_code}): you import "
                          f"your own organisation's practitioners only")
    user_id = accounts.canonical_user(values["user_id"])
    details = Details(values["name"], values["role"] or None, values["job_title"], values["clearance_number"] or None,
                      _day(values["clearance_date"], "clearance date"), _day(values["training_date"], "training date"),
                      _day(values.get("end_date", ""), "end date"))
    return Row(line, user_id, details.checked(rules))


@dataclass(frozen=True)
class Imported:
    made: list  # [(line, Practitioner, invitation code)]
    existing: list  # [(line, Practitioner)]: already accounts of the organisation, left as they are


def apply(conn, trail: audit.AuditTrail, admin: accounts.Practitioner, rows: list[Row], *, rules,
          now: dt.datetime) -> Imported:
    """Make the rows' accounts in ``conn``'s transaction (the caller's: all or none), each as the
    single-account form does; those that exist already are left alone."""
    if not admin.user_admin:
        raise PortalError("this needs a user administrator")
    made, existing = [], []
    for row in rows:
        found = accounts.get(conn, admin.org_code, row.user_id)
        if found is not None:
            existing.append((row.line, found))
            continue
        account, code = accounts.add(conn, trail, admin, row.user_id, row.details, rules=rules, now=now)
        made.append((row.line, account, code))
    trail.append(conn, audit.Entry(
        operation="portal.practitioner.import", outcome="done", org_code=admin.org_code, user_id=admin.user_id,
        role=accounts.ADMIN_ROLE,
        detail=f"imported {len(rows)} rows: {len(made)} accounts added "
               f"({', '.join(a.user_id for _, a, _ in made[:50]) or '-'}{' ...' if len(made) > 50 else ''}), "
               f"{len(existing)} already there"))
    return Imported(made, existing)


def audit_refusal(conn, trail: audit.AuditTrail, admin: accounts.Practitioner, refused: ImportRefused) -> None:
    trail.append(conn, audit.Entry(
        operation="portal.practitioner.import", outcome="refused", org_code=admin.org_code, user_id=admin.user_id,
        role=accounts.ADMIN_ROLE, detail=f"import refused, nothing made: {refused} "
                                         f"(first: {audit_safe(refused.problems[0])})"))


def audit_safe(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def cell(value: str) -> str:
    """A value for an exported CSV cell that a spreadsheet shows as text, never runs as a formula."""
    value = value or ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def export(result: Imported) -> bytes:
    """The result as CSV (UTF-8 with a byte-order mark, for spreadsheets): one row per line of the file."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["line", "user_id", "name", "status", "invitation_code"])
    rows = [(line, a, "invited", code) for line, a, code in result.made] + \
           [(line, a, "already an account: unchanged", "") for line, a in result.existing]
    for line, account, status, code in sorted(rows, key=lambda r: r[0]):
        writer.writerow([str(line), cell(account.user_id), cell(account.name), status, code])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
