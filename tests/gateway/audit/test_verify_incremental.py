"""`audit verify` incremental (issue 24, item 7): it re-hashes only the entries after the newest
checkpoint signed with the gateway's signing key that still matches its entry, keeps every alarm a
full verification raises for them and for that anchor, names every restore's gap as before, and
`--full` (``incremental=False``) re-hashes everything. Both backends (the ``engine`` fixture)."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, delete, select, update

from gateway import audit
from gateway.audit import checkpoints
from gateway.db import audit_children, audit_head, audit_log
from gateway.trust import pki
from tests.support import fill_audit, sqlite_database


def _signer(name: str) -> checkpoints.CheckpointSigner:
    key, cert = pki.make_ca(name, key=ec.generate_private_key(ec.SECP256R1()))  # throwaway, made here
    return checkpoints.CheckpointSigner(pki.key_pem(key), pki.cert_pem(cert))


@pytest.fixture
def signed_trail(tmp_path):
    """A trail whose successful verifications write signed checkpoints (as a gateway home's do)."""
    signer = _signer("Gateway signing")
    return audit.AuditTrail(audit.new_key(), checkpoints=tmp_path / "checkpoints", signer=lambda: signer,
                            certificates=lambda: [signer.certificate])


def _row(engine, seq: int):
    with engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.seq == seq)).mappings().one()


def _alter(engine, seq: int, **values) -> None:
    """Edit entry ``seq`` as anyone with write access to the database (but not the audit key) could."""
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == seq).values(**values))


def _caught_incrementally(trail, engine, seq: int, problem: str) -> None:
    """The incremental run fails, naming entry ``seq`` first with ``problem`` in what it says."""
    result = trail.verify(engine, incremental=True)
    assert not result.ok and result.first_bad_seq == seq and problem in result.problem, result


def test_incremental_verify_hashes_only_the_entries_after_the_signed_checkpoint(signed_trail, engine):
    fill_audit(engine, signed_trail, 40)
    first = signed_trail.verify(engine, incremental=True)
    assert first.ok and first.anchor_seq is None and first.entries == 40  # no checkpoint yet: everything
    fill_audit(engine, signed_trail, 7)
    result = signed_trail.verify(engine, incremental=True)
    assert result.ok and result.anchor_seq == 40 and result.entries == 7 and result.head_seq == 47
    again = signed_trail.verify(engine, incremental=True)
    assert again.ok and again.anchor_seq == 47 and again.entries == 0
    full = signed_trail.verify(engine)
    assert full.ok and full.anchor_seq is None and full.entries == 47
    assert full.head_hash == result.head_hash and full.public_head == result.public_head


def test_a_tampered_entry_after_the_checkpoint_is_caught_incrementally(signed_trail, engine):
    fill_audit(engine, signed_trail, 5)
    assert signed_trail.verify(engine).ok
    fill_audit(engine, signed_trail, 5)
    _alter(engine, 8, reason_text="innocent")
    _caught_incrementally(signed_trail, engine, 8, "altered")


def test_a_tampered_entry_before_the_checkpoint_is_caught_by_full_not_incrementally(signed_trail, engine):
    """The documented limit: an entry before the anchor that no checkpoint or export records is not
    re-hashed by the incremental run (its edit leaves the anchor's link intact); --full finds it."""
    fill_audit(engine, signed_trail, 5)
    assert signed_trail.verify(engine).ok
    fill_audit(engine, signed_trail, 3)
    _alter(engine, 2, reason_text="innocent")
    incremental = signed_trail.verify(engine, incremental=True)
    assert incremental.ok and incremental.anchor_seq == 5 and incremental.entries == 3
    full = signed_trail.verify(engine)
    assert not full.ok and full.first_bad_seq == 2 and "altered" in full.problem


def test_a_checkpointed_entry_before_the_anchor_is_still_checked_incrementally(signed_trail, engine):
    fill_audit(engine, signed_trail, 3)
    assert signed_trail.verify(engine).ok  # a checkpoint of entry 3
    fill_audit(engine, signed_trail, 3)
    assert signed_trail.verify(engine).ok  # the anchor: entry 6
    fill_audit(engine, signed_trail, 2)
    _alter(engine, 3, entry_hash="f" * 64)
    _caught_incrementally(signed_trail, engine, 3, "last verified")


