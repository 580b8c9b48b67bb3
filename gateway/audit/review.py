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
- ``mediated``: heavy use of access through another authorised user, per mediator and per requester
  (``mediated_per_mediator``, ``mediated_per_requester``): gateway.audit.review_mediated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import itertools
import json
import re
import statistics
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import exists, func, or_, select
from sqlalchemy.engine import Connection

from gateway.audit.chain import AuditTrail, Entry
from gateway.audit.links import timestamp
from gateway.db import audit_log, certificates, children, involvements, source_records

RULES = ("volume", "uninvolved", "fishing", "out_of_hours", "shielded", "refusals", "reason_reuse", "approvals",
         "additional_certificate", "identifier_probing", "mediated")
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
    mediated_per_mediator: int = 100  # reads one mediator made on behalf of others (gateway.audit.review_mediated)
    mediated_per_requester: int = 20  # reads made on behalf of one requester, through any mediator

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
#
# A month of national traffic is tens of millions of entries. The review reads the period once, as
# a stream in seq order (a server-side cursor on PostgreSQL), and keeps per user, organisation or
# source only a count and a running digest (a finding's id is the digest of its rule, its subject
# and every seq of its evidence, see `Finding`). The few groups that become findings have their first
# EVIDENCE_LIMIT entries read again, by index. What grows with the trail is the database's work, not
# the review's memory: that grows with the number of users. What a query can count is counted by
# the database (`volume`, `uninvolved` and `reason_reuse`: GROUP BY, an anti-join), the rest in one
# pass over the period.

_COLUMNS = (audit_log.c.seq, audit_log.c.at, audit_log.c.org_code, audit_log.c.user_id, audit_log.c.role,
            audit_log.c.operation, audit_log.c.outcome, audit_log.c.reason_text, audit_log.c.child_ids,
            audit_log.c.detail, audit_log.c.cert_fingerprint, audit_log.c.source_address, audit_log.c.fault_code)
STREAM_BATCH = 5000  # rows fetched at a time


def _period(since: dt.datetime, until: dt.datetime) -> tuple:
    return audit_log.c.at >= timestamp(since), audit_log.c.at < timestamp(until)


def _rows(conn: Connection, query) -> Iterator:
    """``query``'s rows in seq order, fetched STREAM_BATCH at a time."""
    if conn.dialect.name == "postgresql":
        # A cursor is planned for its first 10 % by default: a walk of the whole table in seq
        # order, filtered by time. The review reads all of it: the period by its index, sorted.
        conn.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1")
    # (on the statement: Connection.execution_options would stream every later statement too)
    with contextlib.closing(conn.execute(query.order_by(audit_log.c.seq).execution_options(yield_per=STREAM_BATCH))) \
            as result:
        yield from result


def _stream(conn: Connection, *where) -> Iterator:
    """Entries in seq order, fetched STREAM_BATCH at a time."""
    return _rows(conn, select(*_COLUMNS).where(*where))


def _when(row) -> dt.datetime:
    return dt.datetime.fromisoformat(row.at)


def _is_read(row) -> bool:
    return row.operation == READ and row.outcome == "accepted" and bool(row.child_ids)


def _who(row) -> str:
    return f"{row.org_code}:{row.user_id}"


def _same(column, value):
    return column.is_(None) if value is None else column == value


def _user_rows(conn: Connection, org: str | None, user: str | None, since, until, *operations: str) -> Iterator:
    """One user's entries of the period (by the (org_code, user_id) index), in seq order."""
    return _stream(conn, _same(audit_log.c.org_code, org), _same(audit_log.c.user_id, user),
                   audit_log.c.operation.in_(operations), *_period(since, until))


class _Tally:
    """A group's evidence as it streams past in seq order: how many entries, and the digest a
    Finding's id is made of. The entries are listed again only for a finding."""

    __slots__ = ("count", "_digest")

    def __init__(self, rule: str, subject: str):
        self.count, self._digest = 0, hashlib.sha256(f"{rule}\n{subject}\n".encode())

    def add(self, seq: int) -> None:
        self._digest.update(f" {seq}".encode() if self.count else str(seq).encode())
        self.count += 1

    def finding(self, rule: str, subject: str, summary: str, evidence: Iterable[int]) -> Finding:
        listed = list(itertools.islice(evidence, EVIDENCE_LIMIT))
        if hasattr(evidence, "close"):  # a generator reading the database: its cursor closed now
            evidence.close()
        return Finding(rule, subject, summary, listed, count=self.count, id=self._digest.hexdigest()[:16])


