"""Tables (SQLAlchemy Core) and engine creation, for SQLite (embedded default) and PostgreSQL.

The schema itself is created by Alembic migrations (`gateway/migrations`); the Table objects here
describe it for queries, and a test checks the two agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import math
import os
import select
import stat
import threading
import time
from pathlib import Path
from typing import Iterator

from sqlalchemy import (
    BigInteger, Boolean, Column, Date, DateTime, Float, ForeignKey, ForeignKeyConstraint, Index, Integer, LargeBinary, MetaData,
    String, Table, Text, UniqueConstraint, create_engine, event, text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError

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
    # Retired in 0009 (always NULL): proposals awaiting a second officer are rows of `proposals`.
    Column("pending_scopes", String(200), nullable=True),
    Column("pending_expires", Date, nullable=True),
    Column("pending_by", String(64), nullable=True),
    Column("pending_evidence", Text, nullable=True),
    Column("code_key", String(32), nullable=False),
)

# Organisation codes are unique whatever their case: `code_key` is the code upper-cased (0009).
Index("ix_organisations_code_key", organisations.c.code_key, unique=True)

# ---- officers, their sessions, and what they propose (migration 0009) ----

officers = Table(
    "officers", metadata,
    Column("officer_id", String(64), primary_key=True),  # lower-case: one account whatever the spelling
    Column("name", String(200), nullable=False),
    Column("roles", String(200), nullable=False),  # comma-separated: officer, senior_officer, data_quality, auditor
    Column("password_hash", String(200), nullable=False),  # argon2id
    Column("must_change_password", Boolean, nullable=False, default=False),
    Column("totp_secret", Text, nullable=False),  # sealed (gateway.security.vault)
    Column("totp_last_step", Integer, nullable=True),  # a code is good once
    # The global back-off (0011): failed sign-ins from every address together in the window that
    # began at failures_since; reaching Settings.lockout_global_failures locks the account from
    # every address until locked_until. (Each address's own count: officer_signin_failures.)
    Column("failed_signins", Integer, nullable=False, default=0),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("failures_since", DateTime(timezone=True), nullable=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("disabled_reason", Text, nullable=True),
    Column("created_by", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

officer_sessions = Table(
    "officer_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 of the token in the session file
    Column("officer_id", String(64), ForeignKey("officers.officer_id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# Failed sign-ins per officer and source (0011): Settings.lockout_failures in a row from one source
# lock that source out for Settings.lockout_minutes; the officer signs in from anywhere else.
officer_signin_failures = Table(
    "officer_signin_failures", metadata,
    Column("officer_id", String(64), ForeignKey("officers.officer_id"), primary_key=True),
    Column("source", String(64), primary_key=True),  # an IPv4 address, an IPv6 /64, or local:uid N (name)
    Column("failures", Integer, nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Where each officer has signed in (0012): an address (an IPv6 /64) or ``local:uid N (name)`` and
# when they last signed in from it. For Settings.signin_known_source_days after that, the global
# back-off (officers.locked_until) does not hold the officer back there: strangers with many
# addresses can slow a guesser down everywhere else, but cannot lock the officer out of where they work.
officer_known_sources = Table(
    "officer_known_sources", metadata,
    Column("officer_id", String(64), ForeignKey("officers.officer_id"), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("last_signed_in_at", DateTime(timezone=True), nullable=False),
)

proposals = Table(
    "proposals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # accreditation, renewal, reinstatement, trust_add, trust_remove
    Column("org_code", String(32), nullable=True, index=True),
    Column("payload", Text, nullable=False),  # JSON: what is to be done, exactly as shown to the approver
    Column("status", String(16), nullable=False),  # pending, approved, declined, superseded
    Column("proposed_by", String(64), nullable=False),
    Column("proposed_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("decision_reason", Text, nullable=True),
)
Index("ix_proposals_status", proposals.c.status)

def _described_certificate() -> list[Column]:
    """What gateway.trust.pki.describe says of a certificate, beside its fingerprint."""
    return [Column("subject", String(500), nullable=False), Column("issuer", String(500), nullable=False),
            Column("serial", String(64), nullable=False),  # hex
            Column("not_before", DateTime(timezone=True), nullable=False),
            Column("not_after", DateTime(timezone=True), nullable=False), Column("pem", Text, nullable=False)]


certificates = Table(
    "certificates", metadata,
    Column("fingerprint", String(64), primary_key=True),  # SHA-256 of the DER, lower-case hex
    Column("org_code", String(32), ForeignKey("organisations.code"), nullable=False, index=True),
    *_described_certificate(),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Certificates of the TLS-terminating proxies (nginx) in front of `serve --behind-proxy` nodes (0013):
# a node believes the Client-Cert header only from a TLS peer holding one of these, not revoked. Each
# is registered by one senior officer's proposal and a second's approval (gateway.trust.proxies).
proxy_certificates = Table(
    "proxy_certificates", metadata,
    Column("fingerprint", String(64), primary_key=True),  # SHA-256 of the DER, lower-case hex
    Column("name", String(64), nullable=False),  # the proxy, as the officers call it (e.g. nginx-1)
    *_described_certificate(),
    Column("proposed_by", String(64), nullable=False),
    Column("approved_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_reason", Text, nullable=True),
)

children = Table(
    "children", metadata,
    Column("child_id", String(19), primary_key=True),
    Column("shielded", Boolean, nullable=False, default=False),
    # What the index shows (identity, address, carers, settings) as JSON: derived from the child's
    # source records by precedence (gateway.index.writing), with which source supplied each value.
    Column("record", Text, nullable=False),
    # Retired in 0007 ("" and 0001-01-01): the record is sealed, candidates come by blind keys.
    Column("family_name_norm", String(100), nullable=False),
    Column("date_of_birth", Date, nullable=False),
    # Retired in 0005 (always NULL): identifiers are blocking keys.
    Column("nhs_number", String(10), nullable=True, unique=True),
    Column("pupil_number", String(13), nullable=True, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("provenance", Text, nullable=True),
    Column("merged_into", String(19), nullable=True),  # a merged child's id resolves to the survivor
    # ---- retention (gateway.index.retention, migration 0006) ----
    Column("archive_due", Date, nullable=True),  # first day of the month of the 18th birthday (or death)
    Column("archived_at", DateTime(timezone=True), nullable=True),  # archived: returned to no one
    Column("archive_reason", String(16), nullable=True),  # age | death
    Column("purge_after", Date, nullable=True),  # the day an archived child's rows are destroyed
    Index("ix_children_archive_due", "archive_due"),
    Index("ix_children_purge_after", "purge_after"),
    # ---- end retention ----
)

# Every key a child is filed under (gateway.index.linkage.blocking_keys of each of its source
# records); candidates are found only through these, by equality.
blocking_keys = Table(
    "blocking_keys", metadata,
    Column("key", String(80), primary_key=True),
    Column("child_id", String(19), ForeignKey("children.child_id"), primary_key=True),
    Index("ix_blocking_keys_child_id", "child_id"),
)

source_records = Table(
    "source_records", metadata,
    Column("org_code", String(32), primary_key=True),
    Column("source_record_id", String(64), primary_key=True),
    Column("child_id", String(19), ForeignKey("children.child_id"), nullable=False, index=True),
    Column("record", Text, nullable=True),  # this source's own record, as it last sent it
    Column("received_at", DateTime(timezone=True), nullable=True),
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
    Column("source_record_id", String(64), nullable=True),
    # From 0007: the practitioner's name, phone and email, sealed (gateway.index.sealed); the clear
    # columns above are NULL.
    Column("sealed", Text, nullable=True),
    Index("ix_involvements_child_org", "child_id", "org_code"),
    Index("ix_involvements_source", "org_code", "source_record_id"),  # a source restates its own set
)

review_queue = Table(
    "review_queue", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_code", String(32), nullable=False),
    Column("source_record_id", String(64), nullable=False),
    Column("candidate_child_id", String(19), nullable=False),  # the child it may duplicate
    Column("submitted", Text, nullable=True),  # before 0005: the update held, unstored
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("child_id", String(19), nullable=True),  # the child the record was stored as
    Column("score", Float, nullable=True),  # match probability
    Column("comparison", Text, nullable=True),  # field levels and weights (JSON)
    Column("model_version", String(40), nullable=True),
    Column("status", String(16), nullable=False, server_default="open"),  # open|linked|distinct|merged
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Index("ix_review_queue_status", "status"),
    Index("ix_review_queue_pair", "child_id", "candidate_child_id"),  # 0008: is the pair open already
    Index("ix_review_queue_candidate", "candidate_child_id"),  # 0008: the pairs naming a child
)

# Value conflicts (0015, gateway.index.conflicts): a source of a lower precedence tier stated another
# value of a field than the one shown. Keyed by the lower source record (which a merge moves with its
# child); ``detail`` holds both values, their suppliers and dates, sealed under the row's id.
value_conflicts = Table(
    "value_conflicts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("child_id", String(19), nullable=False),  # the child it was raised on (resolve through merges)
    Column("field", String(32), nullable=False),
    Column("org_code", String(32), nullable=False),  # the lower source
    Column("source_record_id", String(64), nullable=False),  # blinded, as in source_records
    Column("owner_org_code", String(32), nullable=False),  # who supplied the value shown
    Column("owner_source_record_id", String(64), nullable=False),
    Column("detail", Text, nullable=True),  # sealed JSON: {"submitted": {...}, "shown": {...}}
    Column("status", String(16), nullable=False, server_default="open"),  # open|kept|applied|withdrawn
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Index("ix_value_conflicts_source", "source_record_id"),
    Index("ix_value_conflicts_status", "status"),
    Index("ix_value_conflicts_child", "child_id"),
)

# Pairs a person has said are different children: never linked or queued again.
distinct_pairs = Table(
    "distinct_pairs", metadata,
    Column("child_a", String(19), primary_key=True),
    Column("child_b", String(19), primary_key=True),
    Column("decided_by", String(64), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

# What each merge changed, so that unmerge restores both children exactly.
merges = Table(
    "merges", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("survivor", String(19), nullable=False),
    Column("merged", String(19), nullable=False),
    Column("officer", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("snapshot", Text, nullable=False),
    Column("undone_by", String(64), nullable=True),
    Column("undone_at", DateTime(timezone=True), nullable=True),
    Index("ix_merges_merged", "merged"),
)

AUDIT_RESTORES = "operation IN ('restore', 'restore.acknowledged')"  # the rows of the partial index ix_audit_restore
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
    Column("source_address", String(64), nullable=True),
    Column("request_id", String(32), nullable=True),
    Column("response_digest", String(44), nullable=True),
    Column("public_hash", String(64), nullable=False),  # the public chain (gateway.audit.chain.public_hash)
    # 0022_mediation: a mediated read's requester (gateway.mediation): the details as JSON, and organisation:name
    # (case folded) for `audit report --user`
    Column("on_behalf_of", Text, nullable=True),
    Column("behalf_key", String(210), nullable=True),
    Index("ix_audit_user", "org_code", "user_id"),
    Index("ix_audit_behalf", "behalf_key"),
    Index("ix_audit_at", "at"),  # reviews, reports and exports by date
    # 0014: the few restore entries, read again by an incremental `audit verify` (gateway.audit.chain._anchor)
    Index("ix_audit_restore", "seq", postgresql_where=text(AUDIT_RESTORES), sqlite_where=text(AUDIT_RESTORES)),
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
    Column("public_hash", String(64), nullable=False),
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


# ---- the practitioners' portal (migration 0017, gateway.portal) ----

portal_practitioners = Table(
    "portal_practitioners", metadata,
    Column("org_code", String(32), ForeignKey("organisations.code"), primary_key=True),
    Column("user_id", String(64), primary_key=True),  # lower-case, as an officer id
    Column("name", String(200), nullable=False),
    Column("role", String(64), nullable=True),  # a practitioner role of the roles file; None: administers only
    Column("job_title", String(200), nullable=False),
    Column("user_admin", Boolean, nullable=False),
    Column("clearance_number", String(64), nullable=True),
    Column("clearance_date", Date, nullable=True),
    Column("training_date", Date, nullable=True),
    Column("end_date", Date, nullable=True),
    Column("password_hash", String(200), nullable=True),  # argon2id; None until enrolled
    Column("totp_secret", Text, nullable=False),  # sealed (gateway.security.vault)
    Column("totp_last_step", Integer, nullable=True),
    Column("invitation_hash", String(64), nullable=True),  # SHA-256 of the one-time invitation code
    Column("invitation_expires", DateTime(timezone=True), nullable=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("disabled_reason", Text, nullable=True),
    # "password right, code wrong" from any address; at Settings.portal_code_failures the code step locks
    Column("code_failures", Integer, nullable=False, default=0),
    Column("code_locked_at", DateTime(timezone=True), nullable=True),
    Column("created_by", String(140), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

portal_sessions = Table(
    "portal_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("org_code", String(32), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["org_code", "user_id"], ["portal_practitioners.org_code", "portal_practitioners.user_id"]),
    Index("ix_portal_sessions_user", "org_code", "user_id"),
)

# Failures per (account, source): a source reaching Settings.lockout_failures is locked out of that
# account for Settings.lockout_minutes; no count locks the account from every source.
portal_signin_failures = Table(
    "portal_signin_failures", metadata,
    Column("org_code", String(32), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# A child in a portal page's form is an opaque handle, good in the session that was shown it.
portal_handles = Table(
    "portal_handles", metadata,
    Column("handle_hash", String(64), primary_key=True),
    Column("session_hash", String(64), nullable=False, index=True),
    Column("child_id", String(19), nullable=False, index=True),  # retention deletes a purged child's
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),  # swept at sign-in
)

# Officers' four-eyes proposals about an organisation's user administrators: appoint, disable, reset, enable.
portal_admin_proposals = Table(
    "portal_admin_proposals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_code", String(32), ForeignKey("organisations.code"), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("job_title", String(200), nullable=False),
    Column("action", String(16), nullable=False),  # appoint, disable, reset, enable
    Column("why", Text, nullable=True),  # a disable's or enable's reason
    Column("status", String(16), nullable=False),  # pending, approved, declined
    Column("proposed_by", String(64), nullable=False),
    Column("proposed_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
)

# A role given to a portal account (new, or changed) by one user administrator, in force once a
# second administrator of the organisation (or an officer) approves it.
portal_role_proposals = Table(
    "portal_role_proposals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_code", String(32), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("role", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # pending, approved, superseded
    Column("proposed_by", String(140), nullable=False),  # ORG:user
    Column("proposed_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", String(140), nullable=True),  # ORG:user, or an officer's id
    Column("decided_at", DateTime(timezone=True), nullable=True),
    ForeignKeyConstraint(["org_code", "user_id"], ["portal_practitioners.org_code", "portal_practitioners.user_id"]),
    Index("ix_portal_role_proposals_user", "org_code", "user_id"),
)


# ---- the portal's security keys (migration 0018_webauthn, gateway.portal.security_keys) ----

portal_webauthn_credentials = Table(
    "portal_webauthn_credentials", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_code", String(32), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("credential_id", String(700), nullable=False, unique=True),  # base64url
    Column("public_key", Text, nullable=False),  # sealed with the account's and credential's context
    Column("sign_count", BigInteger, nullable=False),
    Column("aaguid", String(36), nullable=True),
    Column("label", String(100), nullable=False),
    Column("user_verified", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    ForeignKeyConstraint(["org_code", "user_id"], ["portal_practitioners.org_code", "portal_practitioners.user_id"]),
    Index("ix_portal_webauthn_credentials_user", "org_code", "user_id"),
)

# A ceremony's challenge: bound to one browser's session, taken once, short-lived.
portal_webauthn_challenges = Table(
    "portal_webauthn_challenges", metadata,
    Column("challenge_hash", String(64), primary_key=True),
    Column("binding_hash", String(64), nullable=False),
    Column("purpose", String(16), nullable=False),  # enrol, signin, add, upgrade
    Column("org_code", String(32), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("password_hash", String(200), nullable=True),  # enrol: the argon2id of the password chosen
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)

# Each organisation's sign-in policy: TOTP codes accepted (the default) or not.
portal_org_settings = Table(
    "portal_org_settings", metadata,
    Column("org_code", String(32), ForeignKey("organisations.code"), primary_key=True),
    Column("totp_allowed", Boolean, nullable=False),
    Column("totp_proposed_by", String(140), nullable=True),  # ORG:user proposing codes back on
    Column("totp_proposed_at", DateTime(timezone=True), nullable=True),
    Column("updated_by", String(140), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
# ---- federated sign-in to the portal (migration 0020_identity_providers, gateway.trust.identity_providers,
# gateway.portal.oidc) ----

# An organisation's OpenID provider, part of its accreditation: proposed by one officer, in force
# once a second approves it (status approved); one in force per organisation at a time.
identity_providers = Table(
    "identity_providers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_code", String(32), ForeignKey("organisations.code"), nullable=False),
    Column("issuer", String(500), nullable=False),
    Column("client_id", String(200), nullable=False),
    Column("client_auth", String(32), nullable=False),  # private_key_jwt, client_secret_basic, client_secret_post
    Column("client_credential", Text, nullable=False),  # sealed: the private JWK the gateway made, or the secret
    Column("public_jwk", Text, nullable=True),  # private_key_jwt: what the provider registers
    Column("redirect_uri", String(500), nullable=False),
    Column("scopes", String(200), nullable=False),
    Column("person_claim", String(64), nullable=False),
    Column("role_claim", String(64), nullable=False),
    Column("role_map", Text, nullable=False),  # JSON {provider value: roles-file role}
    Column("acr_values", Text, nullable=False),  # JSON list: what counts as two factors
    Column("amr_values", Text, nullable=False),  # JSON list
    Column("without_two_factors", String(16), nullable=False),  # refuse, portal_totp
    Column("status", String(16), nullable=False),  # pending, approved, declined, superseded, removed
    Column("proposed_by", String(64), nullable=False),
    Column("proposed_at", DateTime(timezone=True), nullable=False),
    Column("decided_by", String(64), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_identity_providers_org", "org_code", "status"),
)

# A sign-in under way at a provider: the SHA-256 of its state, its nonce and PKCE verifier; used
# once (used_at). A step-up (the portal's own second factor) holds the account it is for.
portal_oidc_requests = Table(
    "portal_oidc_requests", metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("idp_id", Integer, nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("code_verifier", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("stepup_hash", String(64), nullable=True, index=True),
    Column("org_code", String(32), nullable=True),
    Column("user_id", String(64), nullable=True),
    Column("subject", String(255), nullable=True),
    Column("sid", String(255), nullable=True),
)

# Which subject of an issuer a practitioner record is bound to (migration 0023_oidc_subjects): only it
# signs in as the record through a provider, and it signs in as no other record of the organisation.
portal_oidc_subjects = Table(
    "portal_oidc_subjects", metadata,
    Column("org_code", String(32), primary_key=True),
    Column("user_id", String(64), primary_key=True),
    Column("issuer", String(500), primary_key=True),
    Column("subject", String(255), nullable=False),
    Column("bound_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_code", "issuer", "subject", name="uq_portal_oidc_subjects_subject"),
)


# A portal session signed in through a provider: which, and the provider's subject and session id
# (a back-channel logout names either).
portal_oidc_sessions = Table(
    "portal_oidc_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("idp_id", Integer, nullable=False),
    Column("subject", String(255), nullable=False),
    Column("sid", String(255), nullable=True),
    Index("ix_portal_oidc_sessions_subject", "idp_id", "subject"),
)

# Logout tokens seen (their jti's SHA-256), until they expire: one is honoured once.
portal_oidc_seen = Table(
    "portal_oidc_seen", metadata,
    Column("jti_hash", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


# How far each signed load file (`contactgate load`) has been applied (migration 0021_bulk_load).
bulk_loads = Table(
    "bulk_loads", metadata,
    Column("load_id", String(64), primary_key=True),  # SHA-256 of the header's signed fields (signed_bytes)
    Column("org_code", String(32), ForeignKey("organisations.code"), nullable=False),
    Column("cert_fingerprint", String(64), nullable=False),
    Column("batches", Integer, nullable=False),
    Column("records", Integer, nullable=False),
    Column("batches_done", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

READ_ONLY_OPTION = "contactgate_read_only"


def reader(engine: Engine) -> Engine:
    """The same engine (and pool) for read-only work: on SQLite its transactions start deferred, so
    lookups never queue behind, or block, the writers."""
    return engine.execution_options(**{READ_ONLY_OPTION: True})


TOOL_WAIT_S = 30.0  # how long the command line and migrations wait for SQLite's write lock


def make_engine(url: str, *, timeout_s: float | None = None, keys: Path | None = None) -> Engine:
    """An engine for either backend. SQLite gets WAL and write-locking transactions.

    Every SQLite transaction starts with BEGIN IMMEDIATE so that concurrent writers queue on the
    database lock (busy_timeout) instead of failing to upgrade a read lock mid-transaction.

    ``keys``: the keyring file that seals and opens values on this engine's connections
    (gateway.security.vault.for_home: CONTACTGATE_DATA_KEYS, when set, wins); without it, the
    process's vault (gateway.security.vault.current).

    ``timeout_s`` is how long the serving gateway lets one database step wait — connecting, taking
    a pooled connection, a lock, a statement, SQLite's write lock — before it fails (and the
    request is answered Unavailable). None (the command line, migrations) waits as before.
    """
    if url.startswith("sqlite"):
        path = make_url(url).database  # None for "sqlite://", in memory
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
            # Retention (gateway.index.retention): deleted content is overwritten, and freed pages
            # can be given back to the file system. auto_vacuum takes effect only on a file with no
            # tables yet; an older file is converted once by `retention run`.
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_s * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return _with_keys(engine, keys)
    bounded = {} if timeout_s is None else {"pool_timeout": timeout_s,
                                            "connect_args": postgresql_timeouts(timeout_s)}
    return _with_keys(create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, **bounded), keys)


class WriterTurns:
    """Turns at a SQLite database's one write lock, for the serving gateway's processes.

    SQLite lets one writer in at a time; the others wait in its busy handler, which sleeps 1, 2, 5,
    ... up to 100 ms between tries, so under load a writer can sleep long after the lock came free
    (the p99 of many milliseconds) while the CPU idles. Here a process's threads queue on a lock of
    their own (woken at once when it is released), and the process holding the turn takes an
    advisory lock on a file beside the database (``<database>-turn``); the kernel drops a killed
    process's lock. A process waiting for another's turn sleeps on a doorbell, a FIFO beside it
    (hidden, `bell_path`, so that ``cp contactgate.db*`` does not wait on it), which each holder
    rings as it lets go: the waiter tries again at once rather than after a sleep (which overshoots
    by ~0.1 ms here; 2 processes serving GetContacts were 81 % busy with sleeps of 0.2 ms and more,
    84 % with the bell). It tries again after WAKE_S anyway, in case another waiter took the ring;
    without a bell it sleeps between tries as before (POLL_S). So BEGIN IMMEDIATE almost never
    waits, and the write lock is handed on without a sleep. Only a speed-up: anything that writes
    without a turn (the command line, the console) is still serialised by SQLite itself. Waiting
    longer than ``timeout_s`` raises `WriterTurnTimeout`."""

    WAKE_S = 0.002  # a waiter's longest sleep on the bell between tries of another process's turn
    POLL_S = (0.0002, 0.0005, 0.001, 0.002)  # without a bell: sleeps between tries
    BELL_RETRY_S = 10.0  # a bell that could not be opened is tried again after this long

    def __init__(self, path: str, timeout_s: float):
        self._path = f"{path}-turn"
        self._timeout_s = timeout_s
        self._local = threading.Lock()
        self._fd: int | None = None
        self._bell: int | None = None
        self._bell_poll: select.poll | None = None
        self._bell_tried = -math.inf
        self._pid: int | None = None

    def _file(self) -> int:
        if self._pid != os.getpid():  # opened in each process: a descriptor shared across fork() is one lock
            for inherited in (self._fd, self._bell):  # (closing this process's copies releases nothing)
                if inherited is not None:
                    os.close(inherited)
            self._fd = self._bell = self._bell_poll = None
            self._bell_tried = -math.inf
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        if self._bell is None and time.monotonic() - self._bell_tried >= self.BELL_RETRY_S:
            self._bell_tried = time.monotonic()
            self._bell = _open_bell(bell_path(self._path))
            if self._bell is not None:
                self._bell_poll = select.poll()  # (select() cannot take a descriptor past 1023)
                self._bell_poll.register(self._bell, select.POLLIN)
        return self._fd

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        deadline = time.monotonic() + self._timeout_s
        if not self._local.acquire(timeout=self._timeout_s):
            raise WriterTurnTimeout("waited too long for the database's write lock (in this process)")
        try:
            fd = self._file()
            tries = 0
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WriterTurnTimeout("waited too long for the database's write lock") from None
                    self._wait(remaining, tries)
                    tries += 1
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._ring()
        finally:
            self._local.release()

    def _wait(self, remaining: float, tries: int) -> None:
        if self._bell_poll is None:
            time.sleep(min(remaining, self.POLL_S[min(tries, len(self.POLL_S) - 1)]))
            return
        if self._bell_poll.poll(max(1, math.ceil(min(remaining, self.WAKE_S) * 1000))):
            try:
                os.read(self._bell, 65536)  # every ring so far: the next wait sleeps until a new one
            except BlockingIOError:  # another process's waiter took it
                pass

    def _ring(self) -> None:
        if self._bell is not None:
            try:
                os.write(self._bell, b"\0")
            except OSError:  # full (rings nobody has taken are waiting already), or gone
                pass


def bell_path(turn_path: str) -> str:
    """``.<database>-turn-bell`` in the database's directory."""
    directory, name = os.path.split(turn_path)
    return os.path.join(directory, f".{name}-bell")


