"""`contactgate push` end to end through the real gateway, on both backends (issue 11, items 3-4):
the local authority sample lands with its bad rows rejected with reasons; a re-push sends nothing;
a newer extract sends only its differences; --full ends the involvement of a record that left; a
push killed with SIGKILL mid-file and run again applies every row exactly once."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from connectors.cli import push
from gateway.db import source_records
from tests.support import nhs_number, unique, unique_name

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "samples"
MAPPING = SAMPLES / "la_case_management.yaml"
WHO = dict(user_id="push.tester", role="social worker", reason_code="referral", reason_text="push test")


def args(gateway, extract: Path, state: Path, *extra: str) -> list[str]:
    client = gateway.certs["la"]
    return [str(extract), "--mapping", str(MAPPING), "--url", gateway.url, "--cert", str(client / "cert.pem"),
            "--key", str(client / "key.pem"), "--state", str(state), "--rejects", str(extract) + ".rejects", *extra]


def run_push(gateway, extract: Path, state: Path, *extra: str, code: int = 0) -> str:
    result = CliRunner().invoke(push, args(gateway, extract, state, *extra), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def extract_like_the_sample(tmp_path: Path, tag: str, *, rows: list[dict] | None = None) -> Path:
    """The sample made this test's own: unique ids, and names, birth dates and addresses no other
    test's copy shares (the session gateway is shared, and its linkage would rightly join copies)."""
    with open(SAMPLES / "la_case_management.csv", newline="") as stream:
        reader = csv.DictReader(stream)
        header, sample = reader.fieldnames, list(reader)
    if rows is None:
        rows = sample
        seed = int(unique(), 16)
        for i, row in enumerate(rows):
            row["CaseRef"] = f"{tag}-{row['CaseRef']}"
            if row["ChildName"]:
                given = row["ChildName"].partition(",")[2]
                row["ChildName"] = f"{unique_name().upper()},{given}"
            if row["DOB"] != "31/02/2014":  # the sample's impossible date stays impossible
                born = dt.date(2010, 1, 1) + dt.timedelta(days=(seed + 97 * i) % 4000)
                row["DOB"] = born.isoformat() if "-" in row["DOB"] else born.strftime("%d/%m/%Y")
            row["AddressLine1"] = f"{1 + (seed + i) % 300} {unique_name().title()} Road"
            row["Postcode"] = f"LS{1 + (seed + i) % 28} {i % 10}{'ABDEFGHJ'[seed % 8]}{'LNPQRSTU'[i % 8]}"
            row["NHSNumber"] = ""
    path = tmp_path / f"{tag}.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def born_on(row: dict) -> dt.date:
    text = row["DOB"]
    return dt.date.fromisoformat(text) if "-" in text else dt.datetime.strptime(text, "%d/%m/%Y").date()


def one(clients, row: dict) -> dict:
    """The child of an extract's row, found as a practitioner would."""
    family = row["ChildName"].partition(",")[0]
    candidates = clients("la").find_child(family_name=family, date_of_birth=born_on(row), **WHO)
    [found] = [c for c in candidates if c["FamilyName"] == family]
    return found


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_sample_lands_and_its_bad_rows_are_rejected_with_reasons(gateway, clients, tmp_path):
    tag = unique("p")
    extract, state = extract_like_the_sample(tmp_path, tag), tmp_path / "la.state"
    before = gateway.child_count()
    output = run_push(gateway, extract, state, code=1)
    assert "sent: 5 in 1 batch(es)" in output and "rejected 2 (2 before sending, 0 by the gateway)" in output
    # each a new child (one held beside a look-alike from another test's copy is answered as new too)
    landed = re.search(r"created (\d+), updated 0, matched 0, review 0", output)
    assert landed and int(landed[1]) == 5, output
    assert "columns not mapped, not sent: CaseNotes, RiskFlag, TeamCode" in output
    assert gateway.child_count() == before + 5
    rejects = read_rows(Path(str(extract) + ".rejects"))
    assert [(r["line"], r["source_record_id"]) for r in rejects] == [("6", f"{tag}-LA-000105"), ("8", f"{tag}-LA-000107")]
    assert "is not a date" in rejects[0]["reason"] and "ChildName is empty" in rejects[1]["reason"]
    found = one(clients, read_rows(extract)[0])
    child = clients("la").get_contacts(found["ChildId"], **WHO)
    assert child["Identity"]["GivenName"] == ["Chidera", "Grace"]

    # the same extract again: nothing sent, nothing changed
    snapshot = gateway.index_snapshot()
    again = run_push(gateway, extract, state, code=1)
    assert "nothing changed: nothing was sent" in again and "unchanged since the last push: 5" in again
    assert gateway.index_snapshot() == snapshot

    # a newer extract: one address changed, one case new; only those two are sent
    rows = read_rows(extract)
    rows[0]["Postcode"] = "LS6 3AA"
    rows.append({**rows[1], "CaseRef": f"{tag}-LA-000199", "ChildName": f"{unique_name().upper()}, Ava",
                 "DOB": "01/01/2020", "AddressLine1": f"{unique_name().title()} House", "Postcode": "LS9 9ZZ"})
    newer = extract_like_the_sample(tmp_path, tag + "-w2", rows=rows)
    output = run_push(gateway, newer, state, code=1)
    assert "sent: 2 in 1 batch(es)" in output and "updated 1" in output
    assert clients("la").get_contacts(found["ChildId"], **WHO)["Address"]["Postcode"] == "LS6 3AA"


