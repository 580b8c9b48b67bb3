"""Odd but schema-valid input: each record is judged alone, a read gets a contract fault, never a
503 with a traceback (issue 5, "Every odd input gets a contract fault").

xs:date as the gateway's XSD validation (libxml2) takes it: any number of year digits, a negative
year, and a time zone up to +/-14:00 are valid; year 0000, whitespace around the date and a zone
past 14:00 are not (SchemaInvalid). Python's dates hold years 1 to 9999 only.
"""

from __future__ import annotations

import datetime as dt
import secrets
import string

import pytest
import xmlsec
from lxml import etree
from zeep.wsse.signature import _sign_envelope_with_key_binary

from contactgate_wire import wsse
from contactgate_wire.soap import WSU, q

from contactgate_wire.soap import CG
from tests.gateway.pipeline.attacks import assert_post_refused, find_kwargs
from tests.support import child_update, unique
from tests.wire.signing import organisation_key

READ = dict(user_id="odd.input", role="social worker", reason_code="safeguarding",
            reason_text="checking an odd record")

# Schema-valid (checked against the XSD below), but outside what a Python date can hold.
DATES_PYTHON_CANNOT_HOLD = ["10000-01-01", "-0001-01-01", "99999999999-12-31", "-99999-06-30Z"]


def test_the_out_of_range_dates_are_schema_valid():
    from lxml import etree

    import contactgate_schemas as schemas

    schema = etree.XMLSchema(etree.fromstring(schemas.read(schemas.XSD_NAME)))
    for date in DATES_PYTHON_CANNOT_HOLD:
        payload = etree.fromstring(
            f'<FindChild xmlns="{CG}"><Requester><UserId>u</UserId><Role>r</Role></Requester>'
            f'<FamilyName>x</FamilyName><DateOfBirth>{date}</DateOfBirth></FindChild>')
        assert schema.validate(payload), date


def test_the_connector_reads_a_record_it_cannot_hold_as_unreadable_and_the_rest_as_usual():
    from gateway.pipeline import contactgate_v1 as dialect
    from gateway.index.model import ChildUpdate, UnreadableUpdate

    def record(srid: str, dob: str) -> str:
        return (f"<ChildUpdate><SourceRecordId> {srid} </SourceRecordId><Identity><FamilyName>F</FamilyName>"
                f"<GivenName>G</GivenName><DateOfBirth>{dob}</DateOfBirth><Gender>male</Gender></Identity>"
                "</ChildUpdate>")

    payload = etree.fromstring(f'<SubmitUpdates xmlns="{CG}">{record("a", "2015-01-01Z")}'
                               f'{record("b", "-0001-01-01")}{record("c", "0001-12-31+14:00")}</SubmitUpdates>')
    ok_a, bad, ok_c = dialect.read_submit_updates(payload)
    assert isinstance(ok_a, ChildUpdate) and ok_a.identity.date_of_birth == dt.date(2015, 1, 1)
    assert bad == UnreadableUpdate("b", "date of birth is outside the years the index holds (0001 to 9999)")
    assert isinstance(ok_c, ChildUpdate) and ok_c.identity.date_of_birth == dt.date(1, 12, 31)


def _name(prefix: str) -> str:
    """A family name unique after normalisation (which drops digits, so unique()'s hex is not enough)."""
    return prefix + "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))


def _outcomes(results: list[dict]) -> list[str]:
    return [r["Outcome"] for r in results]


@pytest.mark.parametrize("date", DATES_PYTHON_CANNOT_HOLD)
def test_birth_date_python_cannot_hold_rejects_that_record_alone(gateway, clients, date):
    la = clients("la")
    before = gateway.child_count()
    good = child_update(unique("odd-"), _name("Good"), _name("Ann"), "2016-02-03")  # like no other child
    bad = child_update(unique("odd-"), _name("Bad"), "Ben", date)
    also = child_update(unique("odd-"), _name("Also"), "Cal", "2016-02-04")  # another child
    results = la.submit_updates([good, bad, also])
    assert _outcomes(results) == ["created", "rejected", "created"]
    assert results[1]["Detail"] == "date of birth is outside the years the index holds (0001 to 9999)"
    assert results[1].get("ChildId") is None
    assert gateway.child_count() == before + 2


