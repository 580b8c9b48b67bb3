from __future__ import annotations

import contextvars
import datetime as dt
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import and_, bindparam, or_, select, text, update
from sqlalchemy.engine import Connection, Engine

from gateway import files
from gateway.audit.checkpoints import (CheckpointSigner, checkpoint_line, checkpoint_seqs, signature_problem,
                                       signed_lines, signing_certificates)
from gateway.audit.links import GENESIS, entry_hash, material, public_hash, timestamp
from gateway.db import AUDIT_RESTORES, audit_children, audit_head, audit_log, reader


@dataclass
class Entry:
    operation: str
    outcome: str  # "accepted", "done", "repeat" or "refused"
    org_code: str | None = None
    cert_fingerprint: str | None = None
    user_id: str | None = None
    role: str | None = None
    reason_code: str | None = None
    reason_text: str | None = None
    child_ids: list[str] = field(default_factory=list)
    fault_code: str | None = None
    request_digest: str | None = None
    detail: str | None = None
    source_address: str | None = None  # the client's IP address, or "local:<user>" for a command
    request_id: str | None = None  # the id given to the request (X-Request-Id on the answer)
    response_digest: str | None = None  # base64 SHA-256 of the answer sent
    on_behalf_of: str | None = None  # a mediated read's requester, as JSON (gateway.mediation.OnBehalfOf)
    behalf_key: str | None = None  # ...and organisation:name, case folded (found by report_for_user)


# Where the action being audited came from, for entries whose writer does not say: set once per
# command (the CLI) or per request (the console), read by AuditTrail.append.
_ORIGIN: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "audit_origin", default=(None, None))


def set_origin(source_address: str | None, request_id: str | None = None) -> contextvars.Token:
    """Name where the following appends in this context come from (source address, request id)."""
    return _ORIGIN.set((source_address, request_id))


def reset_origin(token: contextvars.Token) -> None:
    _ORIGIN.reset(token)


def new_request_id() -> str:
    return secrets.token_hex(16)


KEY_BYTES = 32

# Built once: every exchange appends, and building statements costs more than running them.
_LOCK_HEAD = select(audit_head).where(audit_head.c.id == 1).with_for_update()
_INSERT_ENTRY = audit_log.insert()
_INSERT_CHILD = audit_children.insert()
# Each text column's length, where it has one: a longer value is cut to fit.
_LENGTHS = {column.name: column.type.length for column in audit_log.c if getattr(column.type, "length", None)}
_ENTRY_COLUMNS = [c.name for c in audit_log.columns]
# PostgreSQL: the entry, its child index rows and the head's move in one statement (one round trip
# instead of three while the head row is locked: appends from several processes queue for less time).
_WRITE_PG = text(
    "WITH entry AS (INSERT INTO audit_log (" + ", ".join(f'"{c}"' for c in _ENTRY_COLUMNS) + ") VALUES ("
    + ", ".join(f":{c}" for c in _ENTRY_COLUMNS) + ")), "
    "kids AS (INSERT INTO audit_children (child_id, seq) SELECT unnest(CAST(:children AS varchar[])), :seq) "
    "UPDATE audit_head SET seq = :seq, entry_hash = :entry_hash, public_hash = :public_hash WHERE id = 1")
_MOVE_HEAD = (update(audit_head).where(audit_head.c.id == 1)
              .values(seq=bindparam("new_seq"), entry_hash=bindparam("new_hash"),
                      public_hash=bindparam("new_public")))


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


