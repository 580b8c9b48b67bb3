"""A SubmitUpdates built straight from the schema's types (connectors.submit_xml, what build_request
and so `push` use) is the very envelope zeep builds: the same bytes unsigned, the same canonical
form, for varied records (optional fields or not, several carers and involvements, a carer's own
address, unicode, XML's special characters, empty texts, a single value for a repeating field, the
mapped rows of the nightly CSV and FHIR samples); what it cannot build exactly goes to zeep, with
the SDK's own errors; and a batch it built, signed, is taken by a real gateway."""

from __future__ import annotations

import copy
import random
import sys
from pathlib import Path

import pytest
from lxml import etree

from connectors import mapping as mapping_mod
from connectors import model
from connectors import sources
from connectors.client import InvalidValue, MissingField, UnknownField
from connectors.push import parse_results
from connectors.submit_xml import submit_updates_envelope
from tests.support import child_update, nhs_number, unique_name

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "connectors" / "samples"


def _zeep_bytes(client, records) -> bytes:
    from zeep.wsdl.utils import etree_to_string

    return etree_to_string(client._zeep_envelope("SubmitUpdates", ChildUpdate=records))


def _c14n(data: bytes) -> bytes:
    return etree.tostring(etree.fromstring(data), method="c14n", exclusive=True)


def _varied(rng: random.Random, n: int) -> list[dict]:
    names = ["Okafor", "Ó Súilleabháin", "Nguyễn", "Smith & Sons <Ltd>", "O'Brien \"Jr\"", "Łukasz", "李", "Zoë",
             "  spaced  ", "tab\there"]
    records = []
    for i in range(n):
        record = child_update(f"SX-{i}", rng.choice(names), rng.choice(names), f"20{10 + i % 9}-0{1 + i % 9}-1{i % 9}",
                              nhs=nhs_number(i) if i % 2 else None, gender=["female", "male", "unknown"][i % 3])
        if i % 3 == 0:
            del record["Address"]
        if i % 4 == 0:
            record["Carer"].append({"Name": rng.choice(names), "Relationship": "father",
                                    "Address": {"Line1": "1 €uro Way", "Line2": "", "Postcode": "LS6 2AB"}})
        if i % 5 == 0:
            del record["Carer"], record["EducationalSetting"], record["GpPractice"]
        if i % 6 == 0:
            record["Involvement"].append({"Service": "Health visiting", "Start": "2023-02-01", "End": "2024-02-01",
                                          "CafAssessment": False, "LeadProfessional": False})
        if i % 7 == 0:
            record["Identity"]["GivenName"] = "Single"  # one value for a repeating field, as zeep takes it
            record["Identity"]["PreviousName"] = ["Formerly", "Also Formerly"]
            record["Identity"]["PreferredName"] = "Pref"
        if i % 8 == 0:
            del record["Involvement"]
        if i % 9 == 0:
            record["Identity"]["DateOfDeath"] = "2024-12-31"
            record["Identity"]["PupilNumber"] = "H801200001001"
        records.append(record)
    return records


def _mapped(extract: Path, mapping_file: Path) -> list[dict]:
    m = mapping_mod.load(mapping_file)
    records = []
    for _, row in sources.rows(extract, m):
        try:
            records.append(m.record(row))
        except mapping_mod.RowError:  # the samples' rows the mapping rejects on purpose
            continue
    return records