@pytest.mark.parametrize("field", ["Start", "End"])
def test_involvement_date_python_cannot_hold_rejects_that_record_alone(gateway, clients, field):
    la = clients("la")
    involvement = {"Service": "Early help", "Start": "2024-01-01", "End": "2024-06-01",
                   "CafAssessment": False, "LeadProfessional": False}
    involvement[field] = "10000-01-01"
    good = child_update(unique("odd-"), _name("Good"), _name("Ann"), "2016-02-03")  # like no other child
    bad = child_update(unique("odd-"), _name("Bad"), "Ben", "2016-02-03", involvements_=[involvement])
    results = la.submit_updates([bad, good])
    assert _outcomes(results) == ["rejected", "created"]
    assert results[0]["Detail"] == (f"an involvement's {field} date is outside the years the index holds "
                                    "(0001 to 9999)")


@pytest.mark.parametrize("date", DATES_PYTHON_CANNOT_HOLD)
def test_find_child_birth_date_python_cannot_hold_is_schema_invalid(gateway, clients, date):
    la = clients("la")
    data = la.build_request("FindChild", **find_kwargs(DateOfBirth=date))
    envelope = assert_post_refused(gateway, la, "FindChild", data, "SchemaInvalid", org_code="LA")
    message = envelope.findtext(f".//{{{CG}}}Message")
    assert message == "DateOfBirth is outside the years the gateway holds (0001 to 9999)"


def test_dates_with_time_zones_are_taken_as_calendar_dates(gateway, clients):
    la = clients("la")
    family = _name("Zoned")
    involvement = {"Service": "Early help", "Start": "2024-01-10Z", "End": "2099-01-01-14:00",
                   "CafAssessment": True, "LeadProfessional": False}
    [result] = la.submit_updates([child_update(unique("odd-"), family, "Zoe", "2015-06-01+14:00",
                                               involvements_=[involvement])])
    assert result["Outcome"] == "created"
    [candidate] = la.find_child(family_name=family, date_of_birth="2015-06-01Z", **READ)
    assert candidate["DateOfBirth"] == dt.date(2015, 6, 1)
    child = la.get_contacts(result["ChildId"], **READ)
    [contact] = child["Contact"]
    assert (contact["Involvement"]["Start"], contact["Involvement"]["End"]) == (
        dt.date(2024, 1, 10), dt.date(2099, 1, 1))


def test_the_first_and_last_years_python_holds_are_judged_like_any_date(gateway, clients):
    la = clients("la")
    first = child_update(unique("odd-"), _name("Early"), "Eve", "2015-01-01", involvements_=[
        {"Service": "Early help", "Start": "0001-01-01", "End": "9999-12-31",
         "CafAssessment": False, "LeadProfessional": False}])
    oldest = child_update(unique("odd-"), _name("Earliest"), "Ida", "0001-01-01")
    last = child_update(unique("odd-"), _name("Late"), "Lou", "9999-12-31")
    results = la.submit_updates([first, oldest, last])
    assert _outcomes(results) == ["created", "rejected", "rejected"]
    assert results[1]["Detail"] == "the child is 18 or over, or has died: not held by the index"  # retention
    assert results[2]["Detail"] == "date of birth is in the future"
    child = la.get_contacts(results[0]["ChildId"], **READ)
    [contact] = child["Contact"]
    assert (contact["Involvement"]["Start"], contact["Involvement"]["End"]) == (dt.date(1, 1, 1), dt.date(9999, 12, 31))


@pytest.mark.parametrize("date", ["0000-01-01", " 2015-01-01", "2015-01-01+14:01", "2015-02-29"])
def test_dates_the_schema_refuses_are_schema_invalid(gateway, clients, date):
    la = clients("la")
    data = la.build_request("FindChild", **find_kwargs(DateOfBirth=date))
    assert_post_refused(gateway, la, "FindChild", data, "SchemaInvalid", org_code="LA")
    data = la.build_request("SubmitUpdates", ChildUpdate=[
        child_update(unique("odd-"), _name("Odd"), "Ann", date)])
    assert_post_refused(gateway, la, "SubmitUpdates", data, "SchemaInvalid", org_code="LA")


# ---- odd strings: every one is a per-record outcome on both backends -----------------------------

MAX_LENGTH_VALUES = dict(  # each at its type's maxLength in schemas/contactgate.xsd
    name="N" * 100, line="L" * 100, town="T" * 100, postcode="P" * 10, phone="0" * 32,
    email="e" * 244 + "@x.example", relationship="R" * 100, service="S" * 200, role="r" * 100,
    code="C" * 32, source_record_id="s" * 64)