def _open_bell(path: str) -> int | None:
    """The doorbell FIFO beside the turn file, made 0600 if missing; None (waiters sleep between
    tries) if it cannot be had, or is not a FIFO of this user's that only this user may use."""
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:  # read and write: never blocks on open, and this process can both ring and listen
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISFIFO(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        os.close(fd)
        return None
    return fd


class WriterTurnTimeout(OperationalError):
    """The database's write lock was not had within the database timeout (answered Unavailable)."""

    def __init__(self, message: str):
        super().__init__(message, None, TimeoutError(message))


def writer_turns(engine: Engine, timeout_s: float) -> WriterTurns | None:
    """Turns at the write lock of ``engine``'s database if it is a SQLite file; else None (PostgreSQL
    lets writers in together)."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    return WriterTurns(engine.url.database, timeout_s)


@contextlib.contextmanager
def write_transaction(engine: Engine, turns: WriterTurns | None) -> Iterator[Connection]:
    """``engine.begin()``, in the process's turn at the write lock when there are turns."""
    if turns is None:
        with engine.begin() as conn:
            yield conn
        return
    with turns.turn(), engine.begin() as conn:
        yield conn


def _with_keys(engine: Engine, keys: Path | None) -> Engine:
    if keys is not None:
        from gateway.index.sealed import VAULT_INFO
        from gateway.security import vault

        loader = functools.partial(vault.for_home, keys)

        @event.listens_for(engine, "connect")
        def _attach_keys(_dbapi_conn, record):
            record.info[VAULT_INFO] = loader

    return engine


def postgresql_timeouts(timeout_s: float) -> dict:
    """libpq settings that bound each step. The server enforces statement_timeout and lock_timeout;
    connect_timeout (whole seconds, at least 2 in libpq), TCP keepalives and tcp_user_timeout let
    the client give up on a server host or network that is gone. None of these bounds a server that
    is alive at the TCP level but does not run (a SIGSTOPped or frozen postgres): its kernel still
    acknowledges every packet, so a request in flight waits until it runs again (docs/operations.md, "What
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
