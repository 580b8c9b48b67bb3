"""Security keys (WebAuthn: FIDO2 security keys and platform passkeys) as the portal's second factor
(issue 26 item 3), with py_webauthn (PyPI ``webauthn``) doing the verification.

- **Relying party.** Its id is the host of the portal's public URL (``Settings.portal_url``,
  ``CONTACTGATE_PORTAL_URL``) and every response must come from exactly that origin.
  `check_portal_url` refuses a URL `portal` can tell is wrong before it starts: not https, a path,
  an IP address (no browser accepts one as a relying party id), a port other than the one bound, or
  a host the server certificate does not name.
- **Challenges** (``portal_webauthn_challenges``): 32 random bytes, one per ceremony, bound to the
  browser that asked (the SHA-256 of a nonce in its signed session cookie), good for
  CHALLENGE_SECONDS, and taken — deleted — by the first response that names it, accepted or not.
  A response whose challenge is unknown (spent: a replay), another browser's, or expired is refused.
- **User verification policy: preferred, not required.** The key follows the password, so a key
  without a PIN or biometric is still a second factor (something held); a key that verifies its
  user is recorded as such (``user_verified``), nothing more.
- **Attestation policy: none.** The portal asks for no attestation and trusts no maker's list: a key
  is bound to its account by the ceremony itself (after the one-time invitation and the password, or
  inside a signed-in session), not by who made it. The authenticator's AAGUID, when it gives one, is
  kept and shown (for the administrator's record), never used to decide.
- **Sign counts and clones.** An authenticator that counts must count up: a response whose count is
  not above the one stored is refused as a possible clone (py_webauthn's check), audited as such,
  and the key stays registered for the user administrator to reset; one that does not count (0
  always, as passkeys that sync) is accepted.
- **Keys are per account**, several each: enrolment registers the first; a signed-in practitioner adds
  more and removes any but the last (each audited: ``portal.key.add``, ``portal.key.remove``); a
  reset by the user administrator removes them all. The public key is not secret, but it is sealed
  with a context naming the account and the credential, so a row moved to another account by hand
  does not open (``gateway.index.sealed.portal_key_context``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from gateway.config import SettingError
from gateway.db import (portal_org_settings, portal_practitioners, portal_webauthn_challenges,
                        portal_webauthn_credentials)
from gateway.index import sealed
from gateway.portal.errors import PortalError
from gateway.security.vault import SealError

CHALLENGE_SECONDS = 300
TIMEOUT_MS = 120_000  # what the browser is told it may take (the challenge outlives it)
MAX_RESPONSE_BYTES = 16 * 1024  # a registration or assertion response, as JSON; bigger is refused unread
MAX_KEYS = 10
PURPOSES = ("enrol", "signin", "add", "upgrade", "confirm", "decoy")


class KeyRefused(PortalError):
    """A security key's response refused. ``str()``: what the person is told; ``why``: the audit's."""

    def __init__(self, said: str, why: str):
        super().__init__(said)
        self.why = why


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# ---- the relying party ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RelyingParty:
    rp_id: str
    origin: str
    name: str = "ContactGate portal"

    @classmethod
    def of(cls, settings, bind: str = "127.0.0.1:8445") -> "RelyingParty":
        """From ``Settings.portal_url``, or https://localhost:PORT of a loopback ``bind``."""
        url = settings.portal_url
        if not url:
            host, _, port = bind.rpartition(":")
            if host.strip("[]") not in ("127.0.0.1", "::1", "localhost"):
                raise SettingError(f"CONTACTGATE_PORTAL_URL is not set and the portal binds {bind}: set it to the "
                                   f"https address practitioners open (security keys are bound to it)")
            url = f"https://localhost:{port}"
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise SettingError(f"CONTACTGATE_PORTAL_URL {url!r} must be an https:// address")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise SettingError(f"CONTACTGATE_PORTAL_URL {url!r} must be only https://HOST[:PORT] (the portal "
                               f"is served at its root)")
        host = parts.hostname.lower()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            raise SettingError(f"CONTACTGATE_PORTAL_URL {url!r} names an IP address: browsers accept security keys "
                               f"only for a host name (use localhost, or the portal's DNS name)")
        port = parts.port or 443
        return cls(host, f"https://{host}" + ("" if port == 443 else f":{port}"))

    @property
    def port(self) -> int:
        return urlsplit(self.origin).port or 443


