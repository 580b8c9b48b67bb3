"""Audit reports for people and for machines: a table, CSV or JSON lines, safe whatever the trail holds.

What is in the trail came partly from callers (user ids, roles, reason texts) and partly from
officers (reasons, details). A report must never let such a value forge a line or hide what it
says: control characters (a newline starting a false line), Unicode format characters (a
right-to-left override reversing what follows, zero-width characters) and line or paragraph
separators are shown escaped as ``\\u{XXXX}`` in the table and in CSV, and a backslash as ``\\\\``,
so the escaping is unambiguous. JSON escapes them itself (``ensure_ascii``). A CSV cell that a
spreadsheet would run as a formula starts with ``'``.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from typing import Iterable

# What a report shows of an entry: who, when, why and what (the detail says what was disclosed:
# the number of contacts, the field groups a role was limited to, a shielded child's location).
COLUMNS = ("seq", "at", "org_code", "user_id", "role", "operation", "outcome", "fault_code",
           "reason_code", "reason_text", "child_ids", "detail",
           # where from, and which exchange: to match an entry to a client's own log
           "source_address", "cert_fingerprint", "request_id", "request_digest", "response_digest")
FORMATS = ("table", "csv", "json")
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_FORMULA = ("=", "+", "-", "@")


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if unicodedata.category(char) in _UNSAFE_CATEGORIES:
        return "\\u{%04X}" % ord(char)
    return char


def safe_text(value) -> str:
    """``value`` as one line of visible text: nothing in it can start a line or reorder what follows."""
    if value is None:
        return ""
    text = str(value)
    if text.isprintable() and "\\" not in text:  # the common case, fast (isprintable is False for Cc/Cf/Z*)
        return text
    return "".join(_escape(c) for c in text)


def csv_cell(value) -> str:
    text = safe_text(value)
    return "'" + text if text[:1] in _FORMULA else text


def table_line(row: dict) -> str:
    who = f"{safe_text(row['org_code']) or '-'}:{safe_text(row['user_id']) or '-'}"
    why = f"{safe_text(row['reason_code'])}: {safe_text(row['reason_text'])}" if row["reason_code"] else "-"
    what = safe_text(row["fault_code"] or row["outcome"])
    detail = f"  [{safe_text(row['detail'])}]" if row.get("detail") else ""
    source = f"  from {safe_text(row['source_address'])}" if row.get("source_address") else ""
    return (f"{row['at']}  #{row['seq']}  {who} ({safe_text(row['role']) or '-'})  {safe_text(row['operation'])}  "
            f"{what}  reason [{why}]  children [{safe_text(row['child_ids']) or '-'}]{detail}{source}")


def render(rows: Iterable[dict], fmt: str) -> str:
    """The whole report as text in ``fmt`` (one of FORMATS)."""
    rows = list(rows)
    if fmt == "json":
        return "".join(json.dumps({c: row.get(c) for c in COLUMNS}, ensure_ascii=True) + "\n" for row in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([csv_cell(row.get(c)) for c in COLUMNS])
        return out.getvalue()
    if fmt == "table":
        return "".join(table_line(row) + "\n" for row in rows) or "no entries\n"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")