def test_an_altered_anchor_is_an_alarm_not_a_silent_start(signed_trail, engine):
    fill_audit(engine, signed_trail, 5)
    assert signed_trail.verify(engine).ok
    fill_audit(engine, signed_trail, 2)
    row = _row(engine, 5)
    for edit in ({"reason_text": "innocent"},  # its fields: the HMAC over them no longer matches
                 {"entry_hash": "e" * 64},  # its link: not the one checkpointed
                 {"prev_hash": "d" * 64}):  # the link it names: the entries before it rewritten
        _alter(engine, 5, **edit)
        result = signed_trail.verify(engine, incremental=True)
        assert not result.ok and result.first_bad_seq == 5, edit
        _alter(engine, 5, **{name: row[name] for name in edit})
    assert signed_trail.verify(engine, incremental=True).ok


def test_the_anchors_child_index_is_checked(signed_trail, engine):
    fill_audit(engine, signed_trail, 5)
    assert signed_trail.verify(engine).ok
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq == 5))
    _caught_incrementally(signed_trail, engine, 5, "child index")


def _line(seq: int, link: str, public: str, signer) -> bytes:
    if signer is None:
        return f"{seq} {link} 2026-01-01T00:00:00.000000Z\n".encode()
    signed = signer.sign({"kind": "checkpoint", "seq": seq, "public_hash": public, "at": "2026-01-01T00:00:00.000000Z"})
    token = base64.urlsafe_b64encode(checkpoints.canonical(signed)).decode()
    return f"{seq} {link} 2026-01-01T00:00:00.000000Z {public} {token}\n".encode()


def test_a_forged_or_unsigned_checkpoint_is_not_trusted_as_an_anchor(signed_trail, engine, tmp_path):
    """A checkpoint line added to the file after a tampering (to start past it) is passed over: the
    run starts from the newest checkpoint that is signed with the gateway's key, and finds the edit."""
    fill_audit(engine, signed_trail, 5)
    assert signed_trail.verify(engine).ok  # the trusted anchor: entry 5
    fill_audit(engine, signed_trail, 4)
    _alter(engine, 7, reason_text="innocent")
    row = _row(engine, 9)
    genuine = checkpoints.signed_lines(tmp_path / "checkpoints")[-1][3]  # entry 5's, signed by the gateway
    pasted = base64.urlsafe_b64encode(checkpoints.canonical(genuine)).decode()
    kept = (tmp_path / "checkpoints").read_bytes()
    for how, line in (
            ("another key", _line(9, row["entry_hash"], row["public_hash"], _signer("Forger"))),
            ("unsigned", _line(9, row["entry_hash"], row["public_hash"], None)),
            ("a genuine signature of another entry's claims",
             f"9 {row['entry_hash']} 2026-01-01T00:00:00.000000Z {row['public_hash']} {pasted}\n".encode())):
        (tmp_path / "checkpoints").write_bytes(kept + line)
        result = signed_trail.verify(engine, incremental=True)
        assert not result.ok and result.first_bad_seq == 7 and "altered" in result.problem, how


def test_without_a_trusted_checkpoint_the_whole_chain_is_verified(engine, tmp_path):
    """Signed with a key the gateway's certificates do not include (a forged file, or a retired key):
    no anchor, so the incremental run falls back to a full one rather than refusing."""
    forger = _signer("Forger")
    trail = audit.AuditTrail(audit.new_key(), checkpoints=tmp_path / "checkpoints", signer=lambda: forger,
                             certificates=lambda: [_signer("Gateway signing").certificate])
    fill_audit(engine, trail, 5)
    assert trail.verify(engine).ok
    fill_audit(engine, trail, 2)
    _alter(engine, 2, reason_text="innocent")
    result = trail.verify(engine, incremental=True)
    assert not result.ok and result.first_bad_seq == 2 and result.entries == 1


