"""Pushing a source extract to the gateway: mapped, checked, batched, signed, resumable.

`push_file` streams an extract of any size (one row in memory at a time, plus the batch being
built), maps each row with a declarative mapping (connectors.mapping), writes a row that cannot be
sent to the reject file with its line and reason, and sends the rest as signed SubmitUpdates
batches of up to 1,000.

It keeps a state file (SQLite, 0600, at the connecting organisation: it holds the records sent):

- **Exactly once across a crash.** A batch's signed bytes are written to the state before they are
  sent, and the batch is marked done only when the gateway's signed answer is back. A push killed
  at any point, run again, first re-sends the pending batch's *same signed message*: the gateway
  answers it with its first answer if it had applied it (its replay protection), or applies it now.
  Once that message's timestamp has expired it is signed afresh, which is still safe: the gateway
  treats a source record it holds as an update of it, never a second child.
- **Deltas.** Each record the gateway acknowledged is remembered by its source id with a digest
  of what was sent: pushing the same extract again sends nothing ("unchanged"); a newer extract
  sends only the records that changed or are new. With ``full=True`` the extract is the whole of
  the organisation's caseload: a record sent before and absent now is sent once more with each of
  its open involvements ended (today), which ends them for this organisation only.
- **Retries.** A network failure or an `Unavailable` answer re-sends the same signed message after
  a backoff (1, 2, 4 ... up to 30 s, at most ``attempts`` times).
- **Every row's outcome.** Each row read is counted once, in one of created, updated, matched,
  review, rejected (by the mapping, or by the gateway with its reason) or unchanged, including
  across a resume: the batch held from a run cut off is settled first and reported on its own
  (``resumed_batch``: its kind, rows or ended records, and its extract); a row of it that tonight's
  extract has unchanged is counted once, when it is read, at tonight's line; one tonight's extract
  has not (or has changed) is listed against the previous run's extract, without a line unless
  that extract is tonight's, unchanged (path, size, mtime kept with the batch). Every rejected
  row is in the reject file with its line, source id, who rejected it and why.
- **Stopping.** ``stop()`` (the CLI's SIGTERM and SIGINT handler) is asked after each row and
  between retries: a batch in flight is finished (its answer saved), a batch being built is
  abandoned (its rows are read again on the next run), and `Stopped` says so.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from lxml import etree

from connectors import mapping as mapping_mod
from connectors import sources
from connectors.results import UpdateResult
from contactgate_wire.answers import GatewayUnreachable
from contactgate_wire.soap import CG, SOAP_ENV, fault_code, q
from contactgate_wire.spreadsheet import CsvWriter

MAX_BATCH = 1000
RETRYABLE_FAULTS = {"Unavailable", "RateLimited"}
RESIGN_FAULTS = {"MessageExpired", "Replay"}


class PushError(Exception):
    """The push cannot go on (said to the operator; the state keeps what was done)."""


class OtherSource(PushError):
    """A --full push of an extract from another source than the state's last one (exit 2)."""


class Stopped(PushError):
    """The push was asked to stop (a signal): what was done is saved; running it again resumes."""

    def __init__(self, reason: str):
        super().__init__(f"stopped ({reason}): what was sent is saved; run the push again to resume")
        self.reason = reason


REJECT_HEADER = ["line", "source_record_id", "rejected_by", "reason"]


