"""Declarative mappings (issue 11, item 1): a mapping file is checked against the canonical model
(the gateway's XSD) and refused naming its line; rows are mapped, checked alone, and rejected with a
reason while the rest go on; columns no rule reads never leave the organisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors import mapping, model, sources

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "samples"
LA = SAMPLES / "la_case_management.yaml"
LA_CSV = SAMPLES / "la_case_management.csv"


def mapped(m, path):
    good, rejected = [], []
    for line, row in sources.rows(path, m):
        try:
            good.append(m.record(row))
        except mapping.RowError as exc:
            rejected.append((line, str(exc)))
    return good, rejected


def test_the_local_authority_sample_maps_its_good_rows_and_rejects_the_bad_with_reasons():
    m = mapping.load(LA)
    good, rejected = mapped(m, LA_CSV)
    assert [r["SourceRecordId"] for r in good] == ["LA-000101", "LA-000102", "LA-000103", "LA-000104", "LA-000106"]
    assert [line for line, _ in rejected] == [6, 8]
    assert "'31/02/2014' is not a date" in rejected[0][1] and "ChildName is empty" in rejected[1][1]
    first = good[0]
    assert first["Identity"] == {"FamilyName": "OKAFOR", "GivenName": ["Chidera", "Grace"],
                                 "DateOfBirth": "2015-03-14", "Gender": "female", "NhsNumber": "9434765919"}
    assert first["Carer"] == [{"Name": "Ngozi Okafor", "Relationship": "mother", "Phone": "0113 496 0101"}]
    involvement = first["Involvement"][0]
    assert involvement["Service"] == "Children's social care" and involvement["CafAssessment"] is True
    assert good[3]["Involvement"][0]["End"] == "2025-10-11"
    assert good[4]["Identity"]["DateOfBirth"] == "2019-08-08"  # the second date format
    assert good[4]["Carer"][0]["Relationship"] == "other"  # an unknown code, with a default


def test_columns_no_rule_reads_never_leave_the_organisation():
    m = mapping.load(LA)
    header = sources.columns(LA_CSV, m)
    assert m.unmapped(header) == ["CaseNotes", "RiskFlag", "TeamCode"]
    good, _ = mapped(m, LA_CSV)
    sent = json.dumps(good)
    for secret in ("Referred by school nurse", "Domestic abuse", "AMBER", "CP-NORTH"):
        assert secret not in sent


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return path


BASE = """source: csv
id: {from: Ref}
fields:
  Identity.FamilyName: {from: Surname}
"""


@pytest.mark.parametrize("extra, line, words", [
    ("  Identity.CaseNotes: {from: Notes}\n", 5, "unknown target 'Identity.CaseNotes'"),
    ("  RiskFlag: {from: Risk}\n", 5, "no such field"),
    ("  Carer.Name: {from: Carer}\n", 5, "give which one, e.g. Carer[0].Name"),
    ("  Identity[0].FamilyName: {from: X}\n", 5, "unknown target"),
    ("  Identity.Gender: {from: Sex, map: {M: man}}\n", 5, "'man' is not one of the model's values"),
    ("  Identity.Gender:\n    from: Sex\n    mapp: {M: male}\n", 7, "unknown rule key 'mapp'"),
    ("  Identity.FamilyName: {from: Other}\n", 5, "'Identity.FamilyName' is given twice (first on line 4)"),
    ("  Identity.DateOfBirth: {from: DOB, split: ','}\n", 5, "split makes a list"),
    ("  Identity.NhsNumber: {from: NHS, date: '%d/%m/%Y'}\n", 5, "is not a date"),
    ("  Identity.Gender: {from: Sex, value: male}\n", 5, "either from"),
    ("  Carer[0].Phone: {from: Phone}\n", 5, "Carer[0] needs Name mapped too"),
    ("  Carer[25].Name: {from: Name}\n", 5, "unknown target"),
])
def test_a_mapping_error_is_refused_naming_the_file_and_line(tmp_path, extra, line, words):
    path = write(tmp_path, BASE + extra)
    with pytest.raises(mapping.MappingError) as refused:
        mapping.load(path)
    assert refused.value.line == line and words in str(refused.value), str(refused.value)
    assert str(refused.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("text, words", [
    ("source: excel\nid: {from: Ref}\nfields: {Identity.FamilyName: Surname}\n", "source must be one of"),
    ("source: csv\nfields: {Identity.FamilyName: Surname}\n", "no id"),
    ("source: csv\nid: Ref\nfields: {}\n", "fields must map"),
    ("source: csv\nid: Ref\nextra: 1\nfields: {Identity.FamilyName: Surname}\n", "unknown key 'extra'"),
    ("source: csv\nid: [unclosed\n", "not YAML"),
    ("- a list\n", "must be a YAML mapping"),
])
def test_a_malformed_mapping_is_refused(tmp_path, text, words):
    with pytest.raises(mapping.MappingError, match=words.replace("[", r"\[")):
        mapping.load(write(tmp_path, text))


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    """A mapping is data: the loader is YAML's safe one."""
    path = write(tmp_path, "source: !!python/object/apply:os.system ['true']\nid: Ref\n"
                           "fields: {Identity.FamilyName: Surname}\n")
    with pytest.raises(mapping.MappingError, match="not YAML"):
        mapping.load(path)


