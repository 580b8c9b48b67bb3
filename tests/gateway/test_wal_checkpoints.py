"""SQLite's write-ahead log is copied into the database by a thread of the serving process
(gateway.db.WalCheckpoints), not inside the commit of whichever writer takes it past 1,000 pages —
that writer would hold its turn at the write lock through the copy, and every writer behind it wait."""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from gateway.db import WalCheckpoints, make_engine

PAGES = 1_500  # past SQLite's default autocheckpoint (1,000 pages)


def _write_many_pages(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, blob BLOB)"))
        conn.execute(text("INSERT INTO filler (blob) VALUES (randomblob(4000))"), [{}] * PAGES)


def _size(path) -> int:
    return os.stat(path).st_size


def _engine(tmp_path):
    path = tmp_path / "db.sqlite"
    return make_engine(f"sqlite:///{path}", timeout_s=5), path


def test_without_the_thread_the_commit_itself_checkpoints(tmp_path):
    engine, path = _engine(tmp_path)
    _write_many_pages(engine)
    assert _size(path) > PAGES * 4000 / 2  # copied into the database during the commit
    engine.dispose()


def test_with_the_thread_the_commit_does_not_checkpoint_and_the_thread_does(tmp_path):
    engine, path = _engine(tmp_path)
    checkpoints = WalCheckpoints(engine, interval_s=3600)  # never wakes in this test
    try:
        _write_many_pages(engine)
        assert _size(path) < PAGES * 4000 / 10  # still only in the log
        assert _size(f"{path}-wal") > PAGES * 4000
    finally:
        checkpoints.stop()

    checkpoints = WalCheckpoints(engine, interval_s=0.05)
    try:
        deadline = time.monotonic() + 10
        while _size(path) < PAGES * 4000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _size(path) >= PAGES * 4000  # copied by the thread, with no writer waiting on it
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM filler")).scalar_one() == PAGES
    finally:
        checkpoints.stop()
        engine.dispose()


def test_a_database_path_with_uri_characters_is_checkpointed(tmp_path):
    directory = tmp_path / "a home #1 at 100%"
    directory.mkdir()
    path = directory / "db.sqlite"
    engine = make_engine(f"sqlite:///{path}", timeout_s=5)
    checkpoints = WalCheckpoints(engine, interval_s=0.05)
    try:
        _write_many_pages(engine)
        deadline = time.monotonic() + 10
        while _size(path) < PAGES * 4000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _size(path) >= PAGES * 4000
    finally:
        checkpoints.stop()
        engine.dispose()


def test_the_thread_outlives_a_missing_database_and_never_creates_one(tmp_path):
    engine, path = _engine(tmp_path)
    _write_many_pages(engine)
    engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    checkpoints = WalCheckpoints(engine, interval_s=0.02)
    try:
        time.sleep(0.3)
        assert checkpoints._thread.is_alive() and not path.exists()
    finally:
        checkpoints.stop()


def test_the_serving_gateway_checkpoints_in_the_background(tmp_path):
    """A serving worker starts the thread: after one small exchange (far below 1,000 log pages, so
    no commit would checkpoint) the database file itself is written within a second or so."""
    from sqlalchemy import make_url

    from tests.support import child_update, private_gateway, unique, unique_name

    with private_gateway("sqlite", tmp_path / "home", orgs={"LA": ("local_authority", ["push"])}) as gw:
        client = gw.client("la")
        path = make_url(gw.database_url).database
        client.submit_updates([child_update(unique("wal-"), unique_name("Wal"), "Ada", "2016-03-04")])
        time.sleep(1.0)  # the start-up's and that exchange's pages are checkpointed
        before = os.stat(path).st_mtime_ns
        client.submit_updates([child_update(unique("wal-"), unique_name("Wal"), "Bo", "2015-02-03")])
        deadline = time.monotonic() + 5
        while os.stat(path).st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.stat(path).st_mtime_ns != before