@dataclasses.dataclass
class Summary:
    rows: int = 0  # rows read from the extract
    rejected_rows: int = 0  # by the mapping or the schema, before sending (in the reject file)
    unchanged: int = 0  # sent before, the same: not sent again
    sent: int = 0
    outcomes: Counter = dataclasses.field(default_factory=Counter)  # created, updated, matched, review, rejected
    ended: int = 0  # records absent from a full extract, sent with their involvements ended
    batches: int = 0
    retries: int = 0
    resumed: bool = False
    unmapped_columns: list[str] = dataclasses.field(default_factory=list)
    ended_outcomes: Counter = dataclasses.field(default_factory=Counter)  # of the ended records (not rows)
    review_rows: list[dict] = dataclasses.field(default_factory=list)  # line, source_record_id, child_id
    stopped: str | None = None  # why the run stopped before the end (a signal), or None
    state: str | None = None  # the state file used
    # the batch held from a run cut off, settled first: kind (rows/ended), extract, records, outcomes
    resumed_batch: dict | None = None

    def counts(self) -> dict[str, int]:
        """Every row read counted once: created + updated + matched + review + rejected + unchanged
        == rows (less the rows of a batch abandoned by a stop)."""
        o = self.outcomes
        return {"rows": self.rows, "created": o["created"], "updated": o["updated"], "matched": o["matched"],
                "review": o["review"], "rejected": o["rejected"] + self.rejected_rows,
                "rejected_by_mapping": self.rejected_rows, "rejected_by_gateway": o["rejected"],
                "unchanged": self.unchanged, "sent": self.sent, "ended": self.ended, "batches": self.batches,
                "retries": self.retries}

    def any_rejected(self) -> bool:
        """Whether the reject file has a row (this run's, or the resumed batch's)."""
        return bool(self.rejected_rows or self.outcomes["rejected"]
                    or (self.resumed_batch and self.resumed_batch["outcomes"]["rejected"]))

    def report(self) -> dict:
        """The run report (`contactgate push --report FILE.json`)."""
        return {"counts": self.counts(), "review": self.review_rows, "resumed": self.resumed,
                "stopped": self.stopped, "unmapped_columns": self.unmapped_columns, "state": self.state,
                "ended_outcomes": dict(self.ended_outcomes),
                "resumed_batch": self.resumed_batch and {**self.resumed_batch,
                                                         "outcomes": dict(self.resumed_batch["outcomes"])}}

    def lines(self) -> list[str]:
        o = self.outcomes
        out = [f"rows read: {self.rows}; sent: {self.sent} in {self.batches} batch(es)"
               + (f", {self.retries} retried" if self.retries else "") + (" (resumed)" if self.resumed else ""),
               f"created {o['created']}, updated {o['updated']}, matched {o['matched']}, review {o['review']}, "
               f"rejected {o['rejected'] + self.rejected_rows} ({self.rejected_rows} before sending, "
               f"{o['rejected']} by the gateway)",
               f"unchanged since the last push: {self.unchanged}" + (f"; ended (absent from the full extract): "
                                                                   f"{self.ended}" if self.ended else "")]
        if self.resumed_batch:
            held = self.resumed_batch
            out.append(f"first settled the batch held from the last run ({held['records']} records of "
                       f"{held['extract'] or 'its extract'}): " + ", ".join(
                           f"{k} {v}" for k, v in sorted(held["outcomes"].items())))
        if self.sent == 0 and self.unchanged and not self.ended:
            out.append("nothing changed: nothing was sent")
        if self.unmapped_columns:
            out.append(f"columns not mapped, not sent: {', '.join(self.unmapped_columns)}")
        if self.review_rows:
            out.append(f"sent to review ({len(self.review_rows)}): a data-quality officer decides whether each "
                       f"is a child the index holds:")
            out.extend(f"  line {r['line']}: {r['source_record_id']}" for r in self.review_rows[:20])
            if len(self.review_rows) > 20:
                out.append(f"  ... and {len(self.review_rows) - 20} more (all in the --report file)")
        if self.stopped:
            out.append(f"stopped ({self.stopped}) before the end of the extract: run the push again to resume")
        return out


