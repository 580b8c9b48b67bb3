"""Large FHIR sources stream (issue 28, item 6): a Bundle document is read entry by entry, as NDJSON
is read line by line, so memory does not grow with the extract; an entry nested too deep is one
rejected row, and the rest go on."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from connectors import mapping, sources
from tests.connectors.test_mapping import mapped

SAMPLES = Path(__file__).resolve().parents[2] / "connectors" / "samples"
HEALTH = SAMPLES / "health_patients.yaml"
DEEP = '{"resourceType": "Patient", "id": "deep", "extension": ' + "[" * 100_000 + "]" * 100_000 + "}"


def bundle(path: Path, n: int, *, one_line: bool = False) -> Path:
    """A Bundle of ``n`` Patients, an entry a line (as many systems write it) or all on one line."""
    patient = json.loads((SAMPLES / "health_patients.ndjson").read_text().splitlines()[0])
    end = "" if one_line else "\n"
    with open(path, "w") as out:
        out.write('{"resourceType": "Bundle", "type": "collection", "entry": [' + end)
        for i in range(n):
            out.write(("," if i else "") + json.dumps({"fullUrl": f"urn:uuid:{i}", "resource": {**patient, "id": f"p{i}"}})
                      + end)
        out.write("]}")
    return path


def peak_reading(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(1 for _ in sources._fhir_resources(path, None))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("one_line", [False, True], ids=["an-entry-a-line", "all-on-one-line"])
def test_a_bundle_is_read_entry_by_entry_in_flat_memory(tmp_path, monkeypatch, one_line):
    # a first line longer than MAX_FIRST_LINE (1 MiB) is a document, not NDJSON: smaller here, so that
    # small Bundles on one line are such documents too (the test's time)
    monkeypatch.setattr(sources, "MAX_FIRST_LINE", 16 * 1024)
    small_count, small_peak = peak_reading(bundle(tmp_path / "small.json", 150, one_line=one_line))
    large_count, large_peak = peak_reading(bundle(tmp_path / "large.json", 600, one_line=one_line))
    assert (small_count, large_count) == (150, 600)
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)  # four times the entries, not the memory


def test_an_entry_nested_too_deep_is_one_rejected_row_and_the_rest_go_on(tmp_path):
    m = mapping.load(HEALTH)
    lines = (SAMPLES / "health_patients.ndjson").read_text().splitlines()[:2]
    extract = tmp_path / "bundle.json"
    extract.write_text('{"resourceType": "Bundle",\n "entry": [' + ",".join(
        '{"resource": ' + r + "}" for r in [lines[0], DEEP, lines[1]]) + "]}\n")
    good, rejected = mapped(m, extract)
    assert len(good) == 2 and [line for line, _ in rejected] == [2]
    assert "nested more than" in rejected[0][1]


def test_a_single_resource_document_is_still_read(tmp_path):
    first = (SAMPLES / "health_patients.ndjson").read_text().splitlines()[0]
    extract = tmp_path / "one.json"
    extract.write_text(json.dumps(json.loads(first), indent=2))  # not NDJSON: a document on many lines
    m = mapping.load(HEALTH)
    [(line, row)] = list(sources.rows(extract, m))
    assert line == 1 and row["id"] == json.loads(first)["id"]


def test_an_ndjson_line_after_the_first_is_read_bounded_and_rejected_when_too_long(tmp_path):
    """Review LOW: a line longer than any resource (the first line's limit) is a rejected row, read
    in bounded pieces, and the lines after it are read as usual."""
    from click.testing import CliRunner

    from connectors import sources
    from connectors.cli import main

    first, second = (SAMPLES / "health_patients.ndjson").read_text().splitlines()[:2]
    extract = tmp_path / "long.ndjson"
    extract.write_text(first + "\n" + '{"resourceType": "Patient", "note": "' + "x" * (sources.MAX_FIRST_LINE + 10)
                       + '"}\n' + second + "\n")
    result = CliRunner().invoke(main, ["mapping", "check", str(SAMPLES / "health_patients.yaml"), "--sample",
                                       str(extract), "--json"], catch_exceptions=False)
    sample = json.loads(result.output)["sample"]
    assert sample["rows"] == 3 and sample["rejected"] == 1, sample
    assert "longer than" in json.dumps(sample["rejects"])


def test_a_bundle_entry_larger_than_any_resource_is_a_rejected_row(tmp_path):
    """Review LOW: an entry of a FHIR Bundle larger than any resource (the NDJSON line limit) is a
    rejected row, not built in memory; the entries after it are read as usual."""
    from click.testing import CliRunner

    from connectors.cli import main

    first, second = (json.loads(line) for line in (SAMPLES / "health_patients.ndjson").read_text().splitlines()[:2])
    huge = {"resourceType": "Patient", "note": "x" * (sources.MAX_FIRST_LINE + 10)}
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": first}, {"resource": huge}, {"resource": second}]}
    extract = tmp_path / "bundle.json"
    extract.write_text(json.dumps(bundle, indent=1))
    result = CliRunner().invoke(main, ["mapping", "check", str(SAMPLES / "health_patients.yaml"), "--sample",
                                       str(extract), "--json"], catch_exceptions=False)
    sample = json.loads(result.output)["sample"]
    assert sample["rows"] == 3 and sample["rejected"] == 1, sample
    assert "larger than" in json.dumps(sample["rejects"])
    assert "Bundle entry 2" in json.dumps(sample["rejects"])


def huge_entry_bundle(path: Path, shape: str, times: int) -> Path:
    """A Bundle of three entries, the second ``times`` the entry limit, as one string or many values."""
    first, second = (json.loads(line) for line in (SAMPLES / "health_patients.ndjson").read_text().splitlines()[:2])
    size = times * sources.MAX_FIRST_LINE
    huge = ({"resourceType": "Patient", "note": "x" * size} if shape == "one-long-string"
            else {"resourceType": "Patient", "extension": [{"url": f"u{i}", "valueString": "y" * 20}
                                                           for i in range(size // 40)]})
    path.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:first", "resource": first}, {"fullUrl": "urn:uuid:huge", "resource": huge},
        {"fullUrl": "urn:uuid:last", "resource": second}]}))
    return path


@pytest.mark.parametrize("shape", ["one-long-string", "many-small-values"])
def test_a_huge_bundle_entry_is_rejected_by_name_in_bounded_memory(tmp_path, monkeypatch, shape):
    """Issue 28 (c): an entry many times the limit, as one string or as many values, is never held:
    the reader's peak memory is the same for an entry 4 or 16 times the limit, and the entries after
    it are read."""
    monkeypatch.setattr(sources, "MAX_FIRST_LINE", 32 * 1024)
    peaks = {}
    for times in (4, 16):
        extract = huge_entry_bundle(tmp_path / f"bundle-{times}.json", shape, times)
        tracemalloc.start()
        try:
            read = list(sources._fhir_resources(extract, None))
            peaks[times] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert [number for number, _ in read] == [1, 2, 3]
        assert isinstance(read[1][1], sources._Unreadable) and "Bundle entry 2 (urn:uuid:huge)" in read[1][1].reason
        assert read[2][1]["resourceType"] == "Patient"
    assert peaks[16] < 1.25 * peaks[4] + 64 * 1024, peaks  # four times the entry, not the memory


def test_a_string_longer_than_the_limit_outside_the_entries_refuses_the_document(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_FIRST_LINE", 64 * 1024)
    extract = tmp_path / "bundle.json"
    extract.write_text(json.dumps({"resourceType": "Bundle", "meta": {"tag": "z" * 10 * sources.MAX_FIRST_LINE},
                                   "entry": []}))
    with pytest.raises(sources.ExtractError, match="outside a Bundle's entries"):
        list(sources._fhir_resources(extract, None))


def test_long_strings_are_cut_only_when_longer_than_the_limit_and_json_stays_json():
    import io

    from connectors.long_values import MARKER_TEXT, CutLongStrings

    doc = {"short": 'a "quoted" \\ value é', "k" * 30: ["x" * 31, "y" * 30], "n": [1.5, True, None]}
    text = json.dumps(doc, ensure_ascii=False).encode()
    for read_size in (1, 7, 4096):
        monkey = CutLongStrings(io.BytesIO(text), 30)
        import connectors.long_values as long_values
        saved, long_values.READ_SIZE = long_values.READ_SIZE, read_size
        try:
            back = json.loads(monkey.read())
        finally:
            long_values.READ_SIZE = saved
        assert back == {**doc, "k" * 30: [MARKER_TEXT, "y" * 30]}


def test_a_number_longer_than_the_limit_is_cut_and_never_held():
    """Review (close28): a number of many times the limit (a decimal of a million digits) reaches
    the parser whole, and the parser holds the token in memory (64 MB of digits: 130 MiB more).
    The cutter cuts it as it cuts a long string, across any read boundary; shorter numbers, and
    `true`/`false`/`null` around them, pass unchanged."""
    import io

    import connectors.long_values as long_values
    from connectors.long_values import MARKER_TEXT, CutLongStrings

    doc = {"short": [1.5e10, -12345, 0.25, True, False, None], "long": float("1." + "1" * 8),
           "huge": "1." + "7" * 400}
    text = json.dumps(doc).replace('"1.' + "7" * 400 + '"', "1." + "7" * 400).encode()
    for read_size in (1, 7, 4096):
        saved, long_values.READ_SIZE = long_values.READ_SIZE, read_size
        try:
            cutter = CutLongStrings(io.BytesIO(text), 30)
            out = cutter.read()
        finally:
            long_values.READ_SIZE = saved
        assert json.loads(out) == {**doc, "huge": MARKER_TEXT}, (read_size, out[:200])
        assert len(out) < len(text) - 300


def test_a_bundle_entry_holding_a_huge_number_is_a_rejected_row(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_FIRST_LINE", 32 * 1024)
    first = json.loads((SAMPLES / "health_patients.ndjson").read_text().splitlines()[0])
    extract = tmp_path / "bundle.json"
    extract.write_text('{"resourceType": "Bundle", "entry": [{"fullUrl": "urn:uuid:huge", "resource": '
                       '{"resourceType": "Patient", "x": 1.' + "1" * (4 * sources.MAX_FIRST_LINE) + '}}, '
                       + json.dumps({"fullUrl": "urn:uuid:last", "resource": first}) + "]}")
    read = list(sources._fhir_resources(extract, None))
    assert isinstance(read[0][1], sources._Unreadable) and "Bundle entry 1 (urn:uuid:huge)" in read[0][1].reason
    assert read[1][1]["resourceType"] == "Patient"


def test_nesting_deeper_than_any_entry_may_be_large_refuses_the_document(tmp_path, monkeypatch):
    """Review (close28): an entry nested too deep is a rejected row, but the parser keeps a byte a
    level until the nesting closes (8 million levels: 23 MiB more, and minutes of events). Deeper
    than an entry may be large (MAX_FIRST_LINE levels), the document is refused whole."""
    monkeypatch.setattr(sources, "MAX_FIRST_LINE", 32 * 1024)
    levels = 4 * sources.MAX_FIRST_LINE
    extract = tmp_path / "bundle.json"
    extract.write_text('{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "x": '
                       + "[" * levels + "]" * levels + "}}]}")
    with pytest.raises(sources.ExtractError, match="refused whole"):
        list(sources._fhir_resources(extract, None))


def _patients_of_every_shape() -> list[dict]:
    """Patients with and without each element a mapping reads: official and other names, home and
    other addresses, partial dates, times of death with zones and fractions, contacts by text or by
    parts, practices with and without an ODS code, unicode, empty lists."""
    sample = [json.loads(line) for line in (SAMPLES / "health_patients.ndjson").read_text().splitlines()]
    first = sample[0]
    nhs = {"system": sources.NHS_NUMBER_SYSTEM, "value": "9434765919"}
    variants = [
        {"resourceType": "Patient", "id": "bare"},
        {**first, "name": [{"use": "usual", "family": "Nguyễn", "given": ["Thị", "Lan"]},
                           {"use": "official", "family": "Ó Súilleabháin", "given": ["Zoë"]}]},
        {**first, "name": [{"given": ["OnlyGiven"]}], "address": [{"use": "work", "line": ["1 Work St", "Floor 2", "Desk 3"],
                                                                    "city": "Bradford"}, {"use": "home", "postalCode": "BD1 1AA"}]},
        {**first, "birthDate": "2015", "deceasedDateTime": "2020-01-01T10:00:00Z"},
        {**first, "birthDate": "2015-03", "deceasedDateTime": "2021-06-30T23:59:59.123+05:30"},
        {**first, "deceasedDateTime": "2022-02-02"},
        {**first, "deceasedDateTime": "2019"},
        {**first, "deceasedBoolean": True},
        {**first, "identifier": [{"system": "https://example/other", "value": "X"}, nhs], "telecom": [
            {"system": "email", "value": "a@b.example"}, {"system": "phone", "value": "+44 113 496 0000"}]},
        {**first, "generalPractitioner": [{"identifier": {"system": "https://other", "value": "Q1"}, "display": "Elsewhere"}]},
        {**first, "generalPractitioner": [{"reference": "Organization/1"}]},
        {**first, "contact": [{"name": {"given": ["Ann", "Marie"], "family": "Lee"}, "relationship": [{"text": "aunt"}]}]},
        {**first, "contact": [{"name": {"family": "Solo"}, "relationship": [{"coding": [{"code": "C"}]}],
                               "telecom": [{"system": "email", "value": "x@y.example"}]}]},
        {**first, "contact": [{"relationship": [{"coding": [{"system": "s"}], "text": "t"}]}]},
        {**first, "name": [{"use": "official", "family": "  spaced  ", "given": [" a ", "b\tc"]}], "gender": "unknown"},
        {**first, "address": [{"use": "home", "line": ["Ünïcødé Road"], "city": "Łódź", "postalCode": "ls6 2ab"}]},
    ]
    return sample + variants


def test_the_fields_read_from_a_validated_patient_are_those_its_whole_dump_gives():
    from fhir.resources.R4B.patient import Patient

    for resource in _patients_of_every_shape():
        patient = Patient.model_validate(resource)
        expected = sources._patient_fields(patient.model_dump(mode="json", exclude_none=True))
        assert sources._patient_fields(sources.Dumped(patient)) == expected, resource


def _patients_that_stopped_a_push(tmp_path: Path) -> Path:
    first = json.loads((SAMPLES / "health_patients.ndjson").read_text().splitlines()[0])
    extension = {"extension": [{"url": "https://example.org/why-absent", "valueString": "withheld"}]}
    nul = json.loads(json.dumps(first))
    nul["id"], nul["name"][0]["family"] = "nul", "Oka\u0000for"
    tab = json.loads(json.dumps(first))
    tab["id"], tab["address"][0]["line"][0] = "vt", "12\u000bAsh Grove"
    absent_given = json.loads(json.dumps(first))  # FHIR: a null in a primitive list, its extension beside
    absent_given["id"], absent_given["name"][0]["given"] = "absent-given", ["Chidera", None]
    absent_given["name"][0]["_given"] = [None, extension]
    path = tmp_path / "patients.ndjson"
    path.write_text("\n".join(json.dumps(p) for p in (first, nul, tab, absent_given, {**first, "id": "last"})) + "\n")
    return path


def test_a_patient_with_a_control_character_is_one_rejected_row_and_a_null_given_name_is_skipped(tmp_path):
    m = mapping.load(HEALTH)
    outcomes = {}
    for _, row in sources.rows(_patients_that_stopped_a_push(tmp_path), m):
        try:
            outcomes[row["id"]] = m.record(row)
        except mapping.RowError as exc:
            outcomes[row["id"]] = str(exc)
    assert list(outcomes) == ["pt-1001", "nul", "vt", "absent-given", "last"]
    assert isinstance(outcomes["pt-1001"], dict)
    assert "family" in outcomes["nul"] and "control character" in outcomes["nul"] and "U+0000" in outcomes["nul"]
    assert "address_line1" in outcomes["vt"] and "control character" in outcomes["vt"] and "U+000B" in outcomes["vt"]
    assert outcomes["absent-given"]["Identity"]["GivenName"] == ["Chidera"]
    assert isinstance(outcomes["last"], dict)
