"""The audit chain detects altered, removed and reordered entries, on both backends."""

from click.testing import CliRunner
from sqlalchemy import delete, update

from gateway import audit
from gateway.cli import main as cli_main
from gateway.db import audit_children, audit_head, audit_log


def _fill(engine, n=5):
    with engine.begin() as conn:
        for i in range(n):
            audit.append(conn, audit.Entry(operation="GetContacts", outcome="accepted", org_code="LA",
                                           user_id=f"user{i}", reason_code="referral", reason_text="why",
                                           child_ids=[f"CHILD-{i}"]))


def test_intact_chain_verifies(engine):
    _fill(engine)
    result = audit.verify(engine)
    assert result.ok and result.entries == 5


def test_altered_entry_is_named(engine):
    _fill(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(reason_text="innocent"))
    result = audit.verify(engine)
    assert not result.ok and result.first_bad_seq == 3 and "altered" in result.problem


def test_removed_entry_is_detected(engine):
    _fill(engine)
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq == 2))
        conn.execute(delete(audit_log).where(audit_log.c.seq == 2))
    result = audit.verify(engine)
    assert not result.ok and result.first_bad_seq == 2


def test_truncated_tail_is_detected(engine):
    _fill(engine)
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq == 5))
        conn.execute(delete(audit_log).where(audit_log.c.seq == 5))
    result = audit.verify(engine)
    assert not result.ok and "head" in result.problem


def test_rewritten_tail_with_recomputed_hashes_is_detected_by_the_head(engine):
    _fill(engine)
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq >= 4))
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 4))
        conn.execute(update(audit_head).values(seq=3))  # a forger who forgets nothing else
    assert not audit.verify(engine).ok


def test_cli_audit_verify_exits_1_naming_the_entry(engine, database_url, tmp_path):
    _fill(engine)
    runner = CliRunner()
    args = ["--home", str(tmp_path), "--database-url", database_url, "audit", "verify"]
    ok = runner.invoke(cli_main, args)
    assert ok.exit_code == 0 and "intact: 5 entries" in ok.output
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(child_ids="SOMEONE-ELSE"))
    bad = runner.invoke(cli_main, args)
    assert bad.exit_code == 1 and "entry 4" in bad.output


def test_reports_by_child_and_by_user(engine):
    _fill(engine)
    with engine.connect() as conn:
        [row] = audit.report_for_child(conn, "CHILD-2")
        assert row["user_id"] == "user2"
        assert [r["seq"] for r in audit.report_for_user(conn, "LA", "user4")] == [5]
