"""Signed checkpoints and exports verified offline (issue 10, item 4): `audit verify` signs its
checkpoint with the gateway's signing key; `audit export` writes a period's entries with their links
and the signed checkpoints; `audit verify --file --cert gateway-signing.pem` checks it with the
certificate alone, and refuses every edit (altered, removed, added, reordered, cut, forged, signed
by another key). Also the FHIR form. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import update

from gateway.audit import checkpoints, export
from gateway.cli import main
from gateway.db import audit_log
from contactgate_local import LocalGateway
from gateway.trust import pki

TODAY = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")


@pytest.fixture
def home(tmp_path, database_url):
    gw = LocalGateway(home=tmp_path / "home", database_url=database_url)
    gw.cli("init")
    for n in range(4):
        gw.cli("org", "add", f"EX{n}", "--name", f"Export {n}", "--kind", "other")
    return gw


def engine_of(home):
    from gateway.db import make_engine

    return make_engine(home.database_url, keys=home.home / "keys" / "data-keys.json")


def offline(*args: str, home_dir: str = "/nonexistent/contactgate-home"):
    """`contactgate audit verify ARGS` somewhere with no home and no database."""
    return CliRunner().invoke(main, ["--home", home_dir, "audit", "verify", *args], catch_exceptions=False)


def exported(home, path, *extra):
    home.cli("audit", "export", "--since", TODAY, "--out", str(path), *extra, officer="auditor-1")
    return json.loads(path.read_text())


def test_each_checkpoint_is_signed_with_the_gateways_signing_key(home):
    home.cli("audit", "verify")
    line = (home.home / "audit" / "checkpoints").read_text().splitlines()[-1].split()
    assert len(line) == 5
    signed = json.loads(base64.urlsafe_b64decode(line[4]))
    certs = pki.load_certs_pem(pki_bundle(home))
    assert checkpoints.signature_problem(signed, certs) is None
    assert signed["claims"]["seq"] == int(line[0]) and signed["claims"]["public_hash"] == line[3]


def pki_bundle(home) -> bytes:
    from gateway.config import HomeLayout
    from gateway.trust import signing_keys

    return signing_keys.bundle_pem(HomeLayout(home.home))


def test_an_export_verifies_offline_with_the_certificate_alone(home, tmp_path):
    home.cli("audit", "verify")  # a signed checkpoint inside the period
    document = exported(home, tmp_path / "export.json")
    (tmp_path / "gateway-signing.pem").write_bytes(pki_bundle(home))
    result = offline("--file", str(tmp_path / "export.json"), "--cert", str(tmp_path / "gateway-signing.pem"))
    assert result.exit_code == 0, result.output
    assert f"export intact: {len(document['entries'])} entries" in result.output
    assert "2 earlier signed checkpoint(s) agree" in result.output  # ours, and the export's own verification
    assert oct((tmp_path / "export.json").stat().st_mode & 0o777) == "0o600"
    with engine_of(home).connect() as conn:  # the export itself is audited, with the file's digest
        [entry] = conn.execute(audit_log.select().where(audit_log.c.operation == "audit.export")).all()
    assert entry.user_id == "auditor-1" and export.digest_of((tmp_path / "export.json").read_bytes()) in entry.detail


def _edits():
    def alter(d):
        d["entries"][1]["detail"] = "nothing to see"

    def remove(d):
        del d["entries"][2]

    def add(d):
        d["entries"].insert(2, copy.deepcopy(d["entries"][2]))

    def reorder(d):
        d["entries"][1], d["entries"][2] = d["entries"][2], d["entries"][1]

    def cut_tail(d):
        d["entries"].pop()

    def cut_tail_and_claim(d):  # the signed count cannot be edited without breaking the signature
        d["entries"].pop()
        d["export"]["claims"]["count"] -= 1
        d["export"]["claims"]["last_seq"] -= 1

    def forged_checkpoint(d):
        d["checkpoints"][0]["claims"]["public_hash"] = "0" * 64

    def _forger():
        key, cert = pki.make_ca("Forger CA", key=ec.generate_private_key(ec.SECP256R1()))
        return checkpoints.CheckpointSigner(pki.key_pem(key), pki.cert_pem(cert))

    def other_key(d):
        d["entries"][1]["detail"] = "rewritten"
        d["export"] = _forger().sign(d["export"]["claims"])

    def other_key_claiming_the_gateways(d):
        gateway_fp = d["export"]["signer"]
        d["export"] = _forger().sign(d["export"]["claims"])
        d["export"]["signer"] = gateway_fp

    return [alter, remove, add, reorder, cut_tail, cut_tail_and_claim, forged_checkpoint, other_key,
            other_key_claiming_the_gateways]


@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_an_edited_export_is_refused(home, tmp_path, edit):
    home.cli("audit", "verify")
    document = exported(home, tmp_path / "export.json")
    edit(document)
    (tmp_path / "edited.json").write_text(json.dumps(document))
    (tmp_path / "gateway-signing.pem").write_bytes(pki_bundle(home))
    result = offline("--file", str(tmp_path / "edited.json"), "--cert", str(tmp_path / "gateway-signing.pem"))
    assert result.exit_code == 1, result.output
    assert "export NOT intact" in result.output


def test_offline_verify_exit_codes_for_usage_and_missing_files(home, tmp_path):
    exported(home, tmp_path / "export.json")
    assert offline("--file", str(tmp_path / "export.json")).exit_code == 2
    (tmp_path / "gateway-signing.pem").write_bytes(pki_bundle(home))
    missing = offline("--file", str(tmp_path / "nope.json"), "--cert", str(tmp_path / "gateway-signing.pem"))
    assert missing.exit_code == 3 and "could not check" in missing.output
    (tmp_path / "not-a-cert.pem").write_text("hello")
    assert offline("--file", str(tmp_path / "export.json"), "--cert", str(tmp_path / "not-a-cert.pem")).exit_code == 3
    (tmp_path / "garbage.json").write_text("{not json")
    assert offline("--file", str(tmp_path / "garbage.json"), "--cert",
                   str(tmp_path / "gateway-signing.pem")).exit_code == 1


def test_a_broken_chain_is_not_exported(home, tmp_path):
    with engine_of(home).begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(detail="rewritten"))
    result = home.cli("audit", "export", "--since", TODAY, "--out", str(tmp_path / "export.json"),
                      officer="auditor-1", expect_ok=False)
    assert result.exit_code == 1 and "BROKEN at entry 2" in result.output
    assert not (tmp_path / "export.json").exists()


def test_export_needs_an_auditor_and_writes_over_nothing(home, tmp_path):
    refused = home.cli("audit", "export", "--since", TODAY, "--out", str(tmp_path / "e.json"), officer="dora",
                       expect_ok=False)
    assert refused.exit_code == 2 and "auditor" in refused.output
    (tmp_path / "e.json").write_text("keep me")
    again = home.cli("audit", "export", "--since", TODAY, "--out", str(tmp_path / "e.json"), officer="auditor-1",
                     expect_ok=False)
    assert again.exit_code == 2 and (tmp_path / "e.json").read_text() == "keep me"


def test_the_fhir_export_is_a_valid_bundle_of_audit_events(home, tmp_path):
    from fhir.resources.R4B.auditevent import AuditEvent
    from fhir.resources.R4B.bundle import Bundle

    native = exported(home, tmp_path / "native.json")
    bundle = exported(home, tmp_path / "fhir.json", "--format", "fhir")
    Bundle.model_validate(bundle)
    events = [AuditEvent.model_validate(e["resource"]) for e in bundle["entry"]]
    assert len(events) >= len(native["entries"])  # the first export's own entry comes after it
    by_id = {e.id: e for e in events}
    first = native["entries"][0]
    assert by_id[f"cg-{first['seq']}"].recorded is not None
    officer_entries = [e for e in events if e.subtype[0].code == "org.add"]
    assert officer_entries and all(e.agent[0].requestor for e in officer_entries)
