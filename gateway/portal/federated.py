"""Signing in to the portal through the organisation's own OpenID provider (issue 27): what the
pages (gateway.portal.oidc_views) do in the database and the audit; the protocol is gateway.portal.oidc.

- `begin`: a sign-in under way (``portal_oidc_requests``: state's SHA-256, nonce, PKCE verifier).
- `complete`: the provider's answer. The request is spent first, in its own transaction, so a
  replayed answer (the same state, the same code) is refused whatever follows; then the code is
  exchanged, the ID token checked, and the person found: the ``person_claim`` is their user id in
  the organisation, and the record is bound to the token's subject (``portal_oidc_subjects``: the
  first subject seen holds it; another subject naming it is refused); the ``role_claim``'s mapped value their role (written to their record, audited).
  No local record: one is made just in time, without vetting dates, so the sign-in is held until
  their user administrator records them. The local record's vetting dates and the organisation's
  accreditation decide, whatever the provider says.
- Two factors: the token's ``acr``/``amr`` as the registration says, else refused, or (``portal_totp``)
  the practitioner's own portal TOTP code (`step_up`), once.
- Every sign-in is a ``portal.login`` entry naming the provider and the subject; every refusal one
  saying why (nobody signed in). A provider's back-channel logout (`backchannel_logout`) ends the
  subject's sessions; `end_session_url` is where the portal's sign-out sends the browser next.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection, Engine

from gateway import audit, officers
from gateway.db import (portal_oidc_requests, portal_oidc_seen, portal_oidc_sessions, portal_oidc_subjects,
                        portal_practitioners, portal_sessions)
from gateway.index import sealed
from gateway.portal import accounts, oidc
from gateway.portal.accounts import PortalError
from gateway.trust import identity_providers as idps

log = logging.getLogger(__name__)

SAID = "Sign-in through your organisation refused."


class FederatedRefused(PortalError):
    """A federated sign-in refused: ``said`` is what the person is told; str() what the audit says."""

    def __init__(self, why: str, said: str = SAID):
        super().__init__(why)
        self.said = said


@dataclass(frozen=True)
class Done:
    practitioner: accounts.Practitioner | None
    token: str | None = None  # the portal session's token (signed in)
    step_up: str | None = None  # the step-up's token (the portal's own code is asked for next)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _audit(conn: Connection, trail: audit.AuditTrail, org_code: str | None, user_id: str | None, role: str | None,
           detail: str, outcome: str, source: str | None = None) -> None:
    trail.append(conn, audit.Entry(operation="portal.login", outcome=outcome, org_code=org_code, user_id=user_id,
                                   role=role, detail=detail[:2000], source_address=(source or None) and source[:64]))


def provider_in_force(conn: Connection, org_code: str, today: dt.date, orgs_in_force) -> idps.IdentityProvider:
    idp = idps.in_force(conn, org_code)
    if idp is None:
        raise FederatedRefused(f"{(org_code or '')[:32]!r} has no identity provider in force",
                               "Your organisation has no identity provider registered with the portal: sign in "
                               "with your password and code.")
    why = orgs_in_force(conn, idp.org_code)
    if why is not None:
        raise FederatedRefused(f"provider {idp.id}: {why}", f"Sign-in refused: {why}.")
    return idp


def begin(engine: Engine, providers: oidc.Providers, settings, org_code: str, now: dt.datetime,
          orgs_in_force) -> tuple[str, str]:
    """(the provider's authorisation URL for a new sign-in, its state: for the browser's cookie)."""
    with engine.connect() as conn:
        idp = provider_in_force(conn, (org_code or "").strip().upper()[:32], now.date(), orgs_in_force)
    provider = providers.provider(idp.issuer)
    state, nonce, verifier = oidc.new_request()
    url = oidc.authorisation_url(idp, provider, settings, state, nonce, verifier)
    with engine.begin() as conn:
        conn.execute(delete(portal_oidc_requests).where(
            portal_oidc_requests.c.created_at < now - dt.timedelta(minutes=2 * oidc.REQUEST_MINUTES)))
        conn.execute(portal_oidc_requests.insert().values(state_hash=oidc.state_hash(state), idp_id=idp.id,
                                                          nonce=nonce, code_verifier=verifier, created_at=now))
    return url, state


def refused_before_provider(engine: Engine, trail: audit.AuditTrail, org_code: str, why: str,
                            source: str | None) -> None:
    """A sign-in refused before the provider was asked (no provider in force, an organisation not in
    force, a provider that cannot be used): audited as every other refusal."""
    code = (org_code or "").strip().upper()[:32]
    with engine.begin() as conn:
        _audit(conn, trail, code or None, "(federated)", None,
               f"federated sign-in refused before the provider was asked: organisation {code!r}: {why}",
               "refused", source)


def _spend(engine: Engine, state: str, now: dt.datetime):
    """The request ``state`` names, spent now (once: a second use is a replay)."""
    with engine.begin() as conn:
        row = conn.execute(select(portal_oidc_requests).where(
            portal_oidc_requests.c.state_hash == oidc.state_hash(state or "")).with_for_update()).first()
        if row is None:
            raise oidc.ProviderMisbehaved("the answer's state is not a sign-in the portal started")
        if row.used_at is not None:
            raise oidc.ProviderMisbehaved("replayed: this sign-in's answer was used already")
        if now - accounts._aware(row.created_at) > dt.timedelta(minutes=oidc.REQUEST_MINUTES):
            raise oidc.ProviderMisbehaved(f"the answer came more than {oidc.REQUEST_MINUTES} minutes after the sign-in "
                                          f"started")
        conn.execute(update(portal_oidc_requests).where(portal_oidc_requests.c.state_hash == row.state_hash)
                     .values(used_at=now))
        return row


def complete(engine: Engine, trail: audit.AuditTrail, providers: oidc.Providers, settings, rules, *, state: str,
             code: str | None, error: str | None, now: dt.datetime, source: str | None, orgs_in_force) -> Done:
    """The provider's answer to a sign-in; FederatedRefused (audited) or Done."""
    idp = None
    try:
        row = _spend(engine, state, now)
        with engine.connect() as conn:
            idp = idps.get(conn, row.idp_id)
            if idp is None or idp.status != "approved":
                raise FederatedRefused(f"provider {row.idp_id} is no longer in force")
            why = orgs_in_force(conn, idp.org_code)
            if why is not None:
                raise FederatedRefused(f"provider {idp.id}: {why}", f"Sign-in refused: {why}.")
            credential = idps.client_credential(conn, idp)
        if error:
            raise FederatedRefused(f"the provider answered error={str(error)[:100]!r}")
        if not code:
            raise oidc.ProviderMisbehaved("the answer has no code")
        provider = providers.provider(idp.issuer)
        token = oidc.exchange_code(idp, provider, settings, credential, code, row.code_verifier)
        claims = oidc.verified_claims(token["id_token"], providers, provider, client_id=idp.client_id,
                                      now=now.timestamp(), nonce=row.nonce)
        if not oidc.at_hash_matches(claims, token.get("access_token"), oidc._header(token["id_token"])["alg"]):
            raise oidc.ProviderMisbehaved("the ID token's at_hash does not match the access token")
        return _signed_in(engine, trail, idp, claims, settings, rules, now, source, orgs_in_force)
    except (oidc.ProviderMisbehaved, oidc.ProviderUnreachable, PortalError) as exc:  # FederatedRefused among them
        said = exc.said if isinstance(exc, FederatedRefused) else (
            "Sign-in refused: your organisation's sign-in service could not be reached. Try again later."
            if isinstance(exc, oidc.ProviderUnreachable) else SAID)
        with engine.begin() as conn:
            where = f"provider {idp.id} ({idp.issuer})" if idp else "provider unknown"
            _audit(conn, trail, idp.org_code if idp else None, getattr(exc, "user_id", None) or "(federated)", None,
                   f"federated sign-in refused: {where}: {exc}", "refused", source)
        raise FederatedRefused(str(exc), said) from None