class AuditTrail:
    """Writes and verifies the chain with a key kept outside the database (in the gateway's home),
    so that someone who can write to the database — a DBA, a report writer — cannot rewrite
    entries and recompute the chain: each link is an HMAC, not a bare hash."""

    def __init__(self, key: bytes, *, checkpoints: Path | None = None, signer=None, copies: tuple = (),
                 certificates=None):
        if len(key) < KEY_BYTES:
            raise ValueError("the audit chain key is too short")
        self._key = key
        self._checkpoints = checkpoints
        self._copies = tuple(copies)  # checkpoint files outside the home (CONTACTGATE_CHECKPOINT_COPIES)
        self._signer_factory = signer  # () -> gateway.audit.checkpoints.CheckpointSigner, or None
        self._signer = None  # loaded on first use, then kept: the key is read once per process
        self._certificates = certificates  # () -> the signing certificates a trusted anchor is signed with

    @classmethod
    def from_file(cls, path: Path, *, checkpoints: Path | None = None, signer=None, copies: tuple = (),
                  certificates=None) -> "AuditTrail":
        try:
            return cls(path.read_bytes(), checkpoints=checkpoints, signer=signer, copies=copies,
                       certificates=certificates)
        except FileNotFoundError:
            raise FileNotFoundError(f"no audit chain key at {path}: run `contactgate init`") from None

    @classmethod
    def of_home(cls, layout, copies: tuple = ()) -> "AuditTrail":
        """The home's trail: its key, its checkpoints file (and ``copies`` of it outside the home), and
        checkpoints signed with the gateway's signing key (loaded when the first checkpoint is written)."""
        return cls.from_file(layout.audit_key, checkpoints=layout.audit_checkpoints, copies=copies,
                             signer=lambda: CheckpointSigner.from_layout(layout),
                             certificates=lambda: signing_certificates(layout))

    @property
    def checkpoint_files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self._checkpoints, *self._copies) if p is not None)

    def append(self, conn: Connection, entry: Entry, *, now: dt.datetime | None = None) -> int:
        return _append(conn, entry, self._key, now)[0]

    def append_linked(self, conn: Connection, entry: Entry) -> tuple[int, str]:
        """Append ``entry``; returns (its seq, its HMAC link), for a checkpoint of it."""
        return _append(conn, entry, self._key, None)

    def append_at(self, conn: Connection, entry: Entry, seq: int) -> tuple[int, str]:
        """Append ``entry`` as entry ``seq`` (beyond the head: only a restore leaves a gap, and its
        entry names it); returns (seq, its HMAC link)."""
        return _append(conn, entry, self._key, None, seq)

    def verify(self, engine: Engine, batch: int = 5000, *, witnesses: tuple = (),
               exported: dict[int, tuple[str, str]] | None = None, incremental: bool = False) -> VerifyResult:
        """Verify the chain. Every checkpoint recorded outside the database (the home's checkpoints
        file, its copies outside the home, ``witnesses``: checkpoint files from elsewhere, and
        ``exported``: seq -> (public link, where) of entries in verified exports) must still be in
        the chain — so cutting the tail and moving the head back is detected, and so is a restore
        that lost entries without saying so — and a successful run records the new head in the
        home's file and its copies.

        ``incremental``: re-hash only the entries after the newest checkpoint that is signed with
        the gateway's signing key and matches its entry (the anchor, checked first: `_anchor`);
        the entries before it are checked only at the points recorded outside the database, and
        their restores named again (docs/operations.md, "Verifying the audit trail"). With no such
        checkpoint, the whole chain is verified."""
        known: dict[int, tuple[str, Path]] = {}
        for path in (*self.checkpoint_files, *witnesses):
            try:
                seqs = checkpoint_seqs(path)
            except ValueError as exc:  # the file outside the database was altered: that is tampering too
                return VerifyResult(False, 0, None, f"the checkpoints file {path} is altered ({exc})")
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            for seq, head in seqs:
                if seq in known and known[seq][0] != head:
                    return VerifyResult(False, 0, seq, f"the checkpoints files {known[seq][1]} and {path} disagree "
                                                       f"about entry {seq} (one of them was altered)")
                known[seq] = (head, path)
        anchors = self._anchors() if incremental else ()
        result = _verify(engine, self._key, batch, known, exported or {}, anchors)
        if result.ok:
            for path in self.checkpoint_files:
                signer = self.checkpoint_signer() if path == self._checkpoints else None
                if not path.parent.exists():
                    files.private_dir(path.parent)
                files.append_private(path, checkpoint_line(result.head_seq, result.head_hash, result.public_head,
                                                           signer))
        return result

    def record_checkpoint(self, seq: int, link: str) -> None:
        """A checkpoint of an entry this process just appended (its HMAC link known), in the home's
        file and its copies."""
        for path in self.checkpoint_files:
            if not path.parent.exists():
                files.private_dir(path.parent)
            files.append_private(path, checkpoint_line(seq, link, "", None))

    def _anchors(self):
        """The signed lines of the home's checkpoints file, newest (highest seq) first, whose claims
        are the line's own and whose signature verifies with the gateway's signing certificates: the
        candidates an incremental verification may start from. A generator: the signatures are
        checked only as far as the first usable one (the file gains a line every run)."""
        certificates = self._certificates() if self._certificates is not None else []
        if not certificates:
            return
        found = {}
        for path in self.checkpoint_files:
            for seq, link, public, signed in signed_lines(path):
                claims = signed.get("claims") if isinstance(signed, dict) else None
                if (isinstance(claims, dict) and claims.get("kind") == "checkpoint" and claims.get("seq") == seq
                        and claims.get("public_hash") == public):
                    found.setdefault(seq, []).append((seq, link, public, signed))
        for seq in sorted(found, reverse=True):
            trusted = next((line for line in found[seq] if signature_problem(line[3], certificates) is None), None)
            if trusted is not None:
                yield trusted

    def checkpoint_signer(self):
        """What signs checkpoints (the gateway's signing key), loaded once; None without one."""
        if self._signer is None and self._signer_factory is not None:
            self._signer = self._signer_factory()
        return self._signer


