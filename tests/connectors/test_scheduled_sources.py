"""Scheduled sources, unattended (issue 28, item 5), through the real CLI and the running gateway
(each backend): a folder whose new files are pushed in name order and
moved to done/ or failed/; one run at a time per state directory (a lock); a SQL query against the
organisation's own database (PostgreSQL); an SFTP drop on the distribution's OpenSSH server, started
here on 127.0.0.1 with its own host key, whose key is checked against the operator's known_hosts."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from connectors.cli import push
from contactgate_local import free_port
from tests.connectors.test_nightly import case_system, push_args
from tests.support import POSTGRES_ADMIN_URL, unique

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)


def run(*args: str):
    return CliRunner().invoke(push, list(args), catch_exceptions=False)


def test_a_folder_source_pushes_new_files_in_name_order_and_moves_each_to_done_or_failed(gateway, tmp_path):
    tag = unique("f")
    first, mapping = case_system(tmp_path / "la", tag, n=3)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.move(first, inbox / "cases-2026-12-07.csv")
    newer, _ = case_system(tmp_path / "lb", unique("f"), n=1)
    (inbox / "cases-2026-12-08.csv").write_text((inbox / "cases-2026-12-07.csv").read_text()
                                                + newer.read_text().splitlines(keepends=True)[1])  # one new row
    (inbox / "notes.csv").write_text("not,an,extract\n1,2,3\n")  # a file this mapping cannot read
    (inbox / ".cases-2026-12-09.csv.part").write_text("still being written")  # skipped: in progress
    state_dir, report = tmp_path / "state", tmp_path / "report.json"
    args = push_args(gateway, inbox, mapping, "--state-dir", str(state_dir), "--report", str(report))
    args[0:1] = ["--folder", str(inbox)]
    before = gateway.child_count()
    result = run(*args)
    assert result.exit_code == 2, result.output  # the worst of the files' codes: notes.csv could not be used
    assert sorted(p.name for p in (inbox / "done").iterdir() if not p.name.endswith(".rejects.csv")) == [
        "cases-2026-12-07.csv", "cases-2026-12-08.csv"]
    assert [p.name for p in (inbox / "failed").iterdir() if not p.name.endswith(".rejects.csv")] == ["notes.csv"]
    assert (inbox / ".cases-2026-12-09.csv.part").exists()
    assert gateway.child_count() - before == 4  # three, then one new (the second file is a delta of the first)
    files = json.loads(report.read_text())["files"]
    assert [(f["extract"].rsplit("/", 1)[-1], f["exit_code"]) for f in files] == [
        ("cases-2026-12-07.csv", 0), ("cases-2026-12-08.csv", 0), ("notes.csv", 2)]
    assert files[1]["counts"]["unchanged"] == 3 and files[1]["counts"]["created"] == 1
    assert (inbox / "done" / "cases-2026-12-07.csv.rejects.csv").exists()

    # nothing new: nothing is read again (done/ is never re-processed)
    again = run(*args)
    assert again.exit_code == 0 and "no new files" in again.output, again.output
    assert gateway.child_count() - before == 4


def test_a_second_run_while_one_holds_the_lock_exits_3_and_changes_nothing(gateway, tmp_path):
    extract, mapping = case_system(tmp_path / "la", unique("l"), n=3)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    before = gateway.child_count()
    # another run (another process: flock locks are per open file) holds the state directory's lock
    holder = subprocess.Popen(["python3", "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                               str(state_dir / "push.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run(*push_args(gateway, extract, mapping, "--state-dir", str(state_dir)))
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 3, result.output
    assert "another run holds" in result.output and "push.lock" in result.output
    assert gateway.child_count() == before and not list(state_dir.glob("*.state"))
    assert run(*push_args(gateway, extract, mapping, "--state-dir", str(state_dir))).exit_code == 0  # released


SQL_MAPPING = """\
description: the case-management system's own database, read with a query
source: sql
sql:
  query: >
    SELECT case_id AS "Case ID", child_name AS "Child Full Name", born AS "Date of Birth", nhs AS "NHS No"
    FROM cases WHERE open ORDER BY case_id
id: {from: Case ID}
fields:
  Identity.FamilyName: {from: Child Full Name, name: family, required: true}
  Identity.GivenName: {from: Child Full Name, name: given, split: " "}
  Identity.DateOfBirth: {from: Date of Birth}
  Identity.Gender: {value: unknown}
  Identity.NhsNumber: {from: NHS No, transform: nhs_number}
