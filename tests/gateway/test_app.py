"""Keys, trust anchors, compiled schemas and parsers are built once per worker, never per message."""

from cryptography.hazmat.primitives import serialization
from lxml import etree

from contactgate_wire import wsse
from gateway.trust import pki
from tests.support import in_process_gateway

READ = {"Requester": {"UserId": "u1", "Role": "gp"}, "Reason": {"_value_1": "why", "code": "referral"},
        "FamilyName": "Nobody", "DateOfBirth": "2010-01-01"}


def test_no_key_schema_or_trust_store_is_loaded_per_message(tmp_path, monkeypatch):
    with in_process_gateway("sqlite", tmp_path, orgs={"HEALTH": ("health", ["query"])}) as gw:
        messages = [gw.clients["health"].build_request("FindChild", **READ) for _ in range(6)]

        def send(data):
            answer = gw.deliver("health", "FindChild", data)
            assert answer.status == 200, answer.body

        send(messages.pop())  # the first message on a thread builds that thread's parser and schema

        loads = []
        for target, name in ((wsse.EnvelopeSigner, "__init__"), (serialization, "load_pem_private_key"),
                             (etree, "XMLSchema"), (etree, "XMLParser"), (pki.TrustAnchors, "from_files")):
            original = getattr(target, name)
            monkeypatch.setattr(target, name, lambda *a, _o=original, _n=name, **k: loads.append(_n) or _o(*a, **k))

        for data in messages:
            send(data)
        assert loads == []
