"""A security key in software for the tests: answers a portal page's WebAuthn options the way a FIDO2
authenticator with "none" attestation and an ES256 key does (client data, authenticator data,
signature), so that tests over HTTPS, and the unit tests of the verification's refusals, use
py_webauthn's own structures without a browser. The browser tests use Chromium's virtual
authenticator instead."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import struct

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

OPTIONS = re.compile(r'data-options="([^"]*)"')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def page_options(page: str) -> dict:
    """The options a ceremony page holds in its form's data-options attribute."""
    return json.loads(html.unescape(OPTIONS.search(page).group(1)))


class SoftKey:
    def __init__(self, origin: str, *, counts: bool = True):
        self.origin = origin
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.counts = counts
        self.count = 0

    @property
    def id(self) -> str:
        return b64url(self.credential_id)

    def _client_data(self, kind: str, options: dict, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": options["challenge"], "origin": origin or self.origin,
                           "crossOrigin": False}).encode()

    def register(self, options: dict, *, origin: str | None = None, rp_id: str | None = None) -> str:
        numbers = self.private_key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
        auth_data = (hashlib.sha256((rp_id or options["rp"]["id"]).encode()).digest() + bytes([0x45])
                     + struct.pack(">I", 0) + bytes(16) + struct.pack(">H", len(self.credential_id))
                     + self.credential_id + cose)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key", "clientExtensionResults": {},
                           "response": {"clientDataJSON": b64url(self._client_data("webauthn.create", options, origin)),
                                        "attestationObject": b64url(attestation)}})

    def assertion(self, options: dict, *, origin: str | None = None, rp_id: str | None = None,
                  bad_signature: bool = False, count: int | None = None) -> str:
        if count is None:
            self.count += 1 if self.counts else 0
            count = self.count
        client_data = self._client_data("webauthn.get", options, origin)
        auth_data = hashlib.sha256((rp_id or options["rpId"]).encode()).digest() + bytes([0x05]) + struct.pack(">I", count)
        signature = self.private_key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        if bad_signature:  # what another key's signature over the same data is to this key: not its own
            signature = ec.generate_private_key(ec.SECP256R1()).sign(
                auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return json.dumps({"id": self.id, "rawId": self.id, "type": "public-key", "clientExtensionResults": {},
                           "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                                        "signature": b64url(signature)}})
