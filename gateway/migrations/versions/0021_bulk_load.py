"""Bulk loads (`contactgate load`, issue 30): how far each signed load file has been applied, so
that a load killed at any point and run again resumes after the last batch committed.

- ``bulk_loads``: one row per load file (``load_id``: the SHA-256 of its signed header), the
  organisation and signing certificate, the batches in the file and how many are applied; each
  batch's transaction moves ``batches_done`` on together with its rows and its audit entry.

Revision ID: 0021_bulk_load
Revises: 0020_identity_providers
"""
import sqlalchemy as sa
from alembic import op

revision = "0021_bulk_load"
down_revision = "0020_identity_providers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_loads",
        sa.Column("load_id", sa.String(64), primary_key=True),
        sa.Column("org_code", sa.String(32), sa.ForeignKey("organisations.code"), nullable=False),
        sa.Column("cert_fingerprint", sa.String(64), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("batches_done", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("bulk_loads")