def test_a_full_extract_ends_the_involvement_of_a_case_that_left(gateway, clients, tmp_path):
    tag = unique("f")
    extract, state = extract_like_the_sample(tmp_path, tag), tmp_path / "full.state"
    run_push(gateway, extract, state, "--full", code=1)
    rows = [r for r in read_rows(extract) if r["CaseRef"] != f"{tag}-LA-000103"]  # Zofia's case closed, not sent
    later = extract_like_the_sample(tmp_path, tag + "-w2", rows=rows)
    # another file name, the same source: said so (a --full push from another source is refused)
    output = run_push(gateway, later, state, "--full", "--source-name", "la-cases", code=1)
    assert "ended (absent from the full extract): 1" in output
    found = one(clients, next(r for r in read_rows(extract) if r["CaseRef"] == f"{tag}-LA-000103"))
    contacts = clients("la").get_contacts(found["ChildId"], **WHO)["Contact"]
    assert [(c["Organisation"], c["Involvement"]["End"]) for c in contacts] == [("LA", dt.date.today())], contacts


def big_extract(path: Path, n: int, tag: str) -> None:
    with open(SAMPLES / "la_case_management.csv", newline="") as stream:
        header = csv.DictReader(stream).fieldnames
    born = dt.date(2012, 1, 1)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, header)
        writer.writeheader()
        for i in range(n):
            writer.writerow({"CaseRef": f"{tag}-{i:06d}", "ChildName": f"{unique_name().upper()}, {unique_name().title()}",
                             "DOB": (born + dt.timedelta(days=i % 3000)).strftime("%d/%m/%Y"), "Sex": "F",
                             "NHSNumber": nhs_number(int(unique(), 16) % 10**8),
                             "AddressLine1": f"{i} {unique_name().title()} Street", "Town": "Leeds",
                             "Postcode": f"LS{1 + i % 28} {i % 10}AB", "MainCarer": "Pat Parent",
                             "MainCarerRelationship": "MO", "AllocatedWorker": "Sam Worker", "WorkerRole": "SW",
                             "CaseOpened": "01/09/2024", "EarlyHelpAssessment": "N", "IsLeadProfessional": "Y",
                             "CaseNotes": "confidential"})