def _bench_samples(tmp_path: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import push_memory
    finally:
        sys.path.remove(str(ROOT / "bench"))
    records = []
    for kind in ("csv", "ndjson", "bundle"):
        extract, mapping_file = push_memory.write(kind, tmp_path / kind, 0.05)
        records.extend(_mapped(extract, mapping_file)[:300])
    return records


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
def test_the_envelope_built_from_the_schema_is_zeeps_byte_for_byte(gateway, clients, tmp_path):
    client = clients("la")
    batches = [_varied(random.Random(seed), 40) for seed in range(5)]
    batches.append(_mapped(SAMPLES / "health_patients.ndjson", SAMPLES / "health_patients.yaml"))
    batches.append(_bench_samples(tmp_path))
    for records in batches:
        assert submit_updates_envelope(copy.deepcopy(records)) is not None  # built without zeep
        fast = client.build_request("SubmitUpdates", sign=False, ChildUpdate=records)
        reference = _zeep_bytes(client, records)
        assert fast == reference
        assert _c14n(fast) == _c14n(reference)
        signed = etree.fromstring(client.build_request("SubmitUpdates", ChildUpdate=records))
        body = signed.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
        assert etree.tostring(body[0], method="c14n", exclusive=True) == etree.tostring(
            etree.fromstring(reference)[0][0], method="c14n", exclusive=True)


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
@pytest.mark.parametrize("change", ["a date object", "an int", "a tuple", "None in a list", "a str subclass"])
def test_what_it_does_not_build_exactly_is_built_by_zeep(gateway, clients, change):
    import datetime as dt

    client = clients("la")
    record = child_update("SX-z", "Okafor", "Ada", "2016-03-04")
    if change == "a date object":
        record["Identity"]["DateOfBirth"] = dt.date(2016, 3, 4)
    elif change == "an int":
        record["Address"]["Line1"] = 12
    elif change == "a tuple":
        record["Identity"]["GivenName"] = ("Ada", "Grace")
    elif change == "None in a list":
        record["Carer"].append(None)
    else:
        record["SourceRecordId"] = type("Text", (str,), {})("SX-z")
    assert submit_updates_envelope([record]) is None
    assert client.build_request("SubmitUpdates", sign=False, ChildUpdate=[record]) == _zeep_bytes(client, [record])


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
def test_a_request_zeep_refuses_is_refused_with_the_sdks_own_errors_as_before(gateway, clients):
    client = clients("la")
    missing = child_update("SX-m", "Okafor", "Ada", "2016-03-04")
    del missing["Involvement"][0]["CafAssessment"]
    unknown = child_update("SX-u", "Okafor", "Ada", "2016-03-04")
    unknown["Identity"]["NHSNumber"] = "9434765919"
    for records, error in (([missing], InvalidValue), ([unknown], UnknownField)):
        assert submit_updates_envelope(records) is None
        with pytest.raises(error) as caught:
            client.build_request("SubmitUpdates", ChildUpdate=records)
        with pytest.raises(error) as reference:
            client._zeep_envelope("SubmitUpdates", ChildUpdate=records)
        assert str(caught.value) == str(reference.value)
    assert submit_updates_envelope([]) is None and submit_updates_envelope([missing] * 1001) is None
    with pytest.raises(MissingField):  # the SDK's own checks before anything is built, as before
        client.submit_updates([missing])


def test_a_batch_built_from_the_schema_is_signed_and_taken_by_a_real_gateway(gateway, clients):
    client = clients("la")
    records = _varied(random.Random(11), 30)
    for i, record in enumerate(records):
        record["SourceRecordId"] = f"SX-{unique_name()}-{i}"
        record["Identity"]["FamilyName"] = unique_name() + " " + record["Identity"]["FamilyName"].strip()
        record["Identity"]["NhsNumber"] = nhs_number(random.Random(i).randrange(10**6, 10**7))
        record["Identity"].pop("DateOfDeath", None)  # a child who has died is not held: rejected, by design
    records = [r for r in records if model.schema_problem(r) is None]  # what the gateway's schema takes
    assert len(records) >= 10 and submit_updates_envelope(records) is not None
    status, body = client.exchange("SubmitUpdates", client.build_request("SubmitUpdates", ChildUpdate=records))
    results = parse_results(body)
    assert status == 200 and len(results) == len(records), etree.tostring(body)[:3000].decode()
    assert [r.source_record_id for r in results] == [r["SourceRecordId"] for r in records]
    assert {r.outcome for r in results} <= {"created", "updated", "matched", "review"}, \
        [(r.outcome, r.detail) for r in results]


@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)
def test_a_client_given_another_wsdl_builds_its_requests_as_that_wsdl_says(gateway, tmp_path):
    """``GatewayClient(wsdl=...)`` (a gateway's own "<base>/soap/v1?wsdl", of another version than the
    SDK's): a SubmitUpdates is built as that WSDL says, not as the packaged schema says."""
    from importlib import resources

    from connectors.client import GatewayClient

    packaged = resources.files("contactgate_schemas")
    (tmp_path / "contactgate.wsdl").write_bytes(packaged.joinpath("contactgate.wsdl").read_bytes())
    xsd = packaged.joinpath("contactgate.xsd").read_text()
    older = xsd.replace('      <xs:element name="DateOfDeath" type="xs:date" minOccurs="0"/>\n', "")
    assert older != xsd  # a gateway from before Identity.DateOfDeath
    (tmp_path / "contactgate.xsd").write_text(older)
    client = GatewayClient.from_directory(gateway.url, gateway.certs["la"], wsdl=str(tmp_path / "contactgate.wsdl"))
    plain = child_update("SX-w", "Okafor", "Ada", "2016-03-04")
    assert client.build_request("SubmitUpdates", sign=False, ChildUpdate=[plain]) == _zeep_bytes(client, [plain])
    died = child_update("SX-d", "Okafor", "Ada", "2016-03-04")
    died["Identity"]["DateOfDeath"] = "2024-12-31"
    with pytest.raises(UnknownField):
        client.build_request("SubmitUpdates", sign=False, ChildUpdate=[died])
