"""Certificates the gateway makes with `cryptography`: the gateway CA, server and signing
certificates, organisation certificates (new key or CSR), CRLs.

Fingerprints and chain validation against configured CAs are shared with the SDK
(`contactgate_wire.certificates`, named here as ``pki.fingerprint``, ``pki.TrustAnchors``...).
Revocation is the registry's job (`gateway.trust.registry`), consulted on every message.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contactgate_wire.certificates import (  # noqa: F401 -- the gateway names them as pki.*
    ChainError, TrustAnchors, _now, fingerprint, fingerprint_der, load_cert_pem, load_certs_pem,
)
from gateway import files

SIGNING_CN = "ContactGate response signing"


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    # Keys written by `init` and `cert issue` live in the gateway home or the organisation's
    # out-dir with mode 0600; they are never committed.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key_pem(data: bytes):
    return serialization.load_pem_private_key(data, password=None)


def write_private(path: Path, data: bytes) -> None:
    """Write a key, or anything kept in the gateway's home: mode 0600 (missing directories 0700),
    whatever the umask."""
    files.write_private(path, data)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate meant to be handed over (never a key, never into the home): mode 0644."""
    files.write_public(path, data)


def new_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def make_ca(cn: str = "ContactGate Gateway CA", days: int = 3650, key=None):
    key = key or new_ec_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf_builder(ca_key, ca_cert, subject: x509.Name, public_key, days: int):
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )


def issue_server_cert(ca_key, ca_cert, names: list[str], days: int = 825):
    key = new_ec_key()
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(["localhost", "127.0.0.1", *names]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        _leaf_builder(ca_key, ca_cert, _name(names[0] if names else "localhost"), key.public_key(), days)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_key_usage(key_encipherment=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def issue_signing_cert(ca_key, ca_cert, days: int = 825, *, ec: bool = False):
    """The gateway's response-signing certificate: RSA by default, so any WS-Security client can
    verify it; ECDSA P-256 (``ec``) signs far faster, for clients that accept it."""
    key = new_ec_key() if ec else new_rsa_key()
    return key, signing_cert_for(ca_key, ca_cert, key.public_key(), days)


def signing_cert_for(ca_key, ca_cert, public_key, days: int = 825) -> x509.Certificate:
    """A response-signing certificate for a key made elsewhere (in a PKCS#11 token)."""
    return (
        _leaf_builder(ca_key, ca_cert, _name(SIGNING_CN, "ContactGate"), public_key, days)
        .add_extension(_key_usage(key_encipherment=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def issue_org_cert(ca_key, ca_cert, org_code: str, org_name: str, public_key, days: int = 397):
    """An organisation's certificate: TLS client authentication and message signing.

    The subject is always set by the gateway (CN = organisation code), whatever a CSR asked for.
    """
    cert = (
        _leaf_builder(ca_key, ca_cert, _name(org_code, org_name), public_key, days)
        .add_extension(_key_usage(key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert


PROXY_ORGANISATION = "ContactGate proxy"


def issue_proxy_cert(ca_key, ca_cert, name: str, public_key, days: int = 397):
    """A proxy's certificate (nginx on the hop to `serve --behind-proxy` nodes): TLS client
    authentication only. The subject is set by the gateway (CN = the proxy's name), whatever a CSR
    asked for; O = "ContactGate proxy" says what it is to anyone who reads it."""
    return (
        _leaf_builder(ca_key, ca_cert, _name(name, PROXY_ORGANISATION), public_key, days)
        .add_extension(_key_usage(key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    csr = x509.load_pem_x509_csr(data)
    if not csr.is_signature_valid:
        raise ValueError("the CSR's self-signature is invalid")
    return csr


MIN_RSA_BITS = 2048
STRONG_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def key_weakness(public_key) -> str | None:
    """Why a key is too weak for an organisation's certificate, or None: RSA of at least 2048 bits,
    or ECDSA on P-256, P-384 or P-521 (nothing else: DSA, small RSA, other curves)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            return f"an RSA key of {public_key.key_size} bits (at least {MIN_RSA_BITS} are needed)"
        return None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, STRONG_CURVES):
            return f"an EC key on {public_key.curve.name} (P-256, P-384 or P-521 are accepted)"
        return None
    return f"a {type(public_key).__name__.replace('PublicKey', '').strip('_') or 'key'} key (RSA or ECDSA are accepted)"


def csr_problem(csr: x509.CertificateSigningRequest, org_code: str, what: str = "the organisation") -> str | None:
    """Why a CSR cannot be signed for ``org_code`` (or a proxy's name, ``what`` "the proxy"), or
    None: its key is weak, or its subject does not name it (its common name must be the code, in any
    case; another code is refused)."""
    weakness = key_weakness(csr.public_key())
    if weakness:
        return f"the CSR has {weakness}"
    names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if len(names) != 1 or str(names[0]).upper() != org_code.upper():
        shown = ", ".join(repr(n) for n in names) or "none"
        return f"the CSR's subject must name {what} (CN={org_code}); its common name is {shown}"
    return None


def make_crl(ca_key, ca_cert, revoked: list[tuple[int, dt.datetime]], days: int, number: int) -> bytes:
    """The CA's certificate revocation list (PEM): ``revoked`` as (serial, revocation time), valid
    ``days`` ahead. Loaded into the server's TLS context, it refuses those certificates at the handshake."""
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=days))
               .add_extension(x509.CRLNumber(number), critical=False))
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# Web PKI defaults for end-entity certificates, except that a client certificate need not carry a
# subjectAltName (organisations are named by the registry, not by SAN).
def describe(cert: x509.Certificate) -> dict:
    return {
        "fingerprint": fingerprint(cert),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "pem": cert_pem(cert).decode(),
    }
