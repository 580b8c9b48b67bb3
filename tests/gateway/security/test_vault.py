"""The data keyring is replaced durably (issue 22, item 9): `keys rotate` writes the new keyring to
a file of its own, flushes it to the disk, renames it over the old one and flushes the directory,
so a power cut at any moment leaves the old keyring or the new one, never a keyring that was renamed
but whose bytes (or whose name) were still in the page cache. On SQLite and PostgreSQL."""

from __future__ import annotations

import os


from contactgate_local import LocalGateway
from gateway.security import vault


def test_keys_rotate_flushes_the_new_keyring_and_its_directory(tmp_path, database_url, monkeypatch):
    gw = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gw.cli("init")
    keyring = gw.home / "keys" / "data-keys.json"
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    gw.cli("keys", "rotate", officer="senior-s")
    monkeypatch.undo()

    [renamed] = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(keyring)]
    temporary = events[renamed][1]
    assert temporary != str(keyring) and os.path.dirname(temporary) == str(keyring.parent)
    assert ("fsync", temporary) in events[:renamed], events  # the bytes are on disk before the name moves
    assert ("fsync", str(keyring.parent)) in events[renamed + 1:], events  # and the new name too
    assert not os.path.exists(temporary)
    assert len(vault.read_keyring(keyring).data_keys) == 2
    assert keyring.stat().st_mode & 0o777 == 0o600