def _append(conn: Connection, entry: Entry, key: bytes, now: dt.datetime | None,
            seq: int | None = None) -> tuple[int, str]:
    """Append ``entry`` to the chain inside the caller's transaction; returns its sequence number.

    The head row is locked (FOR UPDATE on PostgreSQL; SQLite transactions already hold the write
    lock), so concurrent appends queue and the chain stays linear.
    """
    head = conn.execute(_LOCK_HEAD).one()
    if seq is not None and seq <= head.seq:
        raise ValueError(f"entry {seq} would reuse a sequence number (the head is at {head.seq})")
    row = {
        "seq": head.seq + 1 if seq is None else seq,
        "at": timestamp(now),
        "org_code": entry.org_code,
        "cert_fingerprint": entry.cert_fingerprint,
        "user_id": entry.user_id,
        "role": entry.role,
        "operation": entry.operation,
        "reason_code": entry.reason_code,
        "reason_text": entry.reason_text,
        "child_ids": " ".join(dict.fromkeys(entry.child_ids)),
        "outcome": entry.outcome,
        "fault_code": entry.fault_code,
        "request_digest": entry.request_digest,
        "detail": entry.detail,
        "source_address": entry.source_address,
        "request_id": entry.request_id,
        "response_digest": entry.response_digest,
        "on_behalf_of": entry.on_behalf_of,
        "behalf_key": entry.behalf_key,
    }
    if entry.source_address is None and entry.request_id is None:
        row["source_address"], row["request_id"] = _ORIGIN.get()
    for name, limit in _LENGTHS.items():  # an over-long field must never stop the entry being written
        value = row.get(name)
        if isinstance(value, str) and len(value) > limit:
            row[name] = value[: limit - 1] + "…"
    row["prev_hash"] = head.entry_hash
    fields = material(row)
    row["entry_hash"] = entry_hash(key, head.entry_hash, row, fields)
    row["public_hash"] = public_hash(head.public_hash, row, fields)
    children = list(dict.fromkeys(entry.child_ids))
    if conn.dialect.name == "postgresql":
        conn.execute(_WRITE_PG, {**row, "children": children})
        return row["seq"], row["entry_hash"]
    conn.execute(_INSERT_ENTRY, row)
    if children:
        conn.execute(_INSERT_CHILD, [{"child_id": c, "seq": row["seq"]} for c in children])
    conn.execute(_MOVE_HEAD, {"new_seq": row["seq"], "new_hash": row["entry_hash"], "new_public": row["public_hash"]})
    return row["seq"], row["entry_hash"]


@dataclass
class Lost:
    """A restore (its ``restore`` entry ``restore_seq``) and the entries it lost (``first``..``last``,
    None when no checkpoint had seen any entry made after the backup)."""

    first: int | None
    last: int | None
    restore_seq: int
    detail: str
    acknowledged: bool = False

    def describe(self) -> str:
        state = "acknowledged by two officers" if self.acknowledged else "NOT yet acknowledged by two officers"
        what = (f"entries {self.first}..{self.last} LOST in the restore" if self.first is not None
                else "no checkpointed entry lost in the restore")
        return f"{what} at entry {self.restore_seq} ({state}): {self.detail}"


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    public_head: str | None = None
    head_seq: int = 0
    lost: list[Lost] = field(default_factory=list)  # every restore and its gap: reported on every run
    anchor_seq: int | None = None  # incremental: the signed checkpoint verified from (``entries`` came after it)

    @property
    def unacknowledged(self) -> list[Lost]:
        return [gap for gap in self.lost if not gap.acknowledged]


