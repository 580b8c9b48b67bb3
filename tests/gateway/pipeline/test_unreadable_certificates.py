"""Certificates that load but cannot be used, or do not load at all, in the places the gateway reads
one: the signature's BinarySecurityToken and the TLS client certificate (which a trusted proxy hands
on in Client-Cert, parsed by no TLS library first). cryptography raises InvalidVersion (not a
ValueError) for an unknown X.509 version and UnsupportedAlgorithm, lazily, for an unknown key
type: each must be a refusal of the contract, never an internal error (a property test flipping
bytes of a signed message found the first one answered Unavailable)."""

from __future__ import annotations

import base64
import re

import pytest
from lxml import etree

from contactgate_wire import wsse
from contactgate_wire.faults import SignatureInvalid
from contactgate_wire.soap import digest_b64, parse_untrusted
from gateway.pipeline import ReceivedBody, handle
from tests.support import child_update, in_process_gateway

V3 = b"\xa0\x03\x02\x01\x02"  # the TBSCertificate's explicit version: v3
RSA_KEY_OID = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"  # rsaEncryption


def version_10(der: bytes) -> bytes:
    assert V3 in der
    return der.replace(V3, b"\xa0\x03\x02\x01\x0a", 1)


def unknown_key_type(der: bytes) -> bytes:
    assert RSA_KEY_OID in der
    return der.replace(RSA_KEY_OID, RSA_KEY_OID[:-1] + b"\x09", 1)


SPOIL = {"version-10": version_10, "unknown-key-type": unknown_key_type}


def _with_token(data: bytes, spoil) -> bytes:
    """``data`` with its BinarySecurityToken's certificate spoiled (the signature no longer matters)."""
    match = re.search(rb"(<(?:\w+:)?BinarySecurityToken[^>]*>)([^<]+)(<)", data)
    der = base64.b64decode(b"".join(match.group(2).split()))
    return data[:match.start(2)] + base64.b64encode(spoil(der)) + data[match.end(2):]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with in_process_gateway("sqlite", tmp_path_factory.mktemp("unreadable") / "home",
                            orgs={"LA1": ("local_authority", ["push", "query"])}) as gw:
        yield gw


def _submit(gw) -> bytes:
    return gw.clients["la1"].build_request("SubmitUpdates", ChildUpdate=[child_update("u1", "Smith", "Ann", "2015-01-01")])


@pytest.mark.parametrize("spoil", list(SPOIL))
def test_an_unusable_certificate_in_the_signature_is_signature_invalid(gw, spoil):
    data = _with_token(_submit(gw), SPOIL[spoil])
    envelope = parse_untrusted(data)
    with pytest.raises(SignatureInvalid) as raised:
        wsse.verify(envelope, wsse.extract_signer_certificate(envelope))
    assert "certificate" in raised.value.public_message
    answer = gw.deliver("la1", "SubmitUpdates", data)
    assert answer.status != 503 and answer.fault_code in ("SignatureInvalid", "CertificateRejected")


@pytest.mark.parametrize("spoil", list(SPOIL))
def test_an_unusable_tls_client_certificate_is_certificate_rejected(gw, spoil):
    data = _submit(gw)
    peer = etree.fromstring(data)  # the organisation's own certificate, from its message
    token = next(peer.iter("{*}BinarySecurityToken")).text
    spoiled_peer = SPOIL[spoil](base64.b64decode("".join(token.split())))
    answer = handle(ReceivedBody(data, len(data), digest_b64(data)), '"urn:contactgate:v1#SubmitUpdates"',
                    spoiled_peer, gw.services)
    assert answer.status != 503 and answer.fault_code == "CertificateRejected"
