"""Sign SOAP envelopes the way other WS-Security stacks do, with python-xmlsec directly: chosen
algorithms, reference transforms and references (zeep's helpers fix the transforms to exclusive
C14N). Used by the security unit tests and the attack tests to build what an integrator's client
might send.
"""

from __future__ import annotations

import datetime as dt

import xmlsec
from lxml import etree
from zeep.wsse.utils import ensure_id

from contactgate_wire import wsse
from contactgate_wire.soap import DS, SOAP_ENV, WSSE, WSU, q

EXC_C14N = xmlsec.Transform.EXCL_C14N
ENVELOPED = xmlsec.Transform.ENVELOPED
BST_VALUE_TYPE = wsse.X509V3


def xmlsec_key(key_pem: bytes, cert_pem: bytes) -> xmlsec.Key:
    key = xmlsec.Key.from_memory(key_pem, xmlsec.KeyFormat.PEM, None)
    key.load_cert_from_memory(cert_pem, xmlsec.KeyFormat.PEM)
    return key


def organisation_key(gateway, name: str) -> xmlsec.Key:
    """An organisation's private key with its certificate, from its directory in a test gateway's
    home, as zeep's signing helpers take it."""
    directory = gateway.certs[name]
    return xmlsec_key((directory / "key.pem").read_bytes(), (directory / "cert.pem").read_bytes())


def sign(envelope: etree._Element, key: xmlsec.Key, *, method=xmlsec.Transform.RSA_SHA256,
         digest=xmlsec.Transform.SHA256, transforms=(EXC_C14N,), timestamp_transforms=None,
         sign_body: bool = True, sign_timestamp: bool = True, add_timestamp: bool = True,
         created: dt.datetime | None = None, lifetime_s: int = 300, binary_token: bool = True,
         inclusive_prefixes: str | None = None, signed_info_prefixes: str | None = None) -> etree._Element:
    """Add a Timestamp (unless ``add_timestamp`` is False), then a ds:Signature after it in
    wsse:Security over the chosen elements, each reference with ``transforms`` (the Timestamp's
    with ``timestamp_transforms`` if given; an ec:InclusiveNamespaces PrefixList in each exclusive
    C14N transform if ``inclusive_prefixes``, and in SignedInfo's CanonicalizationMethod if
    ``signed_info_prefixes``). In place; returns the envelope."""
    security = wsse.security_header(envelope)
    if add_timestamp:
        wsse.add_timestamp(envelope, created=created, lifetime_s=lifetime_s)
    signature = xmlsec.template.create(envelope, xmlsec.Transform.EXCL_C14N, method)
    if signed_info_prefixes:
        xmlsec.template.transform_add_c14n_inclusive_namespaces(
            signature.find(f"{q(DS, 'SignedInfo')}/{q(DS, 'CanonicalizationMethod')}"), signed_info_prefixes)
    key_info = xmlsec.template.ensure_key_info(signature)
    x509_data = xmlsec.template.add_x509_data(key_info)
    xmlsec.template.x509_data_add_certificate(x509_data)
    security.append(signature)
    ctx = xmlsec.SignatureContext()
    ctx.key = key
    targets = []
    if sign_body:
        targets.append((envelope.find(q(SOAP_ENV, "Body")), transforms))
    timestamp = security.find(q(WSU, "Timestamp"))
    if sign_timestamp and timestamp is not None:
        targets.append((timestamp, timestamp_transforms or transforms))
    for target, target_transforms in targets:
        node_id = ensure_id(target)
        ctx.register_id(target, "Id", WSU)
        reference = xmlsec.template.add_reference(signature, digest, uri="#" + node_id)
        for transform in target_transforms:
            node = xmlsec.template.add_transform(reference, transform)
            if inclusive_prefixes and transform == EXC_C14N:
                xmlsec.template.transform_add_c14n_inclusive_namespaces(node, inclusive_prefixes)
    ctx.sign(signature)
    token_reference = etree.SubElement(key_info, q(WSSE, "SecurityTokenReference"))
    if binary_token:
        token = etree.Element(q(WSSE, "BinarySecurityToken"),
                              {"ValueType": BST_VALUE_TYPE, "EncodingType": wsse.BASE64})
        token.text = x509_data.find(q(DS, "X509Certificate")).text
        etree.SubElement(token_reference, q(WSSE, "Reference"),
                         {"ValueType": BST_VALUE_TYPE, "URI": "#" + ensure_id(token)})
        security.insert(0, token)
        key_info.remove(x509_data)
    else:
        token_reference.append(x509_data)
    return envelope


def to_bytes(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
