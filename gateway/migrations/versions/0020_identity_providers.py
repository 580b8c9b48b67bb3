"""Federated sign-in to the portal (issue 27): an organisation's OpenID provider as part of its
accreditation, and the portal's sign-ins through it.

- ``identity_providers``: an organisation's provider (issuer, client id, client authentication with a
  sealed credential, claims and their mapping, what counts as two factors), proposed by one
  officer and in force once a second approves it.
- ``portal_oidc_requests``: sign-ins under way (state's SHA-256, nonce, PKCE verifier), used once.
- ``portal_oidc_sessions``: which portal sessions a provider signed in, with its subject and sid.
- ``portal_oidc_seen``: back-channel logout tokens already honoured.

Revision ID: 0020_identity_providers
Revises: 0018_webauthn
"""
import sqlalchemy as sa
from alembic import op

revision = "0020_identity_providers"
down_revision = "0018_webauthn"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_providers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("org_code", sa.String(32), sa.ForeignKey("organisations.code"), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("client_auth", sa.String(32), nullable=False),
        sa.Column("client_credential", sa.Text(), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=True),
        sa.Column("redirect_uri", sa.String(500), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("person_claim", sa.String(64), nullable=False),
        sa.Column("role_claim", sa.String(64), nullable=False),
        sa.Column("role_map", sa.Text(), nullable=False),
        sa.Column("acr_values", sa.Text(), nullable=False),
        sa.Column("amr_values", sa.Text(), nullable=False),
        sa.Column("without_two_factors", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_identity_providers_org", "identity_providers", ["org_code", "status"])
    op.create_table(
        "portal_oidc_requests",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("idp_id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stepup_hash", sa.String(64), nullable=True),
        sa.Column("org_code", sa.String(32), nullable=True),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("subject", sa.String(255), nullable=True),
        sa.Column("sid", sa.String(255), nullable=True),
    )
    op.create_index("ix_portal_oidc_requests_created_at", "portal_oidc_requests", ["created_at"])
    op.create_index("ix_portal_oidc_requests_stepup_hash", "portal_oidc_requests", ["stepup_hash"])
    op.create_table(
        "portal_oidc_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("idp_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("sid", sa.String(255), nullable=True),
    )
    op.create_index("ix_portal_oidc_sessions_subject", "portal_oidc_sessions", ["idp_id", "subject"])
    op.create_table(
        "portal_oidc_seen",
        sa.Column("jti_hash", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_portal_oidc_seen_expires_at", "portal_oidc_seen", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_portal_oidc_seen_expires_at", table_name="portal_oidc_seen")
    op.drop_table("portal_oidc_seen")
    op.drop_index("ix_portal_oidc_sessions_subject", table_name="portal_oidc_sessions")
    op.drop_table("portal_oidc_sessions")
    op.drop_index("ix_portal_oidc_requests_stepup_hash", table_name="portal_oidc_requests")
    op.drop_index("ix_portal_oidc_requests_created_at", table_name="portal_oidc_requests")
    op.drop_table("portal_oidc_requests")
    op.drop_index("ix_identity_providers_org", table_name="identity_providers")
    op.drop_table("identity_providers")
