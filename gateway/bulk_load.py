"""`contactgate load`: an organisation's signed load file (contactgate_wire.load_file, written at the
organisation by `contactgate load-prepare`) applied on the gateway host, for a first or full re-load.

Accepted exactly as a push is: the signing certificate must chain to a trusted CA, be registered
to the organisation the file names and not be revoked; the header's signature must hold; the
organisation must be accredited (not suspended, not expired) with the ``push`` scope. The operator
who runs the command cannot forge, change, add, drop or reorder a batch: the signed header holds
every batch's SHA-256, each checked before anything is written (the whole file first, then each
batch again just before it is applied). A file older than MAX_AGE is refused, and so is a file made
before any change the organisation made since (a push accepted, or another load's batch, after the
file's ``created``): a stale caseload must not overwrite a newer one; this is checked when a run
starts and again in each batch's transaction (the entries appended since the batch before). A load
is the file's signed content (``load_id``: the SHA-256 of ``signed_bytes(header)``, the signature
left out), so the same file with its header written another way is the same load, not a new one.
A refusal is audited, in its own transaction, and changes nothing.

Each batch is one push's worth of records and goes through what SubmitUpdates does after its
signature step: the hardened parser, the XSD, the v1 dialect's reading, and
``gateway.index.batches.apply_updates`` (the same linkage rules and thresholds, matched as one
batch), in one transaction with one audit entry (``BulkLoad``, like a SubmitUpdates entry: the
outcomes tallied, the children named) and the load's progress row (``bulk_loads``). A load killed
at any point and run again resumes after the last batch committed: each record is applied once.
Batches are bounded (at most contactgate_wire.load_file.MAX_RECORDS_PER_BATCH records), so the
write lock (SQLite) or row locks (PostgreSQL) are held for one batch at a time and online reads go
on meanwhile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import random
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from cryptography import x509
from lxml import etree
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import OperationalError

import contactgate_schemas as schemas
from contactgate_wire import load_file
from contactgate_wire.certificates import UNUSABLE_CERTIFICATE
from contactgate_wire.faults import (
    CertificateRejected, MalformedMessage, MessageExpired, NotAccredited, Refusal, SchemaInvalid, ScopeDenied,
    SignatureInvalid, SignerMismatch,
)
from contactgate_wire.soap import UnsafeXML, digest_b64, parse_untrusted
from gateway.audit import chain as audit
from gateway.db import write_transaction, writer_turns
from gateway.audit import links as audit_links
from gateway.db import audit_log, bulk_loads
from gateway.index import batches
from gateway.index.deciding import LinkPolicy
from gateway.pipeline import contactgate_v1 as dialect
from gateway.pipeline.context import compiled_schema
from gateway.trust import pki, registry
from gateway.trust.pki import ChainError

OPERATION = "BulkLoad"
MAX_AGE = dt.timedelta(days=14)  # a load file signed longer ago than this is refused
CLOCK_SKEW = dt.timedelta(minutes=5)
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock, serialization failure: the batch again
ATTEMPTS = 3


class Stopped(Exception):
    """Asked to stop (a signal) between batches: what was applied is committed; run again to resume."""


@dataclasses.dataclass
class Verified:
    load_id: str
    org_code: str
    fingerprint: str
    digests: list[str]
    records: int
    created: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    seen_seq: int = 0  # the audit trail's head when the organisation's later changes were last looked for


@dataclasses.dataclass
class Summary:
    load_id: str = ""
    org_code: str = ""
    batches: int = 0
    batches_applied: int = 0  # by this run
    batches_before: int = 0  # applied by an earlier run (resumed after them)
    records_applied: int = 0
    outcomes: Counter = dataclasses.field(default_factory=Counter)
    seconds: float = 0.0
    already_loaded: bool = False

    def lines(self) -> list[str]:
        o = self.outcomes
        rate = self.records_applied / self.seconds if self.seconds else 0.0
        out = [f"load {self.load_id[:16]} for {self.org_code}: {self.batches} batch(es)"
               + (f", {self.batches_before} applied before (resumed)" if self.batches_before else "")
               + ("; already loaded: nothing to do" if self.already_loaded else "")]
        if not self.already_loaded:
            out.append(f"applied {self.batches_applied} batch(es), {self.records_applied} records in "
                       f"{self.seconds:.1f} s ({rate:.0f} records/s): created {o['created']}, updated {o['updated']}, "
                       f"matched {o['matched']}, review {o['review']}, rejected {o['rejected']}")
        return out


def trust_anchors(settings) -> pki.TrustAnchors:
    from gateway.app import trust_anchor_files

    return pki.TrustAnchors.from_files(trust_anchor_files(settings))


def _schema() -> etree.XMLSchema:
    """The message pipeline's compiled XSD (compiled once per thread, not once per load)."""
    return compiled_schema(schemas.read(schemas.XSD_NAME))