class _Kept(_Tally):
    """A tally that keeps its first EVIDENCE_LIMIT entries too: for groups few by nature (refusing
    sources, officers, accesses to shielded children, organisations)."""

    __slots__ = ("rows",)

    def __init__(self, rule: str, subject: str):
        super().__init__(rule, subject)
        self.rows: list = []

    def add(self, seq: int, row=None) -> None:
        super().add(seq)
        if len(self.rows) < EVIDENCE_LIMIT:
            self.rows.append(row if row is not None else seq)

    def finding(self, rule: str, subject: str, summary: str, evidence: Iterable[int] | None = None) -> Finding:
        return super().finding(rule, subject, summary, (getattr(r, "seq", r) for r in self.rows))


def _group(groups: dict, key, rule: str, subject: str, kind=_Tally):
    tally = groups.get(key)
    if tally is None:
        tally = groups[key] = kind(rule, subject)
    return tally


class _Rule:
    """A review rule: sees each entry of the period whose operation it names once (``feed``; None:
    every entry), then gives its findings."""

    operations: tuple[str, ...] | None = ()

    def __init__(self, conn: Connection, since: dt.datetime, until: dt.datetime, t: Thresholds):
        self.conn, self.since, self.until, self.t = conn, since, until, t

    def feed(self, row) -> None:
        pass

    def findings(self) -> Iterable[Finding]:
        return ()


# ---- the rules --------------------------------------------------------------------------------

def _whole(rule: str, subject: str, summary: str, seqs: Iterable[int]) -> Finding:
    """A finding whose evidence is read from the database (in seq order): counted and digested whole,
    the first EVIDENCE_LIMIT listed."""
    tally, evidence = _Tally(rule, subject), []
    for seq in seqs:
        tally.add(seq)
        if len(evidence) < EVIDENCE_LIMIT:
            evidence.append(seq)
    return tally.finding(rule, subject, summary, evidence)


def _seqs(conn: Connection, *where) -> Iterator[int]:
    return (seq for (seq,) in _rows(conn, select(audit_log.c.seq).where(*where)))


# Every character str.strip() removes: a pasted reason is the same text whatever whitespace ends it.
WHITESPACE = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
_READS = (audit_log.c.operation == READ, audit_log.c.outcome == "accepted", audit_log.c.child_ids != "")


class _Volume(_Rule):
    """Counted by the database, per user and role, in the period and in the one before it."""

    def findings(self) -> Iterable[Finding]:
        t, since, until = self.t, self.since, self.until
        before = since - (until - since)  # the same length of time just before
        group = (audit_log.c.org_code, audit_log.c.role, audit_log.c.user_id)
        reads = {(o, r, u): n for o, r, u, n in self.conn.execute(
            select(*group, func.count()).where(*_READS, *_period(since, until)).group_by(*group)
            .order_by(func.min(audit_log.c.seq)))}
        baseline = {(o, r, u): n for o, r, u, n in self.conn.execute(
            select(*group, func.count())
            .where(audit_log.c.operation == READ, audit_log.c.outcome == "accepted", *_period(before, since))
            .group_by(*group))}
        peers: dict[tuple, list[int]] = defaultdict(list)
        for (org, role, _), n in reads.items():
            peers[(org, role)].append(n)
        for (org, role, user), n in reads.items():
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
                yield _whole("volume", f"{org}:{user}", f"{n} reads: " + "; ".join(why), _seqs(
                    self.conn, *_READS, _same(audit_log.c.org_code, org), _same(audit_log.c.user_id, user),
                    _same(audit_log.c.role, role), *_period(since, until)))


