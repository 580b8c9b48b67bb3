"""`contactgate org`: register connecting organisations and take them through accreditation (propose,
approve or decline by a second officer, suspend, reinstate, revoke), check one end to end, list and
show them."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from gateway.cli.base import JSON_FLAG, OFFICER_FLAG, Context, fail, echo_json, group, pass_ctx
from gateway.cli.changes import publish_crl, registry_call, show_cert, show_org, show_proposal
from gateway.trust import registry, signing_keys


@group("org")
def org() -> None:
    """Register and accredit connecting organisations."""


def _evidence_digests(paths: tuple[Path, ...]) -> list[dict]:
    import hashlib

    digests = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests.append({"name": path.name, "sha256": digest.hexdigest()})
    return digests


@org.command("add")
@click.argument("code")
@click.option("--name", required=True, help="The organisation's name.")
@click.option("--kind", required=True, type=click.Choice(registry.KINDS), help="What kind of organisation.")
@pass_ctx
def org_add(ctx: Context, code: str, name: str, kind: str) -> None:
    """Register an organisation under CODE (unique whatever its case)."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org add")
    show_org(registry_call(ctx, registry.add_org, code, name, kind, actor))


@org.command("accredit")
@click.argument("code")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(registry.SCOPES),
              help="What it may do (repeatable): push, query, shield.")
@click.option("--expires", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), metavar="YYYY-MM-DD",
              help="When the accreditation ends (a future date, at most CONTACTGATE_MAX_ACCREDITATION_DAYS ahead).")
@click.option("--evidence", default=None, help="What the accreditation rests on (e.g. the agreement's reference).")
@click.option("--evidence-file", "evidence_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A document the accreditation rests on (repeatable): its SHA-256 is recorded.")
@OFFICER_FLAG
@pass_ctx
def org_accredit(ctx: Context, code, scopes, expires, evidence, evidence_files, named) -> None:
    """Propose accreditation, renewal or a change of scopes: a second officer approves it by its id."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org accredit", named=named)
    proposal = registry_call(ctx, registry.propose_accreditation, code, list(scopes), expires.date(), actor,
                              evidence, dt.date.today(), evidence_files=_evidence_digests(evidence_files),
                              max_days=ctx.settings.max_accreditation_days)
    show_proposal(proposal)


def _only_proposal(ctx: Context, code: str) -> int:
    """With no --proposal: refuse, showing what is pending, so the approver names what they saw."""
    with ctx.reader.connect() as conn:
        org = registry.get_org(conn, code)
    if org is None:
        fail(f"no organisation with code {code!r}")
    if not org.pending:
        fail(f"nothing to approve for {org.code} (status is {org.status})")
    shown = "; ".join(f"proposal {p.id} ({p.kind}) by {p.proposed_by}: {p.summary()}" for p in org.pending)
    fail(f"name the proposal you approve with --proposal ID: {shown}")


@org.command("approve")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, default=None,
              help="The id of the proposal approved (as `org show` prints it with what it does).")
@OFFICER_FLAG
@pass_ctx
def org_approve(ctx: Context, code: str, proposal_id: int | None, named) -> None:
    """Approve a proposal (accreditation, renewal, reinstatement): a different officer from the proposer."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org approve", named=named)
    if proposal_id is None:
        _only_proposal(ctx, code)
    show_org(registry_call(ctx, registry.approve, code, proposal_id, actor))


@org.command("decline")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The id of the proposal declined.")
@click.option("--reason", required=True, help="Why it is declined (or withdrawn, by its proposer).")
@pass_ctx
def org_decline(ctx: Context, code: str, proposal_id: int, reason: str) -> None:
    """Decline a pending proposal, with a reason."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org decline")
    show_org(registry_call(ctx, registry.decline, code, proposal_id, actor, reason))


@org.command("suspend")
@click.argument("code")
@click.option("--reason", required=True, help="Why its traffic is stopped.")
@OFFICER_FLAG
@pass_ctx
def org_suspend(ctx: Context, code: str, reason: str, named) -> None:
    """Stop all of the organisation's traffic at once."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org suspend", named=named)
    show_org(registry_call(ctx, registry.suspend, code, actor, reason))


