"""The restore entries of the audit trail, found without reading it (issue 24, item 7).

An incremental `audit verify` re-hashes only the entries after its anchor (the newest signed
checkpoint it trusts) but names every restore and its gap on every run, the earlier ones too: it
reads them through ``ix_audit_restore``, a partial index holding only the ``restore`` and
``restore.acknowledged`` entries (a handful in a trail's life), so appends pay nothing for it.

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

RESTORES = "operation IN ('restore', 'restore.acknowledged')"


def upgrade() -> None:
    op.create_index("ix_audit_restore", "audit_log", ["seq"], unique=False,
                    postgresql_where=sa.text(RESTORES), sqlite_where=sa.text(RESTORES))


def downgrade() -> None:
    op.drop_index("ix_audit_restore", table_name="audit_log")