class _Uninvolved(_Rule):
    """Reads of children the reader's organisation never sent and holds no involvement with: an
    anti-join the database makes, counted per user."""

    def findings(self) -> Iterable[Finding]:
        unrelated = (
            ~exists().where(involvements.c.child_id == audit_log.c.child_ids,
                            involvements.c.org_code == audit_log.c.org_code),
            ~exists().where(source_records.c.child_id == audit_log.c.child_ids,
                            source_records.c.org_code == audit_log.c.org_code))
        these = (*_READS, *unrelated, *_period(self.since, self.until))
        for org, user, n in self.conn.execute(
                select(audit_log.c.org_code, audit_log.c.user_id, func.count()).where(*these)
                .group_by(audit_log.c.org_code, audit_log.c.user_id)
                .having(func.count() >= self.t.uninvolved_min_reads).order_by(func.min(audit_log.c.seq))).all():
            yield _whole("uninvolved", f"{org}:{user}", f"{n} reads of children {org} has no involvement with",
                         _seqs(self.conn, *these, _same(audit_log.c.org_code, org), _same(audit_log.c.user_id, user)))


class _Searches:
    """One user's FindChild searches still waiting for a GetContacts of a candidate, in seq order;
    ``feed`` and ``close`` give back the seqs of those that waited in vain, in seq order. A follow-up
    is a read within the window after the search by time, whatever their order in the trail (two
    nodes' clocks differ): reads of the last SKEW are kept for searches logged after them."""

    __slots__ = ("waiting", "recent", "total", "window")

    def __init__(self, window: dt.timedelta):
        self.waiting: deque[list] = deque()  # [seq, at, candidates, followed]
        self.recent: deque[tuple] = deque()  # (at, child) of reads
        self.total, self.window = 0, window

    def _follows(self, read_at: dt.datetime, search_at: dt.datetime) -> bool:
        return dt.timedelta(0) <= read_at - search_at <= self.window

    def feed(self, row) -> list[int]:
        at = _when(row)
        if row.operation == "FindChild":
            self.total += 1
            idle = self.expire(at)
            candidates = frozenset(row.child_ids.split())
            followed = any(child in candidates and self._follows(read_at, at) for read_at, child in self.recent)
            self.waiting.append([row.seq, at, candidates, followed])
            return idle
        for search in self.waiting:
            if not search[3] and row.child_ids in search[2] and self._follows(at, search[1]):
                search[3] = True
        self.recent.append((at, row.child_ids))
        return self.expire(at)

    def expire(self, now: dt.datetime) -> list[int]:
        """Those no later entry can follow up (allowing entries logged SKEW out of order)."""
        while self.recent and now - self.recent[0][0] > _Fishing.SKEW:
            self.recent.popleft()
        idle = []
        while self.waiting and (self.waiting[0][3] or now - self.waiting[0][1] > self.window + _Fishing.SKEW):
            seq, _, _, followed = self.waiting.popleft()
            if not followed:
                idle.append(seq)
        return idle

    def close(self) -> list[int]:
        idle = [search[0] for search in self.waiting if not search[3]]
        self.waiting.clear()
        self.recent.clear()
        return idle


class _Fishing(_Rule):
    operations = ("FindChild", READ)
    SKEW = dt.timedelta(minutes=5)  # how far out of order (by time) two nodes may log entries
    SWEEP = 500_000  # entries between sweeps of every user's waiting searches

    def __init__(self, *args):
        super().__init__(*args)
        self.window = dt.timedelta(minutes=self.t.fishing_follow_up_minutes)
        self.users: dict[tuple, _Searches] = {}
        self.idle: dict[tuple, _Tally] = {}
        self.fed = 0

    def feed(self, row) -> None:
        if row.outcome != "accepted" or (row.operation == READ and not row.child_ids):
            return
        key = (row.org_code, row.user_id)
        searches = self.users.get(key)
        if searches is None:
            if row.operation != "FindChild":
                return
            searches = self.users[key] = _Searches(self.window)
        self._idle(key, searches.feed(row))
        self.fed += 1
        if self.fed % self.SWEEP == 0:  # a user gone quiet: their searches are settled
            now = _when(row)
            for key, searches in self.users.items():
                self._idle(key, searches.expire(now))

    def _idle(self, key: tuple, seqs: list[int]) -> None:
        for seq in seqs:
            _group(self.idle, key, "fishing", f"{key[0]}:{key[1]}").add(seq)

    def _evidence(self, org, user) -> Iterator[int]:
        searches = _Searches(self.window)
        for row in _user_rows(self.conn, org, user, self.since, self.until, "FindChild", READ):
            if row.outcome == "accepted" and (row.operation == "FindChild" or row.child_ids):
                yield from searches.feed(row)
        yield from searches.close()

    def findings(self) -> Iterable[Finding]:
        for key, searches in self.users.items():
            self._idle(key, searches.close())
        for (org, user) in self.users:  # in the order of each user's first search
            tally = self.idle.get((org, user))
            if tally is not None and tally.count >= self.t.fishing_searches:
                yield tally.finding("fishing", f"{org}:{user}", f"{tally.count} of {self.users[(org, user)].total} "
                                    f"FindChild searches not followed by a GetContacts of a candidate within "
                                    f"{self.t.fishing_follow_up_minutes} min", self._evidence(org, user))