_RESTORE_GAP = re.compile(r"; entries (\d+)\.\.(\d+) lost")
_ACKNOWLEDGED = re.compile(r"restore at entry (\d+) acknowledged by ")


def _documented_gap(row, first: int, last: int) -> bool:
    """Does ``row`` (already found authentic) name exactly the entries first..last as lost?"""
    if row["operation"] != "restore":
        return False
    found = _RESTORE_GAP.search(row["detail"] or "")
    return bool(found) and (int(found.group(1)), int(found.group(2))) == (first, last)


def _verify(engine: Engine, key: bytes, batch: int, checkpoints: dict[int, tuple[str, Path]],
            exported: dict[int, tuple[str, str]], anchors=()) -> VerifyResult:
    """Recompute the chain up to the head as read first (appends made meanwhile are left for the
    next run); check that the child index `audit report --child` reads matches the entries, that
    every checkpoint still holds, and that sequence numbers skip only where a restore entry names
    the entries lost; report the first entry that does not fit. With ``anchors`` (signed checkpoints,
    newest first): recompute only after the newest one whose entry is still there (`_anchor`)."""
    prev = prev_public = GENESIS
    count = last = 0
    lost: list[Lost] = []
    acknowledged: set[int] = set()
    anchor_seq = None
    with reader(engine).connect() as conn:  # a long verification must not block writers
        head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one()
        start = _anchor(conn, key, head.seq, anchors, checkpoints, exported)
        if isinstance(start, VerifyResult):
            return start
        if start is not None:
            anchor_seq, prev, prev_public, lost, acknowledged = start
            last = anchor_seq
        while last < head.seq:
            rows = conn.execute(select(audit_log).where(audit_log.c.seq > last, audit_log.c.seq <= head.seq)
                                .order_by(audit_log.c.seq).limit(batch)).mappings().all()
            if not rows:
                break
            upper = rows[-1]["seq"]
            indexed: dict[int, set[str]] = {}
            for child_id, seq in conn.execute(select(audit_children.c.child_id, audit_children.c.seq).where(
                    audit_children.c.seq > last, audit_children.c.seq <= upper)):
                indexed.setdefault(seq, set()).add(child_id)
            for row in rows:
                seq = row["seq"]
                if row["prev_hash"] != prev:
                    if seq != last + 1:
                        return VerifyResult(False, count, last + 1, _missing(last + 1, seq - 1))
                    return VerifyResult(False, count, seq, "link to the previous entry is broken")
                fields = material(row)
                if not hmac.compare_digest(entry_hash(key, prev, row, fields), row["entry_hash"]):
                    return VerifyResult(False, count, seq, "entry was altered")
                if seq != last + 1:  # a gap: only a restore entry, authentic, naming it exactly, may follow one
                    if not _documented_gap(row, last + 1, seq - 1):
                        return VerifyResult(False, count, last + 1, _missing(last + 1, seq - 1))
                    lost.append(Lost(last + 1, seq - 1, seq, row["detail"] or ""))
                elif row["operation"] == "restore":
                    lost.append(Lost(None, None, seq, row["detail"] or ""))
                if row["public_hash"] != public_hash(prev_public, row, fields):
                    return VerifyResult(False, count, seq, "the entry's public link was altered")
                if set(row["child_ids"].split()) != indexed.pop(seq, set()):
                    return VerifyResult(False, count, seq,
                                        "the child index does not match the entry (report rows removed?)")
                known = checkpoints.get(seq)
                if known is not None and row["entry_hash"] != known[0]:
                    return VerifyResult(False, count, seq, f"entry differs from when the chain was last verified "
                                                           f"(checkpoint in {known[1]})")
                known = exported.get(seq)
                if known is not None and row["public_hash"] != known[0]:
                    return VerifyResult(False, count, seq, f"entry differs from the export {known[1]}")
                if row["operation"] == "restore.acknowledged":
                    found = _ACKNOWLEDGED.match(row["detail"] or "")
                    if found:
                        acknowledged.add(int(found.group(1)))
                prev, prev_public = row["entry_hash"], row["public_hash"]
                last = seq
                count += 1
            if indexed:
                return VerifyResult(False, count, min(indexed), "the child index names an entry that "
                                                                  "does not list that child")
        if last < head.seq:
            return VerifyResult(False, count, last + 1, _missing(last + 1, head.seq))
        beyond = max((seq for seq in (*checkpoints, *exported) if seq > head.seq), default=None)
        if beyond is not None:
            where = checkpoints[beyond][1] if beyond in checkpoints else f"the export {exported[beyond][1]}"
            return VerifyResult(False, count, head.seq + 1,
                                f"the chain ends at entry {head.seq} but held {beyond} entries when last verified "
                                f"(checkpoint in {where}): {_missing(head.seq + 1, beyond)} "
                                f"(entries removed, or a restore not recorded in the chain)")
        if head.entry_hash != prev or head.public_hash != prev_public:
            return VerifyResult(False, count, head.seq, "chain head does not match the last entry")
    for gap in lost:
        gap.acknowledged = gap.restore_seq in acknowledged
    return VerifyResult(True, count, head_hash=prev, public_head=prev_public, head_seq=head.seq, lost=lost,
                        anchor_seq=anchor_seq)