# ---- accepting the file ------------------------------------------------------------------------

def verify_header(conn, anchors: pki.TrustAnchors, header_line: bytes, now: dt.datetime) -> Verified:
    """The header's signer and organisation checked as a push's are (Refusal otherwise)."""
    try:
        header = load_file.read_header(header_line)
    except load_file.LoadFileError as exc:
        raise MalformedMessage(str(exc)) from None
    try:
        certificate = x509.load_pem_x509_certificate(header["certificate"].encode("ascii"))
        anchors.verify_client(certificate, at=now)
    except ChainError as exc:
        raise CertificateRejected(f"the load file's signing certificate is not accepted: {exc}") from None
    except (*UNUSABLE_CERTIFICATE, ValueError, UnicodeEncodeError) as exc:
        raise CertificateRejected(f"the load file's signing certificate cannot be used: {exc}") from None
    fingerprint = pki.fingerprint(certificate)
    record, organisation = registry.get_cert_and_org(conn, fingerprint)
    if record is None:
        raise CertificateRejected(f"signing certificate {fingerprint} is not registered to any organisation")
    if record.revoked_at is not None:
        raise CertificateRejected(f"signing certificate {fingerprint} was revoked: {record.revoked_reason}")
    if record.org_code != header["organisation"]:
        raise SignerMismatch(f"the file names {header['organisation']!r}; its signing certificate {fingerprint} "
                             f"is registered to {record.org_code}")
    if not load_file.signature_holds(header, certificate):
        raise SignatureInvalid(f"the load file's header is not signed by certificate {fingerprint}")
    try:
        created = dt.datetime.fromisoformat(header["created"])
    except ValueError:
        raise MalformedMessage("the header's created time cannot be read") from None
    if created.tzinfo is None or created > now + CLOCK_SKEW or now - created > MAX_AGE:
        raise MessageExpired(f"the load file was made at {header['created']}: a load file must be loaded within "
                             f"{MAX_AGE.days} days of being made (make it again with `contactgate load-prepare`)")
    refusal = organisation.refusal_reason(now.date())
    if refusal:
        raise NotAccredited(refusal)
    needed = registry.OPERATION_SCOPES["SubmitUpdates"]
    if needed not in organisation.scopes:
        raise ScopeDenied(f"a load is a push: it needs scope {needed}; {organisation.code} is accredited for "
                          f"{sorted(organisation.scopes)}")
    # The load is the signed content, not the line's bytes: re-serialising the header (spacing, key
    # order) or re-encoding the signature (ECDSA's (r, n - s)) must not make a loaded file a new load.
    verified = Verified(load_id=hashlib.sha256(load_file.signed_bytes(header)).hexdigest(), org_code=record.org_code,
                        fingerprint=fingerprint, digests=list(header["batches"]), records=header["records"],
                        created=created)
    verified.seen_seq = _head_seq(conn)
    _refuse_if_stale(conn, verified, since_at=created)
    return verified


_CHANGES = ("SubmitUpdates", OPERATION)  # what changes an organisation's records


def _head_seq(conn) -> int:
    return conn.execute(select(func.coalesce(func.max(audit_log.c.seq), 0))).scalar_one()


def _refuse_if_stale(conn, verified: Verified, *, since_at: dt.datetime | None = None,
                     since_seq: int | None = None) -> None:
    """MessageExpired if the organisation changed its records after the file was made (a push
    accepted, or a batch of another load, audited after ``created``): applying the older file would
    restate every record as it stood before. ``since_at``: looked for by time (a run's start);
    ``since_seq``: among the entries appended after that sequence number (each batch)."""
    query = select(audit_log.c.seq, audit_log.c.operation, audit_log.c.at).where(
        audit_log.c.org_code == verified.org_code, audit_log.c.outcome == "accepted",
        audit_log.c.operation.in_(_CHANGES),
        or_(audit_log.c.operation != OPERATION, audit_log.c.detail.is_(None),
            ~audit_log.c.detail.startswith(f"load {verified.load_id[:16]} batch ", autoescape=True)))
    if since_at is not None:
        query = query.where(audit_log.c.at > audit_links.timestamp(since_at))
    if since_seq is not None:
        query = query.where(audit_log.c.seq > since_seq)
    newer = conn.execute(query.order_by(audit_log.c.seq).limit(1)).first()
    if newer is not None:
        raise MessageExpired(
            f"{verified.org_code} changed its records after this load file was made ({newer.operation} at "
            f"{newer.at}, audit entry {newer.seq}): loading it would restate them as they were; make the file "
            f"again with `contactgate load-prepare`")


