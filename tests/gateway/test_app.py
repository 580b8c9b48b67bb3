"""Keys, trust anchors, compiled schemas and parsers are built once per worker, never per message."""

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from lxml import etree

from gateway.app import build_services
from gateway.config import Settings
from contactgate_local import LocalGateway
from gateway.pipeline import ReceivedBody, handle
from contactgate_wire import wsse
from gateway.trust import pki
from tests.support import sqlite_database

READ = {"Requester": {"UserId": "u1", "Role": "gp"}, "Reason": {"_value_1": "why", "code": "referral"},
        "FamilyName": "Nobody", "DateOfBirth": "2010-01-01"}


def test_no_key_schema_or_trust_store_is_loaded_per_message(tmp_path, monkeypatch):
    with sqlite_database() as url:
        home = LocalGateway(home=tmp_path, database_url=url)
        home.cli("init")
        client_dir = home.add_org("HEALTH", "health", ["query"])
        services = build_services(Settings(home=tmp_path, database_url=url))
        client = home.client("health")
        peer = pki.load_cert_pem((client_dir / "cert.pem").read_bytes()).public_bytes(serialization.Encoding.DER)
        messages = [client.build_request("FindChild", **READ) for _ in range(6)]

        def send(data):
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            answer = handle(ReceivedBody(data, len(data), digest), '"urn:contactgate:v1#FindChild"', peer, services)
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
        services.engine.dispose()