def check_portal_url(settings, bind: str) -> RelyingParty:
    """The relying party `portal --bind BIND` serves, or SettingError saying what is wrong."""
    rp = RelyingParty.of(settings, bind)
    bound = int(bind.rpartition(":")[2])
    if rp.port != bound:
        raise SettingError(f"CONTACTGATE_PORTAL_URL {rp.origin} names port {rp.port}, but the portal binds "
                           f"{bind} (it is not meant to sit behind a proxy): make them the same")
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(settings.layout.server_cert.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not any(_name_matches(n.lower(), rp.rp_id) for n in names):
        raise SettingError(f"the server certificate does not name {rp.rp_id} (it names {', '.join(names) or 'no host'}): "
                           f"browsers would refuse it; `contactgate init --server-name {rp.rp_id}` adds it")
    return rp


def _name_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.count(".") == pattern.count(".") and host.endswith(pattern[1:])
    return pattern == host


# ---- challenges ---------------------------------------------------------------------------------------

def new_binding() -> str:
    """The nonce a browser's signed session cookie holds, binding its challenges to it."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Ceremony:
    purpose: str
    org_code: str
    user_id: str
    password_hash: str | None


def issue(conn: Connection, binding: str, purpose: str, org_code: str, user_id: str, now: dt.datetime, *,
          password_hash: str | None = None) -> bytes:
    """A new challenge for this browser's ceremony (its earlier unanswered one is dropped)."""
    assert purpose in PURPOSES
    challenge = secrets.token_bytes(32)
    binding_hash = _sha256(binding)
    conn.execute(delete(portal_webauthn_challenges).where(
        (portal_webauthn_challenges.c.expires_at <= now) | (portal_webauthn_challenges.c.binding_hash == binding_hash)))
    conn.execute(portal_webauthn_challenges.insert().values(
        challenge_hash=_sha256(challenge), binding_hash=binding_hash, purpose=purpose, org_code=org_code,
        user_id=user_id, password_hash=password_hash, expires_at=now + dt.timedelta(seconds=CHALLENGE_SECONDS)))
    return challenge


def parsed_response(text: str) -> tuple[dict, bytes]:
    """(the response as JSON, the challenge its client data names), bounded; KeyRefused if unreadable."""
    if not text or len(text) > MAX_RESPONSE_BYTES:
        raise KeyRefused("the security key's answer was missing or too large: try again", "no or oversized response")
    try:
        response = json.loads(text)
        client_data = json.loads(_unb64url(response["response"]["clientDataJSON"]))
        challenge = _unb64url(client_data["challenge"])
        if not isinstance(response.get("id"), str):
            raise ValueError("no id")
    except (ValueError, KeyError, TypeError):
        raise KeyRefused("the security key's answer could not be read: try again", "malformed response") from None
    return response, challenge


def take(conn: Connection, binding: str | None, purpose: str, challenge: bytes, now: dt.datetime, *,
         also: tuple[str, ...] = ()) -> Ceremony:
    """The ceremony ``challenge`` was issued for, spent now whatever follows; KeyRefused if it is not
    this browser's, not for this step (``purpose``, or one of ``also``), expired, or spent already (a replay)."""
    challenge_hash = _sha256(challenge)
    row = conn.execute(select(portal_webauthn_challenges).where(
        portal_webauthn_challenges.c.challenge_hash == challenge_hash).with_for_update()).first()
    if row is None:
        raise KeyRefused(_AGAIN, "challenge unknown or already used (a replayed response?)")
    conn.execute(delete(portal_webauthn_challenges).where(portal_webauthn_challenges.c.challenge_hash == challenge_hash))
    ceremony = Ceremony(row.purpose, row.org_code, row.user_id, row.password_hash)
    if binding is None or row.binding_hash != _sha256(binding):
        raise KeyRefused(_AGAIN, f"challenge issued to another browser session ({row.org_code}:{row.user_id})")
    if row.purpose != purpose and row.purpose not in also:
        raise KeyRefused(_AGAIN, f"challenge issued for {row.purpose}, answered at {purpose}")
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=dt.timezone.utc)
    if expires <= now:
        raise KeyRefused("that took too long: start again", f"challenge expired at {expires:%H:%M:%S}Z")
    return ceremony


