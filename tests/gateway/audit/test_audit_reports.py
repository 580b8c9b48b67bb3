"""Audit reports that cannot be forged and find the child whatever the spelling of its id; `audit
verify` exit codes a cron job can act on; callers cannot put control or direction characters into
the trail in the first place (the schema refuses them)."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from sqlalchemy import update

from gateway import audit
from gateway.audit.report import render, safe_text
from gateway.db import audit_log
from gateway.index import ids
from contactgate_local import LocalGateway

FORGED = "\n2026-01-01T00:00:00.000000Z  #999  LA:admin (auditor)  GetContacts  accepted  reason [-]  children [-]"
EVIL_USER = "sw.\u202eevil\u200b"


@pytest.fixture
def home(tmp_path, database_url):
    gateway = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gateway.cli("init")
    gateway.cli("org", "add", "LA", "--name", "Leeds", "--kind", "local_authority")
    return gateway


def _trail(gateway):
    return audit.AuditTrail.from_file(gateway.home / "keys" / "audit-chain.key",
                                      checkpoints=gateway.home / "audit" / "checkpoints")


def _append(gateway, **fields):
    from gateway.db import make_engine

    engine = make_engine(gateway.database_url)
    with engine.begin() as conn:
        _trail(gateway).append(conn, audit.Entry(**{"operation": "GetContacts", "outcome": "accepted",
                                                     "org_code": "LA", **fields}))
    engine.dispose()


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "x\u202ey", "x\u2066y\u2069", "z\u200bw", "p\u2028q", "t\tu",
                                   "\x1b[31mred", "\u0085next"])
def test_safe_text_is_one_visible_line(value):
    shown = safe_text(value)
    assert shown.isprintable() and "\\u{" in shown


def test_safe_text_escaping_is_unambiguous():
    assert safe_text("a\\u{000A}b") != safe_text("a\nb")
    assert safe_text("plain José 😀") == "plain José 😀"


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_no_text_report_lets_a_value_forge_a_line(fmt):
    rows = [{"seq": 1, "at": "2026-11-22T10:00:00.000000Z", "org_code": "LA", "user_id": EVIL_USER,
             "role": "sw\n", "operation": "GetContacts", "outcome": "accepted", "fault_code": None,
             "reason_code": "referral", "reason_text": "why" + FORGED, "child_ids": "", "detail": "=cmd()"}]
    text = render(rows, fmt)
    lines = text.splitlines()
    assert len(lines) == (2 if fmt == "csv" else 1)
    assert "\u202e" not in text and "\u200b" not in text
    if fmt == "csv":
        [row] = list(csv.DictReader(io.StringIO(text)))
        assert row["detail"] == "'=cmd()" and row["user_id"] == "sw.\\u{202E}evil\\u{200B}"
    if fmt == "json":
        assert json.loads(lines[0])["reason_text"] == "why" + FORGED  # JSON keeps the value, escaped


INJECTION = "x;=cmd|' /C calc'!A0;"
QUOTED_LINE = re.compile(r'^"(?:[^"]|"")*"(?:,"(?:[^"]|"")*")*$')
FORMULA_AFTER_SEPARATOR = re.compile(r"(?:^|[,;|\t])\s*[=+\-@]")


def _report_of_an_org_named(home, code: str, name: str) -> tuple[str, dict]:
    home.cli("org", "add", code, "--name", name, "--kind", "other")
    text = home.cli("audit", "report", "--org", code, "--format", "csv", officer="auditor-1").output
    lines = text.splitlines()
    assert len(lines) == 2 and all(QUOTED_LINE.match(line) for line in lines), text
    [row] = list(csv.DictReader(io.StringIO(text)))
    return text, row


def _no_formula_however_split(text: str) -> None:
    """Split as a careless spreadsheet would: on every separator, quotes ignored."""
    for line in text.splitlines():
        for cell in re.split(r"[,;|]", line.replace('"', "")):
            assert not FORMULA_AFTER_SEPARATOR.match(cell.strip()), (cell, line)


def test_every_csv_cell_is_quoted_and_no_formula_follows_a_separator(home):
    """A spreadsheet that splits on ';' (or ',' or '|') whatever the quoting must find no cell
    that starts a formula: `x;=cmd|...` in a name an officer typed is written `x;'=cmd|...`."""
    text, row = _report_of_an_org_named(home, "LA2", INJECTION)
    assert row["detail"] == "registered \"x;'=cmd|' /C calc'!A0;\" (other)"
    _no_formula_however_split(text)


def test_a_formula_after_a_double_quote_is_prefixed_too(home):
    """A reader that splits on ';' and then honours quotes sees `x;"=1+1"` as the cells `x` and
    `=1+1` (a formula): the double quote starts a cell as a separator does."""
    text, row = _report_of_an_org_named(home, "LA3", 'x;"=1+1"')
    assert row["detail"] == "registered 'x;\"'=1+1\"' (other)"  # the name as repr() writes it
    for cell in re.split(r"[,;|]", text):  # quotes honoured within each split cell
        cell = cell.strip()
        if cell.startswith('"'):
            cell = cell[1:].strip()
        assert not cell[:1] in ("=", "+", "-", "@"), (cell, text)
    _no_formula_however_split(text)


def test_the_cli_report_escapes_what_the_trail_holds(home):
    _append(home, user_id=EVIL_USER, reason_code="referral", reason_text="why" + FORGED)
    out = home.cli("audit", "report", "--user", f"la:{EVIL_USER}", officer="auditor-1").output
    assert len(out.splitlines()) == 1 and "#999" in out and "\\u{000A}" in out
    assert "\u202e" not in out


def test_child_ids_in_any_spelling_find_the_child(home):
    child = ids.new_child_id()
    _append(home, user_id="sw.jones", reason_code="referral", reason_text="why", child_ids=[child])
    for spelling in (child, child.lower(), child.replace("-", ""), " " + child.lower().replace("-", " ") + " "):
        out = home.cli("audit", "report", "--child", spelling, officer="auditor-1").output
        assert "sw.jones" in out, spelling
    refused = home.cli("audit", "report", "--child", "not-an-id", officer="auditor-1", expect_ok=False)
    assert refused.exit_code == 2 and "not a child id" in refused.output


def test_an_organisation_report_in_each_format(home):
    _append(home, user_id="sw.jones", reason_code="referral", reason_text="why", detail="contacts=2")
    table = home.cli("audit", "report", "--org", "la", officer="auditor-1").output
    assert "org.add" in table and "sw.jones" in table and "[contacts=2]" in table
    rows = list(csv.DictReader(io.StringIO(home.cli("audit", "report", "--org", "LA", "--format", "csv",
                                                     officer="auditor-1").output)))
    assert {r["operation"] for r in rows} >= {"org.add", "GetContacts"}
    lines = home.cli("audit", "report", "--org", "LA", "--format", "json", officer="auditor-1").output.splitlines()
    assert {json.loads(line)["operation"] for line in lines} >= {"org.add", "GetContacts"}
    since = home.cli("audit", "report", "--org", "LA", "--since", "2999-01-01", officer="auditor-1").output
    assert since.strip() == "no entries"


def test_verify_exit_codes_tell_tampering_from_an_outage(home, tmp_path):
    assert home.cli("audit", "verify").exit_code == 0
    # 1: an entry altered by raw SQL
    from gateway.db import make_engine

    engine = make_engine(home.database_url)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(user_id="someone-else"))
    engine.dispose()
    # (entry 2 is before the checkpoint the first run signed: the daily incremental run does not
    # re-hash it, the weekly --full does: tests/gateway/audit/test_verify_incremental.py)
    broken = home.cli("audit", "verify", "--full", expect_ok=False)
    assert broken.exit_code == 1 and "entry 2" in broken.output
    # 1: the checkpoints file (outside the database) altered
    (home.home / "audit" / "checkpoints").write_text("garbage that is not a checkpoint\n")
    altered = home.cli("audit", "verify", expect_ok=False)
    assert altered.exit_code == 1 and "checkpoints file" in altered.output
    # 3: could not check (the key is missing)
    key = home.home / "keys" / "audit-chain.key"
    saved = key.read_bytes()
    key.unlink()
    try:
        missing = home.cli("audit", "verify", expect_ok=False)
        assert missing.exit_code == 3 and "could not check" in missing.output
    finally:
        key.write_bytes(saved)
        key.chmod(0o600)
    # 2: usage
    assert home.cli("audit", "verify", "--no-such-option", expect_ok=False).exit_code == 2


def test_verify_exits_3_when_the_database_is_unreachable(tmp_path):
    gateway = LocalGateway(home=tmp_path / "home", database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    (tmp_path / "home" / "keys").mkdir(parents=True)
    (tmp_path / "home" / "keys" / "audit-chain.key").write_bytes(audit.new_key())
    result = gateway.cli("audit", "verify", expect_ok=False)
    assert result.exit_code == 3
