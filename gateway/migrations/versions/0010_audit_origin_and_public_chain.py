"""Audit entries say where a request came from and what was answered; a public chain for signed
checkpoints (issue 10).

- ``audit_log.source_address``, ``request_id``, ``response_digest``: hashed into the entry when
  present (gateway.audit.links.EXTENDED_FIELDS), so entries written before stay verifiable;
- ``audit_log.public_hash`` and ``audit_head.public_hash``: a plain SHA-256 chain beside the HMAC
  chain, computed here for the entries already written, which checkpoints signed with the gateway's
  signing key commit to (gateway.audit.checkpoints; verifiable offline, without the HMAC key);
- ``ix_audit_at``: reviews, reports and exports read the trail by date.

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

GENESIS = "0" * 64
BATCH = 5000


def upgrade() -> None:
    from gateway.audit.links import public_hash

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_address", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("request_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("response_digest", sa.String(44), nullable=True))
        batch_op.add_column(sa.Column("public_hash", sa.String(64), nullable=True))
        batch_op.create_index("ix_audit_at", ["at"], unique=False)
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_hash", sa.String(64), nullable=True))

    conn = op.get_bind()
    log = sa.table("audit_log", *(sa.column(name) for name in (
        "seq", "at", "org_code", "cert_fingerprint", "user_id", "role", "operation", "reason_code",
        "reason_text", "child_ids", "outcome", "fault_code", "request_digest", "detail", "entry_hash",
        "source_address", "request_id", "response_digest", "public_hash")))
    head = sa.table("audit_head", sa.column("id"), sa.column("public_hash"))
    prev, last = GENESIS, 0
    while True:
        rows = conn.execute(sa.select(log).where(log.c.seq > last).order_by(log.c.seq).limit(BATCH)).mappings().all()
        if not rows:
            break
        updates = []
        for row in rows:
            prev = public_hash(prev, row)
            updates.append({"s": row["seq"], "p": prev})
        conn.execute(log.update().where(log.c.seq == sa.bindparam("s")).values(public_hash=sa.bindparam("p")), updates)
        last = rows[-1]["seq"]
    conn.execute(head.update().where(head.c.id == 1).values(public_hash=prev))

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("public_hash", existing_type=sa.String(64), nullable=False)
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.alter_column("public_hash", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("public_hash")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_at")
        batch_op.drop_column("public_hash")
        batch_op.drop_column("response_digest")
        batch_op.drop_column("request_id")
        batch_op.drop_column("source_address")