_AGAIN = "the security key's answer was not accepted: start again"


# ---- options and verification (py_webauthn) ------------------------------------------------------------

def _user_handle(org_code: str, user_id: str) -> bytes:
    """The user handle given to authenticators: opaque, stable, naming no one."""
    return hashlib.sha256(f"contactgate-portal\n{org_code}\n{user_id}".encode()).digest()


def registration_options(rp: RelyingParty, org_code: str, user_id: str, name: str, challenge: bytes,
                         existing: list[str]) -> str:
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers.structs import (AttestationConveyancePreference, AuthenticatorSelectionCriteria,
                                          PublicKeyCredentialDescriptor, ResidentKeyRequirement,
                                          UserVerificationRequirement)

    options = generate_registration_options(
        rp_id=rp.rp_id, rp_name=rp.name, user_name=f"{org_code}:{user_id}", user_id=_user_handle(org_code, user_id),
        user_display_name=name or f"{org_code}:{user_id}", challenge=challenge, timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED, user_verification=UserVerificationRequirement.PREFERRED),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=_unb64url(c)) for c in existing])
    return options_to_json(options)


def authentication_options(rp: RelyingParty, challenge: bytes, allowed: list[str]) -> str:
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

    return options_to_json(generate_authentication_options(
        rp_id=rp.rp_id, challenge=challenge, timeout=TIMEOUT_MS,
        allow_credentials=[PublicKeyCredentialDescriptor(id=_unb64url(c)) for c in allowed],
        user_verification=UserVerificationRequirement.PREFERRED))


def verify_registration(rp: RelyingParty, response: dict, challenge: bytes):
    """py_webauthn's VerifiedRegistration, or KeyRefused (the library's reason for the audit)."""
    from webauthn import verify_registration_response
    from webauthn.helpers.exceptions import WebAuthnException

    try:
        return verify_registration_response(credential=response, expected_challenge=challenge,
                                            expected_rp_id=rp.rp_id, expected_origin=rp.origin,
                                            require_user_verification=False)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise KeyRefused("the security key could not be registered: try again, or with another key",
                         f"registration refused: {exc}"[:500]) from None


def verify_assertion(rp: RelyingParty, response: dict, challenge: bytes, public_key: bytes, sign_count: int):
    """py_webauthn's VerifiedAuthentication, or KeyRefused (a count that did not go up: a clone?)."""
    from webauthn import verify_authentication_response
    from webauthn.helpers.exceptions import WebAuthnException

    try:
        return verify_authentication_response(credential=response, expected_challenge=challenge,
                                              expected_rp_id=rp.rp_id, expected_origin=rp.origin,
                                              credential_public_key=public_key,
                                              credential_current_sign_count=sign_count,
                                              require_user_verification=False)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        why = str(exc)
        if "sign count" in why:
            why = f"possible cloned key: {why}"
        raise KeyRefused(_REFUSED_KEY, f"key refused: {why}"[:500]) from None


_REFUSED_KEY = "Sign-in refused: the security key was not accepted."


# ---- keys of an account ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Key:
    id: int
    credential_id: str
    label: str
    aaguid: str | None
    user_verified: bool
    sign_count: int
    created_at: dt.datetime
    last_used_at: dt.datetime | None


