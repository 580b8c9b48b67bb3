"""Accreditation proposals held apart from the accreditation in force (renewals without downtime).

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_scopes", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("pending_expires", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("pending_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("pending_evidence", sa.Text(), nullable=True))
    # Proposals made before this revision lived in the accreditation columns themselves.
    op.execute("UPDATE organisations SET pending_scopes = scopes, pending_expires = expires, "
               "pending_by = proposed_by, pending_evidence = evidence WHERE status = 'pending_approval'")


def downgrade() -> None:
    with op.batch_alter_table("organisations", schema=None) as batch_op:
        batch_op.drop_column("pending_evidence")
        batch_op.drop_column("pending_by")
        batch_op.drop_column("pending_expires")
        batch_op.drop_column("pending_scopes")
