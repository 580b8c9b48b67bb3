"""The WSDL publishes the WS-SecurityPolicy the gateway enforces, and still loads in zeep (the SDK
uses the packaged WSDL). node-soap and zeep reading it from the live gateway: tests/interop."""

from __future__ import annotations

from importlib import resources

import zeep
from lxml import etree

import contactgate_schemas as schemas

WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSP = "http://www.w3.org/ns/ws-policy"
SP = "http://docs.oasis-open.org/ws-sx/ws-securitypolicy/200702"
WSU_ID = "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd}Id"
NS = {"wsdl": WSDL, "wsp": WSP, "sp": SP}


def _wsdl() -> etree._Element:
    return etree.fromstring(schemas.read(schemas.WSDL_NAME))


def _policy(wsdl: etree._Element, reference: etree._Element) -> etree._Element:
    uri = reference.get("URI")
    assert uri.startswith("#")
    [policy] = [p for p in wsdl.findall("wsp:Policy", NS) if p.get(WSU_ID) == uri[1:]]
    return policy


def test_binding_policy_is_an_asymmetric_x509_binding_with_a_signed_timestamp():
    wsdl = _wsdl()
    [binding] = wsdl.findall("wsdl:binding", NS)
    [reference] = binding.findall("wsp:PolicyReference", NS)
    policy = _policy(wsdl, reference)
    asymmetric = policy.find("wsp:ExactlyOne/wsp:All/sp:AsymmetricBinding/wsp:Policy", NS)
    assert asymmetric is not None
    for token in ("sp:InitiatorToken", "sp:RecipientToken"):
        x509 = asymmetric.find(f"{token}/wsp:Policy/sp:X509Token", NS)
        assert x509.find("wsp:Policy/sp:WssX509V3Token10", NS) is not None
    assert asymmetric.find("sp:InitiatorToken/wsp:Policy/sp:X509Token", NS).get(f"{{{SP}}}IncludeToken") == (
        f"{SP}/IncludeToken/AlwaysToRecipient")
    assert asymmetric.find("sp:AlgorithmSuite/wsp:Policy/sp:Basic256Sha256", NS) is not None
    assert asymmetric.find("sp:IncludeTimestamp", NS) is not None
    assert asymmetric.find("sp:OnlySignEntireHeadersAndBody", NS) is not None


def test_every_message_of_every_operation_signs_the_body():
    wsdl = _wsdl()
    operations = wsdl.findall("wsdl:binding/wsdl:operation", NS)
    assert {o.get("name") for o in operations} == {"SubmitUpdates", "FindChild", "GetContacts", "SetShielding", "Ping"}
    for operation in operations:
        for message in ("wsdl:input", "wsdl:output"):
            [reference] = operation.findall(f"{message}/wsp:PolicyReference", NS)
            policy = _policy(wsdl, reference)
            assert policy.find("wsp:ExactlyOne/wsp:All/sp:SignedParts/sp:Body", NS) is not None


def test_the_policy_text_names_what_the_gateway_checks():
    text = schemas.read(schemas.WSDL_NAME).decode()
    for fact in ("RSA-SHA256", "SHA-256", "SHA-1 is refused", "exclusive C14N", "enveloped-signature",
                 "Created + 5 minutes"):
        assert fact in text


def test_packaged_wsdl_with_the_policy_still_loads_in_zeep():
    path = str(resources.files("contactgate_schemas").joinpath(schemas.WSDL_NAME))
    client = zeep.Client(path)
    service = client.bind("ContactGateService", "ContactGatePort")
    assert {name for name in dir(service)} >= {"SubmitUpdates", "FindChild", "GetContacts"}
    envelope = client.create_message(service, "GetContacts", Requester={"UserId": "u", "Role": "r"},
                                     ChildId="0000-0000-0000-0000")
    assert envelope.find(".//{urn:contactgate:v1}GetContacts") is not None
