"""An organisation's own OpenID Connect provider, part of its accreditation (issue 27): its people sign
in to the portal through it, as its systems reach the gateway through its certificates.

One officer proposes the registration (`propose`), a second approves (`approve`) or declines it; in
force once approved, one per organisation (approving another supersedes it). An issuer's client id
belongs to one organisation (its ID tokens' audience is all that tells the organisations apart). Removing it (`remove`)
takes access away, so one officer may; its portal sessions end at their next page. Each step, and
each refusal, is an audit entry (``idp.propose``, ``.approve``, ``.decline``, ``.remove``) naming the
organisation and the officer.

What is registered:
- the provider's ``issuer`` (https; plain http only on 127.0.0.1, and used only where the setting
  ``CONTACTGATE_OIDC_INSECURE_HTTP_LOOPBACK`` allows it: tests), the ``client_id`` and the portal's
  ``redirect_uri`` as registered at the provider;
- client authentication: ``private_key_jwt`` (preferred: the gateway makes an ES256 key, sealed at
  rest; the officer gives the provider its public JWK) or ``client_secret_basic``/``_post`` (the
  secret sealed at rest);
- ``person_claim``: the claim naming the person (their portal user id, e.g. ``preferred_username``);
  ``role_claim`` and ``role_map``: the claim (a string or a list, e.g. groups) and which of its values
  gives which role of the roles file;
- two-factor evidence: ``acr_values`` and/or ``amr_values`` (any one present is enough), and
  ``without_two_factors``: ``refuse``, or ``portal_totp`` (the practitioner's own portal TOTP code).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from gateway import audit
from gateway.db import identity_providers
from gateway.four_eyes import FourEyes
from gateway.index import sealed
from gateway.officers import Officer
from gateway.trust import registry

ROLES = registry.ORGANISATION_ROLES
CLIENT_AUTH = ("private_key_jwt", "client_secret_basic", "client_secret_post")
WITHOUT_TWO_FACTORS = ("refuse", "portal_totp")
CLIENT_KEY_ALG = "ES256"
_CLAIM = re.compile(r"[A-Za-z0-9_:./-]{1,64}")
_VALUE = re.compile(r"[^\x00-\x1f]{1,200}")


class IdentityProviderError(Exception):
    """A registration refused (the message says why)."""


@dataclass(frozen=True)
class Registration:
    """What an officer proposes (checked by `checked`)."""

    org_code: str
    issuer: str
    client_id: str
    redirect_uri: str
    client_auth: str = "private_key_jwt"
    client_secret: str | None = None
    person_claim: str = "preferred_username"
    role_claim: str = "groups"
    role_map: dict | None = None
    acr_values: tuple = ()
    amr_values: tuple = ()
    without_two_factors: str = "refuse"
    scopes: str = "openid profile"

    def checked(self, rules) -> "Registration":
        issuer = (self.issuer or "").strip()
        _check_url("the issuer", issuer, loopback_http=True)
        redirect = (self.redirect_uri or "").strip()
        _check_url("the redirect URI", redirect, loopback_http=False)
        if not redirect.endswith("/oidc/callback"):
            raise IdentityProviderError("the redirect URI is the portal's https://HOST[:PORT]/oidc/callback")
        client_id = (self.client_id or "").strip()
        if not client_id or len(client_id) > 200 or not _VALUE.fullmatch(client_id):
            raise IdentityProviderError("a client id is 1-200 printable characters")
        if self.client_auth not in CLIENT_AUTH:
            raise IdentityProviderError(f"client authentication is one of {', '.join(CLIENT_AUTH)}")
        secret = self.client_secret or None
        if self.client_auth == "private_key_jwt" and secret:
            raise IdentityProviderError("private_key_jwt needs no secret: the gateway makes the key")
        if self.client_auth != "private_key_jwt" and (not secret or len(secret) < 16):
            raise IdentityProviderError(f"{self.client_auth} needs the client secret (16 characters or more)")
        for name, claim in (("person claim", self.person_claim), ("role claim", self.role_claim)):
            if not _CLAIM.fullmatch(claim or ""):
                raise IdentityProviderError(f"the {name} is a claim name (letters, digits, _ : . / -)")
        role_map = dict(self.role_map or {})
        if not role_map:
            raise IdentityProviderError("map at least one value of the role claim to a role (--role VALUE=ROLE)")
        mapped = {}
        for value, role in role_map.items():
            value, role = str(value).strip(), str(role).strip().casefold()
            if not _VALUE.fullmatch(value):
                raise IdentityProviderError(f"a role claim value has 1-200 printable characters: {value!r}")
            if rules is not None and rules.configured and role not in rules.roles:
                raise IdentityProviderError(f"{role!r} is not a role of the roles file "
                                            f"({', '.join(sorted(rules.roles))})")
            mapped[value] = role
        acr = tuple(v.strip() for v in self.acr_values if v.strip())
        amr = tuple(v.strip() for v in self.amr_values if v.strip())
        if any(not _VALUE.fullmatch(v) for v in acr + amr):
            raise IdentityProviderError("an acr or amr value has 1-200 printable characters")
        if self.without_two_factors not in WITHOUT_TWO_FACTORS:
            raise IdentityProviderError(f"without two-factor evidence: one of {', '.join(WITHOUT_TWO_FACTORS)}")
        if not (acr or amr) and self.without_two_factors == "refuse":
            raise IdentityProviderError("say what counts as two factors (--acr or --amr), or choose "
                                        "--without-two-factors portal_totp")
        scopes = " ".join(dict.fromkeys(["openid", *(self.scopes or "").split()]))
        if len(scopes) > 200:
            raise IdentityProviderError("the scopes have at most 200 characters")
        return Registration(self.org_code.strip().upper()[:32], issuer,
                            client_id, redirect, self.client_auth, secret, self.person_claim, self.role_claim,
                            mapped, acr, amr, self.without_two_factors, scopes)


def _check_url(what: str, url: str, *, loopback_http: bool) -> None:
    parts = urlsplit(url)
    if len(url) > 500 or not parts.hostname or parts.query or parts.fragment or parts.username:
        raise IdentityProviderError(f"{what} is an https URL without query, fragment or credentials")
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and loopback_http and parts.hostname == "127.0.0.1":
        return  # tests only: refused at use unless CONTACTGATE_OIDC_INSECURE_HTTP_LOOPBACK is set
    raise IdentityProviderError(f"{what} must be https")


@dataclass(frozen=True)
class IdentityProvider:
    id: int
    org_code: str
    issuer: str
    client_id: str
    client_auth: str
    public_jwk: dict | None
    redirect_uri: str
    scopes: str
    person_claim: str
    role_claim: str
    role_map: dict
    acr_values: tuple
    amr_values: tuple
    without_two_factors: str
    status: str
    proposed_by: str
    proposed_at: dt.datetime
    decided_by: str | None
    reason: str | None

    def summary(self) -> str:
        two = " ".join([*(f"acr={v}" for v in self.acr_values), *(f"amr={v}" for v in self.amr_values)]) or "none"
        return (f"{self.org_code}'s provider {self.issuer} client {self.client_id} ({self.client_auth}); person "
                f"{self.person_claim}; role {self.role_claim} "
                + ", ".join(f"{k}->{v}" for k, v in sorted(self.role_map.items()))
                + f"; two factors: {two}, else {self.without_two_factors}")

    def as_json(self) -> dict:
        return {"id": self.id, "org": self.org_code, "issuer": self.issuer, "client_id": self.client_id,
                "client_auth": self.client_auth, "public_jwk": self.public_jwk, "redirect_uri": self.redirect_uri,
                "scopes": self.scopes, "person_claim": self.person_claim, "role_claim": self.role_claim,
                "role_map": self.role_map, "acr_values": list(self.acr_values), "amr_values": list(self.amr_values),
                "without_two_factors": self.without_two_factors, "status": self.status,
                "proposed_by": self.proposed_by, "decided_by": self.decided_by, "reason": self.reason}


def _from_row(row) -> IdentityProvider:
    return IdentityProvider(row.id, row.org_code, row.issuer, row.client_id, row.client_auth,
                            json.loads(row.public_jwk) if row.public_jwk else None, row.redirect_uri, row.scopes,
                            row.person_claim, row.role_claim, json.loads(row.role_map),
                            tuple(json.loads(row.acr_values)), tuple(json.loads(row.amr_values)),
                            row.without_two_factors, row.status, row.proposed_by, row.proposed_at, row.decided_by,
                            row.reason)


def _credential_context(org_code: str, client_id: str) -> str:
    return f"identity-provider:{org_code}:{client_id}"


def get(conn: Connection, idp_id: int, *, lock: bool = False) -> IdentityProvider | None:
    query = select(identity_providers).where(identity_providers.c.id == idp_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return _from_row(row) if row else None


def in_force(conn: Connection, org_code: str) -> IdentityProvider | None:
    """The organisation's approved provider, or None (its accreditation is checked by the caller)."""
    row = conn.execute(select(identity_providers).where(
        identity_providers.c.org_code == (org_code or "").strip().upper()[:32],
        identity_providers.c.status == "approved").order_by(identity_providers.c.id.desc())).first()
    return _from_row(row) if row else None


