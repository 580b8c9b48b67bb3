"""`contactgate portal` (the practitioners' web portal, served like `console`) and `contactgate
portal-admin` (officers appoint an organisation's first portal user administrator, and disable, reset
or re-enable administrators' accounts: one proposes, a second approves or declines; officers also
approve a role an organisation's administrator proposed)."""

from __future__ import annotations

import datetime as dt

import click

from gateway.cli.base import JSON_FLAG, Context, command, echo_json, fail, group, pass_ctx


@command("portal", needs_home=False)
@click.option("--bind", default="127.0.0.1:8445", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@pass_ctx
def portal(ctx: Context, bind: str, workers: int) -> None:
    """Run the practitioners' portal, the secure web link (HTTPS with the gateway's server certificate).

    Practitioners of accredited organisations sign in with a password and a security key (or a
    TOTP code, where their organisation still accepts codes), search the
    index as FindChild does and see a child's contacts as GetContacts does, stating a reason each
    time; every search and view is audited like a SOAP read. Served by the same front as `serve`
    and `console`, bounded by the same settings. Refuses to start if the home is open to other users."""
    from gateway.portal.server import serve_portal

    ctx.preflight_serving()
    from gateway.cli.linkage import check_in_use

    check_in_use(ctx)  # searches score with the linkage model in use
    from dataclasses import replace

    from gateway.config import SettingError
    from gateway.portal.security_keys import check_portal_url

    try:  # security keys are bound to the public URL: a mismatch the portal can see, it refuses
        relying_party = check_portal_url(ctx.settings, bind)
    except SettingError as exc:
        fail(f"portal not started: {exc}")
    click.echo(f"portal on https://{bind}/, practitioners open {relying_party.origin}/ (see docs/portal.md)")
    serve_portal(replace(ctx.settings, portal_url=relying_party.origin), bind, workers)


@group("portal-admin")
def portal_admin() -> None:
    """Appoint, disable, reset or re-enable an organisation's portal user administrators (four-eyes)."""


def _roles(ctx: Context):
    from gateway.index import disclosure

    return disclosure.load(ctx.settings.roles_path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _run(ctx: Context, operation: str, actor, fn, *args, org_code=None):
    from gateway.portal import appointments
    from gateway.portal.accounts import PortalError

    try:
        return appointments.run(ctx.engine, ctx.trail, operation, actor, fn, *args, org_code=org_code)
    except PortalError as exc:
        fail(str(exc))


def _org_of(ctx: Context, proposal_id: int) -> str | None:
    from gateway.portal import appointments

    with ctx.reader.connect() as conn:
        proposal = appointments._proposal(conn, proposal_id)
    return proposal.org_code if proposal else None


@portal_admin.command("propose")
@click.argument("org_code", metavar="ORG")
@click.argument("user_id", metavar="USER")
@click.option("--name", required=True, help="The administrator's name.")
@click.option("--job-title", required=True, help="Their job title.")
@pass_ctx
def admin_propose(ctx: Context, org_code: str, user_id: str, name: str, job_title: str) -> None:
    """Propose USER as ORG's user administrator of the portal: a second officer approves it."""
    from gateway.portal import appointments

    actor = ctx.signed_in(appointments.ROLES, action="portal-admin propose")
    proposal = _run(ctx, "portal.admin.propose", actor, appointments.propose, org_code, user_id, name, job_title,
                    _now(), org_code=org_code.strip().upper()[:32])
    click.echo(f"proposal {proposal.id}: {proposal.summary()}, by {proposal.proposed_by}")
    click.echo(f"  a second officer approves it with: contactgate portal-admin approve {proposal.id}")


@portal_admin.command("approve")
@click.argument("proposal_id", type=int)
@pass_ctx
def admin_approve(ctx: Context, proposal_id: int) -> None:
    """Approve a proposal (not your own). An appointment makes the account, a reset makes a new
    invitation; either prints its one-time invitation code, once. Hand it to the administrator out
    of band (in person, or by a call to a number from the organisation's published switchboard); it
    is good for 14 days. A disable or re-enable takes effect at once."""
    from gateway.portal import appointments

    actor = ctx.signed_in(appointments.ROLES, action="portal-admin approve")
    proposal, code = _run(ctx, "portal.admin.approve", actor, appointments.approve, proposal_id, _now(), _roles(ctx),
                          org_code=_org_of(ctx, proposal_id))
    click.echo(f"approved proposal {proposal.id}: {proposal.summary()}")
    if code is not None:
        click.echo(f"invitation code: {code}")
        click.echo(f"  they enrol at the portal's /enrol page with {proposal.org_code}, {proposal.user_id} and "
                   f"this code")


def _propose_action(ctx: Context, action: str, org_code: str, user_id: str, reason: str | None) -> None:
    from gateway.portal import appointments

    actor = ctx.signed_in(appointments.ROLES, action=f"portal-admin {action}")
    proposal = _run(ctx, "portal.admin.propose", actor, appointments.propose_action, action, org_code, user_id,
                    reason, _now(), org_code=org_code.strip().upper()[:32])
    click.echo(f"proposal {proposal.id}: {proposal.summary()}, by {proposal.proposed_by}")
    click.echo(f"  a second officer approves it with: contactgate portal-admin approve {proposal.id}")


@portal_admin.command("disable")
@click.argument("org_code", metavar="ORG")
@click.argument("user_id", metavar="USER")
@click.option("--reason", required=True, help="Why (recorded in the audit).")
@pass_ctx
def admin_disable(ctx: Context, org_code: str, user_id: str, reason: str) -> None:
    """Propose disabling ORG's portal account USER (a user administrator's: no administrator may);
    a second officer approves it, and the account's sessions end at their next page."""
    _propose_action(ctx, "disable", org_code, user_id, reason)


@portal_admin.command("reset")
@click.argument("org_code", metavar="ORG")
@click.argument("user_id", metavar="USER")
@pass_ctx
def admin_reset(ctx: Context, org_code: str, user_id: str) -> None:
    """Propose resetting ORG's portal account USER (new invitation and authenticator key, password
    cleared); a second officer's approval prints the invitation code. A disabled account stays
    disabled."""
    _propose_action(ctx, "reset", org_code, user_id, None)


@portal_admin.command("enable")
@click.argument("org_code", metavar="ORG")
@click.argument("user_id", metavar="USER")
@click.option("--reason", required=True, help="Why (recorded in the audit).")
@pass_ctx
def admin_enable(ctx: Context, org_code: str, user_id: str, reason: str) -> None:
    """Propose re-enabling ORG's disabled portal account USER; a second officer approves it."""
    _propose_action(ctx, "enable", org_code, user_id, reason)


@portal_admin.command("approve-role")
@click.argument("proposal_id", type=int)
@pass_ctx
def admin_approve_role(ctx: Context, proposal_id: int) -> None:
    """Approve the role a user administrator proposed for an account (`portal-admin list` shows them):
    the second pair of eyes when the organisation has no second administrator."""
    from gateway.portal import appointments

    actor = ctx.signed_in(appointments.ROLES, action="portal-admin approve-role")
    with ctx.reader.connect() as conn:
        from gateway.db import portal_role_proposals
        from sqlalchemy import select

        org_code = conn.execute(select(portal_role_proposals.c.org_code).where(
            portal_role_proposals.c.id == proposal_id)).scalar()
    proposal = _run(ctx, "portal.admin.approve-role", actor, appointments.approve_role, proposal_id, _now(),
                    org_code=org_code)
    click.echo(f"approved role proposal {proposal.id}: {proposal.who} as {proposal.role}")


@portal_admin.command("decline")
@click.argument("proposal_id", type=int)
@click.option("--reason", required=True, help="Why (recorded in the audit).")
@pass_ctx
def admin_decline(ctx: Context, proposal_id: int, reason: str) -> None:
    """Decline a proposal (not your own)."""
    from gateway.portal import appointments

    actor = ctx.signed_in(appointments.ROLES, action="portal-admin decline")
    proposal = _run(ctx, "portal.admin.decline", actor, appointments.decline, proposal_id, reason, _now(),
                    org_code=_org_of(ctx, proposal_id))
    click.echo(f"declined proposal {proposal.id}: {proposal.summary()}")


@portal_admin.command("list")
@JSON_FLAG
@pass_ctx
def admin_list(ctx: Context, as_json: bool) -> None:
    """The proposals awaiting a second officer, and the roles awaiting approval."""
    from gateway.portal import accounts, appointments

    ctx.signed_in(action="portal-admin list")
    with ctx.reader.connect() as conn:
        pending = appointments.list_pending(conn)
        roles = accounts.pending_roles(conn)
    if as_json:
        echo_json({"proposals": [p.__dict__ for p in pending], "roles": [r.__dict__ for r in roles]})
        return
    for p in pending:
        click.echo(f"proposal {p.id} pending: {p.summary()}, by {p.proposed_by}")
    for r in roles:
        click.echo(f"role proposal {r.id} pending: {r.who} as {r.role}, by {r.proposed_by} "
                   f"(approve: contactgate portal-admin approve-role {r.id})")
    if not pending and not roles:
        click.echo("no proposals pending")


@portal_admin.command("lapsing")
@click.option("--days", default=30, show_default=True, type=click.IntRange(min=0, max=3660),
              help="How far ahead to look.")
@click.option("--org", "org_code", default=None, help="One organisation only.")
@pass_ctx
def admin_lapsing(ctx: Context, days: int, org_code: str | None) -> None:
    """Portal accounts whose clearance re-check, training refresh or end date falls in the next DAYS
    days (their user administrators see their own on the portal's Practitioners page)."""
    from gateway.portal import accounts

    ctx.signed_in(action="portal-admin lapsing")
    today = dt.date.today()
    with ctx.reader.connect() as conn:
        found = accounts.lapsing(conn, ctx.settings, today, days, org_code.strip().upper() if org_code else None)
    for practitioner, day, what in found:
        click.echo(f"{day}  {practitioner.who}  {what}  ({practitioner.name}, {practitioner.job_title})")
    if not found:
        click.echo(f"no portal account lapses in the next {days} days")
