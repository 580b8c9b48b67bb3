"""zeep with python-xmlsec used directly, as an integrator on Python would: zeep's own
`BinarySignature` / `Signature` with RSA-SHA256 and SHA-256, plus a wsu:Timestamp added first (zeep
signs a Timestamp only if one is already in the header), over a requests session that presents the
organisation's TLS certificate, with the WSDL read from the live gateway.

zeep verifies a response with the client's own certificate (zeep #822); the gateway signs with its
own key, so `verify` here checks the response with the gateway's signing certificate instead, using
zeep's own xmlsec verification.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import requests
import xmlsec
import zeep
from zeep.transports import Transport
from zeep.wsse.signature import BinarySignature, Signature, _make_verify_key, _verify_envelope_with_key
from zeep.wsse.utils import WSU, get_security_header, get_timestamp


def _add_timestamp(envelope, created: dt.datetime | None, lifetime_s: int) -> None:
    created = created or dt.datetime.now(dt.timezone.utc)
    expires = created + dt.timedelta(seconds=lifetime_s)
    get_security_header(envelope).append(WSU.Timestamp(
        WSU.Created(get_timestamp(created, zulu_timestamp=True)),
        WSU.Expires(get_timestamp(expires, zulu_timestamp=True))))


def signature_plugin(base: type, key_file: Path, cert_file: Path, gateway_signing_cert: Path, *,
                     signature_method=xmlsec.Transform.RSA_SHA256, digest_method=xmlsec.Transform.SHA256,
                     timestamp: bool = True, created: dt.datetime | None = None, lifetime_s: int = 300):
    """zeep's ``base`` (BinarySignature or Signature), with a Timestamp added before signing."""

    class TimestampedSignature(base):
        def apply(self, envelope, headers):
            if timestamp:
                _add_timestamp(envelope, created, lifetime_s)
            return super().apply(envelope, headers)

        def verify(self, envelope):
            _verify_envelope_with_key(envelope, _make_verify_key(gateway_signing_cert.read_bytes()))
            return envelope

    return TimestampedSignature(str(key_file), str(cert_file), signature_method=signature_method,
                                digest_method=digest_method)


def zeep_client(gateway, client_name: str, *, binary_token: bool = True, **options) -> zeep.Client:
    directory = gateway.certs[client_name]
    session = requests.Session()
    session.cert = (str(directory / "cert.pem"), str(directory / "key.pem"))
    session.verify = str(directory / "ca.pem")
    session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace session.verify (requests #3829)
    wsse = signature_plugin(BinarySignature if binary_token else Signature, directory / "key.pem",
                            directory / "cert.pem", directory / "gateway-signing.pem", **options)
    return zeep.Client(f"{gateway.url}/soap/v1?wsdl", transport=Transport(session=session, timeout=60), wsse=wsse)


def fault_code(fault: zeep.exceptions.Fault) -> str | None:
    return fault.detail.findtext("{urn:contactgate:v1}Error/{urn:contactgate:v1}Code")
