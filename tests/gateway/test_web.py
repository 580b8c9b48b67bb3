"""gateway/web.py: what the console and the portal share."""

from __future__ import annotations

import pytest


def test_workers_making_the_cookie_key_at_once_all_use_the_one_that_was_made_first(tmp_path, monkeypatch):
    from gateway import web
    from gateway.files import write_private

    path = tmp_path / "keys" / "portal-secret"
    first = "a" * 64

    def another_worker_wins(n):  # another worker makes the key while this one makes its own
        write_private(path, first.encode())
        return "b" * 64

    monkeypatch.setattr(web.secrets, "token_hex", another_worker_wins)
    assert web.secret_key(path) == first.encode()
    assert path.read_bytes() == first.encode()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert [p.name for p in path.parent.iterdir()] == ["portal-secret"]  # nothing left behind
