"""Federated sign-in (issue 27, review): which provider subject each local practitioner record is
bound to (``portal_oidc_subjects``), so that only that subject signs in as it: the first subject an
organisation's provider signs in as a record (or whose sign-in made it just in time) holds it; another
subject naming the same user id, or that subject naming another user id, is refused.

Revision ID: 0023_oidc_subjects
Revises: 0022_mediation
"""
import sqlalchemy as sa
from alembic import op

revision = "0023_oidc_subjects"
down_revision = "0022_mediation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_oidc_subjects",
        sa.Column("org_code", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(500), primary_key=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("org_code", "issuer", "subject", name="uq_portal_oidc_subjects_subject"),
    )


def downgrade() -> None:
    op.drop_table("portal_oidc_subjects")
