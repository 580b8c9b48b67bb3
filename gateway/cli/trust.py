"""`contactgate trust`: the certificate authorities whose certificates may be registered; a change to
the list is proposed by a senior officer and approved by a second one."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.base import JSON_FLAG, CannotRun, Context, echo_json, group, pass_ctx
from gateway.cli.changes import refuse_officer, registry_call, show_proposal
from gateway.trust import registry


@group("trust")
def trust() -> None:
    """Certificate authorities whose certificates may be registered."""


def _show_anchor(a) -> None:
    crl = f"CRL until {a.crl_next_update:%Y-%m-%d}" if a.crl_next_update else (
        "no CRL: its clients are refused at the handshake while other CAs have CRLs")
    kind = "gateway CA" if a.gateway_ca else "trusted CA"
    click.echo(f"{a.fingerprint}  {kind}  {a.subject}  until {a.not_after:%Y-%m-%d}  {crl}")


@trust.command("list")
@JSON_FLAG
@pass_ctx
def trust_list(ctx: Context, as_json: bool) -> None:
    """The trusted CAs: fingerprint, subject, expiry, CRL; and trust changes awaiting approval."""
    from gateway.trust import anchors

    ctx.signed_in(action="trust list")
    found = anchors.list_anchors(ctx.settings)
    with ctx.reader.connect() as conn:
        pending = registry.list_proposals(conn, kinds=registry.TRUST_PROPOSALS)
    if as_json:
        echo_json({"anchors": [a.as_json() for a in found], "pending": [p.as_json() for p in pending]})
        return
    for a in found:
        _show_anchor(a)
    for p in pending:
        click.echo(f"  proposal {p.id} ({p.kind}) by {p.proposed_by}, awaiting a second senior officer: {p.summary()}")


@trust.command("add-ca")
@click.argument("pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--crl", "crl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The CA's current CRL (PEM): without one, its clients are refused at the handshake.")
@pass_ctx
def trust_add_ca(ctx: Context, pem: Path, crl_file: Path | None) -> None:
    """Propose trusting a CA (a senior officer; a second senior officer approves with `trust approve`)."""
    from gateway.trust import anchors

    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust add-ca")
    try:
        payload = anchors.add_payload(pem.read_bytes(), crl_file.read_bytes() if crl_file else None)
    except anchors.TrustError as exc:
        refuse_officer(ctx, actor, "trust add-ca", exc)
    show_proposal(registry_call(ctx, registry.propose_trust_change, actor, "trust_add", payload))


@trust.command("remove")
@click.argument("fingerprint")
@pass_ctx
def trust_remove(ctx: Context, fingerprint: str) -> None:
    """Propose removing a CA from the trust list (a second senior officer approves)."""
    from gateway.trust import anchors

    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust remove")
    try:
        payload = anchors.remove_payload(ctx.settings, fingerprint)
    except anchors.TrustError as exc:
        refuse_officer(ctx, actor, "trust remove", exc)
    show_proposal(registry_call(ctx, registry.propose_trust_change, actor, "trust_remove", payload))


@trust.command("approve")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The trust change approved.")
@pass_ctx
def trust_approve(ctx: Context, proposal_id: int) -> None:
    """Approve a trust change (a second senior officer): the running gateway follows within a second."""
    from gateway.trust import anchors

    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust approve")
    try:
        with anchors.approving(ctx.settings, ctx.engine) as apply:  # the database first, then the files
            decided = registry_call(ctx, registry.decide_trust_change, proposal_id, actor, approve=True,
                                     apply=apply)
    except anchors.TrustFilesNotChanged as exc:
        raise CannotRun(str(exc)) from None
    show_proposal(decided)


@trust.command("decline")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The trust change declined.")
@click.option("--reason", required=True, help="Why.")
@pass_ctx
def trust_decline(ctx: Context, proposal_id: int, reason: str) -> None:
    """Decline a trust change, with a reason."""
    actor = ctx.signed_in(registry.TRUST_ROLES, action="trust decline")
    show_proposal(registry_call(ctx, registry.decide_trust_change, proposal_id, actor, approve=False,
                                  reason=reason))
