"""Happy paths for the three operations, through the zeep SDK, mutual TLS and real gunicorn, on
SQLite and PostgreSQL."""

import datetime as dt

import zeep
from zeep.transports import Transport

from contactgate_wire.soap import CG
from tests.support import unique_name, child_update, nhs_number, unique

REASON = dict(reason_code="care_coordination", reason_text="planning a joint visit")


def test_submit_find_and_get_contacts(gateway):
    la = gateway.client("la")
    health = gateway.client("health")
    family = unique_name("Okafor")
    nhs = nhs_number(int(unique()[:6], 16))
    results = la.submit_updates([
        child_update("la-1", family, "Ada", "2016-03-04", nhs=nhs, postcode="LS1 1AA"),
        child_update("la-2", family, "Ben", "2018-07-09", gender="male"),
    ])
    assert [r["Outcome"] for r in results] == ["created", "created"]
    ada_id = results[0]["ChildId"]

    candidates = health.find_child(user_id="dr.jones", role="gp", family_name=family.upper(),
                                   date_of_birth="2016-03-04", **REASON)
    assert [c["ChildId"] for c in candidates] == [ada_id]
    assert candidates[0]["Locality"] == "Leeds"
    assert "Address" not in candidates[0]

    by_nhs = health.find_child(user_id="dr.jones", role="gp", nhs_number=nhs, **REASON)
    assert [c["ChildId"] for c in by_nhs] == [ada_id]

    child = health.get_contacts(ada_id, user_id="dr.jones", role="gp", **REASON)
    assert child["ChildId"] == ada_id
    assert child["Identity"]["FamilyName"] == family
    assert child["Address"]["Postcode"] == "LS1 1AA"
    assert child["GpPractice"]["Name"] == "Park Surgery"
    [contact] = child["Contact"]
    assert contact["Organisation"] == "LA"
    assert contact["Involvement"]["LeadProfessional"] is True
    assert contact["Involvement"]["Email"] == "sam.worker@la.example"


def test_update_replaces_the_sources_involvements_and_matches_by_identifier(gateway):
    la = gateway.client("la")
    family = unique_name("Nowak")
    nhs = nhs_number(int(unique()[:6], 16))
    [created] = la.submit_updates([child_update("r-10", family, "Cara", "2015-01-02", nhs=nhs)])
    ended = [{"Service": "Early help", "Start": "2023-01-01", "End": "2023-06-01",
              "CafAssessment": False, "LeadProfessional": False},
             {"Service": "Youth service", "Start": "2024-02-01", "CafAssessment": False,
              "LeadProfessional": False}]
    [updated] = la.submit_updates([child_update("r-10", family, "Cara", "2015-01-02", nhs=nhs,
                                                involvements_=ended)])
    assert updated["Outcome"] == "updated" and updated["ChildId"] == created["ChildId"]
    # Another record id with the same NHS number is the same child.
    [matched] = la.submit_updates([child_update("r-11", family, "Cara", "2015-01-02", nhs=nhs)])
    assert matched["Outcome"] == "matched" and matched["ChildId"] == created["ChildId"]

    child = gateway.client("health").get_contacts(created["ChildId"], user_id="u", role="gp", **REASON)
    services = sorted(c["Involvement"]["Service"] for c in child["Contact"])
    # Each source record restates its own set: r-10's current involvement and r-11's are both shown,
    # r-10's ended one is not current.
    assert services == ["Children's social care", "Youth service"]


def test_same_child_from_another_record_is_matched_and_bad_records_rejected(gateway):
    la = gateway.client("la")
    family = unique_name("Silva")
    [first] = la.submit_updates([child_update("d-1", family, "Dee", "2014-05-06")])
    before = gateway.child_count()
    results = la.submit_updates([
        child_update("d-2", family, "Dee", "2014-05-06"),
        child_update("d-3", family, "Eve", "2014-05-06", nhs="1234567890"),
        child_update("d-4", family, "Fay", (dt.date.today() + dt.timedelta(days=3)).isoformat()),
    ])
    assert [r["Outcome"] for r in results] == ["matched", "rejected", "rejected"]
    assert results[0]["ChildId"] == first["ChildId"]
    assert [r["ChildId"] for r in results[1:]] == [None, None]
    assert "check digit" in results[1]["Detail"]
    assert gateway.child_count() == before


