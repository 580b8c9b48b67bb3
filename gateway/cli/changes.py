"""What the officers' commands share: a registry change run as the signed-in officer in one audited
transaction, a refusal written to the audit chain before it is said, a change to the home's keys
audited with its officer, and how organisations, certificates and proposals are printed (by `org`,
`cert` and `trust` alike)."""

from __future__ import annotations

import datetime as dt

import click

from gateway import audit, officers
from gateway.cli.base import Context, Refused
from gateway.trust import registry
from gateway.trust.registry import RegistryError


def refuse_officer(ctx: Context, actor, action: str, why: Exception) -> None:
    """Refuse an officer's request (exit 2), in the audit chain first."""
    registry.record_refusal(ctx.engine, ctx.trail, actor, action, str(why))
    raise Refused(str(why)) from None


def registry_call(ctx: Context, fn, *args, **kwargs):
    """Run a registry change (which audits itself) in one transaction; a refusal is audited too."""
    try:
        return registry.run_change(ctx.engine, ctx.trail, fn, *args, **kwargs)
    except (RegistryError, officers.OfficerError) as exc:
        raise Refused(str(exc)) from None


def publish_crl(ctx: Context) -> None:
    """A new CRL of the gateway CA (after a revocation, and at init): the running gateway loads it
    for new connections within a second."""
    from gateway.trust import crl

    crl.renew(ctx.settings, ctx.engine)


def show_org(o: registry.Organisation, today: dt.date | None = None) -> None:
    today = today or dt.date.today()
    click.echo(f"{o.code}  {o.name}  kind={o.kind}  status={o.effective_status(today)}  "
               f"scopes={','.join(sorted(o.scopes)) or '-'}  expires={o.expires or '-'}")
    for p in o.pending:
        click.echo(f"  proposal {p.id} ({p.kind}) by {p.proposed_by}, awaiting a second officer: {p.summary()}")


def show_proposal(p: registry.Proposal) -> None:
    proxy = p.kind in registry.PROXY_PROPOSALS
    linkage = p.kind in registry.LINKAGE_PROPOSALS
    subject = p.org_code or ("the proxies" if proxy else "the linkage model" if linkage else "the trust list")
    click.echo(f"proposal {p.id} ({p.kind}) for {subject} by {p.proposed_by}: {p.status}")
    click.echo(f"  {p.summary()}")
    if p.status == "pending":
        target = (f"cert approve {p.org_code}" if p.kind in registry.CERT_PROPOSALS else
                  "proxy approve" if proxy else f"org approve {p.org_code}" if p.org_code else
                  "linkage approve" if linkage else "trust approve")
        click.echo(f"  a second officer approves it with: contactgate {target} --proposal {p.id}")


def show_cert(c: registry.CertificateRecord) -> None:
    state = f"REVOKED {c.revoked_at:%Y-%m-%d} ({c.revoked_reason})" if c.revoked_at else "active"
    click.echo(f"  {c.fingerprint}  {c.org_code}  {c.subject}  until {c.not_after:%Y-%m-%d}  {state}")


KEY_ROLES = ("senior_officer",)


def key_officer(ctx: Context, action: str) -> officers.Officer:
    """The home's keys need its files and a senior officer's session as well: whoever can read the
    home still acts as, and is audited as, an officer (a refusal is audited too)."""
    return ctx.signed_in(KEY_ROLES, action=action)


def key_entry(actor: officers.Officer, operation: str, detail: str) -> audit.Entry:
    return audit.Entry(operation=operation, outcome="done", user_id=actor.officer_id, role=actor.role_text,
                       detail=detail)