class State:
    """What was sent and acknowledged (source id -> digest and record), and the batch in flight."""

    def __init__(self, path: Path):
        import fcntl

        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        # One push at a time per state: a second would send the same records beside the first.
        self._lock = open(path.with_name(path.name + ".lock"), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise PushError(f"another push is using {path}: wait for it to finish") from None
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS sent (srid TEXT PRIMARY KEY, digest TEXT NOT NULL, "
                        "record TEXT NOT NULL, seen INTEGER NOT NULL DEFAULT 0)")
        self.db.execute("CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY CHECK (id = 1), "
                        "message BLOB NOT NULL, records TEXT NOT NULL, signed_at REAL NOT NULL, lines TEXT)")
        if "lines" not in {row[1] for row in self.db.execute("PRAGMA table_info(pending)")}:
            self.db.execute("ALTER TABLE pending ADD COLUMN lines TEXT")  # a state from before issue 28
        held_columns = {row[1] for row in self.db.execute("PRAGMA table_info(pending)")}
        for column in ("kind", "extract"):  # a state from before the review of issue 28
            if column not in held_columns:
                self.db.execute(f"ALTER TABLE pending ADD COLUMN {column} TEXT")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def digest_of(self, srid: str) -> str | None:
        row = self.db.execute("SELECT digest FROM sent WHERE srid = ?", (srid,)).fetchone()
        return row[0] if row else None

    def mark_seen(self, srid: str, run: int) -> None:
        self.db.execute("UPDATE sent SET seen = ? WHERE srid = ?", (run, srid))

    def pending(self):
        """(message, records, signed_at, lines, kind, extract) of the batch in flight, or None: kind
        "rows" (rows of ``extract``, its [path, size, mtime], at ``lines``) or "ended"."""
        row = self.db.execute("SELECT message, records, signed_at, lines, kind, extract FROM pending "
                              "WHERE id = 1").fetchone()
        if row is None:
            return None
        records = json.loads(row[1])
        lines = json.loads(row[3]) if row[3] else [None] * len(records)
        return row[0], records, row[2], lines, row[4] or "rows", json.loads(row[5]) if row[5] else None

    def hold(self, message: bytes, records: list[dict], lines: list[int | None], kind: str = "rows",
             extract: list | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO pending (id, message, records, signed_at, lines, kind, extract) "
                        "VALUES (1, ?, ?, ?, ?, ?, ?)", (message, json.dumps(records), time.time(), json.dumps(lines),
                                                         kind, json.dumps(extract)))

    def forget(self) -> None:
        """Forget what was sent (and the batch in flight): the next push sends every row again (the
        gateway takes a source record it holds as an update of it, never a second child)."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("DELETE FROM sent")
        self.db.execute("DELETE FROM pending")
        self.db.execute("COMMIT")

    def done(self, records: list[dict], outcomes: dict[str, str], run: int,
             digests: list[str] | None = None) -> None:
        """The batch was answered: remember what the gateway holds now, and drop the pending batch.
        ``digests``: the records' digests, when already computed."""
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR REPLACE INTO sent (srid, digest, record, seen) VALUES (?, ?, ?, ?)", [
            (record["SourceRecordId"], digests[i] if digests is not None else digest(record), json.dumps(record), run)
            for i, record in enumerate(records) if outcomes.get(record["SourceRecordId"], "rejected") != "rejected"])
        self.db.execute("DELETE FROM pending WHERE id = 1")
        self.db.execute("COMMIT")

    def absent(self, run: int):
        """Records sent before that this run's (full) extract did not have."""
        return [json.loads(r[0]) for r in self.db.execute("SELECT record FROM sent WHERE seen <> ?", (run,))]

    def close(self) -> None:
        self.db.close()
        self._lock.close()


def digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def extract_identity(extract: Path) -> list:
    """[path, size, mtime] of an extract: a held batch's line numbers are its rows' only in it."""
    if isinstance(extract, sources.SqlQuery):  # a query's rows have no lines of a file
        return [extract.name, None, None]
    stat = Path(extract).stat()
    return [str(Path(extract).resolve()), stat.st_size, stat.st_mtime_ns]


def _ended(record: dict, today: dt.date) -> dict:
    record = copy.deepcopy(record)
    for involvement in record.get("Involvement", []):
        if not involvement.get("End"):
            involvement["End"] = today.isoformat()
    return record


def parse_results(body: etree._Element) -> list[UpdateResult]:
    """The Results of a verified SubmitUpdatesResponse body."""
    return [UpdateResult(**{field: result.findtext(q(CG, name)) for field, name in (
        ("source_record_id", "SourceRecordId"), ("outcome", "Outcome"), ("child_id", "ChildId"),
        ("detail", "Detail"))}) for result in body.iterfind(f"{q(CG, 'SubmitUpdatesResponse')}/{q(CG, 'Result')}")]