def test_submit_retry_returns_the_first_answer_without_applying_twice(gateway):
    la = gateway.client("la")
    family = unique_name("Retry")
    data = la.build_request("SubmitUpdates", ChildUpdate=[child_update("rt-1", family, "Gus", "2017-02-03")])
    status1, first = la.post_raw("SubmitUpdates", data)
    count = gateway.child_count()
    status2, second = la.post_raw("SubmitUpdates", data)
    assert status1 == status2 == 200
    outcome = f"{{{CG}}}Outcome"
    assert [e.text for e in first.iter(outcome)] == ["created"]
    assert [e.text for e in second.iter(outcome)] == ["created"]  # the first answer, not "updated"
    assert [e.text for e in first.iter(f"{{{CG}}}ChildId")] == [e.text for e in second.iter(f"{{{CG}}}ChildId")]
    assert gateway.child_count() == count
    assert gateway.audit_entries_after(gateway.audit_seq() - 1)[-1]["outcome"] == "repeat"


def test_signature_in_x509data_form_is_accepted(gateway):
    client = gateway.client("health", binary_token=False)
    assert client.find_child(user_id="u", role="gp", family_name="Nobody", date_of_birth="2010-01-01",
                             **REASON) == []


def test_wsdl_is_served_and_zeep_loads_it(gateway):
    la = gateway.client("la")
    client = zeep.Client(f"{gateway.url}/soap/v1?wsdl", transport=Transport(session=la.session))
    operations = set(client.wsdl.bindings[f"{{{CG}}}ContactGateBinding"]._operations)
    assert operations == {"SubmitUpdates", "FindChild", "GetContacts", "SetShielding", "Ping"}
    assert client.service._binding_options["address"] == f"{gateway.url}/soap/v1"


def test_a_refused_push_is_not_remembered_so_its_retry_runs_once_the_refusal_is_lifted(gateway):
    code = unique_name("FLIP").upper()
    gateway.add_org(code, "local_authority", ["push"])
    gateway.cli("org", "suspend", code, "--officer", "officer-a", "--reason", "paperwork")
    client = gateway.client(code.lower())
    data = client.build_request("SubmitUpdates", ChildUpdate=[child_update("f-1", unique_name("Flip"), "Kim", "2016-01-01")])
    status, refused = client.post_raw("SubmitUpdates", data)
    assert status == 500 and client.fault_code(refused) == "NotAccredited"
    gateway.reinstate(code)
    status, answer = client.post_raw("SubmitUpdates", data)
    assert status == 200 and [e.text for e in answer.iter(f"{{{CG}}}Outcome")] == ["created"]


def test_a_client_whose_certificate_the_gateway_refuses_gets_a_gateway_error(gateway, tmp_path):
    from connectors.client import GatewayClient, GatewayUnreachable
    from tests.support import foreign_ca_client_material

    rogue = foreign_ca_client_material(tmp_path / "rogue")
    la = gateway.certs["la"]
    client = GatewayClient(gateway.url, cert=rogue / "cert.pem", key=rogue / "key.pem", ca=la / "ca.pem",
                           gateway_signing_cert=la / "gateway-signing.pem")
    import pytest

    with pytest.raises(GatewayUnreachable):
        client.find_child(user_id="u", role="gp", family_name="X", date_of_birth="2010-01-01", **REASON)


def test_a_refused_read_leaves_no_replay_claim_so_its_copy_is_judged_afresh(gateway):
    health = gateway.client("health")
    data = health.build_request("FindChild", Requester={"UserId": "u", "Role": "gp"},
                                FamilyName="Nobody", DateOfBirth="2010-01-01")  # no Reason
    for _ in range(2):
        status, envelope = health.post_raw("FindChild", data)
        assert status == 500 and health.fault_code(envelope) == "ReasonRequired"  # not Replay


def test_token_collapses_xml_whitespace_only_as_the_schema_does():
    """A SourceRecordId of an ideographic space is valid xs:token: it must not be answered empty
    (the answer would break the schema the client validates it against)."""
    from gateway.pipeline.contactgate_v1 import token

    assert token("  dr \t who\r\n ") == "dr who"
    assert token("\u3000") == "\u3000" and token("a\u00a0b") == "a\u00a0b"
    assert token(None) == ""
