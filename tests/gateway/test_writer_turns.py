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
