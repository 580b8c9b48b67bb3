"""Turns at SQLite's write lock (gateway.db.WriterTurns): one writer at a time across threads and
processes, handed on without SQLite's sleeping busy handler, bounded by the database timeout,
released by the kernel when a holder dies."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.db import WriterTurns, WriterTurnTimeout, make_engine, writer_turns


def test_only_sqlite_files_have_turns(tmp_path, monkeypatch):
    assert writer_turns(make_engine(f"sqlite:///{tmp_path}/a.db"), 1.0) is not None
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert writer_turns(make_engine("sqlite://"), 1.0) is None
    assert list(Path.cwd().iterdir()) == []  # an engine in memory makes no file (it once made "sqlite:")


def test_one_thread_at_a_time(tmp_path):
    turns = WriterTurns(str(tmp_path / "db"), timeout_s=10)
    inside, most = [0], [0]
    lock = threading.Lock()

    def work():
        for _ in range(50):
            with turns.turn():
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.0005)
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert stat.S_IMODE(os.stat(tmp_path / "db-turn").st_mode) == 0o600


def test_another_process_holding_its_turn_times_out_then_its_death_frees_it(tmp_path):
    path = tmp_path / "db"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(path) + '-turn'!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        turns = WriterTurns(str(path), timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(WriterTurnTimeout):
            with turns.turn():
                pass
        assert 0.3 <= time.monotonic() - started < 2
        holder.kill()
        holder.wait()
        with turns.turn():  # the kernel released the dead holder's lock
            fd = os.open(str(path) + "-turn", os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):  # and this process holds it now
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    finally:
        holder.kill()
        holder.wait()


def test_a_timed_out_turn_is_a_database_failure_the_pipeline_answers_unavailable():
    from gateway.pipeline import DATABASE_FAILURES

    assert isinstance(WriterTurnTimeout("x"), DATABASE_FAILURES)


def test_a_turn_let_go_rings_a_private_doorbell(tmp_path):
    """A process waiting for another's turn sleeps on a FIFO that each holder rings as it lets go
    (so it tries again at once, not after a sleep); the FIFO is this user's, 0600."""
    turns = WriterTurns(str(tmp_path / "db"), timeout_s=1)
    with turns.turn():
        pass
    bell = tmp_path / ".db-turn-bell"  # hidden: a glob of db* (cp db* backup/) would wait on a FIFO
    info = os.stat(bell)
    assert stat.S_ISFIFO(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    fd = os.open(bell, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 16) == b"\0"  # rung once
    finally:
        os.close(fd)


def test_a_file_planted_where_the_doorbell_goes_is_left_alone(tmp_path):
    """Not a FIFO: waiters sleep between tries instead, and the file is neither read nor written."""
    planted = tmp_path / ".db-turn-bell"
    planted.write_bytes(b"planted")
    turns = WriterTurns(str(tmp_path / "db"), timeout_s=1)
    for _ in range(3):
        with turns.turn():
            pass
    assert planted.read_bytes() == b"planted"


def test_a_waiting_process_is_woken_by_the_holder_letting_go(tmp_path):
    """Another process holds its turn (through WriterTurns, so it rings as it lets go); this one
    waits on the bell with no timer of its own to wake it, and gets the turn once the other lets go."""
    path = tmp_path / "db"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from gateway.db import WriterTurns\n"
        f"turns = WriterTurns({str(path)!r}, timeout_s=5)\n"
        "with turns.turn():\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.readline()\n"
        "print('released', flush=True)\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        turns = WriterTurns(str(path), timeout_s=30)
        turns.WAKE_S = 60  # so only the holder's ring can let it in before the join below gives up
        got = threading.Event()

        def wait_for_turn():
            with turns.turn():
                got.set()

        waiter = threading.Thread(target=wait_for_turn)
        waiter.start()
        assert not got.wait(0.3)  # still held by the other process
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        waiter.join(timeout=20)
        assert got.is_set()
    finally:
        holder.kill()
        holder.wait()


def test_a_doorbell_others_may_use_is_not_used(tmp_path):
    """A FIFO of this user's that others may read or write (they could take or forge rings)."""
    bell = tmp_path / ".db-turn-bell"
    os.mkfifo(bell, 0o600)
    os.chmod(bell, 0o666)
    turns = WriterTurns(str(tmp_path / "db"), timeout_s=1)
    with turns.turn():
        pass
    fd = os.open(bell, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 16) == b""  # never rung, and nobody holds it open
    finally:
        os.close(fd)


def test_waiting_works_with_descriptors_past_1023(tmp_path):
    """A worker that opens its turn files late, under load, gets descriptors past select()'s limit
    (FD_SETSIZE, 1024): waiting for another process's turn must still time out cleanly."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-files limit ({hard}) is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if soft != resource.RLIM_INFINITY else soft, hard))
    path = tmp_path / "db"
    other = WriterTurns(str(path), timeout_s=5)
    held, release = threading.Event(), threading.Event()
    spare = []

    def hold():  # "another process": its own descriptors, so flock sees two open files
        with other.turn():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        turns = WriterTurns(str(path), timeout_s=0.3)
        with pytest.raises(WriterTurnTimeout):
            with turns.turn():
                pass
        assert turns._bell is not None and turns._bell > 1023
    finally:
        release.set()
        holder.join()
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
