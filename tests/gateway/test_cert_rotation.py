"""Certificate rotation without a refused message: an organisation holds two valid certificates
while its systems move from the old to the new; then the old one is revoked."""

from __future__ import annotations

import datetime as dt

import threading
import time

from connectors.client import GatewayUnreachable
from gateway.trust import pki
from tests.support import child_update, unique_name

WHO = dict(user_id="rotation.check", role="engineer")


def test_two_certificates_work_side_by_side_and_revoking_the_old_one_refuses_nothing_sent_with_the_new(gateway):
    code = unique_name("ROT").upper()
    old_dir = gateway.add_org(code, "local_authority", ["push", "query"])
    new_dir = gateway.issue_cert(code, f"{code.lower()}-new")
    old, new = gateway.client(code.lower()), gateway.client(f"{code.lower()}-new")
    refused, sent = [], []
    stop = threading.Event()

    def traffic():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                # each record a child of its own: no two share a birth date (else linkage may match them)
                born = (dt.date(2010, 1, 1) + dt.timedelta(days=29 * (i % 150))).isoformat()
                [result] = new.submit_updates([child_update(f"rot-{i}", unique_name("Rota"), "Kim", born)])
                sent.append(result["Outcome"])
            except Exception as exc:  # any refusal of the new certificate fails the test
                refused.append(repr(exc))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        assert old.ping(**WHO)["Organisation"] == code  # both at once
        fingerprint = pki.fingerprint(pki.load_cert_pem((old_dir / "cert.pem").read_bytes()))
        gateway.cli("cert", "revoke", fingerprint, "--reason", "rotated")
        time.sleep(1.5)
    finally:
        stop.set()
        worker.join(30)
    assert refused == [] and sent and set(sent) == {"created"}
    assert new.ping(**WHO)["Organisation"] == code
    seq = gateway.audit_seq()
    try:
        gateway.client(code.lower()).ping(**WHO)
        raise AssertionError("the revoked old certificate still works")
    except GatewayUnreachable:
        pass
    gateway.settle_audit(seq)  # the refused handshake is audited in the background
