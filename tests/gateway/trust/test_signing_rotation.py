"""Rotating the gateway's response-signing key with a grace period, against the real server: a
client pinning the published bundle keeps working through every step; one pinning only the old
certificate is refused the first answer signed with the new key (it must not trust blindly)."""

import shutil

import pytest
from sqlalchemy import select

from connectors.client import ResponseNotTrusted
from gateway.db import audit_log
from gateway.trust import pki
from tests.support import unique_name, child_update, private_gateway, unique

BACKENDS = ["sqlite", "postgresql"]


def _pinning(gw, source: str, name: str, bundle: bytes) -> str:
    """A copy of ``source``'s client material that pins ``bundle``."""
    target = gw.home / "clients" / name
    shutil.copytree(gw.certs[source], target)
    pki.write_private(target / "gateway-signing.pem", bundle)  # in the home: 0600, or serve refuses
    gw.certs[name] = target
    return name


_DAYS = iter(range(1, 28))


def _push(client) -> str:
    """A new child each time (another name and birth date, so never a possible duplicate)."""
    dob = f"2015-03-{next(_DAYS):02d}"
    [result] = client.submit_updates([child_update(unique("SR-"), unique_name("Rotation"), unique_name("Ada"), dob)])
    return result["Outcome"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_signing_key_rotation_keeps_pinned_clients_working(backend, tmp_path):
    with private_gateway(backend, tmp_path / "home", orgs={"LA": ("local_authority", ["push"])}) as gw:
        old_only = _pinning(gw, "la", "old-only", pki.cert_pem(pki.load_cert_pem(
            (gw.certs["la"] / "gateway-signing.pem").read_bytes())))

        gw.cli("signing-key", "rotate", officer="senior-s")
        bundle = gw.cli("signing-key", "bundle", officer="senior-s").output.encode()
        assert len(pki.load_certs_pem(bundle)) == 2
        both = _pinning(gw, "la", "both", bundle)
        # Staged, not used: the gateway still signs with the current key, so everyone works.
        assert _push(gw.client(old_only)) == "created"
        assert _push(gw.client(both)) == "created"
        # A certificate issued now carries the whole bundle.
        fresh = gw.issue_cert("LA", "fresh")
        assert (fresh / "gateway-signing.pem").read_bytes() == bundle

        refused = gw.cli("signing-key", "promote", expect_ok=False, officer="senior-s")
        assert refused.exit_code == 2 and "grace period" in refused.output
        gw.cli("signing-key", "promote", "--grace-days", "0", officer="senior-s")
        gw.stop()
        gw.start(workers=1)  # the reload that puts the new key to use

        assert _push(gw.client(both)) == "created"
        assert _push(gw.client("fresh")) == "created"
        with pytest.raises(ResponseNotTrusted):
            _push(gw.client(old_only))

        refused = gw.cli("signing-key", "promote", "--grace-days", "0", expect_ok=False, officer="senior-s")
        assert refused.exit_code == 2 and "no signing key is staged" in refused.output
        gw.cli("signing-key", "retire", officer="senior-s")
        after = pki.load_certs_pem(gw.cli("signing-key", "bundle", officer="senior-s").output.encode())
        assert [pki.fingerprint(c) for c in after] == [pki.fingerprint(bundle_cert)
                                                       for bundle_cert in pki.load_certs_pem(bundle)[1:]]

        with gw.engine.connect() as conn:
            steps = conn.execute(select(audit_log.c.detail).where(audit_log.c.operation == "signing_key")
                                 .order_by(audit_log.c.seq)).scalars().all()
        assert [s.split(":")[0] for s in steps] == [
            "new signing key staged", "staged signing key promoted", "previous signing certificate retired"]
        assert gw.cli("audit", "verify").exit_code == 0


def test_discarded_key_is_never_published(tmp_path):
    with private_gateway("sqlite", tmp_path / "home", orgs={"LA": ("local_authority", ["push"])}) as gw:
        gw.cli("signing-key", "rotate", "--ec", officer="senior-s")
        status = gw.cli("signing-key", "status", officer="senior-s").output
        assert "staged" in status
        gw.cli("signing-key", "discard", officer="senior-s")
        assert len(pki.load_certs_pem(gw.cli("signing-key", "bundle", officer="senior-s").output.encode())) == 1
        refused = gw.cli("signing-key", "retire", expect_ok=False, officer="senior-s")
        assert refused.exit_code == 2
