"""Issuing an organisation's certificate from the gateway CA: from its CSR (checked: key strength,
the organisation named), or with a new key pair and the files a client needs. Shared by `cert
issue` (which writes the files) and the console (which sends them); both register the certificate
only once its files are made (gateway.trust.registry.register_cert)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from gateway.config import Settings
from gateway.home import load_ca
from gateway.trust import pki, signing_keys


class IssueError(ValueError):
    """Why no certificate can be issued (said to the officer)."""


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    files: dict[str, bytes]  # file name -> content: cert.pem alone for a CSR; else key, cert, ca, gateway-signing
    secret: frozenset[str]  # the names that hold a private key


def issue(settings: Settings, org, csr_pem: bytes | None = None, ca=None) -> Issued:
    """A certificate for ``org`` (a registry.Organisation), signed by the gateway CA (``ca``: its
    (key, certificate) when the caller holds them already, else read from the home)."""
    if org.status == "revoked":
        raise IssueError(f"organisation {org.code} is revoked")
    ca_key, ca_cert = ca or load_ca(settings)
    if csr_pem is not None:
        try:
            request = pki.load_csr(csr_pem)
        except ValueError as exc:
            raise IssueError(f"unreadable CSR: {exc}") from None
        problem = pki.csr_problem(request, org.code)
        if problem:
            raise IssueError(problem)
        certificate = pki.issue_org_cert(ca_key, ca_cert, org.code, org.name, request.public_key())
        return Issued(certificate, {"cert.pem": pki.cert_pem(certificate)}, frozenset())
    key = pki.new_rsa_key()
    certificate = pki.issue_org_cert(ca_key, ca_cert, org.code, org.name, key.public_key())
    return Issued(certificate, {"key.pem": pki.key_pem(key), "cert.pem": pki.cert_pem(certificate),
                                "ca.pem": pki.cert_pem(ca_cert),
                                "gateway-signing.pem": signing_keys.bundle_pem(settings.layout)},
                  frozenset({"key.pem"}))
