"""Requester/OnBehalfOf over SOAP (issue 26, item 5): access through another authorised user.

A second `contactgate serve` on the session gateway's home and database (its own ports), with a
roles file of its own (a mediated read needs one); an organisation accredited for ``query`` and
``mediate`` by two officers. Through it, with real signed requests:

- a mediator's FindChild and GetContacts on behalf of a requester: answered limited to what the
  requester's role may see; the audit entry names both people; `audit report --user ORG:NAME` (the
  requester's organisation and name) finds it;
- a strict zeep client built from the XSD before OnBehalfOf (and the SDK on it) is unaffected;
- refusals, each a clear fault, audited, answering nothing: OnBehalfOf from an organisation not
  accredited for mediation, from a role other than mediator, on SetShielding; a blank identity
  note; an over-long name; a requester's role not in the roles file;
- the SDK's own checks, before anything is sent (MissingField, UnknownField, InvalidValue).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from lxml import etree
from sqlalchemy import select

from connectors.client import GatewayClient, InvalidValue, MissingField, UnknownField
from contactgate_local import free_port
from gateway.db import audit_log
from gateway.files import write_private
from tests.support import child_update, unique, unique_name

XS = "http://www.w3.org/2001/XMLSchema"
ROLES = {"roles": {"health visitor": ["address", "settings", "practitioners"],
                   "social worker": ["identifiers", "address", "carers", "carer_contact", "settings",
                                     "practitioners", "practitioner_contact", "lead_professional"],
                   "mediator": ["identifiers", "address", "carers", "carer_contact", "settings", "practitioners",
                                "practitioner_contact", "lead_professional"]}}
REQUESTER = {"name": "Jane Smith", "organisation": "Leeds Community Healthcare", "role": "health visitor",
             "phone": "0113 496 0100", "identity_check": "callback_switchboard",
             "identity_note": "called back on the trust's published switchboard number"}
READ = dict(reason_code="safeguarding", reason_text="health visitor's home visit tomorrow")


@dataclass
class Serving:
    url: str
    code: str
    directories: dict

    def client(self, name: str, **kwargs) -> GatewayClient:
        return GatewayClient.from_directory(self.url, self.directories[name], **kwargs)


@pytest.fixture(scope="module")
def serving(gateway, tmp_path_factory):
    """The mediating organisation, and a second `serve` of the session's home with a roles file."""
    code = f"MED{secrets.token_hex(3).upper()}"
    mediating = gateway.add_org(code, "local_authority", ["query", "mediate"])
    roles = tmp_path_factory.mktemp("mediation") / "roles.json"
    write_private(roles, json.dumps(ROLES).encode())
    port, metrics, metadata = free_port(), free_port(), free_port()
    log = gateway.home / f"serve-mediation-{port}.log"
    write_private(log, b"")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--metrics-bind", f"127.0.0.1:{metrics}", "--metadata-bind", f"127.0.0.1:{metadata}",
             "--service-url", f"https://127.0.0.1:{port}"],
            env={**gateway.env(), "CONTACTGATE_ROLES_FILE": str(roles)}, stdout=out, stderr=subprocess.STDOUT)
    try:
        session = requests.Session()
        session.trust_env = False
        session.cert = (str(mediating / "cert.pem"), str(mediating / "key.pem"))
        deadline = time.monotonic() + 90
        while True:
            try:
                if session.get(f"https://127.0.0.1:{port}/healthz", verify=str(mediating / "ca.pem"), timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the second serve did not start:\n" + log.read_text())
            time.sleep(0.2)
        yield Serving(f"https://127.0.0.1:{port}", code, {"med": mediating, "la": gateway.certs["la"]})
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def child(clients):
    update = child_update(unique("obo-"), unique_name("Behalf"), "Ada", "2017-05-06")
    [result] = clients("la").submit_updates([update])
    return result["ChildId"], update


def _entries(gateway, **where) -> list[dict]:
    query = select(audit_log)
    for column, value in where.items():
        query = query.where(audit_log.c[column] == value)
    with gateway.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(audit_log.c.seq)).mappings()]


