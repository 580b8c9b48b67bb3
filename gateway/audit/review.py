"""Misuse review: rules run over the audit trail that find what the trail exists to deter.

"Every access to a child's record will be detailed in the audit trail. This will be regularly
reviewed." `contactgate audit review --since DATE` runs every rule below over the entries from that
day and lists findings, each with the entries that are its evidence. An auditor marks a finding
reviewed with a note; the mark is itself an entry in the chain (operation ``audit.reviewed``), so
it cannot be quietly made or undone. A finding's id is a digest of its rule, subject and evidence:
new evidence makes a new finding, to be reviewed again.

The rules (thresholds in the home's ``review.json``, see `Thresholds`):

- ``volume``: a user reading far more records than their own baseline (the same length of time
  before ``--since``) or than the median of their peers (same organisation and role). Curiosity and
  data harvesting look like volume; so do a colleague's caseload handed over, which is why it is a
  finding for a person to look at, not a block.
- ``uninvolved``: reads of children with whom the user's organisation has no involvement (it never
  sent a record of them, and holds no involvement in the index). The index is "who else is
  involved": looking up a child no service of yours works with is the classic misuse (a neighbour, a
  celebrity's child, an ex-partner's).
- ``fishing``: many FindChild searches with no GetContacts of a candidate soon after. Searching
  for who exists, and where, without ever acting on a result, is how a record is hunted.
- ``out_of_hours``: reads outside the configured working hours or days (in the configured time
  zone). Most legitimate access is in office hours; out-of-hours access is where misuse hides, and
  where emergency duty teams should be known.
- ``shielded``: every access to a shielded child, whoever made it (a data-quality officer opening
  a review queue entry with the child included, or an archived record with `retention show`). A shielded child's location is protected for
  their safety (a refuge, witness protection): each look is worth a second pair of eyes.
- ``refusals``: many refusals for one organisation, certificate or address. A misconfigured
  client, or someone probing: either way the organisation must be contacted.
- ``reason_reuse``: the same reason text given verbatim for reads of many children. A reason typed
  once and pasted everywhere is no reason: it is how a duty to state one is defeated.
- ``approvals``: an officer approving many proposals of one proposer. Four-eyes only works if the
  second pair of eyes is not always the same friendly one.
- ``additional_certificate``: a certificate bound to an organisation that already held an active
  one. Rotation does that, and so would an impostor let in beside the real organisation: someone
  should confirm with the organisation that it asked for it (and that the old one is then revoked).
- ``identifier_probing``: an organisation pushing many records whose NHS or pupil number the index
  already holds for a child whose other details disagree (each SubmitUpdates entry counts them:
  ``identifier_conflict=N``). The answer to such a push is a new child's, so it cannot tell the
  sender that the number is known; sending numbers with made-up demographics is still how an
  organisation would try to find out, and a person should ask it why. Keying errors happen too:
  that is why it is a threshold, and a finding, not a block. Shown with the organisation, the
  counts and the period, never a child or a number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import statistics
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, or_, select, union
from sqlalchemy.engine import Connection

from gateway.audit.chain import AuditTrail, Entry
from gateway.audit.links import timestamp
from gateway.db import audit_log, certificates, children, involvements, source_records

RULES = ("volume", "uninvolved", "fishing", "out_of_hours", "shielded", "refusals", "reason_reuse", "approvals",
         "additional_certificate", "identifier_probing")
READ = "GetContacts"
EVIDENCE_LIMIT = 200  # entries listed per finding (the count says how many there were)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ReviewConfigError(ValueError):
    """review.json is not usable: says which setting and why."""


@dataclass(frozen=True)
class Thresholds:
    volume_factor: float = 3.0  # reads above this many times the baseline or the peers' median...
    volume_min_reads: int = 20  # ...and at least this many reads
    uninvolved_min_reads: int = 3  # reads of children the organisation has no involvement with
    fishing_searches: int = 10  # FindChild searches with no follow-up
    fishing_follow_up_minutes: int = 60  # a GetContacts of a candidate within this is a follow-up
    working_hours: str = "07:00-19:00"
    working_days: str = "mon-fri"
    timezone: str = "Europe/London"
    refusals: int = 10  # refusals of one organisation, certificate or address
    reason_reuse: int = 10  # children read with one verbatim reason text
    approvals_of_one_proposer: int = 5
    identifier_probing: int = 10  # pushed records of one organisation meeting a held identifier, disagreeing

    @classmethod
    def load(cls, path: Path) -> "Thresholds":
        """Defaults, overridden by what ``path`` (JSON, optional) sets; anything unknown or out of
        range is refused, naming it."""
        if not path.exists():
            return cls()
        try:
            given = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ReviewConfigError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(given, dict):
            raise ReviewConfigError(f"{path}: must be a JSON object of settings")
        known = {f.name: f for f in fields(cls)}
        values = {}
        for name, value in given.items():
            if name not in known:
                raise ReviewConfigError(f"{path}: unknown setting {name!r} (known: {', '.join(known)})")
            want = type(getattr(cls, name))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or isinstance(value, bool) or (want in (int, float) and value <= 0):
                raise ReviewConfigError(f"{path}: {name} must be a positive {want.__name__}")
            values[name] = value
        thresholds = cls(**values)
        thresholds.hours(), thresholds.days(), thresholds.zone()  # refuse a bad one now
        return thresholds

    def hours(self) -> tuple[dt.time, dt.time]:
        match = re.fullmatch(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})", self.working_hours)
        try:
            start, end = (dt.time(int(match[1]), int(match[2])), dt.time(int(match[3]), int(match[4])))
        except (TypeError, ValueError):
            raise ReviewConfigError(f"working_hours must be HH:MM-HH:MM, not {self.working_hours!r}") from None
        if not start < end:
            raise ReviewConfigError("working_hours must start before they end")
        return start, end

    def days(self) -> frozenset[int]:
        chosen: set[int] = set()
        for part in self.working_days.lower().replace(" ", "").split(","):
            first, _, last = part.partition("-")
            if first not in _DAYS or (last and last not in _DAYS):
                raise ReviewConfigError(f"working_days must be like mon-fri or mon,wed,fri, not {self.working_days!r}")
            a, b = _DAYS.index(first), _DAYS.index(last or first)
            chosen.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        return frozenset(chosen)

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReviewConfigError(f"timezone {self.timezone!r} is not a known time zone") from None


@dataclass
class Finding:
    rule: str
    subject: str  # who or what: ORG:USER, an organisation, a certificate, an officer
    summary: str
    evidence: list[int]  # the entries' seq numbers
    count: int = 0
    id: str = ""
    reviewed: dict | None = None  # {"by", "at", "note"} once an auditor has looked

    def __post_init__(self) -> None:
        self.count = self.count or len(self.evidence)
        material = f"{self.rule}\n{self.subject}\n{' '.join(map(str, sorted(self.evidence)))}".encode()
        self.id = self.id or hashlib.sha256(material).hexdigest()[:16]
        self.evidence = sorted(self.evidence)[:EVIDENCE_LIMIT]

    def as_dict(self) -> dict:
        return asdict(self)


# ---- reading the trail ------------------------------------------------------------------------

_COLUMNS = (audit_log.c.seq, audit_log.c.at, audit_log.c.org_code, audit_log.c.user_id, audit_log.c.role,
            audit_log.c.operation, audit_log.c.outcome, audit_log.c.reason_text, audit_log.c.child_ids,
            audit_log.c.detail, audit_log.c.cert_fingerprint, audit_log.c.source_address, audit_log.c.fault_code)


def _entries(conn: Connection, since: dt.datetime, until: dt.datetime) -> list:
    return conn.execute(select(*_COLUMNS).where(audit_log.c.at >= timestamp(since), audit_log.c.at < timestamp(until))
                        .order_by(audit_log.c.seq)).all()


def _when(row) -> dt.datetime:
    return dt.datetime.strptime(row.at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def _is_read(row) -> bool:
    return row.operation == READ and row.outcome == "accepted" and bool(row.child_ids)


def _who(row) -> str:
    return f"{row.org_code}:{row.user_id}"


# ---- the rules --------------------------------------------------------------------------------

def _volume(conn: Connection, rows: list, since: dt.datetime, until: dt.datetime, t: Thresholds) -> Iterable[Finding]:
    reads: dict[tuple, list[int]] = defaultdict(list)
    for row in rows:
        if _is_read(row):
            reads[(row.org_code, row.role, row.user_id)].append(row.seq)
    before = since - (until - since)  # the same length of time just before
    baseline = {(o, r, u): n for o, r, u, n in conn.execute(
        select(audit_log.c.org_code, audit_log.c.role, audit_log.c.user_id, func.count())
        .where(audit_log.c.operation == READ, audit_log.c.outcome == "accepted",
               audit_log.c.at >= timestamp(before), audit_log.c.at < timestamp(since))
        .group_by(audit_log.c.org_code, audit_log.c.role, audit_log.c.user_id))}
    peers: dict[tuple, list[int]] = defaultdict(list)
    for (org, role, user), seqs in reads.items():
        peers[(org, role)].append(len(seqs))
    for (org, role, user), seqs in reads.items():
        n = len(seqs)
        if n < t.volume_min_reads:
            continue
        why = []
        own = baseline.get((org, role, user), 0)
        if own and n > t.volume_factor * own:
            why.append(f"{n / own:.1f}x their own {own} in the period before")
        others = list(peers[(org, role)])
        others.remove(n)
        if others:
            median = statistics.median(others)
            if n > t.volume_factor * max(median, 1):
                why.append(f"{n / max(median, 1):.1f}x the median ({median:g}) of {len(others)} peers in {org} as {role!r}")
        if why:
            yield Finding("volume", f"{org}:{user}", f"{n} reads: " + "; ".join(why), seqs)


def _uninvolved(conn: Connection, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    wanted = {(row.org_code, row.child_ids) for row in rows if _is_read(row)}
    if not wanted:
        return
    child_ids = sorted({c for _, c in wanted})
    involved: set[tuple[str, str]] = set()
    for chunk in range(0, len(child_ids), 500):
        part = child_ids[chunk:chunk + 500]
        involved.update((o, c) for o, c in conn.execute(union(
            select(involvements.c.org_code, involvements.c.child_id).where(involvements.c.child_id.in_(part)),
            select(source_records.c.org_code, source_records.c.child_id).where(source_records.c.child_id.in_(part)))))
    by_user: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if _is_read(row) and (row.org_code, row.child_ids) not in involved:
            by_user[_who(row)].append(row.seq)
    for who, seqs in by_user.items():
        if len(seqs) >= t.uninvolved_min_reads:
            yield Finding("uninvolved", who, f"{len(seqs)} reads of children {who.split(':')[0]} has no involvement with",
                          seqs)


def _fishing(conn, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    window = dt.timedelta(minutes=t.fishing_follow_up_minutes)
    searches: dict[str, list] = defaultdict(list)
    reads: dict[str, list] = defaultdict(list)
    for row in rows:
        if row.operation == "FindChild" and row.outcome == "accepted":
            searches[_who(row)].append(row)
        elif _is_read(row):
            reads[_who(row)].append((_when(row), row.child_ids))
    for who, found in searches.items():
        idle = [s.seq for s in found if not any(
            child in set(s.child_ids.split()) and dt.timedelta(0) <= at - _when(s) <= window
            for at, child in reads.get(who, ()))]
        if len(idle) >= t.fishing_searches:
            yield Finding("fishing", who, f"{len(idle)} of {len(found)} FindChild searches not followed by a "
                                          f"GetContacts of a candidate within {t.fishing_follow_up_minutes} min", idle)


def _out_of_hours(conn, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    (start, end), days, zone = t.hours(), t.days(), t.zone()
    by_user: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if _is_read(row):
            local = _when(row).astimezone(zone)
            if local.weekday() not in days or not start <= local.time() < end:
                by_user[_who(row)].append(row.seq)
    for who, seqs in by_user.items():
        yield Finding("out_of_hours", who, f"{len(seqs)} reads outside {t.working_days} {t.working_hours} "
                                           f"({t.timezone})", seqs)


# Accesses to a child's record: a practitioner's (through the gateway) or a data-quality officer's
# (a review queue entry shows both children of the pair; `retention show` an archived record).
_SHIELDED_ACCESS = ("GetContacts", "FindChild", "SetShielding", "review.show", "retention.show")


def _shielded(conn: Connection, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    named = sorted({c for row in rows for c in row.child_ids.split()})
    shielded: set[str] = set()
    for chunk in range(0, len(named), 500):
        shielded.update(conn.execute(select(children.c.child_id).where(
            children.c.child_id.in_(named[chunk:chunk + 500]), children.c.shielded.is_(True))).scalars())
    by_access: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rows:
        if row.operation not in _SHIELDED_ACCESS or not row.user_id:
            continue
        marked = " shielded=" in f" {row.detail or ''}"  # shielded when it was read
        in_entry = row.child_ids.split()
        # A review entry names a pair and its mark does not say which child was shielded: the one
        # shielded now, or (shielding cleared since) both.
        marked = marked and (row.operation in ("GetContacts", "retention.show")  # one child each
                             or row.operation == "review.show" and not shielded.intersection(in_entry))
        for child in in_entry:
            if child in shielded or marked:
                # an officer reading the review queue has no organisation
                who = _who(row) if row.org_code else f"officer {row.user_id}"
                by_access[(who, child)].append(row.seq)
    for (who, child), seqs in by_access.items():
        yield Finding("shielded", who, f"{len(seqs)} access(es) to shielded child {child}", seqs)


def _refusals(conn, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    by_source: dict[str, list] = defaultdict(list)
    for row in rows:
        if row.outcome == "refused" and row.operation != "officer.refused":
            source = (f"organisation {row.org_code}" if row.org_code else
                      f"certificate {row.cert_fingerprint}" if row.cert_fingerprint else
                      f"address {row.source_address or _handshake_address(row.detail)}")
            by_source[source].append(row)
    for source, refused in by_source.items():
        if len(refused) >= t.refusals:
            codes = defaultdict(int)
            for row in refused:
                codes[row.fault_code or "-"] += 1
            yield Finding("refusals", source, f"{len(refused)} refusals (" + ", ".join(
                f"{c} {n}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1])) + ")", [r.seq for r in refused])


def _handshake_address(detail: str | None) -> str:
    match = re.search(r"TLS handshake from (\S+) refused", detail or "")
    return match[1] if match else "unknown"


def _reason_reuse(conn, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    by_text: dict[tuple[str, str], list] = defaultdict(list)
    for row in rows:
        if _is_read(row) and (row.reason_text or "").strip():
            by_text[(row.org_code, row.reason_text.strip())].append(row)
    for (org, text), reads in by_text.items():
        kids = {r.child_ids for r in reads}
        if len(kids) >= t.reason_reuse:
            users = sorted({r.user_id for r in reads})
            yield Finding("reason_reuse", f"{org}:{','.join(users)}",
                          f"the reason {text[:80]!r} given for reads of {len(kids)} children", [r.seq for r in reads])


_APPROVED_BY = re.compile(r"approved proposal \d+ \([^)]*\) by (\S+?):")
# Every approval of another officer's proposal (gateway.trust.registry, gateway.trust.proxies).
APPROVALS = ("org.approve", "trust.approve", "cert.approve", "proxy.approve", "linkage.approve")


def _approvals(conn, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    pairs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in rows:
        if row.operation in APPROVALS and row.user_id:
            match = _APPROVED_BY.search(row.detail or "")
            if match:
                pairs[(row.user_id, match[1])].append(row.seq)
    for (approver, proposer), seqs in pairs.items():
        if len(seqs) >= t.approvals_of_one_proposer:
            yield Finding("approvals", f"officer {approver}", f"approved {len(seqs)} proposals of {proposer}", seqs)


_BOUND = re.compile(r"certificate ([0-9a-f]{64}) ")


def _additional_certificate(conn: Connection, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    """From the certificates themselves (when each was bound, what else its organisation held then),
    with the audit entries that bound them as evidence."""
    bound = {}
    for row in rows:
        if row.operation in ("cert.issue", "cert.register") and row.outcome == "done":
            match = _BOUND.search(row.detail or "")
            if match:
                bound[match[1]] = row
    if not bound:
        return
    by_org: dict[str, list] = defaultdict(list)
    for fingerprint, org_code, created_at in conn.execute(
            select(certificates.c.fingerprint, certificates.c.org_code, certificates.c.created_at)
            .where(certificates.c.fingerprint.in_(sorted(bound)))):
        held = conn.execute(select(func.count()).select_from(certificates).where(
            certificates.c.org_code == org_code, certificates.c.fingerprint != fingerprint,
            certificates.c.created_at <= created_at, certificates.c.not_after > created_at,
            or_(certificates.c.revoked_at.is_(None), certificates.c.revoked_at > created_at))).scalar_one()
        if held:
            by_org[org_code].append((bound[fingerprint], fingerprint, held))
    for org_code, found in by_org.items():
        listed = ", ".join(f"{fp[:16]}… beside {held} active" for _, fp, held in found)
        yield Finding("additional_certificate", f"organisation {org_code}",
                      f"{len(found)} certificate(s) bound while it held an active one ({listed}): confirm with "
                      f"the organisation that it asked for them", [row.seq for row, _, _ in found])


_CONFLICTS = re.compile(r"(?:^| )identifier_conflict=(\d+)(?= |$)")


def _identifier_probing(conn, rows: list, since, until, t: Thresholds) -> Iterable[Finding]:
    pushes: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        if row.operation == "SubmitUpdates" and row.outcome == "accepted" and row.org_code:
            found = _CONFLICTS.search(row.detail or "")
            if found:
                pushes[row.org_code].append((row, int(found[1])))
    for org, entries in pushes.items():
        records = sum(n for _, n in entries)
        if records >= t.identifier_probing:
            first, last = (_when(entries[i][0]).strftime("%Y-%m-%dT%H:%MZ") for i in (0, -1))
            yield Finding("identifier_probing", f"organisation {org}",
                          f"{records} pushed records carried an NHS or pupil number the index holds for a child "
                          f"whose other details disagree, in {len(entries)} SubmitUpdates from {first} to {last}",
                          [row.seq for row, _ in entries])


_RULES = {"volume": _volume, "uninvolved": _uninvolved, "fishing": _fishing, "out_of_hours": _out_of_hours,
          "shielded": _shielded, "refusals": _refusals, "reason_reuse": _reason_reuse, "approvals": _approvals,
          "additional_certificate": _additional_certificate, "identifier_probing": _identifier_probing}


# ---- running and marking ------------------------------------------------------------------------

def run(conn: Connection, since: dt.datetime, thresholds: Thresholds, *, until: dt.datetime | None = None,
        rules: Iterable[str] = RULES) -> list[Finding]:
    """Every finding of ``rules`` over the entries from ``since`` to ``until`` (now), each with
    its review mark if an auditor has made one."""
    until = until or dt.datetime.now(dt.timezone.utc)
    rows = _entries(conn, since, until)
    findings = [f for name in rules for f in _RULES[name](conn, rows, since, until, thresholds)]
    marks = reviewed_marks(conn)
    for finding in findings:
        finding.reviewed = marks.get(finding.id)
    return findings


_MARK = re.compile(r"finding ([0-9a-f]{16}) ")


def reviewed_marks(conn: Connection) -> dict[str, dict]:
    """The findings auditors have marked reviewed: id -> who, when, the note (the latest mark)."""
    marks = {}
    for row in conn.execute(select(audit_log.c.user_id, audit_log.c.at, audit_log.c.detail, audit_log.c.reason_text)
                            .where(audit_log.c.operation == "audit.reviewed").order_by(audit_log.c.seq)):
        match = _MARK.match(row.detail or "")
        if match:
            marks[match[1]] = {"by": row.user_id, "at": row.at, "note": row.reason_text}
    return marks


def mark_reviewed(conn: Connection, trail: AuditTrail, finding: Finding, officer_id: str, role: str, note: str) -> None:
    """Record in the chain that ``finding`` was reviewed, by whom, with what note."""
    trail.append(conn, Entry(operation="audit.reviewed", outcome="done", user_id=officer_id, role=role,
                             reason_text=note, detail=f"finding {finding.id} {finding.rule} {finding.subject}: "
                                                      f"{finding.count} entries"))
