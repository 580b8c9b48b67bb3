from __future__ import annotations

import contextvars
import datetime as dt
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.engine import Connection, Engine

from gateway import files
from gateway.audit.checkpoints import CheckpointSigner, checkpoint_line, last_checkpoint
from gateway.audit.links import GENESIS, entry_hash, material, public_hash, timestamp
from gateway.db import audit_children, audit_head, audit_log, reader


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

    def __init__(self, key: bytes, *, checkpoints: Path | None = None, signer=None):
        if len(key) < KEY_BYTES:
            raise ValueError("the audit chain key is too short")
        self._key = key
        self._checkpoints = checkpoints
        self._signer_factory = signer  # () -> gateway.audit.checkpoints.CheckpointSigner, or None
        self._signer = None  # loaded on first use, then kept: the key is read once per process

    @classmethod
    def from_file(cls, path: Path, *, checkpoints: Path | None = None, signer=None) -> "AuditTrail":
        try:
            return cls(path.read_bytes(), checkpoints=checkpoints, signer=signer)
        except FileNotFoundError:
            raise FileNotFoundError(f"no audit chain key at {path}: run `contactgate init`") from None

    @classmethod
    def of_home(cls, layout) -> "AuditTrail":
        """The home's trail: its key, its checkpoints file, and checkpoints signed with the gateway's
        signing key (loaded when the first checkpoint is written)."""
        return cls.from_file(layout.audit_key, checkpoints=layout.audit_checkpoints,
                             signer=lambda: CheckpointSigner.from_layout(layout) if layout.signing_key.exists() else None)

    def append(self, conn: Connection, entry: Entry, *, now: dt.datetime | None = None) -> int:
        return _append(conn, entry, self._key, now)

    def verify(self, engine: Engine, batch: int = 5000) -> VerifyResult:
        """Verify the chain. With a checkpoints file (outside the database), the chain must also still
        hold the head the last successful run recorded — so cutting the tail and moving the head back
        is detected — and a successful run records the new head there."""
        try:
            checkpoint = last_checkpoint(self._checkpoints)
        except ValueError as exc:  # the file outside the database was altered: that is tampering too
            return VerifyResult(False, 0, None, f"the checkpoints file {self._checkpoints} is altered ({exc})")
        result = _verify(engine, self._key, batch, checkpoint)
        if result.ok and self._checkpoints is not None:
            files.append_private(self._checkpoints, checkpoint_line(result.entries, result.head_hash,
                                                                    result.public_head, self.checkpoint_signer()))
        return result

    def checkpoint_signer(self):
        """What signs checkpoints (the gateway's signing key), loaded once; None without one."""
        if self._signer is None and self._signer_factory is not None:
            self._signer = self._signer_factory()
        return self._signer


