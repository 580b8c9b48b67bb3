"""How an audit entry is linked into its two chains, and the time format entries carry: pure
functions of an entry's fields, with no database and no key storage, so that the chain that writes
entries (gateway.audit.chain) and the offline check of an export (gateway.audit.export) compute
exactly the same links.

- The HMAC chain: `entry_hash`, under a key kept in the gateway's home; only its holder can check it.
- The public chain: `public_hash`, a plain SHA-256 that anyone can recompute; checkpoints signed
  with the gateway's signing key (gateway.audit.checkpoints) make it evidence offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

GENESIS = "0" * 64
HASHED_FIELDS = (
    "seq", "at", "org_code", "cert_fingerprint", "user_id", "role", "operation", "reason_code",
    "reason_text", "child_ids", "outcome", "fault_code", "request_digest", "detail",
)
# Fields added later (migration 0010): hashed when present, so entries written before them verify
# as they were written, and removing one from a later entry breaks its link like any other edit.
EXTENDED_FIELDS = ("source_address", "request_id", "response_digest",
                   "on_behalf_of", "behalf_key")  # 0022_mediation: a mediated read's requester (gateway.mediation)


def timestamp(now: dt.datetime | None = None) -> str:
    """An entry's ``at`` (UTC, microseconds, sortable as text): also how periods are compared."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def material(row) -> bytes:
    """The canonical text of an entry's fields, as its links cover them."""
    fields = {k: row[k] for k in HASHED_FIELDS}
    fields.update({k: row[k] for k in EXTENDED_FIELDS if row.get(k) is not None})
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def entry_hash(key: bytes, prev_hash: str, row: dict, fields: bytes | None = None) -> str:
    """``fields``: the row's `material`, where the caller has it already."""
    return hmac.new(key, prev_hash.encode() + b"\n" + (fields or material(row)), hashlib.sha256).hexdigest()


def public_hash(prev_public: str, row: dict, fields: bytes | None = None) -> str:
    """The entry's link in the public chain: a plain SHA-256 over the previous public link, the
    entry's fields and its HMAC link. Anyone can recompute it (no key), so it proves nothing alone;
    checkpoints signed with the gateway's signing key (gateway.audit.checkpoints) make it evidence
    that a holder of the signing certificate can check offline."""
    return hashlib.sha256(prev_public.encode() + b"\n" + (fields or material(row)) + b"\n"
                          + row["entry_hash"].encode()).hexdigest()
