"""The gateway's response-signing key and its rotation with a grace period.

Clients pin the gateway's signing certificate (`gateway-signing.pem`) and refuse answers signed by
anything else. A key is therefore rotated in three steps, so that no client is ever left pinning a
certificate the gateway no longer signs with:

1. ``stage_next``: a new key and certificate are made beside the current one (``signing/next-*``);
   the gateway keeps signing with the current key. The *published bundle* (``published``) now
   holds both certificates: officers send it to every organisation, whose systems pin both.
2. ``promote``: after the grace period, the staged key becomes the current one; the old
   certificate stays in the bundle as ``previous`` (its private key is deleted). The gateway signs
   with the new key from its next (re)start or reload.
3. ``retire_previous``: once no client needs it, the old certificate leaves the bundle.

Staging writes new files only (``signing/next-*``, 0600); promotion moves them over the current
ones with atomic renames (the certificate first, then the key), so the gateway, which loads both
when it (re)starts, never reads a half-written file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from gateway.config import HomeLayout
from gateway.trust import pki


class SigningKeyError(Exception):
    """A rotation step that cannot be taken now (the message says what to do instead)."""


@dataclass(frozen=True)
class SigningKeys:
    current: x509.Certificate
    next: x509.Certificate | None = None
    previous: x509.Certificate | None = None

    def published(self) -> list[x509.Certificate]:
        """Every certificate a client should pin now: current, then staged, then previous."""
        return [c for c in (self.current, self.next, self.previous) if c is not None]


def _load(path: Path) -> x509.Certificate | None:
    return pki.load_cert_pem(path.read_bytes()) if path.exists() else None


def load(layout: HomeLayout) -> SigningKeys:
    current = _load(layout.signing_cert)
    if current is None:
        raise SigningKeyError(f"no signing certificate under {layout.root}: run `contactgate init` first")
    return SigningKeys(current=current, next=_load(layout.signing_next_cert),
                       previous=_load(layout.signing_previous_cert))


def bundle_pem(layout: HomeLayout) -> bytes:
    """The published bundle, as clients pin it (`gateway-signing.pem`)."""
    return b"".join(pki.cert_pem(c) for c in load(layout).published())


def stage_next(layout: HomeLayout, ca_key, ca_cert, *, ec: bool = False) -> x509.Certificate:
    keys = load(layout)
    if keys.next is not None:
        raise SigningKeyError("a new signing key is already staged: promote it (`contactgate signing-key "
                              "promote`) or discard it (`contactgate signing-key discard`)")
    from gateway.security import hsm

    cfg = token_config(layout)
    if cfg is not None:  # made in the token, never out of it: only the certificate is written
        cert = pki.signing_cert_for(ca_key, ca_cert, hsm.generate_signing_key(cfg, ec=ec))
        record_token(layout, cfg)
        pki.write_private(layout.signing_next_cert, pki.cert_pem(cert))
        return cert
    key, cert = pki.issue_signing_cert(ca_key, ca_cert, ec=ec)
    pki.write_private(layout.signing_next_key, pki.key_pem(key))
    pki.write_private(layout.signing_next_cert, pki.cert_pem(cert))
    return cert


def discard_next(layout: HomeLayout) -> x509.Certificate:
    keys = load(layout)
    if keys.next is None:
        raise SigningKeyError("no signing key is staged")
    layout.signing_next_key.unlink(missing_ok=True)
    _destroy_in_token(layout, keys.next)
    layout.signing_next_cert.unlink()
    return keys.next


def _destroy_in_token(layout: HomeLayout, certificate: x509.Certificate) -> None:
    """The token's private key of ``certificate``, if the signing key is kept in a token."""
    from gateway.security import hsm

    cfg = token_config(layout)
    if cfg is not None:
        hsm.destroy_signing_key(cfg, certificate.public_key())