def _subject(idp: idps.IdentityProvider, claims: dict) -> str:
    return f"provider {idp.id} ({idp.issuer}) subject {str(claims.get('sub'))[:255]}"


def _refuse(why: str, said: str, user_id: str | None = None) -> FederatedRefused:
    refused = FederatedRefused(why, said)
    refused.user_id = user_id
    return refused


def _signed_in(engine: Engine, trail: audit.AuditTrail, idp: idps.IdentityProvider, claims: dict, settings, rules,
               now: dt.datetime, source: str | None, orgs_in_force) -> Done:
    person = claims.get(idp.person_claim)
    try:
        user_id = accounts.canonical_user(person if isinstance(person, str) else "")
    except PortalError:
        raise _refuse(f"{_subject(idp, claims)}: the {idp.person_claim} claim {str(person)[:80]!r} is not a user id",
                      SAID) from None
    role = oidc.role_of(idp, claims)
    if role is None:
        raise _refuse(f"{_subject(idp, claims)}: no value of {idp.role_claim} maps to a role",
                      "Sign-in refused: your organisation's sign-in gives you no role in the portal.", user_id)
    if rules is not None and rules.configured and role.casefold() not in rules.roles:
        # mapped when the registration was approved, since gone from (or never in) the portal's roles file
        raise _refuse(f"{_subject(idp, claims)}: {idp.role_claim} maps to {role!r}, not a role of the roles file",
                      "Sign-in refused: your organisation's sign-in gives you no role in the portal.", user_id)
    evidence = oidc.two_factors(idp, claims)
    for attempt in (1, 2):  # a second time when another sign-in of this person made the record or binding first
        try:
            found, why = _recorded(engine, trail, idp, claims, user_id, role, settings, rules, now, orgs_in_force)
            break
        except (IntegrityError, _Raced):
            if attempt == 2:
                raise _refuse(f"{_subject(idp, claims)}: another sign-in made or bound {idp.org_code}:{user_id} at "
                              f"the same moment, twice", "Sign-in refused: another sign-in as you was under way. "
                              "Try again.", user_id) from None
    if why is not None:
        raise _refuse(f"{_subject(idp, claims)}: {why}", f"Sign-in refused: {why}.", user_id)
    sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
    if evidence is None:
        if idp.without_two_factors != "portal_totp":
            raise _refuse(f"{_subject(idp, claims)}: no evidence of two factors (acr={claims.get('acr')!r} "
                          f"amr={claims.get('amr')!r})",
                          "Sign-in refused: your organisation's sign-in did not use two factors.", user_id)
        if not found.enrolled:
            raise _refuse(f"{_subject(idp, claims)}: no evidence of two factors, and no portal code enrolled",
                          "Sign-in refused: your organisation's sign-in did not use two factors, and you have no "
                          "portal authenticator: ask your user administrator.", user_id)
        step_up = secrets.token_urlsafe(32)
        with engine.begin() as conn:
            conn.execute(portal_oidc_requests.insert().values(
                state_hash=_hash("step-up:" + step_up), idp_id=idp.id, nonce="-", code_verifier="-", created_at=now,
                stepup_hash=_hash(step_up), org_code=found.org_code, user_id=found.user_id,
                subject=str(claims["sub"])[:255], sid=sid and sid[:255]))
            _audit(conn, trail, found.org_code, found.user_id, role,
                   f"{_subject(idp, claims)}: no evidence of two factors: the portal's own code asked for", "done",
                   source)
        return Done(found, step_up=step_up)
    with engine.begin() as conn:
        token = _new_session(conn, idp, found, str(claims["sub"])[:255], sid, settings, now)
        _audit(conn, trail, found.org_code, found.user_id, role,
               f"signed in through {_subject(idp, claims)}; two factors: {evidence}", "done", source)
    return Done(found, token)