def keys_of(conn: Connection, org_code: str, user_id: str) -> list[Key]:
    rows = conn.execute(select(portal_webauthn_credentials).where(
        portal_webauthn_credentials.c.org_code == org_code, portal_webauthn_credentials.c.user_id == user_id)
        .order_by(portal_webauthn_credentials.c.id))
    return [Key(r.id, r.credential_id, r.label, r.aaguid, bool(r.user_verified), r.sign_count, r.created_at,
                r.last_used_at) for r in rows]


def count_keys(conn: Connection, org_code: str, user_id: str) -> int:
    return conn.execute(select(func.count()).select_from(portal_webauthn_credentials).where(
        portal_webauthn_credentials.c.org_code == org_code, portal_webauthn_credentials.c.user_id == user_id)).scalar()


def store_key(conn: Connection, org_code: str, user_id: str, verified, label: str, now: dt.datetime) -> Key:
    """Register a verified key to the account; KeyRefused if it is registered already (to anyone)."""
    credential_id = _b64url(verified.credential_id)
    if conn.execute(select(portal_webauthn_credentials.c.id).where(
            portal_webauthn_credentials.c.credential_id == credential_id)).first() is not None:
        raise KeyRefused("that security key is registered already", f"key {credential_id[:16]}… registered already")
    if count_keys(conn, org_code, user_id) >= MAX_KEYS:
        raise KeyRefused(f"an account holds at most {MAX_KEYS} keys: remove one first", "too many keys")
    label = " ".join((label or "").split())[:100] or "Security key"
    public_key = sealed.vault_of(conn).seal(_b64url(verified.credential_public_key),
                                            sealed.portal_key_context(org_code, user_id, credential_id))
    aaguid = verified.aaguid if verified.aaguid and set(verified.aaguid) - {"0", "-"} else None
    key_id = conn.execute(portal_webauthn_credentials.insert().values(
        org_code=org_code, user_id=user_id, credential_id=credential_id, public_key=public_key,
        sign_count=verified.sign_count, aaguid=aaguid, label=label, user_verified=bool(verified.user_verified),
        created_at=now, last_used_at=None)).inserted_primary_key[0]
    return Key(key_id, credential_id, label, aaguid, bool(verified.user_verified), verified.sign_count, now, None)


def check_assertion(conn: Connection, rp: RelyingParty, org_code: str, user_id: str, response: dict,
                    challenge: bytes, now: dt.datetime) -> Key:
    """Verify a sign-in response with the account's key it names, and record its new count;
    KeyRefused for a key not this account's, a bad signature, a wrong origin or relying party, a
    count that went backwards."""
    credential_id = response["id"]
    row = conn.execute(select(portal_webauthn_credentials).where(
        portal_webauthn_credentials.c.credential_id == credential_id).with_for_update()).first()
    if row is None or (row.org_code, row.user_id) != (org_code, user_id):
        raise KeyRefused(_REFUSED_KEY, "a key not registered to this account" + (
            "" if row is None else f" (it is {row.org_code}:{row.user_id}'s)"))
    try:
        public_key = _unb64url(sealed.vault_of(conn).open(
            row.public_key, sealed.portal_key_context(org_code, user_id, credential_id)))
    except SealError:  # refused and audited as any wrong key, not a server error
        raise KeyRefused(_REFUSED_KEY, "the key's stored public key does not open: its row was tampered with or "
                                       "moved from another account") from None
    verified = verify_assertion(rp, response, challenge, public_key, row.sign_count)
    conn.execute(update(portal_webauthn_credentials).where(portal_webauthn_credentials.c.id == row.id).values(
        sign_count=verified.new_sign_count, last_used_at=now))
    return Key(row.id, credential_id, row.label, row.aaguid, bool(row.user_verified), verified.new_sign_count,
               row.created_at, now)


def made_up_credential_id(secret: bytes | str, org_code: str, user_id: str) -> str:
    """The key id the decoy key step lists for a name with no key (gateway.portal.key_views.decoy_page):
    64 bytes, keyed by the portal's cookie secret, so the same for a name every time and unguessable."""
    import hmac

    key = secret.encode() if isinstance(secret, str) else secret
    return _b64url(hmac.new(key, f"contactgate-portal-decoy\n{org_code}\n{user_id}".encode(), hashlib.sha512).digest())