def _append(conn: Connection, entry: Entry, key: bytes, now: dt.datetime | None) -> int:
    """Append ``entry`` to the chain inside the caller's transaction; returns its sequence number.

    The head row is locked (FOR UPDATE on PostgreSQL; SQLite transactions already hold the write
    lock), so concurrent appends queue and the chain stays linear.
    """
    head = conn.execute(_LOCK_HEAD).one()
    row = {
        "seq": head.seq + 1,
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
        return row["seq"]
    conn.execute(_INSERT_ENTRY, row)
    if children:
        conn.execute(_INSERT_CHILD, [{"child_id": c, "seq": row["seq"]} for c in children])
    conn.execute(_MOVE_HEAD, {"new_seq": row["seq"], "new_hash": row["entry_hash"], "new_public": row["public_hash"]})
    return row["seq"]


@dataclass
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None
    public_head: str | None = None


def _verify(engine: Engine, key: bytes, batch: int, checkpoint: tuple[int, str] | None = None) -> VerifyResult:
    """Recompute the chain up to the head as read first (appends made meanwhile are left for the
    next run); check that the child index `audit report --child` reads matches the entries; report
    the first entry that does not fit."""
    prev = prev_public = GENESIS
    count = 0
    with reader(engine).connect() as conn:  # a long verification must not block writers
        head = conn.execute(select(audit_head).where(audit_head.c.id == 1)).one()
        while count < head.seq:
            upper = min(head.seq, count + batch)
            rows = conn.execute(select(audit_log).where(audit_log.c.seq > count, audit_log.c.seq <= upper)
                                .order_by(audit_log.c.seq)).mappings().all()
            indexed: dict[int, set[str]] = {}
            for child_id, seq in conn.execute(select(audit_children.c.child_id, audit_children.c.seq).where(
                    audit_children.c.seq > count, audit_children.c.seq <= upper)):
                indexed.setdefault(seq, set()).add(child_id)
            expected_seq = count + 1
            for row in rows:
                if row["seq"] != expected_seq:
                    return VerifyResult(False, count, expected_seq, f"entry {expected_seq} is missing")
                if row["prev_hash"] != prev:
                    return VerifyResult(False, count, row["seq"], "link to the previous entry is broken")
                fields = material(row)
                if not hmac.compare_digest(entry_hash(key, prev, row, fields), row["entry_hash"]):
                    return VerifyResult(False, count, row["seq"], "entry was altered")
                if row["public_hash"] != public_hash(prev_public, row, fields):
                    return VerifyResult(False, count, row["seq"], "the entry's public link was altered")
                if set(row["child_ids"].split()) != indexed.pop(row["seq"], set()):
                    return VerifyResult(False, count, row["seq"],
                                        "the child index does not match the entry (report rows removed?)")
                if checkpoint is not None and row["seq"] == checkpoint[0] and row["entry_hash"] != checkpoint[1]:
                    return VerifyResult(False, count, row["seq"], "entry differs from when the chain was "
                                                                  "last verified")
                prev, prev_public = row["entry_hash"], row["public_hash"]
                expected_seq += 1
                count += 1
            if count < upper:
                return VerifyResult(False, count, count + 1, f"entry {count + 1} is missing")
            if indexed:
                return VerifyResult(False, count, min(indexed), "the child index names an entry that "
                                                                  "does not list that child")
        if checkpoint is not None and checkpoint[0] > head.seq:
            return VerifyResult(False, count, head.seq + 1,
                                f"the chain ends at entry {head.seq} but held {checkpoint[0]} entries when "
                                f"last verified (entries removed?)")
        if head.entry_hash != prev or head.public_hash != prev_public:
            return VerifyResult(False, count, head.seq, "chain head does not match the last entry")
    return VerifyResult(True, count, head_hash=prev, public_head=prev_public)


def _since(query, since: dt.datetime | None):
    return query if since is None else query.where(audit_log.c.at >= timestamp(since))


def report_for_child(conn: Connection, child_id: str, since: dt.datetime | None = None) -> list[dict]:
    """Every entry that names the child (its id as stored: normalise it first, gateway.index.ids)."""
    query = (select(audit_log).join(audit_children, audit_children.c.seq == audit_log.c.seq)
             .where(audit_children.c.child_id == child_id).order_by(audit_log.c.seq))
    return [dict(r) for r in conn.execute(_since(query, since)).mappings()]


def report_for_user(conn: Connection, org_code: str, user_id: str, since: dt.datetime | None = None) -> list[dict]:
    query = (select(audit_log).where(audit_log.c.org_code == org_code, audit_log.c.user_id == user_id)
             .order_by(audit_log.c.seq))
    return [dict(r) for r in conn.execute(_since(query, since)).mappings()]


def report_for_org(conn: Connection, org_code: str, since: dt.datetime | None = None) -> list[dict]:
    """Every entry of one organisation: its exchanges and what officers did to it."""
    query = select(audit_log).where(audit_log.c.org_code == org_code).order_by(audit_log.c.seq)
    return [dict(r) for r in conn.execute(_since(query, since)).mappings()]