def _alias_bomb() -> str:
    """Under 1 kB of YAML whose nested aliases stand for 9**9 strings (a "billion laughs")."""
    levels = ["  - &l0 [" + ", ".join(["lol"] * 9) + "]"]
    for n in range(1, 9):
        levels.append(f"  - &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return BASE + "description:\n" + "\n".join(levels) + "\n"


def test_a_mapping_with_aliases_is_refused_at_once_by_the_push_command(tmp_path):
    """Through `contactgate push` as an operator runs it (a subprocess, killed if it hangs)."""
    import subprocess
    import time

    from tests.gateway.cli_runner import CONTACTGATE, clean_env

    bomb = write(tmp_path, _alias_bomb())
    assert len(bomb.read_bytes()) < 1400  # no larger than the one the attack report used
    extract = tmp_path / "extract.csv"
    extract.write_text("Ref,Surname\n1,Smith\n")
    (tmp_path / "cert.pem").write_text("unused\n")
    started = time.monotonic()
    try:
        run = subprocess.run([CONTACTGATE, "push", str(extract), "--mapping", str(bomb), "--url", "https://127.0.0.1:9",
                              "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "cert.pem")],
                             env=clean_env(), capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("`contactgate push` was still loading the mapping after 20 s")
    assert time.monotonic() - started < 10
    assert run.returncode == 2 and "mapping.yaml:6:" in run.stderr and "alias" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_a_mapping_nested_too_deep_is_refused_naming_its_line(tmp_path):
    path = write(tmp_path, BASE + "description: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(mapping.MappingError, match=r"mapping.yaml:5: .*nested more than"):
        mapping.load(path)


def test_an_extract_missing_a_mapped_column_is_refused_whole(tmp_path):
    extract = tmp_path / "extract.csv"
    extract.write_text("Ref,Forename\n1,A\n")
    with pytest.raises(sources.ExtractError, match="Surname"):
        list(sources.rows(extract, mapping.load(write(tmp_path, BASE))))


def test_every_model_field_comes_from_the_gateways_schema():
    leaves = model.leaves()
    assert leaves["Identity.Gender"].enumeration == ("female", "male", "other", "unknown")
    assert leaves["Identity.GivenName"].repeating and leaves["Involvement.Start"].kind == "date"
    assert "Identity.CaseNotes" not in leaves and len(leaves) > 40


# ---- XML (a school census style extract) ------------------------------------------------------

SCHOOL, SCHOOL_XML = SAMPLES / "school_census.yaml", SAMPLES / "school_census.xml"
HEALTH, HEALTH_NDJSON = SAMPLES / "health_patients.yaml", SAMPLES / "health_patients.ndjson"


def test_the_school_census_sample_maps_each_pupil_with_the_school_from_the_top_of_the_file():
    m = mapping.load(SCHOOL)
    good, rejected = mapped(m, SCHOOL_XML)
    assert rejected == [] and [r["Identity"]["PupilNumber"] for r in good] == [
        "Z201000738201", "N201000738202", "C201000738203", "A201000738204"]
    assert all(r["EducationalSetting"] == {"Name": "Brudenell Primary School", "Code": "107915",
                                           "Phone": "0113 496 0500"} for r in good)
    assert good[0]["Carer"] == [{"Name": "Ngozi Okafor", "Relationship": "mother", "Phone": "0113 496 0101"}]
    assert m.unmapped(sources.columns(SCHOOL_XML, m)) == ["MiddleNames", "SENProvision", "FSMEligible",
                                                          "Ethnicity", "Attendance"]
    assert "BAFR" not in json.dumps(good) and "91.2" not in json.dumps(good)


def test_an_xml_extract_with_a_doctype_or_broken_markup_is_refused_whole(tmp_path):
    m = mapping.load(SCHOOL)
    text = SCHOOL_XML.read_text()
    with_dtd = tmp_path / "dtd.xml"
    with_dtd.write_text(text.replace('<?xml version="1.0" encoding="UTF-8"?>',
                                     '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>'))
    with pytest.raises(sources.ExtractError, match="DOCTYPE"):
        list(sources.rows(with_dtd, m))
    broken = tmp_path / "broken.xml"
    broken.write_text(text.replace("</Pupils>", ""))
    with pytest.raises(sources.ExtractError, match="not well-formed"):
        list(sources.rows(broken, m))


def test_an_xml_mapping_with_a_bad_path_is_refused_naming_its_line(tmp_path):
    text = SCHOOL.read_text().replace('{from: "c:Surname", required: true}', '{from: "c:Surname[", required: true}')
    path = tmp_path / "school.yaml"
    path.write_text(text)
    line = text.splitlines().index('  Identity.FamilyName: {from: "c:Surname[", required: true}') + 1
    with pytest.raises(mapping.MappingError, match=f":{line}: Identity.FamilyName: 'c:Surname\\[' is not a path"):
        mapping.load(path)


# ---- FHIR R4 Patient resources (a health system) -----------------------------------------------

def test_the_health_sample_maps_patients_and_rejects_the_invalid_one(tmp_path):
    m = mapping.load(HEALTH)
    good, rejected = mapped(m, HEALTH_NDJSON)
    assert [r["Identity"]["NhsNumber"] for r in good] == ["9434765005", "9434765072", "9434765145"]
    assert good[0]["GpPractice"] == {"Name": "Park Surgery", "Code": "B86001"}
    assert good[0]["Identity"]["GivenName"] == ["Chidera", "Grace"] and "Carer" not in good[2]
    assert [line for line, _ in rejected] == [4] and "'girl'" in rejected[0][1]
    assert m.unmapped(sources.columns(HEALTH_NDJSON, m)) == ["phone"]
    # the same Patients in a Bundle give the same records
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": json.loads(line)} for line in HEALTH_NDJSON.read_text().splitlines()]}, indent=1))
    assert mapped(m, bundle)[0] == good


def test_a_resource_fhir_cannot_read_is_rejected_with_the_reason(tmp_path):
    m = mapping.load(HEALTH)
    extract = tmp_path / "patients.ndjson"
    lines = HEALTH_NDJSON.read_text().splitlines()
    broken = json.loads(lines[0])
    broken["birthDate"] = "14th March"
    extract.write_text("\n".join([json.dumps(broken), "{not json", lines[1]]) + "\n")
    good, rejected = mapped(m, extract)
    assert len(good) == 1 and [line for line, _ in rejected] == [1, 2]
    assert "not a valid FHIR Patient" in rejected[0][1] and "birthDate" in rejected[0][1]
    assert "not JSON" in rejected[1][1]


DEEP = '{"resourceType": "Patient", "id": "deep", "extension": ' + "[" * 100_000 + "]" * 100_000 + "}"


def test_a_resource_nested_too_deep_is_one_rejected_row_and_the_rest_go_on(tmp_path):
    m = mapping.load(HEALTH)
    lines = HEALTH_NDJSON.read_text().splitlines()
    for deep_at in (0, 1):  # the first line (which also tells NDJSON from a document) or another
        extract = tmp_path / f"patients-{deep_at}.ndjson"
        extract.write_text("\n".join([*lines[:deep_at], DEEP, *lines[deep_at:2]]) + "\n")
        good, rejected = mapped(m, extract)
        assert len(good) == 2 and [line for line, _ in rejected] == [deep_at + 1]
        assert "nested more than" in rejected[0][1]


def test_a_json_document_nested_too_deep_outside_its_entries_is_refused_whole_with_the_reason(tmp_path):
    """(A Bundle's entries are streamed one by one since issue 28: an entry nested too deep is one
    rejected row, tests/connectors/test_fhir_streaming.py.)"""
    m = mapping.load(HEALTH)
    extract = tmp_path / "bundle.json"
    extract.write_text('{"resourceType": "Bundle",\n "meta": ' + DEEP + ', "entry": []}\n')
    with pytest.raises(sources.ExtractError, match="nested more than"):
        mapped(m, extract)


def test_a_fhir_mapping_reads_only_what_a_patient_offers(tmp_path):
    path = tmp_path / "fhir.yaml"
    path.write_text("source: fhir\nid: {from: id}\nfields:\n  Identity.FamilyName: {from: surname}\n")
    with pytest.raises(mapping.MappingError, match=":4: Identity.FamilyName: a FHIR Patient offers"):
        mapping.load(path)


def test_the_push_command_knows_the_batch_limit_without_loading_the_push_machinery():
    from connectors import cli, push

    assert cli.MAX_BATCH == push.MAX_BATCH == 1000


def test_long_texts_in_a_date_column_do_not_stay_in_memory():
    import csv
    import tracemalloc

    m = mapping.load(LA)
    with open(LA_CSV, newline="", encoding="utf-8-sig") as stream:
        row = next(csv.DictReader(stream))
    tracemalloc.start()
    try:
        for i in range(200):  # the csv module's cell limit is 131,072 characters
            with pytest.raises(mapping.RowError, match="is not a date"):
                m.record({**row, "DOB": f"{i:04d}" + "x" * 100_000})
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2_000_000, f"{held:,} bytes still held after 200 rows"
