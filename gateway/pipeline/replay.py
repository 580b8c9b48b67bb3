"""Step 5: replay and idempotency.

A message is named by its organisation and the hash of its canonical SignedInfo (what was signed,
not how the signature is spelled). What was answered lives in the database: every accepted exchange
inserts that name into `processed_messages` in the SAME transaction as its effect, its audit entry
and its signed answer (for a SubmitUpdates, the answer is stored with it). So the memory of what was
answered commits or vanishes with the answer itself: a worker killed mid-exchange leaves nothing
behind, and Redis — which now holds only rate counters, whose loss merely resets limits — can
restart empty, fail over to a lagging replica or evict keys without letting a replay through or
applying a SubmitUpdates twice. No "marker key" to detect a Redis that forgot is needed: correctness
never asks Redis.

A copy arriving after the first committed: a read is refused `Replay`; a SubmitUpdates gets the
stored first answer (audited "repeat"), nothing applied. That is checked cheaply before any work
(`check_replay`), and again inside the exchange's transaction (`exchange_transaction`), where the
primary key also refuses a copy that slipped past both. A refusal changes nothing and leaves no row,
so copies of a refused message are judged afresh.

Two copies in flight at once:
- PostgreSQL: the exchange's transaction starts with `pg_try_advisory_xact_lock` on the message's
  name. A second copy does not wait holding a thread: it is answered `Unavailable` ("retry shortly")
  at once. When the first commits, retries get its answer; if its worker died, PostgreSQL aborts the
  transaction and releases the lock as soon as the connection drops, so the retry proceeds at once.
- SQLite: BEGIN IMMEDIATE already serialises writers, so the second copy waits for the first to
  commit like any write (at most the database timeout) and then gets its answer. Parking that
  thread is accepted for the single-host embedded store; a killed worker's lock dies with it.

Rows expire when the message can no longer be accepted (`Exchange.timestamp_expires`) and are
deleted now and then; correctness never depends on it, since an expired message is refused
`MessageExpired` before replay is consulted.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
from typing import Iterator

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.engine import Connection

from gateway.db import processed_messages
from contactgate_wire.faults import Replay, Unavailable
from gateway.index import sealed
from gateway.pipeline.authorisation import count_in_transaction
from gateway.pipeline.context import Exchange, Services

IDEMPOTENT_OPERATIONS = frozenset({"SubmitUpdates"})
CLEAN_UP_PROBABILITY = 0.01  # amortised deletion of expired rows

_LOOKUP = select(processed_messages.c.answer).where(
    processed_messages.c.org_code == bindparam("org_code"),
    processed_messages.c.signature_id == bindparam("signature_id"))
_REMEMBER = processed_messages.insert()
# Plain SQL, the same on both backends (SQLAlchemy's on-conflict constructs are compiled anew each time).
_CLAIM = text(f"INSERT INTO {processed_messages.name} (org_code, signature_id, expires_at, answer) "
              "VALUES (:org_code, :signature_id, :expires_at, NULL) ON CONFLICT DO NOTHING RETURNING 1")
_TRY_LOCK = text("SELECT pg_try_advisory_xact_lock(:namespace, :key)")
_LOCK_NAMESPACE = 0x5250  # "RP"; the index's locks use 0x4347 (gateway.index.batches)


class AlreadyAnswered(Exception):
    """A copy of a SubmitUpdates whose first copy was answered: its first answer, nothing applied."""

    def __init__(self, answer: bytes):
        super().__init__("a copy of a message already answered")
        self.answer = answer


def check_replay(exchange: Exchange, services: Services) -> None:
    """Before any work: refuse a read answered before; raise `AlreadyAnswered` for a SubmitUpdates
    answered before. A lookup, no write: a new message passes on to the next steps."""
    exchange.replay_key = f"{exchange.org_code}:{exchange.signature_id}"
    _judge_copy(exchange.lookup_connection(services), exchange)


@contextlib.contextmanager
def exchange_transaction(exchange: Exchange, services: Services) -> Iterator[Connection]:
    """The transaction in which an accepted exchange makes its effect, its audit entry and its
    answer, and `remember`s it. Holds off a second copy of the message in flight (see the module
    docstring) and judges again a copy whose first was answered since `check_replay`. The steps'
    read transaction ends first."""
    exchange.close_lookups()
    with services.write_transaction() as conn:
        if conn.dialect.name == "postgresql":
            if not conn.execute(_TRY_LOCK, {"namespace": _LOCK_NAMESPACE, "key": _lock_key(exchange)}).scalar():
                raise Unavailable("a copy of this message is still being processed",
                                  public_message="The first copy of this message is still being "
                                                 "processed; retry shortly.")
        if exchange.operation in IDEMPOTENT_OPERATIONS or not _claim(conn, exchange):
            _judge_copy(conn, exchange)  # (raises: a copy answered meanwhile, or a new SubmitUpdates' check)
        # A copy answered before is given its answer (or refused) whatever the rate; anything else
        # is counted and judged here, before any work, when the store counts in this transaction.
        count_in_transaction(conn, exchange, services, judge=True)
        yield conn
    exchange.uncounted = None  # committed with the exchange


def _claim(conn: Connection, exchange: Exchange) -> bool:
    """For a message whose answer is not kept (all but SubmitUpdates): record at the start of the
    exchange's transaction that it is answered — it commits or vanishes with the answer like any
    other row of the transaction — and say whether it was new (one statement instead of a lookup
    now and an insert at the end)."""
    return conn.execute(_CLAIM, {"org_code": exchange.org_code, "signature_id": exchange.signature_id,
                                 "expires_at": math.ceil(exchange.timestamp_expires.timestamp())}).first() is not None


def remember(conn: Connection, exchange: Exchange, answer: bytes) -> bytes:
    """Record, in the exchange's transaction, that ``exchange`` was answered ``answer``; returns it.
    (A message whose answer is not kept was recorded when its transaction began: `_claim`.)"""
    now = exchange.received_at.timestamp()
    if exchange.operation in IDEMPOTENT_OPERATIONS:
        conn.execute(_REMEMBER, {
            "org_code": exchange.org_code, "signature_id": exchange.signature_id,
            "expires_at": math.ceil(exchange.timestamp_expires.timestamp()),
            # Sealed: the answer lists the sender's source record ids with the children they landed on.
            "answer": sealed.vault_of(conn).seal(answer, sealed.answer_context(exchange.org_code,
                                                                               exchange.signature_id)).encode("ascii"),
        })
    if random.random() < CLEAN_UP_PROBABILITY:
        conn.execute(delete(processed_messages).where(processed_messages.c.expires_at < int(now)))
    return answer


def _judge_copy(conn: Connection, exchange: Exchange) -> None:
    row = conn.execute(_LOOKUP, {"org_code": exchange.org_code,
                                 "signature_id": exchange.signature_id}).first()
    if row is None:
        return
    if exchange.operation in IDEMPOTENT_OPERATIONS and row.answer is not None:
        raise AlreadyAnswered(sealed.vault_of(conn).open_bytes(
            bytes(row.answer).decode("ascii"), sealed.answer_context(exchange.org_code, exchange.signature_id)))
    raise Replay(f"{exchange.operation} message received before")


def _lock_key(exchange: Exchange) -> int:
    """A signed 32-bit key for the message (a collision only makes an unrelated copy retry)."""
    digest = hashlib.sha256(exchange.replay_key.encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)
