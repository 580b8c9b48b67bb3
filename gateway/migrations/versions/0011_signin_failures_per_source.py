"""Failed sign-ins counted per officer and source address, with a slower global back-off (issue 22).

- ``officer_signin_failures``: per (officer, source) the failures in a row and the lock they led to;
  a source is an IPv4 address, an IPv6 /64 or ``local:<user>`` (the command line).
- ``officers.failures_since``: the start of the window that ``officers.failed_signins`` counts in;
  ``failed_signins`` and ``locked_until`` become the global back-off (failures from every address
  together). An account locked before the upgrade stays locked until then, from every address;
  counts in progress start again.

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "officer_signin_failures",
        sa.Column("officer_id", sa.String(64), sa.ForeignKey("officers.officer_id"), primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Added, not rebuilt: a batch rebuild of `officers` on SQLite would drop the table its sessions point at.
    op.add_column("officers", sa.Column("failures_since", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE officers SET failed_signins = 0")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE officers DROP COLUMN failures_since")
    else:
        op.drop_column("officers", "failures_since")
    op.drop_table("officer_signin_failures")