class _Raced(Exception):
    """Another sign-in of the same person made their record between this one's look and its insert."""


def _recorded(engine: Engine, trail: audit.AuditTrail, idp: idps.IdentityProvider, claims: dict, user_id: str,
              role: str, settings, rules, now: dt.datetime, orgs_in_force):
    """The person's record (made at their first sign-in), bound to the token's subject and given the
    role the claim maps to, in one transaction; (the record, why it may not sign in or None)."""
    with engine.begin() as conn:
        found = accounts.get(conn, idp.org_code, user_id)
        if found is None:
            name = claims.get("name") if isinstance(claims.get("name"), str) else user_id
            try:
                found, _unused = accounts.create(
                    conn, trail, idp.org_code, user_id, accounts.Details(name.strip()[:200] or user_id, None,
                                                                         "(from provider)", None, None, None, None),
                    user_admin=False, created_by=f"provider {idp.id}", rules=rules, now=now,
                    audited_as=("portal.practitioner.add", user_id, None))
            except PortalError:
                if accounts.get(conn, idp.org_code, user_id) is None:
                    raise
                raise _Raced() from None  # made by another sign-in since this one looked
        _bind(conn, idp, found, claims, now)
        if found.role != role:
            conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == found.org_code,
                                                            portal_practitioners.c.user_id == found.user_id)
                         .values(role=role, updated_at=now))
            trail.append(conn, audit.Entry(
                operation="portal.practitioner.role", outcome="done", org_code=found.org_code, user_id=found.user_id,
                role=role, detail=f"role {found.role or '-'} -> {role} from the claim {idp.role_claim} "
                                  f"({_subject(idp, claims)}), as the organisation's registration maps it"))
            found = accounts.get(conn, idp.org_code, user_id)
        why = found.lapsed(settings, now.date()) or orgs_in_force(conn, found.org_code)
    return found, why


