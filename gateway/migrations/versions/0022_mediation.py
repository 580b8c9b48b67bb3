"""Access through another authorised user (issue 26, item 5): an audit entry of a mediated read names
the requester it was made for.

- ``audit_log.on_behalf_of``: the requester's details as canonical JSON (gateway.mediation.OnBehalfOf);
- ``audit_log.behalf_key``: the requester's ``organisation:name``, case folded, indexed
  (``ix_audit_behalf``): `audit report --user` finds the requester's reads as well as the user's.

Both are hashed into an entry's links when present (gateway.audit.links.EXTENDED_FIELDS): entries
written before stay verifiable as they were written. Nothing else changes.

Revision ID: 0022_mediation
Revises: 0021_bulk_load
"""
import sqlalchemy as sa
from alembic import op

revision = "0022_mediation"
down_revision = "0021_bulk_load"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("on_behalf_of", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("behalf_key", sa.String(210), nullable=True))
        batch_op.create_index("ix_audit_behalf", ["behalf_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_behalf")
        batch_op.drop_column("behalf_key")
        batch_op.drop_column("on_behalf_of")