def listed(conn: Connection, *, org_code: str | None = None, everything: bool = False) -> list[IdentityProvider]:
    query = select(identity_providers).order_by(identity_providers.c.id)
    if org_code:
        query = query.where(identity_providers.c.org_code == org_code.strip().upper()[:32])
    if not everything:
        query = query.where(identity_providers.c.status.in_(("pending", "approved")))
    return [_from_row(r) for r in conn.execute(query)]


def client_credential(conn: Connection, idp: IdentityProvider) -> str:
    """The private JWK (JSON) or the client secret, unsealed: for the portal's token request only."""
    token = conn.execute(select(identity_providers.c.client_credential).where(
        identity_providers.c.id == idp.id)).scalar_one()
    return sealed.vault_of(conn).open(token, _credential_context(idp.org_code, idp.client_id))


FOUR_EYES = FourEyes(identity_providers, IdentityProviderError, "idp", ROLES, "registering an identity provider",
                     "identity provider proposal", get, reason_limit=1000)
run = FOUR_EYES.run  # fn(conn, trail, actor, *args) in one transaction; a refusal audited, then raised


def propose(conn: Connection, trail: audit.AuditTrail, actor: Officer, registration: Registration, now: dt.datetime,
            rules=None) -> IdentityProvider:
    """A proposed registration (private_key_jwt: with the key the gateway made for it; its public
    JWK is in the answer); a second officer approves it."""
    from joserfc.jwk import ECKey

    FOUR_EYES.require(actor)
    reg = registration.checked(rules)
    org = registry.get_org(conn, reg.org_code, with_pending=False)
    if org is None:
        raise IdentityProviderError(f"no organisation with code {reg.org_code!r}")
    if org.effective_status(now.date()) in ("revoked",):
        raise IdentityProviderError(f"{org.code} is revoked")
    pending = conn.execute(select(identity_providers.c.id).where(
        identity_providers.c.org_code == org.code, identity_providers.c.status == "pending")).first()
    if pending is not None:
        raise IdentityProviderError(f"proposal {pending.id} already proposes {org.code}'s provider: decline it first")
    _held_by_another(conn, org.code, reg.issuer, reg.client_id)
    public = None
    if reg.client_auth == "private_key_jwt":
        key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": CLIENT_KEY_ALG}, private=True)
        key.ensure_kid()
        credential = json.dumps(key.as_dict(private=True))
        public = json.dumps(key.as_dict(private=False))
    else:
        credential = reg.client_secret
    sealed_credential = sealed.vault_of(conn).seal(credential, _credential_context(org.code, reg.client_id))
    return FOUR_EYES.proposed(
        conn, trail, actor, now,
        org_code=org.code, issuer=reg.issuer, client_id=reg.client_id, client_auth=reg.client_auth,
        client_credential=sealed_credential, public_jwk=public, redirect_uri=reg.redirect_uri, scopes=reg.scopes,
        person_claim=reg.person_claim, role_claim=reg.role_claim, role_map=json.dumps(reg.role_map, sort_keys=True),
        acr_values=json.dumps(list(reg.acr_values)), amr_values=json.dumps(list(reg.amr_values)),
        without_two_factors=reg.without_two_factors)


