"""The portal's security keys (issue 26 item 3): WebAuthn credentials, the one-use challenges of
their ceremonies, and each organisation's policy on authenticator-app (TOTP) codes.

- ``portal_webauthn_credentials``: one row per registered key (FIDO2 security key or platform
  passkey) of a portal account. The public key is not secret, but it is sealed with a context naming
  the account and the credential (gateway.index.sealed.portal_key_context), so a row moved to another
  account (by hand, in the database) no longer opens: the account link is part of the seal.
- ``portal_webauthn_challenges``: a challenge handed to one browser for one ceremony (enrol, sign
  in, add a key, replace codes by a key), bound to that browser's portal session by the SHA-256 of
  a nonce held in its signed session cookie; taken (deleted) once, and good for
  gateway.portal.security_keys.CHALLENGE_SECONDS.
- ``portal_org_settings``: whether the organisation still accepts TOTP codes; a user
  administrator turns codes off alone, turning them back on is proposed by one administrator and
  approved by another (it weakens sign-in).

Revision ID: 0018_webauthn
Revises: 0017
"""
import sqlalchemy as sa
from alembic import op

revision = "0018_webauthn"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_webauthn_credentials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("org_code", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("credential_id", sa.String(700), nullable=False, unique=True),  # base64url
        sa.Column("public_key", sa.Text(), nullable=False),  # sealed, COSE, base64url
        sa.Column("sign_count", sa.BigInteger(), nullable=False),
        sa.Column("aaguid", sa.String(36), nullable=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("user_verified", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_code", "user_id"], ["portal_practitioners.org_code", "portal_practitioners.user_id"]),
    )
    op.create_index("ix_portal_webauthn_credentials_user", "portal_webauthn_credentials", ["org_code", "user_id"])
    op.create_table(
        "portal_webauthn_challenges",
        sa.Column("challenge_hash", sa.String(64), primary_key=True),
        sa.Column("binding_hash", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("org_code", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_portal_webauthn_challenges_expires_at", "portal_webauthn_challenges", ["expires_at"])
    op.create_table(
        "portal_org_settings",
        sa.Column("org_code", sa.String(32), sa.ForeignKey("organisations.code"), primary_key=True),
        sa.Column("totp_allowed", sa.Boolean(), nullable=False),
        sa.Column("totp_proposed_by", sa.String(140), nullable=True),
        sa.Column("totp_proposed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_by", sa.String(140), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("portal_org_settings")
    op.drop_index("ix_portal_webauthn_challenges_expires_at", table_name="portal_webauthn_challenges")
    op.drop_table("portal_webauthn_challenges")
    op.drop_index("ix_portal_webauthn_credentials_user", table_name="portal_webauthn_credentials")
    op.drop_table("portal_webauthn_credentials")
