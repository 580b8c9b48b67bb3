"""`contactgate init`: the gateway's home (CA, server TLS certificate, response-signing key,
database schema). Safe to run twice: what exists is kept, the schema is brought up to date."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit import new_key
from gateway.config import Settings
from gateway.db import migrate
from gateway.trust import pki


@dataclass
class InitReport:
    created: list[str]
    kept: list[str]


def init_home(settings: Settings, server_names: list[str] | None = None) -> InitReport:
    layout = settings.layout
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.trusted_cas_dir.mkdir(parents=True, exist_ok=True)
    report = InitReport([], [])

    if layout.ca_cert.exists() and layout.ca_key.exists():
        ca_key = pki.load_key_pem(layout.ca_key.read_bytes())
        ca_cert = pki.load_cert_pem(layout.ca_cert.read_bytes())
        report.kept.append("gateway CA")
    else:
        ca_key, ca_cert = pki.make_ca()
        pki.write_private(layout.ca_key, pki.key_pem(ca_key))
        pki.write_public(layout.ca_cert, pki.cert_pem(ca_cert))
        report.created.append("gateway CA")

    if layout.server_cert.exists() and layout.server_key.exists() and not server_names:
        report.kept.append("server TLS certificate")
    else:
        key, cert = pki.issue_server_cert(ca_key, ca_cert, server_names or [])
        pki.write_private(layout.server_key, pki.key_pem(key))
        pki.write_public(layout.server_cert, pki.cert_pem(cert))
        report.created.append("server TLS certificate")

    if layout.signing_cert.exists() and layout.signing_key.exists():
        report.kept.append("response-signing key")
    else:
        key, cert = pki.issue_signing_cert(ca_key, ca_cert)
        pki.write_private(layout.signing_key, pki.key_pem(key))
        pki.write_public(layout.signing_cert, pki.cert_pem(cert))
        report.created.append("response-signing key")

    if layout.audit_key.exists():
        report.kept.append("audit chain key")
    else:
        pki.write_private(layout.audit_key, new_key())
        report.created.append("audit chain key")

    migrate(settings.database_url)
    report.created.append("database schema (migrated to head)")
    return report


def load_ca(settings: Settings):
    layout = settings.layout
    if not layout.ca_key.exists():
        raise FileNotFoundError(f"no gateway CA under {layout.root}: run `contactgate init` first")
    return pki.load_key_pem(layout.ca_key.read_bytes()), pki.load_cert_pem(layout.ca_cert.read_bytes())
