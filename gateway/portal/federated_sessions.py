"""Which portal sessions were signed in through an organisation's provider (``portal_oidc_sessions``),
as gateway.portal.accounts asks on every page and at sign-out: below both accounts and
gateway.portal.federated, importing neither."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from gateway.db import identity_providers, portal_oidc_sessions


def session_refusal(conn: Connection, token_hash: str) -> tuple[bool, str | None]:
    """(whether the session was signed in through a provider, why it may not go on or None)."""
    idp_id = conn.execute(select(portal_oidc_sessions.c.idp_id).where(
        portal_oidc_sessions.c.token_hash == token_hash)).scalar()
    if idp_id is None:
        return False, None
    status = conn.execute(select(identity_providers.c.status).where(identity_providers.c.id == idp_id)).scalar()
    return True, None if status == "approved" else "your organisation's identity provider is no longer in force"


def forget(conn: Connection, token_hash: str) -> None:
    conn.execute(delete(portal_oidc_sessions).where(portal_oidc_sessions.c.token_hash == token_hash))
