"""`contactgate cert`: propose an organisation's certificate (from its CSR, or with a key the gateway
makes), approve or decline it (a second officer), revoke it, renew the gateway CA's CRL, list them."""

from __future__ import annotations

from pathlib import Path

import click

from gateway import files, officers
from gateway.cli.base import JSON_FLAG, Context, Refused, echo_json, fail, group, pass_ctx
from gateway.cli.changes import publish_crl, refuse_officer, registry_call, show_cert, show_org, show_proposal
from gateway.index import sealed
from gateway.trust import pki, registry
from gateway.trust.registry import RegistryError


@group("cert")
def cert() -> None:
    """Issue, register and revoke organisations' certificates."""


@cert.command("issue")
@click.argument("code")
@click.option("--csr", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The organisation's certificate signing request (made with `contactgate csr` on its own machine).")
@click.option("--gateway-key", is_flag=True,
              help="For an organisation that cannot make a key: the gateway makes it when the proposal is "
                   "approved, in a bundle encrypted under a passphrase (never offered by the console).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, hidden=True,
              help="Retired: the approving officer writes the certificate (`cert approve --out`).")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None, hidden=True,
              help="Retired: the organisation makes its key (`contactgate csr`); the approving officer writes "
                   "the certificates (`cert approve --out-dir`).")
@pass_ctx
def cert_issue(ctx: Context, code: str, csr: Path | None, gateway_key: bool, out: Path | None,
               out_dir: Path | None) -> None:
    """Propose a certificate for an organisation, signed by the gateway CA once a second officer
    approves it (`cert approve`).

    The normal path is the organisation's own CSR (--csr): its key never leaves its machine. An
    organisation holding certificates already may hold several (rotation: the new one, then revoke
    the old); the approver is told how many it holds."""
    from gateway.trust import issuing

    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert issue")
    if out or out_dir:
        fail("a certificate is made when a second officer approves the proposal: propose with "
              "`contactgate cert issue CODE --csr FILE` (or --gateway-key), then the approver runs "
              "`contactgate cert approve CODE --proposal ID --out-dir DIR`")
    if bool(csr) == gateway_key:
        fail("give the organisation's CSR (--csr FILE, made with `contactgate csr` on its machine), or "
              "--gateway-key for an organisation that cannot make a key")
    with ctx.reader.connect() as conn:
        organisation = registry.get_org(conn, code)
    if organisation is None:
        fail(f"no organisation with code {code!r}")
    passphrase = None
    try:
        if gateway_key:
            with ctx.engine.connect() as conn:
                payload, passphrase = issuing.gateway_key_payload(sealed.vault_of(conn))
        else:
            payload = issuing.csr_payload(organisation, csr.read_bytes())
    except issuing.IssueError as exc:
        refuse_officer(ctx, actor, "cert issue", exc)
    show_proposal(registry_call(ctx, registry.propose_certificate, organisation.code, "cert_issue", payload, actor))
    if passphrase:
        click.echo(f"passphrase of the bundle (shown once, to you only; give it to {organisation.code} by "
                   f"telephone: the approving officer sends the bundle and never sees it): {passphrase}")


@cert.command("register")
@click.argument("code")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate (PEM).")
@pass_ctx
def cert_register(ctx: Context, code: str, cert_file: Path) -> None:
    """Propose binding a certificate issued by another trusted CA (a second officer approves it)."""
    from gateway.app import trust_anchor_files
    from gateway.trust import issuing

    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert register")
    try:
        payload = issuing.register_payload(cert_file.read_bytes(),
                                           pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)))
    except issuing.IssueError as exc:
        refuse_officer(ctx, actor, "cert register", exc)
    show_proposal(registry_call(ctx, registry.propose_certificate, code, "cert_register", payload, actor))


@cert.command("approve")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, required=True,
              help="The id of the certificate proposal approved (as `org show` prints it).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the certificate (PEM) here.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write cert.pem, ca.pem and gateway-signing.pem here (and, for a key made by the "
                   "gateway, bundle.p12).")
