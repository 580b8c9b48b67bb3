"""Officers as accounts: roles, an argon2id password and a TOTP second factor, sign-in sessions.

An officer command acts as the officer signed in (`contactgate login`), never as a name typed on
the command line. Four-eyes rules (gateway.trust.registry) compare these accounts.

- Ids are lower-case letters, digits, '.', '-' and '_' (2-64): ``Officer.A`` signs in as
  ``officer.a``; an id with spaces or control characters is refused, never trimmed into another.
- Passwords: argon2id (argon2-cffi's defaults), at least 12 characters. TOTP: RFC 6238, 6 digits,
  30 s, one step of drift either way, and each code is good once (the step is remembered).
- A failed sign-in (unknown officer, wrong password, wrong code, disabled, locked) is audited and
  answered the same way, and costs the same: every attempt is one argon2id verification (of the
  account's hash, or of a dummy one for an unknown id), whatever is refused and however early it is
  known, so neither the answer nor its time says whether an id exists or is locked. The
  verification runs with no transaction open (`sign_in`): a flood of attempts holds neither
  SQLite's write lock nor an officer's row. (The console also refuses, unchecked and whatever the
  id, the attempts of an address beyond its rate: gateway.console.throttle.)
- Failures are counted per source: the client's address at the console (an IPv6 address by its
  /64), ``local:uid N (name)`` at the command line (`source_key`; the real uid, which the caller
  cannot choose as they choose $USER). `Settings.lockout_failures` in a row from one source lock
  that source out of that account for `Settings.lockout_minutes`; the officer still signs in from
  anywhere else. Failures from every source together within `Settings.lockout_global_minutes`
  reaching `Settings.lockout_global_failures` (a limit one source cannot reach:
  gateway.config.check_lockout) start the global back-off: for `Settings.lockout_global_minutes`
  the account is locked from every source **but those the officer signed in from in the last
  `Settings.signin_known_source_days`** (``officer_known_sources``). So a guesser with many
  addresses is still slowed everywhere they could be, and strangers, however many addresses they
  hold, cannot lock the officer out of where they work. Attempts against a lock are refused
  without being counted. `reset` lifts both locks and forgets the known sources.
- Sessions: a random token in a 0600 file (``CONTACTGATE_SESSION``, default under the user's config
  directory); the database keeps only its SHA-256. A session ends after
  `Settings.session_idle_minutes` without a command, `Settings.session_max_hours` after sign-in, at
  `logout`, or when the officer is disabled or reset.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Connection, Engine

from gateway import audit, files
from gateway.db import officer_known_sources, officer_sessions, officer_signin_failures, officers, reader
from gateway.index import sealed
from gateway.officer_roles import ROLES

MIN_PASSWORD = 12
TOTP_INTERVAL = 30
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
_HASHER = PasswordHasher()  # argon2id
SESSION_VARIABLE = "CONTACTGATE_SESSION"


class OfficerError(Exception):
    """An officer request that is refused (the message says why; it never says which factor failed)."""


class NotSignedIn(OfficerError):
    """No valid session: the command needs `contactgate login`."""


@dataclass(frozen=True)
class Officer:
    officer_id: str
    name: str
    roles: frozenset[str]
    must_change_password: bool = False
    disabled: bool = False
    locked_until: dt.datetime | None = None

    def holds(self, *roles: str) -> bool:
        """Whether the officer holds any of ``roles`` (a senior officer can do what an officer can)."""
        held = set(self.roles) | ({"officer"} if "senior_officer" in self.roles else set())
        return bool(held & set(roles))

    @property
    def role_text(self) -> str:
        return ",".join(sorted(self.roles))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def canonical_id(text: str) -> str:
    """The account an id names: NFKC, lower-case. Whitespace or anything else odd is refused, not trimmed."""
    folded = unicodedata.normalize("NFKC", text or "").lower()
    if not _ID.fullmatch(folded):
        raise OfficerError("an officer id is 2-64 letters, digits, '.', '-' or '_' (no spaces)")
    return folded


def check_roles(roles) -> frozenset[str]:
    chosen = frozenset(r.strip().lower() for r in roles)
    if not chosen or not chosen <= set(ROLES):
        raise OfficerError(f"roles must be one or more of {', '.join(ROLES)}")
    return chosen


def check_password(password: str) -> str:
    if password is None or len(password) < MIN_PASSWORD or not password.strip():
        raise OfficerError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise OfficerError("a password has at most 1024 characters")
    return password


def check_totp_secret(secret: str) -> str:
    cleaned = (secret or "").replace(" ", "").upper()
    try:
        raw = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except ValueError:
        raise OfficerError("a TOTP secret is base32 (A-Z, 2-7)") from None
    if len(raw) < 16:
        raise OfficerError("a TOTP secret has at least 128 bits (26 base32 characters)")
    return cleaned


def new_totp_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends


def provisioning_uri(officer_id: str, secret: str, issuer: str = "ContactGate") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=officer_id, issuer_name=issuer)


def terminal_qr(uri: str) -> str:
    """The enrolment QR code as text for a terminal (an authenticator app scans it)."""
    import io

    import qrcode

    code = qrcode.QRCode(border=2)
    code.add_data(uri)
    out = io.StringIO()
    code.print_ascii(out=out, invert=True)
    return out.getvalue()


def _officer_from_row(row) -> Officer:
    return Officer(officer_id=row.officer_id, name=row.name, roles=frozenset(r for r in row.roles.split(",") if r),
                   must_change_password=bool(row.must_change_password), disabled=row.disabled_at is not None,
                   locked_until=_aware(row.locked_until))


def get(conn: Connection, officer_id: str) -> Officer | None:
    row = conn.execute(select(officers).where(officers.c.officer_id == officer_id)).first()
    return _officer_from_row(row) if row else None


def list_all(conn: Connection) -> list[Officer]:
    return [_officer_from_row(r) for r in conn.execute(select(officers).order_by(officers.c.officer_id))]


def count(conn: Connection) -> int:
    return len(conn.execute(select(officers.c.officer_id)).all())


def _audit(conn: Connection, trail: audit.AuditTrail, operation: str, actor: Officer | None, detail: str,
           outcome: str = "done", user_id: str | None = None) -> None:
    trail.append(conn, audit.Entry(
        operation=operation, outcome=outcome, user_id=actor.officer_id if actor else user_id,
        role=actor.role_text if actor else ("operator" if user_id is None else None), detail=detail))


def require(actor: Officer, *roles: str, action: str) -> None:
    if not actor.holds(*roles):
        raise OfficerError(f"{action} needs the role {' or '.join(roles)}; {actor.officer_id} holds "
                           f"{actor.role_text or 'none'}")


def check_password_hash(encoded: str) -> str:
    """An argon2id hash made elsewhere (`init --officers` may carry one instead of the password)."""
    if not isinstance(encoded, str) or not encoded.startswith("$argon2id$"):
        raise OfficerError("a password hash must be an argon2id hash ($argon2id$...)")
    try:
        _HASHER.check_needs_rehash(encoded)
    except (ValueError, InvalidHashError):
        raise OfficerError("the password hash is not a readable argon2id hash") from None
    return encoded


def create(conn: Connection, trail: audit.AuditTrail, actor: Officer | None, officer_id: str, name: str,
           roles, password: str | None, totp_secret: str, *, must_change_password: bool,
           password_hash: str | None = None) -> Officer:
    """A new account. ``actor`` None only when `init` makes the first officers (audited as the operator).
    ``password_hash`` (argon2id) instead of ``password``: for automated set-up that keeps no password."""
    if actor is not None:
        require(actor, "senior_officer", action="adding an officer")
    officer_id = canonical_id(officer_id)
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise OfficerError("an officer's name must not be blank (at most 200 characters)")
    chosen = check_roles(roles)
    if password_hash is not None and password is None:
        encoded = check_password_hash(password_hash)
    else:
        encoded = _HASHER.hash(check_password(password))
    secret = check_totp_secret(totp_secret)
    if get(conn, officer_id) is not None:
        raise OfficerError(f"officer {officer_id!r} already exists")
    now = _now()
    conn.execute(officers.insert().values(
        officer_id=officer_id, name=name, roles=",".join(sorted(chosen)), password_hash=encoded,
        must_change_password=must_change_password,
        totp_secret=sealed.vault_of(conn).seal(secret, sealed.officer_totp_context(officer_id)),
        failed_signins=0, created_by=actor.officer_id if actor else None, created_at=now, updated_at=now))
    _audit(conn, trail, "officer.add", actor, f"added officer {officer_id} ({name}) roles={','.join(sorted(chosen))}")
    return get(conn, officer_id)


def _for_change(conn: Connection, officer_id: str) -> Officer:
    row = conn.execute(select(officers).where(officers.c.officer_id == canonical_id(officer_id))
                       .with_for_update()).first()
    if row is None:
        raise OfficerError(f"no officer {canonical_id(officer_id)!r}")
    return _officer_from_row(row)


def disable(conn: Connection, trail: audit.AuditTrail, actor: Officer, officer_id: str, reason: str) -> Officer:
    require(actor, "senior_officer", action="disabling an officer")
    target = _for_change(conn, officer_id)
    if not (reason or "").strip():
        raise OfficerError("a reason is required")
    if target.officer_id == actor.officer_id:
        raise OfficerError("an officer cannot disable their own account; ask another senior officer")
    if target.disabled:
        raise OfficerError(f"officer {target.officer_id} is already disabled")
    conn.execute(update(officers).where(officers.c.officer_id == target.officer_id).values(
        disabled_at=_now(), disabled_reason=reason.strip(), updated_at=_now()))
    conn.execute(delete(officer_sessions).where(officer_sessions.c.officer_id == target.officer_id))
    _audit(conn, trail, "officer.disable", actor, f"disabled officer {target.officer_id}: {reason.strip()}")
    return get(conn, target.officer_id)


def reset(conn: Connection, trail: audit.AuditTrail, actor: Officer, officer_id: str, password: str,
          totp_secret: str) -> Officer:
    """A new one-time password (changed at the next sign-in) and a new TOTP secret; sessions end; an
    account that was disabled or locked is enabled again; where it signed in before is forgotten."""
    require(actor, "senior_officer", action="resetting an officer")
    target = _for_change(conn, officer_id)
    if target.officer_id == actor.officer_id:
        raise OfficerError("an officer cannot reset their own account; ask another senior officer")
    check_password(password)
    secret = check_totp_secret(totp_secret)
    conn.execute(update(officers).where(officers.c.officer_id == target.officer_id).values(
        password_hash=_HASHER.hash(password), must_change_password=True,
        totp_secret=sealed.vault_of(conn).seal(secret, sealed.officer_totp_context(target.officer_id)), totp_last_step=None,
        failed_signins=0, locked_until=None, failures_since=None, disabled_at=None, disabled_reason=None,
        updated_at=_now()))
    conn.execute(delete(officer_sessions).where(officer_sessions.c.officer_id == target.officer_id))
    conn.execute(delete(officer_signin_failures).where(officer_signin_failures.c.officer_id == target.officer_id))
    # Where the account signed in before may be where whoever made the reset necessary signed in.
    conn.execute(delete(officer_known_sources).where(officer_known_sources.c.officer_id == target.officer_id))
    _audit(conn, trail, "officer.reset", actor, f"reset officer {target.officer_id} (new password and TOTP secret)")
    return get(conn, target.officer_id)


# ---- signing in ------------------------------------------------------------------------------------

_DUMMY_HASH = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def _matching_step(secret: str, code: str, now: dt.datetime) -> int | None:
    code = (code or "").strip()
    if not re.fullmatch(r"\d{6}", code):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // TOTP_INTERVAL
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.at(step * TOTP_INTERVAL), code):
            return step
    return None


def local_source() -> str:
    """Where a command comes from: this machine's account that runs it, by its real uid (a caller
    chooses $USER and $LOGNAME, never their uid), with its name from the password database for
    the reader: ``local:uid 1000 (alice)``. What the command line's sign-in failures are counted
    against, and the origin of its audit entries."""
    import pwd

    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without an entry (a container's arbitrary user)
        return f"local:uid {uid}"
    return f"local:uid {uid} ({name})"[:64]


def source_key(address: str | None) -> str:
    """What a sign-in's failures are counted against: an IPv4 address as it is; an IPv6 address by
    its /64 (one subscriber's network holds billions of addresses, and a stranger could otherwise
    move to the next after each lock); an IPv4-mapped IPv6 address as its IPv4; anything else (the
    command line's ``local:uid N (name)``) as it is, at most 64 characters."""
    text = (address or "").strip() or "unknown"
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _password_matches(encoded: str, password: str) -> bool:
    try:
        return _HASHER.verify(encoded, password or "")
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class SignIn:
    officer: Officer | None  # None: refused
    refusal: str | None = None  # for the audit trail only; the officer is told just "refused"
    token: str | None = None


@dataclass(frozen=True)
class _Checked:
    """What one attempt's password and code were checked against, and what the checks found. Made
    with no transaction open; the write that follows takes it only if the account still holds the
    same hash and secret (a reset in between makes the check stale)."""

    password_hash: str | None
    totp_secret: str | None  # opened (`keys rotate` may seal it afresh meanwhile: the same secret)
    password_ok: bool
    step: int | None  # the TOTP step the code matched, if it did
    new_hash: str | None  # the password hashed again, when argon2's parameters have changed


def sign_in(engine: Engine, trail: audit.AuditTrail, officer_id: str, password: str, code: str, *,
            settings, source: str | None, now: dt.datetime | None = None, open_session: bool = True) -> SignIn:
    """Check password and code; audit the attempt either way, in a transaction of its own that is
    committed whatever the answer (a failure's count and audit record must stay). ``source``: where
    the attempt comes from (the client's address; ``local:uid N (name)`` for the command line), what
    failures are counted against.

    The argon2id verification (and the code's) is done with no transaction open: the account is
    read without a lock, checked, and only then is the short write transaction begun that locks the
    account, decides with what it holds then, counts or clears the failures and opens the session.
    On SQLite a write transaction holds the whole database's write lock, and on PostgreSQL the row
    lock would queue every other sign-in of the officer: neither is held for the ~0.1-0.5 s of a
    password check, so a flood of sign-ins holds up neither the gateway's own writes nor the officer.

    ``open_session=False`` is a step-up: a signed-in officer proves again that they are at the
    keyboard before an approval, a revocation or a trust change (the web console). The same rules
    hold (each code good once, failures count towards the locks); no new session is opened."""
    now = now or _now()
    try:
        wanted = canonical_id(officer_id)
    except OfficerError:
        wanted = None
    with reader(engine).connect() as conn:  # no lock, and on SQLite no write lock: a deferred read
        seen = None if wanted is None else conn.execute(
            select(officers.c.password_hash, officers.c.totp_secret).where(officers.c.officer_id == wanted)).first()
        secret = (None if seen is None else
                  sealed.vault_of(conn).open(seen.totp_secret, sealed.officer_totp_context(wanted)))
    # Whatever will be decided: one verification of the same cost on every path (an unknown id, a
    # disabled or locked account, a wrong password or code).
    password_ok = _password_matches(seen.password_hash if seen is not None else _dummy_hash(), password)
    step = _matching_step(secret, code, now) if secret is not None else None
    new_hash = (_HASHER.hash(password) if seen is not None and password_ok and step is not None
                and _HASHER.check_needs_rehash(seen.password_hash) else None)
    checked = _Checked(seen.password_hash if seen is not None else None, secret, password_ok, step, new_hash)
    with engine.begin() as conn:
        return _decide(conn, trail, wanted, checked, settings=settings, where=source_key(source), now=now,
                       open_session=open_session)


def _decide(conn: Connection, trail: audit.AuditTrail, wanted: str | None, checked: _Checked, *, settings,
            where: str, now: dt.datetime, open_session: bool) -> SignIn:
    """The sign-in's outcome from the account as it is now (locked for the rest of the transaction)
    and what the checks found; its audit entry, counts and session."""
    operation = "officer.login" if open_session else "officer.step_up"
    row = None if wanted is None else conn.execute(
        select(officers).where(officers.c.officer_id == wanted).with_for_update()).first()

    def refuse(why: str) -> SignIn:
        _audit(conn, trail, operation, None, f"{'sign-in' if open_session else 'step-up'} refused: {why}",
               outcome="refused", user_id=wanted or "(invalid id)")
        return SignIn(None, why)

    if row is None:
        return refuse("no such officer")
    officer = _officer_from_row(row)
    if officer.disabled:
        return refuse("account disabled")
    pair = conn.execute(select(officer_signin_failures).where(
        officer_signin_failures.c.officer_id == row.officer_id, officer_signin_failures.c.source == where)).first()
    source_locked = _aware(pair.locked_until) if pair is not None else None
    if source_locked is not None and source_locked > now:
        return refuse(f"locked out from {where} until {source_locked:%Y-%m-%d %H:%M:%S}Z")
    if officer.locked_until is not None and officer.locked_until > now and not _known_source(
            conn, officer.officer_id, where, settings, now):
        return refuse(f"account locked on every address not used by the officer in the last "
                      f"{settings.signin_known_source_days} days, until {officer.locked_until:%Y-%m-%d %H:%M:%S}Z")
    secret_now = sealed.vault_of(conn).open(row.totp_secret, sealed.officer_totp_context(officer.officer_id))
    if row.password_hash != checked.password_hash or not hmac.compare_digest(secret_now, checked.totp_secret or ""):
        return refuse("the account's password or authenticator changed during the sign-in (not counted)")
    step = checked.step
    code_ok = step is not None and (row.totp_last_step is None or step > row.totp_last_step)
    if not (checked.password_ok and code_ok):
        why = ("wrong password" if not checked.password_ok else
               "code already used" if step is not None else "wrong code")
        return refuse(why + _count_failure(conn, row, pair, where, settings, now))
    conn.execute(delete(officer_signin_failures).where(
        officer_signin_failures.c.officer_id == officer.officer_id, officer_signin_failures.c.source == where))
    values = {"totp_last_step": step, "updated_at": now}  # the global count stays: it measures guessing
    if checked.new_hash is not None:
        values["password_hash"] = checked.new_hash
    conn.execute(update(officers).where(officers.c.officer_id == officer.officer_id).values(**values))
    _remember_source(conn, officer.officer_id, where, settings, now)
    if not open_session:
        _audit(conn, trail, operation, officer, "confirmed password and code")
        return SignIn(officer, None, None)
    token = secrets.token_urlsafe(32)
    conn.execute(officer_sessions.insert().values(
        token_hash=_token_hash(token), officer_id=officer.officer_id, created_at=now, last_seen=now,
        expires_at=now + dt.timedelta(hours=settings.session_max_hours)))
    _audit(conn, trail, "officer.login", officer, "signed in")
    return SignIn(officer, None, token)


def _known_source(conn: Connection, officer_id: str, where: str, settings, now: dt.datetime) -> bool:
    """Whether the officer signed in from ``where`` within Settings.signin_known_source_days."""
    last = conn.execute(select(officer_known_sources.c.last_signed_in_at).where(
        officer_known_sources.c.officer_id == officer_id, officer_known_sources.c.source == where)).scalar()
    return last is not None and now - _aware(last) < dt.timedelta(days=settings.signin_known_source_days)


def _remember_source(conn: Connection, officer_id: str, where: str, settings, now: dt.datetime) -> None:
    """The officer signed in from ``where`` now (the account's row is locked: no other sign-in of
    theirs writes here at the same time); the sources they have not used for the period are forgotten."""
    found = conn.execute(update(officer_known_sources).where(
        officer_known_sources.c.officer_id == officer_id, officer_known_sources.c.source == where)
        .values(last_signed_in_at=now))
    if found.rowcount == 0:
        conn.execute(officer_known_sources.insert().values(officer_id=officer_id, source=where,
                                                           last_signed_in_at=now))
    conn.execute(delete(officer_known_sources).where(
        officer_known_sources.c.officer_id == officer_id,
        officer_known_sources.c.last_signed_in_at < now - dt.timedelta(days=settings.signin_known_source_days)))


def _count_failure(conn: Connection, row, pair, where: str, settings, now: dt.datetime) -> str:
    """Count a failed sign-in against its source and against the account's global window, and lock
    what reached its limit; what to add to the audit detail."""
    note = ""
    window = dt.timedelta(minutes=settings.lockout_global_minutes)
    recent = pair is not None and now - _aware(pair.updated_at) < window
    failures = (pair.failures if recent else 0) + 1
    values = {"failures": failures, "locked_until": None, "updated_at": now}
    if failures >= settings.lockout_failures:
        values.update(failures=0, locked_until=now + dt.timedelta(minutes=settings.lockout_minutes))
        note += f"; {where} locked out for {settings.lockout_minutes} minutes after {failures} failures"
    if pair is None:
        conn.execute(officer_signin_failures.insert().values(officer_id=row.officer_id, source=where, **values))
    else:
        conn.execute(update(officer_signin_failures).where(
            officer_signin_failures.c.officer_id == row.officer_id, officer_signin_failures.c.source == where)
            .values(**values))
    since = _aware(row.failures_since)
    in_window = since is not None and now - since < window
    total = (row.failed_signins or 0) + 1 if in_window else 1
    account = {"failed_signins": total, "failures_since": since if in_window else now, "updated_at": now}
    if total >= settings.lockout_global_failures:
        account.update(failed_signins=0, failures_since=None, locked_until=now + window)
        note += (f"; locked on every address for {settings.lockout_global_minutes} minutes after {total} "
                 f"failures from all addresses")
    conn.execute(update(officers).where(officers.c.officer_id == row.officer_id).values(**account))
    # Sources that have gone quiet are forgotten (a guesser with many addresses leaves a row each).
    conn.execute(delete(officer_signin_failures).where(
        officer_signin_failures.c.officer_id == row.officer_id, officer_signin_failures.c.updated_at < now - window,
        or_(officer_signin_failures.c.locked_until.is_(None), officer_signin_failures.c.locked_until < now)))
    return note


def refuse_unchecked(engine: Engine, trail: audit.AuditTrail, officer_id: str, *, why: str,
                     step_up: bool = False) -> None:
    """Audit a sign-in refused before any check (the console's throttle; the entry's origin says
    where from): nothing is counted against the account, whose existence plays no part."""
    try:
        wanted = canonical_id(officer_id)
    except OfficerError:
        wanted = None
    with engine.begin() as conn:
        _audit(conn, trail, "officer.step_up" if step_up else "officer.login", None,
               f"{'step-up' if step_up else 'sign-in'} refused unchecked: {why}", outcome="refused",
               user_id=wanted or "(invalid id)")


def change_password(conn: Connection, trail: audit.AuditTrail, actor: Officer, new_password: str) -> Officer:
    check_password(new_password)
    row = conn.execute(select(officers.c.password_hash).where(officers.c.officer_id == actor.officer_id)).one()
    try:
        if _HASHER.verify(row.password_hash, new_password):
            raise OfficerError("the new password must differ from the old one")
    except (VerificationError, InvalidHashError):
        pass
    conn.execute(update(officers).where(officers.c.officer_id == actor.officer_id).values(
        password_hash=_HASHER.hash(new_password), must_change_password=False, updated_at=_now()))
    _audit(conn, trail, "officer.password", actor, "changed own password")
    return get(conn, actor.officer_id)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def resume(conn: Connection, token: str, *, settings, now: dt.datetime | None = None) -> Officer:
    """The officer whose session ``token`` is, if it is still good; the session's idle clock restarts."""
    now = now or _now()
    row = conn.execute(select(officer_sessions).where(officer_sessions.c.token_hash == _token_hash(token))).first()
    if row is None:
        raise NotSignedIn("not signed in (the session ended or was never opened): run `contactgate login`")
    idle_limit = _aware(row.last_seen) + dt.timedelta(minutes=settings.session_idle_minutes)
    if now >= _aware(row.expires_at) or now >= idle_limit:
        conn.execute(delete(officer_sessions).where(officer_sessions.c.token_hash == row.token_hash))
        why = ("idle for more than %d minutes" % settings.session_idle_minutes if now >= idle_limit
               else "older than %d hours" % settings.session_max_hours)
        raise NotSignedIn(f"the session has expired ({why}): run `contactgate login` again")
    officer = get(conn, row.officer_id)
    if officer is None or officer.disabled:
        conn.execute(delete(officer_sessions).where(officer_sessions.c.token_hash == row.token_hash))
        raise NotSignedIn("the signed-in account is disabled")
    conn.execute(update(officer_sessions).where(officer_sessions.c.token_hash == row.token_hash)
                 .values(last_seen=now))
    return officer


def end_session(conn: Connection, trail: audit.AuditTrail, token: str) -> Officer | None:
    row = conn.execute(select(officer_sessions).where(officer_sessions.c.token_hash == _token_hash(token))).first()
    if row is None:
        return None
    conn.execute(delete(officer_sessions).where(officer_sessions.c.token_hash == row.token_hash))
    officer = get(conn, row.officer_id)
    _audit(conn, trail, "officer.logout", officer, "signed out")
    return officer


# ---- the session file --------------------------------------------------------------------------------

def session_path(env=None) -> Path:
    env = os.environ if env is None else env
    if env.get(SESSION_VARIABLE):
        return Path(env[SESSION_VARIABLE])
    config = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "contactgate" / "session.json"


def write_session(path: Path, officer_id: str, token: str, database: str) -> None:
    if not path.parent.exists():
        files.private_dir(path.parent)
    files.write_private(path, json.dumps({"officer": officer_id, "token": token, "database": database}).encode())


def read_session(path: Path, database: str) -> tuple[str, str]:
    """(officer id, token) from the session file, refused if missing, loose or for another gateway."""
    try:
        mode = path.stat().st_mode
        data = json.loads(path.read_text())
        token, officer_id, made_for = data["token"], data["officer"], data.get("database")
    except FileNotFoundError:
        raise NotSignedIn("not signed in: run `contactgate login`") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise NotSignedIn(f"the session file {path} is unreadable: run `contactgate login`") from None
    if mode & 0o077:
        raise NotSignedIn(f"the session file {path} can be read by others: remove it and sign in again")
    if made_for != database:
        raise NotSignedIn("the session is for another gateway: run `contactgate login`")
    return officer_id, token


def database_identity(database_url: str) -> str:
    """Which gateway a session belongs to, without writing the URL (it may hold a password) to the file."""
    return hashlib.sha256(database_url.encode()).hexdigest()[:16]


def code_matches(secret: str, code: str, now: dt.datetime | None = None) -> bool:
    """Whether ``code`` is the secret's code now (enrolment's check that the app was set up right)."""
    return _matching_step(secret, code, now or _now()) is not None


def one_time_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits
