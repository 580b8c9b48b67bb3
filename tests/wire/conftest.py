"""Key material for the WS-Security tests: a throwaway CA, and an RSA and an EC organisation
certificate under it, made once per test module."""

from __future__ import annotations

import pytest

from gateway.trust import pki


@pytest.fixture(scope="module")
def material() -> dict:
    """kind ("rsa", "ec") -> (private key PEM, certificate PEM, certificate)."""
    ca_key, ca_cert = pki.make_ca("Test CA")
    made = {}
    for kind, key in (("rsa", pki.new_rsa_key()), ("ec", pki.new_ec_key())):
        cert = pki.issue_org_cert(ca_key, ca_cert, "LA", "Local Authority", key.public_key())
        made[kind] = (pki.key_pem(key), pki.cert_pem(cert), cert)
    return made