def test_a_push_killed_mid_file_and_run_again_applies_every_row_exactly_once(gateway, tmp_path):
    tag, n = unique("k"), 600
    extract, state = tmp_path / "big.csv", tmp_path / "big.state"
    big_extract(extract, n, tag)
    before = gateway.child_count()
    process = subprocess.Popen([sys.executable, "-c", "from connectors.cli import main; main()", "push",
                                *args(gateway, extract, state, "--batch-size", "150")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it once a batch is done and another is in flight
            time.sleep(0.05)
            if state.exists():
                with sqlite3.connect(state) as db:
                    try:
                        done = db.execute("SELECT count(*) FROM sent").fetchone()[0]
                        pending = db.execute("SELECT count(*) FROM pending").fetchone()[0]
                    except sqlite3.OperationalError:
                        continue
                if done >= 150 and pending:
                    break
        assert process.poll() is None, "the push finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert 0 < gateway.child_count() - before < n
    report = tmp_path / "report.json"
    output = run_push(gateway, extract, state, "--batch-size", "150", "--report", str(report))
    assert "(resumed)" in output and "rejected 0" in output
    counts = json.loads(report.read_text())["counts"]  # every row counted once, the held batch's too
    assert counts["rows"] == n
    assert sum(counts[k] for k in ("created", "updated", "matched", "review", "rejected", "unchanged")) == n, counts
    assert gateway.child_count() - before == n  # every row once: no child twice, none missing
    with gateway.engine.connect() as conn:
        held = conn.execute(select(func.count()).select_from(source_records)
                            .where(source_records.c.org_code == "LA")).scalar_one()
    again = run_push(gateway, extract, state, "--batch-size", "150")
    assert f"unchanged since the last push: {n}" in again and gateway.child_count() - before == n
    with gateway.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_records)
                            .where(source_records.c.org_code == "LA")).scalar_one() == held


def test_the_reject_file_quotes_every_cell_and_starts_no_formula(gateway, tmp_path):
    """A source id that a spreadsheet would run (`=1+1` at the start, `;=cmd|...` after a separator
    a spreadsheet may split on) is written quoted and as text."""
    with open(SAMPLES / "la_case_management.csv", newline="") as stream:
        sample = next(csv.DictReader(stream))
    rows = [{**sample, "CaseRef": "=1+1", "DOB": "31/02/2014"},
            {**sample, "CaseRef": "x;=cmd|' /C calc'!A0;", "ChildName": ""}]
    extract, state = extract_like_the_sample(tmp_path, unique("rej"), rows=rows), tmp_path / "rej.state"
    run_push(gateway, extract, state, code=1)
    text = Path(str(extract) + ".rejects").read_text()
    lines = text.splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r'"(?:[^"]|"")*"(?:,"(?:[^"]|"")*")*', line) for line in lines), text
    assert [r["source_record_id"] for r in read_rows(Path(str(extract) + ".rejects"))] == [
        "'=1+1", "x;'=cmd|' /C calc'!A0;"]
    for line in lines:  # split as a careless spreadsheet would: on every separator, quotes ignored
        for cell in re.split(r"[,;|]", line.replace('"', "")):
            assert not re.match(r"\s*[=+\-@]", cell), (cell, line)


