"""Tables (SQLAlchemy Core) and engine creation, for SQLite (embedded default) and PostgreSQL.

The schema itself is created by Alembic migrations (`gateway/migrations`); the Table objects here
describe it for queries, and a test checks the two agree.
"""

from __future__ import annotations

import math
from pathlib import Path

from sqlalchemy import (
    Boolean, Column, Date, DateTime, ForeignKey, Index, Integer, LargeBinary, MetaData, String,
    Table, Text, create_engine, event,
)
from sqlalchemy.engine import Engine

from gateway import files

metadata = MetaData()

organisations = Table(
    "organisations", metadata,
    Column("code", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    # registered -> pending_approval -> accredited <-> suspended
    Column("status", String(32), nullable=False),
    Column("scopes", String(200), nullable=False, default=""),
    Column("expires", Date, nullable=True),
    Column("proposed_by", String(64), nullable=True),
    Column("approved_by", String(64), nullable=True),
    Column("evidence", Text, nullable=True),
    Column("status_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # A proposal awaiting a second officer. For an accredited organisation (a renewal or a change of
    # scopes) the current accreditation stays in force until the proposal is approved.
    Column("pending_scopes", String(200), nullable=True),
    Column("pending_expires", Date, nullable=True),
    Column("pending_by", String(64), nullable=True),
    Column("pending_evidence", Text, nullable=True),
)

certificates = Table(
    "certificates", metadata,
    Column("fingerprint", String(64), primary_key=True),  # SHA-256 of the DER, lower-case hex
    Column("org_code", String(32), ForeignKey("organisations.code"), nullable=False, index=True),
    Column("subject", String(500), nullable=False),
    Column("issuer", String(500), nullable=False),
    Column("serial", String(64), nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("pem", Text, nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

children = Table(
    "children", metadata,
    Column("child_id", String(19), primary_key=True),
    Column("shielded", Boolean, nullable=False, default=False),
    # The canonical record (identity, address, carers, settings) as JSON.
    Column("record", Text, nullable=False),
    Column("family_name_norm", String(100), nullable=False),
    Column("date_of_birth", Date, nullable=False),
    Column("nhs_number", String(10), nullable=True, unique=True),
    Column("pupil_number", String(13), nullable=True, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_children_name_dob", "family_name_norm", "date_of_birth"),
)

source_records = Table(
    "source_records", metadata,
    Column("org_code", String(32), primary_key=True),
    Column("source_record_id", String(64), primary_key=True),
    Column("child_id", String(19), ForeignKey("children.child_id"), nullable=False, index=True),
)

involvements = Table(
    "involvements", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("child_id", String(19), ForeignKey("children.child_id"), nullable=False),
    Column("org_code", String(32), nullable=False),
    Column("service", String(200), nullable=False),
    Column("practitioner_name", String(100), nullable=True),
    Column("role", String(100), nullable=True),
    Column("phone", String(32), nullable=True),
    Column("email", String(254), nullable=True),
    Column("start", Date, nullable=False),
    Column("end", Date, nullable=True),
    Column("caf_assessment", Boolean, nullable=False),
    Column("lead_professional", Boolean, nullable=False),
    Index("ix_involvements_child_org", "child_id", "org_code"),
)

review_queue = Table(
    "review_queue", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_code", String(32), nullable=False),
    Column("source_record_id", String(64), nullable=False),
    Column("candidate_child_id", String(19), nullable=False),
    Column("submitted", Text, nullable=False),  # the update as JSON, held until a person decides
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(32), nullable=False),  # ISO 8601 UTC text: hashes the same on any backend
    Column("org_code", String(32), nullable=True),
    Column("cert_fingerprint", String(64), nullable=True),
    Column("user_id", String(128), nullable=True),
    Column("role", String(64), nullable=True),
    Column("operation", String(64), nullable=False),
    Column("reason_code", String(40), nullable=True),
    Column("reason_text", Text, nullable=True),
    Column("child_ids", Text, nullable=False, default=""),
    Column("outcome", String(32), nullable=False),
    Column("fault_code", String(32), nullable=True),
    Column("request_digest", String(44), nullable=True),
    Column("detail", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    Index("ix_audit_user", "org_code", "user_id"),
)

audit_children = Table(
    "audit_children", metadata,
    Column("child_id", String(19), primary_key=True),
    Column("seq", Integer, ForeignKey("audit_log.seq"), primary_key=True),
)

# One row: the chain's head. Updating it inside each audited transaction serialises appends.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

# What was answered (gateway.pipeline.replay): one row per accepted exchange, inserted in the
# exchange's own transaction with its effect, audit entry and signed answer, and kept until the
# message could no longer be accepted. Its primary key refuses a second copy.
processed_messages = Table(
    "processed_messages", metadata,
    Column("org_code", String(32), primary_key=True),
    Column("signature_id", String(64), primary_key=True),  # SHA-256 of the canonical SignedInfo
    Column("expires_at", Integer, nullable=False, index=True),  # unix seconds
    Column("answer", LargeBinary, nullable=True),  # a SubmitUpdates' signed first answer
)

rate_counters = Table(
    "rate_counters", metadata,
    Column("key", String(200), primary_key=True),
    Column("window", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
)


READ_ONLY_OPTION = "contactgate_read_only"


def reader(engine: Engine) -> Engine:
    """The same engine (and pool) for read-only work: on SQLite its transactions start deferred, so
    lookups never queue behind, or block, the writers."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


TOOL_WAIT_S = 30.0  # how long the command line and migrations wait for SQLite's write lock


def make_engine(url: str, *, timeout_s: float | None = None) -> Engine:
    """An engine for either backend. SQLite gets WAL and write-locking transactions.

    Every SQLite transaction starts with BEGIN IMMEDIATE so that concurrent writers queue on the
    database lock (busy_timeout) instead of failing to upgrade a read lock mid-transaction.

    ``timeout_s`` is how long the serving gateway lets one database step wait — connecting, taking
    a pooled connection, a lock, a statement, SQLite's write lock — before it fails (and the
    request is answered Unavailable). None (the command line, migrations) waits as before.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            # SQLite would create the file 0644 less the umask; made 0600 here, its -wal and -shm
            # get the same mode from SQLite.
            files.create_private(Path(path))
        busy_s = TOOL_WAIT_S if timeout_s is None else timeout_s
        engine = create_engine(url, connect_args={"timeout": busy_s, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    bounded = {} if timeout_s is None else {"pool_timeout": timeout_s,
                                            "connect_args": postgresql_timeouts(timeout_s)}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **bounded)


def postgresql_timeouts(timeout_s: float) -> dict:
    """libpq settings that bound each step. The server enforces statement_timeout and lock_timeout;
    connect_timeout (whole seconds, at least 2 in libpq), TCP keepalives and tcp_user_timeout let
    the client give up on a server host or network that is gone. None of these bounds a server that
    is alive at the TCP level but does not run (a SIGSTOPped or frozen postgres): its kernel still
    acknowledges every packet, so a request in flight waits until it runs again (README, "What
    survives a fault")."""
    ms = max(1, int(timeout_s * 1000))
    return {
        "connect_timeout": max(2, math.ceil(timeout_s)),
        "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(timeout_s)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": ms,
    }


def migrate(url: str) -> None:
    """Bring the database schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "gateway:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")
