"""The audit chain detects altered, removed and reordered entries, on both backends."""

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, update

from gateway import audit
from gateway.cli import main as cli_main
from gateway.db import audit_children, audit_head, audit_log
from tests.support import fill_audit


@pytest.fixture
def trail(tmp_path):
    """A chain key where `contactgate --home tmp_path` finds it."""
    key = audit.new_key()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "audit-chain.key").write_bytes(key)
    return audit.AuditTrail(key)


def _remove_entry(engine, seq: int) -> None:
    """Delete entry ``seq`` and its child index rows, as anyone with write access to the database could."""
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq == seq))
        conn.execute(delete(audit_log).where(audit_log.c.seq == seq))


def _assert_first_bad(trail, engine, seq: int, problem: str | None = None) -> None:
    """Verification fails, and names entry ``seq`` first (with ``problem`` in what it says)."""
    result = trail.verify(engine)
    assert not result.ok and result.first_bad_seq == seq
    if problem is not None:
        assert problem in result.problem


def test_intact_chain_verifies(trail, engine):
    fill_audit(engine, trail)
    result = trail.verify(engine)
    assert result.ok and result.entries == 5


def test_altered_entry_is_named(trail, engine):
    fill_audit(engine, trail)
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(reason_text="innocent"))
    _assert_first_bad(trail, engine, 3, "altered")


def test_removed_entry_is_detected(trail, engine):
    fill_audit(engine, trail)
    _remove_entry(engine, 2)
    _assert_first_bad(trail, engine, 2)


def test_truncated_tail_is_detected(trail, engine):
    fill_audit(engine, trail)
    _remove_entry(engine, 5)
    _assert_first_bad(trail, engine, 5, "missing")


def test_rewritten_tail_with_recomputed_hashes_is_detected_by_the_head(trail, engine):
    fill_audit(engine, trail)
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq >= 4))
        conn.execute(delete(audit_log).where(audit_log.c.seq >= 4))
        conn.execute(update(audit_head).values(seq=3))  # a forger who forgets nothing else
    assert not trail.verify(engine).ok


def test_cli_audit_verify_exits_1_naming_the_entry(trail, engine, database_url, tmp_path):
    fill_audit(engine, trail)
    runner = CliRunner()
    args = ["--home", str(tmp_path), "--database-url", database_url, "audit", "verify"]
    ok = runner.invoke(cli_main, args)
    assert ok.exit_code == 0 and "intact: 5 entries" in ok.output
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 4).values(child_ids="SOMEONE-ELSE"))
    bad = runner.invoke(cli_main, args)
    assert bad.exit_code == 1 and "entry 4" in bad.output


def test_reports_by_child_and_by_user(trail, engine):
    fill_audit(engine, trail)
    with engine.connect() as conn:
        [row] = audit.report_for_child(conn, "CHILD-2")
        assert row["user_id"] == "user2"
        assert [r["seq"] for r in audit.report_for_user(conn, "LA", "user4")] == [5]


def test_a_chain_recomputed_without_the_key_is_detected(trail, engine):
    """A database administrator can recompute plain hashes, but not HMACs under the home's key."""
    from gateway.audit.links import entry_hash

    fill_audit(engine, trail)
    forged_key = audit.new_key()
    with engine.begin() as conn:
        rows = [dict(r) for r in conn.execute(audit_log.select().order_by(audit_log.c.seq)).mappings()]
        rows[1]["reason_text"] = "innocent"
        prev = rows[0]["entry_hash"]
        for row in rows[1:]:
            row["prev_hash"] = prev
            row["entry_hash"] = prev = entry_hash(forged_key, prev, row)
            conn.execute(update(audit_log).where(audit_log.c.seq == row["seq"]).values(
                reason_text=row["reason_text"], prev_hash=row["prev_hash"], entry_hash=row["entry_hash"]))
        conn.execute(update(audit_head).values(entry_hash=prev))
    _assert_first_bad(trail, engine, 2)


def test_removed_child_index_rows_are_detected(trail, engine):
    fill_audit(engine, trail)
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq == 3))
    _assert_first_bad(trail, engine, 3)


def test_an_inserted_entry_is_detected(trail, engine):
    """An entry slipped in at the end, with links made up by someone without the key."""
    fill_audit(engine, trail)
    with engine.begin() as conn:
        last = conn.execute(audit_log.select().where(audit_log.c.seq == 5)).mappings().one()
        conn.execute(audit_log.insert().values({**last, "seq": 6, "prev_hash": last["entry_hash"],
                                                "entry_hash": "a" * 64, "public_hash": "b" * 64,
                                                "reason_text": "planted"}))
        conn.execute(update(audit_head).values(seq=6, entry_hash="a" * 64, public_hash="b" * 64))
    _assert_first_bad(trail, engine, 6, "altered")


def test_reordered_entries_are_detected(trail, engine):
    """Two entries swapped (their seq numbers exchanged), as a DBA could."""
    fill_audit(engine, trail)
    with engine.begin() as conn:
        rows = {r["seq"]: dict(r) for r in conn.execute(audit_log.select().where(audit_log.c.seq.in_([2, 3])))
                .mappings()}
        conn.execute(delete(audit_children).where(audit_children.c.seq.in_([2, 3])))
        for seq, other in ((2, 3), (3, 2)):  # each row takes the other's contents: the order is swapped
            conn.execute(update(audit_log).where(audit_log.c.seq == seq)
                         .values({k: v for k, v in rows[other].items() if k != "seq"}))
            conn.execute(audit_children.insert().values(child_id=rows[other]["child_ids"], seq=seq))
    _assert_first_bad(trail, engine, 2)


def test_a_forged_checkpoint_is_detected(trail, engine, tmp_path):
    """The checkpoints file outside the database edited to agree with a rewritten chain: its line
    must still match the chain (the entry it names differs)."""
    checkpoints = tmp_path / "checkpoints"
    checked = audit.AuditTrail(trail._key, checkpoints=checkpoints)
    fill_audit(engine, checked)
    assert checked.verify(engine).ok
    seq, head, at = checkpoints.read_text().split()[:3]
    checkpoints.write_text(f"{seq} {'c' * 64} {at}\n")
    result = checked.verify(engine)
    assert not result.ok and result.first_bad_seq == int(seq) and "last verified" in result.problem