def test_a_mediator_reads_on_behalf_of_a_requester_limited_to_their_role_and_audited_naming_both(
        gateway, serving, child):
    child_id, update = child
    mediator = serving.client("med")
    user = unique("contact.team.")
    found = mediator.find_child(user_id=user, role="mediator", family_name=update["Identity"]["FamilyName"],
                                date_of_birth="2017-05-06", on_behalf_of=REQUESTER, **READ)
    assert [c["ChildId"] for c in found] == [child_id]
    shown = mediator.get_contacts(child_id, user_id=user, role="mediator", on_behalf_of=REQUESTER, **READ)
    # what a health visitor may see: the address and who is involved; no carers, no identifiers, no
    # practitioner's phone (the mediator's own role could see them all)
    assert shown["Address"] is not None and not shown["Carer"]
    [contact] = shown["Contact"]
    assert contact["Involvement"]["Phone"] is None
    entries = _entries(gateway, org_code=serving.code, user_id=user)
    assert [(e["operation"], e["outcome"]) for e in entries] == [("FindChild", "accepted"), ("GetContacts", "accepted")]
    behalf = json.loads(entries[1]["on_behalf_of"])
    assert behalf == {**REQUESTER, "role": "health visitor"}
    assert entries[1]["role"] == "mediator" and "fields=address,settings,practitioners" in entries[1]["detail"]
    report = gateway.cli("audit", "report", "--user", "Leeds Community Healthcare:jane smith", "--format", "json",
                         officer="auditor-1").output
    seqs = [json.loads(line)["seq"] for line in report.splitlines()]
    assert {e["seq"] for e in entries} <= set(seqs)
    table = gateway.cli("audit", "report", "--child", child_id, officer="auditor-1").output
    assert f"{serving.code}:{user} (mediator) on behalf of [Jane Smith (health visitor" in table
    # light use: the review rule (at its default thresholds) finds nothing about this mediator
    review = gateway.cli("audit", "review", "--since", entries[0]["at"][:10], "--rule", "mediated", "--json",
                         officer="auditor-1").output
    assert f"{serving.code}:{user}" not in review


def _schema_before_on_behalf_of(directory: Path) -> str:
    """The WSDL and XSD as they were before OnBehalfOf (its element removed), in ``directory``."""
    from contactgate_schemas import __path__ as schema_dir

    for name in ("contactgate.wsdl", "contactgate.xsd"):
        shutil.copy(f"{schema_dir[0]}/{name}", directory / name)
    tree = etree.parse(str(directory / "contactgate.xsd"))
    [element] = [e for e in tree.iter(f"{{{XS}}}element") if e.get("name") == "OnBehalfOf"]
    element.getparent().remove(element)
    tree.write(str(directory / "contactgate.xsd"))
    return str(directory / "contactgate.wsdl")


def test_a_strict_client_built_on_the_schema_before_on_behalf_of_is_unaffected(serving, child, tmp_path):
    child_id, update = child
    old = serving.client("la", wsdl=_schema_before_on_behalf_of(tmp_path))
    assert old.zeep.settings.strict
    found = old.find_child(user_id="old.client", role="social worker", family_name=update["Identity"]["FamilyName"],
                           date_of_birth="2017-05-06", **READ)
    assert [c["ChildId"] for c in found] == [child_id]
    shown = old.get_contacts(child_id, user_id="old.client", role="social worker", **READ)
    assert shown["Contact"][0]["Involvement"]["Phone"] == "0113 496 0002"  # a social worker's whole view


def _refused(client, operation: str, **call) -> tuple[str, str, str]:
    """(the fault's code, its message, the request id the audit entry carries)."""
    data = client.build_request(operation, **call)
    status, envelope = client.post_raw(operation, data)
    assert status == 500
    return (envelope.findtext(".//{urn:contactgate:v1}Code"), envelope.findtext(".//faultstring"),
            envelope.findtext(".//{urn:contactgate:v1}RequestId"))


