"""The proxies a node believes (issue 24, item 8): the certificates nginx presents on the mutual-TLS
hop to `serve --behind-proxy` nodes, each registered by two officers (gateway.trust.proxies).

- ``proxy_certificates``: fingerprint (SHA-256 of the DER), the proxy's name, the certificate's
  subject, issuer, serial, validity and PEM, who proposed and who approved it, and its revocation.
  Empty after the upgrade: a node behind nginx believes no Client-Cert header until a proxy
  certificate is registered (docs/operations.md 6a).

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proxy_certificates",
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("proposed_by", sa.String(64), nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("proxy_certificates")
