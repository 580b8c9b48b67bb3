"""What the pipeline steps share: the per-worker services and the per-message exchange."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Callable

from lxml import etree
from sqlalchemy.engine import Connection, Engine

from gateway import audit, db
from gateway.audit import AuditTrail
from gateway.backup import Gate
from gateway.config import Settings
from gateway.index import disclosure
from contactgate_wire.wsse import EnvelopeSigner
from gateway.store import RateStore
from gateway.trust.pki import TrustAnchors
from gateway.trust.registry import Organisation


@dataclass
class Services:
    """Built once per worker process by the application factory; never per message."""

    settings: Settings
    engine: Engine
    store: RateStore
    anchors: TrustAnchors
    audit: AuditTrail
    signer: EnvelopeSigner
    schema_source: bytes
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)
    roles: disclosure.RoleRules = disclosure.UNCONFIGURED  # which fields each practitioner role may see
    reader: Engine = field(init=False, repr=False)  # the engine for lookups (see gateway.db.reader)
    turns: db.WriterTurns | None = field(init=False, repr=False)  # SQLite: see gateway.db.WriterTurns
    restore_gate: Gate = field(init=False, repr=False)  # a restore not yet acknowledged: serve nothing

    def __post_init__(self) -> None:
        self.reader = db.reader(self.engine)
        self.turns = db.writer_turns(self.engine, self.settings.database_timeout_s)
        self.restore_gate = Gate(self.settings.layout, self.reader)

    def write_transaction(self):
        """A transaction of the message path that writes (``engine.begin()``, on SQLite in this
        process's turn at the write lock)."""
        return db.write_transaction(self.engine, self.turns)

    @property
    def schema(self) -> etree.XMLSchema:
        """The compiled XSD (`compiled_schema`)."""
        return compiled_schema(self.schema_source)


_COMPILED = threading.local()


def compiled_schema(source: bytes) -> etree.XMLSchema:
    """The XSD ``source`` compiled, once per thread (validation contexts are not shared across
    threads) and kept: the message pipeline's (``Services.schema``) and the bulk load's."""
    held = getattr(_COMPILED, "schemas", None)
    if held is None:
        held = _COMPILED.schemas = {}
    schema = held.get(source)
    if schema is None:
        schema = held[source] = etree.XMLSchema(etree.fromstring(source))
    return schema


@dataclass
class Exchange:
    """One request/response, filled in as it passes the steps. Only verified data goes in
    ``payload``; ``envelope`` is the untrusted parse."""

    raw: bytes                      # at most max_message_bytes + 1 of what was received
    size: int                       # how many bytes were received
    soap_action: str | None
    peer_der: bytes | None          # the client certificate: from the TLS handshake or a trusted proxy
    received_at: dt.datetime
    request_digest: str | None
    tls_fingerprint: str | None = None
    org_code: str | None = None
    organisation: Organisation | None = None  # as registered when the message arrived
    envelope: etree._Element | None = None
    operation: str | None = None
    payload: etree._Element | None = None
    signature_id: str | None = None
    timestamp_expires: dt.datetime | None = None
    replay_key: str | None = None
    user_id: str | None = None
    role: str | None = None
    reason_code: str | None = None
    reason_text: str | None = None
    child_ids: list[str] = field(default_factory=list)
    source_address: str | None = None  # the client's address (as the trusted proxy saw it, behind one)
    certificate_problem: str | None = None  # why the certificate offered is not believed (gateway.forwarded)
    proxy_der: bytes | None = None  # the TLS peer that forwarded peer_der: must be a registered proxy
    request_id: str = field(default_factory=audit.new_request_id)  # sent back as X-Request-Id
    on_behalf: object | None = None  # Requester/OnBehalfOf, checked (gateway.mediation.OnBehalfOf)
    # The rate keys of a message authorised but not yet counted (gateway.pipeline.authorisation).
    uncounted: list[str] | None = None
    # The read transaction the steps before the exchange's own transaction share (certificate and
    # organisation lookups, the replay pre-check): opened by the first of them, closed before it.
    lookups: Connection | None = None

    def lookup_connection(self, services: Services) -> Connection:
        """The read connection the steps before the exchange's transaction share (one transaction,
        one pooled connection, instead of one per lookup)."""
        if self.lookups is None:
            self.lookups = services.reader.connect()
        return self.lookups

    def close_lookups(self) -> None:
        if self.lookups is not None:
            conn, self.lookups = self.lookups, None
            conn.close()

    def audit_entry(self, outcome: str, *, fault_code: str | None = None, detail: str | None = None,
                    child_ids: list[str] | None = None, answer: bytes | None = None) -> audit.Entry:
        """The audit entry for this exchange as far as it got: only verified facts are in it, and
        the digest of the ``answer`` it is sent."""
        return audit.Entry(
            operation=self.operation or "unknown", outcome=outcome, org_code=self.org_code,
            cert_fingerprint=self.tls_fingerprint, user_id=self.user_id, role=self.role,
            reason_code=self.reason_code, reason_text=self.reason_text,
            child_ids=self.child_ids if child_ids is None else child_ids, fault_code=fault_code,
            request_digest=self.request_digest, detail=detail, source_address=self.source_address,
            request_id=self.request_id, response_digest=digest(answer) if answer is not None else None,
            on_behalf_of=self.on_behalf.as_json() if self.on_behalf is not None else None,
            behalf_key=self.on_behalf.key if self.on_behalf is not None else None,
        )


def digest(data: bytes) -> str:
    """Base64 SHA-256, as the request's digest is written."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
