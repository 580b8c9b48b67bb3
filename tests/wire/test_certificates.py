"""Chain checks of client certificates are remembered per certificate only while they hold: inside
the leaf's and its issuer's validity, for the same trust anchors; failures are never remembered."""

from __future__ import annotations

import datetime as dt

import pytest

from contactgate_wire.certificates import ChainError, TrustAnchors
from gateway.trust import pki


@pytest.fixture(scope="module")
def pki_pair():
    ca_key, ca_cert = pki.make_ca("Test CA")
    other_key, other_cert = pki.make_ca("Other CA")
    key = pki.new_ec_key()
    leaf = pki.issue_org_cert(ca_key, ca_cert, "LA", "Local authority", key.public_key(), days=30)
    return ca_cert, other_cert, leaf


def test_a_verified_certificate_is_not_checked_again_while_it_is_valid(pki_pair, monkeypatch):
    ca_cert, _, leaf = pki_pair
    anchors = TrustAnchors([ca_cert])
    calls = []
    real = anchors._verify_client_chain
    monkeypatch.setattr(anchors, "_verify_client_chain", lambda *a: (calls.append(a), real(*a)))
    now = dt.datetime.now(dt.timezone.utc)
    for _ in range(5):
        anchors.verify_client(leaf, at=now)
    assert len(calls) == 1
    with pytest.raises(ChainError):  # past the leaf's end: checked again, and refused
        anchors.verify_client(leaf, at=leaf.not_valid_after_utc + dt.timedelta(seconds=1))
    assert len(calls) == 2


def test_other_anchors_and_failures_are_not_remembered(pki_pair):
    ca_cert, other_cert, leaf = pki_pair
    TrustAnchors([ca_cert]).verify_client(leaf)
    untrusted = TrustAnchors([other_cert])
    for _ in range(2):
        with pytest.raises(ChainError):
            untrusted.verify_client(leaf)
    assert untrusted._verified == {}