def promote(layout: HomeLayout, *, now: dt.datetime | None = None, min_grace: dt.timedelta = dt.timedelta(0),
            ) -> SigningKeys:
    """Make the staged key current. Refused before ``min_grace`` has passed since it was staged, and
    while an older ``previous`` is still published (retire it first: a bundle holds at most three)."""
    keys = load(layout)
    if keys.next is None:
        raise SigningKeyError("no signing key is staged: run `contactgate signing-key rotate` first")
    if keys.previous is not None:
        raise SigningKeyError("the certificate before the current one is still published: retire it "
                              "first (`contactgate signing-key retire`)")
    now = now or dt.datetime.now(dt.timezone.utc)
    staged_at = keys.next.not_valid_before_utc
    if now - staged_at < min_grace:
        raise SigningKeyError(f"the staged key was published on {staged_at:%Y-%m-%d %H:%M} UTC; the grace "
                              f"period of {min_grace.days} days has not passed (use --grace-days 0 to "
                              f"promote anyway)")
    pki.write_private(layout.signing_previous_cert, pki.cert_pem(keys.current))
    # The certificate first, then the key: each rename is atomic, and the gateway loads both only
    # when it (re)starts, which the operator does after this command.
    os.replace(layout.signing_next_cert, layout.signing_cert)
    if layout.signing_next_key.exists() or token_config(layout) is None:
        os.replace(layout.signing_next_key, layout.signing_key)
    # In a token the previous private key stays until `retire`: a node not yet reloaded still signs with it.
    return load(layout)


def retire_previous(layout: HomeLayout) -> x509.Certificate:
    keys = load(layout)
    if keys.previous is None:
        raise SigningKeyError("no previous signing certificate is published")
    _destroy_in_token(layout, keys.previous)
    layout.signing_previous_cert.unlink()
    return keys.previous


# ---- where the current key is: the home's key file (the default) or a PKCS#11 token ---------------

def token_marker(layout: HomeLayout) -> Path:
    """``signing/key.pkcs11``: the home's record that its signing key is in a token (which, under
    which label), so that nothing run without the token's settings makes a key on disk instead."""
    return layout.signing_cert.parent / "key.pkcs11"


def record_token(layout: HomeLayout, cfg) -> None:
    pki.write_private(token_marker(layout), (json.dumps(
        {"token": cfg.token, "label": cfg.signing_label}, indent=2, sort_keys=True) + "\n").encode())


def token_config(layout: HomeLayout):
    """The token holding the signing key (hsm.signing_config), checked against the home's record
    (``token_marker``): an HsmError when the home's key is in a token the environment does not name."""
    from gateway.security import hsm

    cfg = hsm.signing_config()
    marker = token_marker(layout)
    if not marker.exists():
        return cfg
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        token, label = str(recorded["token"]), str(recorded["label"])
    except (OSError, ValueError, KeyError, TypeError):
        raise hsm.HsmError(f"{marker} (which token holds the signing key) is unreadable: restore it "
                           f"from a backup") from None
    if cfg is None:
        raise hsm.HsmError(f"this home's signing key is in the PKCS#11 token {token!r} as {label!r} ({marker}): "
                           f"set {hsm.ENV_MODULE}, {hsm.ENV_TOKEN}, the PIN and {hsm.ENV_SIGNING_KEY}={label}; "
                           f"nothing makes a signing key on disk instead")
    if (cfg.token, cfg.signing_label) != (token, label):
        raise hsm.HsmError(f"this home's signing key is in the PKCS#11 token {token!r} as {label!r} ({marker}), "
                           f"but {hsm.ENV_TOKEN}/{hsm.ENV_SIGNING_KEY} name {cfg.token!r}/{cfg.signing_label!r}")
    return cfg


def token_key(layout: HomeLayout):
    """The current signing key in the token CONTACTGATE_PKCS11_SIGNING_KEY names (gateway.security.hsm),
    found by the public key of ``signing/cert.pem``; None when the key is the home's file. An HsmError
    when the token is named but cannot be used, or does not hold it: nothing falls back to a file."""
    from gateway.security import hsm

    cfg = token_config(layout)
    if cfg is None:
        return None
    return hsm.TokenKey(cfg, pki.load_cert_pem(layout.signing_cert.read_bytes()))


def envelope_signer(layout: HomeLayout):
    """What signs the gateway's answers: the token's key (C_Sign over SignedInfo) or the home's key file."""
    from contactgate_wire.wsse import EnvelopeSigner

    in_token = token_key(layout)
    if in_token is not None:
        return EnvelopeSigner.with_key_elsewhere(layout.signing_cert.read_bytes(), in_token.sign)
    return EnvelopeSigner(layout.signing_key.read_bytes(), layout.signing_cert.read_bytes())
