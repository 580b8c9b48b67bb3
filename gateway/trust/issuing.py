"""An organisation's certificate: what an officer proposes, and what is made when a second officer
approves it (gateway.trust.registry.propose_certificate / approve_certificate).

- **From the organisation's CSR** (the normal path): the organisation makes its key on its own
  machine (`contactgate csr`, in the contactgate-client distribution) and sends the CSR; the CSR is
  checked when proposed (key strength, the organisation named, its self-signature) and signed by
  the gateway CA when approved. No private key ever passes through the gateway.
- **With a key made by the gateway**, for an organisation that cannot make one: an explicit option
  of the CLI only (never the console). The key is made when the proposal is approved, exists only in
  memory and in a PKCS#12 bundle encrypted under a passphrase given to the organisation by another
  channel than the bundle. Neither officer alone holds both: the passphrase is made when the
  proposal is made, shown once to the proposer and kept sealed (the data keys) for the approval; the
  approver writes the bundle and never sees it.
- **Registering** a certificate from another trusted CA: the chain is checked when proposed and
  again when approved.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gateway.config import Settings
from gateway.home import load_ca
from gateway.trust import pki, signing_keys

# A passphrase the gateway makes for a bundle: 25 characters from a 31-letter alphabet (no 0/o, 1/l/i:
# 123 bits), in groups of five so it can be read out over a telephone.
_PASSPHRASE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
BUNDLE_NAME = "bundle.p12"


class IssueError(ValueError):
    """Why no certificate can be proposed or issued (said to the officer)."""


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: object | None = None  # the private key, only when the gateway made it


def csr_payload(org, csr_pem: bytes) -> dict:
    """The proposal to sign ``csr_pem`` for ``org`` (a registry.Organisation), checked now."""
    request = _checked_csr(org, csr_pem)
    public = request.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"key": "csr", "csr": csr_pem.decode("ascii", "replace"), "subject": request.subject.rfc4514_string(),
            "public_key_sha256": hashlib.sha256(public).hexdigest()}


def gateway_key_payload(vault) -> tuple[dict, str]:
    """The proposal to have the gateway make the key, and the bundle's passphrase: sealed in the
    payload for the approval, returned to be shown once to the proposer (never to the approver)."""
    passphrase, nonce = new_passphrase(), secrets.token_hex(16)
    return {"key": "gateway", "passphrase_nonce": nonce,
            "passphrase": vault.seal(passphrase, _passphrase_context(nonce))}, passphrase


def bundle_passphrase(vault, proposal) -> str:
    """The sealed passphrase of a gateway-key proposal, for writing its bundle (never shown)."""
    payload = proposal.payload
    return vault.open(payload["passphrase"], _passphrase_context(payload["passphrase_nonce"]))


def _passphrase_context(nonce: str) -> str:
    return f"proposals.bundle_passphrase|{nonce}"


def register_payload(certificate_pem: bytes, anchors: pki.TrustAnchors) -> dict:
    """The proposal to bind a certificate issued by another trusted CA (its chain checked now)."""
    certificate = chained(certificate_pem, anchors)
    info = pki.describe(certificate)
    return {"certificate": pki.cert_pem(certificate).decode(), "fingerprint": info["fingerprint"],
            "subject": info["subject"], "issuer": info["issuer"], "not_after": info["not_after"].isoformat()}


def made_on_approval(settings: Settings, *, anchors: pki.TrustAnchors | None = None, ca=None,
                     gateway_key_allowed: bool) -> tuple[callable, dict]:
    """``(make, made)`` for registry.approve_certificate: ``make(org, proposal)`` signs the CSR (or makes
    the key and signs it, only where ``gateway_key_allowed``), or re-checks the certificate to register,
    and returns the certificate; ``made["issued"]`` then holds the `Issued` (with the key, if made)."""
    made: dict = {}

    def make(org, proposal) -> x509.Certificate:
        payload = proposal.payload
        if proposal.kind == "cert_register":
            if anchors is None:
                raise IssueError("no trust anchors to check the certificate against")
            certificate = chained(payload["certificate"].encode(), anchors)
            made["issued"] = Issued(certificate)
            return certificate
        ca_key, ca_cert = ca or load_ca(settings)
        if payload.get("key") == "gateway":
            if not gateway_key_allowed:
                raise IssueError("a key made by the gateway is approved only with the CLI (`contactgate cert "
                                 f"approve {org.code} --proposal {proposal.id} --out-dir DIR`), which writes it "
                                 "in an encrypted bundle")
            key = pki.new_rsa_key()
            made["issued"] = Issued(pki.issue_org_cert(ca_key, ca_cert, org.code, org.name, key.public_key()), key)
            return made["issued"].certificate
        request = _checked_csr(org, payload["csr"].encode())
        certificate = pki.issue_org_cert(ca_key, ca_cert, org.code, org.name, request.public_key())
        made["issued"] = Issued(certificate)
        return certificate

    return make, made


def public_files(settings: Settings, issued: Issued) -> dict[str, bytes]:
    """What the organisation is sent beside its key: its certificate, the gateway CA (which also
    signed the server certificate) and the gateway's response-signing certificates."""
    _, ca_cert = load_ca(settings)
    return {"cert.pem": pki.cert_pem(issued.certificate), "ca.pem": pki.cert_pem(ca_cert),
            "gateway-signing.pem": signing_keys.bundle_pem(settings.layout)}


def new_passphrase() -> str:
    letters = "".join(secrets.choice(_PASSPHRASE_ALPHABET) for _ in range(25))
    return "-".join(letters[i:i + 5] for i in range(0, 25, 5))


def encrypted_bundle(settings: Settings, issued: Issued, org_code: str, passphrase: str) -> bytes:
    """A PKCS#12 file (the key, its certificate and the gateway CA), encrypted under ``passphrase``
    with AES-256 and PBKDF2 (readable by OpenSSL 1.1.1+, Java, .NET, and `contactgate unbundle`)."""
    if issued.key is None:
        raise IssueError("no key to bundle")
    _, ca_cert = load_ca(settings)
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(200_000)
                  .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                  .hmac_hash(hashes.SHA256())
                  .build(passphrase.encode()))
    return pkcs12.serialize_key_and_certificates(org_code.lower().encode(), issued.key, issued.certificate,
                                                 [ca_cert], encryption)


def _checked_csr(org, csr_pem: bytes) -> x509.CertificateSigningRequest:
    if org.status == "revoked":
        raise IssueError(f"organisation {org.code} is revoked")
    try:
        request = pki.load_csr(csr_pem)
    except ValueError as exc:
        raise IssueError(f"unreadable CSR: {exc}") from None
    problem = pki.csr_problem(request, org.code)
    if problem:
        raise IssueError(problem)
    return request


def chained(certificate_pem: bytes, anchors: pki.TrustAnchors) -> x509.Certificate:
    """The certificate in ``certificate_pem``, checked to chain to ``anchors`` as a client certificate."""
    try:
        certificate = pki.load_cert_pem(certificate_pem)
    except ValueError as exc:
        raise IssueError(f"unreadable certificate: {exc}") from None
    try:
        anchors.verify_client(certificate)
    except pki.ChainError as exc:
        raise IssueError(f"certificate does not chain to a trusted CA: {exc}") from None
    return certificate
