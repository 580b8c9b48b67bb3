"""Every command an officer, a data-quality officer or an auditor runs that changes something or
looks at the trail leaves an entry in the audit chain naming that officer (issue 10, item 1), with
where it came from; and the chain verifies afterwards. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from gateway.db import audit_log, make_engine
from gateway.security import vault
from contactgate_local import LocalGateway, proposal_id
from gateway.trust import pki


def _local_account() -> str:
    """The command line's origin: the real uid, with its name from the password database."""
    import os
    import pwd

    return f"local:uid {os.getuid()} ({pwd.getpwuid(os.getuid()).pw_name})"


def test_each_officer_command_leaves_an_entry_naming_its_officer(tmp_path, database_url):
    gw = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gw.cli("init")
    engine = make_engine(database_url, keys=gw.home / "keys" / "data-keys.json")
    expires = (dt.date.today() + dt.timedelta(days=200)).isoformat()
    today = dt.date.today().isoformat()
    foreign_key, foreign_ca = pki.make_ca("Regional CA")
    (tmp_path / "regional-ca.pem").write_bytes(pki.cert_pem(foreign_ca))
    seen: list[str] = []

    def run(officer: str, *args: str) -> str:
        with engine.connect() as conn:
            before = conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0
        output = gw.cli(*args, officer=officer).output
        with engine.connect() as conn:
            new = conn.execute(select(audit_log).where(audit_log.c.seq > before)).all()
        mine = [e for e in new if e.user_id == officer and e.operation != "officer.login"]
        assert mine, f"`{' '.join(args)}` by {officer} left no entry naming them: {[e.operation for e in new]}"
        assert all(e.source_address == _local_account() for e in mine)
        seen.append(" ".join(args[:2]))
        return output

    run("officer-a", "org", "add", "LA1", "--name", "Leeds", "--kind", "local_authority")
    proposal = proposal_id(run("officer-a", "org", "accredit", "LA1", "--scope", "query", "--expires", expires))
    run("officer-b", "org", "approve", "LA1", "--proposal", proposal)
    run("officer-a", "org", "suspend", "LA1", "--reason", "audit of the sweep")
    proposal = proposal_id(run("officer-a", "org", "reinstate", "LA1", "--reason", "sweep done"))
    run("officer-b", "org", "decline", "LA1", "--proposal", proposal, "--reason", "not yet")
    from connectors import credentials

    made = credentials.make_request("LA1", tmp_path / "la1")
    proposal = proposal_id(run("officer-a", "cert", "issue", "LA1", "--csr", str(made.request_path)))
    run("officer-b", "cert", "approve", "LA1", "--proposal", proposal, "--out-dir", str(tmp_path / "la1"))
    fingerprint = pki.fingerprint(pki.load_cert_pem((tmp_path / "la1" / "cert.pem").read_bytes()))
    run("carol", "cert", "revoke", fingerprint, "--reason", "key lost")
    proposal = proposal_id(run("senior-s", "trust", "add-ca", str(tmp_path / "regional-ca.pem")))
    run("senior-t", "trust", "approve", "--proposal", proposal)
    run("senior-s", "officer", "add", "eve", "--name", "Eve", "--role", "officer")
    run("senior-s", "officer", "reset", "eve")
    run("senior-s", "officer", "disable", "eve", "--reason", "left")
    run("officer-a", "org", "revoke", "LA1", "--reason", "closed")
    run("auditor-1", "audit", "report", "--org", "LA1")
    run("auditor-1", "audit", "review", "--since", today)
    run("auditor-1", "audit", "export", "--since", today, "--out", str(tmp_path / "export.json"))
    assert len(seen) == 18
    assert gw.cli("audit", "verify").exit_code == 0


def test_each_key_command_leaves_an_entry_naming_its_senior_officer(tmp_path, database_url):
    gw = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gw.cli("init")
    engine = make_engine(database_url, keys=gw.home / "keys" / "data-keys.json")
    old = vault.read_keyring(gw.home / "keys" / "data-keys.json").active
    steps = [("senior-s", "keys", "rotate"), ("senior-t", "keys", "retire", old),
             ("senior-s", "signing-key", "rotate"), ("senior-t", "signing-key", "promote", "--grace-days", "0"),
             ("senior-s", "signing-key", "retire"), ("senior-t", "signing-key", "rotate", "--ec"),
             ("senior-s", "signing-key", "discard")]
    for officer, *args in steps:
        with engine.connect() as conn:
            before = conn.execute(select(func.max(audit_log.c.seq))).scalar() or 0
        gw.cli(*args, officer=officer)
        with engine.connect() as conn:
            new = conn.execute(select(audit_log).where(audit_log.c.seq > before,
                                                       audit_log.c.operation != "officer.login")).all()
        assert new, f"`{' '.join(args)}` left no entry"
        assert all(e.user_id == officer and e.role == "senior_officer" for e in new), \
            [(e.operation, e.user_id, e.role) for e in new]
        assert all(e.source_address == _local_account() for e in new)
    assert gw.cli("audit", "verify").exit_code == 0
    engine.dispose()


def test_a_refused_review_action_is_audited_with_its_officer(tmp_path, database_url):
    """The data-quality queue's refusals (here: no such entry, no such merge) are in the chain
    with the officer, as the console's are."""
    gw = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gw.cli("init")
    engine = make_engine(database_url, keys=gw.home / "keys" / "data-keys.json")
    for args in (("review", "link", "999"), ("review", "distinct", "999"), ("review", "unmerge", "999")):
        result = gw.cli(*args, officer="dora", expect_ok=False)
        assert result.exit_code == 2, result.output
    with engine.connect() as conn:
        refused = conn.execute(select(audit_log).where(audit_log.c.operation == "officer.refused")
                               .order_by(audit_log.c.seq)).all()
    assert [r.user_id for r in refused] == ["dora"] * 3
    assert [r.detail.split(":")[0] for r in refused] == ["review link", "review distinct", "review unmerge"]


def test_a_refused_trust_or_certificate_request_is_audited_with_its_officer(tmp_path, database_url):
    gw = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gw.cli("init")
    engine = make_engine(database_url, keys=gw.home / "keys" / "data-keys.json")
    gw.cli("org", "add", "LA1", "--name", "Leeds", "--kind", "local_authority")
    (tmp_path / "not-a-csr.pem").write_text("hello")
    assert gw.cli("trust", "remove", "ab" * 32, officer="senior-s", expect_ok=False).exit_code == 2
    assert gw.cli("cert", "issue", "LA1", "--csr", str(tmp_path / "not-a-csr.pem"), officer="officer-a",
                  expect_ok=False).exit_code == 2
    with engine.connect() as conn:
        refused = conn.execute(select(audit_log).where(audit_log.c.operation == "officer.refused")
                               .order_by(audit_log.c.seq)).all()
    assert [(r.user_id, r.detail.split(":")[0]) for r in refused] == [("senior-s", "trust remove"),
                                                                       ("officer-a", "cert issue")]
