"""The organisation's own credentials, made and kept on its own machine.

- `make_request`: a new private key (written 0600, never sent anywhere) and a certificate signing
  request naming the organisation, for the accreditation officers (`contactgate cert issue CODE
  --csr FILE`). When a second officer approves it, they send back cert.pem, ca.pem and
  gateway-signing.pem, which go beside the key: the directory is then what
  `GatewayClient.from_directory` reads.
- `unbundle`: for an organisation whose key the gateway made, the encrypted PKCS#12 bundle the
  officers sent, opened with the passphrase they gave by another channel, into the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

KEY_FILE = "key.pem"
REQUEST_FILE = "request.csr"


class CredentialError(Exception):
    """Why the credentials cannot be made or opened (said to the user)."""


@dataclass(frozen=True)
class Request:
    key_path: Path
    request_path: Path
    public_key_sha256: str


def make_request(org_code: str, out_dir: Path, *, key_type: str = "rsa", organisation_name: str | None = None,
                 force: bool = False) -> Request:
    """A new key (``rsa``: RSA-2048, understood by every SOAP stack; ``ec``: ECDSA P-256) in
    ``out_dir``/key.pem (0600, the directory 0700 if made here) and its CSR in ``out_dir``/request.csr,
    with the organisation's code as the common name."""
    code = (org_code or "").strip()
    if not code or len(code) > 32 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in code):
        raise CredentialError("the organisation's code is 1-32 letters, digits, '-' or '_' (as the officers registered it)")
    key_path, request_path = out_dir / KEY_FILE, out_dir / REQUEST_FILE
    existing = [str(p) for p in (key_path, request_path) if p.exists() or p.is_symlink()]
    if existing and not force:
        raise CredentialError(f"{', '.join(existing)} already exist: nothing was made (another --out-dir, "
                              f"or --force to replace them; a key in use is replaced only when rotating)")
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise CredentialError("the key type is rsa or ec")
    names = [x509.NameAttribute(NameOID.COMMON_NAME, code)]
    if organisation_name:
        names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation_name[:64]))
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names)).sign(key, hashes.SHA256())
    _private_dir(out_dir)
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    write_public(request_path, request.public_bytes(serialization.Encoding.PEM))
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    import hashlib

    return Request(key_path, request_path, hashlib.sha256(public).hexdigest())


def unbundle(bundle: Path, passphrase: str, out_dir: Path, *, force: bool = False) -> list[Path]:
    """Open the encrypted PKCS#12 bundle into ``out_dir``: key.pem (0600), cert.pem and ca.pem."""
    try:
        key, certificate, extra = pkcs12.load_key_and_certificates(bundle.read_bytes(), passphrase.encode())
    except ValueError:
        raise CredentialError(f"{bundle} cannot be opened with that passphrase (or is not a PKCS#12 bundle)") from None
    if key is None or certificate is None:
        raise CredentialError(f"{bundle} holds no key and certificate")
    outputs = {out_dir / KEY_FILE: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()),
               out_dir / "cert.pem": certificate.public_bytes(serialization.Encoding.PEM)}
    if extra:
        outputs[out_dir / "ca.pem"] = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in extra)
    existing = [str(p) for p in outputs if p.exists() or p.is_symlink()]
    if existing and not force:
        raise CredentialError(f"{', '.join(existing)} already exist: nothing was written (another --out-dir, or --force)")
    _private_dir(out_dir)
    for path, data in outputs.items():
        (write_private if path.name == KEY_FILE else write_public)(path, data)
    return list(outputs)


def _private_dir(path: Path) -> None:
    """``path`` and its missing parents made 0700 whatever the umask (existing ones left as they are)."""
    missing = [d for d in (path, *path.parents) if not d.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)


# The gateway has its own writers (gateway.files) for its home; these are the organisation's side's,
# in the contactgate-client distribution, which never imports the gateway.
def write_private(path: Path, data: bytes) -> None:
    """Written 0600 whatever the umask, never through a link, replacing the file atomically."""
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    _write(path, data, 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