"""


@pytest.fixture
def organisation_database():
    """A temporary PostgreSQL database standing for the organisation's own, dropped afterwards."""
    name = f"cg_source_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_sql_source_pushes_the_rows_of_a_query_on_the_organisations_postgresql(gateway, tmp_path,
                                                                                  organisation_database):
    tag = unique("q")
    engine = create_engine(organisation_database)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE cases (case_id text PRIMARY KEY, child_name text, born date, nhs text, "
                          "notes text, open boolean)"))
        conn.execute(text("INSERT INTO cases VALUES (:id, :name, :born, :nhs, 'confidential', :open)"), [
            {"id": f"{tag}-1", "name": f"{unique('Sqlchild').upper()}, Ann", "born": "2015-03-02",
             "nhs": "943 476 5919", "open": True},
            {"id": f"{tag}-2", "name": f"{unique('Sqlchild').upper()}, Ben", "born": "2016-04-05", "nhs": None,
             "open": True},
            {"id": f"{tag}-3", "name": "CLOSED, Case", "born": "2012-01-01", "nhs": None, "open": False},
            {"id": f"{tag}-4", "name": f"{unique('Sqlchild').upper()}, Cat", "born": "2014-01-01",
             "nhs": "943 476 5918", "open": True},  # a wrong check digit: rejected by the mapping
        ])
    engine.dispose()
    mapping = tmp_path / "cases-sql.yaml"
    mapping.write_text(SQL_MAPPING)
    state_dir, report, rejects = tmp_path / "state", tmp_path / "report.json", tmp_path / "rejects.csv"
    args = push_args(gateway, Path("-"), mapping, "--state-dir", str(state_dir), "--report", str(report),
                     "--rejects", str(rejects))
    args[0:1] = ["--sql"]
    before = gateway.child_count()
    result = CliRunner(env={"CONTACTGATE_SOURCE_DATABASE_URL": organisation_database}).invoke(
        push, args, catch_exceptions=False)
    assert result.exit_code == 1, result.output  # one row rejected
    assert gateway.child_count() - before == 2, result.output
    counts = json.loads(report.read_text())["counts"]
    assert counts["rows"] == 3 and counts["created"] == 2 and counts["rejected_by_mapping"] == 1
    assert "not a valid NHS number" in rejects.read_text() and f"{tag}-4" in rejects.read_text()
    assert "columns not mapped, not sent" not in result.output  # only what the query selects is read
    assert organisation_database.rsplit("/", 1)[-1] in json.loads(report.read_text())["extract"]
    again = CliRunner(env={"CONTACTGATE_SOURCE_DATABASE_URL": organisation_database}).invoke(
        push, args, catch_exceptions=False)
    assert "unchanged since the last push: 2" in again.output, again.output  # the same source: deltas


# ---- SFTP --------------------------------------------------------------------------------------

@pytest.fixture
def sshd(tmp_path):
    """The distribution's OpenSSH server on 127.0.0.1 and a free port, with its own host key, config
    and authorised key in tmp_path: (port, host key line for known_hosts, client key, drop folder)."""
    if SSHD is None:
        if os.environ.get("CONTACTGATE_REQUIRE_SSHD"):
            pytest.fail("sshd not found (make sshd installs openssh-server)")
        pytest.skip("sshd not found (make sshd installs openssh-server)")
    home = tmp_path / "sshd"
    home.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    port = free_port()
    config = home / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\nPidFile {home / 'pid'}\n"
                      f"AuthorizedKeysFile {home / 'authorized_keys'}\nPasswordAuthentication no\n"
                      f"KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\nStrictModes no\n"
                      f"PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation directory
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {process.stderr.read() if process.poll() is not None else ''}")
                time.sleep(0.05)
        key_type, key = (home / "host_key.pub").read_text().split()[:2]
        drop = tmp_path / "drop"
        drop.mkdir()
        yield port, f"[127.0.0.1]:{port} {key_type} {key}\n", home / "client_key", drop
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_sftp_drop_is_pushed_and_a_wrong_host_key_is_refused(gateway, tmp_path, sshd):
    port, host_line, client_key, drop = sshd
    tag = unique("t")
    extract, mapping = case_system(tmp_path / "la", tag, n=3)
    shutil.move(extract, drop / "cases-2026-12-07.csv")
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    url = f"sftp://{user}@127.0.0.1:{port}{drop}"
    wrong = tmp_path / "wrong_known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    wrong.write_text(f"[127.0.0.1]:{port} " + " ".join((tmp_path / "other.pub").read_text().split()[:2]) + "\n")
    known = tmp_path / "known_hosts"
    known.write_text(host_line)
    state_dir = tmp_path / "state"

    def sftp_args(known_hosts: Path) -> list[str]:
        args = push_args(gateway, drop, mapping, "--state-dir", str(state_dir), "--known-hosts", str(known_hosts),
                         "--sftp-key", str(client_key))
        args[0:1] = ["--sftp", url]
        return args

    before = gateway.child_count()
    refused = run(*sftp_args(wrong))
    assert refused.exit_code == 3 and "host key" in refused.output, refused.output
    assert gateway.child_count() == before and (drop / "cases-2026-12-07.csv").exists()
    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    refused = run(*sftp_args(unknown))  # never accepted on first use
    assert refused.exit_code == 3 and "host key" in refused.output, refused.output

    result = run(*sftp_args(known))
    assert result.exit_code == 0, result.output
    assert gateway.child_count() - before == 3
    assert (drop / "done" / "cases-2026-12-07.csv").exists() and not (drop / "cases-2026-12-07.csv").exists()
    again = run(*sftp_args(known))
    assert again.exit_code == 0 and "no new files" in again.output, again.output