# (family name, expected outcome): names that normalise longer, to nothing, or are astral.
ODD_FAMILY_NAMES = [
    ("ß" * 100, "created"),                      # NFKD/casefold "ss": the key is twice as long
    ("\u3392" * 100, "created"),                 # the "MHz" square: three letters in NFKD
    ("ﬃ" * 100, "created"),                      # the "ffi" ligature
    ("\U0001d518" * 100, "created"),             # mathematical fraktur U (astral): "u" in NFKD
    ("😀" * 100, "rejected"),                    # astral, no letters at all
    (" " * 100, "rejected"),                     # whitespace only (xs:string keeps it)
    ("\u0085\u009f\u200b\u202e" * 25, "rejected"),  # C1 controls, zero-width space, RTL override
    ("O\u0085Brien\u00ad", "created"),           # a NEL and a soft hyphen inside a name
]


@pytest.mark.parametrize("family, outcome", ODD_FAMILY_NAMES,
                         ids=["sharp-s", "square-mhz", "ffi", "astral-letter", "emoji", "spaces",
                              "controls", "nel-inside"])
def test_odd_family_names_are_judged_per_record(gateway, clients, family, outcome):
    la = clients("la")
    given = family if outcome == "created" else "Ann"
    results = la.submit_updates([
        child_update(unique("odd-"), family, given, "2014-04-04", postcode=unique()[:8]),
        child_update(unique("odd-"), _name("Plain"), "Ann", "2014-04-04")])
    assert _outcomes(results) == [outcome, "created"]
    if outcome == "rejected":
        assert results[0]["Detail"] == "family name has no letters"
        return
    child = la.get_contacts(results[0]["ChildId"], **READ)
    assert child["Identity"]["FamilyName"] == family
    assert child["Identity"]["GivenName"] == [given]
    assert [c["ChildId"] for c in la.find_child(family_name=family, date_of_birth="2014-04-04", **READ)
            ] == [results[0]["ChildId"]]


def test_every_value_at_its_maximum_length_is_stored_and_read_back(gateway, clients):
    la = clients("la")
    v = MAX_LENGTH_VALUES
    address = {"Line1": v["line"], "Line2": v["line"], "Line3": v["line"], "Line4": v["line"],
               "Line5": v["line"], "Town": v["town"], "Postcode": v["postcode"]}
    involvement = {"Service": v["service"], "PractitionerName": v["name"], "Role": v["role"],
                   "Phone": v["phone"], "Email": v["email"], "Start": "2024-01-01",
                   "CafAssessment": True, "LeadProfessional": True}
    srid = v["source_record_id"][:-8] + unique()
    update = child_update(srid, v["name"][:-12] + _name(""), v["name"], "2013-03-03",
                          involvements_=[involvement] * 3,
                          Address=address,
                          Carer=[{"Name": v["name"], "Relationship": v["relationship"], "Phone": v["phone"],
                                  "Email": v["email"], "Address": address}] * 3,
                          EducationalSetting={"Name": v["name"], "Code": v["code"], "Phone": v["phone"]},
                          GpPractice={"Name": v["name"], "Code": v["code"], "Phone": v["phone"]})
    update["Identity"].update(GivenName=[v["name"]] * 5, PreferredName=v["name"], PreviousName=[v["name"]] * 5)
    [result] = la.submit_updates([update])
    assert result["Outcome"] == "created"
    child = la.get_contacts(result["ChildId"], **READ)
    assert child["Address"]["Line5"] == v["line"] and child["Address"]["Postcode"] == v["postcode"]
    assert child["Carer"][0]["Email"] == v["email"]
    assert child["GpPractice"]["Code"] == v["code"]
    involvements = [c["Involvement"] for c in child["Contact"]]
    assert len(involvements) == 3
    assert involvements[0]["Service"] == v["service"] and involvements[0]["Email"] == v["email"]
    assert involvements[0]["Role"] == v["role"] and involvements[0]["Phone"] == v["phone"]


# ---- found by the property tests (tests/gateway/test_properties.py) ------------------------------

def _signed_with_timestamp(key: xmlsec.Key, unsigned: bytes, created: str, expires: str) -> bytes:
    """A correctly signed message whose wsu:Timestamp says ``created`` and ``expires`` verbatim."""
    envelope = etree.fromstring(unsigned)
    timestamp = wsse.add_timestamp(envelope)
    timestamp.find(q(WSU, "Created")).text = created
    timestamp.find(q(WSU, "Expires")).text = expires
    _sign_envelope_with_key_binary(envelope, key, xmlsec.Transform.RSA_SHA256, xmlsec.Transform.SHA256)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


