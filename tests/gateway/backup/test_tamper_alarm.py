"""A tamper alarm a restore cannot silence (issue 24, item 2): after a restore, by hand or with
`contactgate restore`, with or without the home's checkpoints file rolled back too, `audit verify`
names exactly the entries lost since the backup, from checkpoints kept outside the restored data,
and no sequence number is used twice."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, update

from contactgate_local import LocalGateway, proposal_id
from gateway.db import audit_log
from tests.support import postgres_database, sqlite_database


def needs_pg_client(backend: str) -> None:
    """The PostgreSQL backend backs up with the distribution's pg_dump and pg_restore (`make test`
    installs postgresql-client when missing): without them these tests skip, except under .ci/run."""
    if backend == "postgresql" and not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        if os.environ.get("CONTACTGATE_REQUIRE_PG_CLIENT"):
            pytest.fail("pg_dump/pg_restore not installed (apt-get install postgresql-client)")
        pytest.skip("pg_dump/pg_restore not installed (apt-get install postgresql-client)")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    needs_pg_client(request.param)
    return request.param


@pytest.fixture
def home(tmp_path, monkeypatch, backend):
    """A gateway home whose checkpoints are also copied outside it (as on every node)."""
    witness = tmp_path / "witness" / "checkpoints"
    monkeypatch.setenv("CONTACTGATE_CHECKPOINT_COPIES", str(witness))
    with (postgres_database() if backend == "postgresql" else sqlite_database()) as url:
        gw = LocalGateway(home=tmp_path / "home", database_url=url)
        gw.cli("init")
        gw.witness = witness
        key = tmp_path / "backup.key"
        key.write_bytes(secrets.token_bytes(32))
        os.chmod(key, 0o600)
        gw.backup_key = str(key)
        yield gw


def _engine(gw: LocalGateway):
    return create_engine(gw.database_url)


def _activity(gw: LocalGateway, n: int) -> None:
    """Audited officer activity (each run of the misuse review is an entry)."""
    for _ in range(n):
        gw.cli("audit", "review", "--since", "2026-01-01", officer="officer-a")


def _head(gw: LocalGateway) -> int:
    engine = _engine(gw)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.max(audit_log.c.seq))).scalar_one()
    finally:
        engine.dispose()


def _verify(gw: LocalGateway):
    return gw.cli("audit", "verify", expect_ok=False)


def _backup_then_lose_entries(gw: LocalGateway, tmp_path):
    """A backup (and, on SQLite, a copy of the database file and the checkpoints taken with it, as a
    by-hand backup would), then entries that a checkpoint saw, then entries no checkpoint saw."""
    gw.cli("backup", "--key-file", gw.backup_key, "--out", str(tmp_path / "b.cgb"))
    backed_up = _head(gw)
    by_hand = tmp_path / "by-hand"
    by_hand.mkdir()
    if gw.database_url.startswith("sqlite"):
        src = sqlite3.connect(gw.database_url.removeprefix("sqlite:///"))
        dst = sqlite3.connect(by_hand / "contactgate.db")
        src.backup(dst)
        src.close(), dst.close()
    shutil.copy(gw.home / "audit" / "checkpoints", by_hand / "checkpoints")
    _activity(gw, 2)
    assert _verify(gw).exit_code == 0
    checkpointed = _head(gw)
    _activity(gw, 2)  # after the last checkpoint: no record of these survives outside the data
    assert _head(gw) > checkpointed > backed_up
    return backed_up, checkpointed, by_hand


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_restore_by_hand_is_reported_with_the_exact_gap_with_or_without_the_checkpoints(home, tmp_path):
    backed_up, checkpointed, by_hand = _backup_then_lose_entries(home, tmp_path)
    database = Path(home.database_url.removeprefix("sqlite:///"))
    for stale in ("-wal", "-shm"):
        database.with_name(database.name + stale).unlink(missing_ok=True)
    shutil.copy(by_hand / "contactgate.db", database.with_name("restored.db"))
    os.replace(database.with_name("restored.db"), database)
    for checkpoints_too in (False, True):
        if checkpoints_too:  # as the old operations.md listed: the alarm still rings (the copy outside)
            shutil.copy(by_hand / "checkpoints", home.home / "audit" / "checkpoints")
        run = _verify(home)
        assert run.exit_code == 1, run.output
        assert f"entries {backed_up + 1}..{checkpointed} are missing" in run.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_export_taken_before_vouches_for_entries_every_checkpoint_file_forgot(home, tmp_path):
    """The worst case: the database, the home's checkpoints and the copies outside all rolled back.
    A signed export taken before still names the entries lost (`audit verify --export`)."""
    import json

    backed_up, _, by_hand = _backup_then_lose_entries(home, tmp_path)
    home.cli("audit", "export", "--since", "2026-01-01", "--out", str(tmp_path / "export.json"), officer="officer-a")
    exported = json.loads((tmp_path / "export.json").read_text())["export"]["claims"]["last_seq"]
    database = Path(home.database_url.removeprefix("sqlite:///"))
    for stale in ("-wal", "-shm"):
        database.with_name(database.name + stale).unlink(missing_ok=True)
    shutil.copy(by_hand / "contactgate.db", database.with_name("restored.db"))
    os.replace(database.with_name("restored.db"), database)
    shutil.copy(by_hand / "checkpoints", home.home / "audit" / "checkpoints")
    home.witness.unlink()
    run = home.cli("audit", "verify", "--export", str(tmp_path / "export.json"), expect_ok=False)
    assert run.exit_code == 1 and f"entries {backed_up + 1}..{exported} are missing" in run.output, run.output


def test_after_contactgate_restore_verify_names_the_gap_for_ever_and_no_seq_is_reused(home, tmp_path):
    """The harder case: the home's checkpoints rolled back with the data (the copy outside remembers)."""
    backed_up, checkpointed, by_hand = _backup_then_lose_entries(home, tmp_path)
    shutil.copy(by_hand / "checkpoints", home.home / "audit" / "checkpoints")
    restored = home.cli("restore", str(tmp_path / "b.cgb"), "--key-file", home.backup_key)
    assert f"chain continues at entry {checkpointed + 1}" in restored.output
    assert f"audit entries {backed_up + 1}..{checkpointed}" in restored.output
    lost = f"entries {backed_up + 1}..{checkpointed} LOST in the restore at entry {checkpointed + 1}"

    run = _verify(home)  # not yet acknowledged: the alarm rings
    assert run.exit_code == 1 and lost in run.output and "NOT yet acknowledged" in run.output, run.output

    proposed = home.cli("restore", "acknowledge", officer="senior-s")
    refused = home.cli("restore", "acknowledge", "--proposal", proposal_id(proposed.output), officer="senior-s",
                       expect_ok=False)
    assert refused.exit_code == 2 and "second officer" in refused.output
    home.cli("restore", "acknowledge", "--proposal", proposal_id(proposed.output), officer="senior-t")
    for _ in range(2):  # acknowledged: exit 0, and the gap still named on every run
        run = _verify(home)
        assert run.exit_code == 0 and lost in run.output and "acknowledged by two officers" in run.output, run.output
    engine = _engine(home)
    with engine.connect() as conn:
        seqs = [s for (s,) in conn.execute(select(audit_log.c.seq).order_by(audit_log.c.seq))]
    assert not set(range(backed_up + 1, checkpointed + 1)) & set(seqs)  # the lost numbers stay unused
    assert seqs[seqs.index(checkpointed + 1) - 1] == backed_up and seqs[-1] > checkpointed + 1

    # Someone with the database only (not the chain key) cannot make the gap look smaller.
    with engine.begin() as conn:
        detail = conn.execute(select(audit_log.c.detail).where(audit_log.c.operation == "restore")).scalar_one()
        conn.execute(update(audit_log).where(audit_log.c.operation == "restore").values(
            detail=re.sub(r"entries \d+\.\.\d+ lost", f"entries {checkpointed}..{checkpointed} lost", detail)))
    engine.dispose()
    run = _verify(home)
    assert run.exit_code == 1 and f"BROKEN at entry {checkpointed + 1}" in run.output, run.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_restore_that_lost_no_checkpointed_entry_still_rings_until_acknowledged(home, tmp_path):
    home.cli("backup", "--key-file", home.backup_key, "--out", str(tmp_path / "b.cgb"))
    home.cli("restore", str(tmp_path / "b.cgb"), "--key-file", home.backup_key)
    run = _verify(home)
    assert run.exit_code == 1 and "no checkpointed entry lost in the restore" in run.output, run.output
    assert home.cli("restore", "status", expect_ok=False).exit_code == 1


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_pre_rotation_backup_restores_on_postgresql_and_its_sealed_values_open(home, tmp_path):
    """The High finding on the second backend (the SQLite case reads every child through a real
    gateway: test_backup_restore.py): officers' authenticator secrets are sealed values; after a
    rotation and a retirement, the restored database's values under the retired key open again."""
    from gateway.index import at_rest
    from gateway.security import vault

    keyring = home.home / "keys" / "data-keys.json"
    old = vault.read_keyring(keyring).active
    home.cli("backup", "--key-file", home.backup_key, "--out", str(tmp_path / "b.cgb"))
    home.cli("keys", "rotate", officer="senior-s")
    home.cli("keys", "retire", old, officer="senior-s")
    assert old not in vault.read_keyring(keyring).data_keys
    home.cli("restore", str(tmp_path / "b.cgb"), "--key-file", home.backup_key)
    engine = _engine(home)
    with engine.connect() as conn:
        assert at_rest.key_usage(conn).get(old), "the restored values are sealed under the retired key"
    engine.dispose()
    assert old in vault.read_keyring(keyring).data_keys
    home.session("senior-t", fresh=True)  # signing in opens the sealed authenticator secret
    proposed = home.cli("restore", "acknowledge", officer="senior-t")
    assert "restore_ack" in proposed.output