def _batch_lines(stream, count: int):
    """(index, line without its end) for each batch line; a line past the signed count, or a file
    cut short, is refused."""
    index = -1
    for index, raw in enumerate(iter(lambda: stream.readline(load_file.MAX_BATCH_LINE_BYTES + 2), b"")):
        if not raw.endswith(b"\n"):
            if len(raw) > load_file.MAX_BATCH_LINE_BYTES:
                raise MalformedMessage(f"batch {index + 1} is longer than {load_file.MAX_BATCH_LINE_BYTES} bytes")
        if index >= count:
            raise SignatureInvalid(f"the file holds more batches than the {count} its header signs")
        yield index, raw.rstrip(b"\n")
    if index + 1 != count:
        raise SignatureInvalid(f"the file holds {index + 1} batches; its header signs {count} (cut short?)")


def check_batches(path: Path, verified: Verified, header_length: int, schema: etree.XMLSchema) -> None:
    """Every batch line's SHA-256 is the one the header signs, and every batch can be read (the
    hardened parser, the XSD, the dialect's reading), before anything is written: a batch refused
    half-way through would leave the load half applied, and unable to go on."""
    with open(path, "rb") as stream:
        stream.seek(header_length)
        for index, line in _batch_lines(stream, len(verified.digests)):
            if load_file.batch_digest(line) != verified.digests[index]:
                raise SignatureInvalid(f"batch {index + 1} is not the one the header signs (altered)")
            _read_batch(line, index, schema)


def _refuse(engine, trail: audit.AuditTrail, refusal: Refusal, path: Path, verified: Verified | None,
            header_line: bytes | None) -> None:
    with engine.begin() as conn:
        trail.append(conn, audit.Entry(
            operation=OPERATION, outcome="refused", fault_code=refusal.code,
            org_code=verified.org_code if verified else None,
            cert_fingerprint=verified.fingerprint if verified else None,
            request_digest=digest_b64(header_line) if header_line else None,
            detail=f"load file {path.name}: {refusal.detail}"[:2000]))


# ---- applying it -------------------------------------------------------------------------------

def run(engine, trail: audit.AuditTrail, anchors: pki.TrustAnchors, path: Path, *, policy: LinkPolicy,
        purge_years: int, clock: Callable[[], dt.datetime] | None = None, stop: Callable[[], str | None] | None = None,
        progress: Callable[[Summary], None] | None = None) -> Summary:
    """Verify the load file at ``path`` and apply its batches not yet applied; Refusal (audited,
    nothing changed by it) if the file is not accepted; Stopped if ``stop()`` answers between batches."""
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
    verified, header_line = None, None
    schema = _schema()
    summary = Summary()
    try:
        with open(path, "rb") as stream:
            header_line = stream.readline(load_file.MAX_HEADER_BYTES + 2)
        if not header_line.endswith(b"\n"):
            raise MalformedMessage("the file has no header line (or one too long): not a load file")
        header_length = len(header_line)
        header_line = header_line.rstrip(b"\n")
        with engine.begin() as conn:
            verified = verify_header(conn, anchors, header_line, clock())
        check_batches(path, verified, header_length, schema)
        summary.load_id, summary.org_code = verified.load_id, verified.org_code
        summary.batches = len(verified.digests)
        done = _start(engine, verified, clock())
        summary.batches_before = done
        if done >= summary.batches:
            summary.already_loaded = True
            return summary
        started = time.monotonic()
        with open(path, "rb") as stream:
            stream.seek(header_length)
            for index, line in _batch_lines(stream, summary.batches):
                if index < done:
                    continue
                why = stop() if stop else None
                if why:
                    raise Stopped(why)
                if load_file.batch_digest(line) != verified.digests[index]:  # changed since it was checked
                    raise SignatureInvalid(f"batch {index + 1} is not the one the header signs (altered)")
                updates = _read_batch(line, index, schema)
                tally = _apply(engine, trail, verified, index, line, updates, clock, policy, purge_years)
                if _turns(engine) is not None:
                    time.sleep(YIELD_S)  # the write lock to a waiting reader's audit entry before the next batch
                summary.outcomes.update(tally)
                summary.batches_applied += 1
                summary.records_applied += len(updates)
                summary.seconds = time.monotonic() - started
                if progress:
                    progress(summary)
    except Refusal as refusal:
        _refuse(engine, trail, refusal, path, verified, header_line)
        raise
    return summary


