"""The `contactgate` command line (CONTRACT.md "Command line")."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click
from cryptography import x509

from gateway import audit
from gateway.config import Settings
from gateway.db import make_engine, reader
from gateway.home import init_home, load_ca
from gateway.trust import pki, registry, signing_keys
from gateway.trust.registry import RegistryError


class Context:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._engine = None

    @property
    def engine(self):
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    @property
    def trail(self) -> audit.AuditTrail:
        layout = self.settings.layout
        return audit.AuditTrail.from_file(layout.audit_key, checkpoints=layout.audit_checkpoints)

    @property
    def reader(self):
        return reader(self.engine)


pass_ctx = click.make_pass_decorator(Context)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
@click.option("--home", envvar="CONTACTGATE_HOME", default="./var", show_default=True,
              help="The gateway's home: config, SQLite database, certificates.")
@click.option("--database-url", envvar="CONTACTGATE_DATABASE_URL", default=None,
              help="SQLAlchemy URL (default: SQLite under the home).")
@click.option("--redis-url", envvar="CONTACTGATE_REDIS_URL", default=None,
              help="Redis for replay, idempotency and rate limits (default: embedded).")
@click.pass_context
def main(ctx: click.Context, home: str, database_url: str | None, redis_url: str | None) -> None:
    """ContactGate: accredited organisations exchange signed SOAP messages with the contact index."""
    ctx.obj = Context(Settings.from_env(home=home, database_url=database_url, redis_url=redis_url))


@main.command()
@click.option("--server-name", "server_names", multiple=True,
              help="Extra DNS name or IP for the server certificate (repeatable).")
@pass_ctx
def init(ctx: Context, server_names: tuple[str, ...]) -> None:
    """Create the home: CA, server TLS certificate, signing key, database schema."""
    report = init_home(ctx.settings, list(server_names))
    for item in report.created:
        click.echo(f"created  {item}")
    for item in report.kept:
        click.echo(f"kept     {item}")
    click.echo(f"home     {ctx.settings.home}")


# ---- organisations -------------------------------------------------------------------------------

@main.group()
def org() -> None:
    """Register and accredit connecting organisations."""


def _registry_call(ctx: Context, fn, *args, **kwargs):
    """Run a registry change (which audits itself) in one transaction."""
    try:
        trail = ctx.trail
        with ctx.engine.begin() as conn:
            return fn(conn, trail, *args, **kwargs)
    except FileNotFoundError as exc:
        _fail(str(exc))
    except RegistryError as exc:
        _fail(str(exc))


def _show_org(o: registry.Organisation) -> None:
    pending = ""
    if o.pending_scopes is not None:
        pending = (f"  proposed: scopes={','.join(sorted(o.pending_scopes))} expires={o.pending_expires} "
                   f"by {o.pending_by}, awaiting a second officer")
    click.echo(f"{o.code}  {o.name}  kind={o.kind}  status={o.status}  "
               f"scopes={','.join(sorted(o.scopes)) or '-'}  expires={o.expires or '-'}{pending}")


@org.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--kind", required=True, type=click.Choice(registry.KINDS))
@pass_ctx
def org_add(ctx: Context, code: str, name: str, kind: str) -> None:
    """Register an organisation."""
    _show_org(_registry_call(ctx, registry.add_org, code, name, kind))


@org.command("accredit")
@click.argument("code")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(registry.SCOPES))
@click.option("--expires", required=True, type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--officer", required=True)
@click.option("--evidence", default=None)
@pass_ctx
def org_accredit(ctx: Context, code, scopes, expires, officer, evidence) -> None:
    """Propose accreditation (a second officer must approve)."""
    _show_org(_registry_call(ctx, registry.propose_accreditation, code, list(scopes), expires.date(),
                             officer, evidence, dt.date.today()))


@org.command("approve")
@click.argument("code")
@click.option("--officer", required=True)
@pass_ctx
def org_approve(ctx: Context, code: str, officer: str) -> None:
    """Approve a proposed accreditation (a different officer from the proposer)."""
    _show_org(_registry_call(ctx, registry.approve, code, officer))


@org.command("suspend")
@click.argument("code")
@click.option("--officer", required=True)
@click.option("--reason", required=True)
@pass_ctx
def org_suspend(ctx: Context, code: str, officer: str, reason: str) -> None:
    """Stop all of the organisation's traffic at once."""
    _show_org(_registry_call(ctx, registry.suspend, code, officer, reason))