@org.command("reinstate")
@click.argument("code")
@click.option("--reason", required=True, help="Why its traffic may restart.")
@OFFICER_FLAG
@pass_ctx
def org_reinstate(ctx: Context, code: str, reason: str, named) -> None:
    """Propose restarting a suspended organisation's traffic (a second officer approves it)."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org reinstate", named=named)
    show_proposal(registry_call(ctx, registry.reinstate, code, actor, reason))


@org.command("revoke")
@click.argument("code")
@click.option("--reason", required=True, help="Why the organisation is ended.")
@pass_ctx
def org_revoke(ctx: Context, code: str, reason: str) -> None:
    """End an organisation for good: its traffic stops and its certificates are revoked."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="org revoke")
    show_org(registry_call(ctx, registry.revoke_org, code, actor, reason))
    publish_crl(ctx)


@org.command("check")
@click.argument("code")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The organisation's certificate (PEM).")
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its private key (PEM, unencrypted).")
@click.option("--url", default="https://127.0.0.1:8443", show_default=True, help="The gateway, as the organisation calls it.")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The CA that signed the gateway's server certificate (default: the home's gateway CA).")
@JSON_FLAG
@pass_ctx
def org_check(ctx: Context, code: str, cert_file: Path, key_file: Path, url: str, ca_file: Path | None,
              as_json: bool) -> None:
    """The onboarding check: a signed Ping with the organisation's certificate, reported stage by stage.

    Exit 0 when every stage passes (warnings allowed), 1 when one fails."""
    from gateway import onboarding

    ctx.signed_in(registry.ORGANISATION_ROLES, action="org check")
    stages = onboarding.check(ctx.engine, ctx.settings, code, cert_file, key_file, url,
                              ca_file or ctx.settings.layout.ca_cert, signing_keys.bundle_pem(ctx.settings.layout))
    if as_json:
        echo_json([s.as_json() for s in stages])
    else:
        for s in stages:
            click.echo(f"[{s.status:^7}] {s.name}: {s.detail}" + (f"\n          fix: {s.fix}" if s.fix else ""))
    if not onboarding.passed(stages):
        sys.exit(1)


@org.command("list")
@click.option("--pending", is_flag=True, help="Only organisations with a proposal awaiting approval.")
@click.option("--expiring", "expiring_days", type=click.IntRange(min=0), default=None, metavar="DAYS",
              help="Only those whose accreditation or a certificate ends within DAYS (or has ended).")
@JSON_FLAG
@pass_ctx
def org_list(ctx: Context, pending: bool, expiring_days: int | None, as_json: bool) -> None:
    """Every organisation: status (expired once its date has passed), scopes, expiry, proposals."""
    ctx.signed_in(action="org list")
    today = dt.date.today()
    with ctx.reader.connect() as conn:
        found = registry.list_orgs(conn, pending=pending, expiring_days=expiring_days, today=today)
    if as_json:
        echo_json([o.as_json(today) for o in found])
        return
    for o in found:
        show_org(o, today)


@org.command("show")
@click.argument("code")
@JSON_FLAG
@pass_ctx
def org_show(ctx: Context, code: str, as_json: bool) -> None:
    """One organisation: status, scopes, expiry, proposals, certificates and its full history."""
    ctx.signed_in(action="org show")
    today = dt.date.today()
    with ctx.reader.connect() as conn:
        o = registry.get_org(conn, code)
        if o is None:
            fail(f"no organisation with code {code!r}")
        certs = registry.list_certs(conn, o.code)
        past = registry.history(conn, o.code)
    if as_json:
        echo_json({**o.as_json(today), "certificates": [c.as_json() for c in certs], "history": past})
        return
    show_org(o, today)
    from gateway.audit.report import safe_text

    click.echo(f"  proposed by {o.proposed_by or '-'}, approved by {o.approved_by or '-'}"
               + (f", reason: {safe_text(o.status_reason)}" if o.status_reason else ""))
    if o.evidence:
        click.echo(f"  evidence: {safe_text(o.evidence)}")
    for c in certs:
        show_cert(c)
    click.echo("  history:")
    for event in past:
        click.echo(f"    {event['at']}  {event['operation']:<16} {event['officer'] or 'operator':<14} "
                   f"{safe_text(event['detail'])}")