def push_file(client, extract: Path | str, mapping: mapping_mod.Mapping | Path | str, *, state: Path | str,
              rejects: Path | str, batch_size: int = MAX_BATCH, full: bool = False, attempts: int = 8,
              progress: Callable[[int, int, int], None] | None = None,
              sleep: Callable[[float], None] = time.sleep, message_lifetime_s: float = 240,
              stop: Callable[[], str | None] = lambda: None, forget: bool = False,
              source_named: bool = False) -> Summary:
    """Push ``extract`` through ``client`` (a connectors.client.GatewayClient). ``progress(rows,
    bytes_read, bytes_total)`` is called as rows are read. ``stop()`` returns why to stop (a
    signal's name) or None: the summary then says ``stopped``. ``forget`` starts again: what the
    state remembers is dropped first. A ``full`` push of an extract whose source (`source_name_of`)
    is not the state's last extract's is refused (`OtherSource`) unless ``source_named``: it would
    end every record of the other source."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH}")
    m = mapping if isinstance(mapping, mapping_mod.Mapping) else mapping_mod.load(mapping)
    extract = extract if isinstance(extract, sources.SqlQuery) else Path(extract)
    summary = Summary(unmapped_columns=m.unmapped(sources.columns(extract, m)), state=str(state))
    try:
        store = State(Path(state))
    except PushError as exc:
        exc.summary = summary  # the report is written all the same (what was done: nothing)
        raise
    run = int(time.time() * 1000)
    try:
        if forget:
            store.forget()
        last = store.get("extract")
        if full and not source_named and not forget and last and source_name_of(Path(last)) != source_name_of(extract):
            raise OtherSource(f"this state was last used for {last}, another source than {extract.resolve()}: a full "
                              f"push would end every record of that one; give --source-name (or another --state) if "
                              f"this extract really is the same source")
        store.put("extract", extract.name if isinstance(extract, sources.SqlQuery) else str(extract.resolve()))
        with open(rejects, "w", newline="", encoding="utf-8") as reject_file:
            reject_rows = CsvWriter(reject_file)  # opened in a spreadsheet: quoted, no formula runs
            reject_rows.writerow(REJECT_HEADER)
            sender = _Sender(client, store, summary, attempts, sleep, message_lifetime_s, run, reject_rows, stop,
                             extract_identity(extract))
            try:
                _push_rows(m, extract, store, sender, summary, reject_rows, run, batch_size, full, progress, stop)
            except Stopped as exc:
                summary.stopped = exc.reason
            finally:
                sender.report_carried()
    except PushError as exc:
        exc.summary = summary  # the report of what was done before it failed is written all the same
        raise
    finally:
        store.close()
    return summary


def _push_rows(m, extract, store: State, sender: "_Sender", summary: Summary, reject_rows, run: int,
               batch_size: int, full: bool, progress, stop) -> None:
    held = store.pending()
    if held is not None:  # the last push was cut off with a batch in flight: settle it first
        summary.resumed = True
        message, records, signed_at, lines, kind, held_extract = held
        summary.resumed_batch = {"kind": kind, "extract": held_extract[0] if held_extract else None,
                                 "records": len(records), "outcomes": Counter()}
        sender.send(records, lines, message=message, signed_at=signed_at, kind=kind, held_extract=held_extract)
    carried = sender.carried  # its rows' outcomes, counted when tonight's extract has the same row
    position = sources.Position()
    batch: list[dict] = []
    lines: list[int] = []
    digests: list[str] = []  # the batch's records' digests, computed once
    for line, row in sources.rows(extract, m, position):
        why = stop()
        if why:
            raise Stopped(why)  # the batch being built is abandoned: its rows are read again next time
        summary.rows += 1
        try:
            record = m.record(row)
        except mapping_mod.RowError as exc:
            summary.rejected_rows += 1
            srid = (row.get(m.id_rule.source) or "").strip() if m.id_rule.source else ""
            reject_rows.writerow([line, srid, "mapping", str(exc)])
            continue
        srid = record["SourceRecordId"]
        record_digest = digest(record)
        if srid in carried and carried[srid][0] == record_digest:  # settled on resuming: counted here, once
            sender.count(line, carried.pop(srid)[2])
            if full:
                store.mark_seen(srid, run)
        elif store.digest_of(srid) == record_digest:
            summary.unchanged += 1
            if full:  # only a full extract asks which records it no longer has
                store.mark_seen(srid, run)
        else:
            batch.append(record)
            lines.append(line)
            digests.append(record_digest)
            if len(batch) == batch_size:
                sender.send(batch, lines, digests=digests)
                batch, lines, digests = [], [], []
        if progress is not None and summary.rows % 100 == 0:
            progress(summary.rows, position.bytes, position.total)
    if batch:
        sender.send(batch, lines, digests=digests)
    if full:
        today = dt.date.today()
        absent = [_ended(r, today) for r in store.absent(run)]
        for start in range(0, len(absent), batch_size):
            chunk = absent[start:start + batch_size]
            summary.ended += len(chunk)
            sender.send(chunk, [None] * len(chunk), kind="ended")
    if progress is not None:
        progress(summary.rows, position.total, position.total)


class _Sender:
    def __init__(self, client, store: State, summary: Summary, attempts: int, sleep, lifetime: float, run: int,
                 reject_rows, stop: Callable[[], str | None], extract: list):
        self.client, self.store, self.summary = client, store, summary
        self.attempts, self.sleep, self.lifetime, self.run = attempts, sleep, lifetime, run
        self.reject_rows, self.stop, self.extract = reject_rows, stop, extract
        # rows of the batch held from the last run, settled first: source id -> (digest, line, result)
        self.carried: dict[str, tuple] = {}
        self.carried_from: list | None = None  # the extract they were read from

    def _sign(self, records: list[dict], lines: list[int | None], kind: str, extract: list | None) -> bytes:
        message = self.client.build_request("SubmitUpdates", ChildUpdate=records)
        # before it leaves: a crash after this re-sends these bytes
        self.store.hold(message, records, lines, kind, extract)
        return message

    def count(self, line, result, note: str = "") -> None:
        """One row's outcome: counted, and written to the reject file or the review list."""
        self.summary.outcomes[result.outcome] += 1
        self._list(line, result, note)

    def _list(self, line, result, note: str = "") -> None:
        if result.outcome == "rejected":
            self.reject_rows.writerow([line if line is not None else "", result.source_record_id, "gateway",
                                       note + (result.detail or "rejected (the gateway gave no reason)")])
        elif result.outcome == "review":
            self.summary.review_rows.append({"line": line, "source_record_id": result.source_record_id,
                                             "child_id": result.child_id, **({"note": note} if note else {})})

    def report_carried(self) -> None:
        """Rows of the resumed batch tonight's extract did not have as they were sent: listed against
        the extract they came from (its line numbers only when it is tonight's, unchanged)."""
        same = self.carried_from is not None and self.carried_from == self.extract
        where = self.carried_from[0] if self.carried_from else "an earlier extract"
        for _, line, result in self.carried.values():
            self._list(line if same else None, result, "" if same else f"previous run's extract {where}: ")
        self.carried = {}

    def _settled(self, records: list[dict], lines: list[int | None], results, kind: str,
                 held_extract: list | None, resumed: bool, digests: list[str] | None = None) -> None:
        outcomes = {r.source_record_id: r.outcome for r in results}
        self.store.done(records, outcomes, self.run, digests)
        self.summary.sent += len(records)
        self.summary.batches += 1
        if resumed:  # reported as the resumed batch; its rows are counted when tonight's extract has them
            self.summary.resumed_batch["outcomes"].update(r.outcome for r in results)
            if kind == "rows":
                self.carried_from = held_extract
                self.carried = {result.source_record_id: (digest(record), line, result)
                                for record, line, result in zip(records, lines, results)}
                return
        elif kind == "ended":
            self.summary.ended_outcomes.update(r.outcome for r in results)
        else:
            self.summary.outcomes.update(r.outcome for r in results)
        for line, result in zip(lines, results):
            self._list(line, result)

    def send(self, records: list[dict], lines: list[int | None], *, message: bytes | None = None,
             signed_at: float | None = None, kind: str = "rows", held_extract: list | None = None,
             digests: list[str] | None = None) -> None:
        resumed = message is not None
        extract = held_extract if resumed else (self.extract if kind == "rows" else None)
        if message is None or time.time() - (signed_at or 0) > self.lifetime:
            message = self._sign(records, lines, kind, extract)
        delay = 1.0
        for attempt in range(1, self.attempts + 1):
            try:
                status, body = self.client.exchange("SubmitUpdates", message)
            except (GatewayUnreachable, OSError) as exc:
                problem = f"network: {exc.__cause__.__class__.__name__ if exc.__cause__ else exc}"
            else:
                code = fault_code(body)
                if status == 200 and code is None:
                    results = parse_results(body)
                    if len(results) != len(records):
                        raise PushError(f"the gateway answered {len(results)} results for {len(records)} records")
                    self._settled(records, lines, results, kind, extract, resumed, digests)
                    return
                if code in RESIGN_FAULTS:  # the held message is too old to be taken: the same records, signed now
                    message = self._sign(records, lines, kind, extract)
                    problem = f"re-signed after {code}"
                elif code not in RETRYABLE_FAULTS:
                    reason = body.findtext(f"{q(SOAP_ENV, 'Fault')}/faultstring") or ""
                    raise PushError(f"the gateway refused a batch: {code}: {reason}")
                else:
                    problem = code
            if attempt == self.attempts:
                raise PushError(f"gave up after {attempt} attempts ({problem}); run the push again to resume")
            why = self.stop()
            if why:  # the batch stays held in the state: the next run sends it first
                raise Stopped(why)
            self.summary.retries += 1
            self.sleep(delay)
            delay = min(delay * 2, 30.0)