def _call(user: str, role: str, behalf: dict, child_id: str) -> dict:
    return {"Requester": {"UserId": user, "Role": role, "OnBehalfOf": behalf},
            "Reason": {"_value_1": READ["reason_text"], "code": READ["reason_code"]}, "ChildId": child_id}


def _wire(**changes) -> dict:
    given = {**REQUESTER, **changes}
    return {"Name": given["name"], "Organisation": given["organisation"], "Role": given["role"],
            "Phone": given["phone"], "IdentityCheck": {"_value_1": given["identity_note"],
                                                       "code": given["identity_check"]}}


@pytest.mark.parametrize("who, role, behalf, fault, said", [
    ("la", "mediator", {}, "ScopeDenied", "accredited for mediation (scope mediate)"),
    ("med", "social worker", {}, "ScopeDenied", "Requester/Role mediator"),
    ("med", "mediator", {"identity_note": "   "}, "SchemaInvalid",
     "what was done to check the requester's identity"),
    ("med", "mediator", {"name": "N" * 101}, "SchemaInvalid", "Name"),
    ("med", "mediator", {"role": "astronaut"}, "SchemaInvalid", "roles file"),
    ("med", "mediator", {"role": "Mediator"}, "SchemaInvalid", "cannot be mediator"),
])
def test_on_behalf_of_is_refused_clearly_audited_and_answers_nothing(gateway, serving, child, who, role, behalf,
                                                                     fault, said):
    child_id, _ = child
    user = unique("refused.")
    code, message, request_id = _refused(serving.client(who), "GetContacts",
                                         **_call(user, role, _wire(**behalf), child_id))
    assert code == fault and said in message, message
    [entry] = _entries(gateway, request_id=request_id)
    assert entry["outcome"] == "refused" and entry["fault_code"] == fault and entry["response_digest"]
    assert "contacts=" not in (entry["detail"] or "")


def test_on_behalf_of_is_refused_on_set_shielding(gateway, serving, child):
    child_id, _ = child
    user = unique("shield.")
    code, message, request_id = _refused(serving.client("med"), "SetShielding", Shielded=True,
                                         **_call(user, "mediator", _wire(), child_id))
    assert code == "ScopeDenied"  # (this organisation may not shield at all; one that may is refused too:
    [entry] = _entries(gateway, request_id=request_id)  # OnBehalfOf is for reads only, authorisation.py)
    assert entry["outcome"] == "refused" and entry["operation"] == "SetShielding"


@pytest.mark.parametrize("behalf, error, field", [
    ({k: v for k, v in REQUESTER.items() if k != "phone"}, MissingField, "OnBehalfOf.phone"),
    ({**REQUESTER, "name": "  "}, MissingField, "OnBehalfOf.name"),
    ({**REQUESTER, "nhs_number": "1"}, UnknownField, "OnBehalfOf.nhs_number"),
    ({**REQUESTER, "identity_check": "trust me"}, InvalidValue, "OnBehalfOf.identity_check"),
    ({**REQUESTER, "organisation": "O" * 101}, InvalidValue, "OnBehalfOf.organisation"),
    ({**REQUESTER, "phone": "ring me"}, InvalidValue, "OnBehalfOf.phone"),
])
def test_the_sdk_refuses_a_bad_on_behalf_of_before_sending(serving, behalf, error, field):
    client = serving.client("med")
    with pytest.raises(error) as raised:
        client.get_contacts("7K2M-9XD4-T1BZ-R8Q3", user_id="u", role="mediator", on_behalf_of=behalf, **READ)
    assert raised.value.field == field


def test_the_sdk_and_the_gateway_agree_on_the_identity_checks():
    from connectors.client import IDENTITY_CHECKS, ON_BEHALF_FIELDS
    from gateway.mediation import IDENTITY_CHECKS as gateway_checks, LIMITS

    assert list(IDENTITY_CHECKS) == list(gateway_checks) and ON_BEHALF_FIELDS == LIMITS