_LOOKUP = 1000  # seqs per point look-up


def _previous(conn: Connection, seq: int):
    """The entry before ``seq`` (the one with the highest lower seq: a restore gap may lie between)."""
    return conn.execute(select(audit_log).where(audit_log.c.seq < seq).order_by(audit_log.c.seq.desc())
                        .limit(1)).mappings().first()


def _anchor(conn: Connection, key: bytes, head_seq: int, anchors, checkpoints: dict[int, tuple[str, Path]],
            exported: dict[int, tuple[str, str]]):
    """Where an incremental verification starts: None (from the first entry: no usable anchor), a
    VerifyResult (an alarm: the anchor or a point before it does not hold), or (seq, its HMAC link, its
    public link, the restores before it, the restores acknowledged before it).

    The anchor is the newest signed checkpoint (its signature checked by AuditTrail._anchors) whose
    entry is in the database (one lost in a restore is passed over: the scan from an older one finds
    the restore entry naming it). Its entry must still be the one signed: same HMAC and public links,
    its HMAC recomputed with the key over its fields and the link it names, that link and the public
    one matching the entry before it, its child index rows. Every entry after it is then re-hashed as
    in a full verification (each link covers the previous one, so none of them can be rewritten
    without the key). Before it, only the points recorded outside the database are checked (every
    checkpoint and exported entry, by look-up) and the restore entries read again (authentic, their
    gaps named exactly); what is not re-checked there is in docs/operations.md."""
    for seq, link, public, _signed in anchors:
        if seq > head_seq:
            continue  # beyond the head: the scan from an older anchor ends with that alarm
        row = conn.execute(select(audit_log).where(audit_log.c.seq == seq)).mappings().first()
        if row is None:
            continue  # lost in a restore, or removed: the scan from an older anchor tells which
        where = f"the signed checkpoint of entry {seq}"
        if row["entry_hash"] != link or row["public_hash"] != public:
            return VerifyResult(False, 0, seq, f"entry differs from {where} (when the chain was last verified)")
        fields = material(row)
        if not hmac.compare_digest(entry_hash(key, row["prev_hash"], row, fields), row["entry_hash"]):
            return VerifyResult(False, 0, seq, "entry was altered")
        before = _previous(conn, seq)
        prev_link, prev_public = (before["entry_hash"], before["public_hash"]) if before else (GENESIS, GENESIS)
        if row["prev_hash"] != prev_link:
            return VerifyResult(False, 0, seq, "link to the previous entry is broken")
        if row["public_hash"] != public_hash(prev_public, row, fields):
            return VerifyResult(False, 0, seq, "the entry's public link was altered")
        indexed = {c for (c,) in conn.execute(select(audit_children.c.child_id).where(audit_children.c.seq == seq))}
        if set(row["child_ids"].split()) != indexed:
            return VerifyResult(False, 0, seq, "the child index does not match the entry (report rows removed?)")
        restores = _restores_before(conn, key, seq)
        if isinstance(restores, VerifyResult):
            return restores
        lost, acknowledged = restores
        problem = _points_before(conn, seq, checkpoints, exported, lost)
        if problem is not None:
            return problem
        return seq, row["entry_hash"], row["public_hash"], lost, acknowledged
    return None


