"""`contactgate init --signing-key ec`: the gateway signs its answers with ECDSA P-256 (about twenty
times cheaper than RSA-2048), the SDK pins and verifies them, and RSA stays the default."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from contactgate_local import LocalGateway
from contactgate_wire.certificates import load_cert_pem
from contactgate_wire.soap import DS
from tests.support import child_update, unique_name

ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"


@pytest.fixture(scope="module")
def ec_gateway(tmp_path_factory):
    gateway = LocalGateway(home=tmp_path_factory.mktemp("ec-home"))
    made = gateway.cli("init", "--signing-key", "ec")
    assert "created  response-signing key (ECDSA P-256)" in made.output
    gateway.add_org("LA", "local_authority", ["push", "query"])
    gateway.start(workers=1)
    try:
        yield gateway
    finally:
        gateway.stop()


def test_answers_are_signed_with_ecdsa_and_verified_by_the_sdk(ec_gateway):
    assert isinstance(load_cert_pem((ec_gateway.certs["la"] / "gateway-signing.pem").read_bytes()).public_key(),
                      ec.EllipticCurvePublicKey)
    la = ec_gateway.client("la")
    [created] = la.submit_updates([child_update("ec-1", unique_name("Ec"), "Ada", "2016-03-04")])
    assert created.outcome == "created"
    message = la.build_request("Ping", Requester={"UserId": "it", "Role": "onboarding"})
    status, answer = la.post_raw("Ping", message)  # the signature, pin and digest checked
    assert status == 200
    assert answer.find(f".//{{{DS}}}SignatureMethod").get("Algorithm") == ECDSA_SHA256


def test_init_keeps_an_existing_key_and_rsa_is_the_default(ec_gateway, tmp_path):
    again = ec_gateway.cli("init", "--signing-key", "rsa")
    assert "kept     response-signing key" in again.output  # an existing key is rotated, not replaced by init
    rsa_home = LocalGateway(home=tmp_path / "rsa-home")
    assert "created  response-signing key (RSA-2048)" in rsa_home.cli("init").output
    cert = load_cert_pem((rsa_home.home / "signing" / "cert.pem").read_bytes())
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048
