"""Officers as accounts, their sessions, proposals awaiting a second officer, case-free org codes.

- ``officers``: one row per officer (argon2id password hash, sealed TOTP secret, roles, lockout).
- ``officer_sessions``: a signed-in officer's session, by the SHA-256 of its token.
- ``proposals``: what an officer proposed (accreditation, renewal, reinstatement, a trust change),
  exactly as the approver sees it, and its decision. A pending proposal kept in
  ``organisations.pending_*`` before this revision is carried over, and those columns retired.
- ``organisations.code_key``: the code upper-cased, unique: ``leeds_la`` and ``LEEDS_LA`` are one
  organisation. An existing pair of codes that differ only in case stops the upgrade with a message.

Revision ID: 0009
Revises: 0008
"""
import datetime as dt
import json

from alembic import op
import sqlalchemy as sa

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    codes = [row[0] for row in bind.execute(sa.text("SELECT code FROM organisations"))]
    folded: dict[str, str] = {}
    for code in codes:
        if code.upper() in folded:
            raise RuntimeError(f"organisations {folded[code.upper()]!r} and {code!r} differ only in case: "
                               f"rename one (codes are unique whatever their case from 0009 on)")
        folded[code.upper()] = code

    op.create_table(
        "officers",
        sa.Column("officer_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("roles", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        sa.Column("totp_secret", sa.Text(), nullable=False),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        sa.Column("failed_signins", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "officer_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("officer_id", sa.String(64), sa.ForeignKey("officers.officer_id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_officer_sessions_officer_id", "officer_sessions", ["officer_id"])
    proposals = op.create_table(
        "proposals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("org_code", sa.String(32), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_proposals_org_code", "proposals", ["org_code"])
    op.create_index("ix_proposals_status", "proposals", ["status"])

    now = dt.datetime.now(dt.timezone.utc)
    pending = bind.execute(sa.text(
        "SELECT code, status, pending_scopes, pending_expires, pending_by, pending_evidence, updated_at "
        "FROM organisations WHERE pending_scopes IS NOT NULL")).all()
    for row in pending:
        expires = row.pending_expires if isinstance(row.pending_expires, str) else row.pending_expires.isoformat()
        payload = {"scopes": sorted(s for s in row.pending_scopes.split(",") if s), "expires": expires,
                   "evidence": row.pending_evidence, "evidence_files": []}
        op.bulk_insert(proposals, [{
            "kind": "renewal" if row.status == "accredited" else "accreditation", "org_code": row.code,
            "payload": json.dumps(payload, sort_keys=True), "status": "pending",
            "proposed_by": (row.pending_by or "unknown").strip().lower() or "unknown", "proposed_at": now,
        }])
    bind.execute(sa.text("UPDATE organisations SET pending_scopes = NULL, pending_expires = NULL, "
                         "pending_by = NULL, pending_evidence = NULL"))

    # Added NOT NULL with a default then filled, not rebuilt: a batch rebuild of `organisations` on
    # SQLite would drop the table its certificates point at.
    op.add_column("organisations", sa.Column("code_key", sa.String(32), nullable=False, server_default=""))
    bind.execute(sa.text("UPDATE organisations SET code_key = UPPER(code)"))
    if bind.dialect.name != "sqlite":
        op.alter_column("organisations", "code_key", server_default=None)
    op.create_index("ix_organisations_code_key", "organisations", ["code_key"], unique=True)


def downgrade() -> None:
    bind = op.get_bind()
    for row in bind.execute(sa.text("SELECT org_code, kind, payload, proposed_by FROM proposals "
                                    "WHERE status = 'pending' AND kind IN ('accreditation', 'renewal')")).all():
        payload = json.loads(row.payload)
        bind.execute(sa.text("UPDATE organisations SET pending_scopes = :s, pending_expires = :e, pending_by = :b, "
                             "pending_evidence = :v WHERE code = :c"),
                     {"s": ",".join(payload["scopes"]), "e": dt.date.fromisoformat(payload["expires"]),
                      "b": row.proposed_by, "v": payload.get("evidence"), "c": row.org_code})
    op.drop_index("ix_organisations_code_key", "organisations")
    if bind.dialect.name == "sqlite":
        op.execute("ALTER TABLE organisations DROP COLUMN code_key")
    else:
        op.drop_column("organisations", "code_key")
    op.drop_index("ix_proposals_status", "proposals")
    op.drop_index("ix_proposals_org_code", "proposals")
    op.drop_table("proposals")
    op.drop_index("ix_officer_sessions_officer_id", "officer_sessions")
    op.drop_table("officer_sessions")
    op.drop_table("officers")