def _restores_before(conn: Connection, key: bytes, upto: int):
    """The restores (and their acknowledgements) up to entry ``upto``, each entry authentic (its HMAC
    over the link it names), linked to the entry before it and naming its gap exactly; or an alarm."""
    lost: list[Lost] = []
    acknowledged: set[int] = set()
    rows = conn.execute(select(audit_log).where(text(AUDIT_RESTORES), audit_log.c.seq <= upto)
                        .order_by(audit_log.c.seq)).mappings()
    for row in rows.all():
        seq = row["seq"]
        if not hmac.compare_digest(entry_hash(key, row["prev_hash"], row), row["entry_hash"]):
            return VerifyResult(False, 0, seq, "entry was altered")
        if row["operation"] == "restore.acknowledged":
            found = _ACKNOWLEDGED.match(row["detail"] or "")
            if found:
                acknowledged.add(int(found.group(1)))
            continue
        before = _previous(conn, seq)
        if row["prev_hash"] != (before["entry_hash"] if before else GENESIS):
            return VerifyResult(False, 0, seq, "link to the previous entry is broken")
        first = (before["seq"] if before else 0) + 1
        if first < seq:
            if not _documented_gap(row, first, seq - 1):
                return VerifyResult(False, 0, first, _missing(first, seq - 1))
            lost.append(Lost(first, seq - 1, seq, row["detail"] or ""))
        else:
            lost.append(Lost(None, None, seq, row["detail"] or ""))
    return lost, acknowledged


def _points_before(conn: Connection, upto: int, checkpoints: dict[int, tuple[str, Path]],
                   exported: dict[int, tuple[str, str]], lost: list[Lost]) -> VerifyResult | None:
    """Every checkpoint and exported entry up to entry ``upto`` still in the chain, looked up by seq
    (one lost in a restore named by its restore entry excepted); an alarm for the first that is not."""
    wanted = sorted({seq for seq in (*checkpoints, *exported) if seq <= upto})
    for at in range(0, len(wanted), _LOOKUP):
        chunk = wanted[at:at + _LOOKUP]
        found = {r.seq: r for r in conn.execute(select(audit_log.c.seq, audit_log.c.entry_hash, audit_log.c.public_hash)
                                                .where(audit_log.c.seq.in_(chunk)))}
        for seq in chunk:
            row = found.get(seq)
            if row is None:
                if any(gap.first is not None and gap.first <= seq <= gap.last for gap in lost):
                    continue
                return VerifyResult(False, 0, seq, f"{_missing(seq, seq)} (entries removed, or a restore not "
                                                   f"recorded in the chain)")
            known = checkpoints.get(seq)
            if known is not None and row.entry_hash != known[0]:
                return VerifyResult(False, 0, seq, f"entry differs from when the chain was last verified "
                                                   f"(checkpoint in {known[1]})")
            known = exported.get(seq)
            if known is not None and row.public_hash != known[0]:
                return VerifyResult(False, 0, seq, f"entry differs from the export {known[1]}")
    return None


def _missing(first: int, last: int) -> str:
    return f"entry {first} is missing" if first == last else f"entries {first}..{last} are missing"


def _since(query, since: dt.datetime | None):
    return query if since is None else query.where(audit_log.c.at >= timestamp(since))


def report_for_child(conn: Connection, child_id: str, since: dt.datetime | None = None) -> list[dict]:
    """Every entry that names the child (its id as stored: normalise it first, gateway.index.ids)."""
    query = (select(audit_log).join(audit_children, audit_children.c.seq == audit_log.c.seq)
             .where(audit_children.c.child_id == child_id).order_by(audit_log.c.seq))
    return [dict(r) for r in conn.execute(_since(query, since)).mappings()]


def report_for_user(conn: Connection, org_code: str, user_id: str, since: dt.datetime | None = None) -> list[dict]:
    """Every entry of the user ``ORG:user``, and every read made on behalf of a requester of that
    organisation and name (gateway.mediation: matched case folded, whitespace collapsed)."""
    from gateway.mediation import behalf_key

    query = (select(audit_log).where(or_(and_(audit_log.c.org_code == org_code, audit_log.c.user_id == user_id),
                                         audit_log.c.behalf_key == behalf_key(org_code, user_id)))
             .order_by(audit_log.c.seq))
    return [dict(r) for r in conn.execute(_since(query, since)).mappings()]


def report_for_org(conn: Connection, org_code: str, since: dt.datetime | None = None) -> list[dict]:
    """Every entry of one organisation: its exchanges and what officers did to it."""
    query = select(audit_log).where(audit_log.c.org_code == org_code).order_by(audit_log.c.seq)
    return [dict(r) for r in conn.execute(_since(query, since)).mappings()]