@org.command("reinstate")
@click.argument("code")
@click.option("--officer", required=True)
@pass_ctx
def org_reinstate(ctx: Context, code: str, officer: str) -> None:
    """Restart a suspended organisation's traffic."""
    _show_org(_registry_call(ctx, registry.reinstate, code, officer))


@org.command("list")
@pass_ctx
def org_list(ctx: Context) -> None:
    with ctx.reader.connect() as conn:
        for o in registry.list_orgs(conn):
            _show_org(o)


@org.command("show")
@click.argument("code")
@pass_ctx
def org_show(ctx: Context, code: str) -> None:
    with ctx.reader.connect() as conn:
        o = registry.get_org(conn, code)
        if o is None:
            _fail(f"no organisation with code {code!r}")
        _show_org(o)
        click.echo(f"  proposed by {o.proposed_by or '-'}, approved by {o.approved_by or '-'}"
                   + (f", reason: {o.status_reason}" if o.status_reason else ""))
        if o.evidence:
            click.echo(f"  evidence: {o.evidence}")
        for c in registry.list_certs(conn, code):
            _show_cert(c)


# ---- certificates --------------------------------------------------------------------------------

@main.group()
def cert() -> None:
    """Issue, register and revoke organisations' certificates."""


def _show_cert(c: registry.CertificateRecord) -> None:
    state = f"REVOKED {c.revoked_at:%Y-%m-%d} ({c.revoked_reason})" if c.revoked_at else "active"
    click.echo(f"  {c.fingerprint}  {c.org_code}  {c.subject}  until {c.not_after:%Y-%m-%d}  {state}")