def _bind(conn: Connection, idp: idps.IdentityProvider, found: accounts.Practitioner, claims: dict,
          now: dt.datetime) -> None:
    """The record bound to the token's subject (the first time: whoever the provider first signs in as
    it, or whose sign-in made it); refused when it is bound to another subject of this issuer, or the
    subject to another record: the person claim (a user name, often editable or reused at the
    provider) never moves a record to another person by itself."""
    subject = str(claims["sub"])[:255]
    bound = conn.execute(select(portal_oidc_subjects.c.subject).where(
        portal_oidc_subjects.c.org_code == found.org_code, portal_oidc_subjects.c.user_id == found.user_id,
        portal_oidc_subjects.c.issuer == idp.issuer)).scalar()
    if bound is not None and bound != subject:
        raise _refuse(f"{_subject(idp, claims)}: {found.org_code}:{found.user_id} is bound to another subject of "
                      f"{idp.issuer} ({bound[:80]})", SAID, found.user_id)
    other = conn.execute(select(portal_oidc_subjects.c.user_id).where(
        portal_oidc_subjects.c.org_code == found.org_code, portal_oidc_subjects.c.issuer == idp.issuer,
        portal_oidc_subjects.c.subject == subject)).scalar()
    if other is not None and other != found.user_id:
        raise _refuse(f"{_subject(idp, claims)}: the subject is bound to {found.org_code}:{other}, not "
                      f"{found.user_id}", SAID, found.user_id)
    if bound is None:
        conn.execute(portal_oidc_subjects.insert().values(org_code=found.org_code, user_id=found.user_id,
                                                          issuer=idp.issuer, subject=subject, bound_at=now))


def _new_session(conn: Connection, idp: idps.IdentityProvider, found: accounts.Practitioner, subject: str,
                 sid: str | None, settings, now: dt.datetime) -> str:
    accounts._forget_stale_sessions(conn, found.org_code, found.user_id, settings, now)
    accounts.sweep(conn, settings, now)
    conn.execute(delete(portal_oidc_sessions).where(
        portal_oidc_sessions.c.token_hash.not_in(select(portal_sessions.c.token_hash))))
    token = secrets.token_urlsafe(32)
    conn.execute(portal_sessions.insert().values(
        token_hash=accounts._token_hash(token), org_code=found.org_code, user_id=found.user_id, created_at=now,
        last_seen=now, expires_at=now + dt.timedelta(hours=settings.session_max_hours)))
    conn.execute(portal_oidc_sessions.insert().values(token_hash=accounts._token_hash(token), idp_id=idp.id,
                                                      subject=subject, sid=sid and sid[:255]))
    return token


def step_up(engine: Engine, trail: audit.AuditTrail, settings, step_up_token: str, code: str, now: dt.datetime,
            source: str | None, orgs_in_force) -> Done:
    """The portal's own TOTP code after a provider's sign-in without two factors: one try."""
    with engine.begin() as conn:
        row = conn.execute(select(portal_oidc_requests).where(
            portal_oidc_requests.c.stepup_hash == _hash(step_up_token or "-")).with_for_update()).first()
        if row is None or row.used_at is not None or \
                now - accounts._aware(row.created_at) > dt.timedelta(minutes=oidc.REQUEST_MINUTES):
            _audit(conn, trail, row.org_code if row else None, row.user_id if row else "(federated)", None,
                   "federated sign-in refused: step-up unknown, used or expired", "refused", source)
            return Done(None)
        conn.execute(update(portal_oidc_requests).where(portal_oidc_requests.c.state_hash == row.state_hash)
                     .values(used_at=now))
        idp = idps.get(conn, row.idp_id)
        stored = conn.execute(select(portal_practitioners).where(
            portal_practitioners.c.org_code == row.org_code, portal_practitioners.c.user_id == row.user_id)).first()
        secret = sealed.vault_of(conn).open(stored.totp_secret, accounts.totp_context(row.org_code, row.user_id))
        step = officers._matching_step(secret, code, now)
        found = accounts._from_row(stored)
        why = None
        if idp is None or idp.status != "approved":
            why = "the provider is no longer in force"
        elif step is None or (stored.totp_last_step is not None and step <= stored.totp_last_step):
            why = "wrong or used portal code"
        else:
            why = found.lapsed(settings, now.date()) or orgs_in_force(conn, found.org_code)
        subject = f"provider {row.idp_id} ({idp.issuer if idp else '?'}) subject {row.subject}"
        if why is not None:
            _audit(conn, trail, row.org_code, row.user_id, None, f"federated sign-in refused: {subject}: step-up: {why}",
                   "refused", source)
            return Done(None)
        conn.execute(update(portal_practitioners).where(portal_practitioners.c.org_code == row.org_code,
                                                        portal_practitioners.c.user_id == row.user_id)
                     .values(totp_last_step=step))
        token = _new_session(conn, idp, found, row.subject, row.sid, settings, now)
        _audit(conn, trail, row.org_code, row.user_id, found.role,
               f"signed in through {subject}; two factors: provider + portal code", "done", source)
        return Done(found, token)


