"""Audit reports for people and for machines: a table, CSV or JSON lines, safe whatever the trail holds.

What is in the trail came partly from callers (user ids, roles, reason texts) and partly from
officers (reasons, details). A report must never let such a value forge a line or hide what it
says: control characters (a newline starting a false line), Unicode format characters (a
right-to-left override reversing what follows, zero-width characters) and line or paragraph
separators are shown escaped as ``\\u{XXXX}`` in the table and in CSV, and a backslash as ``\\\\``,
so the escaping is unambiguous. JSON escapes them itself (``ensure_ascii``). The CSV is the
product's one CSV writer (contactgate_wire.spreadsheet): every cell quoted, and no cell a
spreadsheet would run as a formula, at its start or after a separator a spreadsheet may split on.
"""

from __future__ import annotations

import io
import json
from typing import Iterable

from contactgate_wire.spreadsheet import CsvWriter, visible_text as safe_text

__all__ = ["COLUMNS", "FORMATS", "render", "safe_text", "table_line"]

# What a report shows of an entry: who, when, why and what (the detail says what was disclosed:
# the number of contacts, the field groups a role was limited to, a shielded child's location).
COLUMNS = ("seq", "at", "org_code", "user_id", "role", "operation", "outcome", "fault_code",
           "reason_code", "reason_text", "child_ids", "detail",
           # where from, and which exchange: to match an entry to a client's own log
           "source_address", "cert_fingerprint", "request_id", "request_digest", "response_digest",
           # a mediated read: the requester it was made for (gateway.mediation), as JSON
           "on_behalf_of")
FORMATS = ("table", "csv", "json")


def table_line(row: dict) -> str:
    who = f"{safe_text(row['org_code']) or '-'}:{safe_text(row['user_id']) or '-'}"
    why = f"{safe_text(row['reason_code'])}: {safe_text(row['reason_text'])}" if row["reason_code"] else "-"
    what = safe_text(row["fault_code"] or row["outcome"])
    detail = f"  [{safe_text(row['detail'])}]" if row.get("detail") else ""
    source = f"  from {safe_text(row['source_address'])}" if row.get("source_address") else ""
    return (f"{row['at']}  #{row['seq']}  {who} ({safe_text(row['role']) or '-'}){_behalf(row)}  "
            f"{safe_text(row['operation'])}  "
            f"{what}  reason [{why}]  children [{safe_text(row['child_ids']) or '-'}]{detail}{source}")


def _behalf(row: dict) -> str:
    from gateway.mediation import from_json

    if not row.get("on_behalf_of"):
        return ""
    behalf = from_json(row["on_behalf_of"])
    return f" on behalf of [{safe_text(behalf.summary() if behalf else row['on_behalf_of'])}]"


def render(rows: Iterable[dict], fmt: str) -> str:
    """The whole report as text in ``fmt`` (one of FORMATS)."""
    rows = list(rows)
    if fmt == "json":
        return "".join(json.dumps({c: row.get(c) for c in COLUMNS}, ensure_ascii=True) + "\n" for row in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = CsvWriter(out)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(row.get(c) for c in COLUMNS)
        return out.getvalue()
    if fmt == "table":
        return "".join(table_line(row) + "\n" for row in rows) or "no entries\n"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")