def _read_batch(line: bytes, index: int, schema: etree.XMLSchema):
    try:
        payload = parse_untrusted(load_file.batch_xml(line))
    except (UnsafeXML, load_file.LoadFileError) as exc:
        raise MalformedMessage(f"batch {index + 1}: {exc}") from None
    if payload.tag != f"{{{dialect.CG}}}SubmitUpdates":
        raise SchemaInvalid(f"batch {index + 1} is not a SubmitUpdates element")
    if not schema.validate(payload):
        error = schema.error_log.last_error
        raise SchemaInvalid(f"batch {index + 1} does not conform to the schema"
                            + (f" (line {error.line})" if error else ""))
    updates = dialect.read_submit_updates(payload)
    if len(updates) > load_file.MAX_RECORDS_PER_BATCH:
        raise MalformedMessage(f"batch {index + 1} holds more than {load_file.MAX_RECORDS_PER_BATCH} records")
    return updates


def _start(engine, verified: Verified, now: dt.datetime) -> int:
    """The load's progress row (made on its first run): how many batches are applied."""
    with engine.begin() as conn:
        done = conn.execute(select(bulk_loads.c.batches_done).where(
            bulk_loads.c.load_id == verified.load_id)).scalar()
        if done is None:
            conn.execute(insert(bulk_loads).values(
                load_id=verified.load_id, org_code=verified.org_code, cert_fingerprint=verified.fingerprint,
                batches=len(verified.digests), records=verified.records, batches_done=0, started_at=now,
                updated_at=now))
            done = 0
    return done


def _apply(engine, trail, verified: Verified, index: int, line: bytes, updates, clock, policy, purge_years) -> Counter:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _apply_once(engine, trail, verified, index, line, updates, clock(), policy, purge_years)
        except OperationalError as exc:
            if attempt == ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in TRANSIENT_SQLSTATES:
                raise
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("not reached")


_TURNS: dict = {}
TURN_TIMEOUT_S = 60.0
# On SQLite, a pause between batches in which a serving gateway waiting for the write lock (a read's
# audit entry) takes its turn: without it the next batch took the lock back first, every time.
YIELD_S = 0.05


def _turns(engine):
    """This process's turns at ``engine``'s SQLite write lock (None on PostgreSQL), made once."""
    key = str(engine.url)
    if key not in _TURNS:
        _TURNS[key] = writer_turns(engine, TURN_TIMEOUT_S)
    return _TURNS[key]


class _AlreadyApplied(Exception):
    pass


def _apply_once(engine, trail, verified: Verified, index: int, line: bytes, updates, now: dt.datetime,
                policy: LinkPolicy, purge_years: int) -> Counter:
    """One batch, its audit entry and the load's progress, in one transaction. The progress row is
    locked and checked first: two runs of one file never apply a batch twice."""
    # In the serving gateway's turns at a SQLite database's write lock (gateway.db.WriterTurns): without
    # them the load took the lock back batch after batch while a read's audit entry waited in SQLite's
    # busy handler, and reads were answered only when the load had ended.
    with write_transaction(engine, _turns(engine)) as conn:
        done = conn.execute(select(bulk_loads.c.batches_done).where(bulk_loads.c.load_id == verified.load_id)
                            .with_for_update()).scalar_one()
        if done != index:
            raise MalformedMessage(f"batch {index + 1} of load {verified.load_id[:16]} was applied by another run "
                                   f"meanwhile ({done} applied): run the load once at a time")
        results = batches.apply_updates(conn, verified.org_code, updates, now, policy, purge_years, bulk=True)
        tally = Counter(result.recorded_outcome for result in results)
        notes = Counter(tally)
        archived = sum(1 for r in results if r.withheld_child_id)
        if archived:
            notes["archived"] = archived
        conflicts = sum(1 for r in results if r.identifier_conflict)
        if conflicts:
            notes["identifier_conflict"] = conflicts
        questioned = sum(1 for r in results if r.value_conflict)
        if questioned:
            notes["value_conflict"] = questioned
        last = index + 1 == len(verified.digests)
        trail.append(conn, audit.Entry(
            operation=OPERATION, outcome="accepted", org_code=verified.org_code,
            cert_fingerprint=verified.fingerprint, request_digest=digest_b64(line),
            child_ids=[r.child_id or r.withheld_child_id for r in results if r.child_id or r.withheld_child_id],
            detail=f"load {verified.load_id[:16]} batch {index + 1}/{len(verified.digests)}: "
                   + " ".join(f"{k}={v}" for k, v in sorted(notes.items()))))
        # A push since the batch before: looked for once the batch's entry is appended, so while this
        # transaction holds the trail's head (every accepted push appends under it): a push that
        # committed while this batch waited for its locks is seen; one not yet committed lands after it.
        _refuse_if_stale(conn, verified, since_seq=verified.seen_seq)
        conn.execute(update(bulk_loads).where(bulk_loads.c.load_id == verified.load_id).values(
            batches_done=index + 1, updated_at=now, **({"finished_at": now} if last else {})))
        seen = _head_seq(conn)
    verified.seen_seq = seen  # committed: the next batch looks only at what was appended after it
    return tally
