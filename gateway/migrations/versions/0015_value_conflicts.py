"""Values have owners (issue 23, item 8): value conflicts for a data-quality officer to settle.

- ``value_conflicts``: a source of a lower precedence tier (gateway.index.precedence) stated another
  value of a field than the one shown: the child, the field, the lower source record and the
  supplier of the shown value (source record ids blinded, as in ``source_records``), both values
  with their dates (``detail``, sealed), and its status (open, kept, applied, withdrawn) with who
  settled it and when. Empty after the upgrade: what is shown is unchanged until a child is next
  updated (each child's shown record is derived again then, by the precedence in force).

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "value_conflicts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("child_id", sa.String(19), nullable=False),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("org_code", sa.String(32), nullable=False),
        sa.Column("source_record_id", sa.String(64), nullable=False),
        sa.Column("owner_org_code", sa.String(32), nullable=False),
        sa.Column("owner_source_record_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_value_conflicts_source", "value_conflicts", ["source_record_id"])
    op.create_index("ix_value_conflicts_status", "value_conflicts", ["status"])
    op.create_index("ix_value_conflicts_child", "value_conflicts", ["child_id"])


def downgrade() -> None:
    op.drop_index("ix_value_conflicts_child", "value_conflicts")
    op.drop_index("ix_value_conflicts_status", "value_conflicts")
    op.drop_index("ix_value_conflicts_source", "value_conflicts")
    op.drop_table("value_conflicts")