def _held_by_another(conn: Connection, org_code: str, issuer: str, client_id: str) -> None:
    """Refused when another organisation's provider, in force or proposed, has this issuer and client
    id: the portal could not tell their ID tokens apart (the audience is the client id), so one
    organisation's people would sign in as the other's."""
    same_issuer = {issuer, issuer.rstrip("/"), issuer.rstrip("/") + "/"}  # one provider, however written
    row = conn.execute(select(identity_providers.c.id, identity_providers.c.org_code).where(
        identity_providers.c.issuer.in_(same_issuer), identity_providers.c.client_id == client_id,
        identity_providers.c.org_code != org_code,
        identity_providers.c.status.in_(("pending", "approved")))).first()
    if row is not None:
        raise IdentityProviderError(f"the client id {client_id!r} of {issuer} is already registered for {row.org_code} "
                                    f"(provider {row.id}): each organisation needs its own client at the provider")


def approve(conn: Connection, trail: audit.AuditTrail, actor: Officer, idp_id: int, now: dt.datetime) -> IdentityProvider:
    """In force from now; the organisation's provider before it (if any) is superseded, and its
    sessions end at their next page."""
    idp = FOUR_EYES.pending(conn, actor, idp_id)
    org = registry.get_org(conn, idp.org_code, with_pending=False)
    if org is None or org.effective_status(now.date()) != "accredited":
        raise IdentityProviderError(f"{idp.org_code} is not accredited now: its provider cannot be approved")
    _held_by_another(conn, idp.org_code, idp.issuer, idp.client_id)
    conn.execute(update(identity_providers).where(identity_providers.c.org_code == idp.org_code,
                                                  identity_providers.c.status == "approved")
                 .values(status="superseded", decided_at=now))
    return FOUR_EYES.approved(conn, trail, actor, idp, now)


def decline(conn: Connection, trail: audit.AuditTrail, actor: Officer, idp_id: int, reason: str,
            now: dt.datetime) -> IdentityProvider:
    return FOUR_EYES.decline(conn, trail, actor, idp_id, reason, now)


def remove(conn: Connection, trail: audit.AuditTrail, actor: Officer, idp_id: int, reason: str,
           now: dt.datetime) -> IdentityProvider:
    """Takes access away (one officer may): no more sign-ins through it; its sessions end."""
    FOUR_EYES.require(actor)
    reason = (reason or "").strip()
    if not reason:
        raise IdentityProviderError("a reason is required")
    idp = get(conn, idp_id, lock=True)
    if idp is None or idp.status not in ("approved", "pending"):
        raise IdentityProviderError(f"no identity provider {idp_id} in force or pending")
    conn.execute(update(identity_providers).where(identity_providers.c.id == idp.id).values(
        status="removed", decided_by=actor.officer_id, decided_at=now, reason=reason[:1000]))
    trail.append(conn, FOUR_EYES.entry("idp.remove", actor, idp.org_code,
                                       f"removed {idp.id} ({idp.issuer}): {reason}"))
    return get(conn, idp.id)

