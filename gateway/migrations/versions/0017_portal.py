"""The practitioners' portal (issue 26): practitioner accounts of each organisation, their sign-in
sessions and failures, the opaque handles that stand for children in the portal's forms, and the
officers' proposals appointing an organisation's first user administrator.

- ``portal_practitioners``: one account per (organisation, user id): name, role (from the roles
  file), job title, clearance (certificate number and date), training date, end date, whether it
  is a user administrator, an argon2id password (NULL until enrolled), a sealed TOTP secret, a
  one-time invitation code's SHA-256 (until enrolled).
- ``portal_sessions``: the SHA-256 of each signed-in browser's session token.
- ``portal_signin_failures``: failures per (account, source address): a source reaching the limit is
  locked out of that account; every other source is not (no lock of the account as a whole).
- ``portal_handles``: what a child's opaque handle in a page's form stands for, in one session.
- ``portal_admin_proposals``: an officer's proposal about a user administrator (appoint, disable,
  reset, enable); a second officer approves or declines it.
- ``portal_role_proposals``: a role given to an account by one user administrator, in force once a
  second administrator (or an officer) approves it.

Revision ID: 0017
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_practitioners",
        sa.Column("org_code", sa.String(32), sa.ForeignKey("organisations.code"), primary_key=True),
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(64), nullable=True),
        sa.Column("job_title", sa.String(200), nullable=False),
        sa.Column("user_admin", sa.Boolean(), nullable=False),
        sa.Column("clearance_number", sa.String(64), nullable=True),
        sa.Column("clearance_date", sa.Date(), nullable=True),
        sa.Column("training_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("totp_secret", sa.Text(), nullable=False),
        sa.Column("totp_last_step", sa.Integer(), nullable=True),
        sa.Column("invitation_hash", sa.String(64), nullable=True),
        sa.Column("invitation_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("code_failures", sa.Integer(), nullable=False),
        sa.Column("code_locked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(140), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("org_code", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_code", "user_id"],
                                ["portal_practitioners.org_code", "portal_practitioners.user_id"]),
    )
    op.create_index("ix_portal_sessions_user", "portal_sessions", ["org_code", "user_id"])
    op.create_table(
        "portal_signin_failures",
        sa.Column("org_code", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "portal_handles",
        sa.Column("handle_hash", sa.String(64), primary_key=True),
        sa.Column("session_hash", sa.String(64), nullable=False, index=True),
        sa.Column("child_id", sa.String(19), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "portal_admin_proposals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("org_code", sa.String(32), sa.ForeignKey("organisations.code"), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("job_title", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),  # appoint, disable, reset, enable
        sa.Column("why", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),  # pending, approved, declined
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_table(
        "portal_role_proposals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("org_code", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # pending, approved, superseded
        sa.Column("proposed_by", sa.String(140), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(140), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_code", "user_id"],
                                ["portal_practitioners.org_code", "portal_practitioners.user_id"]),
    )
    op.create_index("ix_portal_role_proposals_user", "portal_role_proposals", ["org_code", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_portal_role_proposals_user", table_name="portal_role_proposals")
    op.drop_table("portal_role_proposals")
    op.drop_table("portal_admin_proposals")
    op.drop_table("portal_handles")
    op.drop_table("portal_signin_failures")
    op.drop_index("ix_portal_sessions_user", table_name="portal_sessions")
    op.drop_table("portal_sessions")
    op.drop_table("portal_practitioners")