def test_a_mapping_outside_the_model_stops_the_push_naming_the_line(gateway, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(MAPPING.read_text().replace("  Identity.NhsNumber: {from: NHSNumber}\n",
                                               "  Identity.NhsNumber: {from: NHSNumber}\n  Case.Notes: {from: CaseNotes}\n"))
    result = CliRunner().invoke(push, [str(SAMPLES / "la_case_management.csv"), "--mapping", str(bad), "--url",
                                       gateway.url, "--cert", str(gateway.certs["la"] / "cert.pem"), "--key",
                                       str(gateway.certs["la"] / "key.pem")])
    line = bad.read_text().splitlines().index("  Case.Notes: {from: CaseNotes}") + 1
    assert result.exit_code == 2 and f"bad.yaml:{line}: unknown target 'Case.Notes'" in result.output.replace("\n", "")


def test_a_network_failure_is_retried_with_the_same_signed_message(gateway, tmp_path):
    """The gateway unreachable at first (a relay the test cuts), back after the first backoff: the
    batch goes through on the retry, once."""
    from connectors.client import GatewayClient
    from tests.support import TcpRelay

    relay = TcpRelay("127.0.0.1", gateway.port)
    relay.start()
    relay.cut()
    waits = []

    def backoff(seconds: float) -> None:
        waits.append(seconds)
        relay.restore()

    before = gateway.child_count()
    try:
        client = GatewayClient.from_directory(f"https://127.0.0.1:{relay.port}", gateway.certs["la"], timeout=5)
        tag = unique("r")
        extract = extract_like_the_sample(tmp_path, tag)
        summary = client.push_file(extract, MAPPING, state=tmp_path / "r.state", rejects=tmp_path / "r.rejects",
                                   sleep=backoff)
    finally:
        relay.cut()
    assert waits == [1.0] and summary.retries == 1 and summary.sent == 5
    assert summary.outcomes["created"] == 5 and summary.outcomes["review"] == 0
    assert gateway.child_count() == before + 5


@pytest.mark.parametrize("sample, extract, outcome", [
    ("school_census.yaml", "school_census.xml", "rejected 1 (0 before sending, 1 by the gateway)"),
    ("health_patients.yaml", "health_patients.ndjson", "rejected 1 (1 before sending, 0 by the gateway)"),
])
def test_the_school_and_health_samples_land_end_to_end(gateway, clients, tmp_path, sample, extract, outcome):
    """The school census XML (one pupil number fails its check letter: the gateway rejects it) and
    the FHIR Patients (one with a gender FHIR's data has and the model does not: rejected before
    sending), through the running gateway (sent here with LA's certificate)."""
    client = gateway.certs["la"]
    result = CliRunner().invoke(push, [str(SAMPLES / extract), "--mapping", str(SAMPLES / sample), "--url",
                                       gateway.url, "--cert", str(client / "cert.pem"), "--key",
                                       str(client / "key.pem"), "--state", str(tmp_path / "s.state"),
                                       "--rejects", str(tmp_path / "rejects.csv")], catch_exceptions=False)
    assert result.exit_code == 1 and outcome in result.output, result.output
    # the two samples describe some of the same children: whichever lands second links to them
    landed = re.search(r"created (\d+), updated (\d+), matched (\d+), review (\d+)", result.output)
    assert sum(int(n) for n in landed.groups()) == 3
    la = clients("la")
    if sample.startswith("school"):
        [found] = la.find_child(pupil_number="Z201000738201", **WHO)
        child = la.get_contacts(found["ChildId"], **WHO)
        assert child["EducationalSetting"]["Name"] == "Brudenell Primary School"
    else:
        [found] = la.find_child(nhs_number="9434765005", **WHO)
        child = la.get_contacts(found["ChildId"], **WHO)
        assert child["GpPractice"]["Code"] == "B86001"


def test_two_pushes_cannot_share_one_state(gateway, tmp_path):
    from connectors import push as push_mod

    state = tmp_path / "shared.state"
    first = push_mod.State(state)
    try:
        output = run_push(gateway, extract_like_the_sample(tmp_path, unique("s")), state, code=3)
        assert "another push is using" in output
    finally:
        first.close()


def test_a_control_character_in_a_cell_rejects_that_row_naming_the_field_and_the_rest_are_sent(gateway, tmp_path):
    """A character XML cannot carry (NUL, vertical tab, unit separator...) inside a cell: that row is
    in the rejects file with a reason naming its column and the character; the good rows are sent;
    exit code 1 (some rows rejected)."""
    tag = unique("ctl")
    rows = read_rows(extract_like_the_sample(tmp_path, tag))  # rows 0-3 and 5 good, 4 and 6 bad
    rows[0]["AddressLine1"] = rows[0]["AddressLine1"].replace(" ", "\x0b", 1)
    rows[1]["MainCarer"] = "Siobhan\x00Walsh"
    rows[2]["Town"] = "Lee\x1fds"
    rows[3]["MainCarer"] = "\x1f" + rows[3]["MainCarer"] + "\x1c"  # at a cell's edge Python strips it as a space
    extract, state = extract_like_the_sample(tmp_path, tag + "-c", rows=rows), tmp_path / "ctl.state"
    output = run_push(gateway, extract, state, code=1)
    assert "sent: 2 in 1 batch(es)" in output and "rejected 5 (5 before sending, 0 by the gateway)" in output, output
    rejects = {r["source_record_id"]: r for r in read_rows(Path(str(extract) + ".rejects"))}
    for row, column, character in ((rows[0], "AddressLine1", "U+000B"), (rows[1], "MainCarer", "U+0000"),
                                   (rows[2], "Town", "U+001F")):
        reject = rejects[row["CaseRef"]]
        assert reject["rejected_by"] == "mapping" and column in reject["reason"], reject
        assert "control character" in reject["reason"] and character in reject["reason"], reject
    assert rows[3]["CaseRef"] not in rejects and rows[5]["CaseRef"] not in rejects