@pytest.mark.parametrize("created, expires", [
    ("0001-01-01T00:00:00+01:00", "0001-01-01T00:05:00+01:00"),
    ("9999-12-31T23:59:00-01:00", "9999-12-31T23:59:30-01:00"),
], ids=["year-1-east", "year-9999-west"])
def test_signed_timestamp_outside_the_years_python_holds_in_utc_is_message_expired(gateway, clients,
                                                                                     created, expires):
    la = clients("la")
    data = _signed_with_timestamp(organisation_key(gateway, "la"), la.build_request("FindChild", sign=False, **find_kwargs()),
                                  created, expires)
    assert_post_refused(gateway, la, "FindChild", data, "MessageExpired", org_code="LA")


@pytest.mark.parametrize("operation", ["FindChild", "SubmitUpdates"])
def test_schema_fault_for_a_huge_value_stays_within_the_contracts_message_length(gateway, clients, operation):
    import contactgate_schemas as schemas

    la = clients("la")
    huge = "2015-01-01" * 500
    if operation == "FindChild":
        data = la.build_request("FindChild", **find_kwargs(DateOfBirth=huge))
    else:
        data = la.build_request("SubmitUpdates", ChildUpdate=[child_update(unique("odd-"), _name("Huge"), "Ann", huge)])
    envelope = assert_post_refused(gateway, la, operation, data, "SchemaInvalid", org_code="LA")
    error = envelope.find(f".//{{{CG}}}Error")
    assert etree.XMLSchema(etree.fromstring(schemas.read(schemas.XSD_NAME))).validate(error)
    message = error.findtext(f"{{{CG}}}Message")
    assert "DateOfBirth" in message and len(message) <= 500


# ---- characters and whitespace XML or the schema refuse -------------------------------------------

@pytest.mark.parametrize("reference", ["&#0;", "&#x1;", "&#x1F;", "&#xD800;", "&#xFFFE;", "\x00", "\x1b"],
                         ids=["nul", "soh", "unit-separator", "surrogate", "fffe", "raw-nul", "raw-escape"])
def test_characters_xml_forbids_are_malformed_not_stored(gateway, clients, reference):
    """NUL (which PostgreSQL text cannot hold), C0 controls and surrogates cannot reach the index:
    XML 1.0 forbids them, even as character references."""
    la = clients("la")
    family = _name("Ctrl")
    data = la.build_request("SubmitUpdates", ChildUpdate=[child_update(unique("odd-"), family, "Ann", "2016-02-03")])
    data = data.replace(family.encode(), family.encode() + reference.encode(), 1)
    assert_post_refused(gateway, la, "SubmitUpdates", data, "MalformedMessage", org_code="LA")


@pytest.mark.parametrize("field", ["SourceRecordId", "UserId"])
def test_whitespace_only_tokens_are_schema_invalid(gateway, clients, field):
    la = clients("la")
    if field == "SourceRecordId":
        data = la.build_request("SubmitUpdates", ChildUpdate=[child_update(" \t\n ", _name("Blank"), "Ann", "2016-02-03")])
        operation = "SubmitUpdates"
    else:
        data = la.build_request("FindChild", **find_kwargs(Requester={"UserId": " \n ", "Role": "gp"}))
        operation = "FindChild"
    assert_post_refused(gateway, la, operation, data, "SchemaInvalid", org_code="LA")


def test_a_source_record_id_is_one_record_however_its_whitespace_is_spelled(gateway, clients):
    la = clients("la")
    family, srid = _name("Spaced"), unique("odd-")
    [first] = la.submit_updates([child_update(f"  {srid}\t x ", family, "Ann", "2016-02-03")])
    [second] = la.submit_updates([child_update(f"{srid} x", family, "Ann", "2016-02-03")])
    assert (first["Outcome"], second["Outcome"]) == ("created", "updated")
    assert first["SourceRecordId"] == second["SourceRecordId"] == f"{srid} x"
    assert first["ChildId"] == second["ChildId"]


@pytest.mark.parametrize("family, given", [("Иванов", "Анна"), ("Παπαδόπουλος", "Ελένη"), ("محمد", "فاطمة")],
                         ids=["cyrillic", "greek", "arabic"])
def test_a_family_name_in_a_non_latin_script_is_stored_and_found(gateway, clients, family, given):
    la = clients("la")
    dob = f"2012-0{secrets.randbelow(9) + 1}-1{secrets.randbelow(9)}"
    [result] = la.submit_updates([child_update(unique("odd-"), family, given, dob)])
    assert result["Outcome"] == "created", result
    found = la.find_child(family_name=family.upper(), date_of_birth=dob, **READ)
    assert result["ChildId"] in [c["ChildId"] for c in found]
