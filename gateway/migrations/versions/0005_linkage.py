"""Linkage: blocking keys, one record per source with provenance, a review queue people can work,
merges that can be undone.

- ``blocking_keys`` (key, child_id): every key a child is filed under (gateway.index.linkage); the
  only way candidates are found, by equality, so that a later change can make every key a keyed
  hash. NHS and pupil numbers are keys too.
- ``source_records`` keeps each source's own record (``record``, ``received_at``): what the index
  shows is derived from them by documented precedence, and nothing one organisation sends
  overwrites what another supplied. ``children.provenance`` says which source supplied each shown
  value, and when.
- ``involvements.source_record_id``: an organisation restates, changes and ends only the
  involvements of its own source record.
- ``children.merged_into``: a merged child's id resolves to the survivor.
- ``review_queue`` pairs a child created in the review band with its likely duplicate, with the
  comparison and a status; ``distinct_pairs`` records pairs a person has said are different
  children; ``merges`` keeps what each merge changed so that it can be undone exactly.
- ``children.nhs_number`` / ``pupil_number`` are retired (always NULL from here on): their unique
  constraints would stop a record held for review from being stored as its own child. The columns
  are left in place (dropping them would rebuild ``children`` under its foreign keys on SQLite).

Existing data is carried over with the code of this release (gateway.index.legacy.adopt_legacy_rows):
each child's record becomes the record of its source records, its keys are computed, and a record
held by the old queue (no child) is stored as a child of its own and paired with its candidate.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blocking_keys",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("child_id", sa.String(length=19), nullable=False),
        sa.ForeignKeyConstraint(["child_id"], ["children.child_id"]),
        sa.PrimaryKeyConstraint("key", "child_id"),
    )
    with op.batch_alter_table("blocking_keys") as batch_op:
        batch_op.create_index("ix_blocking_keys_child_id", ["child_id"], unique=False)

    with op.batch_alter_table("children") as batch_op:
        batch_op.add_column(sa.Column("provenance", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("merged_into", sa.String(length=19), nullable=True))
    with op.batch_alter_table("source_records") as batch_op:
        batch_op.add_column(sa.Column("record", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("received_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("involvements") as batch_op:
        batch_op.add_column(sa.Column("source_record_id", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_involvements_source", ["org_code", "source_record_id"], unique=False)
    with op.batch_alter_table("review_queue") as batch_op:
        batch_op.alter_column("submitted", existing_type=sa.Text(), nullable=True)
        batch_op.add_column(sa.Column("child_id", sa.String(length=19), nullable=True))
        batch_op.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("comparison", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("model_version", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False, server_default="open"))
        batch_op.add_column(sa.Column("decided_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_review_queue_status", ["status"], unique=False)

    op.create_table(
        "distinct_pairs",
        sa.Column("child_a", sa.String(length=19), nullable=False),
        sa.Column("child_b", sa.String(length=19), nullable=False),
        sa.Column("decided_by", sa.String(length=64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("child_a", "child_b"),
    )
    op.create_table(
        "merges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("survivor", sa.String(length=19), nullable=False),
        sa.Column("merged", sa.String(length=19), nullable=False),
        sa.Column("officer", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("undone_by", sa.String(length=64), nullable=True),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("merges") as batch_op:
        batch_op.create_index("ix_merges_merged", ["merged"], unique=False)

    from gateway.index import sealed
    from gateway.index.legacy import adopt_legacy_rows
    with sealed.installed(op.get_bind(), sealed.plain()):  # the tables are plaintext until 0006
        adopt_legacy_rows(op.get_bind())


def downgrade() -> None:
    # The derived record stays in children.record; identifiers go back to their columns from it.
    from gateway.index import sealed
    from gateway.index.legacy import restore_legacy_identifiers
    with sealed.installed(op.get_bind(), sealed.plain()):  # 0006's downgrade opened every value
        restore_legacy_identifiers(op.get_bind())
    with op.batch_alter_table("merges") as batch_op:
        batch_op.drop_index("ix_merges_merged")
    op.drop_table("merges")
    op.drop_table("distinct_pairs")
    with op.batch_alter_table("review_queue") as batch_op:
        batch_op.drop_index("ix_review_queue_status")
        for column in ("decided_at", "decided_by", "status", "model_version", "comparison", "score", "child_id"):
            batch_op.drop_column(column)
    with op.batch_alter_table("involvements") as batch_op:
        batch_op.drop_index("ix_involvements_source")
        batch_op.drop_column("source_record_id")
    with op.batch_alter_table("source_records") as batch_op:
        batch_op.drop_column("received_at")
        batch_op.drop_column("record")
    # Not a batch on SQLite: rebuilding children would drop it under its foreign keys.
    for column in ("merged_into", "provenance"):
        if op.get_bind().dialect.name == "sqlite":
            op.execute(f"ALTER TABLE children DROP COLUMN {column}")  # SQLite 3.35+
        else:
            op.drop_column("children", column)
    with op.batch_alter_table("blocking_keys") as batch_op:
        batch_op.drop_index("ix_blocking_keys_child_id")
    op.drop_table("blocking_keys")
