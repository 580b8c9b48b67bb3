"""A nightly load a local authority can leave unattended (issue 28, items 1-3), through the real CLI
and the running gateway, on both backends: a 2,000-row case-management extract in the shape such a
system exports (its own column names, DD/MM/YYYY dates, "SMITH, John" names, NHS numbers written
"943 476 5919") loads with no avoidable rejection; what the gateway rejects is in the rejects file
with its reason; SIGTERM mid-push exits 3 with the state saved, and the resumed run counts each row
once; the state follows the data, not the mapping."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.cli import push
from tests.support import nhs_number, unique, unique_name

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "samples"

# The mapping a data engineer writes for their system's export (no cleaning outside the tool), and its
# lookup file: samples that bench/push_memory.py pushes too.
CASE_SYSTEM_MAPPING = SAMPLES / "case_system.yaml"
RELATIONSHIPS = SAMPLES / "case_system_relationships.csv"
HEADER = ["Case ID", "Child Full Name", "Date of Birth", "Gender", "NHS No", "House No", "Street", "Post Code",
          "Main Carer", "Carer Rel", "Worker", "Allocated", "Closed", "CAF", "Team", "Case Notes"]
BAD_CHECK_DIGIT = 10  # rows the source system holds wrongly (the others at 35 % and 75 % of the extract)
# The 2,000 rows go through the mapping and the local check (no gateway: the gateway's linkage
# of each new child dominated, some 15 s for 2,000 rows); the gateway path with 200 on both backends.
ROWS = {"sqlite": 200, "postgresql": 200}


def wrong_rows(n: int) -> tuple[int, int]:
    """(a birth date in the future, an involvement that ends before it starts); none in a small extract."""
    return (n * 7 // 20, n * 3 // 4) if n > BAD_CHECK_DIGIT else (-1, -1)


def case_system(directory: Path, tag: str, n: int = 2000) -> tuple[Path, Path]:
    """(extract, mapping) as a case-management system exports them, every row a different child."""
    directory.mkdir(parents=True, exist_ok=True)
    mapping = directory / "cases.yaml"
    shutil.copy(CASE_SYSTEM_MAPPING, mapping)
    shutil.copy(RELATIONSHIPS, directory)
    extract = directory / "cases-2026-12-07.csv"
    seed = int(unique(), 16) % 10**7
    FUTURE_BIRTH, ENDS_BEFORE_START = wrong_rows(n)
    with open(extract, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        for i in range(n):
            born = dt.date(2010, 1, 1) + dt.timedelta(days=(seed + 37 * i) % 5000)
            nhs = nhs_number(seed * 1000 + i)
            written = [f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}", f"{nhs[:3]}-{nhs[3:6]}-{nhs[6:]}", nhs, ""][i % 4]
            closed = ""
            if i == FUTURE_BIRTH:
                born = dt.date.today() + dt.timedelta(days=30)
            if i == ENDS_BEFORE_START:
                closed = "01/01/2020"
            if i == BAD_CHECK_DIGIT:
                written = f"{nhs[:3]} {nhs[3:6]} {nhs[6:9]}{(int(nhs[9]) + 1) % 10}"
            writer.writerow([f"{tag}-{i:05d}", f"{unique_name().upper()},  {unique_name().title()} {unique_name().title()}",
                             born.strftime("%d/%m/%Y"), ["Male", "FEMALE", "female", ""][i % 4], written,
                             str(1 + i % 200), f"{unique_name()} road", f"ls{1 + i % 28}{i % 10}a{'bdefghjl'[i % 8]}",
                             f"{unique_name()} {unique_name()}", ["MUM", "DAD", "GRAN"][i % 3], "Sam Worker",
                             "02/09/2024", closed, ["Y", "N", ""][i % 3], ["EH", "CIN"][i % 2], "confidential"])
    return extract, mapping


def test_the_2000_row_extract_maps_with_no_avoidable_rejection(tmp_path):
    """The issue's 2,000 rows, as the system exports them, through `mapping check --sample` (what
    `push --dry-run` runs): only the row the source holds wrongly (a bad check digit) is rejected by
    the mapping; the birth date in the future is found before sending."""
    from connectors.cli import main

    extract, mapping = case_system(tmp_path / "la", unique("m"), 2000)
    result = CliRunner().invoke(main, ["mapping", "check", str(mapping), "--sample", str(extract), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output  # the sample has problems: the three wrong rows
    sample = json.loads(result.output)["sample"]
    assert sample["rows"] == 2000 and sample["rejected"] == 1
    assert "not a valid NHS number" in json.dumps(sample["rejects"])
    future, _ = wrong_rows(2000)
    assert [d["line"] for d in sample["dates_outside_childhood"]] == [future + 2]


def test_the_2000_row_extract_loads_through_the_gateway_with_no_avoidable_rejection(gateway, tmp_path):
    """The issue's 2,000 rows through the real CLI and a running gateway: every row the source holds
    rightly lands (1,997 children); the three it holds wrongly are rejected with their reasons, one
    by the mapping and two by the gateway; nothing is held for review."""
    tag = unique("k")
    extract, mapping = case_system(tmp_path / "la", tag, 2000)
    report, rejects = tmp_path / "report.json", tmp_path / "rejects.csv"
    before = gateway.child_count()
    result = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state-dir", str(tmp_path / "state"),
                                                "--rejects", str(rejects), "--report", str(report)),
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output  # rows rejected: wrong at the source
    counts = json.loads(report.read_text())["counts"]
    assert (counts["rows"], counts["created"], counts["review"]) == (2000, 1997, 0), counts
    assert (counts["rejected_by_mapping"], counts["rejected_by_gateway"]) == (1, 2), counts
    assert gateway.child_count() - before == 1997
    future, ends_early = wrong_rows(2000)
    assert {r["source_record_id"] for r in rows_of(rejects)} == {
        f"{tag}-{i:05d}" for i in (future, ends_early, BAD_CHECK_DIGIT)}


def push_args(gateway, extract: Path, mapping: Path, *extra: str) -> list[str]:
    client = gateway.certs["la"]
    return [str(extract), "--mapping", str(mapping), "--url", gateway.url, "--cert", str(client / "cert.pem"),
            "--key", str(client / "key.pem"), *extra]


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_a_nightly_extract_loads_every_row_once_through_a_sigterm_and_reports_every_outcome(gateway, tmp_path):
    tag, n = unique("n"), ROWS[gateway.backend]
    FUTURE_BIRTH, ENDS_BEFORE_START = wrong_rows(n)
    extract, mapping = case_system(tmp_path / "la", tag, n)
    state_dir, report = tmp_path / "state", tmp_path / "report.json"
    rejects = tmp_path / "rejects.csv"
    batch = n // 8
    common = ("--state-dir", str(state_dir), "--rejects", str(rejects), "--batch-size", str(batch))
    before = gateway.child_count()
    process = subprocess.Popen([sys.executable, "-c", "from connectors.cli import main; main()", "push",
                                *push_args(gateway, extract, mapping, *common)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # SIGTERM once a batch is done
            time.sleep(0.05)
            states = list(state_dir.glob("*.state")) if state_dir.exists() else []
            if states:
                try:
                    with sqlite3.connect(states[0]) as db:
                        if db.execute("SELECT count(*) FROM sent").fetchone()[0] >= batch:
                            break
                except sqlite3.OperationalError:
                    continue
        assert process.poll() is None, "the push finished before it could be stopped"
        os.kill(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, (out, err)
    assert "stopped (SIGTERM)" in err and "run the push again to resume" in err
    assert "rows read:" in out  # what was done before the stop is said
    partial = gateway.child_count() - before
    assert 0 < partial < n - 3

    result = CliRunner().invoke(push, push_args(gateway, extract, mapping, *common, "--report", str(report)),
                                catch_exceptions=False)
    assert result.exit_code == 1, result.output  # some rows rejected: the data is wrong at the source
    assert gateway.child_count() - before == n - 3  # every good row once; none twice
    counts = json.loads(report.read_text())["counts"]
    assert counts["rows"] == n
    assert counts["rejected"] == 3 and counts["rejected_by_mapping"] == 1 and counts["rejected_by_gateway"] == 2
    assert sum(counts[k] for k in ("created", "updated", "matched", "review", "rejected", "unchanged")) == n
    assert counts["unchanged"] >= batch - 1  # sent before the stop: counted once, as unchanged
    rejected = {r["source_record_id"]: r for r in rows_of(rejects)}
    assert set(rejected) == {f"{tag}-{i:05d}" for i in (FUTURE_BIRTH, ENDS_BEFORE_START, BAD_CHECK_DIGIT)}
    future = rejected[f"{tag}-{FUTURE_BIRTH:05d}"]
    assert future["rejected_by"] == "gateway" and "date of birth is in the future" in future["reason"]
    assert future["line"] == str(FUTURE_BIRTH + 2)
    assert "ends before it starts" in rejected[f"{tag}-{ENDS_BEFORE_START:05d}"]["reason"]
    bad = rejected[f"{tag}-{BAD_CHECK_DIGIT:05d}"]
    assert bad["rejected_by"] == "mapping" and "not a valid NHS number" in bad["reason"]
    assert "review: 0" in result.output or "review 0" in result.output

    # the mapping copied to a new folder and edited (a comment): the caseload is not sent again
    moved = tmp_path / "elsewhere" / "cases-copy.yaml"
    moved.parent.mkdir()
    shutil.copy(mapping.parent / RELATIONSHIPS.name, moved.parent)
    moved.write_text("# copied\n" + mapping.read_text())
    again = CliRunner().invoke(push, push_args(gateway, extract, moved, *common), catch_exceptions=False)
    assert f"unchanged since the last push: {n - 3}" in again.output, again.output
    assert gateway.child_count() - before == n - 3


def small(tmp_path: Path, tag: str) -> tuple[Path, Path]:
    return case_system(tmp_path / "small", tag, n=3)


def test_forget_starts_again_and_an_old_state_beside_the_mapping_is_moved_into_the_state_directory(gateway, tmp_path):
    tag = unique("g")
    extract, mapping = small(tmp_path, tag)
    state_dir = tmp_path / "state"
    # a push from before this release kept its state beside the mapping (MAPPING.state)
    old = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state", str(mapping.with_suffix(".state"))),
                             catch_exceptions=False)
    assert old.exit_code == 0, old.output
    moved = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state-dir", str(state_dir)),
                               catch_exceptions=False)
    assert "moved the state" in moved.output and "unchanged since the last push: 3" in moved.output, moved.output
    assert not mapping.with_suffix(".state").exists() and list(state_dir.glob("*.state"))
    forgot = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state-dir", str(state_dir), "--forget"),
                                catch_exceptions=False)
    assert forgot.exit_code == 0 and "forgot what was sent" in forgot.output, forgot.output
    assert "sent: 3" in forgot.output  # started again: every row sent (the gateway updates, never duplicates)


def test_the_state_is_kept_per_source_organisation_and_gateway(gateway, tmp_path):
    tag = unique("s")
    extract, mapping = small(tmp_path, tag)
    other_extract = extract.with_name("referrals-2026-12-07.csv")
    shutil.copy(extract, other_extract)
    state_dir = tmp_path / "state"
    for path in (extract, other_extract):
        result = CliRunner().invoke(push, push_args(gateway, path, mapping, "--state-dir", str(state_dir)),
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert len(list(state_dir.glob("*.state"))) == 2  # two sources: two states
    tomorrow = extract.with_name("cases-2026-12-08.csv")  # the same source, the next night's file
    shutil.copy(extract, tomorrow)
    result = CliRunner().invoke(push, push_args(gateway, tomorrow, mapping, "--state-dir", str(state_dir)),
                                catch_exceptions=False)
    assert "unchanged since the last push: 3" in result.output and len(list(state_dir.glob("*.state"))) == 2
    assert "--source-name" in CliRunner().invoke(push, ["--help"]).output


def test_two_systems_with_the_same_file_name_keep_two_states_and_full_ends_nothing_of_the_other(gateway, tmp_path):
    """Review HIGH 1: /x/system1/cases.csv and /x/system2/cases.csv are two sources (only a date in
    the file's name is taken as the night's), and a --full push of one never ends the other's."""
    state_dir = tmp_path / "state"
    for system in ("system1", "system2"):
        extract, mapping = case_system(tmp_path / system, unique("t"), n=3)
        result = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state-dir", str(state_dir), "--full"),
                                    catch_exceptions=False)
        assert result.exit_code == 0 and "ended" not in result.output, result.output
    assert len(list(state_dir.glob("*.state"))) == 2
    # one state given for both: --full from another extract is refused (exit 2) unless the source is named
    state = tmp_path / "one.state"
    first = push_args(gateway, tmp_path / "system1" / extract.name, mapping, "--state", str(state), "--full")
    assert CliRunner().invoke(push, first, catch_exceptions=False).exit_code == 0
    other = push_args(gateway, extract, mapping, "--state", str(state), "--full")
    refused = CliRunner().invoke(push, other, catch_exceptions=False)
    assert refused.exit_code == 2 and "--source-name" in refused.output, refused.output
    assert "ended" not in refused.output


