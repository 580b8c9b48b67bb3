"""Value transforms in a mapping (issue 28, item 1): declarative steps a rule applies to a source
value before it is mapped: spaces, characters, case, bounded regular expressions, lookup tables
(inline or a CSV file), concatenation and a part of a split, conditional defaults, and the UK
identifiers in the forms people write them. Each transform alone, then a whole extract in a real
case-management shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import mapping, transforms

HEAD = "source: csv\nid: {from: Ref}\nfields:\n  Identity.FamilyName: {from: Name, name: family}\n"


def load(tmp_path, fields: str, extra_files: dict[str, str] | None = None) -> mapping.Mapping:
    for name, text in (extra_files or {}).items():
        (tmp_path / name).write_text(text)
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + fields)
    return mapping.load(path)


def value(m: mapping.Mapping, target: str, **row):
    [rule] = [r for r in m.rules if r.target == target]
    return rule.apply({"Ref": "1", "Name": "SMITH, John", **row})


@pytest.mark.parametrize("transform, raw, out", [
    ("trim", "  Acacia  Avenue ", "Acacia  Avenue"),
    ("collapse_spaces", "  12   Acacia\tAvenue ", "12 Acacia Avenue"),
    ("upper", "ls6 2ab", "LS6 2AB"),
    ("lower", "Acacia", "acacia"),
    ("title", "ACACIA AVENUE", "Acacia Avenue"),
    ("{remove: \"*#\"}", "12* Acacia# Avenue", "12 Acacia Avenue"),
    ("{replace: {pattern: '^FLAT (\\d+)', with: 'Flat \\1'}}", "FLAT 2", "Flat 2"),
    ("{lookup: {AA: Acacia Avenue}}", "AA", "Acacia Avenue"),
    ("{lookup: {AA: Acacia Avenue}}", "ZZ", "ZZ"),  # a value the table does not have passes as it is
    ("{part: {separator: /, index: 1}}", "Flat 2/12 Acacia Avenue", "12 Acacia Avenue"),
    ("[collapse_spaces, title]", "  ACACIA   AVENUE", "Acacia Avenue"),
])
def test_each_text_transform_alone(tmp_path, transform, raw, out):
    m = load(tmp_path, f"  Address.Line1: {{from: A, transform: {transform}}}\n  Address.Postcode: {{value: LS6 2AB}}\n")
    assert value(m, "Address.Line1", A=raw) == out


def test_a_lookup_table_from_a_csv_file_beside_the_mapping(tmp_path):
    m = load(tmp_path, "  EducationalSetting.Name: {from: URN, transform: {lookup: {file: schools.csv, key: URN, "
                       "value: Name}}}\n", {"schools.csv": "URN,Name\n107915,Brudenell Primary\n108001,Headingley High\n"})
    assert value(m, "EducationalSetting.Name", URN="108001") == "Headingley High"


def test_a_lookup_file_is_read_bounded_and_checked_when_the_mapping_loads(tmp_path):
    with pytest.raises(mapping.MappingError, match="no column 'Nmae'.*did you mean 'Name'"):
        load(tmp_path, "  EducationalSetting.Name: {from: URN, transform: {lookup: {file: s.csv, key: URN, "
                       "value: Nmae}}}\n", {"s.csv": "URN,Name\n1,A\n"})
    big = "URN,Name\n" + "".join(f"{i},{'x' * 40}\n" for i in range(transforms.MAX_LOOKUP_ROWS + 1))
    with pytest.raises(mapping.MappingError, match="more than"):
        load(tmp_path, "  EducationalSetting.Name: {from: URN, transform: {lookup: {file: big.csv, key: URN, "
                       "value: Name}}}\n", {"big.csv": big})
    with pytest.raises(mapping.MappingError, match="inside the mapping's folder"):
        load(tmp_path, "  EducationalSetting.Name: {from: URN, transform: {lookup: {file: /etc/passwd, key: a, "
                       "value: b}}}\n")


def test_columns_are_concatenated_skipping_empty_parts(tmp_path):
    m = load(tmp_path, "  Address.Line1: {from: [House, Street], join: ' '}\n  Address.Postcode: {value: LS6 2AB}\n")
    assert value(m, "Address.Line1", House="12", Street="Acacia Avenue") == "12 Acacia Avenue"
    assert value(m, "Address.Line1", House="", Street="Acacia Avenue") == "Acacia Avenue"
    assert m.columns >= {"House", "Street"}


def test_a_default_can_depend_on_another_column(tmp_path):
    m = load(tmp_path, "  Involvement[0].Service: {value: Early help}\n  Involvement[0].Start: {value: 2024-01-01}\n"
                       "  Involvement[0].LeadProfessional: {value: false}\n"
                       "  Involvement[0].CafAssessment: {from: CAF, map: {Y: true, N: false}, default: false,\n"
                       "      default_when: [{column: Team, equals: EH, value: true}, {column: Team, in: [CP, CIN], "
                       "value: false}]}\n")
    assert value(m, "Involvement[0].CafAssessment", CAF="", Team="EH") is True
    assert value(m, "Involvement[0].CafAssessment", CAF="", Team="CP") is False
    assert value(m, "Involvement[0].CafAssessment", CAF="N", Team="EH") is False  # a value wins over defaults
    assert value(m, "Involvement[0].CafAssessment", CAF="", Team="YOT") is False


@pytest.mark.parametrize("written", ["943 476 5919", "943-476-5919", " 9434765919 ", "943 4765919"])
def test_nhs_numbers_in_the_forms_people_write_them(tmp_path, written):
    m = load(tmp_path, "  Identity.NhsNumber: {from: NHS, transform: nhs_number}\n")
    assert value(m, "Identity.NhsNumber", NHS=written) == "9434765919"
    assert value(m, "Identity.NhsNumber", NHS="") is None


def test_an_nhs_number_with_a_wrong_check_digit_is_rejected_saying_so(tmp_path):
    m = load(tmp_path, "  Identity.NhsNumber: {from: NHS, transform: nhs_number}\n")
    with pytest.raises(mapping.RowError, match=r"NHS: '943 476 5918' is not a valid NHS number \(check digit\)"):
        value(m, "Identity.NhsNumber", NHS="943 476 5918")


@pytest.mark.parametrize("written", ["a201000738201", "A 2010 0073 8201", "A201-000738-201"])
def test_pupil_numbers_in_the_forms_people_write_them(tmp_path, written):
    from stdnum.gb import upn

    body = "201000738201"
    expected = upn.calc_check_digit(body) + body
    written = written.replace("a", expected[0].lower()).replace("A", expected[0])
    m = load(tmp_path, "  Identity.PupilNumber: {from: UPN, transform: pupil_number}\n")
    assert value(m, "Identity.PupilNumber", UPN=written) == expected


@pytest.mark.parametrize("written, out", [("ls62ab", "LS6 2AB"), ("LS6  2AB", "LS6 2AB"), (" sw1a 1aa", "SW1A 1AA")])
def test_postcodes_in_the_forms_people_write_them(tmp_path, written, out):
    m = load(tmp_path, "  Address.Line1: {value: x}\n  Address.Postcode: {from: PC, transform: postcode}\n")
    assert value(m, "Address.Postcode", PC=written) == out
    with pytest.raises(mapping.RowError, match="not a UK postcode"):
        value(m, "Address.Postcode", PC="LEEDS")


@pytest.mark.parametrize("pattern, words", [
    ("(a)\\1", "back-reference"),
    ("(?=a)b", "not a regular expression"),  # a look-ahead: RE2 runs without backtracking
    ("x" * 201, "longer than 200"),
    ("(unclosed", "not a regular expression"),
])
def test_a_regular_expression_that_could_run_away_is_refused_when_the_mapping_loads(tmp_path, pattern, words):
    with pytest.raises(mapping.MappingError, match=words):
        load(tmp_path, f"  Address.Line1: {{from: A, transform: {{replace: {{pattern: '{pattern}', with: ''}}}}}}\n")


def test_an_unknown_transform_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(mapping.MappingError, match="unknown transform 'nhsnumber'.*did you mean 'nhs_number'"):
        load(tmp_path, "  Identity.NhsNumber: {from: NHS, transform: nhsnumber}\n")


def _replace_in_a_child(pattern: str, text: str, queue) -> None:
    m = mapping.load(_write(pattern))
    queue.put(value(m, "Address.Line1", A=text))


def _write(pattern: str) -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    (folder / "m.yaml").write_text(f"{HEAD}  Address.Line1: {{from: A, transform: {{replace: {{pattern: '{pattern}', "
                                   f"with: 'x'}}}}}}\n")
    return folder / "m.yaml"


@pytest.mark.parametrize("pattern, text, out", [
    ("^(a|a)*$", "a" * 40 + "!", "a" * 40 + "!"),
    ("^" + "a?" * 30 + "a" * 30 + "$", "a" * 30, "x"),
    ("\\d*\\d*\\d*\\d*\\d*\\d*:", "1" * 1000, "1" * 1000),
])
def test_a_regular_expression_takes_time_in_proportion_to_the_value(pattern, text, out):
    """Review HIGH 2: patterns the guard did not see (alternatives repeated, optional parts, repetitions
    side by side) are run by a linear-time engine: a value of up to 1,000 characters never runs away
    (a backtracking engine takes hours on these)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_replace_in_a_child, args=(pattern, text, queue))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail(f"{pattern!r} on {len(text)} characters ran for over 60 s")
    assert queue.get(timeout=5) == out