# ---- where the state is kept ---------------------------------------------------------------------

def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/contactgate/push``, else ``~/.local/state/contactgate/push``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "contactgate" / "push"


# A date (and time) in a file's name: 2026-12-08, 20261208, 08-12-2026, 08.12.2026, 2026-12-08T0100, ...
_DATE_IN_NAME = re.compile(r"(?<!\d)(?:\d{4}[-_.]?\d{2}[-_.]?\d{2}|\d{2}[-_.]\d{2}[-_.]\d{4})(?:[T_ -]?\d{4,6})?(?!\d)")


def source_name_of(extract: Path) -> str:
    """The source an extract comes from, when not named (``--source-name``): its absolute path with
    a date in the file's *name* as ``#`` (never a folder's digits), so that tonight's
    ``cases-2026-12-08.csv`` is the same source as last night's ``cases-2026-12-07.csv``, while
    ``system1/cases.csv`` and ``system2/cases.csv`` are two."""
    path = Path(extract).resolve()
    return str(path.parent / dated_name(path.name))


def dated_name(name: str) -> str:
    """A file's name with a date in it as ``#``: one source night after night."""
    return _DATE_IN_NAME.sub("#", name)


def organisation_of(cert: Path) -> str:
    """The organisation a certificate names (its subject's common name; the whole subject else):
    the same after the certificate is renewed."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


def state_path(state_dir: Path, source: str, organisation: str, gateway_url: str) -> Path:
    """The state of (source, organisation, gateway) under ``state_dir``: never the mapping's path,
    so a mapping copied or edited does not forget what was sent. A ``.json`` beside it says whose
    state it is."""
    gateway_url = gateway_url.rstrip("/").lower()
    key = hashlib.sha256(json.dumps([source, organisation, gateway_url]).encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(source).stem.replace("#", "")).strip("-")[:40] or "extract"
    path = Path(state_dir) / f"{stem}-{key}.state"
    about = path.with_suffix(".json")
    if not about.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        about.write_text(json.dumps({"source": source, "organisation": organisation, "gateway": gateway_url},
                                    indent=2) + "\n")
    return path


def adopt_state_beside(mapping_file: Path, path: Path) -> Path | None:
    """A state kept beside the mapping (``MAPPING.state``, before issue 28) moved to ``path`` when
    ``path`` has none yet: the old state, or None."""
    old = Path(mapping_file).with_suffix(".state")
    if path.exists() or not old.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix in ("", "-wal", "-shm"):
        if Path(str(old) + suffix).exists():
            shutil.move(str(old) + suffix, str(path) + suffix)
    Path(str(old) + ".lock").unlink(missing_ok=True)
    return old