def held_batch(gateway, extract: Path, mapping: Path, state: Path) -> None:
    """A push cut off with a batch in flight: the gateway unreachable, SIGTERM while it retries."""
    client = gateway.certs["la"]
    process = subprocess.Popen([sys.executable, "-c", "from connectors.cli import main; main()", "push", str(extract),
                                "--mapping", str(mapping), "--url", "https://127.0.0.1:9", "--cert",
                                str(client / "cert.pem"), "--key", str(client / "key.pem"), "--state", str(state),
                                "--rejects", str(state) + ".rejects"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if state.exists():
                try:
                    with sqlite3.connect(state) as db:
                        if db.execute("SELECT count(*) FROM pending").fetchone()[0]:
                            break
                except sqlite3.OperationalError:
                    continue
        os.kill(process.pid, signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, (out, err)


def test_a_batch_held_from_last_night_is_reported_against_its_own_extract_and_each_row_counted_once(gateway, tmp_path):
    """Review HIGH 3 and MEDIUM 8: a batch held from an interrupted night is settled first; what the
    gateway rejects of it is listed against the previous run's extract (not tonight's line numbers);
    tonight's rows are each counted once (a row of the held batch changed tonight too), and the
    resumed batch is reported beside them."""
    tag = unique("h")
    last_night, mapping = case_system(tmp_path / "la", tag, n=3)
    rows = rows_of(last_night)
    rows[2]["Date of Birth"] = (dt.date.today() + dt.timedelta(days=30)).strftime("%d/%m/%Y")  # the gateway rejects it
    with open(last_night, "w", newline="") as stream:
        writer = csv.DictWriter(stream, HEADER)
        writer.writeheader()
        writer.writerows(rows)
    state = tmp_path / "held.state"
    held_batch(gateway, last_night, mapping, state)

    new, _ = case_system(tmp_path / "new", tag + "n", n=2)
    tonight = last_night.with_name("cases-2026-12-08.csv")
    changed = {**rows[1], "Post Code": "LS6 3AA"}
    with open(tonight, "w", newline="") as stream:
        writer = csv.DictWriter(stream, HEADER)
        writer.writeheader()
        writer.writerows([*rows_of(new), rows[0], changed])  # the future-born row left the system
    report, rejects = tmp_path / "report.json", tmp_path / "rejects.csv"
    result = CliRunner().invoke(push, push_args(gateway, tonight, mapping, "--state", str(state), "--rejects",
                                                str(rejects), "--report", str(report)), catch_exceptions=False)
    assert result.exit_code == 1, result.output
    [rejected] = rows_of(rejects)
    assert rejected["source_record_id"] == f"{tag}-00002" and rejected["line"] == ""
    assert "previous run's extract" in rejected["reason"] and str(last_night) in rejected["reason"]
    written = json.loads(report.read_text())
    counts = written["counts"]
    assert counts["rows"] == 4
    assert sum(counts[k] for k in ("created", "updated", "matched", "review", "rejected", "unchanged")) == 4, counts
    assert written["resumed_batch"]["records"] == 3 and written["resumed_batch"]["outcomes"]["rejected"] == 1


def test_a_push_that_cannot_start_exits_2_or_3_not_1(gateway, tmp_path):
    """Review MEDIUM 6: a certificate that is not PEM is a usage error (2); a state folder that cannot
    be made is "could not run" (3); never 1, which says rows were rejected."""
    extract, mapping = small(tmp_path, unique("e"))
    client = gateway.certs["la"]
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("not a certificate\n")
    beside = ("--ca", str(client / "ca.pem"), "--gateway-cert", str(client / "gateway-signing.pem"))
    bad_cert = [str(extract), "--mapping", str(mapping), "--url", gateway.url, "--cert", str(not_pem),
                "--key", str(client / "key.pem"), *beside, "--state-dir", str(tmp_path / "state")]
    result = CliRunner().invoke(push, bad_cert)
    assert result.exit_code == 2 and "certificate" in result.output, result.output
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state-dir", str(a_file / "state")))
    assert result.exit_code == 3 and "could not run" in result.output, result.output


def test_forget_says_it_forgot_only_once_it_has(gateway, tmp_path):
    """Review LOW: a --forget refused because another push holds the state forgets nothing and says
    nothing of forgetting."""
    import fcntl

    extract, mapping = small(tmp_path, unique("l"))
    state = tmp_path / "busy.state"
    with open(str(state) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another push, running
        result = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state", str(state), "--forget"))
    assert result.exit_code == 3 and "another push is using" in result.output, result.output
    assert "forgot what was sent" not in result.output


def test_a_push_that_could_not_run_still_writes_its_report(gateway, tmp_path):
    """Review LOW: a push that stops with exit 3 writes --report too, saying why (a scheduler reads it)."""
    import fcntl

    extract, mapping = small(tmp_path, unique("r"))
    state, report = tmp_path / "busy.state", tmp_path / "report.json"
    with open(str(state) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another push, running
        result = CliRunner().invoke(push, push_args(gateway, extract, mapping, "--state", str(state),
                                                    "--report", str(report)))
    assert result.exit_code == 3, result.output
    written = json.loads(report.read_text())
    assert "another push is using" in written["error"] and written["counts"]["rows"] == 0