@cert.command("issue")
@click.argument("code")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write key.pem, cert.pem, ca.pem and gateway-signing.pem here.")
@click.option("--csr", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Sign this CSR instead of making a key.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --csr: where to write the certificate.")
@pass_ctx
def cert_issue(ctx: Context, code: str, out_dir: Path | None, csr: Path | None, out: Path | None) -> None:
    """Issue a certificate for an organisation, signed by the gateway CA, and register it."""
    if bool(csr) == bool(out_dir) or (csr and not out):
        _fail("use either --out-dir DIR, or --csr FILE --out FILE")
    ca_key, ca_cert = load_ca(ctx.settings)
    with ctx.reader.connect() as conn:
        organisation = registry.get_org(conn, code)
    if organisation is None:
        _fail(f"no organisation with code {code!r}")
    if csr:
        try:
            request = pki.load_csr(csr.read_bytes())
        except ValueError as exc:
            _fail(f"unreadable CSR: {exc}")
        certificate = pki.issue_org_cert(ca_key, ca_cert, code, organisation.name, request.public_key())
        record = _registry_call(ctx, registry.register_cert, code, certificate)
        pki.write_public(out, pki.cert_pem(certificate))
        click.echo(f"wrote {out}")
    else:
        key = pki.new_rsa_key()
        certificate = pki.issue_org_cert(ca_key, ca_cert, code, organisation.name, key.public_key())
        record = _registry_call(ctx, registry.register_cert, code, certificate)
        pki.write_private(out_dir / "key.pem", pki.key_pem(key))
        pki.write_public(out_dir / "cert.pem", pki.cert_pem(certificate))
        pki.write_public(out_dir / "ca.pem", pki.cert_pem(ca_cert))
        pki.write_public(out_dir / "gateway-signing.pem", signing_keys.bundle_pem(ctx.settings.layout))
        click.echo(f"wrote {out_dir}/key.pem, cert.pem, ca.pem, gateway-signing.pem")
    _show_cert(record)


@cert.command("register")
@click.argument("code")
@click.option("--cert", "cert_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def cert_register(ctx: Context, code: str, cert_file: Path) -> None:
    """Bind a certificate issued by another trusted CA (a PEM file in $CONTACTGATE_HOME/trust)."""
    from gateway.app import trust_anchor_files

    try:
        certificate = pki.load_cert_pem(cert_file.read_bytes())
    except ValueError as exc:
        _fail(f"unreadable certificate: {exc}")
    try:
        pki.TrustAnchors.from_files(trust_anchor_files(ctx.settings)).verify_client(certificate)
    except pki.ChainError as exc:
        _fail(f"certificate does not chain to a trusted CA: {exc}")
    _show_cert(_registry_call(ctx, registry.register_cert, code, certificate))


@cert.command("revoke")
@click.argument("fingerprint")
@click.option("--reason", required=True)
@pass_ctx
def cert_revoke(ctx: Context, fingerprint: str, reason: str) -> None:
    """Revoke a certificate; the next message using it is refused."""
    _show_cert(_registry_call(ctx, registry.revoke_cert, fingerprint, reason))


@cert.command("list")
@click.argument("code", required=False)
@pass_ctx
def cert_list(ctx: Context, code: str | None) -> None:
    with ctx.reader.connect() as conn:
        for c in registry.list_certs(conn, code):
            _show_cert(c)


@main.group()
def trust() -> None:
    """Certificate authorities whose certificates may be registered."""


@trust.command("add-ca")
@click.argument("pem", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_ctx
def trust_add_ca(ctx: Context, pem: Path) -> None:
    """Trust another CA (takes effect when the gateway is next started)."""
    try:
        certs = pki.load_certs_pem(pem.read_bytes())
    except ValueError as exc:
        _fail(f"unreadable certificate: {exc}")
    target = ctx.settings.layout.trusted_cas_dir / f"{pki.fingerprint(certs[0])[:16]}.pem"
    pki.write_public(target, b"".join(pki.cert_pem(c) for c in certs))
    click.echo(f"trusted {certs[0].subject.rfc4514_string()} ({target})")


# ---- the gateway's response-signing key ---------------------------------------------------------

@main.group("signing-key")
def signing_key() -> None:
    """Rotate the key the gateway signs its answers with, with a grace period.

    rotate (stage a new key; clients pin the bundle of both) -> promote (sign with the new key,
    after the grace period; reload the gateway) -> retire (drop the old certificate)."""


def _signing_step(ctx: Context, detail: str, step, *args, **kwargs):
    """Run one rotation step inside the transaction that audits it (a step that fails writes no
    entry); a step that cannot be taken now exits 2."""
    trail = ctx.trail
    try:
        with ctx.engine.begin() as conn:
            result = step(ctx.settings.layout, *args, **kwargs)
            certificate = result if isinstance(result, x509.Certificate) else result.current
            trail.append(conn, audit.Entry(operation="signing_key", outcome="done",
                                           detail=f"{detail}: {pki.fingerprint(certificate)}"))
    except signing_keys.SigningKeyError as exc:
        _fail(str(exc))
    return result


def _show_signing(label: str, certificate) -> None:
    click.echo(f"{label:9} {pki.fingerprint(certificate)}  {certificate.signature_hash_algorithm.name}  "
               f"from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M}  until "
               f"{certificate.not_valid_after_utc:%Y-%m-%d}")


@signing_key.command("status")
@pass_ctx
def signing_key_status(ctx: Context) -> None:
    """Show the current, staged and previous signing certificates (all three are published)."""
    try:
        keys = signing_keys.load(ctx.settings.layout)
    except signing_keys.SigningKeyError as exc:
        _fail(str(exc))
    _show_signing("current", keys.current)
    if keys.next is not None:
        _show_signing("staged", keys.next)
    if keys.previous is not None:
        _show_signing("previous", keys.previous)


@signing_key.command("rotate")
@click.option("--ec", is_flag=True, help="Make the new key ECDSA P-256 (default RSA-2048).")
@pass_ctx
def signing_key_rotate(ctx: Context, ec: bool) -> None:
    """Stage a new signing key. The gateway keeps signing with the current one; send the bundle
    (`signing-key bundle`) to every organisation so that their systems pin both."""
    ca_key, ca_cert = load_ca(ctx.settings)
    cert = _signing_step(ctx, "new signing key staged", signing_keys.stage_next, ca_key, ca_cert, ec=ec)
    _show_signing("staged", cert)
    click.echo("next: send `contactgate signing-key bundle` to every organisation; after the grace period, "
               "`contactgate signing-key promote` and reload the gateway")


@signing_key.command("promote")
@click.option("--grace-days", default=14, show_default=True, type=click.IntRange(min=0),
              help="Refuse unless the staged key was published at least this many days ago.")
@pass_ctx
def signing_key_promote(ctx: Context, grace_days: int) -> None:
    """Sign with the staged key from the gateway's next start or reload (`systemctl reload`, or
    SIGHUP to the server process); the old certificate stays published until `retire`."""
    keys = _signing_step(ctx, "staged signing key promoted", signing_keys.promote,
                         min_grace=dt.timedelta(days=grace_days))
    _show_signing("current", keys.current)
    _show_signing("previous", keys.previous)
    click.echo("next: reload the gateway so that it signs with the new key")


@signing_key.command("discard")
@pass_ctx
def signing_key_discard(ctx: Context) -> None:
    """Delete a staged key that has not been promoted."""
    _show_signing("discarded", _signing_step(ctx, "staged signing key discarded", signing_keys.discard_next))


@signing_key.command("retire")
@pass_ctx
def signing_key_retire(ctx: Context) -> None:
    """Stop publishing the certificate of the key before the current one."""
    _show_signing("retired", _signing_step(ctx, "previous signing certificate retired",
                                           signing_keys.retire_previous))


@signing_key.command("bundle")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the bundle here (default: standard output).")
@pass_ctx
def signing_key_bundle(ctx: Context, out: Path | None) -> None:
    """The certificates clients should pin now (current, staged, previous), as PEM."""
    try:
        bundle = signing_keys.bundle_pem(ctx.settings.layout)
    except signing_keys.SigningKeyError as exc:
        _fail(str(exc))
    if out is None:
        click.echo(bundle.decode(), nl=False)
    else:
        pki.write_public(out, bundle)
        click.echo(f"wrote {out}")


# ---- serving -------------------------------------------------------------------------------------

@main.command()
@click.option("--bind", default="127.0.0.1:8443", show_default=True)
@click.option("--workers", default=2, show_default=True, type=int)
@click.option("--threads", default=None, type=int,
              help="Request threads per worker [default: $CONTACTGATE_THREADS or 4].")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, threads: int | None) -> None:
    """Run the gateway with mutual TLS."""
    from gateway.server import serve as run_server

    if not ctx.settings.layout.server_cert.exists():
        _fail("no server certificate: run `contactgate init` first")
    run_server(ctx.settings, bind, workers, threads)


# ---- audit ---------------------------------------------------------------------------------------

@main.group("audit")
def audit_group() -> None:
    """Verify the audit chain and report who accessed what."""


@audit_group.command("verify")
@pass_ctx
def audit_verify(ctx: Context) -> None:
    """Check the whole chain; exit 1 naming the first bad entry.

    Each successful run records the head in $CONTACTGATE_HOME/audit/checkpoints; later runs also
    check that the chain still holds it. Run it regularly."""
    try:
        result = ctx.trail.verify(ctx.engine)
    except FileNotFoundError as exc:
        _fail(str(exc))
    if result.ok:
        click.echo(f"audit chain intact: {result.entries} entries")
        return
    click.echo(f"audit chain BROKEN at entry {result.first_bad_seq}: {result.problem} "
               f"({result.entries} entries verified before it)")
    sys.exit(1)


@audit_group.command("report")
@click.option("--child", "child_id", default=None, help="Who accessed this child's record.")
@click.option("--user", "user", default=None, metavar="ORG:USER", help="What this user accessed.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def audit_report(ctx: Context, child_id: str | None, user: str | None, as_json: bool) -> None:
    """Who accessed what, when, and why."""
    if bool(child_id) == bool(user):
        _fail("give exactly one of --child ID or --user ORG:USER")
    with ctx.reader.connect() as conn:
        if child_id:
            rows = audit.report_for_child(conn, child_id.strip().upper())
        else:
            org_code, _, user_id = user.partition(":")
            if not user_id:
                _fail("--user takes ORG:USER")
            rows = audit.report_for_user(conn, org_code, user_id)
    for row in rows:
        if as_json:
            click.echo(json.dumps({k: row[k] for k in audit.chain.HASHED_FIELDS}))
            continue
        who = f"{row['org_code'] or '-'}:{row['user_id'] or '-'}"
        why = f"{row['reason_code']}: {row['reason_text']}" if row["reason_code"] else "-"
        what = row["fault_code"] or row["outcome"]
        click.echo(f"{row['at']}  #{row['seq']}  {who} ({row['role'] or '-'})  {row['operation']}  "
                   f"{what}  reason [{why}]  children [{row['child_ids'] or '-'}]")
    if not rows:
        click.echo("no entries")


@main.command()
@click.option("--keep", is_flag=True, help="Keep the temporary home afterwards and print where it is.")
def demo(keep: bool) -> None:
    """Run the end-to-end demonstration and print what happened."""
    from gateway.demo import run_demo

    sys.exit(run_demo(keep=keep))


if __name__ == "__main__":
    main()