# ---- a federated session: still good?, sign-out, back-channel logout ------------------------------

def end_session_url(conn: Connection, providers: oidc.Providers, settings, token_hash: str) -> str | None:
    """Where the browser goes after the portal's sign-out: the provider's end_session_endpoint
    (RP-initiated logout), back to the portal's sign-in page; None when not federated or not offered."""
    idp_id = conn.execute(select(portal_oidc_sessions.c.idp_id).where(
        portal_oidc_sessions.c.token_hash == token_hash)).scalar()
    idp = None if idp_id is None else idps.get(conn, idp_id)
    if idp is None:
        return None
    try:
        endpoint = providers.provider(idp.issuer).endpoint("end_session_endpoint", settings, required=False)
    except (oidc.ProviderMisbehaved, oidc.ProviderUnreachable) as exc:  # signed out of the portal all the same
        log.warning("sign-out: the provider's end-session endpoint is not offered (%s)", exc)
        return None
    if endpoint is None:
        return None
    parts = urlsplit(idp.redirect_uri)
    back = f"{parts.scheme}://{parts.netloc}/login"
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(
        {"client_id": idp.client_id, "post_logout_redirect_uri": back})


def backchannel_logout(engine: Engine, trail: audit.AuditTrail, providers: oidc.Providers, settings, org_code: str,
                       logout_token: str, now: dt.datetime, source: str | None) -> int:
    """End the sessions a provider's verified logout token names (its sid, else its subject): how
    many; ProviderMisbehaved / FederatedRefused (audited) when refused."""
    org_code = (org_code or "").strip().upper()[:32]
    idp = None
    try:
        with engine.connect() as conn:
            idp = idps.in_force(conn, org_code)
        if idp is None:
            raise FederatedRefused(f"{org_code!r} has no identity provider in force")
        provider = providers.provider(idp.issuer)
        claims = oidc.verified_claims(logout_token, providers, provider, client_id=idp.client_id,
                                      now=now.timestamp(), nonce=None, logout=True)
        with engine.begin() as conn:
            conn.execute(delete(portal_oidc_seen).where(portal_oidc_seen.c.expires_at < now))
            seen = _hash(f"{idp.id}:{claims['jti']}")
            if conn.execute(select(portal_oidc_seen.c.jti_hash).where(portal_oidc_seen.c.jti_hash == seen)).first():
                raise oidc.ProviderMisbehaved("replayed logout token (its jti was seen)")
            conn.execute(portal_oidc_seen.insert().values(
                jti_hash=seen, expires_at=now + dt.timedelta(seconds=oidc.MAX_TOKEN_AGE_S + 2 * oidc.SKEW_S)))
            query = select(portal_oidc_sessions.c.token_hash).where(portal_oidc_sessions.c.idp_id == idp.id)
            if isinstance(claims.get("sid"), str):
                query = query.where(portal_oidc_sessions.c.sid == claims["sid"])
            if isinstance(claims.get("sub"), str):
                query = query.where(portal_oidc_sessions.c.subject == claims["sub"])
            ended = [r.token_hash for r in conn.execute(query)]
            users = set()
            for token_hash in ended:
                row = conn.execute(select(portal_sessions.c.org_code, portal_sessions.c.user_id).where(
                    portal_sessions.c.token_hash == token_hash)).first()
                if row is not None:
                    users.add(f"{row.org_code}:{row.user_id}")
                accounts.drop_session(conn, token_hash)
            _audit(conn, trail, idp.org_code, None, None,
                   f"back-channel logout from provider {idp.id} ({idp.issuer}) sub={claims.get('sub')} "
                   f"sid={claims.get('sid')}: {len(ended)} session(s) ended ({', '.join(sorted(users)) or 'none'})",
                   "done", source)
        return len(ended)
    except (oidc.ProviderMisbehaved, oidc.ProviderUnreachable, FederatedRefused) as exc:
        with engine.begin() as conn:
            _audit(conn, trail, org_code or None, None, None,
                   f"back-channel logout refused: provider {idp.id if idp else '?'}: {exc}", "refused", source)
        raise
