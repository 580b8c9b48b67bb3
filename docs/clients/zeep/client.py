"""ContactGate with zeep + python-xmlsec, without the SDK: the three operations, each answer's
signature checked against the pinned gateway-signing.pem and its RequestDigest against the bytes sent.

    pip install 'zeep[xmlsec]==4.3.3' xmlsec==1.3.17 lxml==6.1.3 requests==2.34.2
    CONTACTGATE_URL=https://gateway.example.org:8443 CONTACTGATE_CREDENTIALS=./leeds python client.py

CONTACTGATE_CREDENTIALS is the folder with key.pem, cert.pem, ca.pem and gateway-signing.pem;
CONTACTGATE_FAMILY_NAME (default "Example") names the child it submits and then looks up.
Read docs/clients/zeep/README.md for what differs from zeep's defaults.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import sys
import uuid
from pathlib import Path

import requests
import xmlsec
import zeep
from lxml import etree
from zeep.helpers import serialize_object
from zeep.transports import Transport
from zeep.wsse.signature import BinarySignature
from zeep.wsse.utils import WSU, get_security_header, get_timestamp

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"


class GatewaySignature(BinarySignature):
    """zeep's BinarySignature (the certificate as a BinarySecurityToken, which the gateway accepts
    today), with two changes from zeep's defaults, and a verify that checks the gateway's key."""

    def __init__(self, key: Path, cert: Path, gateway_signing: Path):
        # zeep's defaults are RSA-SHA1 and SHA-1: the gateway refuses SHA-1.
        super().__init__(str(key), str(cert), signature_method=xmlsec.Transform.RSA_SHA256,
                         digest_method=xmlsec.Transform.SHA256)
        # gateway-signing.pem holds up to three certificates (current, next, previous): any may sign.
        pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", gateway_signing.read_bytes(), re.S)
        self.gateway_keys = [xmlsec.Key.from_memory(pem, xmlsec.KeyFormat.CERT_PEM) for pem in pems]

    def apply(self, envelope, headers):
        # zeep signs a wsu:Timestamp only if one is already in the header: add it first.
        now = dt.datetime.now(dt.timezone.utc)
        get_security_header(envelope).append(WSU.Timestamp(
            WSU.Created(get_timestamp(now, zulu_timestamp=True)),
            WSU.Expires(get_timestamp(now + dt.timedelta(minutes=5), zulu_timestamp=True))))
        return super().apply(envelope, headers)

    def verify(self, envelope):
        # zeep's own verify uses the client's certificate (zeep #822): check the answer with the
        # pinned gateway-signing.pem, that it signs exactly its soap:Body (the one in the document,
        # a child of the Envelope) and the wsu:Timestamp of its Security header, and that this is fresh.
        fail = zeep.exceptions.SignatureVerificationFailed
        security = envelope.find(f"{{{SOAP}}}Header/{{{WSSE}}}Security")
        body = envelope.find(f"{{{SOAP}}}Body")
        timestamp = security.find(f"{{{WSU_NS}}}Timestamp") if security is not None else None
        signature = security.find(f"{{{DS}}}Signature") if security is not None else None
        if signature is None or timestamp is None or body is None:
            raise fail("the answer is not signed")
        body_id, timestamp_id = body.get(f"{{{WSU_NS}}}Id"), timestamp.get(f"{{{WSU_NS}}}Id")
        if len(envelope.findall(f".//{{{SOAP}}}Body")) != 1 or not body_id or not timestamp_id:
            raise fail("the answer's signature does not cover its Body and Timestamp")
        signed = {ref.get("URI") for ref in signature.iterfind(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")}
        if signed != {"#" + body_id, "#" + timestamp_id}:
            raise fail("the answer's signature does not cover its Body and Timestamp")
        now = dt.datetime.now(dt.timezone.utc)
        try:
            created, expires = (dt.datetime.fromisoformat(timestamp.findtext(f"{{{WSU_NS}}}{name}").replace("Z", "+00:00"))
                                for name in ("Created", "Expires"))
        except (AttributeError, ValueError):
            raise fail("the answer's Timestamp is unreadable") from None
        if not created - dt.timedelta(minutes=1) <= now < expires:  # a minute's clock skew
            raise fail("the answer's Timestamp has expired (or is in the future)")
        errors = []
        for key in self.gateway_keys:
            context = xmlsec.SignatureContext()
            context.key = key
            for node in (body, timestamp):
                context.register_id(node, "Id", WSU_NS)
            try:
                context.verify(signature)
                return envelope
            except xmlsec.Error as error:
                errors.append(str(error))
        raise fail(f"the answer's signature does not verify with gateway-signing.pem: {'; '.join(errors)}")


class RecordingTransport(Transport):
    """Keeps the exact bytes of the last request: the answer's RequestDigest is their SHA-256."""

    sent = b""

    def post(self, address, message, headers):
        self.sent = message
        return super().post(address, message, headers)

    def check_digest(self, answer) -> None:
        # RequestDigest is xs:base64Binary: zeep hands it over decoded, as bytes.
        if answer.RequestDigest != hashlib.sha256(self.sent).digest():
            sys.exit(f"RequestDigest {base64.b64encode(answer.RequestDigest).decode()} is not the SHA-256 of the request sent")