class _OutOfHours(_Rule):
    operations = (READ,)

    def __init__(self, *args):
        super().__init__(*args)
        (start, end), self.days, self.zone = self.t.hours(), self.t.days(), self.t.zone()
        self.start_s, self.end_s = start.hour * 3600 + start.minute * 60, end.hour * 3600 + end.minute * 60
        self.hours: dict[str, tuple | None] = {}  # "YYYY-MM-DDTHH" (UTC) -> its local weekday and second of day
        self.by_user: dict[tuple, _Tally] = {}

    def outside(self, at: str) -> bool:
        hour = at[:13]
        local = self.hours.get(hour, False)
        if local is False:
            if len(self.hours) > 50_000:
                self.hours.clear()
            first = dt.datetime.fromisoformat(f"{hour}:00:00+00:00").astimezone(self.zone)
            last = dt.datetime.fromisoformat(f"{hour}:59:59+00:00").astimezone(self.zone)
            local = self.hours[hour] = ((first.weekday(), first.hour * 3600 + first.minute * 60 + first.second)
                                        if first.utcoffset() == last.utcoffset() else None)  # None: a change of offset
        if local is None:
            when = dt.datetime.fromisoformat(at).astimezone(self.zone)
            weekday, second = when.weekday(), when.hour * 3600 + when.minute * 60 + when.second + when.microsecond / 1e6
        else:
            weekday, second = local[0], local[1] + int(at[14:16]) * 60 + float(at[17:-1])
            if second >= 86400:
                weekday, second = (weekday + 1) % 7, second - 86400
        return weekday not in self.days or not self.start_s <= second < self.end_s

    def feed(self, row) -> None:
        if _is_read(row) and self.outside(row.at):
            _group(self.by_user, (row.org_code, row.user_id), "out_of_hours", _who(row)).add(row.seq)

    def findings(self) -> Iterable[Finding]:
        t = self.t
        for (org, user), tally in self.by_user.items():
            evidence = (row.seq for row in _user_rows(self.conn, org, user, self.since, self.until, READ)
                        if _is_read(row) and self.outside(row.at))
            yield tally.finding("out_of_hours", f"{org}:{user}", f"{tally.count} reads outside {t.working_days} "
                                f"{t.working_hours} ({t.timezone})", evidence)


# Accesses to a child's record: a practitioner's (through the gateway) or a data-quality officer's
# (a review queue entry shows both children of the pair; `retention show` an archived record).
_SHIELDED_ACCESS = ("GetContacts", "FindChild", "SetShielding", "review.show", "retention.show")


class _Shielded(_Rule):
    """Every access to a child shielded now, or shielded when it was read (the entry's mark)."""

    operations = _SHIELDED_ACCESS

    def __init__(self, *args):
        super().__init__(*args)
        self.shielded = set(self.conn.execute(select(children.c.child_id).where(children.c.shielded.is_(True))).scalars())
        self.by_access: dict[tuple, _Kept] = {}

    def feed(self, row) -> None:
        marked = " shielded=" in f" {row.detail or ''}"  # shielded when it was read
        if not row.user_id or not (marked or self.shielded and not self.shielded.isdisjoint(row.child_ids.split())):
            return
        in_entry = row.child_ids.split()
        # A review entry names a pair and its mark does not say which child was shielded: the one
        # shielded now, or (shielding cleared since) both.
        marked = marked and (row.operation in ("GetContacts", "retention.show")  # one child each
                             or row.operation == "review.show" and not self.shielded.intersection(in_entry))
        for child in in_entry:
            if marked or child in self.shielded:
                # an officer reading the review queue has no organisation
                who = _who(row) if row.org_code else f"officer {row.user_id}"
                _group(self.by_access, (who, child), "shielded", who, _Kept).add(row.seq)

    def findings(self) -> Iterable[Finding]:
        for (who, child), kept in self.by_access.items():
            yield kept.finding("shielded", who, f"{kept.count} access(es) to shielded child {child}")


