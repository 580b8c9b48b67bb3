"""Retention: archive at 18 (or on a recorded death), purge after the retention period.

- ``children.archive_due``: the first day of the month of the child's 18th birthday (or of a
  recorded death), in clear, so that `contactgate retention run` finds the children coming due by
  an index range scan without a clear birth date; the exact day is decided from the record itself.
- ``children.archived_at`` / ``archive_reason`` (``age`` | ``death``): set when the child is
  archived (no longer returned to anyone).
- ``children.purge_after``: the day the archived child's rows are destroyed.

Existing children get their ``archive_due`` from their record (gateway.index.retention).

SQLite: a database file made before this revision has ``auto_vacuum=NONE``; the first
`retention run` converts it once (``PRAGMA auto_vacuum=INCREMENTAL`` + ``VACUUM``, which cannot run
inside this migration's transaction). New files get it from gateway.db's connection set-up.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("children") as batch_op:
        batch_op.add_column(sa.Column("archive_due", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("archive_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("purge_after", sa.Date(), nullable=True))
        batch_op.create_index("ix_children_archive_due", ["archive_due"], unique=False)
        batch_op.create_index("ix_children_purge_after", ["purge_after"], unique=False)

    from gateway.index.retention import backfill_archive_due
    backfill_archive_due(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("children") as batch_op:
        batch_op.drop_index("ix_children_purge_after")
        batch_op.drop_index("ix_children_archive_due")
    for column in ("purge_after", "archive_reason", "archived_at", "archive_due"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE children DROP COLUMN {column}")  # SQLite 3.35+
        else:
            op.drop_column("children", column)
