"""`contactgate proxy`: the certificates of the proxies (nginx) a node behind one believes
(`serve --behind-proxy`, docs/operations.md 6a). Registering one is proposed by a senior officer
and approved by a second; revoking one needs one officer."""

from __future__ import annotations

from pathlib import Path

import click

from gateway import officers
from gateway.cli.base import JSON_FLAG, Context, Refused, echo_json, group, pass_ctx
from gateway.cli.changes import publish_crl, refuse_officer, registry_call, show_proposal
from gateway.trust import pki, proxies, registry
from gateway.trust.registry import RegistryError


@group("proxy")
def proxy() -> None:
    """Certificates of the proxies (nginx) whose Client-Cert header the nodes believe."""


def _show(p: proxies.ProxyRecord) -> None:
    state = f"REVOKED {p.revoked_at:%Y-%m-%d} ({p.revoked_reason})" if p.revoked_at else "active"
    click.echo(f"  {p.fingerprint}  {p.name}  {p.subject}  until {p.not_after:%Y-%m-%d}  {state}  "
               f"(proposed by {p.proposed_by}, approved by {p.approved_by})")


@proxy.command("issue")
@click.option("--name", required=True, help="The proxy's name (e.g. nginx-1): the CSR's common name.")
@click.option("--csr", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The proxy's certificate signing request (made on the nginx host: its key never leaves it).")
@pass_ctx
def proxy_issue(ctx: Context, name: str, csr: Path) -> None:
    """Propose a proxy certificate signed by the gateway CA from the proxy's CSR (a senior officer;
    a second senior officer approves it with `proxy approve`)."""
    actor = ctx.signed_in(proxies.PROPOSE_ROLES, action="proxy issue")
    try:
        payload = proxies.issue_payload(name, csr.read_bytes())
    except proxies.ProxyError as exc:
        refuse_officer(ctx, actor, "proxy issue", exc)
    show_proposal(registry_call(ctx, proxies.propose, actor, "proxy_issue", payload))


@proxy.command("register")
@click.option("--name", required=True, help="The proxy's name (e.g. nginx-1).")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The proxy's certificate (PEM), issued by a CA the gateway trusts, for client authentication.")
@pass_ctx
def proxy_register(ctx: Context, name: str, cert_file: Path) -> None:
    """Propose registering a proxy certificate (a senior officer; a second approves it)."""
    from gateway.app import trust_anchor_files

    actor = ctx.signed_in(proxies.PROPOSE_ROLES, action="proxy register")
    try:
        payload = proxies.register_payload(name, cert_file.read_bytes(),
                                           pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)))
    except proxies.ProxyError as exc:
        refuse_officer(ctx, actor, "proxy register", exc)
    show_proposal(registry_call(ctx, proxies.propose, actor, "proxy_register", payload))


@proxy.command("approve")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The proxy proposal approved.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the certificate (PEM) here (default: print it).")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@pass_ctx
def proxy_approve(ctx: Context, proposal_id: int, out: Path | None, force: bool) -> None:
    """Approve a proxy proposal (a second senior officer): the certificate is signed (or checked
    again) and registered; every node believes its Client-Cert header from the next message on."""
    from gateway.app import trust_anchor_files

    actor = ctx.signed_in(proxies.PROPOSE_ROLES, action="proxy approve")
    if out is not None and (out.exists() or out.is_symlink()) and not force:
        raise Refused(f"{out} already exists: nothing was approved (choose another --out, or --force)")
    make = proxies.made_on_approval(ctx.settings, pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)))
    try:
        record = registry.run_change(ctx.engine, ctx.trail, proxies.approve, proposal_id, actor, make=make)
    except (RegistryError, officers.OfficerError) as exc:
        raise Refused(str(exc)) from None
    except proxies.ProxyError as exc:
        refuse_officer(ctx, actor, "proxy approve", exc)
    _show(record)
    if out is not None:
        pki.write_public(out, record.pem.encode())
        click.echo(f"wrote {out}: install it on the nginx host as proxy_ssl_certificate")
    else:
        click.echo(record.pem, nl=False)


@proxy.command("decline")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The proxy proposal declined.")
@click.option("--reason", required=True, help="Why it is declined (or withdrawn, by its proposer).")
@pass_ctx
def proxy_decline(ctx: Context, proposal_id: int, reason: str) -> None:
    """Decline a pending proxy proposal, with a reason."""
    actor = ctx.signed_in(proxies.PROPOSE_ROLES, action="proxy decline")
    show_proposal(registry_call(ctx, proxies.decline, proposal_id, actor, reason))


@proxy.command("revoke")
@click.argument("fingerprint")
@click.option("--reason", required=True, help="Why it is revoked.")
@pass_ctx
def proxy_revoke(ctx: Context, fingerprint: str, reason: str) -> None:
    """Revoke a proxy certificate (one officer): every node refuses its next message, and, where the
    gateway CA issued it, the renewed CRL refuses its handshakes."""
    actor = ctx.signed_in(proxies.REVOKE_ROLES, action="proxy revoke")
    _show(registry_call(ctx, proxies.revoke, fingerprint, reason, actor))
    publish_crl(ctx)


@proxy.command("list")
@JSON_FLAG
@pass_ctx
def proxy_list(ctx: Context, as_json: bool) -> None:
    """The proxy certificates, and proxy proposals awaiting a second senior officer."""
    ctx.signed_in(action="proxy list")
    with ctx.reader.connect() as conn:
        found = proxies.list_proxies(conn)
        pending = registry.list_proposals(conn, kinds=registry.PROXY_PROPOSALS)
    if as_json:
        echo_json({"proxies": [p.as_json() for p in found], "pending": [p.as_json() for p in pending]})
        return
    for p in found:
        _show(p)
    for p in pending:
        click.echo(f"  proposal {p.id} ({p.kind}) by {p.proposed_by}, awaiting a second senior officer: {p.summary()}")
