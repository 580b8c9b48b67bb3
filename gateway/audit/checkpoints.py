"""Signed checkpoints of the audit trail's public chain.

Each successful `audit verify` appends a line to the home's ``audit/checkpoints``: the head of the
HMAC chain it verified and, when the gateway's signing key is at hand, the head of the public chain
(gateway.audit.links.public_hash) signed with that key; copies outside the home
(CONTACTGATE_CHECKPOINT_COPIES) get the same heads, unsigned. The chain checks that it still holds
every head recorded in any of them (so a cut tail, or entries a restore lost, are found); an export (gateway.audit.export) carries the signed
checkpoints of its period, which a holder of the gateway's signing certificate verifies offline.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.audit.links import timestamp
from gateway.trust.pki import fingerprint


def canonical(claims: dict) -> bytes:
    """The bytes a signature covers: the claims as sorted, compact, ASCII-only JSON."""
    return json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class CheckpointSigner:
    """Signs checkpoint claims with the gateway's signing key (loaded once)."""

    def __init__(self, key_pem: bytes | None, cert_pem: bytes, *, token_key=None):
        """``token_key``: the key in a PKCS#11 token (gateway.security.hsm.TokenKey) instead of a PEM."""
        self._key = serialization.load_pem_private_key(key_pem, password=None) if token_key is None else None
        self._token_key = token_key
        self.certificate = x509.load_pem_x509_certificate(cert_pem)

    @classmethod
    def from_layout(cls, layout) -> "CheckpointSigner | None":
        """The gateway's signing key, from its PKCS#11 token or the home's file; None when neither."""
        from gateway.trust.signing_keys import token_key

        in_token = token_key(layout)
        if in_token is not None:
            return cls(None, layout.signing_cert.read_bytes(), token_key=in_token)
        if not layout.signing_key.exists():
            return None
        return cls(layout.signing_key.read_bytes(), layout.signing_cert.read_bytes())

    def sign(self, claims: dict) -> dict:
        data = canonical(claims)
        if self._token_key is not None:
            signature = self._token_key.sign(data)
            if not self._token_key.is_rsa:  # the token's r || s, as DER (what the verifier reads)
                half = len(signature) // 2
                signature = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                                 int.from_bytes(signature[half:], "big"))
        elif isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            signature = self._key.sign(data, ec.ECDSA(hashes.SHA256()))
        return {"claims": claims, "signer": fingerprint(self.certificate),
                "signature": base64.b64encode(signature).decode()}


def signature_problem(signed, certificates: list[x509.Certificate]) -> str | None:
    """None if ``signed`` (from CheckpointSigner.sign) verifies with one of ``certificates``."""
    if not isinstance(signed, dict) or not isinstance(signed.get("claims"), dict):
        return "not a signed checkpoint"
    cert = next((c for c in certificates if fingerprint(c) == signed.get("signer")), None)
    if cert is None:
        return f"signed by certificate {str(signed.get('signer'))[:64]}, which is not one given with --cert"
    try:
        signature = base64.b64decode(str(signed.get("signature")), validate=True)
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, canonical(signed["claims"]), padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, canonical(signed["claims"]), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return "its signature does not verify"
    return None


def checkpoint_line(seq: int, entry_hash: str, public_head: str, signer: CheckpointSigner | None) -> bytes:
    """A line of audit/checkpoints: ``SEQ HMAC-HEAD TIME`` as before, then the public head and the
    signed checkpoint (base64 of its JSON) when the signing key is at hand."""
    at = timestamp()
    if signer is None:
        return f"{seq} {entry_hash} {at}\n".encode()
    signed = signer.sign({"kind": "checkpoint", "seq": seq, "public_hash": public_head, "at": at})
    token = base64.urlsafe_b64encode(canonical(signed)).decode()
    return f"{seq} {entry_hash} {at} {public_head} {token}\n".encode()


def signed_lines(path: Path | None) -> list[tuple[int, str, str, dict]]:
    """(seq, HMAC head, public head, signed checkpoint) of every signed line of the file, in its order
    (lines written before signing, or by `record_checkpoint`, are skipped). Nothing here is checked:
    see `signature_problem` and gateway.audit.chain (the anchor of an incremental verification)."""
    if path is None or not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0].isdigit() and len(fields[0]) <= 18:
            try:
                signed = json.loads(base64.urlsafe_b64decode(fields[4]))
            except ValueError:
                continue  # an altered line: `audit verify` reports the file itself
            found.append((int(fields[0]), fields[1], fields[3], signed))
    return found


def signed_checkpoints(path: Path) -> list[dict]:
    """The signed checkpoints the file holds (lines written before signing are skipped)."""
    return [signed for _, _, _, signed in signed_lines(path)]


def signing_certificates(layout) -> list[x509.Certificate]:
    """The gateway's signing certificates a checkpoint may be signed with: current, previous and staged."""
    from gateway.trust import pki

    return [c for path in (layout.signing_cert, layout.signing_previous_cert, layout.signing_next_cert)
            if path.exists() for c in pki.load_certs_pem(path.read_bytes())]


MAX_CHECKPOINT_LINE = 4096


def checkpoint_seqs(path: Path | None) -> list[tuple[int, str]]:
    """Every (seq, HMAC head) a checkpoints file holds, in its order; ValueError if a line is not a
    checkpoint (the file outside the database was altered)."""
    if path is None or not path.exists():
        return []
    found = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if len(raw) > MAX_CHECKPOINT_LINE:
                raise ValueError(f"its line {number} is too long to be a checkpoint")
            line = raw.decode("ascii", "replace").strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) < 2 or not fields[0].isdigit() or len(fields[0]) > 18 or len(fields[1]) != 64 or any(
                    c not in "0123456789abcdef" for c in fields[1]):
                raise ValueError(f"its line {number} is not a checkpoint: {line[:80]!r}")
            found.append((int(fields[0]), fields[1]))
    return found