class _Refusals(_Rule):
    operations = None  # every operation's refusals

    def __init__(self, *args):
        super().__init__(*args)
        self.by_source: dict[str, _Kept] = {}
        self.codes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def feed(self, row) -> None:
        if row.outcome == "refused" and row.operation != "officer.refused":
            source = (f"organisation {row.org_code}" if row.org_code else
                      f"certificate {row.cert_fingerprint}" if row.cert_fingerprint else
                      f"address {row.source_address or _handshake_address(row.detail)}")
            _group(self.by_source, source, "refusals", source, _Kept).add(row.seq)
            self.codes[source][row.fault_code or "-"] += 1

    def findings(self) -> Iterable[Finding]:
        for source, kept in self.by_source.items():
            if kept.count >= self.t.refusals:
                codes = self.codes[source]
                yield kept.finding("refusals", source, f"{kept.count} refusals (" + ", ".join(
                    f"{c} {n}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1])) + ")")


def _handshake_address(detail: str | None) -> str:
    match = re.search(r"TLS handshake from (\S+) refused", detail or "")
    return match[1] if match else "unknown"


class _ReasonReuse(_Rule):
    """Counted by the database: there are as many reason texts as reads."""

    def findings(self) -> Iterable[Finding]:
        text = func.trim(audit_log.c.reason_text, WHITESPACE)
        reads = (*_READS, func.coalesce(text, "") != "", *_period(self.since, self.until))
        flagged = {(org, reason): kids for org, reason, kids in self.conn.execute(
            select(audit_log.c.org_code, text, func.count(func.distinct(audit_log.c.child_ids))).where(*reads)
            .group_by(audit_log.c.org_code, text)
            .having(func.count(func.distinct(audit_log.c.child_ids)) >= self.t.reason_reuse)
            .order_by(func.min(audit_log.c.seq)))}
        if not flagged:
            return
        # Two more reads of the period for all of them: who gave each text, then every entry.
        these = (*reads, text.in_(sorted({reason for _, reason in flagged})))
        users: dict[tuple, set] = defaultdict(set)
        for org, reason, user in self.conn.execute(select(audit_log.c.org_code, text, audit_log.c.user_id)
                                                   .where(*these).distinct()):
            if (org, reason) in flagged:
                users[(org, reason)].add(user)
        subjects = {key: f"{key[0]}:{','.join(map(str, sorted(users[key], key=lambda u: (u is None, u or ''))))}"
                    for key in flagged}
        kept = {key: _Kept("reason_reuse", subject) for key, subject in subjects.items()}
        for seq, org, reason in _rows(self.conn, select(audit_log.c.seq, audit_log.c.org_code, text).where(*these)):
            if (org, reason) in kept:
                kept[(org, reason)].add(seq)
        for (org, reason), kids in flagged.items():
            yield kept[(org, reason)].finding("reason_reuse", subjects[(org, reason)],
                                              f"the reason {reason[:80]!r} given for reads of {kids} children")


_APPROVED_BY = re.compile(r"approved proposal \d+ \([^)]*\) by (\S+?):")
# Every approval of another officer's proposal (gateway.trust.registry, gateway.trust.proxies).
APPROVALS = ("org.approve", "trust.approve", "cert.approve", "proxy.approve", "linkage.approve")


class _Approvals(_Rule):
    operations = APPROVALS

    def __init__(self, *args):
        super().__init__(*args)
        self.pairs: dict[tuple, _Kept] = {}

    def feed(self, row) -> None:
        match = _APPROVED_BY.search(row.detail or "") if row.user_id else None
        if match:
            _group(self.pairs, (row.user_id, match[1]), "approvals", f"officer {row.user_id}", _Kept).add(row.seq)

    def findings(self) -> Iterable[Finding]:
        for (approver, proposer), kept in self.pairs.items():
            if kept.count >= self.t.approvals_of_one_proposer:
                yield kept.finding("approvals", f"officer {approver}", f"approved {kept.count} proposals of {proposer}")


_BOUND = re.compile(r"certificate ([0-9a-f]{64}) ")


class _AdditionalCertificate(_Rule):
    """From the certificates themselves (when each was bound, what else its organisation held then),
    with the audit entries that bound them as evidence."""

    operations = ("cert.issue", "cert.register")

    def __init__(self, *args):
        super().__init__(*args)
        self.bound: dict[str, object] = {}

    def feed(self, row) -> None:
        match = _BOUND.search(row.detail or "") if row.outcome == "done" else None
        if match:
            self.bound[match[1]] = row

    def findings(self) -> Iterable[Finding]:
        if not self.bound:
            return
        bound, by_org = self.bound, defaultdict(list)
        for fingerprint, org_code, created_at in self.conn.execute(
                select(certificates.c.fingerprint, certificates.c.org_code, certificates.c.created_at)
                .where(certificates.c.fingerprint.in_(sorted(bound)))):
            held = self.conn.execute(select(func.count()).select_from(certificates).where(
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


class _IdentifierProbing(_Rule):
    operations = ("SubmitUpdates",)

    def __init__(self, *args):
        super().__init__(*args)
        self.pushes: dict[str, _Kept] = {}
        self.records: dict[str, int] = defaultdict(int)
        self.span: dict[str, list] = {}

    def feed(self, row) -> None:
        found = _CONFLICTS.search(row.detail or "") if row.outcome == "accepted" and row.org_code else None
        if found:
            org = row.org_code
            _group(self.pushes, org, "identifier_probing", f"organisation {org}", _Kept).add(row.seq)
            self.records[org] += int(found[1])
            self.span.setdefault(org, [row.at, row.at])[1] = row.at

    def findings(self) -> Iterable[Finding]:
        for org, kept in self.pushes.items():
            records = self.records[org]
            if records >= self.t.identifier_probing:
                first, last = (dt.datetime.fromisoformat(at).strftime("%Y-%m-%dT%H:%MZ") for at in self.span[org])
                yield kept.finding("identifier_probing", f"organisation {org}",
                                   f"{records} pushed records carried an NHS or pupil number the index holds for a child "
                                   f"whose other details disagree, in {kept.count} SubmitUpdates from {first} to {last}")


class _Mediated(_Rule):
    def findings(self) -> Iterable[Finding]:
        from gateway.audit import review_mediated

        return review_mediated.findings(self, _period, _seqs, _whole)


_RULES = {"volume": _Volume, "uninvolved": _Uninvolved, "fishing": _Fishing, "out_of_hours": _OutOfHours,
          "shielded": _Shielded, "refusals": _Refusals, "reason_reuse": _ReasonReuse, "approvals": _Approvals,
          "additional_certificate": _AdditionalCertificate, "identifier_probing": _IdentifierProbing,
          "mediated": _Mediated}


# ---- running and marking ------------------------------------------------------------------------

def run(conn: Connection, since: dt.datetime, thresholds: Thresholds, *, until: dt.datetime | None = None,
        rules: Iterable[str] = RULES) -> list[Finding]:
    """Every finding of ``rules`` over the entries from ``since`` to ``until`` (now), each with
    its review mark if an auditor has made one. The period is read once, as a stream."""
    until = until or dt.datetime.now(dt.timezone.utc)
    active = [_RULES[name](conn, since, until, thresholds) for name in rules]
    every = [rule for rule in active if rule.operations is None]
    by_operation: dict[str, list[_Rule]] = defaultdict(list)
    for rule in active:
        for operation in rule.operations or ():
            by_operation[operation].append(rule)
    if every or by_operation:
        for row in _stream(conn, *_period(since, until)):
            for rule in by_operation.get(row.operation, ()):
                rule.feed(row)
            for rule in every:
                rule.feed(row)
    findings = [f for rule in active for f in rule.findings()]
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
