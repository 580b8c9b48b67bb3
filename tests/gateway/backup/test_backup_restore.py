"""`contactgate backup` and `contactgate restore` (issue 24, item 1): one encrypted archive that
carries the database, the data keys it needs and the home's trust and signing material, restored
through real processes (the CLI, a gunicorn gateway, the SDK)."""

from __future__ import annotations

import os
import secrets

import pytest

from contactgate_local import proposal_id
from gateway.security import vault
from tests.support import child_update, private_gateway, unique, unique_name

READ = dict(user_id="bk.tester", role="gp", reason_code="referral", reason_text="backup test")


def backup_key(directory) -> str:
    """A throwaway backup key, as an operator makes one (32 random bytes, readable by its owner only)."""
    path = directory / "backup.key"
    path.write_bytes(secrets.token_bytes(32))
    os.chmod(path, 0o600)
    return str(path)


@pytest.mark.xfail(strict=True, reason="issue 24 (High): retiring a data key makes every earlier backup unreadable")
def test_a_backup_from_before_a_rotation_and_retirement_restores_and_every_child_reads(tmp_path):
    with private_gateway("sqlite", tmp_path / "home", orgs={"LA": ("local_authority", ["push", "query"])}) as gw:
        la = gw.client("la")
        updates = [child_update(unique("bk-"), unique_name("Back"), unique_name("Kid"), f"2013-0{1 + n}-1{n}")
                   for n in range(4)]
        results = la.submit_updates(updates)
        key = backup_key(tmp_path)
        archive = tmp_path / "before-rotation.cgbackup"
        gw.cli("backup", "--key-file", key, "--out", str(archive), officer="senior-s")
        old = vault.read_keyring(gw.home / "keys" / "data-keys.json").active
        gw.cli("keys", "rotate", officer="senior-s")
        gw.cli("keys", "retire", old, officer="senior-s")
        gw.stop()

        gw.cli("restore", str(archive), "--key-file", key)
        proposed = gw.cli("restore", "acknowledge", officer="senior-s")
        gw.cli("restore", "acknowledge", "--proposal", proposal_id(proposed.output), officer="senior-t")
        gw.start(workers=1)
        la = gw.client("la")
        for result, update_ in zip(results, updates):
            child = la.get_contacts(result["ChildId"], **READ)
            assert child["Identity"]["FamilyName"] == update_["Identity"]["FamilyName"]