def remove_key(conn: Connection, org_code: str, user_id: str, key_id: int) -> Key:
    """Remove one of the account's keys, never its last (KeyRefused: the administrator resets)."""
    # The account's row locked first: two removals at once queue here, so the second counts what the
    # first left (never the last key; SQLite's writers queue anyway, PostgreSQL's need the lock).
    conn.execute(select(portal_practitioners.c.user_id).where(
        portal_practitioners.c.org_code == org_code, portal_practitioners.c.user_id == user_id).with_for_update())
    keys = keys_of(conn, org_code, user_id)
    key = next((k for k in keys if k.id == key_id), None)
    if key is None:
        raise LookupError(f"no key {key_id} of {org_code}:{user_id}")
    if len(keys) == 1:
        raise KeyRefused("this is your only security key: add another before removing it (or ask your user "
                         "administrator to reset your sign-in)", "refused to remove the account's only key")
    conn.execute(delete(portal_webauthn_credentials).where(portal_webauthn_credentials.c.id == key.id))
    return key


def forget_keys(conn: Connection, org_code: str, user_id: str) -> int:
    """A reset: every key of the account, and its open ceremonies, gone; how many keys there were."""
    conn.execute(delete(portal_webauthn_challenges).where(portal_webauthn_challenges.c.org_code == org_code,
                                                          portal_webauthn_challenges.c.user_id == user_id))
    return conn.execute(delete(portal_webauthn_credentials).where(
        portal_webauthn_credentials.c.org_code == org_code,
        portal_webauthn_credentials.c.user_id == user_id)).rowcount


# ---- the organisation's policy on TOTP codes ---------------------------------------------------------

@dataclass(frozen=True)
class CodePolicy:
    totp_allowed: bool
    proposed_by: str | None  # an administrator proposing codes back on, awaiting a second


def code_policy(conn: Connection, org_code: str) -> CodePolicy:
    row = conn.execute(select(portal_org_settings).where(portal_org_settings.c.org_code == org_code)).first()
    return CodePolicy(True, None) if row is None else CodePolicy(bool(row.totp_allowed), row.totp_proposed_by)


def _set_policy(conn: Connection, org_code: str, by: str, now: dt.datetime, **values) -> None:
    done = conn.execute(update(portal_org_settings).where(portal_org_settings.c.org_code == org_code).values(
        updated_by=by, updated_at=now, **values))
    if done.rowcount == 0:
        conn.execute(portal_org_settings.insert().values(
            org_code=org_code, updated_by=by, updated_at=now,
            **{"totp_allowed": True, "totp_proposed_by": None, "totp_proposed_at": None, **values}))


def turn_codes_off(conn: Connection, org_code: str, by: str, now: dt.datetime) -> None:
    """Codes no longer accepted (stronger sign-in: one administrator decides)."""
    if not code_policy(conn, org_code).totp_allowed:
        raise PortalError("authenticator-app codes are already off for your organisation")
    _set_policy(conn, org_code, by, now, totp_allowed=False, totp_proposed_by=None, totp_proposed_at=None)


def propose_codes_on(conn: Connection, org_code: str, by: str, now: dt.datetime) -> None:
    policy = code_policy(conn, org_code)
    if policy.totp_allowed:
        raise PortalError("authenticator-app codes are already accepted")
    _set_policy(conn, org_code, by, now, totp_proposed_by=by, totp_proposed_at=now)


def approve_codes_on(conn: Connection, org_code: str, by: str, now: dt.datetime) -> str:
    """A second administrator puts codes back on (weaker sign-in: four-eyes); the proposer."""
    policy = code_policy(conn, org_code)
    if policy.totp_allowed or policy.proposed_by is None:
        raise PortalError("nobody has proposed accepting authenticator-app codes again")
    if policy.proposed_by == by:
        raise PortalError("you proposed it: a second user administrator approves it")
    _set_policy(conn, org_code, by, now, totp_allowed=True, totp_proposed_by=None, totp_proposed_at=None)
    return policy.proposed_by
