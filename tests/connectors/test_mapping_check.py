"""A local data-quality check before anything is sent (issue 28, item 4): `contactgate mapping
check MAPPING [--sample EXTRACT]`, `contactgate mapping fields` and `push --dry-run`, as text and
JSON. No gateway: nothing leaves the organisation."""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from connectors.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "samples"


def run(*args: str, code: int | None = None):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if code is not None:
        assert result.exit_code == code, result.output
    return result


def test_every_mapping_error_is_listed_at_once_with_its_line_and_a_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("descripton: typo\nsource: csv\nid: {from: Ref}\nfields:\n"
                   "  Identity.FamilyNme: {from: Name}\n"
                   "  Identity.GivenName: {from: Name, requird: true}\n"
                   "  Identity.NhsNumber: {from: NHS, transform: nhs_numbr}\n")
    result = run("mapping", "check", str(bad), code=2)
    out = result.output
    assert "bad.yaml:1: unknown key 'descripton'" in out and "did you mean 'description'" in out
    assert "bad.yaml:5: unknown target 'Identity.FamilyNme'" in out and "did you mean 'Identity.FamilyName'" in out
    assert "bad.yaml:6:" in out and "'requird'" in out and "did you mean 'required'" in out
    assert "bad.yaml:7:" in out and "did you mean 'nhs_number'" in out
    as_json = json.loads(run("mapping", "check", str(bad), "--json", code=2).output)
    assert [e["line"] for e in as_json["errors"]] == [1, 5, 6, 7]


def test_mapping_fields_lists_every_target_with_its_type_and_whether_it_is_required():
    text = run("mapping", "fields", code=0).output
    assert any(line.split()[:3] == ["Identity.FamilyName", "text", "required"] for line in text.splitlines())
    assert any(line.split()[:2] == ["Identity.NhsNumber", "text"] and "optional" in line for line in text.splitlines())
    fields = {f["field"]: f for f in json.loads(run("mapping", "fields", "--json", code=0).output)}
    assert fields["Involvement[n].CafAssessment"] == {**fields["Involvement[n].CafAssessment"], "type": "boolean",
                                                      "required": True, "within": "Involvement"}
    assert fields["Identity.DateOfBirth"]["type"] == "date" and fields["Identity.DateOfBirth"]["required"]
    assert "male" in fields["Identity.Gender"]["values"]


def quality_sample(tmp_path: Path) -> Path:
    rows = list(csv.DictReader(open(SAMPLES / "la_case_management.csv", newline="")))
    twin = {**rows[0], "CaseRef": "LA-000901", "ChildName": "Okafor, Chidera"}  # entered twice by another team
    old = {**rows[1], "CaseRef": "LA-000902", "DOB": "01/01/1990"}
    bad_nhs = {**rows[2], "CaseRef": "LA-000903", "NHSNumber": "9434765918"}
    path = tmp_path / "sample.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, twin, old, bad_nhs])
    return path


def test_a_sample_is_checked_for_completeness_identifiers_childhood_and_duplicates(tmp_path):
    sample = quality_sample(tmp_path)
    result = run("mapping", "check", str(SAMPLES / "la_case_management.yaml"), "--sample", str(sample), "--json")
    assert result.exit_code == 1, result.output  # problems found
    report = json.loads(result.output)["sample"]
    assert report["rows"] == 10 and report["rejected"] == 2
    assert 0 < report["completeness"]["Identity.NhsNumber"] < 1 and report["completeness"]["Identity.FamilyName"] < 1
    assert [(i["source_record_id"], i["field"]) for i in report["invalid_identifiers"]] == [
        ("LA-000903", "Identity.NhsNumber")]
    assert [d["source_record_id"] for d in report["dates_outside_childhood"]] == ["LA-000902"]
    pairs = [sorted(d["source_record_ids"]) for d in report["likely_duplicates"]]
    assert ["LA-000101", "LA-000901"] in pairs
    assert report["scorer"]  # says which scorer judged the pairs
    text = run("mapping", "check", str(SAMPLES / "la_case_management.yaml"), "--sample", str(sample), code=1).output
    assert "likely duplicates" in text and "LA-000901" in text and "completeness" in text


def test_a_dry_run_checks_the_extract_and_sends_nothing(tmp_path):
    sample = quality_sample(tmp_path)
    state_dir = tmp_path / "state"
    result = run("push", str(sample), "--mapping", str(SAMPLES / "la_case_management.yaml"), "--dry-run",
                 "--state-dir", str(state_dir))
    assert result.exit_code == 1, result.output
    assert "dry run: nothing was sent" in result.output and "LA-000901" in result.output
    assert not state_dir.exists()


def test_dates_in_childhood_are_judged_against_today():
    from connectors import check

    today = dt.date(2026, 12, 7)
    assert check.outside_childhood(dt.date(2008, 12, 8), today) is None
    assert "18" in check.outside_childhood(dt.date(2008, 12, 6), today)
    assert "future" in check.outside_childhood(dt.date(2027, 1, 1), today)


@pytest.mark.parametrize("replacement", ["\\g<5>", "\\g<x>"])
def test_a_replacement_naming_a_group_the_pattern_lacks_is_a_mapping_error(tmp_path, replacement):
    """Review MEDIUM 7: found by `mapping check` (exit 2, with its line), not on the first row of a push."""
    path = tmp_path / "m.yaml"
    path.write_text("source: csv\nid: {from: Ref}\nfields:\n  Identity.FamilyName: {from: Name}\n"
                    f"  Address.Line1: {{from: A, transform: {{replace: {{pattern: '(\\d+) x', with: '{replacement}'}}}}}}\n")
    result = run("mapping", "check", str(path), code=2)
    assert "m.yaml:5:" in result.output and "group the pattern does not have" in result.output


def one_nhs_number(tmp_path: Path, n: int) -> Path:
    """``n`` rows that all give the same NHS number (a source system's placeholder, say)."""
    rows = list(csv.DictReader(open(SAMPLES / "la_case_management.csv", newline="")))
    path = tmp_path / f"same-nhs-{n}.csv"
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, list(rows[0]))
        writer.writeheader()
        for i in range(n):
            writer.writerow({**rows[0], "CaseRef": f"LA-{i:06d}", "ChildName": f"NAME{i}, Child"})
    return path


def test_rows_sharing_an_nhs_number_are_judged_in_time_proportional_to_their_number(tmp_path):
    """Review MEDIUM 4: each group of rows with one NHS number is paired up to MAX_BLOCK rows and the
    rest counted, so eight times the rows take about eight times as long (not 64), and every pair is
    still counted."""
    mapping_file = str(SAMPLES / "la_case_management.yaml")
    took = {}
    for n in (250, 2000):
        sample = one_nhs_number(tmp_path, n)
        started = time.perf_counter()
        result = json.loads(run("mapping", "check", mapping_file, "--sample", str(sample), "--json").output)
        took[n] = time.perf_counter() - started
        assert result["sample"]["likely_duplicates_count"] == n * (n - 1) // 2
    assert took[2000] < 24 * took[250], took
