"""`contactgate org check`: the onboarding check reports each stage, and on a deliberately broken
set-up names the stage that fails, why, and the fix (against the running session gateway)."""

from __future__ import annotations

import json

import pytest

from contactgate_local import free_port
from gateway.trust import pki


def check(gateway, code, name, *, key_of=None, url=None, ca=None, ok=True):
    directory = gateway.certs[name]
    args = ["org", "check", code, "--cert", str(directory / "cert.pem"),
            "--key", str(gateway.certs[key_of or name] / "key.pem"), "--url", url or gateway.url, "--json"]
    if ca:
        args += ["--ca", str(ca)]
    result = gateway.cli(*args, expect_ok=False)
    assert result.exit_code == (0 if ok else 1), result.output
    return {s["name"]: s for s in json.loads(result.output)}


def failing(stages):
    return [name for name, s in stages.items() if s["status"] == "fail"]


def test_a_clean_set_up_passes_every_stage(gateway):
    stages = check(gateway, "LA", "la")
    assert failing(stages) == [] and len(stages) == 11
    assert "push, query" in stages["scopes"]["detail"]
    assert stages["clock skew"]["status"] == "pass"


def test_the_wrong_key_for_the_certificate(gateway):
    stages = check(gateway, "LA", "la", key_of="health", ok=False)
    assert failing(stages)[0] == "certificate and key" and stages["certificate and key"]["fix"]


def test_a_certificate_of_another_organisation(gateway):
    stages = check(gateway, "LA", "health", ok=False)
    assert "registered to HEALTH" in stages["registered"]["detail"]


def test_a_revoked_certificate(gateway):
    seq = gateway.audit_seq()
    stages = check(gateway, "LA", "la_revoked", ok=False)
    gateway.settle_audit(seq)  # the refused handshake's audit row, written in the background
    assert stages["registered"]["status"] == "fail" and "revoked" in stages["registered"]["detail"]
    assert stages["client certificate"]["status"] == "fail"  # the CRL refuses it at the handshake
    assert stages["Ping"]["status"] == "not run"


def test_an_unregistered_certificate(gateway, tmp_path):
    from gateway.config import Settings
    from gateway.home import load_ca

    ca_key, ca_cert = load_ca(Settings.from_env({}, home=str(gateway.home), database_url=gateway.database_url))
    key = pki.new_ec_key()
    directory = tmp_path / "unregistered"
    directory.mkdir()
    pki.write_private(directory / "key.pem", pki.key_pem(key))
    pki.write_public(directory / "cert.pem", pki.cert_pem(pki.issue_org_cert(ca_key, ca_cert, "LA", "LA", key.public_key())))
    gateway.certs["unregistered"] = directory
    stages = check(gateway, "LA", "unregistered", ok=False)
    assert "not registered" in stages["registered"]["detail"] and "cert register" in stages["registered"]["fix"]


@pytest.mark.parametrize("code, status", [("SUSP", "suspended"), ("EXPIRED", "expired"), ("PENDING", "pending_approval")])
def test_an_accreditation_not_in_force(gateway, code, status):
    stages = check(gateway, code, code.lower(), ok=False)
    assert stages["accreditation"]["status"] == "fail" and stages["accreditation"]["detail"].startswith(status)
    assert stages["accreditation"]["fix"]
    assert "NotAccredited" in stages["Ping"]["detail"]


def test_nothing_listening(gateway):
    stages = check(gateway, "LA", "la", url=f"https://127.0.0.1:{free_port()}", ok=False)
    assert stages["TCP"]["status"] == "fail" and "contactgate serve" in stages["TCP"]["fix"]
    assert {stages[n]["status"] for n in ("server certificate", "Ping", "scopes")} == {"not run"}


def test_a_server_certificate_from_another_ca(gateway, tmp_path):
    _, foreign = pki.make_ca("Some other CA")
    pki.write_public(tmp_path / "other-ca.pem", pki.cert_pem(foreign))
    stages = check(gateway, "LA", "la", ca=tmp_path / "other-ca.pem", ok=False)
    assert stages["server certificate"]["status"] == "fail" and "--ca" in stages["server certificate"]["fix"]
    assert stages["Ping"]["status"] == "not run"
