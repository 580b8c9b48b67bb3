"""Officers are accounts: password + TOTP sign-in, sessions, lockout, roles, and four-eyes between
accounts (not between spellings of a name). Every case through the CLI an officer uses, on SQLite
and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyotp
import pytest
from sqlalchemy import select, update

from gateway.db import audit_log, officer_sessions, officer_signin_failures, officers as officers_table, organisations
from contactgate_local import LocalGateway, proposal_id
from gateway.trust import registry


@pytest.fixture
def gw(tmp_path, database_url):
    gateway = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gateway.cli("init")
    return gateway


def run(gw, *args, officer=None, ok=True, input=None):
    result = gw.cli(*args, expect_ok=False, officer=officer, input=input)
    assert (result.exit_code == 0) == ok, result.output
    return result


def login(gw, officer_id, password=None, code=None, session=None, ok=True, extra_lines=()):
    password = gw.officer_secrets(officer_id)[0] if password is None else password
    code = gw.totp_code(officer_id) if code is None else code
    session = session or gw.home / "local" / f"manual-{officer_id}.json"
    result = gw._invoke(_main(), ["login", "--officer", officer_id, "--password-stdin", "--code", code],
                        {"CONTACTGATE_SESSION": str(session)}, "\n".join([password, *extra_lines]) + "\n")
    assert (result.exit_code == 0) == ok, result.output
    return result, session


def as_session(gw, session, *args, ok=True):
    result = gw._invoke(_main(), list(args), {"CONTACTGATE_SESSION": str(session)}, None)
    assert (result.exit_code == 0) == ok, result.output
    return result


def _main():
    from gateway.cli import main

    return main


def audit_rows(gw, operation):
    with gw_engine(gw).connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.operation == operation)
                            .order_by(audit_log.c.seq)).all()


def gw_engine(gw):
    from gateway.db import make_engine

    engine = make_engine(gw.database_url, keys=gw.home / "keys" / "data-keys.json")
    return engine


def future(days=200):
    return (dt.date.today() + dt.timedelta(days=days)).isoformat()


# ---- accounts and sign-in ---------------------------------------------------------------------------

def test_passwords_are_argon2id_and_totp_secrets_are_sealed(gw):
    with gw_engine(gw).connect() as conn:
        rows = conn.execute(select(officers_table)).all()
    assert {r.officer_id for r in rows} >= {"officer-a", "senior-s"}
    for row in rows:
        password, secret = gw.officer_secrets(row.officer_id)
        assert row.password_hash.startswith("$argon2id$") and password not in row.password_hash
        assert secret not in row.totp_secret and row.totp_secret.startswith("cg1:")
    assert [r.detail for r in audit_rows(gw, "officer.add")][0].startswith("added officer")


def test_sign_in_with_password_and_code_then_whoami(gw):
    result, session = login(gw, "officer-a")
    assert "signed in as officer-a" in result.output
    assert os.stat(session).st_mode & 0o077 == 0
    assert "officer-a (Officer A)" in as_session(gw, session, "whoami").output
    as_session(gw, session, "logout")
    assert not session.exists()
    assert "not signed in" in as_session(gw, session, "whoami", ok=False).output


@pytest.mark.parametrize("wrong", ["password", "code", "officer"])
def test_a_wrong_factor_is_refused_the_same_way_and_audited(gw, wrong):
    officer_id = "ghost" if wrong == "officer" else "officer-b"
    password = "not the password at all" if wrong == "password" else None
    code = None
    if wrong == "code":
        _, secret = gw.officer_secrets("officer-b")
        code = str((int(pyotp.TOTP(secret).now()) + 1) % 1_000_000).zfill(6)
    if officer_id == "ghost":
        password = "whatever password"
        code = "123456"
    result, session = login(gw, officer_id, password=password, code=code, ok=False)
    assert "sign-in refused" in result.output and "password or code" in result.output
    assert not session.exists()
    refused = audit_rows(gw, "officer.login")[-1]
    assert refused.outcome == "refused" and refused.user_id == officer_id


def test_a_code_is_good_only_once(gw):
    _, secret = gw.officer_secrets("officer-b")
    code = gw.totp_code("officer-b")
    login(gw, "officer-b", code=code)
    result, _ = login(gw, "officer-b", code=code, session=gw.home / "local" / "again.json", ok=False)
    assert "already used" in audit_rows(gw, "officer.login")[-1].detail


def test_repeated_failures_lock_the_terminal_out_even_for_the_right_password(gw):
    for _ in range(5):
        login(gw, "carol", password="wrong password!!", code="000000", ok=False)
    result, _ = login(gw, "carol", ok=False)  # the right password and code, but locked
    assert "locked out from local:" in audit_rows(gw, "officer.login")[-1].detail
    with gw_engine(gw).begin() as conn:  # the lockout passes (its clock, moved)
        conn.execute(update(officer_signin_failures).where(officer_signin_failures.c.officer_id == "carol")
                     .values(locked_until=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    login(gw, "carol")


def test_the_command_line_counts_failures_against_the_account_that_runs_it_not_USER(gw):
    """Changing $USER or $LOGNAME between tries neither escapes the terminal's lock nor names
    another account in the audit: the source is the real uid (its name from the password database)."""
    import pwd

    uid = os.getuid()
    expected = f"local:uid {uid} ({pwd.getpwuid(uid).pw_name})"
    session = gw.home / "local" / "spoofed.json"
    for n in range(6):
        pretend = f"someone-{n}"
        env = {"CONTACTGATE_SESSION": str(session), "USER": pretend, "LOGNAME": pretend, "LNAME": pretend,
               "USERNAME": pretend}
        password = "wrong password!!" if n < 5 else gw.officer_secrets("carol")[0]
        code = "000000" if n < 5 else gw.totp_code("carol")
        result = gw._invoke(_main(), ["login", "--officer", "carol", "--password-stdin", "--code", code], env,
                            password + "\n")
        assert result.exit_code != 0, result.output
    last = audit_rows(gw, "officer.login")[-1]
    assert f"locked out from {expected}" in last.detail, last.detail
    assert last.source_address == expected


def test_a_stranger_at_the_console_does_not_lock_an_officer_out_of_the_command_line(gw):
    """Failures from a stranger's address lock that address, not the officer's terminal."""
    from gateway.config import Settings
    from gateway.console import create_console
    from tests.gateway.console.conftest import Browser, Clock

    console = create_console(Settings.from_env({}, home=str(gw.home), database_url=gw.database_url), clock=Clock())
    try:
        for _ in range(6):
            b = Browser(console, gw, console.extensions["contactgate"]["clock"])
            b.client.environ_base["REMOTE_ADDR"] = "203.0.113.66"
            b.get("/login")
            assert b.post("/login", {"officer": "carol", "password": "not her password!", "code": "000000"}
                          ).status_code == 401
    finally:
        console.extensions["contactgate"]["engine"].dispose()
    result, _ = login(gw, "carol")
    assert "signed in as carol" in result.output


@pytest.mark.usefixtures("production_argon2")  # before gw: its officers' hashes at the product's cost
def test_a_refused_login_takes_as_long_for_a_locked_officer_as_for_an_unknown_one(gw):
    import time

    for _ in range(5):
        login(gw, "carol", password="wrong password!!", code="000000", ok=False)
    took = {"ghost": [], "carol": []}
    for _ in range(4):
        for officer_id in took:
            started = time.perf_counter()
            login(gw, officer_id, password="a long enough password", code="000000", ok=False)
            took[officer_id].append(time.perf_counter() - started)
    assert "locked" in audit_rows(gw, "officer.login")[-1].detail
    # The command's own start-up is the same either way: what may differ is the password check,
    # which costs about one argon2id verification (measured here, on this machine, now).
    from argon2 import PasswordHasher

    hasher = PasswordHasher()
    encoded = hasher.hash("calibration password")
    verify = []
    for _ in range(3):
        started = time.perf_counter()
        hasher.verify(encoded, "calibration password")
        verify.append(time.perf_counter() - started)
    assert min(took["carol"]) > min(took["ghost"]) - 0.5 * min(verify), (took, verify)


def test_an_officer_command_without_a_session_is_refused(gw, tmp_path):
    result = gw._invoke(_main(), ["org", "add", "LA", "--name", "Leeds", "--kind", "local_authority"],
                        {"CONTACTGATE_SESSION": str(tmp_path / "none.json")}, None)
    assert result.exit_code == 2 and "not signed in" in result.output
    with gw_engine(gw).connect() as conn:
        assert conn.execute(select(organisations)).all() == []


def test_a_session_file_others_can_read_is_refused(gw):
    _, session = login(gw, "officer-a")
    os.chmod(session, 0o644)
    assert "read by others" in as_session(gw, session, "whoami", ok=False).output


@pytest.mark.parametrize("limit", ["idle", "absolute"])
def test_a_session_expires_when_idle_and_after_its_maximum(gw, limit):
    _, session = login(gw, "officer-a")
    now = dt.datetime.now(dt.timezone.utc)
    values = ({"last_seen": now - dt.timedelta(minutes=16)} if limit == "idle"
              else {"expires_at": now - dt.timedelta(seconds=1)})
    with gw_engine(gw).begin() as conn:
        conn.execute(update(officer_sessions).values(**values))
    result = as_session(gw, session, "org", "list", ok=False)
    assert "expired" in result.output and "login" in result.output
    with gw_engine(gw).connect() as conn:
        assert conn.execute(select(officer_sessions)).all() == []


def test_each_command_restarts_the_idle_clock(gw):
    _, session = login(gw, "officer-a")
    with gw_engine(gw).begin() as conn:
        conn.execute(update(officer_sessions).values(
            last_seen=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=14)))
    as_session(gw, session, "org", "list")
    with gw_engine(gw).connect() as conn:
        seen = conn.execute(select(officer_sessions.c.last_seen)).scalar_one()
    if seen.tzinfo is None:
        seen = seen.replace(tzinfo=dt.timezone.utc)
    assert dt.datetime.now(dt.timezone.utc) - seen < dt.timedelta(minutes=1)


# ---- four-eyes between accounts ----------------------------------------------------------------------

def _proposed(gw, code="LA9", proposer="officer-a", **extra):
    run(gw, "org", "add", code, "--name", "Lambeth", "--kind", "local_authority", officer=proposer)
    result = run(gw, "org", "accredit", code, "--scope", "push", "--expires", future(), officer=proposer)
    return proposal_id(result.output)


@pytest.mark.parametrize("spelling", ["Officer-A", "OFFICER-A", "officer-a"])
def test_an_officer_cannot_approve_their_own_proposal_however_they_spell_their_id(gw, spelling):
    proposal = _proposed(gw)
    result = run(gw, "org", "approve", "LA9", "--proposal", proposal, "--officer", spelling, ok=False,
                 officer="officer-a")
    assert "second officer" in result.output


@pytest.mark.parametrize("spelling", [" officer-a", "officer-a\t", "", "officer a"])
def test_a_blank_or_padded_officer_id_is_refused(gw, spelling):
    result, _ = login(gw, "officer-a")
    proposal = _proposed(gw)
    refused = run(gw, "org", "approve", "LA9", "--proposal", proposal, "--officer", spelling, ok=False,
                  officer="officer-a")
    assert "--officer" in refused.output
    _, session = login(gw, spelling or "x", password="a long enough password", code="123456",
                       session=gw.home / "local" / "padded.json", ok=False)
    assert not session.exists()


def test_the_approver_must_hold_a_role_that_permits_it(gw):
    proposal = _proposed(gw)
    for who in ("dora", "auditor-1"):  # data quality, auditor: not accreditation officers
        result = run(gw, "org", "approve", "LA9", "--proposal", proposal, officer=who, ok=False)
        assert "needs the role officer" in result.output
    refused = audit_rows(gw, "officer.refused")
    assert [(r.user_id, r.outcome) for r in refused] == [("dora", "refused"), ("auditor-1", "refused")]
    assert all("org approve" in r.detail and "needs the role officer" in r.detail for r in refused)
    run(gw, "org", "approve", "LA9", "--proposal", proposal, officer="senior-s")  # a senior officer may


def test_a_change_the_registry_refuses_is_audited_with_its_officer(gw):
    proposal = _proposed(gw)
    run(gw, "org", "approve", "LA9", "--proposal", proposal, officer="officer-a", ok=False)  # own proposal
    refused = audit_rows(gw, "officer.refused")
    assert len(refused) == 1 and refused[0].user_id == "officer-a" and "second officer" in refused[0].detail
    with gw_engine(gw).connect() as conn:
        assert registry.get_org(conn, "LA9").status == "pending_approval"


def test_a_disabled_officer_can_neither_act_nor_sign_in(gw):
    proposal = _proposed(gw)
    _, bob = login(gw, "bob")
    run(gw, "officer", "disable", "bob", "--reason", "left the team", officer="senior-s")
    assert "not signed in" in as_session(gw, bob, "org", "approve", "LA9", "--proposal", proposal, ok=False).output
    login(gw, "bob", session=gw.home / "local" / "bob-again.json", ok=False)
    assert "disabled" in audit_rows(gw, "officer.login")[-1].detail
    with gw_engine(gw).connect() as conn:
        assert registry.get_org(conn, "LA9").status == "pending_approval"


def test_only_a_senior_officer_adds_disables_or_resets_officers(gw):
    for args in (["officer", "add", "eve", "--name", "Eve", "--role", "officer"],
                 ["officer", "disable", "bob", "--reason", "no"], ["officer", "reset", "bob"]):
        assert "senior_officer" in run(gw, *args, officer="officer-a", ok=False).output
    assert "cannot disable their own" in run(gw, "officer", "disable", "senior-s", "--reason", "x",
                                             officer="senior-s", ok=False).output


def test_a_new_officer_signs_in_with_the_one_time_password_and_must_change_it(gw):
    added = run(gw, "officer", "add", "eve", "--name", "Eve Example", "--role", "officer", officer="senior-s").output
    one_time = added.split("first sign-in): ")[1].split()[0]
    secret = added.split("secret: ")[1].split()[0]
    code = pyotp.TOTP(secret).now()
    session = gw.home / "local" / "eve.json"
    result = gw._invoke(_main(), ["login", "--officer", "eve", "--password-stdin", "--code", code],
                        {"CONTACTGATE_SESSION": str(session)}, one_time + "\n")
    assert result.exit_code == 2 and "new password" in result.output
    assert "password must be changed" in as_session(gw, session, "org", "list", ok=False).output
    result = gw._invoke(_main(), ["officer", "password", "--password-stdin"], {"CONTACTGATE_SESSION": str(session)},
                        "eve's own new password\n")
    assert result.exit_code == 0, result.output
    as_session(gw, session, "org", "list")
    assert [r.user_id for r in audit_rows(gw, "officer.password")] == ["eve"]


def test_init_without_officers_on_no_terminal_says_how_to_make_them(tmp_path, database_url):
    from click.testing import CliRunner

    result = CliRunner().invoke(_main(), ["--home", str(tmp_path / "h"), "--database-url", database_url, "init"])
    assert result.exit_code == 0 and "no officer yet" in result.output


def test_init_officers_file_needs_a_senior_officer(tmp_path, database_url):
    from click.testing import CliRunner

    path = tmp_path / "officers.json"
    path.write_text(json.dumps([{"id": "only", "name": "Only", "roles": ["officer"], "password": "x" * 14,
                                 "totp_secret": pyotp.random_base32(32)}]))
    result = CliRunner().invoke(_main(), ["--home", str(tmp_path / "h"), "--database-url", database_url,
                                          "init", "--officers", str(path)])
    assert result.exit_code == 2 and "senior_officer" in result.output


def test_init_officers_file_may_carry_an_argon2id_hash_instead_of_the_password(tmp_path, database_url):
    from argon2 import PasswordHasher
    from click.testing import CliRunner

    path = tmp_path / "officers.json"
    secret = pyotp.random_base32(32)
    entry = {"id": "first", "name": "First", "roles": ["senior_officer"], "totp_secret": secret}
    path.write_text(json.dumps([{**entry, "password_hash": "md5:5f4dcc3b5aa765d61d8327deb882cf99"}]))
    args = ["--home", str(tmp_path / "h"), "--database-url", database_url, "init", "--officers", str(path)]
    result = CliRunner().invoke(_main(), args)
    assert result.exit_code == 2 and "argon2id" in result.output
    path.write_text(json.dumps([{**entry, "password_hash": PasswordHasher().hash("first's long password")}]))
    assert CliRunner().invoke(_main(), args).exit_code == 0
    session = tmp_path / "s.json"
    result = CliRunner().invoke(_main(), ["--home", str(tmp_path / "h"), "--database-url", database_url, "login",
                                          "--officer", "first", "--password-stdin", "--code", pyotp.TOTP(secret).now()],
                                input="first's long password\n", env={"CONTACTGATE_SESSION": str(session)})
    assert result.exit_code == 0, result.output


# ---- the home's keys: a senior officer's session as well as the home's files -----------------------

KEY_COMMANDS = [("keys", "status"), ("keys", "rotate"), ("keys", "retire", "k00000000"),
                ("signing-key", "status"), ("signing-key", "rotate"), ("signing-key", "promote", "--grace-days", "0"),
                ("signing-key", "discard"), ("signing-key", "retire"), ("signing-key", "bundle")]


def _key_files(gw) -> dict[str, bytes]:
    return {str(p.relative_to(gw.home)): p.read_bytes()
            for p in sorted([*(gw.home / "keys").iterdir(), *(gw.home / "signing").iterdir()]) if p.is_file()}


def test_key_commands_need_a_senior_officer_session(gw, tmp_path):
    before = _key_files(gw)
    _, officer = login(gw, "officer-a")  # officer, data quality, auditor: not a senior officer
    for args in KEY_COMMANDS:
        unsigned = gw._invoke(_main(), list(args), {"CONTACTGATE_SESSION": str(tmp_path / "none.json")}, None)
        assert unsigned.exit_code == 2 and "not signed in" in unsigned.output, (args, unsigned.output)
        assert "senior_officer" in as_session(gw, officer, *args, ok=False).output, args
    assert _key_files(gw) == before
    refused = audit_rows(gw, "officer.refused")
    assert [r.detail.split(":")[0] for r in refused] == [" ".join(args[:2]) for args in KEY_COMMANDS]
    assert {r.user_id for r in refused} == {"officer-a"}
    _, senior = login(gw, "senior-s")
    assert "active" in as_session(gw, senior, "keys", "status").output
    assert "current" in as_session(gw, senior, "signing-key", "status").output


def test_the_first_sign_in_changes_the_password_in_the_same_sign_in(gw):
    """At a terminal, the due change is made in the sign-in that used the code: a new password the
    rules refuse is asked for again (not exit 2 with the code spent), and "signed in" is said once
    the account can be used."""
    added = run(gw, "officer", "add", "fay", "--name", "Fay Example", "--role", "officer", officer="senior-s").output
    one_time = added.split("first sign-in): ")[1].split()[0]
    secret = added.split("secret: ")[1].split()[0]
    session = gw.home / "local" / "fay.json"
    good = "fay's own new password"
    result = gw._invoke(_main(), ["login", "--officer", "fay", "--code", pyotp.TOTP(secret).now()],
                        {"CONTACTGATE_SESSION": str(session)}, "\n".join([one_time, "short", "short", good, good]) + "\n")
    assert result.exit_code == 0, result.output
    assert "at least" in result.output and "password changed" in result.output
    assert result.output.index("password changed") < result.output.index("signed in as fay")
    as_session(gw, session, "org", "list")
    assert [r.user_id for r in audit_rows(gw, "officer.password")] == ["fay"]