def _restore_gap(engine, trail, first: int, last: int) -> int:
    """Entries first..last gone as in a restore, and the restore entry naming them (gateway.backup)."""
    with engine.begin() as conn:
        conn.execute(delete(audit_children).where(audit_children.c.seq >= first))
        conn.execute(delete(audit_log).where(audit_log.c.seq >= first))
        row = _row_in(conn, first - 1)
        conn.execute(update(audit_head).values(seq=first - 1, entry_hash=row["entry_hash"],
                                               public_hash=row["public_hash"]))
        seq, _ = trail.append_at(conn, audit.Entry(operation="restore", outcome="done", role="operator",
                                                   detail=f"restored a backup; entries {first}..{last} lost"),
                                 last + 1)
    return seq


def _row_in(conn, seq: int):
    return conn.execute(select(audit_log).where(audit_log.c.seq == seq)).mappings().one()


def test_restore_gaps_before_the_anchor_are_still_named_incrementally(signed_trail, engine):
    fill_audit(engine, signed_trail, 8)
    restore_seq = _restore_gap(engine, signed_trail, 5, 8)
    with engine.begin() as conn:
        signed_trail.append(conn, audit.Entry(operation="restore.acknowledged", outcome="done",
                                              detail=f"restore at entry {restore_seq} acknowledged by a and b"))
    first = signed_trail.verify(engine)
    assert first.ok and [(g.first, g.last, g.acknowledged) for g in first.lost] == [(5, 8, True)]
    fill_audit(engine, signed_trail, 3)
    result = signed_trail.verify(engine, incremental=True)
    assert result.ok and result.anchor_seq == 10 and result.entries == 3
    assert [(g.first, g.last, g.restore_seq, g.acknowledged) for g in result.lost] == [(5, 8, 9, True)]


def test_an_altered_restore_entry_before_the_anchor_is_caught_incrementally(signed_trail, engine):
    fill_audit(engine, signed_trail, 6)
    _restore_gap(engine, signed_trail, 4, 6)
    assert signed_trail.verify(engine).ok
    fill_audit(engine, signed_trail, 2)
    _alter(engine, 7, detail="restored a backup; entries 4..5 lost")  # shrink the gap it names
    _caught_incrementally(signed_trail, engine, 7, "altered")


def test_a_checkpoint_beyond_the_head_is_still_an_alarm_incrementally(signed_trail, engine):
    fill_audit(engine, signed_trail, 4)
    assert signed_trail.verify(engine).ok
    fill_audit(engine, signed_trail, 4)
    assert signed_trail.verify(engine).ok  # anchor at 8
    with engine.begin() as conn:  # cut the tail back to 6 and move the head with it
        conn.execute(delete(audit_children).where(audit_children.c.seq > 6))
        conn.execute(delete(audit_log).where(audit_log.c.seq > 6))
        row = _row_in(conn, 6)
        conn.execute(update(audit_head).values(seq=6, entry_hash=row["entry_hash"], public_hash=row["public_hash"]))
    _caught_incrementally(signed_trail, engine, 7, "held 8 entries")


def test_cli_audit_verify_is_incremental_and_full_rehashes_everything(tmp_path):
    """Through the CLI on a real home (its signing key signs the checkpoints): the second run starts
    from the first run's checkpoint; an edit before it passes the incremental run and fails --full.
    (SQLite only: the storage is exercised on both backends above; this is the command's wiring.)"""
    from contactgate_local import LocalGateway

    with sqlite_database() as database_url:
        _cli_run(LocalGateway(home=tmp_path / "home", database_url=database_url), database_url)


def _cli_run(gw, database_url: str) -> None:
    gw.cli("init")
    first = gw.cli("audit", "verify")
    head = int(re.search(r"up to entry (\d+)", first.output).group(1))
    gw.cli("audit", "review", "--since", "2026-01-01", officer="officer-a")
    second = gw.cli("audit", "verify")
    assert f"after the signed checkpoint of entry {head} " in second.output, second.output
    engine = create_engine(database_url)
    try:
        _alter(engine, 2, detail="innocent")
    finally:
        engine.dispose()
    assert gw.cli("audit", "verify", expect_ok=False).exit_code == 0
    full = gw.cli("audit", "verify", "--full", expect_ok=False)
    assert full.exit_code == 1 and "BROKEN at entry 2: entry was altered" in full.output, full.output
