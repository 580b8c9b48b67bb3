"""The SDK speaks for itself (issue 28, item 7): a request the SDK can tell is wrong before it
leaves raises one of its own error classes naming the field and what is wrong (never zeep's
ValidationError or TypeError); the README's complete minimal example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connectors import client as sdk
from tests.support import child_update, unique_name

README = Path(__file__).resolve().parents[2] / "packaging" / "client" / "README.md"
WHO = dict(user_id="sw1", role="social worker", reason_code="referral", reason_text="sdk errors test")
pytestmark = pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)


def test_a_missing_required_field_is_named_with_its_record(gateway, clients):
    good = child_update("sdk-e-1", unique_name(), "Ada", "2016-03-04")
    missing = child_update("sdk-e-2", unique_name(), "Bo", "2016-03-04")
    del missing["Involvement"][0]["CafAssessment"]
    with pytest.raises(sdk.MissingField) as caught:
        clients("la").submit_updates([good, missing])
    error = caught.value
    assert isinstance(error, sdk.RequestInvalid) and isinstance(error, ValueError)
    assert error.field == "ChildUpdate[1].Involvement[0].CafAssessment"
    assert str(error) == "ChildUpdate[1].Involvement[0].CafAssessment: required, and missing"
    assert error.__cause__ is None and error.__context__ is None  # no 40 lines of zeep


def test_an_unknown_field_is_named_with_a_suggestion(gateway, clients):
    record = child_update("sdk-e-3", unique_name(), "Ada", "2016-03-04")
    record["Identity"]["NHSNumber"] = "9434765919"
    with pytest.raises(sdk.UnknownField) as caught:
        clients("la").submit_updates([record])
    assert caught.value.field == "ChildUpdate[0].Identity.NHSNumber"
    assert "did you mean 'NhsNumber'" in str(caught.value)


def test_a_value_of_the_wrong_kind_is_named(gateway, clients):
    record = child_update("sdk-e-4", unique_name(), "Ada", "2016-03-04")
    record["Identity"]["DateOfBirth"] = "04/03/2016"
    with pytest.raises(sdk.InvalidValue) as caught:
        clients("la").submit_updates([record])
    assert caught.value.field == "ChildUpdate[0].Identity.DateOfBirth" and "YYYY-MM-DD" in str(caught.value)
    with pytest.raises(sdk.InvalidValue, match="DateOfBirth"):
        clients("la").find_child(family_name="Okonkwo", date_of_birth="11/02/2016", **WHO)


def test_the_readmes_minimal_example_runs_as_written(gateway, capsys):
    text = README.read_text()
    [example] = re.findall(r"<!-- minimal example -->\n```python\n(.*?)```", text, re.S)
    credentials = gateway.certs["la"]
    code = example.replace("https://gateway.example.org:8443", gateway.url).replace('"credentials"',
                                                                                   repr(str(credentials)))
    exec(compile(code, "README minimal example", "exec"), {})  # noqa: S102 (the README's own example)
    out = capsys.readouterr().out
    assert "connected as LA" in out and re.search(r"(created|updated|matched) \S+", out), out
    assert "# required" in example  # the example marks what must be given


@pytest.mark.parametrize("path, value", [(("Identity", "DateOfBirth"), "04/03/2016 SECRET-A"),
                                         (("Involvement", 0, "CafAssessment"), "SECRET-B"),
                                         (("Identity", "Gender"), "SECRET-C"),
                                         (("Identity", "FamilyName"), {"SECRET": "D"})])
def test_an_sdk_error_names_the_field_and_the_shape_never_the_value(gateway, clients, path, value):
    """Review LOW: a client-side error says which field and what shape it takes, not what was given
    (the value, a child's details, would land in a scheduler's logs)."""
    record = child_update("sdk-e-5", unique_name(), "Ada", "2016-03-04")
    node = record
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(sdk.InvalidValue) as caught:
        clients("la").submit_updates([record])
    assert "SECRET" not in str(caught.value) and path[-1] in caught.value.field
