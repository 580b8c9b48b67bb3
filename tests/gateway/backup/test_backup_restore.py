"""`contactgate backup` and `contactgate restore` (issue 24, item 1): one encrypted archive that
carries the database, the data keys it needs and the home's trust and signing material, restored
through real processes (the CLI, a gunicorn gateway, the SDK)."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, select

from connectors.client import GatewayFault

from contactgate_local import LocalGateway, proposal_id
from gateway.db import audit_log, proposals
from gateway.security import vault
from tests.support import child_update, private_gateway, unique, unique_name

READ = dict(user_id="bk.tester", role="gp", reason_code="referral", reason_text="backup test")


def backup_key(directory) -> str:
    """A throwaway backup key, as an operator makes one (32 random bytes, readable by its owner only)."""
    path = directory / "backup.key"
    path.write_bytes(secrets.token_bytes(32))
    os.chmod(path, 0o600)
    return str(path)


def test_a_backup_from_before_a_rotation_and_retirement_restores_and_every_child_reads(tmp_path):
    with private_gateway("sqlite", tmp_path / "home", orgs={"LA": ("local_authority", ["push", "query"])}) as gw:
        la = gw.client("la")
        updates = [child_update(unique("bk-"), unique_name("Back"), unique_name("Kid"), f"2013-0{1 + n}-1{n}")
                   for n in range(4)]
        results = la.submit_updates(updates)
        key = backup_key(tmp_path)
        archive = tmp_path / "before-rotation.cgbackup"
        gw.cli("backup", "--key-file", key, "--out", str(archive))
        old = vault.read_keyring(gw.home / "keys" / "data-keys.json").active
        gw.cli("keys", "rotate", officer="senior-s")
        gw.cli("keys", "retire", old, officer="senior-s")
        kept = gw.cli("keys", "destroy", old, officer="senior-s", expect_ok=False)  # the backup needs it
        assert kept.exit_code == 2 and "recorded backup(s) inside their retention need" in kept.output
        gw.stop()

        gw.cli("restore", str(archive), "--key-file", key)
        gw.start(workers=1)
        la = gw.client("la")
        with pytest.raises(GatewayFault) as refused:  # restored, not yet acknowledged: nothing is served
            la.get_contacts(results[0]["ChildId"], **READ)
        assert refused.value.code == "Unavailable"
        ready = requests.get(f"http://127.0.0.1:{gw.metrics_port}/readyz", timeout=10)
        assert ready.status_code == 503 and "awaiting two officers' acknowledgement" in ready.text
        [entry] = [e for e in gw.audit_entries_after(0) if e["operation"] == "GetContacts"]
        assert entry["outcome"] == "refused" and "awaiting two officers' acknowledgement" in entry["detail"]

        for officer in ("senior-s", "senior-t"):  # sessions opened after the backup are gone with its database
            gw.session(officer, fresh=True)
        proposed = gw.cli("restore", "acknowledge", officer="senior-s")
        gw.cli("restore", "acknowledge", "--proposal", proposal_id(proposed.output), officer="senior-t")
        deadline = time.monotonic() + 10  # each worker looks again within a second
        while True:
            try:
                la.get_contacts(results[0]["ChildId"], **READ)
                break
            except GatewayFault:
                assert time.monotonic() < deadline, "still refused after the acknowledgement"
                time.sleep(0.3)
        for result, update_ in zip(results, updates):
            child = la.get_contacts(result["ChildId"], **READ)
            assert child["Identity"]["FamilyName"] == update_["Identity"]["FamilyName"]

@contextlib.contextmanager
def gw_engine(gw):
    engine = create_engine(f"sqlite:///{gw.home / 'contactgate.db'}")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _home_state(gw) -> dict:
    """Every file of the home (but officers' sessions and SQLite's shared-memory index) with its digest,
    and the audit head: what a refused restore must leave as it was."""
    import hashlib

    state = {}
    for path in sorted(gw.home.rglob("*")):
        rel = str(path.relative_to(gw.home))
        if path.is_file() and not rel.startswith("local/") and not rel.endswith(("-shm", "-wal")):
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _reencrypted(archive, key: str, out, change) -> None:
    """The archive's members, ``change``d, sealed again under the same backup key (as someone holding
    the key, or a backup of another gateway made with the same key, would present)."""
    import io
    import json

    from gateway.backup import archive as fmt

    plain = io.BytesIO()
    header = fmt.decrypt_to(archive, fmt.BackupKey.from_file(Path(key)), plain)
    manifest, where = fmt.read_manifest(plain)
    change(manifest)
    with out.open("wb") as f:
        writer = fmt.ArchiveWriter(f, fmt.BackupKey.from_file(Path(key)), header["id"], header["created"])
        writer.add("manifest.json", json.dumps(manifest).encode())
        for name, (offset, size) in where.items():
            if name != "manifest.json":
                plain.seek(offset)
                writer.add(name, plain.read(size))
        writer.close()


def test_an_altered_cut_foreign_or_unknown_archive_or_the_wrong_key_is_refused_changing_nothing(tmp_path):
    gw = LocalGateway(home=tmp_path / "home")
    gw.cli("init")
    key = backup_key(tmp_path)
    archive = tmp_path / "b.cgb"
    gw.cli("backup", "--key-file", key, "--out", str(archive))
    data = archive.read_bytes()
    (tmp_path / "altered.cgb").write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1])
                                           + data[len(data) // 2 + 1:])
    (tmp_path / "cut.cgb").write_bytes(data[:-200])
    (tmp_path / "unknown.cgb").write_bytes(b"SQLite format 3\0" + data[16:])
    _reencrypted(archive, key, tmp_path / "foreign.cgb", lambda m: m.update(ca_fingerprint="ab" * 32))
    _reencrypted(archive, key, tmp_path / "stuffed.cgb",
                 lambda m: m["members"].update({"home/../../etc/cron.d/x": "00" * 32}))
    other = tmp_path / "other"
    other.mkdir()
    wrong = backup_key(other)
    before = _home_state(gw)
    for name, with_key, needle in [
            ("altered.cgb", key, "the archive is altered"), ("cut.cgb", key, "cut short"),
            ("unknown.cgb", key, "not a ContactGate backup"), ("b.cgb", wrong, "not made with this backup key"),
            ("foreign.cgb", key, "a backup of another gateway"), ("stuffed.cgb", key, "do not match its manifest")]:
        run = gw.cli("restore", str(tmp_path / name), "--key-file", with_key, expect_ok=False)
        assert run.exit_code == 2 and needle in run.output and "nothing was" in run.output, (name, run.output)
        assert "Traceback" not in run.output
        after = _home_state(gw)
        assert {k: v for k, v in after.items() if k != "contactgate.db"} == \
               {k: v for k, v in before.items() if k != "contactgate.db"}, name
    with gw_engine(gw) as conn:  # each refusal audited, and nothing else
        refused = conn.execute(select(audit_log.c.operation, audit_log.c.outcome, audit_log.c.detail)
                               .where(audit_log.c.operation == "restore.refused")).all()
        assert len(refused) == 6 and {r.outcome for r in refused} == {"refused"}
        assert conn.execute(select(proposals.c.id).where(proposals.c.kind == "restore")).first() is None