def main() -> None:
    url = os.environ["CONTACTGATE_URL"].rstrip("/")
    credentials = Path(os.environ["CONTACTGATE_CREDENTIALS"])
    family = os.environ.get("CONTACTGATE_FAMILY_NAME", "Example")

    session = requests.Session()
    session.cert = (str(credentials / "cert.pem"), str(credentials / "key.pem"))  # mutual TLS
    session.verify = str(credentials / "ca.pem")  # trust only the gateway CA
    session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace session.verify
    transport = RecordingTransport(session=session, timeout=60)
    wsse = GatewaySignature(credentials / "key.pem", credentials / "cert.pem", credentials / "gateway-signing.pem")
    client = zeep.Client(f"{url}/soap/v1?wsdl", transport=transport, wsse=wsse)

    requester = {"UserId": "zeep.example", "Role": "social worker"}
    reason = {"code": "referral", "_value_1": "new referral from the school"}

    answer = client.service.SubmitUpdates(ChildUpdate=[{
        "SourceRecordId": f"zeep-{uuid.uuid4()}",
        "Identity": {"FamilyName": family, "GivenName": ["Ada"], "DateOfBirth": "2016-05-04", "Gender": "female"},
        "Address": {"Line1": "1 Example Street", "Town": "Leeds", "Postcode": "LS1 1AA"},
        "Involvement": [{"Service": "Children's social care", "PractitionerName": "Sam Worker",
                         "Start": "2024-01-10", "CafAssessment": True, "LeadProfessional": False}],
    }])
    transport.check_digest(answer)
    [result] = answer.Result
    print(f"SubmitUpdates: Outcome={result.Outcome} ChildId={result.ChildId} [signature ok, RequestDigest ok]")

    answer = client.service.FindChild(Requester=requester, Reason=reason, FamilyName=family, DateOfBirth="2016-05-04")
    transport.check_digest(answer)
    candidates = serialize_object(answer, dict)["Candidate"]
    print(f"FindChild: ChildId={' '.join(c['ChildId'] for c in candidates)} [signature ok, RequestDigest ok]")

    answer = client.service.GetContacts(Requester=requester, Reason=reason, ChildId=candidates[0]["ChildId"])
    transport.check_digest(answer)
    print(f"GetContacts: ChildId={answer.Child.ChildId} FamilyName={answer.Child.Identity.FamilyName}"
          f" Contacts={len(answer.Child.Contact)} [signature ok, RequestDigest ok]")

    try:  # a fault is an answer too: signed, and named by its code
        client.service.GetContacts(Requester=requester, ChildId=candidates[0]["ChildId"])
    except zeep.exceptions.Fault as fault:
        code = fault.detail.findtext("{urn:contactgate:v1}Error/{urn:contactgate:v1}Code")
        print(f"GetContacts without a reason: fault {code} [signature ok]")


if __name__ == "__main__":
    try:
        main()
    except zeep.exceptions.Fault as fault:  # checked by GatewaySignature.verify before zeep raised it
        sys.exit(f"fault {fault.detail.findtext('{urn:contactgate:v1}Error/{urn:contactgate:v1}Code')}: {fault.message}"
                 " [signature ok]")