@click.option("--force", is_flag=True, help="Replace files that already exist (never done otherwise).")
@pass_ctx
def cert_approve(ctx: Context, code: str, proposal_id: int, out: Path | None, out_dir: Path | None,
                 force: bool) -> None:
    """Approve a certificate proposal (a different officer from the proposer): the certificate is
    signed (or, for `cert register`, checked again) and bound to the organisation.

    Files are written before the certificate is bound and removed again if binding fails; a key
    made by the gateway exists only in bundle.p12, encrypted under the passphrase the proposer was
    shown (and gives the organisation by telephone): the approver sends the bundle, never seeing it."""
    from gateway.app import trust_anchor_files
    from gateway.trust import issuing

    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert approve")
    if out and out_dir:
        fail("use --out FILE or --out-dir DIR, not both")
    with ctx.reader.connect() as conn:
        proposal = registry.get_proposal(conn, proposal_id)
    gateway_key = bool(proposal and proposal.kind == "cert_issue" and proposal.payload.get("key") == "gateway")
    if gateway_key and not out_dir:
        fail("this proposal has the gateway make the key: give --out-dir DIR for its encrypted bundle")
    passphrase = None
    if gateway_key:
        with ctx.engine.connect() as conn:
            passphrase = issuing.bundle_passphrase(sealed.vault_of(conn), proposal)
    make, made = issuing.made_on_approval(
        ctx.settings, anchors=pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)),
        gateway_key_allowed=True)
    written: list[Path] = []
    home = ctx.settings.layout.root

    def make_and_write(org, proposal):
        certificate = make(org, proposal)  # an IssueError refuses the approval, in its transaction
        issued = made["issued"]
        if out:
            outputs = {out: pki.cert_pem(certificate)}
        elif out_dir:
            outputs = {out_dir / name: data for name, data in issuing.public_files(ctx.settings, issued).items()}
            if issued.key is not None:
                outputs[out_dir / issuing.BUNDLE_NAME] = issuing.encrypted_bundle(ctx.settings, issued, org.code,
                                                                                  passphrase)
        else:
            outputs = {}
        existing = [str(p) for p in outputs if p.exists() or p.is_symlink()]
        if existing and not force:
            raise registry.RegistryError(
                f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: nothing was approved "
                f"(choose another --out-dir, or --force to replace them)")
        for path, data in outputs.items():
            private = path.name == issuing.BUNDLE_NAME or files.is_under(path, home)
            (pki.write_private if private else pki.write_public)(path, data)
            written.append(path)
        return certificate

    try:
        record = registry.run_change(ctx.engine, ctx.trail, registry.approve_certificate, code, proposal_id,
                                     actor, make=make_and_write)
    except (RegistryError, officers.OfficerError, issuing.IssueError) as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, issuing.IssueError):
            refuse_officer(ctx, actor, "cert approve", exc)
        raise Refused(str(exc)) from None
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    show_cert(record)
    if written:
        click.echo(f"wrote {', '.join(str(p) for p in written)}")
    elif not out:
        click.echo(pki.cert_pem(made["issued"].certificate).decode(), nl=False)
    if passphrase:
        click.echo(f"send {out_dir / issuing.BUNDLE_NAME} to the organisation; {proposal.proposed_by}, who "
                   f"proposed it, gives it the passphrase by telephone")


@cert.command("decline")
@click.argument("code")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The id of the proposal declined.")
@click.option("--reason", required=True, help="Why it is declined (or withdrawn, by its proposer).")
@pass_ctx
def cert_decline(ctx: Context, code: str, proposal_id: int, reason: str) -> None:
    """Decline a pending certificate proposal, with a reason."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert decline")
    show_org(registry_call(ctx, registry.decline, code, proposal_id, actor, reason))


@cert.command("revoke")
@click.argument("fingerprint")
@click.option("--reason", required=True, help="Why it is revoked.")
@pass_ctx
def cert_revoke(ctx: Context, fingerprint: str, reason: str) -> None:
    """Revoke a certificate; the next message using it is refused."""
    actor = ctx.signed_in(registry.ORGANISATION_ROLES, action="cert revoke")
    show_cert(registry_call(ctx, registry.revoke_cert, fingerprint, reason, actor))
    publish_crl(ctx)


@cert.command("crl")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the CRL (PEM) here too (default: print it).")
@click.option("--quiet", is_flag=True,
              help="Do not print the CRL: only say until when it is valid (contactgate-crl.service).")
@pass_ctx
def cert_crl(ctx: Context, out: Path | None, quiet: bool) -> None:
    """Renew the gateway CA's CRL: ca/crl.pem and the client CA bundle tls/client-cas.pem in the home
    (run daily by deploy/contactgate-crl.timer where the CA key is; copy both to the hosts without
    it); also GET /crl."""
    from gateway.trust import crl

    if not ctx.settings.layout.ca_key.exists():
        fail(f"no CA key at {ctx.settings.layout.ca_key}: renew the CRL where officers issue certificates")
    pem = crl.publish(ctx.settings, ctx.engine)
    until = f"valid until {crl.next_update(pem):%Y-%m-%d %H:%M}Z"
    if out:
        pki.write_public(out, pem)
        click.echo(f"wrote {out} ({until})")
    elif quiet:
        click.echo(f"renewed {ctx.settings.layout.crl} and {ctx.settings.layout.client_ca_bundle} ({until})")
    else:
        click.echo(pem.decode(), nl=False)


@cert.command("list")
@click.argument("code", required=False)
@click.option("--expiring", "expiring_days", type=click.IntRange(min=0), default=None, metavar="DAYS",
              help="Only active certificates ending within DAYS (or already ended).")
@JSON_FLAG
@pass_ctx
def cert_list(ctx: Context, code: str | None, expiring_days: int | None, as_json: bool) -> None:
    """Certificates, of one organisation (CODE) or of all."""
    ctx.signed_in(action="cert list")
    with ctx.reader.connect() as conn:
        found = registry.list_certs(conn, code, expiring_days=expiring_days)
        org = registry.get_org(conn, code) if code else None
        pending = [p for p in registry.list_proposals(conn, kinds=registry.CERT_PROPOSALS)
                   if not code or (org is not None and p.org_code == org.code)]
    if as_json:
        echo_json([c.as_json() for c in found])
        return
    for c in found:
        show_cert(c)
    for p in pending:
        click.echo(f"  proposal {p.id} ({p.kind}) for {p.org_code} by {p.proposed_by}, awaiting a second "
                   f"officer: {p.summary()}")
